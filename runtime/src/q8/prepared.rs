//! INT8 keys and values prepared once (the decoder's cross-attention: once per audio window)
//! and attention of a few queries (one token, or one row per beam) over them: same contract as
//! [`crate::cpu::attention()`] with `k`, `v` taken from [`Q8KeyValues`].
//!
//! - **Keys**: per (head, key) symmetric scales (`max|k|/127`, as [`super::attention_q8`]
//!   quantizes them per call), codes in four-dimension groups across keys
//!   ([`super::values::key_offset`]: one key's four dimensions are one 32-bit lane, so one
//!   `vpdpbusd` scores 16 keys with no horizontal sum), with per-key code sums.
//! - **Values**: per (head, block of [`VALUE_BLOCK`] keys, channel) scales
//!   (`max |v_jc| / 127` over the block's keys), codes in groups of four keys
//!   ([`super::values`]).
//! - **Scores**: the query row of each head quantized per (row, head) like an activation
//!   (offset bytes `q + 128`); `Q·Kᵀ` by [`super::values::group_dot`] (`vpdpbusd` on AVX-512
//!   VNNI) as exact i32 sums, minus `128·Σk` per key, scaled to f32 by
//!   `scale_q · head_dim^-0.5 · scale_k`.
//! - **Softmax** in f32 before any narrowing: `e_j = exp(s_j − max)` (the f32 exponential of
//!   the f32 softmax), then 16-bit probability codes `p_j = round(e_j · m)` with
//!   `m = min(65 535, ⌊16·10⁶ / Σe⌋)`: the largest weight gets the full 16 bits unless the row is
//!   so diffuse that the sum bound needs a smaller `m` (≥ 10 666 for 1500 keys).
//! - **`P·V`**: exact i32 sums `Σ_j p_j · v_jc` per key block ([`super::values::group_dot`],
//!   two `vpdpbusd` per 16 channels × 4 keys on VNNI), each times its block's `scale_v[c]`,
//!   summed over the blocks in order in f32, then times `1 / Σ_j p_j`: normalised by the
//!   integer sum of the very codes used. `Σ p ≤ 16·10⁶ + n/2` and `|v| ≤ 127` keep every sum
//!   below 2³¹.
//!
//! Every instruction set computes the same integers and the same f32 operations in the same
//! order, so all are bit-identical to the scalar reference (tested).
//!
//! Accuracy against f32 attention: the scores' error is that of [`super::attention_q8`]
//! (≲ 0.01-0.14 on |q|, |k| ≤ 1.5, d = 64); each value is within `scale_v/2` (the block's `max|v_c|/254`);
//! each probability within `0.5/m` of the row's mass (absolute). Bounded on random data in the
//! tests; the model-level effect is gated by `tests/int8.rs` (WER on the shared set).

use super::kernels::{activation_row_u8, Isa, MAX_R};
use super::layout::TILE;
use super::parts::Parts;
use super::quant::{code, max_abs, row_scale};
use super::values::{
    group_dot, key_offset, value_offset, ColumnSums, Groups, Rows, GROUP, MAX_COLS,
};
use crate::cpu::softmax::{exp_nonpositive, row_max};
use crate::cpu::{AttentionShape, CpuPool};
use crate::resident::zeroed;

/// Whether this CPU runs the `vpdpbusd` kernels of [`attention_q8_prepared`] (the INT8 path
/// chosen by [`Isa::detect`] is AVX-512 VNNI); elsewhere the integer loops are the scalar
/// reference, slower than the bf16 keys/values they replace.
pub fn has_vnni_key_values() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::detect() == Isa::Avx512Vnni
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Keys per value scale block: values have one scale per (head, block of 64 keys, channel).
pub const VALUE_BLOCK: usize = 64;

/// Most keys a [`Q8KeyValues`] holds: keeps `Σ p ≤ 16·10⁶ + n/2` and so every `P·V` sum
/// below 2³¹.
pub const MAX_Q8_KEYS: usize = 1 << 20;

/// The probability codes' sum bound before rounding (see the module docs).
const CODE_MASS: f32 = 16_000_000.0;

/// Widest head supported (the `P·V` sums of one call are at most [`MAX_COLS`] wide).
pub const MAX_HEAD_DIM: usize = MAX_COLS;

/// Head width rounded up to whole groups of four.
fn group_width(head_dim: usize) -> usize {
    head_dim.next_multiple_of(GROUP)
}

/// Keys and values of every head in INT8 (see the module docs), packed once by
/// [`Q8KeyValues::pack`] and read by [`attention_q8_prepared`].
pub struct Q8KeyValues {
    heads: usize,
    head_dim: usize,
    capacity: usize,
    kv_len: usize,
    /// Per head `[dg/4][cap_pad][4]` (`dg` = head width in whole groups; see `key_offset`).
    keys: Vec<i8>,
    /// Per head `cap_pad` code sums (for the offset-byte VNNI scores).
    key_sums: Vec<i32>,
    /// Per head `cap_pad` scales (0 past `kv_len`).
    key_scales: Vec<f32>,
    /// Per head `[cap_pad, head_dim]` in the four-key groups of [`super::values`].
    values: Vec<i8>,
    /// Per head `[cap_pad / VALUE_BLOCK][head_dim]` scales.
    value_scales: Vec<f32>,
}

impl Q8KeyValues {
    /// Whether heads of `head_dim` are supported (`1..=256`).
    pub fn supports(head_dim: usize) -> bool {
        (1..=MAX_HEAD_DIM).contains(&head_dim)
    }

    /// Room for up to `capacity` rows of `heads × head_dim` (allocated here, once).
    ///
    /// # Panics
    /// If `head_dim` is not supported or `capacity > MAX_Q8_KEYS`.
    pub fn new(heads: usize, head_dim: usize, capacity: usize) -> Self {
        assert!(
            Self::supports(head_dim) && capacity <= MAX_Q8_KEYS,
            "Q8KeyValues: head_dim {head_dim} or capacity {capacity} out of range"
        );
        let cap_pad = capacity.next_multiple_of(TILE);
        let dg = group_width(head_dim);
        Self {
            heads,
            head_dim,
            capacity,
            kv_len: 0,
            keys: zeroed(heads * cap_pad * dg),
            key_sums: zeroed(heads * cap_pad),
            key_scales: zeroed(heads * cap_pad),
            values: zeroed(heads * cap_pad * head_dim),
            value_scales: zeroed(heads * (cap_pad / VALUE_BLOCK) * head_dim),
        }
    }

    /// Rows currently packed.
    pub fn kv_len(&self) -> usize {
        self.kv_len
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Rows this buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn cap_pad(&self) -> usize {
        self.capacity.next_multiple_of(TILE)
    }

    /// Key `j` of head `h` as stored (codes times scale), into `out [head_dim]`.
    ///
    /// # Panics
    /// If `h`, `j` or `out` do not fit.
    pub fn key_into(&self, h: usize, j: usize, out: &mut [f32]) {
        assert!(h < self.heads && j < self.kv_len && out.len() == self.head_dim);
        let (cap_pad, dg) = (self.cap_pad(), group_width(self.head_dim));
        let keys = &self.keys[h * cap_pad * dg..(h + 1) * cap_pad * dg];
        let scale = self.key_scales[h * cap_pad + j];
        for (c, o) in out.iter_mut().enumerate() {
            *o = keys[key_offset(j, c, cap_pad)] as f32 * scale;
        }
    }

    /// Value `j` of head `h` as stored (codes times scales), into `out [head_dim]`.
    ///
    /// # Panics
    /// If `h`, `j` or `out` do not fit.
    pub fn value_into(&self, h: usize, j: usize, out: &mut [f32]) {
        assert!(h < self.heads && j < self.kv_len && out.len() == self.head_dim);
        let d = self.head_dim;
        let values = &self.values[h * self.cap_pad() * d..(h + 1) * self.cap_pad() * d];
        for (c, o) in out.iter_mut().enumerate() {
            let at = (h * self.cap_pad() / VALUE_BLOCK + j / VALUE_BLOCK) * d + c;
            *o = values[value_offset(j, c, d)] as f32 * self.value_scales[at];
        }
    }

    /// Quantizes `k`, `v` (`[kv_len, heads·head_dim]` each) on `pool`, in parallel over heads;
    /// allocates nothing. Rows past `kv_len` (from an earlier, longer packing) become zero.
    ///
    /// # Panics
    /// If the lengths do not match the heads or `kv_len > capacity`.
    pub fn pack(&mut self, pool: &CpuPool, k: &[f32], v: &[f32]) {
        let (heads, d) = (self.heads, self.head_dim);
        let width = heads * d;
        assert!(
            k.len() == v.len() && k.len().is_multiple_of(width.max(1)),
            "Q8KeyValues::pack: k/v lengths do not match the heads"
        );
        let kv_len = k.len().checked_div(width).unwrap_or(0);
        assert!(
            kv_len <= self.capacity,
            "Q8KeyValues::pack: {kv_len} rows > capacity"
        );
        let (cap_pad, dg) = (self.cap_pad(), group_width(d));
        {
            let keys = Parts::new(&mut self.keys, cap_pad * dg);
            let sums = Parts::new(&mut self.key_sums, cap_pad);
            let k_scales = Parts::new(&mut self.key_scales, cap_pad);
            let values = Parts::new(&mut self.values, cap_pad * d);
            let v_scales = Parts::new(&mut self.value_scales, cap_pad / VALUE_BLOCK * d);
            pool.run(heads, |h| {
                let (keys, sums, k_scales) = (keys.take(h), sums.take(h), k_scales.take(h));
                keys.fill(0);
                sums.fill(0);
                k_scales.fill(0.0);
                for j in 0..kv_len {
                    let xs = &k[j * width + h * d..][..d];
                    if let Some((scale, inv)) = row_scale(max_abs(xs)) {
                        for (c, &x) in xs.iter().enumerate() {
                            let q = code(x * inv);
                            keys[key_offset(j, c, cap_pad)] = q;
                            sums[j] += q as i32;
                        }
                        k_scales[j] = scale;
                    }
                }
                let (values, v_scales) = (values.take(h), v_scales.take(h));
                // Per block of VALUE_BLOCK keys: per-channel maxima (row by row: contiguous
                // reads), then codes.
                v_scales.fill(0.0);
                values.fill(0);
                for (b, scales) in v_scales.chunks_exact_mut(d).enumerate() {
                    let keys = b * VALUE_BLOCK..((b + 1) * VALUE_BLOCK).min(kv_len);
                    for j in keys.clone() {
                        for (m, &x) in scales.iter_mut().zip(&v[j * width + h * d..][..d]) {
                            *m = m.max(x.abs());
                        }
                    }
                    let mut inv = [0.0f32; MAX_HEAD_DIM];
                    for (c, s) in scales.iter_mut().enumerate() {
                        (*s, inv[c]) = row_scale(*s).unwrap_or((0.0, 0.0));
                    }
                    for j in keys {
                        for (c, &x) in v[j * width + h * d..][..d].iter().enumerate() {
                            values[value_offset(j, c, d)] = code(x * inv[c]);
                        }
                    }
                }
            });
        }
        self.kv_len = kv_len;
    }
}

/// Reusable buffers of [`attention_q8_prepared`]: per pool thread, the f32 scores and the
/// 16-bit probability planes of [`MAX_R`] rows and their query codes; the heads' outputs.
#[derive(Default)]
pub struct Q8PreparedScratch {
    scores: Vec<f32>,
    hi: Vec<u8>,
    lo: Vec<u8>,
    q_bytes: Vec<u8>,
    heads_out: Vec<f32>,
}

impl Q8PreparedScratch {
    /// An empty scratch (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Grows the buffers so calls on `pool` with `shape` (or smaller) allocate nothing.
    pub fn reserve(&mut self, pool: &CpuPool, shape: &AttentionShape) {
        let threads = pool.threads();
        let rows = threads * MAX_R * shape.kv_len.next_multiple_of(TILE);
        let q = threads * MAX_R * group_width(shape.head_dim);
        grow(&mut self.scores, rows);
        grow(&mut self.hi, rows);
        grow(&mut self.lo, rows);
        grow(&mut self.q_bytes, q);
        grow(
            &mut self.heads_out,
            shape.q_len * shape.heads * shape.head_dim,
        );
    }
}

/// Grows `v` to at least `len` values, all zero. Nothing is kept (scratch is written before it
/// is read), so growing is a fresh zeroed allocation rather than `resize`: it copies and writes
/// nothing, the OS maps each page when a call first writes it, and pages no call reaches (rows
/// past those a greedy decoder pass uses) never become resident. `resize` zero-filled, so
/// faulted in, every page at reservation: ~2300 of a tiny.en session's faults.
fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        *v = Vec::new(); // the old block is free before the new one is taken
        *v = vec![T::default(); len];
    }
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v` per head with `k`, `v` from `kv`,
/// on the fastest instruction set (see [`attention_q8_prepared_with`]).
///
/// # Panics
/// As [`crate::cpu::attention()`] (for `q`, `out`); also if `kv` was packed for another shape
/// (`shape.kv_len` must equal its `kv_len`).
pub fn attention_q8_prepared(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Q8KeyValues,
    scratch: &mut Q8PreparedScratch,
    out: &mut [f32],
) {
    attention_q8_prepared_with(Isa::detect(), pool, shape, q, kv, scratch, out);
}

/// [`attention_q8_prepared`] on a chosen instruction set (all give identical results). Grows
/// `scratch` if [`Q8PreparedScratch::reserve`] was not called for this shape.
///
/// # Panics
/// As [`attention_q8_prepared`].
pub fn attention_q8_prepared_with(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Q8KeyValues,
    scratch: &mut Q8PreparedScratch,
    out: &mut [f32],
) {
    assert!(
        shape.heads == kv.heads && shape.head_dim == kv.head_dim && shape.kv_len == kv.kv_len,
        "attention_q8_prepared: keys/values were packed for another shape"
    );
    if !shape.check_queries("attention_q8_prepared", q, out) {
        return;
    }
    scratch.reserve(pool, shape);
    let Q8PreparedScratch {
        scores,
        hi,
        lo,
        q_bytes,
        heads_out,
    } = scratch;
    let bufs = Buffers {
        scores,
        hi,
        lo,
        q_bytes,
        heads_out,
    };
    run(isa, pool, shape, q, kv, bufs);
    let (heads, d, q_len) = (shape.heads, shape.head_dim, shape.q_len);
    for (h, head) in heads_out[..heads * q_len * d]
        .chunks_exact(q_len * d)
        .enumerate()
    {
        for (i, row) in head.chunks_exact(d).enumerate() {
            out[(i * heads + h) * d..][..d].copy_from_slice(row);
        }
    }
}

/// The buffers of one call.
struct Buffers<'a> {
    scores: &'a mut [f32],
    hi: &'a mut [u8],
    lo: &'a mut [u8],
    q_bytes: &'a mut [u8],
    heads_out: &'a mut [f32],
}

/// One task per head: its outputs go to `heads_out [heads, q_len, head_dim]`.
fn run(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Q8KeyValues,
    bufs: Buffers<'_>,
) {
    let (heads, d, q_len, kv_len) = (shape.heads, shape.head_dim, shape.q_len, shape.kv_len);
    let (dg, kv_pad, width) = (group_width(d), kv_len.next_multiple_of(TILE), heads * d);
    let cap_pad = kv.cap_pad();
    let score_scale = (d as f32).powf(-0.5);
    let threads = pool.threads();
    let rows = MAX_R * kv_pad;
    let outs = Parts::new(&mut bufs.heads_out[..heads * q_len * d], q_len * d);
    let scores = Parts::new(&mut bufs.scores[..threads * rows], rows);
    let his = Parts::new(&mut bufs.hi[..threads * rows], rows);
    let los = Parts::new(&mut bufs.lo[..threads * rows], rows);
    let qbs = Parts::new(&mut bufs.q_bytes[..threads * MAX_R * dg], MAX_R * dg);
    pool.run_on_threads(heads, |thread, h| {
        let head_out = outs.take(h);
        let (mut s, mut hi, mut lo, mut qb) = (
            scores.lock(thread),
            his.lock(thread),
            los.lock(thread),
            qbs.lock(thread),
        );
        let taken = "per-thread buffers are never taken";
        let (s, hi, lo, qb) = (
            s.as_deref_mut().expect(taken),
            hi.as_deref_mut().expect(taken),
            lo.as_deref_mut().expect(taken),
            qb.as_deref_mut().expect(taken),
        );
        let keys = Groups {
            b: &kv.keys[h * cap_pad * dg..(h + 1) * cap_pad * dg],
            groups: dg / GROUP,
            group_stride: GROUP * cap_pad,
        };
        let key_sums = &kv.key_sums[h * cap_pad..(h + 1) * cap_pad];
        let key_scales = &kv.key_scales[h * cap_pad..(h + 1) * cap_pad];
        let n_blocks = cap_pad / VALUE_BLOCK;
        let value_scales = &kv.value_scales[h * n_blocks * d..(h + 1) * n_blocks * d];
        let mut sums: ColumnSums = [[0; MAX_COLS]; MAX_R];
        for i0 in (0..q_len).step_by(MAX_R) {
            let r_n = MAX_R.min(q_len - i0);
            let seen_max = shape.visible(i0 + r_n - 1);
            let mut q_scales = [0.0f32; MAX_R];
            for (r, qs) in q_scales.iter_mut().enumerate().take(r_n) {
                let row = &q[(i0 + r) * width + h * d..][..d];
                let codes = &mut qb[r * dg..(r + 1) * dg];
                *qs = activation_row_u8(isa, row, codes) * score_scale;
            }
            // 1. Scores, up to MAX_COLS keys per call, exact in i32 (offset removed), scaled.
            let query = Rows {
                hi: None,
                lo: qb,
                stride: dg,
            };
            for j0 in (0..seen_max).step_by(MAX_COLS) {
                let cols = MAX_COLS.min(seen_max - j0);
                group_dot(isa, r_n, query, keys, j0, cols, &mut sums);
                for (r, sums) in sums.iter().enumerate().take(r_n) {
                    let row = &mut s[r * kv_pad + j0..r * kv_pad + j0 + cols];
                    let (ks, sc) = (&key_sums[j0..j0 + cols], &key_scales[j0..j0 + cols]);
                    for (((s, &a), &k), &sc) in row.iter_mut().zip(sums.iter()).zip(ks).zip(sc) {
                        *s = a.wrapping_sub(128 * k) as f32 * q_scales[r] * sc;
                    }
                }
            }
            // 2. Softmax numerators in f32, then 16-bit codes split into byte planes.
            let groups = seen_max.div_ceil(GROUP);
            let mut inv_mass = [0.0f32; MAX_R];
            for (r, inv) in inv_mass.iter_mut().enumerate().take(r_n) {
                let seen = shape.visible(i0 + r);
                let at = r * kv_pad;
                *inv = probability_codes(
                    isa,
                    &mut s[at..at + seen],
                    &mut hi[at..at + seen],
                    &mut lo[at..at + seen],
                );
                hi[at + seen..at + groups * GROUP].fill(0);
                lo[at + seen..at + groups * GROUP].fill(0);
            }
            // 3. P·V exact in i32 per block of VALUE_BLOCK keys, scaled by the block's value
            // scales and summed in f32 (blocks in order), then normalised.
            let head_values = &kv.values[h * cap_pad * d..(h + 1) * cap_pad * d];
            for r in 0..r_n {
                head_out[(i0 + r) * d..(i0 + r + 1) * d].fill(0.0);
            }
            for (b, j0) in (0..groups * GROUP).step_by(VALUE_BLOCK).enumerate() {
                let probs = Rows {
                    hi: Some(&hi[j0..]),
                    lo: &lo[j0..],
                    stride: kv_pad,
                };
                let values = Groups {
                    b: &head_values[j0 * d..],
                    groups: (VALUE_BLOCK / GROUP).min(groups - j0 / GROUP),
                    group_stride: GROUP * d,
                };
                group_dot(isa, r_n, probs, values, 0, d, &mut sums);
                let scales = &value_scales[b * d..(b + 1) * d];
                for (r, sums) in sums.iter().enumerate().take(r_n) {
                    let o = &mut head_out[(i0 + r) * d..(i0 + r + 1) * d];
                    for ((o, &a), &vs) in o.iter_mut().zip(sums.iter()).zip(scales) {
                        *o += a as f32 * vs;
                    }
                }
            }
            for r in 0..r_n {
                for o in &mut head_out[(i0 + r) * d..(i0 + r + 1) * d] {
                    *o *= inv_mass[r];
                }
            }
        }
    });
}

/// Turns a row of scores into 16-bit probability codes (`hi`, `lo` planes): `e = exp(s − max)`
/// in f32 (in place), `p = round(e · m)` (ties to even) with
/// `m = min(65 535, ⌊16·10⁶ / Σe⌋)`; returns `1 / Σp`. The row is not empty. Compiled for
/// AVX-512 on [`Isa::Avx512Vnni`] (the same f32 operations in the same order: identical bits).
fn probability_codes(isa: Isa, row: &mut [f32], hi: &mut [u8], lo: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        // SAFETY: that ISA is only chosen when AVX-512F/BW are present (`Isa::available`);
        // the body is safe code.
        return unsafe { probability_codes_avx512(row, hi, lo) };
    }
    let _ = isa;
    probability_codes_body(row, hi, lo)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn probability_codes_avx512(row: &mut [f32], hi: &mut [u8], lo: &mut [u8]) -> f32 {
    probability_codes_body(row, hi, lo)
}

#[inline(always)]
fn probability_codes_body(row: &mut [f32], hi: &mut [u8], lo: &mut [u8]) -> f32 {
    let max = row_max(row);
    row.iter_mut().for_each(|x| *x = exp_nonpositive(*x - max));
    // Σe in 16 f32 lanes (it only sizes m); Σe ≥ 1 (the maximum's own term), so m ≥ 1 for
    // any row up to MAX_Q8_KEYS.
    let mut lanes = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &e)| *l += e);
    }
    let mass = lanes.iter().sum::<f32>() + rest;
    let m = (CODE_MASS / mass).floor().min(65_535.0);
    // e·m ∈ [0, 65 535]: adding 2²³ rounds it to an integer (ties to even) held in the low
    // mantissa bits (a float-to-int cast's saturation would block vectorisation).
    const ROUND: f32 = 8_388_608.0;
    let mut total = 0u32;
    for ((&e, hi), lo) in row.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
        // Wrapping: a NaN score (not finite input) gives garbage, never a panic.
        let p = (e * m + ROUND).to_bits().wrapping_sub(ROUND.to_bits());
        total = total.wrapping_add(p);
        *hi = (p >> 8) as u8;
        *lo = p as u8;
    }
    1.0 / total as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::cpu::{attention, attention_scratch_len};

    fn run_prepared(
        isa: Isa,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Q8KeyValues,
    ) -> Vec<f32> {
        let mut scratch = Q8PreparedScratch::new();
        let mut out = vec![f32::NAN; q.len()];
        attention_q8_prepared_with(isa, pool, shape, q, kv, &mut scratch, &mut out);
        out
    }

    #[test]
    fn prepared_int8_attention_is_close_to_f32_and_isas_agree_exactly() {
        let mut rng = Rng::new(43);
        let mut worst_seen = 0.0f32;
        for threads in [1, 2, 3] {
            let pool = CpuPool::new(threads);
            for (heads, head_dim, q_len, kv_len, causal_offset) in [
                (1, 1, 1, 1, None),
                (2, 8, 3, 5, None),
                (3, 7, 5, 33, None),
                (6, 64, 1, 1500, None),
                (8, 64, 5, 1500, None),
                (6, 64, 1, 12, Some(11)),
                (3, 16, 5, 20, Some(15)),
                (2, 64, 9, 70, None),
                (2, 48, 2, 130, None),
            ] {
                let shape = AttentionShape {
                    heads,
                    head_dim,
                    q_len,
                    kv_len,
                    causal_offset,
                };
                let width = heads * head_dim;
                let q = rng.vec(q_len * width, 1.5);
                let k = rng.vec(kv_len * width, 1.5);
                let v = rng.vec(kv_len * width, 1.0);
                // A larger capacity than used: padding and the re-pack path are exercised.
                let mut kv = Q8KeyValues::new(heads, head_dim, kv_len + 70);
                let long = rng.vec((kv_len + 70) * width, 3.0);
                kv.pack(&pool, &long, &long);
                kv.pack(&pool, &k, &v);
                let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
                let mut want = vec![0.0; q_len * width];
                attention(&pool, &shape, &q, &k, &v, &mut scratch, &mut want);
                let reference = run_prepared(Isa::Scalar, &pool, &shape, &q, &kv);
                for isa in Isa::available() {
                    let got = run_prepared(isa, &pool, &shape, &q, &kv);
                    assert!(
                        got.iter()
                            .zip(&reference)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} {shape:?} not bit-identical to scalar"
                    );
                }
                // Tolerance: the scores' error is that of `attention_q8` (≲ 0.14 worst case,
                // ~0.01 typically, for these ranges; relative weight error of the same size,
                // output error ≲ 2·δ·max|v|); values add ≤ max|v|/254 (4e-3·max|v|),
                // probability codes ≤ n·0.5/m of the mass in the worst case, ~√n·0.3/m
                // typically (≤ 2e-5 here). Bound: 2.5e-2 · max|v| (measured worst below).
                let max_v = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                let worst = reference
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |a, (g, w)| a.max((g - w).abs()));
                worst_seen = worst_seen.max(worst / max_v);
                assert!(
                    worst <= 2.5e-2 * max_v,
                    "{shape:?}: max error {worst} vs max|v| {max_v}"
                );
            }
        }
        eprintln!("prepared int8 attention: worst error / max|v| = {worst_seen:e}");
    }

    #[test]
    fn stored_keys_and_values_are_within_half_a_step() {
        let mut rng = Rng::new(5);
        let (heads, d, n) = (3, 20, 70);
        let pool = CpuPool::new(2);
        let k = rng.vec(n * heads * d, 2.0);
        let v = rng.vec(n * heads * d, 0.5);
        let mut kv = Q8KeyValues::new(heads, d, 100);
        kv.pack(&pool, &k, &v);
        assert_eq!(kv.kv_len(), n);
        let mut row = vec![0.0; d];
        for h in 0..heads {
            let v_max: Vec<f32> = (0..d)
                .map(|c| (0..n).fold(0.0f32, |m, j| m.max(v[j * heads * d + h * d + c].abs())))
                .collect();
            for j in 0..n {
                let ks = &k[j * heads * d + h * d..][..d];
                let k_step = max_abs(ks) / 127.0;
                kv.key_into(h, j, &mut row);
                for (a, b) in row.iter().zip(ks) {
                    assert!((a - b).abs() <= k_step * 0.5 * (1.0 + 1e-5));
                }
                kv.value_into(h, j, &mut row);
                for ((a, b), m) in row.iter().zip(&v[j * heads * d + h * d..]).zip(&v_max) {
                    assert!((a - b).abs() <= m / 127.0 * 0.5 * (1.0 + 1e-5));
                }
            }
        }
    }

    #[test]
    fn probability_codes_sum_within_the_bound_and_keep_the_peak() {
        // A peaked row: the maximum gets the full 16 bits.
        let mut row = vec![-30.0f32; 1500];
        row[7] = 0.0;
        let (mut hi, mut lo) = (vec![0u8; 1500], vec![0u8; 1500]);
        let inv = probability_codes(Isa::detect(), &mut row, &mut hi, &mut lo);
        assert_eq!((hi[7], lo[7]), (255, 255));
        assert_eq!(inv, 1.0 / 65_535.0);
        // A flat row of the most keys: the sum stays under the bound.
        let mut flat = vec![0.0f32; MAX_Q8_KEYS];
        let (mut hi, mut lo) = (vec![0u8; MAX_Q8_KEYS], vec![0u8; MAX_Q8_KEYS]);
        let inv = probability_codes(Isa::detect(), &mut flat, &mut hi, &mut lo);
        let total = 1.0 / inv as f64;
        assert!(total * 127.0 < i32::MAX as f64, "sum {total}");
        assert!(hi.iter().zip(&lo).all(|(&h, &l)| h == 0 && l == 15));
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::cpu::{attention_bf16, attention_bf16_scratch_len, Bf16KeyValues};
    use std::time::Instant;

    /// INT8 vs bf16 prepared keys/values on the decoder's cross-attention shapes (tiny: 6 heads,
    /// base: 8 heads; 1500 keys; one token or five beams): `cargo test -p amanuensis-runtime
    /// --release --lib q8::prepared::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only"]
    fn prepared_attention_throughput() {
        let mut rng = Rng::new(3);
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            for (heads, q_len) in [(6, 1), (8, 1), (8, 5)] {
                let shape = AttentionShape {
                    heads,
                    head_dim: 64,
                    q_len,
                    kv_len: 1500,
                    causal_offset: None,
                };
                let width = heads * 64;
                let (k, v) = (rng.vec(1500 * width, 1.0), rng.vec(1500 * width, 1.0));
                let q = rng.vec(q_len * width, 1.0);
                let mut out = vec![0.0; q_len * width];
                let mut bf = Bf16KeyValues::new(heads, 64, 1500);
                bf.pack(&pool, &k, &v);
                let mut q8 = Q8KeyValues::new(heads, 64, 1500);
                q8.pack(&pool, &k, &v);
                let mut scratch = vec![0.0; attention_bf16_scratch_len(&pool, &shape)];
                let mut q8_scratch = Q8PreparedScratch::new();
                q8_scratch.reserve(&pool, &shape);
                // The minimum of 2000 calls: warm caches (one layer's keys/values, 1.2-4.6 MB,
                // stay in L2/L3; in the decoder every layer's together fit a 32 MB L3 too).
                let time = |f: &mut dyn FnMut()| {
                    f();
                    (0..2000)
                        .map(|_| {
                            let t = Instant::now();
                            f();
                            t.elapsed().as_secs_f64()
                        })
                        .fold(f64::INFINITY, f64::min)
                };
                let t_bf = time(&mut || {
                    attention_bf16(&pool, &shape, &q, &bf, &mut scratch, &mut out);
                });
                let t_q8 = time(&mut || {
                    attention_q8_prepared(&pool, &shape, &q, &q8, &mut q8_scratch, &mut out);
                });
                println!(
                    "threads={threads} heads={heads} q_len={q_len}: bf16 {:.1} µs, int8 {:.1} µs",
                    t_bf * 1e6,
                    t_q8 * 1e6
                );
            }
        }
    }
}
