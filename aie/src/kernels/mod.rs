//! Bit-exact Rust models of the AIE kernels in `aie/kernels/` (the C++ sources an IRON design
//! links into its cores). Each function here is the arithmetic of one C++ entry point, on the
//! same L1 object layouts ([`layout`]); `tests/host_build.rs` compiles the C++ for the host
//! and compares every output bit.

pub mod attention;
pub mod layout;
pub mod matmul;
pub mod norm_quant;
pub mod numerics;
