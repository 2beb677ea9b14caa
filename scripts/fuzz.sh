#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded budget when a nightly
# toolchain is installed (libFuzzer needs its sanitizer flags); cargo-fuzz is installed on first
# use (pinned). Without nightly it says so and stops: the stable mutation tests in `cargo test`
# (never_panics_* in each crate) stand in. A crash fails the run and leaves the input in
# <crate>/fuzz/artifacts/<target>/: turn it into a regression test next to the parser.
#
# The budget is FUZZ_RUNS inputs (default 20000) from a fixed FUZZ_SEED (default 1) and a fresh
# corpus, capped at FUZZ_SECONDS (default 60) per target: the same inputs on every machine, so
# a CI run finds nothing that a run here did not (set FUZZ_SEED=0 for a random seed, and raise
# FUZZ_RUNS, when hunting).
#
# Build: every fuzz crate in one target directory (target/fuzz; their lock files pin the root's
# versions, so the crates they share are built once), all of a crate's targets in one
# `cargo fuzz build`, in cargo-fuzz's --dev mode (no optimisation; the same address sanitizer,
# coverage instrumentation and debug assertions as its release mode): the optimised build of
# the model crate and its dependencies took minutes, and 20000 inputs run in seconds either way.
# FUZZ_RELEASE=1 builds optimised (for long hunts).
#
#   scripts/fuzz.sh [TARGET...]      (default: all)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${FUZZ_SECONDS:-60}"
runs="${FUZZ_RUNS:-20000}"
seed="${FUZZ_SEED:-1}"
cargo_fuzz_version="0.13.2"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain (rustup toolchain list): skipped; the stable mutation tests ran in cargo test"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

# crate dir : target
all=(
    model:wav model:audio_stream
    weights-tools:model_file weights-tools:ct2_parse
    runtime:xclbin runtime:txn_validate
    aie:txn
)
want=("$@")
build=(--target-dir "$repo/target/fuzz")
# (cargo-fuzz's default, release with debug assertions, when FUZZ_RELEASE=1)
[ "${FUZZ_RELEASE:-0}" = 1 ] || build+=(--dev)
selected=()
for entry in "${all[@]}"; do
    target="${entry#*:}"
    if [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " =~ " $target " ]]; then
        selected+=("$entry")
    fi
done
# One build per crate, every target of it (a build failure fails the run).
built=" "
for entry in "${selected[@]}"; do
    dir="${entry%%:*}"
    [[ "$built" == *" $dir "* ]] && continue
    built+="$dir "
    echo "fuzz: building $dir/fuzz" >&2
    if ! (cd "$dir/fuzz" && cargo +nightly fuzz build "${build[@]}") > "$dir/fuzz/build.log" 2>&1; then
        tail -30 "$dir/fuzz/build.log" >&2
        echo "fuzz: $dir/fuzz does not build" >&2
        exit 1
    fi
done
failed=()
for entry in "${selected[@]}"; do
    dir="${entry%%:*}"
    target="${entry#*:}"
    corpus="$dir/fuzz/corpus/$target"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    echo "fuzz: $dir/$target: $runs inputs from seed $seed (at most ${seconds}s)" >&2
    if ! (cd "$dir/fuzz" && cargo +nightly fuzz run "${build[@]}" "$target" "corpus/$target" -- \
        -seed="$seed" -runs="$runs" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1) \
        > "$dir/fuzz/$target.log" 2>&1; then
        failed+=("$dir/$target")
        tail -30 "$dir/fuzz/$target.log" >&2
    else
        grep -E '^stat::number_of_executed_units' "$dir/fuzz/$target.log" | sed "s|^|fuzz: $target |" >&2 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]} (inputs in <crate>/fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no crash"
