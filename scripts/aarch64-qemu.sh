#!/usr/bin/env bash
# Build the workspace for aarch64-unknown-linux-gnu and run it under qemu-user on an x86 host:
# the library tests of the runtime, model and aie crates, then the CLI on a file of
# ../shared/speech, whose JSON (tokens and log-probabilities) is compared with the host build's
# forced `portable` path (the same `wide` kernels: SSE2 on the host, NEON on aarch64).
#
# Usage: scripts/aarch64-qemu.sh [AUDIO]      (default ../shared/speech/jfk.wav; tiny.en.int8)
# Needs: `rustup target add aarch64-unknown-linux-gnu`, an aarch64 C toolchain and qemu-user
# (Debian: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user).
#
# qemu-user emulates the instructions, not the machine: its times say nothing of a real aarch64
# CPU, and this is no substitute for one. It does run the aarch64 code paths (NEON through
# `wide`, the aarch64 float and atomics code generation) on real inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

audio=${1:-../shared/speech/jfk.wav}
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

missing=()
rustup target list --installed 2>/dev/null | grep -qx "$target" || missing+=("rustup target $target")
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(aarch64-linux-gnu-gcc)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-aarch64)
[ -d "$sysroot/lib" ] || missing+=("$sysroot (libc6-dev-arm64-cross)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "aarch64-qemu: missing ${missing[*]}; nothing run" >&2
    exit 2
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++

echo "== library tests, $target under qemu-user"
# qemu-user answers an ioctl it does not know with ENOSYS where Linux says ENOTTY: that one
# test checks the kernel's answer, not ours.
cargo test --release --target "$target" -p amanuensis-runtime -p amanuensis-model -p amanuensis-aie \
    --lib -- --skip npu::ioctl::tests::non_drm_fd_gives_enotty

echo "== amanuensis transcribe $audio, $target under qemu-user vs the host's portable path"
cargo build --release --target "$target" --bin amanuensis
cargo build --release --bin amanuensis
dir=${CARGO_TARGET_DIR:-target}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
qemu-aarch64 -L "$sysroot" "$dir/$target/release/amanuensis" transcribe "$audio" \
    -m tiny.en.int8 --threads 2 -f json >"$out/aarch64.json"
AMANUENSIS_Q8_ISA=portable "$dir/release/amanuensis" transcribe "$audio" \
    -m tiny.en.int8 --threads 2 -f json >"$out/host.json"
python3 - "$out/aarch64.json" "$out/host.json" <<'EOF'
import json, sys
a, h = (json.load(open(p))["segments"] for p in sys.argv[1:3])
same_tokens = [s["tokens"] for s in a] == [s["tokens"] for s in h]
worst = max((abs(x["avg_logprob"] - y["avg_logprob"]) for x, y in zip(a, h)), default=0.0)
print(f"segments {len(a)} vs {len(h)}; tokens {'equal' if same_tokens else 'DIFFER'}; "
      f"largest avg_logprob difference {worst:.3g}")
sys.exit(0 if same_tokens and len(a) == len(h) else 1)
EOF
