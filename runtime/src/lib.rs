//! Backends and memory: CPU kernels, the NPU driver layer (amdxdna), dispatch accounting.
//!
//! Nothing here knows Whisper: it offers devices, buffers and kernels at the granularity of a
//! whole layer (GEMM with fused epilogues, attention, norms).

pub mod aie_gemm;
pub mod amx;
pub mod backend;
pub mod chain_plan;
pub mod cpu;
pub mod cpu_backend;
pub mod cpu_int8_backend;
pub mod dirty_ranges;
pub mod dispatch;
pub mod dispatch_bench;
pub mod host;
pub mod mapped_file;
pub mod npu;
pub mod npu_attention;
pub mod npu_attention_chain;
pub mod npu_backend;
pub mod npu_norm;
pub mod q8;
pub mod resident;
pub mod sigbus;
pub mod stage;
pub mod table;
pub mod unread_results;
