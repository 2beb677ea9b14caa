#!/usr/bin/env bash
# Benchmark-report helper (not CI): faster-whisper vs our CLI on ../shared/speech/refs.tsv, back to
# back, same WER normaliser (../shared/peers/wer_util.py), then both summaries and their ratio.
#
#   scripts/peer-compare.sh            # tiny.en; needs target/release/amanuensis
#   MODEL=base scripts/peer-compare.sh
#   ONLY=jfk,ls scripts/peer-compare.sh
#
# faster-whisper: fw_bench.py in-process (model loaded once, one untimed warm-up), float32, greedy
# (beam 1), 2 threads, under /usr/bin/time -v for its peak RSS. Ours: bench_cmd.py, one process per
# file running `$BIN transcribe -m $MODEL {wav}`; its wall time includes process start and model
# load unless LOAD_REGEX (a regex with one group, in ms) finds the load time in our output.
# Results: $OUTDIR (default target/peer-results) *.summary.json / *.files.tsv.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
shared="$root/../shared"
model=${MODEL:-tiny.en}
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

echo "== faster-whisper $model float32 greedy, 2 threads"
/usr/bin/time -v -o "$outdir/fw-$model.time.txt" \
    python "$shared/peers/fw_bench.py" --name "fw-$model" \
    --model "$HOME/.cache/amanuensis-peers/models/$model" \
    --compute-type float32 --beam-size 1 --threads 2 --outdir "$outdir" "${only[@]}"

echo "== amanuensis $model"
load=()
[ -n "${LOAD_REGEX:-}" ] && load=(--load-regex "$LOAD_REGEX")
# bench_cmd.py (as shipped) has /usr/bin/time write /tmp/.bench_time.txt but reads
# $TMPDIR/.bench_time.<pid>.txt: point it at the file actually written.
python - "$shared/peers" --name "ours-$model" --cmd "$bin transcribe -m $model {wav}" \
    --outdir "$outdir" "${only[@]}" "${load[@]}" <<'EOF'
import sys
peers = sys.argv.pop(1)
sys.path.insert(0, peers)
import bench_cmd
bench_cmd.TIMEFILE = "/tmp/.bench_time.txt"
bench_cmd.main()
EOF

echo "== comparison"
python - "$outdir" "$model" <<'EOF'
import json, os, re, sys
outdir, model = sys.argv[1], sys.argv[2]
fw = json.load(open(os.path.join(outdir, "fw-%s.summary.json" % model)))
ours = json.load(open(os.path.join(outdir, "ours-%s.summary.json" % model)))
m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(os.path.join(outdir, "fw-%s.time.txt" % model)).read())
fw_rss = int(m.group(1)) / 1024 if m else float("nan")
our_rss = ours["meta"]["peak_rss_mb"] or float("nan")
print("%-7s %-6s %9s %9s %8s %8s %7s" % ("group", "who", "audio_s", "wall_s", "RTF", "WER%", "files"))
for g in ("short", "long", "ALL"):
    if g not in fw["groups"] or g not in ours["groups"]:
        continue
    rows = []
    for who, s in (("fw", fw["groups"][g]), ("ours", ours["groups"][g])):
        rtf = s["wall_s"] / s["audio_s"]
        rows.append(rtf)
        print("%-7s %-6s %9.1f %9.2f %8.4f %8.2f %7d" % (g, who, s["audio_s"], s["wall_s"], rtf, 100 * s["wer"], s["files"]))
    print("%-7s ours/fw RTF ratio %.2f (>1: we are slower)" % (g, rows[1] / rows[0]))
print("peak RSS MB: fw %.1f (whole benchmark process), ours %.1f (max per file); ratio %.2f" % (fw_rss, our_rss, our_rss / fw_rss))
print("timing: fw = %s" % fw["meta"]["timing"])
print("        ours = %s" % ours["meta"]["timing"])
EOF
