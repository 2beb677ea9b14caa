#!/usr/bin/env bash
# Benchmark-report helper (not CI): faster-whisper vs our CLI on ../shared/speech/refs.tsv, back to
# back on the same files, same WER normaliser (../shared/peers/wer_util.py), then the ratios.
#
#   scripts/peer-compare.sh            # tiny.en greedy; needs target/release/amanuensis
#   MODEL=base scripts/peer-compare.sh
#   BEAM=5 scripts/peer-compare.sh     # beam search on both sides (default 1: greedy)
#   ISAS="auto avx2 portable" scripts/peer-compare.sh
#                                      # ours once per INT8 kernel path (AMANUENSIS_Q8_ISA;
#                                      # auto = what the CPU picks), faster-whisper once
#   ONLY=jfk,ls scripts/peer-compare.sh
#   SKIP_FW=1 scripts/peer-compare.sh  # reuse the last faster-whisper results in $OUTDIR
#   SUBTRACT_LOAD=1 ...                # the older comparison: our model-load time subtracted
#
# faster-whisper: ../shared/peers/fw_bench.py in-process (model loaded once, one untimed
# warm-up), beam size $BEAM (1 = greedy), 2 threads, once with compute type float32 and once
# with int8, each under /usr/bin/time -v for its peak RSS; the faster of the two is "fw best".
# Ours: exactly as a user runs it: ../shared/peers/bench_cmd.py starts one process per file,
# `$BIN transcribe --language en --threads 2 --beam-size $BEAM {wav}` with the default model
# (tiny.en, which resolves to the INT8 file) or `-m base` (also INT8 by default); `OURS_MODEL`
# overrides. `--language en` because fw_bench.py gives faster-whisper `language="en"`: without it
# both engines would run a language-detection pass over the first window with the multilingual
# base (ours costs one more encoder window per file, ~0.3 s with base). The
# wall time of each process counts whole: process start, model load, the first window's page
# faults. Peak RSS: fw = the whole benchmark process, ours = the largest per-file process.
# Results: $OUTDIR (default target/peer-results) *.summary.json / *.files.tsv, and one
# Markdown row per run appended to $OUTDIR/table.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
shared="$root/../shared"
model=${MODEL:-tiny.en}
beam=${BEAM:-1}
ours_model=${OURS_MODEL:-$model}
isas=${ISAS:-auto}
ours_mflag="-m $ours_model"
[ "$ours_model" = tiny.en ] && ours_mflag=""   # the CLI's default model
load_args=()
[ -n "${SUBTRACT_LOAD:-}" ] && load_args=(--load-regex 'load time = ([0-9.]+) ms')
bin=${BIN:-$root/target/release/amanuensis}
outdir=${OUTDIR:-$root/target/peer-results}
act=${PEERS_ACTIVATE:-$HOME/.cache/amanuensis-peers/venv/bin/activate}
only=()
[ -n "${ONLY:-}" ] && only=(--only "$ONLY")

[ -x "$bin" ] || { echo "missing $bin: cargo build --release -p amanuensis" >&2; exit 1; }
[ -f "$act" ] || act=$("$shared/peers/setup.sh")
# shellcheck disable=SC1090
. "$act"
mkdir -p "$outdir"

for ct in float32 int8; do
    [ -n "${SKIP_FW:-}" ] && [ -f "$outdir/fw-$model-b$beam-$ct.summary.json" ] && continue
    echo "== faster-whisper $model $ct beam $beam, 2 threads"
    /usr/bin/time -v -o "$outdir/fw-$model-b$beam-$ct.time.txt" \
        python "$shared/peers/fw_bench.py" --name "fw-$model-b$beam-$ct" \
        --model "$HOME/.cache/amanuensis-peers/models/$model" \
        --compute-type "$ct" --beam-size "$beam" --threads 2 --outdir "$outdir" "${only[@]}"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
for isa in $isas; do
name="ours-$ours_model-b$beam-$isa"
echo "== amanuensis $ours_model ($isa)"
timings=""
[ -n "${SUBTRACT_LOAD:-}" ] && timings="--timings"
env_isa=""
[ "$isa" != auto ] && env_isa="AMANUENSIS_Q8_ISA=$isa"
# bench_cmd.py (as shipped) has /usr/bin/time write /tmp/.bench_time.txt but reads
# $TMPDIR/.bench_time.<pid>.txt: point it at the file actually written.
python - "$shared/peers" --name "$name" \
    --cmd "$env_isa $bin transcribe $ours_mflag --language en --threads 2 --beam-size $beam $timings {wav}" \
    "${load_args[@]}" --outdir "$outdir" "${only[@]}" <<'PY'
import sys
peers = sys.argv.pop(1)
sys.path.insert(0, peers)
import bench_cmd
bench_cmd.TIMEFILE = "/tmp/.bench_time.txt"
bench_cmd.main()
PY

echo "== comparison ($model, beam $beam, ours $isa, 2 threads; $cpu, $(nproc) cores)"
python - "$outdir" "$model" "$name" "$beam" "$isa" <<'PY'
import json, os, re, sys
outdir, model, ours_name, beam, isa = sys.argv[1:6]
def load(name):
    return json.load(open(os.path.join(outdir, name + ".summary.json")))
def rss(name):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                  open(os.path.join(outdir, name + ".time.txt")).read())
    return int(m.group(1)) / 1024 if m else float("nan")
rows = []
for ct in ("float32", "int8"):
    s = load("fw-%s-b%s-%s" % (model, beam, ct))
    rows.append(("fw %s" % ct, s, rss("fw-%s-b%s-%s" % (model, beam, ct))))
ours = load(ours_name)
rows.append(("ours (%s)" % isa, ours, ours["meta"]["peak_rss_mb"] or float("nan")))
best = min(rows[:2], key=lambda r: r[1]["groups"]["ALL"]["wall_s"])
print("%-22s %8s %8s %9s %7s %9s" % ("engine", "wall_s", "x_rt", "vs_fw_best", "WER%", "RSS_MiB"))
for name, s, r in rows:
    a = s["groups"]["ALL"]
    print("%-22s %8.2f %8.1f %9.2fx %7.2f %9.1f" % (
        name, a["wall_s"], a["audio_s"] / a["wall_s"],
        best[1]["groups"]["ALL"]["wall_s"] / a["wall_s"], 100 * a["wer"], r))
o, b = ours["groups"]["ALL"], best[1]["groups"]["ALL"]
speed, dwer, drss = b["wall_s"] / o["wall_s"], 100 * (o["wer"] - b["wer"]), rows[2][2] / best[2]
print("fw best = %s: ours is %.2fx faster, WER %+.2f points, peak RSS %.2f of fw best's"
      % (best[0], speed, dwer, drss))
print("timing: fw = %s" % best[1]["meta"]["timing"])
print("        ours = %s" % ours["meta"]["timing"])
fmt = lambda name, s, r: "%.2f s, %.2f %%, %.0f MiB" % (
    s["groups"]["ALL"]["wall_s"], 100 * s["groups"]["ALL"]["wer"], r)
row = "| %s, %s | %s | %s | %s | %s | **%.2f×** | %+.2f | %.2f |\n" % (
    model, "greedy" if beam == "1" else "beam " + beam, isa,
    fmt(*rows[0]), fmt(*rows[1]), fmt(*rows[2]), speed, dwer, drss)
with open(os.path.join(outdir, "table.md"), "a") as f:
    f.write(row)
print(row, end="")
PY
done
