//! Device programs as instruction streams: the GEMM design's stream for a whole matmul of any
//! M ([`gemm`]), the host-side buffer images it reads ([`images`]), and a functional replay
//! ([`replay`]) that executes the stream's shim DMA tasks and a Rust model of the array, so a
//! test can check `C == A·B` (and the whole epilogue) without hardware. The LayerNorm +
//! quantize design's stream and array model are in [`norm`]; the attention design's in
//! [`attention`], and the step that writes its images on the device in [`attention_inputs`]
//! (for a self-attention over a K/V cache: [`cache_inputs`], new rows at a patched position).

pub mod attention;
pub mod attention_inputs;
pub mod cache_inputs;
pub mod gemm;
pub mod images;
pub mod norm;
pub mod replay;
