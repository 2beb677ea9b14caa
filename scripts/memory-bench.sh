#!/usr/bin/env bash
# Peak memory against input length: the 144 s file and the same speech repeated to 1 hour, as an
# MP3 (decoded, resampled and turned into log-mel windows as a stream) and as a WAV on stdin
# (log-mel spooled to a temporary file), with --no-guards and with the default guards (the
# digital-silence map and the VAD's speech stretches are gathered in the log-mel's first pass,
# so the default streams too). Prints peak RSS (GNU time's maximum resident set size) and the
# 1 h / 144 s ratio for each, back to back in one run.
#
#   scripts/memory-bench.sh [MODEL]     (default tiny.en.int8; needs ffmpeg and /usr/bin/time)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="${1:-tiny.en.int8}"
threads="${THREADS:-2}"
work="${TMPDIR:-/tmp}/amanuensis-memory-bench"
mkdir -p "$work"
long=../shared/speech/long-lj001-0001to0020.wav
cargo build --release --quiet
bin=target/release/amanuensis

[ -f "$work/short.mp3" ] || ffmpeg -loglevel error -y -i "$long" -c:a libmp3lame -b:a 64k "$work/short.mp3"
if [ ! -f "$work/hour.mp3" ]; then
    # 25 copies of 144.08 s = 3602 s.
    for _ in $(seq 25); do echo "file '$(realpath "$long")'"; done > "$work/list.txt"
    ffmpeg -loglevel error -y -f concat -safe 0 -i "$work/list.txt" -c:a libmp3lame -b:a 64k "$work/hour.mp3"
    ffmpeg -loglevel error -y -i "$work/hour.mp3" -ar 16000 -ac 1 -c:a pcm_s16le "$work/hour.wav"
fi

peak() { # peak RSS in KiB and wall seconds of: amanuensis transcribe ARGS (stdin from $STDIN)
    local log="$work/time.log"
    /usr/bin/time -v -o "$log" "$bin" transcribe -q -m "$model" -t "$threads" -f txt "$@" \
        < "${STDIN:-/dev/null}" > "$work/out.txt"
    local kib wall
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    echo "$kib $wall"
}

echo "memory-bench: $model, $threads threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
read -r short_kib short_wall < <(peak --no-guards "$work/short.mp3")
read -r hour_kib hour_wall < <(peak --no-guards "$work/hour.mp3")
read -r stdin_kib stdin_wall < <(STDIN="$work/hour.wav" peak --no-guards -)
read -r gshort_kib gshort_wall < <(peak "$work/short.mp3")
read -r ghour_kib ghour_wall < <(peak "$work/hour.mp3")
read -r gstdin_kib gstdin_wall < <(STDIN="$work/hour.wav" peak -)
awk -v s="$short_kib" -v h="$hour_kib" -v i="$stdin_kib" -v sw="$short_wall" -v hw="$hour_wall" -v iw="$stdin_wall" \
    -v gs="$gshort_kib" -v gh="$ghour_kib" -v gsw="$gshort_wall" -v ghw="$ghour_wall" \
    -v gi="$gstdin_kib" -v giw="$gstdin_wall" 'BEGIN {
    printf "--no-guards (streamed):\n"
    printf "144 s MP3           : peak RSS %7.1f MB  (wall %s)\n", s / 1024, sw
    printf "1 h MP3 (2 passes)  : peak RSS %7.1f MB  (wall %s)  ratio %.3f\n", h / 1024, hw, h / s
    printf "1 h WAV on stdin    : peak RSS %7.1f MB  (wall %s)  ratio %.3f\n", i / 1024, iw, i / s
    printf "guards on (default):\n"
    printf "144 s MP3           : peak RSS %7.1f MB  (wall %s)\n", gs / 1024, gsw
    printf "1 h MP3 (2 passes)  : peak RSS %7.1f MB  (wall %s)  ratio %.3f\n", gh / 1024, ghw, gh / gs
    printf "1 h WAV on stdin    : peak RSS %7.1f MB  (wall %s)  ratio %.3f\n", gi / 1024, giw, gi / gs
}'
