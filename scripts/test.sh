#!/usr/bin/env bash
# The whole check, as CI runs it: formatting, the test build, fetch + convert the test models
# (cached; the converter is the test build's), lints, docs, then every test of the workspace
# (unit, golden, WER), then the fuzz targets.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

echo "== cargo fmt --check" >&2
cargo fmt --all --check

# The test build first: it builds the weights-tools binary too (weights-tools has integration
# tests), with the workspace's features; `cargo build -p weights-tools` alone resolved other
# features for shared dependencies and built tokenizers, the model crate and weights-tools twice.
echo "== cargo test --no-run (the converter the models step uses is one of its binaries)" >&2
cargo test --workspace --no-run -q

echo "== models (tiny.en, base, their INT8 files; cached)" >&2
WEIGHTS_TOOLS="$repo/target/debug/weights-tools" scripts/setup-models.sh tiny.en base tiny.en.int8 base.int8 silero-vad >/dev/null

echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets -q -- -D warnings

echo "== cargo doc (warnings are errors)" >&2
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q

echo "== cargo test" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"

echo "== fuzz: every cargo-fuzz target, a fixed budget of inputs each, when nightly is installed" >&2
scripts/fuzz.sh
# One closing line over every test binary (cargo prints one per binary, the last often a crate
# without doc tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
