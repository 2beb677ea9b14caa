//! The CPU backend in f32: the accuracy reference every faster path is held to.

use crate::backend::{AttentionShape, Backend, Epilogue};
use crate::cpu::{self, CpuPool};

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
}

impl F32KeyValues {
    /// Room for `len` f32 values in each of `k` and `v`.
    pub fn new(len: usize) -> Self {
        Self {
            k: vec![0.0; len],
            v: vec![0.0; len],
            len: 0,
        }
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

/// f32 kernels on a thread pool created once.
pub struct CpuBackend {
    pool: CpuPool,
}

impl CpuBackend {
    /// A backend using `threads` threads (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        Self {
            pool: CpuPool::new(threads.max(1)),
        }
    }

    /// The thread pool.
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }
}

impl Backend for CpuBackend {
    type KeyValues = F32KeyValues;
    type Matrix = DenseMatrix;

    fn name(&self) -> &'static str {
        "cpu-f32"
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

    fn linear(
        &self,
        x: &[f32],
        rows: usize,
        w: &DenseMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        cpu::gemm_bt(
            &self.pool, x, rows, w.cols, &w.data, w.rows, bias, epilogue, out,
        );
    }

    fn conv1d_k3(
        &self,
        x: &[f32],
        t_in: usize,
        w: &DenseMatrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let c_in = w.cols / 3;
        cpu::conv1d_k3(
            &self.pool, x, t_in, c_in, &w.data, bias, w.rows, stride, epilogue, scratch, out,
        );
    }

    fn layer_norm(
        &self,
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
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        cpu::attention(&self.pool, shape, q, k, v, scratch, out);
    }

    fn attention_scratch_len(&self, shape: &AttentionShape) -> usize {
        cpu::attention_scratch_len(&self.pool, shape)
    }

    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> F32KeyValues {
        F32KeyValues::new(capacity * heads * head_dim)
    }

    fn prepare_key_values(&self, k: &[f32], v: &[f32], kv: &mut F32KeyValues) {
        kv.fill(k, v);
    }

    fn attention_prepared(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &F32KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let (k, v) = kv.get();
        cpu::attention(&self.pool, shape, q, k, v, scratch, out);
    }

    fn gather_rows(&self, table: &DenseMatrix, ids: &[u32], out: &mut [f32]) {
        let d = table.cols;
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            let id = id as usize;
            row.copy_from_slice(&table.data[id * d..(id + 1) * d]);
        }
    }
}
