//! What runs on the AIE array of an AMD Ryzen AI NPU.
//!
//! This crate will hold the AIE kernel sources, the device programs (xclbin + instruction
//! streams), their host-side description and a bit-exact Rust reference of each kernel. It is
//! empty until the NPU kernel issue: the driver layer lives in `amanuensis-runtime`.
