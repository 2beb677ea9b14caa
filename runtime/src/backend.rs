//! The backend trait: what a model asks a device to compute, at the granularity of a layer.
//!
//! A backend owns its prepared weights (`Matrix`) and runs whole-layer kernels on host slices:
//! linear layers with a fused epilogue, the conv stem, layer norm, multi-head attention and row
//! gathers. It knows nothing of Whisper: adding a backend touches no model code.

pub use crate::cpu::{AttentionShape, Epilogue};
use crate::q8::QuantMatrix;

/// A device that runs the layer kernels of a transformer.
pub trait Backend: Send + Sync {
    /// A weight matrix `[rows = out, cols = in]`, in whatever form the device wants it.
    type Matrix: Send + Sync;

    /// Keys and values prepared once and attended to many times (the decoder's
    /// cross-attention over one audio window), in whatever form the device reads fastest.
    type KeyValues: Send + Sync;

    /// A short name for logs and reports, e.g. `cpu-f32`.
    fn name(&self) -> &'static str;

    /// Prepares a row-major `[rows, cols]` f32 matrix (called once per weight at load).
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> Self::Matrix;

    /// Prepares a matrix stored as INT8 tiles (a quantized model file). A backend without
    /// INT8 kernels computes with the dequantized values.
    fn matrix_q8(&self, q: QuantMatrix) -> Self::Matrix;

    /// A hint, called while a model allocates its buffers: later [`Backend::linear`] calls
    /// against `w` with up to `rows` rows (and conv stems through `w`) should allocate
    /// nothing. The default does nothing.
    fn reserve_linear(&self, rows: usize, w: &Self::Matrix) {
        let _ = (rows, w);
    }

    /// `out[rows, w.rows] = epilogue(x[rows, w.cols] · wᵀ + bias)`.
    fn linear(
        &self,
        x: &[f32],
        rows: usize,
        w: &Self::Matrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    );

    /// Kernel-3, padding-1 1-D convolution, time-major: `x [t_in, c_in]` → `out [t_out, c_out]`,
    /// with `w` prepared from `[c_out, c_in, 3]` as a `[c_out, c_in · 3]` matrix.
    #[allow(clippy::too_many_arguments)]
    fn conv1d_k3(
        &self,
        x: &[f32],
        t_in: usize,
        w: &Self::Matrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    );

    /// Row-wise layer norm of `x [rows, gamma.len()]`.
    fn layer_norm(
        &self,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    );

    /// Multi-head scaled dot-product attention (see [`crate::cpu::attention()`]).
    fn attention(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    );

    /// Scratch length [`Backend::attention`] needs for `shape` (and any smaller shape).
    fn attention_scratch_len(&self, shape: &AttentionShape) -> usize;

    /// Allocates prepared keys/values for up to `capacity` rows of `heads × head_dim` (once).
    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> Self::KeyValues;

    /// Prepares `k`, `v` (`[kv_len, heads·head_dim]` each, `kv_len ≤ capacity`) into `kv`,
    /// replacing what it held; allocates nothing.
    fn prepare_key_values(&self, k: &[f32], v: &[f32], kv: &mut Self::KeyValues);

    /// [`Backend::attention`] against prepared keys/values (`shape.kv_len` rows of them).
    fn attention_prepared(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Self::KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    );

    /// Gathers rows `ids` of `table` into `out [ids.len(), table.cols]` (embedding lookup).
    fn gather_rows(&self, table: &Self::Matrix, ids: &[u32], out: &mut [f32]);
}
