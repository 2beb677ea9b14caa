//! CPU kernels in plain f32: a persistent thread pool, GEMM with fused epilogues, Whisper's
//! convolution stem, attention, layer norm, GELU and softmax.
//!
//! Error policy: shapes are fixed by the model code, so a slice length that does not match the
//! stated shape is a programming error, not bad input. Every kernel `assert!`s its slice
//! lengths once at the top (cheap, once per call) and panics with a message naming the kernel
//! and the argument. Validate untrusted shapes (model files) before calling in here.
//!
//! Hot paths allocate nothing: scratch buffers are passed in by the caller.

pub mod activation;
pub mod attention;
#[cfg(test)]
mod bench;
pub mod conv;
pub mod gemm;
mod gemm_kernels;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod softmax;
#[cfg(test)]
pub(crate) mod testing;

pub use activation::{erf, gelu_erf, gelu_in_place};
pub use attention::{attention, attention_scratch_len, AttentionShape};
pub use conv::{conv1d_k3, conv1d_k3_out_len, conv1d_k3_scratch_len};
pub use gemm::{gemm_bt, gemm_packed, Epilogue};
pub use norm::layer_norm;
pub use packed::PackedWeights;
pub use pool::CpuPool;
pub use softmax::{log_softmax_in_place, softmax_in_place};
