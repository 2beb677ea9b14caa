//! Backends and memory: CPU kernels, the NPU driver layer (amdxdna), dispatch accounting.
//!
//! Nothing here knows Whisper: it offers devices, buffers and kernels at the granularity of a
//! whole layer (GEMM with fused epilogues, attention, norms).

pub mod dispatch;
pub mod dispatch_bench;
pub mod npu;
