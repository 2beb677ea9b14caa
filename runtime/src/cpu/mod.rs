//! CPU kernels in plain f32: a persistent thread pool, GEMM with fused epilogues, Whisper's
//! convolution stem, attention, layer norm, GELU and softmax.
//!
//! Error policy: shapes are fixed by the model code, so a slice length that does not match the
//! stated shape is a programming error, not bad input. Every kernel `assert!`s its slice
//! lengths once at the top (cheap, once per call) and panics with a message naming the kernel
//! and the argument. Validate untrusted shapes (model files) before calling in here.
//!
//! Hot paths allocate nothing: scratch buffers are passed in by the caller (`gemm_bt` keeps
//! one per-thread pack buffer, grown to the largest weight it packed, ≤ 32 MB).
//!
//! Speed: every kernel is plain Rust written to auto-vectorise, and the hot ones (GEMM tiles,
//! softmax, GELU) also have an x86-64 AVX2+FMA version chosen at run time; both versions are
//! tested against f64 references. Weights used repeatedly should be packed once
//! ([`PackedWeights`], then [`gemm_packed`]). Throughput (AMD Zen3, shared 2-core machine, min
//! of runs): `m=1500, k=384, n=1536` ≈ 80 GFLOP/s on 1 thread, ≈ 150 on 2; decoder logits
//! `m=1, k=384, n=51864` ≈ 10–13 GFLOP/s (memory bound: 80 MB of weights per call); encoder
//! self-attention (6 heads × 64, 1500 × 1500) ≈ 60 ms per layer on 1 thread with
//! [`attention()`], ≈ 44-46 ms with [`attention_packed()`] (keys and values packed per head, fused
//! f32 softmax; README, Performance). Measure with
//! `cargo test -p amanuensis-runtime --lib cpu::bench -- --ignored --nocapture --test-threads=1`.

pub mod activation;
pub mod attention;
pub mod attention_bf16;
#[cfg(target_arch = "x86_64")]
pub mod attention_bf16_amx;
pub mod attention_bf16_kv;
pub mod attention_packed;
#[cfg(test)]
mod bench;
pub mod conv;
pub mod gemm;
mod gemm_kernels;
pub mod kv_cache;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod softmax;
#[cfg(test)]
pub(crate) mod testing;

pub use activation::{erf, gelu_erf, gelu_f32_in_place, gelu_in_place};
pub use attention::{attention, attention_scratch_len, attention_split, AttentionShape, SplitRows};
pub use attention_bf16::{attention_bf16, attention_bf16_scratch_len, Bf16KeyValues};
pub use attention_bf16_kv::{attention_bf16_kv, attention_bf16_kv_scratch_len};
pub use attention_packed::{
    attention_packed, attention_packed_scratch_len, attention_packed_supports,
};
pub use conv::{conv1d_k3, conv1d_k3_out_len, conv1d_k3_scratch_len};
pub use gemm::{gemm_bt, gemm_packed, Epilogue};
pub use kv_cache::{Bf16KeyValueCache, F32KeyValueCache};
pub use norm::layer_norm;
pub use packed::PackedWeights;
pub use pool::CpuPool;
pub use softmax::{log_softmax_in_place, log_sum_exp, softmax_in_place};
