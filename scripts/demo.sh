#!/usr/bin/env bash
# One command on a fresh machine: build, fetch + convert the default model (tiny.en, its INT8
# file), make a speech sample, transcribe it.
#
#   scripts/demo.sh [FILE.wav]     transcribe FILE.wav instead of the generated sample
#
# The generated sample is spoken by espeak-ng (installed with apt-get if missing; that needs
# root or sudo) into the cache folder: it is synthetic speech, not a file from a test set.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${AMANUENSIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/amanuensis}"
cd "$repo"

echo "demo: building amanuensis (release)" >&2
cargo build --release -q -p amanuensis -p weights-tools
export WEIGHTS_TOOLS="$repo/target/release/weights-tools"
model="$(scripts/setup-models.sh tiny.en.int8)"

if [ "$#" -ge 1 ]; then
    sample="$1"
else
    sample="$cache/samples/demo.wav"
    if [ ! -f "$sample" ]; then
        if ! command -v espeak-ng >/dev/null 2>&1; then
            echo "demo: installing espeak-ng (apt-get) to speak a sample" >&2
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            $sudo apt-get update -qq >&2
            $sudo apt-get install -y -qq espeak-ng >&2
        fi
        mkdir -p "$(dirname "$sample")"
        text="This is a test of speech recognition. The whisper model runs on the processor, with no framework at all."
        espeak-ng -s 150 -w "$sample.tmp" "$text"
        mv "$sample.tmp" "$sample"
        echo "demo: spoke a sample with espeak-ng: \"$text\"" >&2
    fi
fi
echo "demo: transcribing $sample with $model" >&2
exec target/release/amanuensis transcribe -m "$model" --timings "$sample"
