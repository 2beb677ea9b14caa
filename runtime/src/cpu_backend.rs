//! The CPU backend in f32: the accuracy reference every faster path is held to.

use crate::backend::{AttentionShape, Epilogue, LayerKernels};
use crate::cpu::{self, CpuPool, F32KeyValueCache};
use crate::stage::KeyValueCacheSpec;

/// A dense row-major f32 matrix `[rows, cols]`.
pub struct DenseMatrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl DenseMatrix {
    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (input channels).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The row-major data.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

/// Prepared keys/values of [`CpuBackend`]: row-major f32 copies.
pub struct F32KeyValues {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
    width: usize,
}

impl F32KeyValues {
    /// Room for `len` f32 values in each of `k` and `v`, in rows of `width`.
    pub fn new(len: usize, width: usize) -> Self {
        Self {
            k: vec![0.0; len],
            v: vec![0.0; len],
            len: 0,
            width: width.max(1),
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.len / self.width
    }

    /// Copies `k`, `v` in.
    ///
    /// # Panics
    /// If they differ in length or exceed the capacity.
    pub fn fill(&mut self, k: &[f32], v: &[f32]) {
        assert_eq!(k.len(), v.len(), "F32KeyValues: k and v differ");
        assert!(
            k.len() <= self.k.len(),
            "F32KeyValues: more rows than capacity"
        );
        self.k[..k.len()].copy_from_slice(k);
        self.v[..v.len()].copy_from_slice(v);
        self.len = k.len();
    }

    /// The keys and values held.
    pub fn get(&self) -> (&[f32], &[f32]) {
        (&self.k[..self.len], &self.v[..self.len])
    }
}

/// Widest head [`LayerKernels::attention_weights`] reads (its key row lives on the stack).
pub const MAX_WEIGHTS_HEAD_DIM: usize = 256;

/// Attention probabilities of one head against f32 keys `k` (`[kv_len, heads·head_dim]`).
pub(crate) fn f32_attention_weights(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    head: usize,
    out: &mut [f32],
) {
    let (d, w) = (shape.head_dim, shape.heads * shape.head_dim);
    let mut buf = [0.0f32; MAX_WEIGHTS_HEAD_DIM];
    cpu::attention::attention_weights_with(
        shape,
        q,
        head,
        &mut buf[..d],
        |j, row| row.copy_from_slice(&k[j * w + head * d..][..d]),
        out,
    );
}

/// Per-stream state of the CPU backends: the stream's own thread pool and conv scratch.
pub struct CpuScratch {
    pool: CpuPool,
    conv: Vec<f32>,
}

impl CpuScratch {
    /// A pool of `threads` threads (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        Self {
            pool: CpuPool::new(threads.max(1)),
            conv: Vec::new(),
        }
    }

    /// The stream's thread pool.
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }

    /// The pool and the conv scratch, borrowed together.
    pub fn parts(&mut self) -> (&CpuPool, &mut Vec<f32>) {
        (&self.pool, &mut self.conv)
    }
}

/// f32 kernels; each stream's workspace brings its own thread pool.
pub struct CpuBackend {
    threads: usize,
}

impl CpuBackend {
    /// A backend whose streams use `threads` threads each by default (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
        }
    }
}

crate::host_backend!(CpuBackend);

impl LayerKernels for CpuBackend {
    type KeyValues = F32KeyValues;
    type Matrix = DenseMatrix;
    type Scratch = CpuScratch;
    type KeyValueCache = F32KeyValueCache;

    fn name(&self) -> &'static str {
        "cpu-f32"
    }

    fn default_threads(&self) -> usize {
        self.threads
    }

    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> DenseMatrix {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        DenseMatrix { data, rows, cols }
    }

    fn matrix_q8(&self, q: crate::q8::QuantMatrix) -> DenseMatrix {
        let (rows, cols) = (q.n_out(), q.k());
        let mut data = vec![0.0; rows * cols];
        for (r, row) in data.chunks_exact_mut(cols).enumerate() {
            q.dequantize_row_into(r, row);
        }
        DenseMatrix { data, rows, cols }
    }

    fn matrix_shape(&self, w: &DenseMatrix) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn scratch(&self, threads: usize) -> CpuScratch {
        CpuScratch::new(threads)
    }

    fn scratch_pool<'a>(&self, s: &'a CpuScratch) -> Option<&'a CpuPool> {
        Some(s.pool())
    }

    fn reserve_linear(&self, _s: &mut CpuScratch, _rows: usize, _w: &DenseMatrix) {}

    fn reserve_attention(&self, s: &mut CpuScratch, shape: &AttentionShape) -> usize {
        cpu::attention_scratch_len(&s.pool, shape)
    }

    fn linear(
        &self,
        s: &mut CpuScratch,
        x: &[f32],
        rows: usize,
        w: &DenseMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        cpu::gemm_bt(
            &s.pool, x, rows, w.cols, &w.data, w.rows, bias, epilogue, out,
        );
    }

    fn conv1d_k3(
        &self,
        s: &mut CpuScratch,
        x: &[f32],
        t_in: usize,
        w: &DenseMatrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        let c_in = w.cols / 3;
        cpu::conv1d_k3(
            &s.pool,
            x,
            t_in,
            c_in,
            &w.data,
            bias,
            w.rows,
            stride,
            epilogue,
            &mut s.conv,
            out,
        );
    }

    fn layer_norm(
        &self,
        _s: &mut CpuScratch,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        cpu::layer_norm(x, rows, gamma.len(), gamma, beta, eps, out);
    }

    fn attention(
        &self,
        s: &mut CpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        cpu::attention(&s.pool, shape, q, k, v, scratch, out);
    }

    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> F32KeyValues {
        F32KeyValues::new(capacity * heads * head_dim, heads * head_dim)
    }

    fn key_values_len(&self, kv: &F32KeyValues) -> usize {
        kv.rows()
    }

    fn prepare_key_values(&self, _s: &mut CpuScratch, k: &[f32], v: &[f32], kv: &mut F32KeyValues) {
        kv.fill(k, v);
    }

    fn attention_prepared(
        &self,
        s: &mut CpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        kv: &F32KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let (k, v) = kv.get();
        cpu::attention(&s.pool, shape, q, k, v, scratch, out);
    }

    fn attention_weights(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &F32KeyValues,
        head: usize,
        out: &mut [f32],
    ) {
        f32_attention_weights(shape, q, kv.get().0, head, out);
    }

    /// f32, as projected: the reference.
    fn key_value_cache(&self, spec: &KeyValueCacheSpec) -> F32KeyValueCache {
        F32KeyValueCache::new(spec.slots, spec.positions, spec.heads * spec.head_dim)
    }

    fn cache_write(
        &self,
        cache: &mut F32KeyValueCache,
        slot: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        cache.write(slot, pos, k, v);
    }

    fn cache_attention(
        &self,
        s: &mut CpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        cache: &F32KeyValueCache,
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        cache.attention(&s.pool, shape, q, slot, scratch, out);
    }

    fn cache_copy_slot(&self, cache: &mut F32KeyValueCache, from: usize, to: usize, len: usize) {
        cache.copy_slot(from, to, len);
    }

    fn gather_rows(&self, table: &DenseMatrix, ids: &[u32], out: &mut [f32]) {
        let d = table.cols;
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            let id = id as usize;
            row.copy_from_slice(&table.data[id * d..(id + 1) * d]);
        }
    }
}
