#!/usr/bin/env bash
# Generates the INT8 stress set (docs/int8-layout.md section 8) from texts.tsv:
#
#   tests/stress/make_stress.sh OUTDIR
#
# For each line of texts.tsv (id, espeak-ng voice, rate in words per minute, noise, SNR in dB,
# text): espeak-ng speaks the text, sox resamples it to 16 kHz mono 16-bit and, unless noise is
# `none`, mixes in sox-synthesised white/pink/brown noise scaled to the given SNR (RMS ratio
# over the whole utterance). Writes OUTDIR/ID.wav and OUTDIR/refs.tsv (ID.wav<TAB>text, the
# format of ../shared/speech/refs.tsv). sox runs with -R (repeatable noise). Needs espeak-ng, sox
# and awk; fails (exit 1) with a message naming what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: make_stress.sh OUTDIR}"
for tool in espeak-ng sox awk; do
    command -v "$tool" >/dev/null || {
        echo "make_stress: $tool not found" >&2
        exit 1
    }
done
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# rms FILE: the RMS amplitude sox reports for FILE.
rms() { sox "$1" -n stat 2>&1 | awk '/^RMS +amplitude/ { print $3 }'; }

: >"$tmp/refs.tsv"
while IFS=$'\t' read -r id voice rate noise snr text; do
    case "$id" in '' | '#'*) continue ;; esac
    espeak-ng -v "$voice" -s "$rate" -w "$tmp/raw.wav" "$text"
    # Peak at -3 dBFS (no clipping in the resampler), 0.3 s of silence either side.
    sox -R "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$tmp/speech.wav" gain -n -3 rate 16000 pad 0.3 0.3
    if [ "$noise" = none ]; then
        cp "$tmp/speech.wav" "$tmp/$id.wav"
    else
        len="$(soxi -D "$tmp/speech.wav")"
        sox -R -n -r 16000 -c 1 -b 16 "$tmp/noise.wav" synth "$len" "$noise" vol 0.5
        gain="$(awk -v s="$(rms "$tmp/speech.wav")" -v n="$(rms "$tmp/noise.wav")" -v snr="$snr" \
            'BEGIN { printf "%.6f", s / (n * 10 ^ (snr / 20)) }')"
        # -m sums the inputs; the speech is scaled down by 0.5 first so the sum cannot clip.
        sox -R -m -v 0.5 "$tmp/speech.wav" -v "$(awk -v g="$gain" 'BEGIN { printf "%.6f", g * 0.5 }')" \
            "$tmp/noise.wav" -b 16 "$tmp/$id.wav"
    fi
    mv "$tmp/$id.wav" "$out/$id.wav"
    printf '%s.wav\t%s\n' "$id" "$text" >>"$tmp/refs.tsv"
done <"$here/texts.tsv"
mv "$tmp/refs.tsv" "$out/refs.tsv"
