#!/usr/bin/env bash
# Benchmark-report helper (not CI): the fixed cost of one CLI process (issue 10, "Load in
# milliseconds") on jfk.wav with the default command, `amanuensis transcribe jfk.wav` (tiny.en,
# INT8), over RUNS rounds of one or more binaries, interleaved round by round so that every
# binary sees the same machine load.
#
#   scripts/fixed-cost.sh [RUNS] [BIN...]     # default: 30 rounds of target/release/amanuensis
#   scripts/fixed-cost.sh 30 /tmp/old/amanuensis target/release/amanuensis
#
# Per round and binary: the wall time of `BIN --version` (exec, dynamic loader, exit: out of the
# program's hands), of `BIN transcribe --timings jfk.wav` (with its `load time`: model load and
# session, i.e. pool and pre-touched buffers; and whether huge pages were found cold), and of
# `BIN transcribe jfk.wav jfk.wav` (the same file twice in one process). The second file costs
# what a warm process pays per file (same pipeline: VAD gate, guards, reading, output), so
#   steady = median(two files) - median(one file),  fixed = median(one file) - steady,
# i.e. everything a process pays once: process start, load, pool, the VAD model's load, the
# first window's page faults and lazy set-up, exit. Differences of medians: on a machine shared
# with other work, read the medians; min / p90 are given for the directly measured parts. With
# several binaries, each is also compared with the first round by round (the median of the
# per-round differences of the one-file wall time): the steady part is the same program, so that
# difference is the change in fixed cost, and pairing rounds cancels slow drifts of the load.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-30}
shift || true
bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=("$root/target/release/amanuensis")
wav="$root/../shared/speech/jfk.wav"
[ -f "$wav" ] || { echo "fixed-cost.sh: $wav not found" >&2; exit 1; }

python3 - "$runs" "$wav" "${bins[@]}" <<'EOF'
import os, re, statistics, subprocess, sys, time

runs, wav, bins = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

def timed(cmd):
    """Wall ms, stderr and minor page faults of one run of cmd."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t) * 1e3
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    return wall, err, usage.ru_minflt

keys = ["version", "one", "two", "load", "cold", "faults", "ready"]
rows = {b: {k: [] for k in keys} for b in bins}
for i in range(runs):
    for b in bins:
        r = rows[b]
        r["version"].append(timed([b, "--version"])[0])
        wall, err, faults = timed([b, "transcribe", "--timings", wav])
        r["one"].append(wall)
        r["faults"].append(faults)
        r["load"].append(float(re.search(r"load time = ([\d.]+) ms", err).group(1)))
        r["cold"].append("huge pages cold" in err)
        ready = re.search(r"ready ([\d.]+) ms", err)
        if ready:
            r["ready"].append(float(ready.group(1)))
        r["two"].append(timed([b, "transcribe", wav, wav])[0])

def dist(xs, unit="ms"):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return f"{xs[0]:7.1f} / {statistics.median(xs):7.1f} / {p90:7.1f} {unit}"

med = statistics.median
print(f"{runs} rounds per binary, interleaved; min / median / p90")
for b in bins:
    r = rows[b]
    steady = med(r["two"]) - med(r["one"])
    fixed = med(r["one"]) - steady
    print(f"== {b}")
    print(f"  process start (--version)    {dist(r['version'])}")
    print(f"  load time (--timings)        {dist(r['load'])}")
    for cold in (False, True):
        part = [x for x, c in zip(r["load"], r["cold"]) if c == cold]
        if part and any(r["cold"]):
            print(f"    huge pages {'cold' if cold else 'hot '} ({len(part):2} runs)  {dist(part)}")
    if r["ready"]:
        print(f"  ready for the first window   {dist(r['ready'])} (load, session, VAD, first pass, weights)")
    print(f"  one file, wall               {dist(r['one'])}")
    print(f"  one file, minor page faults  {dist(r['faults'], '')}")
    print(f"  same file twice, wall        {dist(r['two'])}")
    print(f"  steady (second file)         {steady:7.1f} ms (difference of medians)")
    print(f"  fixed cost                   {fixed:7.1f} ms = {100 * fixed / med(r['one']):.1f} % of"
          f" the median one-file run; of it, start {med(r['version']):.1f} ms"
          f" + load {med(r['load']):.1f} ms (medians)")
    if b != bins[0]:
        d = [x - y for x, y in zip(r["one"], rows[bins[0]]["one"])]
        print(f"  one file minus the first binary's, same round: {dist(d)}")
EOF
