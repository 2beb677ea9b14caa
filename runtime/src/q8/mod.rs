//! INT8 CPU kernels: per-channel symmetric weight quantization in the tile-major layout the
//! model file (and later the NPU) uses, per-row activation quantization, an INT8 GEMM with
//! the f32 epilogues (scalar reference, portable and AVX2 paths, bit-identical), and
//! attention with INT8 `Q·Kᵀ`; INT8 keys/values prepared once (cross-attention) with INT8
//! `Q·Kᵀ` and `P·V`.
//!
//! The layout and numerics are specified in `docs/int8-layout.md`.

pub mod attention;
pub mod conv;
pub mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_amx;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_vnni;
#[cfg(target_arch = "x86_64")]
mod gemm_vnni256;
pub mod kernels;
pub mod layout;
mod parts;
pub mod peak;
pub mod prepared;
pub mod quant;
pub mod values;
#[cfg(target_arch = "x86_64")]
mod values_vnni;

pub use attention::{
    attention_q8, attention_q8_scratch_len, attention_q8_with, Q8AttentionScratch,
};
pub use conv::conv1d_k3_q8;
pub use gemm::{dequantize_into, gemm_q8, gemm_q8_with, Q8Scratch};
pub use kernels::Isa;
pub use layout::{LayoutError, QuantMatrix, TILE};
pub use prepared::{
    attention_q8_prepared, attention_q8_prepared_with, Q8KeyValues, Q8PreparedScratch,
};
pub use quant::{quantize_f16_to_tiles, quantize_to_tiles};
