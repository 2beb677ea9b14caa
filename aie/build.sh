#!/usr/bin/env bash
# Builds the xclbins and instruction streams of the Amanuensis AIE designs when mlir-aie (IRON,
# aiecc.py) and Peano (the AIE LLVM compiler) are installed; otherwise says so and skips.
#
#   aie/build.sh [npu1|npu2] [OUT_DIR]      default: npu1, aie/build/<dev>
#
# Needs: python3 with the `aie` package (mlir-aie's IRON), aiecc.py on PATH, PEANO_INSTALL_DIR
# pointing at Peano (llvm-aie), and MLIR_AIE_INCLUDE_DIR (or mlir-aie's `aie_api` headers found
# through `python3 -m aie.utils.config --cflags`, when that helper exists).
# Neither mlir-aie nor Peano is on any package registry our machines reach, so on them this
# script only reports what is missing. Nothing it would produce has run on an NPU.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dev="${1:-npu1}"
out="${2:-$here/build/$dev}"
case "$dev" in
  npu1) target=aie2-none-unknown-elf ;;
  npu2) target=aie2p-none-unknown-elf ;;
  *) echo "build.sh: unknown device '$dev' (npu1 or npu2)" >&2; exit 2 ;;
esac

missing=()
command -v aiecc.py >/dev/null 2>&1 || missing+=("aiecc.py (mlir-aie) not on PATH")
python3 -c 'import aie.iron' >/dev/null 2>&1 || missing+=("python module aie.iron (mlir-aie IRON) not importable")
if [[ -z "${PEANO_INSTALL_DIR:-}" || ! -x "${PEANO_INSTALL_DIR}/bin/clang++" ]]; then
  missing+=("Peano: PEANO_INSTALL_DIR unset or without bin/clang++")
fi
if (( ${#missing[@]} )); then
  echo "aie/build.sh: SKIPPING the xclbin build for $dev — the AIE toolchain is not installed:"
  for m in "${missing[@]}"; do echo "  - $m"; done
  echo "Nothing was built. The kernels' host build and their Rust models are tested by"
  echo "'cargo test -p amanuensis-aie' instead; instruction streams come from the Rust generator."
  exit 0
fi

cflags=()
if [[ -n "${MLIR_AIE_INCLUDE_DIR:-}" ]]; then
  cflags+=("-I${MLIR_AIE_INCLUDE_DIR}")
fi
mkdir -p "$out"
echo "aie/build.sh: building $dev into $out"

# Kernels: one object per source, linked by name from the designs.
for k in matmul_i8 attention; do
  "${PEANO_INSTALL_DIR}/bin/clang++" --target="$target" -O2 -std=c++20 -ffp-contract=off \
    -I"$here/kernels" "${cflags[@]}" -c "$here/kernels/$k.cc" -o "$out/$k.o"
done

build_design() { # name, python args...
  local name="$1"; shift
  local dir="$out/$name"
  mkdir -p "$dir"
  cp "$out"/*.o "$dir/"
  python3 "$here/designs/$@" --dev "$dev" > "$dir/$name.mlir"
  (cd "$dir" && aiecc.py --no-aiesim --no-xchesscc --no-xbridge --peano "$PEANO_INSTALL_DIR" \
    --aie-generate-xclbin --xclbin-name="$name.xclbin" \
    --aie-generate-npu-insts --npu-insts-name="$name.insts.bin" "$name.mlir")
  echo "  $name: $dir/$name.xclbin"
}

# GEMM shapes (aie/src/design.rs gemm_shapes): fused QKV d x 3d, d x d, fused cross K/V d x 2d,
# fc1 d x 4d with GELU, fc2 4d x d — for tiny (d 384) and base (d 512); row mapping for the
# encoder and the cross K/V (1500 rows), decoder mapping for the decoder's own layers.
for d in 384 512; do
  build_design "gemm_${d}x$((3 * d))" gemm_i8.py -K "$d" -N $((3 * d))
  build_design "gemm_${d}x${d}" gemm_i8.py -K "$d" -N "$d"
  build_design "gemm_${d}x$((2 * d))" gemm_i8.py -K "$d" -N $((2 * d))
  build_design "gemm_${d}x$((4 * d))_gelu" gemm_i8.py -K "$d" -N $((4 * d)) --gelu
  build_design "gemm_$((4 * d))x${d}" gemm_i8.py -K $((4 * d)) -N "$d"
  # Decoder mapping (M of 1-5): self QKV, d x d (self out, cross Q, cross out), fc1, fc2.
  build_design "gemm_dec_${d}x$((3 * d))" gemm_i8.py -K "$d" -N $((3 * d)) --decoder -M 5
  build_design "gemm_dec_${d}x${d}" gemm_i8.py -K "$d" -N "$d" --decoder -M 5
  build_design "gemm_dec_${d}x$((4 * d))_gelu" gemm_i8.py -K "$d" -N $((4 * d)) --gelu --decoder -M 5
  build_design "gemm_dec_$((4 * d))x${d}" gemm_i8.py -K $((4 * d)) -N "$d" --decoder -M 5
done
# Attention: encoder (1500 x 1500) and decoder (5 queries: beam 5; 1500 cross keys, 448 self).
for heads in 6 8; do
  build_design "attention_enc_h$heads" attention.py --heads "$heads" --queries 1500 --keys 1500
  build_design "attention_xdec_h$heads" attention.py --heads "$heads" --queries 5 --keys 1500 --decoder
  build_design "attention_sdec_h$heads" attention.py --heads "$heads" --queries 5 --keys 448 --decoder
done
# LayerNorm + quantize (+ residual add): the kernel's parameter array is sized per width
# (-DNQ_MAX_D), so norm_quant.o is rebuilt for each d before its designs copy it.
for d in 384 512; do
  "${PEANO_INSTALL_DIR}/bin/clang++" --target="$target" -O2 -std=c++20 -ffp-contract=off \
    -DNQ_MAX_D="$d" -I"$here/kernels" "${cflags[@]}" -c "$here/kernels/norm_quant.cc" -o "$out/norm_quant.o"
  build_design "norm_quant_${d}" norm_quant.py -D "$d" -M 1500
  build_design "add_norm_quant_${d}" norm_quant.py -D "$d" -M 1500 --residual
done
# The plain quantize of fc2's input (tiny, base): no parameters, so the kernel's parameter array
# at its smallest (-DNQ_MAX_D=64) to leave L1 to the single-buffered rows.
"${PEANO_INSTALL_DIR}/bin/clang++" --target="$target" -O2 -std=c++20 -ffp-contract=off \
  -DNQ_MAX_D=64 -I"$here/kernels" "${cflags[@]}" -c "$here/kernels/norm_quant.cc" -o "$out/norm_quant.o"
for d in 1536 2048; do
  build_design "quant_${d}" norm_quant.py -D "$d" -M 1500 --quantize
done
echo "aie/build.sh: done. These xclbins have not been run on hardware by this project."
