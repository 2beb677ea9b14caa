//! What runs on the AIE array of an AMD Ryzen AI NPU, and its host-side description.
//!
//! - [`kernels`]: bit-exact Rust models of the AIE kernel sources in `aie/kernels/` (INT8
//!   matmul with a dequantize / bias / GELU epilogue; attention with i32 scores and an f32
//!   softmax).
//! - [`design`]: the device programs' geometry (tile sizes, memory budgets) at Whisper's
//!   shapes, matching the IRON designs in `aie/designs/`.
//! - [`txn`]: the TXN v0.1 instruction-stream encoder (`../shared/docs/npu-instruction-stream.md`).
//! - [`program`]: the instruction stream of a whole matmul of any M on the GEMM design, and a
//!   functional replay of it (shim DMA + array) used to prove `C == A·B` without hardware.
//! - [`budget`]: submissions, bytes and a **projected** time per 30 s window and per token.
//!
//! Nothing in this crate has run on NPU hardware: no machine we reach has one, and no AIE
//! compiler (mlir-aie, Peano) is installable here. See `aie/README.md`.

pub mod budget;
pub mod design;
pub mod error;
pub mod kernels;
pub mod program;
pub mod txn;

pub use error::AieError;
