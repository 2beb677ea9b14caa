//! Multi-head attention with INT8 `Q·Kᵀ`: same contract as [`crate::cpu::attention()`].
//!
//! `Q` and `K` are quantized per (row, head) (symmetric, `scale = max|·|/127`, head width
//! zero-padded to a multiple of 64). Each head's K is laid out like a weight matrix in the tile
//! layout (keys = output channels), so scores for four queries × 64 keys come from the GEMM
//! tile kernels (VNNI or AVX2) as exact i32 sums, scaled in f32 by
//! `scale_q · head_dim^-0.5 · scale_k`; softmax is the f32 one of the f32 path (f64 sum);
//! `P·V` stays in f32 ([`weighted_sum`], four queries at a time): the probabilities need more
//! than 8 bits (a 1500-key row has most weights below 1/127 of the peak).

use super::gemm::uses_bytes;
use super::kernels::{
    activation_row, activation_row_u8, dot_tile, dot_tile_u8, weighted_sum, Isa, TileSums, MAX_R,
};
use super::layout::{tile_offset, TILE, TILE_BYTES};
use super::parts::{Parts, MAX_PARTS};
use super::quant::{code, max_abs, row_scale};
use crate::cpu::{softmax_in_place, AttentionShape, CpuPool};

/// Reusable INT8 buffers of [`attention_q8`]: Q codes (i16, or offset bytes on the VNNI path),
/// K in the tile layout with per-key code sums, and the scales.
#[derive(Default)]
pub struct Q8AttentionScratch {
    q_codes: Vec<i16>,
    q_bytes: Vec<u8>,
    q_scales: Vec<f32>,
    k_tiles: Vec<i8>,
    k_sums: Vec<i32>,
    k_scales: Vec<f32>,
}

impl Q8AttentionScratch {
    /// An empty scratch (grows on first use).
    pub fn new() -> Q8AttentionScratch {
        Q8AttentionScratch::default()
    }

    /// Grows the buffers so calls with `shape` (or smaller) allocate nothing.
    pub fn reserve(&mut self, shape: &AttentionShape) {
        self.reserve_for(Isa::detect(), shape);
    }

    /// [`Q8AttentionScratch::reserve`] for the kernels of `isa`.
    pub fn reserve_for(&mut self, isa: Isa, shape: &AttentionShape) {
        let dp = padded_head(shape.head_dim);
        let kv_pad = shape.kv_len.next_multiple_of(TILE);
        if uses_bytes(isa) {
            grow(&mut self.q_bytes, shape.q_len * shape.heads * dp, 0);
        } else {
            grow(&mut self.q_codes, shape.q_len * shape.heads * dp, 0);
        }
        grow(&mut self.q_scales, shape.q_len * shape.heads, 0.0);
        grow(&mut self.k_tiles, shape.heads * kv_pad * dp, 0);
        grow(&mut self.k_sums, shape.heads * kv_pad, 0);
        grow(&mut self.k_scales, shape.heads * shape.kv_len, 0.0);
    }
}

/// Grows `v` to at least `len` values, all zero. Nothing is kept (scratch is written before it
/// is read), so growing is a fresh zeroed allocation rather than `resize`: it copies and writes
/// nothing, the OS maps each page when a call first writes it, and pages no call reaches (rows
/// past those a greedy decoder pass uses) never become resident. `resize` zero-filled, so
/// faulted in, every page at reservation: ~2300 of a tiny.en session's faults.
fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        *v = Vec::new(); // the old block is free before the new one is taken
        *v = vec![fill; len];
    }
}

/// Head width rounded up to the tile depth.
fn padded_head(head_dim: usize) -> usize {
    head_dim.next_multiple_of(TILE)
}

/// Length of the f32 `scores` scratch [`attention_q8`] needs: four `kv_len` probability rows
/// per pool thread (queries are processed four at a time).
pub fn attention_q8_scratch_len(pool: &CpuPool, shape: &AttentionShape) -> usize {
    pool.threads() * MAX_R * shape.kv_len
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v` per head, with `q·kᵀ` in INT8,
/// on the fastest instruction set (see [`attention_q8_with`]).
///
/// # Panics
/// As [`crate::cpu::attention()`] (shape mismatches, no keys, causal offset past the keys), or
/// if `scores` is shorter than [`attention_q8_scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn attention_q8(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    codes: &mut Q8AttentionScratch,
    out: &mut [f32],
) {
    attention_q8_with(Isa::detect(), pool, shape, q, k, v, scores, codes, out);
}

/// [`attention_q8`] on a chosen instruction set (all give identical results).
///
/// # Panics
/// As [`attention_q8`].
#[allow(clippy::too_many_arguments)]
pub fn attention_q8_with(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    codes: &mut Q8AttentionScratch,
    out: &mut [f32],
) {
    assert!(
        scores.len() >= attention_q8_scratch_len(pool, shape),
        "attention_q8: scores shorter than attention_q8_scratch_len"
    );
    if !shape.check("attention_q8", q, k, v, out) {
        return;
    }
    codes.reserve_for(isa, shape);
    let Q8AttentionScratch {
        q_codes,
        q_bytes,
        q_scales,
        k_tiles,
        k_sums,
        k_scales,
    } = codes;
    let keys = Keys::quantize(pool, shape, k, k_tiles, k_sums, k_scales);
    let inputs = Inputs { v, keys };
    if uses_bytes(isa) {
        let (q_bytes, q_scales) = quantize_queries(isa, pool, shape, q, q_bytes, q_scales);
        run(isa, pool, shape, &inputs, q_bytes, q_scales, scores, out);
    } else {
        let (q_codes, q_scales) = quantize_queries(isa, pool, shape, q, q_codes, q_scales);
        run(isa, pool, shape, &inputs, q_codes, q_scales, scores, out);
    }
}

/// Quantized keys: per head, a `[kv_pad, dp]` matrix in the tile layout, code sums per key,
/// scales per (head, key) at `h·kv_len + j`.
struct Keys<'a> {
    tiles: &'a [i8],
    sums: &'a [i32],
    scales: &'a [f32],
}

/// The values and quantized keys of one call.
struct Inputs<'a> {
    v: &'a [f32],
    keys: Keys<'a>,
}

impl<'a> Keys<'a> {
    /// Quantizes `k` per (key, head), in parallel over heads.
    fn quantize(
        pool: &CpuPool,
        shape: &AttentionShape,
        k: &[f32],
        tiles: &'a mut [i8],
        sums: &'a mut [i32],
        scales: &'a mut [f32],
    ) -> Keys<'a> {
        let (heads, d, kv_len) = (shape.heads, shape.head_dim, shape.kv_len);
        let (dp, kv_pad) = (padded_head(d), kv_len.next_multiple_of(TILE));
        let width = heads * d;
        let tiles = &mut tiles[..heads * kv_pad * dp];
        let sums = &mut sums[..heads * kv_pad];
        let scales = &mut scales[..heads * kv_len];
        {
            let tile_parts = Parts::new(&mut *tiles, kv_pad * dp);
            let sum_parts = Parts::new(&mut *sums, kv_pad);
            let scale_parts = Parts::new(&mut *scales, kv_len);
            pool.run(heads, |h| {
                let (tiles, sums, scales) =
                    (tile_parts.take(h), sum_parts.take(h), scale_parts.take(h));
                tiles.fill(0);
                sums.fill(0);
                for (j, (s, sum)) in scales.iter_mut().zip(sums.iter_mut()).enumerate() {
                    let xs = &k[j * width + h * d..j * width + (h + 1) * d];
                    *s = match row_scale(max_abs(xs)) {
                        Some((scale, inv)) => {
                            for (c, &x) in xs.iter().enumerate() {
                                let q = code(x * inv);
                                tiles[tile_offset(j, c, dp)] = q;
                                *sum += q as i32;
                            }
                            scale
                        }
                        None => 0.0,
                    };
                }
            });
        }
        Keys {
            tiles,
            sums,
            scales,
        }
    }
}

/// Quantizes `q` per (query, head) into `codes [heads, q_len, dp]` (four queries of one head
/// are consecutive rows for the tile kernels) and `scales [heads, q_len]`.
fn quantize_queries<'a, T: QueryCode>(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    codes: &'a mut [T],
    scales: &'a mut [f32],
) -> (&'a [T], &'a [f32]) {
    let (heads, d, q_len) = (shape.heads, shape.head_dim, shape.q_len);
    let dp = padded_head(d);
    let width = heads * d;
    let codes = &mut codes[..heads * q_len * dp];
    let scales = &mut scales[..heads * q_len];
    {
        let code_parts = Parts::new(&mut *codes, q_len * dp);
        let scale_parts = Parts::new(&mut *scales, q_len);
        pool.run(heads, |h| {
            let (codes, scales) = (code_parts.take(h), scale_parts.take(h));
            for (i, (row, s)) in codes.chunks_exact_mut(dp).zip(scales).enumerate() {
                *s = T::quantize(isa, &q[i * width + h * d..i * width + (h + 1) * d], row);
            }
        });
    }
    (codes, scales)
}

/// Scores, softmax and `P·V`; tasks own blocks of query rows (all heads), so each writes one
/// contiguous part of `out`.
#[allow(clippy::too_many_arguments)]
fn run<T: QueryCode>(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    inputs: &Inputs<'_>,
    q_codes: &[T],
    q_scales: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let AttentionShape {
        heads,
        head_dim: d,
        q_len,
        kv_len,
        causal_offset,
    } = *shape;
    let (dp, kv_pad, width) = (padded_head(d), kv_len.next_multiple_of(TILE), heads * d);
    let k_tiles = dp / TILE;
    let Keys {
        tiles: key_tiles,
        sums: key_sums,
        scales: key_scales,
    } = inputs.keys;
    let v = inputs.v;
    let score_scale = (d as f32).powf(-0.5);
    let rows_per_task = q_len
        .div_ceil(4 * pool.threads())
        .clamp(1, 16)
        .max(q_len.div_ceil(MAX_PARTS));
    let outs = Parts::new(out, rows_per_task * width);
    let rows_scores = Parts::new(
        &mut scores[..pool.threads() * MAX_R * kv_len],
        MAX_R * kv_len,
    );
    let visible = |i: usize| causal_offset.map_or(kv_len, |off| off + i + 1);
    pool.run_on_threads(outs.count(), |thread, task| {
        let out = outs.take(task);
        let mut guard = rows_scores.lock(thread);
        let p = guard
            .as_deref_mut()
            .expect("per-thread scores are never taken");
        let rows = out.len() / width;
        let mut tile: TileSums = [[0; TILE]; MAX_R];
        for h in 0..heads {
            let head_keys = &key_tiles[h * kv_pad * dp..(h + 1) * kv_pad * dp];
            let head_sums = &key_sums[h * kv_pad..(h + 1) * kv_pad];
            let head_scales = &key_scales[h * kv_len..(h + 1) * kv_len];
            for r0 in (0..rows).step_by(MAX_R) {
                let r_n = MAX_R.min(rows - r0);
                let i0 = task * rows_per_task + r0;
                let seen_max = visible(i0 + r_n - 1);
                let qrows = &q_codes[(h * q_len + i0) * dp..(h * q_len + i0 + r_n) * dp];
                for t in 0..seen_max.div_ceil(TILE) {
                    let j0 = t * TILE;
                    let cols = TILE.min(seen_max - j0);
                    let keys = &head_keys[t * k_tiles * TILE_BYTES..(t + 1) * k_tiles * TILE_BYTES];
                    let sums = &head_sums[j0..j0 + TILE];
                    T::scores(isa, r_n, qrows, k_tiles, keys, sums, cols, &mut tile);
                    for (r, tile) in tile.iter().enumerate().take(r_n) {
                        let qs = q_scales[h * q_len + i0 + r] * score_scale;
                        let row = &mut p[r * kv_len + j0..r * kv_len + j0 + cols];
                        for ((s, &a), &ks) in
                            row.iter_mut().zip(tile.iter()).zip(&head_scales[j0..])
                        {
                            *s = a as f32 * qs * ks;
                        }
                    }
                }
                for r in 0..r_n {
                    let seen = visible(i0 + r);
                    let s = &mut p[r * kv_len..r * kv_len + seen_max];
                    softmax_in_place(&mut s[..seen]);
                    s[seen..].fill(0.0); // causal rows of the block see fewer keys
                }
                weighted_sum(
                    isa,
                    r_n,
                    p,
                    kv_len,
                    seen_max,
                    &v[h * d..],
                    width,
                    d,
                    &mut out[r0 * width + h * d..],
                    width,
                );
            }
        }
    });
}

/// A query code type: i16 codes for the AVX2 / portable tile kernels, offset bytes for VNNI.
trait QueryCode: Copy + Default + Send + Sync {
    fn quantize(isa: Isa, x: &[f32], row: &mut [Self]) -> f32;
    #[allow(clippy::too_many_arguments)]
    fn scores(
        isa: Isa,
        rows: usize,
        q: &[Self],
        k_tiles: usize,
        keys: &[i8],
        key_sums: &[i32],
        width: usize,
        out: &mut TileSums,
    );
}

impl QueryCode for i16 {
    fn quantize(isa: Isa, x: &[f32], row: &mut [i16]) -> f32 {
        activation_row(isa, x, row)
    }
    fn scores(
        isa: Isa,
        rows: usize,
        q: &[i16],
        k_tiles: usize,
        keys: &[i8],
        _key_sums: &[i32],
        width: usize,
        out: &mut TileSums,
    ) {
        dot_tile(isa, rows, q, k_tiles, keys, width, out);
    }
}

impl QueryCode for u8 {
    fn quantize(isa: Isa, x: &[f32], row: &mut [u8]) -> f32 {
        activation_row_u8(isa, x, row)
    }
    fn scores(
        isa: Isa,
        rows: usize,
        q: &[u8],
        k_tiles: usize,
        keys: &[i8],
        key_sums: &[i32],
        width: usize,
        out: &mut TileSums,
    ) {
        dot_tile_u8(isa, rows, q, k_tiles, keys, key_sums, width, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::cpu::{attention, attention_scratch_len};

    fn run(
        isa: Isa,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let mut scores = vec![f32::NAN; attention_q8_scratch_len(pool, shape)];
        let mut codes = Q8AttentionScratch::new();
        let mut out = vec![f32::NAN; q.len()];
        attention_q8_with(isa, pool, shape, q, k, v, &mut scores, &mut codes, &mut out);
        out
    }

    #[test]
    fn int8_attention_is_close_to_f32_and_isas_agree_exactly() {
        let mut rng = Rng::new(41);
        let mut worst_seen = 0.0f32;
        for threads in [1, 2, 3] {
            let pool = CpuPool::new(threads);
            for (heads, head_dim, q_len, kv_len, causal_offset) in [
                (1, 1, 1, 1, None),
                (2, 8, 3, 5, None),
                (3, 7, 17, 33, None),
                (6, 64, 1, 1500, None),
                (2, 64, 40, 40, Some(0)),
                (6, 64, 1, 12, Some(11)),
                (3, 16, 5, 20, Some(15)),
                (2, 64, 70, 1500, None),
                (6, 64, 100, 100, None),
            ] {
                let shape = AttentionShape {
                    heads,
                    head_dim,
                    q_len,
                    kv_len,
                    causal_offset,
                };
                let width = heads * head_dim;
                // Same input ranges as the f32 attention test: scores of O(5).
                let q = rng.vec(q_len * width, 1.5);
                let k = rng.vec(kv_len * width, 1.5);
                let v = rng.vec(kv_len * width, 1.0);
                let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
                let mut want = vec![0.0; q_len * width];
                attention(&pool, &shape, &q, &k, &v, &mut scratch, &mut want);
                let reference = run(Isa::Scalar, &pool, &shape, &q, &k, &v);
                for isa in Isa::available() {
                    let got = run(isa, &pool, &shape, &q, &k, &v);
                    assert!(
                        got.iter()
                            .zip(&reference)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} {shape:?} not bit-identical to scalar"
                    );
                }
                // Tolerance: a score s = q·k/√d gets error ≲ (|q|₁·s_k + |k|₁·s_q)/(2√d) with
                // s = max/127 per head row; for these inputs (|·| ≤ 1.5, d ≤ 64) that is at most
                // ~1.5·d·1.5/127/√d ≈ 0.14 in the worst case and ~0.01 typically (errors are
                // random signs). Softmax turns a score error δ into a relative weight error ≈ δ,
                // and outputs are convex combinations of |v| ≤ 1, so |Δout| ≲ 2·δ·max|v|.
                // Bound: 2e-2 · max|v| (measured worst below, ~3-5× under it).
                let max_v = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                let worst = reference
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |a, (g, w)| a.max((g - w).abs()));
                worst_seen = worst_seen.max(worst / max_v);
                assert!(
                    worst <= 2e-2 * max_v,
                    "{shape:?}: max error {worst} vs max|v| {max_v}"
                );
            }
        }
        eprintln!("int8 attention: worst error / max|v| = {worst_seen:e}");
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::cpu::{attention, attention_scratch_len};
    use std::time::Instant;

    /// INT8 vs f32 attention on the encoder shape (tiny/base: 64-wide heads, 1500 frames):
    /// `cargo test -p amanuensis-runtime --release --lib q8::attention::bench -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "timing only"]
    fn attention_throughput() {
        let mut rng = Rng::new(2);
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            let shape = AttentionShape {
                heads: 6,
                head_dim: 64,
                q_len: 1500,
                kv_len: 1500,
                causal_offset: None,
            };
            let n = 1500 * 384;
            let (q, k, v) = (rng.vec(n, 1.0), rng.vec(n, 1.0), rng.vec(n, 1.0));
            let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
            let mut codes = Q8AttentionScratch::new();
            let mut out = vec![0.0; n];
            let time = |f: &mut dyn FnMut()| {
                f();
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let t32 = time(&mut || attention(&pool, &shape, &q, &k, &v, &mut scratch, &mut out));
            let t8 = time(&mut || {
                attention_q8(
                    &pool,
                    &shape,
                    &q,
                    &k,
                    &v,
                    &mut scratch,
                    &mut codes,
                    &mut out,
                )
            });
            println!(
                "threads={threads}: f32 {:.2} ms, int8 Q·Kᵀ {:.2} ms",
                t32 * 1e3,
                t8 * 1e3
            );
        }
    }
}
