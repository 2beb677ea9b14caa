//! The CPU backend with INT8 weights: linear layers and the conv stem run the INT8 GEMM of
//! [`crate::q8`]; attention runs in bf16 ([`crate::cpu::attention_bf16()`]) where it pays, in
//! f32 over packed keys/values ([`crate::cpu::attention_packed()`]) for the encoder elsewhere, or
//! over INT8 prepared keys/values on request ([`crate::q8::attention_q8_prepared()`]) (see
//! [`CpuInt8Backend`]); layer norm runs the f32 kernel.
//!
//! Every weight given to [`LayerKernels::matrix`] is quantized on the fly (so an f16/f32 model file
//! runs INT8 too); pre-quantized file data enters through
//! [`CpuInt8Backend::matrix_from_quantized`], and [`CpuInt8Backend::matrix_f32`] keeps a layer
//! in f32 where INT8 is not wanted. No f32 copy of an INT8 weight is kept: embedding lookups
//! dequantize the requested rows.

use crate::backend::{AttentionShape, Epilogue, LayerKernels};
use crate::cpu::attention_bf16::{
    attention_bf16, attention_bf16_scratch_len, bf16_supports, has_native_bf16,
};
use crate::cpu::attention_bf16_kv::attention_bf16_kv_scratch_len;
use crate::cpu::attention_packed::{
    attention_packed, attention_packed_scratch_len, attention_packed_supports,
};
use crate::cpu::{Bf16KeyValueCache, Bf16KeyValues, CpuPool, F32KeyValueCache};
use crate::cpu_backend::{CpuBackend, CpuScratch, DenseMatrix, F32KeyValues, MAX_WEIGHTS_HEAD_DIM};
use crate::q8::{
    self, attention_q8_prepared, Q8AttentionScratch, Q8KeyValues, Q8PreparedScratch, Q8Scratch,
    QuantMatrix,
};
use crate::stage::KeyValueCacheSpec;

/// With [`CpuInt8Backend::with_int8_attention`], attention calls with at least this many query
/// rows use INT8 `Q·Kᵀ`. Fewer rows (decoder steps) always stay f32: quantizing K costs one
/// pass over it per call, as much as the f32 `Q·Kᵀ` of a handful of queries.
pub const MIN_INT8_ATTENTION_ROWS: usize = 16;

/// Attention calls with at least this many query rows (the encoder) run in bf16 when the CPU
/// has AVX-512 BF16; fewer rows (decoder self-attention over a short, growing cache) stay f32.
pub const MIN_BF16_ATTENTION_ROWS: usize = 16;

/// Attention calls with at least this many query rows (the encoder) run the f32 kernel over
/// packed keys and values ([`crate::cpu::attention_packed()`]) on CPUs without native bf16.
pub const MIN_PACKED_ATTENTION_ROWS: usize = 16;

/// Setting this environment variable to `0` makes [`CpuInt8Backend::new`] keep the encoder's
/// attention on the reference f32 kernel ([`crate::cpu::attention()`]) on CPUs without native
/// bf16, instead of [`crate::cpu::attention_packed()`] (see
/// [`CpuInt8Backend::with_packed_attention`]); for comparisons.
pub const PACKED_ATTENTION_ENV: &str = "AMANUENSIS_PACKED_ATTENTION";

/// Setting this environment variable to `1` makes [`CpuInt8Backend::new`] keep key/value caches
/// in bf16 attended in bf16 (see [`CpuInt8Backend::with_bf16_self_key_values`]); to `kv`, in
/// bf16 attended in f32 (see [`CpuInt8Backend::with_bf16_self_key_values_f32_arithmetic`]);
/// unset or anything else: f32.
pub const BF16_SELF_KV_ENV: &str = "AMANUENSIS_BF16_SELF_KV";

/// Prepared keys/values of [`CpuInt8Backend`]: INT8 with
/// [`CpuInt8Backend::with_int8_key_values`] (heads up to 256 wide), else bf16 (heads of 64·n),
/// else f32.
pub enum Int8KeyValues {
    /// INT8 keys and values (read by [`q8::attention_q8_prepared`]).
    Q8(Q8KeyValues),
    /// Packed bf16 (read by [`crate::cpu::attention_bf16()`]).
    Bf16(Bf16KeyValues),
    /// Row-major f32.
    F32(F32KeyValues),
}

/// Key/value caches (decoder self-attention) of [`CpuInt8Backend`]: f32 by default; bf16 for
/// heads of 64·n with [`CpuInt8Backend::with_bf16_self_key_values`] (or [`BF16_SELF_KV_ENV`]).
pub enum Int8KeyValueCache {
    /// Packed bf16 slots (read by [`crate::cpu::attention_bf16()`]).
    Bf16(Bf16KeyValueCache),
    /// Row-major f32 slots (read by [`crate::cpu::attention()`]).
    F32(F32KeyValueCache),
}

/// A weight matrix of [`CpuInt8Backend`].
pub enum Int8OrF32Matrix {
    /// Per-output-channel INT8, tile-major.
    Int8(QuantMatrix),
    /// Kept in f32 (see [`CpuInt8Backend::matrix_f32`]).
    F32(DenseMatrix),
}

impl Int8OrF32Matrix {
    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        match self {
            Int8OrF32Matrix::Int8(q) => q.n_out(),
            Int8OrF32Matrix::F32(d) => d.rows(),
        }
    }

    /// Columns (input channels).
    pub fn cols(&self) -> usize {
        match self {
            Int8OrF32Matrix::Int8(q) => q.k(),
            Int8OrF32Matrix::F32(d) => d.cols(),
        }
    }
}

/// Per-stream state of [`CpuInt8Backend`]: the stream's thread pool, conv scratch, INT8 GEMM
/// and attention scratch (plain and over prepared keys/values), and the bf16 self-attention
/// key/value buffer, all grown at workspace creation from the program's ops.
pub struct Int8Scratch {
    cpu: CpuScratch,
    self_kv: Option<Bf16KeyValues>,
    gemm: Q8Scratch,
    attention: Q8AttentionScratch,
    prepared: Q8PreparedScratch,
}

impl Int8Scratch {
    /// The stream's thread pool.
    pub fn pool(&self) -> &CpuPool {
        self.cpu.pool()
    }
}

/// INT8 kernels; each stream's workspace brings its own thread pool and scratch
/// ([`Int8Scratch`]), so streams over one model share nothing they write.
///
/// Attention: calls with at least [`MIN_BF16_ATTENTION_ROWS`] queries (the encoder) run
/// [`crate::cpu::attention_bf16()`] when the CPU has AVX-512 BF16 (`vdpbf16ps`), otherwise the
/// f32 kernel over per-head packed keys and values ([`crate::cpu::attention_packed()`]; see
/// [`CpuInt8Backend::with_packed_attention`]); prepared keys/values (decoder cross-attention) are bf16 on every CPU (half the
/// f32 bytes per token; a portable path computes the same products without BF16 instructions),
/// or INT8 with [`CpuInt8Backend::with_int8_key_values`] ([`q8::attention_q8_prepared`]: INT8
/// `Q·Kᵀ` and `P·V`, a quarter). Measured on the encoder shape (6 heads × 64, 1500 × 1500), 2 threads, AMD Zen
/// 4: f32 31.9 ms, bf16 13.3 ms + 0.3 ms packing. [`CpuInt8Backend::with_int8_attention`]
/// switches the encoder to [`q8::attention_q8`] (INT8 `Q·Kᵀ`, f32 `P·V`: 30 ms).
pub struct CpuInt8Backend {
    f32: CpuBackend,
    int8_attention: bool,
    bf16_attention: bool,
    packed_attention: bool,
    int8_key_values: bool,
    bf16_self_key_values: bool,
    self_kv_f32_arithmetic: bool,
}

impl CpuInt8Backend {
    /// A backend whose streams use `threads` threads each by default (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        Self {
            f32: CpuBackend::new(threads),
            int8_attention: false,
            bf16_attention: has_native_bf16(),
            packed_attention: std::env::var_os(PACKED_ATTENTION_ENV).is_none_or(|v| v != "0"),
            int8_key_values: false,
            bf16_self_key_values: std::env::var_os(BF16_SELF_KV_ENV)
                .is_some_and(|v| v == "1" || v == "kv"),
            self_kv_f32_arithmetic: std::env::var_os(BF16_SELF_KV_ENV).is_some_and(|v| v == "kv"),
        }
    }

    /// Keeps key/value caches (the decoder's self-attention history) in bf16 when `on` (heads of
    /// 64·n): rounded to nearest even as each token's K/V projection is written, half the f32
    /// bytes stored, copied on beam forks and read per token, attended by
    /// [`crate::cpu::attention_bf16()`]. Off (the default unless [`BF16_SELF_KV_ENV`] is `1`):
    /// f32, attended by the f32 kernel. Not the default: on `../shared/speech` tiny.en.int8
    /// greedy lost two words of 835 (2.51 → 2.75 % WER, over the 0.1-point gate), and on the
    /// stress set tiny.en greedy and beam 5 and base beam 5 lost 1.2-2.1 points (base greedy
    /// and the other shared-set runs gained 1-4 words); see `docs/int8-layout.md` §5.3.
    pub fn with_bf16_self_key_values(mut self, on: bool) -> Self {
        self.bf16_self_key_values = on;
        self.self_kv_f32_arithmetic = false;
        self
    }

    /// As [`CpuInt8Backend::with_bf16_self_key_values`] (bf16 caches when `on`), but attended
    /// by [`crate::cpu::attention_bf16_kv()`]: queries, scores, softmax and probabilities stay
    /// f32, only the stored keys/values are bf16 (widened exactly to f32 for f32 FMAs). Not
    /// the default either: base.int8 beam 5 lost 7 words of 835 on `../shared/speech`
    /// (2.63 → 3.47 % WER) and 5 of 562 on the stress set, tiny.en beam 5 two on the stress set
    /// (tiny.en greedy gained 4 and 5); see `docs/int8-layout.md` §5.3.
    pub fn with_bf16_self_key_values_f32_arithmetic(mut self, on: bool) -> Self {
        self.bf16_self_key_values = on;
        self.self_kv_f32_arithmetic = on;
        self
    }

    /// Whether caches of `head_dim`-wide heads are bf16.
    fn bf16_cache(&self, head_dim: usize) -> bool {
        self.bf16_self_key_values && head_dim > 0 && head_dim.is_multiple_of(64)
    }

    /// Prepares keys/values (the decoder's cross-attention) in INT8 when `on`
    /// ([`q8::attention_q8_prepared`]: INT8 `Q·Kᵀ` and `P·V`, half the bytes per token of
    /// bf16; its kernels are `vpdpbusd` on AVX-512 VNNI, the scalar reference elsewhere — see
    /// [`q8::prepared::has_vnni_key_values`]); off (the default): bf16. Not the default yet:
    /// on `../shared/speech` base.int8 greedy lost one word of 835 (2.75 → 2.87 % WER, over
    /// the 0.1-point gate; tiny.en.int8 2.51 → 2.04 %), see `docs/int8-layout.md` §5.2.
    pub fn with_int8_key_values(mut self, on: bool) -> Self {
        self.int8_key_values = on;
        self
    }

    /// Runs attention calls with at least [`MIN_INT8_ATTENTION_ROWS`] queries through
    /// [`q8::attention_q8`] (INT8 `Q·Kᵀ`) when `on`; off by default (see the type's docs).
    pub fn with_int8_attention(mut self, on: bool) -> Self {
        self.int8_attention = on;
        self
    }

    /// Runs the encoder's attention in bf16 when `on` and the CPU has AVX-512 BF16 (the
    /// default); off: f32.
    pub fn with_bf16_attention(mut self, on: bool) -> Self {
        self.bf16_attention = on && has_native_bf16();
        self
    }

    /// Runs attention calls with at least [`MIN_PACKED_ATTENTION_ROWS`] queries (the encoder)
    /// that do not run in bf16 (CPUs without AVX-512 BF16, or bf16 switched off) through
    /// [`crate::cpu::attention_packed()`] when `on` (the default unless
    /// [`PACKED_ATTENTION_ENV`] is `0`): f32 like the reference kernel, with keys and values
    /// packed per head and a fused f32 softmax, within ~1e-5 of it. Off: the reference f32
    /// kernel [`crate::cpu::attention()`], for comparisons. Measured on the encoder shape (6
    /// heads × 64, 1500 × 1500), AMD EPYC Zen 3 (AVX2): see the README's Performance section.
    pub fn with_packed_attention(mut self, on: bool) -> Self {
        self.packed_attention = on;
        self
    }

    fn uses_packed_attention(&self, shape: &AttentionShape) -> bool {
        self.packed_attention
            && !self.uses_int8_attention(shape)
            && !self.uses_bf16_attention(shape)
            && shape.q_len >= MIN_PACKED_ATTENTION_ROWS
            && attention_packed_supports(shape)
    }

    fn uses_int8_attention(&self, shape: &AttentionShape) -> bool {
        self.int8_attention && shape.q_len >= MIN_INT8_ATTENTION_ROWS
    }

    fn uses_bf16_attention(&self, shape: &AttentionShape) -> bool {
        !self.int8_attention
            && self.bf16_attention
            && shape.q_len >= MIN_BF16_ATTENTION_ROWS
            && bf16_supports(shape)
    }

    /// The self-attention key/value buffer, (re)allocated when `shape` does not fit it.
    fn self_kv_for<'a>(
        slot: &'a mut Option<Bf16KeyValues>,
        shape: &AttentionShape,
    ) -> &'a mut Bf16KeyValues {
        let fits = slot.as_ref().is_some_and(|kv| {
            kv.heads() == shape.heads
                && kv.head_dim() == shape.head_dim
                && kv.capacity() >= shape.kv_len
        });
        if !fits {
            *slot = Some(Bf16KeyValues::new(
                shape.heads,
                shape.head_dim,
                shape.kv_len,
            ));
        }
        slot.as_mut().expect("just filled")
    }

    /// Wraps a pre-quantized matrix (from a model file, validated by
    /// [`QuantMatrix::from_parts`]).
    pub fn matrix_from_quantized(&self, q: QuantMatrix) -> Int8OrF32Matrix {
        Int8OrF32Matrix::Int8(q)
    }

    /// Keeps a row-major `[rows, cols]` matrix in f32 (its layer then runs the f32 kernels).
    ///
    /// # Panics
    /// If `data.len() != rows · cols`.
    pub fn matrix_f32(&self, data: Vec<f32>, rows: usize, cols: usize) -> Int8OrF32Matrix {
        Int8OrF32Matrix::F32(LayerKernels::matrix(&self.f32, data, rows, cols))
    }
}

crate::host_backend!(CpuInt8Backend);

impl LayerKernels for CpuInt8Backend {
    type Matrix = Int8OrF32Matrix;
    type KeyValues = Int8KeyValues;
    type Scratch = Int8Scratch;
    type KeyValueCache = Int8KeyValueCache;

    fn name(&self) -> &'static str {
        "cpu-int8"
    }

    fn default_threads(&self) -> usize {
        self.f32.default_threads()
    }

    /// Quantizes per output channel (see [`q8::quantize_to_tiles`]); the f32 data is dropped.
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> Int8OrF32Matrix {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        Int8OrF32Matrix::Int8(QuantMatrix::quantize(&data, rows, cols))
    }

    fn matrix_q8(&self, q: QuantMatrix) -> Int8OrF32Matrix {
        self.matrix_from_quantized(q)
    }

    /// Quantizes the f16 values row by row, each widened as it is read (no f32 copy): the
    /// matrix [`LayerKernels::matrix`] makes of the widened values.
    fn matrix_f16(&self, data: &[half::f16], rows: usize, cols: usize) -> Int8OrF32Matrix {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        Int8OrF32Matrix::Int8(QuantMatrix::quantize_f16(data, rows, cols))
    }

    fn matrix_shape(&self, w: &Int8OrF32Matrix) -> (usize, usize) {
        (w.rows(), w.cols())
    }

    fn scratch_pool<'a>(&self, s: &'a Int8Scratch) -> Option<&'a CpuPool> {
        Some(s.pool())
    }

    fn prepare_matrix(&self, w: &Int8OrF32Matrix) {
        // The f32 matrices are owned (widened at load): nothing is deferred for them.
        if let Int8OrF32Matrix::Int8(q) = w {
            q.code_sums();
        }
    }

    fn scratch(&self, threads: usize) -> Int8Scratch {
        Int8Scratch {
            cpu: CpuScratch::new(threads),
            self_kv: None,
            gemm: Q8Scratch::new(),
            attention: Q8AttentionScratch::new(),
            prepared: Q8PreparedScratch::new(),
        }
    }

    /// Grows the GEMM scratch so calls with up to `rows` rows against `w` (and any smaller
    /// call) allocate nothing.
    fn reserve_linear(&self, s: &mut Int8Scratch, rows: usize, w: &Int8OrF32Matrix) {
        if let Int8OrF32Matrix::Int8(q) = w {
            s.gemm.reserve(rows, q);
        }
    }

    /// Also reserves the INT8 or bf16 attention buffers for `shape`, so later calls with it (or
    /// a smaller shape) allocate nothing.
    fn reserve_attention(&self, s: &mut Int8Scratch, shape: &AttentionShape) -> usize {
        if self.uses_int8_attention(shape) {
            s.attention.reserve(shape);
        }
        if self.uses_bf16_attention(shape) {
            Self::self_kv_for(&mut s.self_kv, shape);
        }
        let bf16 = if bf16_supports(shape) {
            attention_bf16_scratch_len(s.pool(), shape)
        } else {
            0
        };
        let packed = if self.uses_packed_attention(shape) {
            attention_packed_scratch_len(s.pool(), shape)
        } else {
            0
        };
        self.f32
            .reserve_attention(&mut s.cpu, shape)
            .max(q8::attention_q8_scratch_len(s.pool(), shape))
            .max(bf16)
            .max(packed)
    }

    /// Also reserves the INT8 prepared-attention buffers (per-thread scores and probability
    /// codes, the heads' outputs) when prepared keys/values are INT8.
    fn reserve_attention_prepared(&self, s: &mut Int8Scratch, shape: &AttentionShape) -> usize {
        if self.int8_key_values && Q8KeyValues::supports(shape.head_dim) {
            let pool = s.cpu.pool();
            s.prepared.reserve(pool, shape);
        }
        self.reserve_attention(s, shape)
    }

    fn linear(
        &self,
        s: &mut Int8Scratch,
        x: &[f32],
        rows: usize,
        w: &Int8OrF32Matrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        match w {
            Int8OrF32Matrix::Int8(q) => {
                q8::gemm_q8(s.cpu.pool(), x, rows, q, bias, epilogue, &mut s.gemm, out);
            }
            Int8OrF32Matrix::F32(d) => self.f32.linear(&mut s.cpu, x, rows, d, bias, epilogue, out),
        }
    }

    fn conv1d_k3(
        &self,
        s: &mut Int8Scratch,
        x: &[f32],
        t_in: usize,
        w: &Int8OrF32Matrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        match w {
            Int8OrF32Matrix::Int8(q) => {
                let Int8Scratch { cpu, gemm, .. } = s;
                let (pool, cols) = cpu.parts();
                q8::conv1d_k3_q8(pool, x, t_in, q, bias, stride, epilogue, cols, gemm, out);
            }
            Int8OrF32Matrix::F32(d) => self
                .f32
                .conv1d_k3(&mut s.cpu, x, t_in, d, bias, stride, epilogue, out),
        }
    }

    fn layer_norm(
        &self,
        s: &mut Int8Scratch,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        self.f32
            .layer_norm(&mut s.cpu, x, rows, gamma, beta, eps, out);
    }

    fn attention(
        &self,
        s: &mut Int8Scratch,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        if self.uses_int8_attention(shape) {
            q8::attention_q8(s.cpu.pool(), shape, q, k, v, scratch, &mut s.attention, out);
        } else if self.uses_bf16_attention(shape) {
            let kv = Self::self_kv_for(&mut s.self_kv, shape);
            kv.pack(s.cpu.pool(), k, v);
            attention_bf16(s.cpu.pool(), shape, q, kv, scratch, out);
        } else if self.uses_packed_attention(shape) {
            attention_packed(s.cpu.pool(), shape, q, k, v, scratch, out);
        } else {
            self.f32.attention(&mut s.cpu, shape, q, k, v, scratch, out);
        }
    }

    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> Int8KeyValues {
        let probe = AttentionShape {
            heads,
            head_dim,
            q_len: 1,
            kv_len: capacity,
            causal_offset: None,
        };
        if self.int8_key_values
            && Q8KeyValues::supports(head_dim)
            && capacity <= q8::prepared::MAX_Q8_KEYS
        {
            Int8KeyValues::Q8(Q8KeyValues::new(heads, head_dim, capacity))
        } else if bf16_supports(&probe) {
            Int8KeyValues::Bf16(Bf16KeyValues::new(heads, head_dim, capacity))
        } else {
            Int8KeyValues::F32(self.f32.key_values(heads, head_dim, capacity))
        }
    }

    fn key_values_len(&self, kv: &Int8KeyValues) -> usize {
        match kv {
            Int8KeyValues::Q8(kv) => kv.kv_len(),
            Int8KeyValues::Bf16(kv) => kv.kv_len(),
            Int8KeyValues::F32(kv) => kv.rows(),
        }
    }

    fn prepare_key_values(
        &self,
        s: &mut Int8Scratch,
        k: &[f32],
        v: &[f32],
        kv: &mut Int8KeyValues,
    ) {
        match kv {
            Int8KeyValues::Q8(kv) => kv.pack(s.cpu.pool(), k, v),
            Int8KeyValues::Bf16(kv) => kv.pack(s.cpu.pool(), k, v),
            Int8KeyValues::F32(kv) => kv.fill(k, v),
        }
    }

    fn attention_prepared(
        &self,
        s: &mut Int8Scratch,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        match kv {
            Int8KeyValues::Q8(kv) => {
                attention_q8_prepared(s.cpu.pool(), shape, q, kv, &mut s.prepared, out)
            }
            Int8KeyValues::Bf16(kv) => attention_bf16(s.cpu.pool(), shape, q, kv, scratch, out),
            Int8KeyValues::F32(kv) => self
                .f32
                .attention_prepared(&mut s.cpu, shape, q, kv, scratch, out),
        }
    }

    fn attention_weights(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        head: usize,
        out: &mut [f32],
    ) {
        match kv {
            Int8KeyValues::Q8(kv) => {
                weights_from_keys(shape, q, head, |j, row| kv.key_into(head, j, row), out);
            }
            Int8KeyValues::Bf16(kv) => {
                weights_from_keys(shape, q, head, |j, row| kv.key_into(head, j, row), out);
            }
            Int8KeyValues::F32(kv) => self.f32.attention_weights(shape, q, kv, head, out),
        }
    }

    fn key_value_cache(&self, spec: &KeyValueCacheSpec) -> Int8KeyValueCache {
        if self.bf16_cache(spec.head_dim) {
            Int8KeyValueCache::Bf16(
                Bf16KeyValueCache::new(spec.slots, spec.positions, spec.heads, spec.head_dim)
                    .with_f32_arithmetic(self.self_kv_f32_arithmetic),
            )
        } else {
            Int8KeyValueCache::F32(self.f32.key_value_cache(spec))
        }
    }

    /// The bf16 attention scratch for bf16 caches (no packing buffer: the cache is the packed
    /// form), else what [`LayerKernels::attention`] needs.
    fn reserve_cache_attention(&self, s: &mut Int8Scratch, shape: &AttentionShape) -> usize {
        if self.bf16_cache(shape.head_dim) && self.self_kv_f32_arithmetic {
            attention_bf16_kv_scratch_len(s.pool(), shape)
        } else if self.bf16_cache(shape.head_dim) {
            attention_bf16_scratch_len(s.pool(), shape)
        } else {
            self.reserve_attention(s, shape)
        }
    }

    fn cache_write(
        &self,
        cache: &mut Int8KeyValueCache,
        slot: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        match cache {
            Int8KeyValueCache::Bf16(c) => c.write(slot, pos, k, v),
            Int8KeyValueCache::F32(c) => c.write(slot, pos, k, v),
        }
    }

    fn cache_attention(
        &self,
        s: &mut Int8Scratch,
        shape: &AttentionShape,
        q: &[f32],
        cache: &Int8KeyValueCache,
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        match cache {
            Int8KeyValueCache::Bf16(c) => c.attention(s.pool(), shape, q, slot, scratch, out),
            Int8KeyValueCache::F32(c) => {
                // As a plain attention call over the slot's rows (bf16 packing per call for
                // ≥ MIN_BF16_ATTENTION_ROWS queries, e.g. a long prompt; else f32). A slot
                // sharing positions with slot 0 (a beam: one query row) is attended in f32
                // over the two pieces, as f32 over a copy would be.
                let (k, v) = c.rows(slot, shape.kv_len);
                if k.head.is_empty() {
                    self.attention(s, shape, q, k.tail, v.tail, scratch, out);
                } else {
                    crate::cpu::attention_split(s.pool(), shape, q, k, v, scratch, out);
                }
            }
        }
    }

    fn cache_copy_slot(&self, cache: &mut Int8KeyValueCache, from: usize, to: usize, len: usize) {
        match cache {
            Int8KeyValueCache::Bf16(c) => c.copy_slot(from, to, len),
            Int8KeyValueCache::F32(c) => c.copy_slot(from, to, len),
        }
    }

    fn gather_rows(&self, table: &Int8OrF32Matrix, ids: &[u32], out: &mut [f32]) {
        match table {
            Int8OrF32Matrix::Int8(q) => {
                let d = q.k();
                assert_eq!(out.len(), ids.len() * d, "gather_rows: out is not ids·cols");
                for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
                    q.dequantize_row_into(id as usize, row);
                }
            }
            Int8OrF32Matrix::F32(d) => self.f32.gather_rows(d, ids, out),
        }
    }
}

/// Attention weights of one head over keys widened to f32 one row at a time by `key_into`
/// (INT8 and bf16 cross-attention keys share this).
fn weights_from_keys(
    shape: &AttentionShape,
    q: &[f32],
    head: usize,
    key_into: impl FnMut(usize, &mut [f32]),
    out: &mut [f32],
) {
    let mut buf = [0.0f32; MAX_WEIGHTS_HEAD_DIM];
    crate::cpu::attention::attention_weights_with(
        shape,
        q,
        head,
        &mut buf[..shape.head_dim],
        key_into,
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    /// A matrix read in place derives its code sums on first use; `prepare_matrix` derives them
    /// ahead (from several threads at once as the model's preparation does), to the same values,
    /// and a GEMM gives the same bits either way.
    #[test]
    fn prepared_matrices_compute_what_unprepared_ones_do() {
        use crate::backend::Backend;
        let mut rng = Rng::new(62);
        let q = CpuInt8Backend::new(2);
        let (n, k, rows) = (130, 200, 9);
        let owned = QuantMatrix::quantize(&rng.vec(n * k, 0.5), n, k);
        let (data, scales) = owned.clone().into_parts();
        let mut bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let d0 = bytes.len();
        bytes.extend(data.iter().map(|&c| c as u8));
        let bytes: crate::q8::layout::SharedBytes = std::sync::Arc::new(bytes);
        let shared = || {
            let m =
                QuantMatrix::from_shared(&bytes, d0..bytes.as_ref().as_ref().len(), 0..d0, n, k);
            LayerKernels::matrix_q8(&q, m.unwrap())
        };
        let (lazy, prepared) = (shared(), shared());
        fn sums(m: &Int8OrF32Matrix) -> &QuantMatrix {
            match m {
                Int8OrF32Matrix::Int8(q) => q,
                Int8OrF32Matrix::F32(_) => panic!("an INT8 matrix"),
            }
        }
        assert!(!sums(&lazy).code_sums_derived());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| Backend::prepare_matrix(&q, &prepared));
            }
        });
        assert!(sums(&prepared).code_sums_derived());
        assert!(!sums(&lazy).code_sums_derived());
        let x = rng.vec(rows * k, 1.0);
        let mut s = q.scratch(2);
        let (mut a, mut b) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        q.linear(&mut s, &x, rows, &lazy, None, Epilogue::Store, &mut a);
        q.linear(&mut s, &x, rows, &prepared, None, Epilogue::Store, &mut b);
        assert_eq!(a, b);
        assert_eq!(sums(&lazy).code_sums(), sums(&prepared).code_sums());
        assert_eq!(sums(&prepared).code_sums(), owned.code_sums());
        // The f32 matrices have nothing deferred.
        Backend::prepare_matrix(&q, &LayerKernels::matrix(&q, rng.vec(n * k, 0.5), n, k));
    }

    #[test]
    fn int8_backend_runs_every_kernel_close_to_f32() {
        let mut rng = Rng::new(61);
        let (f, q) = (
            CpuBackend::new(2),
            CpuInt8Backend::new(2).with_int8_attention(true),
        );
        let (mut fs, mut qs) = (f.scratch(2), q.scratch(2));
        assert_eq!(q.name(), "cpu-int8");
        let (rows, n, k) = (20, 70, 96);
        let wf = rng.vec(n * k, 0.3);
        let (wd, wq) = (f.matrix(wf.clone(), n, k), q.matrix(wf.clone(), n, k));
        assert_eq!((wq.rows(), wq.cols()), (n, k));
        let x = rng.vec(rows * k, 1.0);
        let bias = rng.vec(n, 0.1);
        let mut want = vec![0.0; rows * n];
        let mut got = vec![0.0; rows * n];
        f.linear(
            &mut fs,
            &x,
            rows,
            &wd,
            Some(&bias),
            Epilogue::Store,
            &mut want,
        );
        q.linear(
            &mut qs,
            &x,
            rows,
            &wq,
            Some(&bias),
            Epilogue::Store,
            &mut got,
        );
        // Error ≤ 1e-2 of Σ|x·w| ≈ k·0.5·0.15 (see the q8 GEMM test).
        let tol = 1e-2 * k as f32 * 0.5 * 0.15;
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= tol));

        // An f32-kept matrix gives exactly the f32 result.
        let w32 = q.matrix_f32(wf.clone(), n, k);
        q.linear(
            &mut qs,
            &x,
            rows,
            &w32,
            Some(&bias),
            Epilogue::Store,
            &mut got,
        );
        assert_eq!(got, want);

        // Gather dequantizes rows: within half a step of the f32 table.
        let ids = [3u32, 0, 69];
        let mut rows_q = vec![0.0; 3 * k];
        q.gather_rows(&wq, &ids, &mut rows_q);
        let Int8OrF32Matrix::Int8(m) = &wq else {
            panic!("matrix() must quantize")
        };
        for (r, &id) in ids.iter().enumerate() {
            let step = m.scales()[id as usize];
            for c in 0..k {
                let err = (rows_q[r * k + c] - wf[id as usize * k + c]).abs();
                assert!(err <= step / 2.0 * (1.0 + 1e-5) + 1e-7, "row {id} col {c}");
            }
        }

        // Attention with 32-wide heads (no bf16 path): with the packed kernel off, f32 (exact);
        // by default the long call takes the packed f32 kernel (within 1e-5, see
        // cpu::attention_packed), the short one the f32 kernel (exact); with INT8 on, the long
        // call takes the INT8 path, the short one the f32 path (exact).
        let plain = CpuInt8Backend::new(2).with_packed_attention(false);
        let mut ps = plain.scratch(2);
        let packed = CpuInt8Backend::new(2).with_packed_attention(true);
        let mut pks = packed.scratch(2);
        for q_len in [MIN_INT8_ATTENTION_ROWS, 2] {
            let shape = AttentionShape {
                heads: 2,
                head_dim: 32,
                q_len,
                kv_len: 40,
                causal_offset: None,
            };
            let width = 64;
            let (qq, kk, vv) = (
                rng.vec(q_len * width, 1.0),
                rng.vec(40 * width, 1.0),
                rng.vec(40 * width, 1.0),
            );
            let mut s1 = vec![0.0; f.reserve_attention(&mut fs, &shape)];
            let mut s2 = vec![0.0; q.reserve_attention(&mut qs, &shape)];
            let (mut a, mut b) = (vec![0.0; q_len * width], vec![0.0; q_len * width]);
            f.attention(&mut fs, &shape, &qq, &kk, &vv, &mut s1, &mut a);
            let mut s3 = vec![0.0; plain.reserve_attention(&mut ps, &shape)];
            plain.attention(&mut ps, &shape, &qq, &kk, &vv, &mut s3, &mut b);
            assert_eq!(
                a, b,
                "without the packed kernel attention is the f32 kernel"
            );
            let mut s4 = vec![0.0; packed.reserve_attention(&mut pks, &shape)];
            packed.attention(&mut pks, &shape, &qq, &kk, &vv, &mut s4, &mut b);
            if q_len < MIN_PACKED_ATTENTION_ROWS {
                assert_eq!(a, b, "short calls stay on the f32 kernel");
            } else {
                let worst = a
                    .iter()
                    .zip(&b)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(worst <= 1e-5, "packed attention error {worst}");
            }
            q.attention(&mut qs, &shape, &qq, &kk, &vv, &mut s2, &mut b);
            let worst = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            if q_len < MIN_INT8_ATTENTION_ROWS {
                assert_eq!(worst, 0.0);
            } else {
                assert!(worst > 0.0 && worst <= 2e-2, "int8 attention error {worst}");
            }
        }

        // Conv stem through INT8 vs f32.
        let (t_in, c_in, c_out) = (30, 16, 24);
        let cw = rng.vec(c_out * c_in * 3, 0.3);
        let cb = rng.vec(c_out, 0.1);
        let xin = rng.vec(t_in * c_in, 1.0);
        let (cd, cq) = (
            f.matrix(cw.clone(), c_out, c_in * 3),
            q.matrix(cw, c_out, c_in * 3),
        );
        let t_out = crate::cpu::conv1d_k3_out_len(t_in, 2);
        let (mut a, mut b) = (vec![0.0; t_out * c_out], vec![0.0; t_out * c_out]);
        f.conv1d_k3(&mut fs, &xin, t_in, &cd, &cb, 2, Epilogue::Gelu, &mut a);
        q.conv1d_k3(&mut qs, &xin, t_in, &cq, &cb, 2, Epilogue::Gelu, &mut b);
        let tol = 1e-2 * (3 * c_in) as f32 * 0.5 * 0.15;
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol));
    }

    #[test]
    fn bf16_attention_and_int8_or_bf16_prepared_key_values_are_close_to_f32() {
        let mut rng = Rng::new(21);
        let f = CpuBackend::new(2);
        let q = CpuInt8Backend::new(2).with_packed_attention(false);
        let off = CpuInt8Backend::new(2)
            .with_bf16_attention(false)
            .with_packed_attention(false);
        let (mut fs, mut qs, mut os) = (f.scratch(2), q.scratch(2), off.scratch(2));
        for (q_len, kv_len) in [(MIN_BF16_ATTENTION_ROWS, 300), (1, 1500), (5, 1500)] {
            let shape = AttentionShape {
                heads: 3,
                head_dim: 64,
                q_len,
                kv_len,
                causal_offset: None,
            };
            let width = 192;
            let qq = rng.vec(q_len * width, 1.0);
            let (kk, vv) = (rng.vec(kv_len * width, 1.0), rng.vec(kv_len * width, 1.0));
            let mut s = vec![0.0; q.reserve_attention(&mut qs, &shape)];
            let mut want = vec![0.0; q_len * width];
            f.attention(&mut fs, &shape, &qq, &kk, &vv, &mut s, &mut want);
            let worst = |got: &[f32]| {
                got.iter()
                    .zip(&want)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            };
            // Plain calls (packed kernel off): bf16 (inexact) only for ≥ MIN_BF16_ATTENTION_ROWS
            // queries on a CPU with AVX-512 BF16; otherwise the f32 kernel, exactly.
            let mut got = vec![0.0; q_len * width];
            q.attention(&mut qs, &shape, &qq, &kk, &vv, &mut s, &mut got);
            let bf16 = has_native_bf16() && q_len >= MIN_BF16_ATTENTION_ROWS;
            if bf16 {
                let w = worst(&got);
                assert!(w > 0.0 && w <= 2e-2, "bf16 attention error {w}");
            } else {
                assert_eq!(got, want);
            }
            off.attention(&mut os, &shape, &qq, &kk, &vv, &mut s, &mut got);
            assert_eq!(got, want, "with_bf16_attention(false) is the f32 kernel");
            // bf16 off, packed on (the default on CPUs without AVX-512 BF16): the packed f32
            // kernel for ≥ MIN_PACKED_ATTENTION_ROWS queries (within 1e-5 here, see
            // cpu::attention_packed), else the f32 kernel exactly.
            let packed = CpuInt8Backend::new(2)
                .with_bf16_attention(false)
                .with_packed_attention(true);
            let mut pks = packed.scratch(2);
            let mut sp = vec![0.0; packed.reserve_attention(&mut pks, &shape)];
            packed.attention(&mut pks, &shape, &qq, &kk, &vv, &mut sp, &mut got);
            if q_len >= MIN_PACKED_ATTENTION_ROWS {
                let w = worst(&got);
                assert!(w <= 1e-5, "packed attention error {w}");
            } else {
                assert_eq!(got, want, "short calls stay on the f32 kernel");
            }
            // INT8 prepared keys/values: within the 2.5e-2 bound of q8::prepared's tests
            // (|v| ≤ 1, scores O(1)).
            let i8 = CpuInt8Backend::new(2).with_int8_key_values(true);
            let mut is = i8.scratch(2);
            let mut s = vec![0.0; i8.reserve_attention_prepared(&mut is, &shape)];
            let mut kv = i8.key_values(3, 64, 1500);
            assert!(matches!(kv, Int8KeyValues::Q8(_)));
            i8.prepare_key_values(&mut is, &kk, &vv, &mut kv);
            i8.attention_prepared(&mut is, &shape, &qq, &kv, &mut s, &mut got);
            let w = worst(&got);
            assert!(w > 0.0 && w <= 2.5e-2, "prepared int8 attention error {w}");
            // Without INT8 keys/values (the default): bf16, within bf16 rounding (see
            // cpu::attention_bf16's tests for the 2e-2 bound).
            let bf = CpuInt8Backend::new(2);
            let mut bs = bf.scratch(2);
            let mut s = vec![0.0; bf.reserve_attention_prepared(&mut bs, &shape)];
            let mut kv = bf.key_values(3, 64, 1500);
            assert!(matches!(kv, Int8KeyValues::Bf16(_)));
            bf.prepare_key_values(&mut bs, &kk, &vv, &mut kv);
            bf.attention_prepared(&mut bs, &shape, &qq, &kv, &mut s, &mut got);
            let w = worst(&got);
            assert!(w > 0.0 && w <= 2e-2, "prepared bf16 attention error {w}");
        }
    }
}
