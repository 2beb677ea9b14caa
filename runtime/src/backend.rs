//! The backend seam: what a model asks a device to do, a whole stage at a time.
//!
//! A model describes each pass once, at load, as a [`Program`] (weights, buffer declarations,
//! stages of layer ops; see [`crate::stage`]). Per stream, the backend creates a
//! [`Backend::Workspace`] that owns everything the stream writes (activations, scratch, caches,
//! prepared keys/values); the model itself stays immutable and shareable. [`Backend::run`]
//! executes one stage in one call: the CPU backends op by op ([`crate::host`]), a device
//! backend may compile it into one submission. Every operation is fallible with a typed
//! [`BackendError`]; the CPU backends never fail on a well-formed call.
//!
//! Host kernels of the CPU backends implement [`LayerKernels`] (one layer per call, on host
//! slices) and get the whole seam from [`crate::host`]. Nothing here knows Whisper.

use std::ops::Range;

pub use crate::cpu::{AttentionShape, Epilogue};
use crate::q8::QuantMatrix;
use crate::stage::{BufferId, KeyValueCacheSpec, Program, StageArgs, StageId};

/// Why a backend operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A call whose arguments do not fit the program (rows, positions or ids past what the
    /// buffers were declared for): a bug in the caller, reported instead of a panic.
    #[error("{backend}: stage {stage:?}, op {op}: {reason}")]
    BadCall {
        /// Backend name.
        backend: &'static str,
        /// Stage name.
        stage: &'static str,
        /// Index of the op in the stage.
        op: usize,
        /// What does not fit.
        reason: String,
    },
    /// A buffer read or write outside the buffer.
    #[error("{backend}: buffer {buffer:?} holds {len} values; access {start}..{end}")]
    OutOfBounds {
        /// Backend name.
        backend: &'static str,
        /// Buffer name.
        buffer: &'static str,
        /// Its length.
        len: usize,
        /// Access start.
        start: usize,
        /// Access end.
        end: usize,
    },
    /// The device refused or failed an operation (allocation, submission, wait).
    #[error("{backend}: {op} failed: {reason}")]
    Device {
        /// Backend name.
        backend: &'static str,
        /// The operation (`create workspace`, `submit encoder`, ...).
        op: &'static str,
        /// The device's reason (errno, firmware status, timeout).
        reason: String,
    },
    /// The backend cannot run this program or weight here.
    #[error("{backend}: {reason}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// A device that runs whole stages of a [`Program`].
pub trait Backend: Send + Sync {
    /// A weight matrix `[rows = out, cols = in]`, in whatever form the device wants it.
    type Matrix: Send + Sync;

    /// Everything one stream writes: buffers, caches, scratch, the device's memory. Created per
    /// stream by [`Backend::workspace`]; the backend itself holds no per-stream state.
    type Workspace: Send;

    /// A short name for logs and reports, e.g. `cpu-f32`.
    fn name(&self) -> &'static str;

    /// Host threads a workspace uses when the caller does not say (CPU backends: the number
    /// given at construction).
    fn default_threads(&self) -> usize;

    /// Prepares a row-major `[rows, cols]` f32 matrix (called once per weight at load).
    fn matrix(
        &self,
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<Self::Matrix, BackendError>;

    /// Prepares a matrix stored as INT8 tiles (a quantized model file). A backend without
    /// INT8 kernels computes with the dequantized values.
    fn matrix_q8(&self, q: QuantMatrix) -> Result<Self::Matrix, BackendError>;

    /// Prepares a row-major `[rows, cols]` f16 matrix (read in place from a model file): the
    /// matrix [`Backend::matrix`] prepares from its values widened to f32 (exact). Default:
    /// widens a copy and calls [`Backend::matrix`]; a backend that keeps no f32 copy (the CPU
    /// INT8 backend quantizes) may read the f16 values directly.
    fn matrix_f16(
        &self,
        data: &[half::f16],
        rows: usize,
        cols: usize,
    ) -> Result<Self::Matrix, BackendError> {
        use half::slice::HalfFloatSliceExt;
        self.matrix(data.to_f32_vec(), rows, cols)
    }

    /// Does now, on the calling thread, the one-time work a matrix's first use would otherwise
    /// do inside a stage (the CPU INT8 kernels: the per-channel code sums, one read of every
    /// tile, which also faults a mapped file's pages in). Optional and idempotent: results never
    /// depend on whether or when it ran; several threads may prepare different matrices at once.
    /// Default: nothing to do.
    fn prepare_matrix(&self, _w: &Self::Matrix) {}

    /// Allocates one stream's workspace for `program` (every buffer, cache and scratch its
    /// stages need, so that [`Backend::run`] allocates nothing), using up to `threads` host
    /// threads (CPU backends: its own pool of that many threads).
    fn workspace(
        &self,
        program: &Program<Self::Matrix>,
        threads: usize,
    ) -> Result<Self::Workspace, BackendError>;

    /// Runs stage `stage` of `program` with `args` on `ws`.
    fn run(
        &self,
        program: &Program<Self::Matrix>,
        stage: StageId,
        args: &StageArgs,
        ws: &mut Self::Workspace,
    ) -> Result<(), BackendError>;

    /// Values `range` of buffer `buffer`, as the host sees them after the last [`Backend::run`].
    fn read<'a>(
        &self,
        ws: &'a Self::Workspace,
        buffer: BufferId,
        range: Range<usize>,
    ) -> Result<&'a [f32], BackendError>;

    /// Writes `data` into buffer `buffer` from `offset`.
    fn write(
        &self,
        ws: &mut Self::Workspace,
        buffer: BufferId,
        offset: usize,
        data: &[f32],
    ) -> Result<(), BackendError>;

    /// Device submissions one call of `stage` costs on this backend (CPU backends: one per
    /// op, as each op is one kernel call; a device that compiles a stage: 1).
    fn submissions(&self, program: &Program<Self::Matrix>, stage: StageId) -> usize;
}

/// Host kernels, one layer per call on host slices: what a CPU backend implements to get the
/// whole [`Backend`] seam from [`crate::host`], which executes stages op by op.
pub trait LayerKernels: Send + Sync {
    /// A weight matrix.
    type Matrix: Send + Sync;

    /// Keys and values prepared once and attended to many times (the decoder's
    /// cross-attention over one audio window), in whatever form the kernels read fastest.
    type KeyValues: Send;

    /// Per-stream kernel state: thread pool, GEMM and attention scratch.
    type Scratch: Send;

    /// A key/value cache ([`KeyValueCacheSpec`]: the decoder's self-attention history, a slot
    /// per beam), stored in whatever precision and layout the kernels choose.
    type KeyValueCache: Send;

    /// A short name for logs and reports.
    fn name(&self) -> &'static str;

    /// Threads a scratch uses when the caller does not say.
    fn default_threads(&self) -> usize;

    /// Prepares a row-major `[rows, cols]` f32 matrix.
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> Self::Matrix;

    /// Prepares an INT8-tiled matrix.
    fn matrix_q8(&self, q: QuantMatrix) -> Self::Matrix;

    /// See [`Backend::matrix_f16`]. Default: widens a copy and calls [`LayerKernels::matrix`].
    fn matrix_f16(&self, data: &[half::f16], rows: usize, cols: usize) -> Self::Matrix {
        use half::slice::HalfFloatSliceExt;
        self.matrix(data.to_f32_vec(), rows, cols)
    }

    /// `(rows, cols)` of a matrix.
    fn matrix_shape(&self, w: &Self::Matrix) -> (usize, usize);

    /// See [`Backend::prepare_matrix`]. Default: nothing to do.
    fn prepare_matrix(&self, _w: &Self::Matrix) {}

    /// A stream's kernel state on `threads` threads.
    fn scratch(&self, threads: usize) -> Self::Scratch;

    /// The thread pool of a stream's kernel state, if it has one: a workspace populates its
    /// buffers on it (every thread of the pool at once) when it is created. Default: none.
    fn scratch_pool<'a>(&self, _s: &'a Self::Scratch) -> Option<&'a crate::cpu::CpuPool> {
        None
    }

    /// Grows `s` so [`LayerKernels::linear`] calls against `w` with up to `rows` rows (and
    /// conv stems through `w` with up to `rows` output rows) allocate nothing.
    fn reserve_linear(&self, s: &mut Self::Scratch, rows: usize, w: &Self::Matrix);

    /// Scratch length attention calls of `shape` (and any smaller shape) need; also grows the
    /// kernel state of `s` so they allocate nothing.
    fn reserve_attention(&self, s: &mut Self::Scratch, shape: &AttentionShape) -> usize;

    /// [`LayerKernels::reserve_attention`] for [`LayerKernels::attention_prepared`] calls of
    /// `shape` (by default the same).
    fn reserve_attention_prepared(&self, s: &mut Self::Scratch, shape: &AttentionShape) -> usize {
        self.reserve_attention(s, shape)
    }

    /// `out[rows, w.rows] = epilogue(x[rows, w.cols] · wᵀ + bias)`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        s: &mut Self::Scratch,
        x: &[f32],
        rows: usize,
        w: &Self::Matrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    );

    /// [`LayerKernels::linear`] on kernels that can fail (a device behind them: submission,
    /// timeout, command error). Host kernels never fail: the default runs
    /// [`LayerKernels::linear`]. [`crate::host`] calls this one.
    #[allow(clippy::too_many_arguments)]
    fn try_linear(
        &self,
        s: &mut Self::Scratch,
        x: &[f32],
        rows: usize,
        w: &Self::Matrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        self.linear(s, x, rows, w, bias, epilogue, out);
        Ok(())
    }

    /// Called by [`crate::host::HostWorkspace::run`] before op `op` of `stage` runs, with
    /// `input(at, len)` reading `len` values of the stage's buffers from `at` (`None` when they
    /// do not fit). A device backend submits there the linears it groups into one submission
    /// (their inputs are final: nothing between writes them) and writes each result when its
    /// own op runs ([`LayerKernels::try_linear`]). Host kernels do nothing.
    #[allow(clippy::too_many_arguments)]
    fn begin_op<'a>(
        &self,
        s: &mut Self::Scratch,
        program: &crate::stage::Program<Self::Matrix>,
        stage: crate::stage::StageId,
        op: usize,
        args: &crate::stage::StageArgs,
        input: &dyn Fn(crate::stage::At, usize) -> Option<&'a [f32]>,
    ) -> Result<(), BackendError> {
        let _ = (s, program, stage, op, args, input);
        Ok(())
    }

    /// Kernel-3, padding-1 1-D convolution, time-major: `x [t_in, c_in]` → `out [t_out, c_out]`,
    /// with `w` prepared from `[c_out, c_in, 3]` as a `[c_out, c_in · 3]` matrix.
    #[allow(clippy::too_many_arguments)]
    fn conv1d_k3(
        &self,
        s: &mut Self::Scratch,
        x: &[f32],
        t_in: usize,
        w: &Self::Matrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    );

    /// Row-wise layer norm of `x [rows, gamma.len()]`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        s: &mut Self::Scratch,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    );

    /// Multi-head scaled dot-product attention (see [`crate::cpu::attention()`]).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        s: &mut Self::Scratch,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    );

    /// Allocates prepared keys/values for up to `capacity` rows of `heads × head_dim` (once).
    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> Self::KeyValues;

    /// Rows held by prepared keys/values.
    fn key_values_len(&self, kv: &Self::KeyValues) -> usize;

    /// Prepares `k`, `v` (`[kv_len, heads·head_dim]` each, `kv_len ≤ capacity`) into `kv`,
    /// replacing what it held; allocates nothing.
    fn prepare_key_values(
        &self,
        s: &mut Self::Scratch,
        k: &[f32],
        v: &[f32],
        kv: &mut Self::KeyValues,
    );

    /// [`LayerKernels::attention`] against prepared keys/values (`shape.kv_len` rows of them).
    fn attention_prepared(
        &self,
        s: &mut Self::Scratch,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Self::KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    );

    /// The attention probabilities of head `head` against prepared keys/values:
    /// `out[r, kv_len] = softmax(q_head[r] · k_headᵀ / √head_dim)` (no mask) for
    /// `shape.q_len` rows, from the keys as prepared (for bf16 keys: their bf16 values).
    fn attention_weights(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Self::KeyValues,
        head: usize,
        out: &mut [f32],
    );

    /// Allocates a key/value cache for `spec` (once per workspace; pages may be mapped on first
    /// write).
    fn key_value_cache(&self, spec: &KeyValueCacheSpec) -> Self::KeyValueCache;

    /// [`LayerKernels::reserve_attention`] for [`LayerKernels::cache_attention`] calls of
    /// `shape` (by default the same).
    fn reserve_cache_attention(&self, s: &mut Self::Scratch, shape: &AttentionShape) -> usize {
        self.reserve_attention(s, shape)
    }

    /// Writes `k`, `v` (`[rows, heads·head_dim]` each) at positions `pos..pos + rows` of slot
    /// `slot`; the slot then holds positions `..pos + rows`. The caller has checked that the
    /// rows fit and that `pos` is not past the positions the slot held; allocates nothing.
    fn cache_write(
        &self,
        cache: &mut Self::KeyValueCache,
        slot: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    );

    /// [`LayerKernels::attention`] of `q` over the first `shape.kv_len` positions of slot
    /// `slot` (which holds exactly that many), keys and values as stored.
    #[allow(clippy::too_many_arguments)]
    fn cache_attention(
        &self,
        s: &mut Self::Scratch,
        shape: &AttentionShape,
        q: &[f32],
        cache: &Self::KeyValueCache,
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    );

    /// Copies positions `..len` of slot `from` to slot `to` (checked by the caller: `len`
    /// positions held by `from`).
    fn cache_copy_slot(&self, cache: &mut Self::KeyValueCache, from: usize, to: usize, len: usize);

    /// Gathers rows `ids` of `table` into `out [ids.len(), table.cols]` (embedding lookup).
    fn gather_rows(&self, table: &Self::Matrix, ids: &[u32], out: &mut [f32]);
}
