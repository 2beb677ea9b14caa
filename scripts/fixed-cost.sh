#!/usr/bin/env bash
# Benchmark-report helper (not CI): the fixed cost of one CLI process (issue 10, "Load in
# milliseconds") on jfk.wav with the default command, `amanuensis transcribe jfk.wav` (tiny.en,
# INT8), as distributions over RUNS runs of one or more binaries, interleaved run by run so that
# every binary sees the same machine load.
#
#   scripts/fixed-cost.sh [RUNS] [BIN...]     # default: 30 runs of target/release/amanuensis
#   scripts/fixed-cost.sh 30 /tmp/old/amanuensis target/release/amanuensis
#
# Per run and binary: the wall time of `BIN --version` (exec, dynamic loader, exit: out of the
# program's hands), the wall time of `BIN transcribe --timings jfk.wav` and its `load time`
# (model load + session: pool and pre-touched buffers). Every third round also
# `BIN bench jfk.wav`, whose "end to end" is the steady transcription of the same file in a warm
# process (after one untimed run). Fixed cost of a run = its wall time - the binary's median
# steady time: process start, load, pool, the VAD model, reading the file, the first window's
# page faults and lazy set-up, exit. Prints min / median / p90 per quantity and binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-30}
shift || true
bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=("$root/target/release/amanuensis")
wav="$root/../shared/speech/jfk.wav"
[ -f "$wav" ] || { echo "fixed-cost.sh: $wav not found" >&2; exit 1; }

python3 - "$runs" "$wav" "${bins[@]}" <<'EOF'
import re, statistics, subprocess, sys, time

runs, wav, bins = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

def timed(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = (time.perf_counter() - t) * 1e3
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return wall, p.stdout + p.stderr

rows = {b: {"version": [], "wall": [], "load": [], "steady": []} for b in bins}
for i in range(runs):
    for b in bins:
        r = rows[b]
        r["version"].append(timed([b, "--version"])[0])
        wall, err = timed([b, "transcribe", "--timings", wav])
        r["wall"].append(wall)
        r["load"].append(float(re.search(r"load time = ([\d.]+) ms", err).group(1)))
        if i % 3 == 0:
            _, out = timed([b, "bench", wav])
            r["steady"].append(float(re.search(r"end to end\s+([\d.]+) ms", out).group(1)))

def dist(xs, unit="ms"):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return f"{xs[0]:7.1f} / {statistics.median(xs):7.1f} / {p90:7.1f} {unit}"

print(f"{runs} runs per binary, interleaved; min / median / p90")
for b in bins:
    r = rows[b]
    steady = statistics.median(r["steady"])
    fixed = [w - steady for w in r["wall"]]
    share = [100 * f / w for f, w in zip(fixed, r["wall"])]
    print(f"== {b}")
    print(f"  process start (--version)  {dist(r['version'])}")
    print(f"  load time (--timings)      {dist(r['load'])}")
    print(f"  whole run, wall            {dist(r['wall'])}")
    print(f"  steady run in-process      {dist(r['steady'])}  ({len(r['steady'])} bench runs)")
    print(f"  fixed cost = wall - steady {dist(fixed)}")
    print(f"  fixed cost / wall          {dist(share, '%')}")
EOF
