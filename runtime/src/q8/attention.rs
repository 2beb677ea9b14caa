//! Multi-head attention with INT8 `Q·Kᵀ`: same contract as [`crate::cpu::attention()`].
//!
//! `Q` and `K` are quantized per (row, head) (symmetric, `scale = max|·|/127`, head width
//! zero-padded to a multiple of 32); scores are exact i32 dot products scaled in f32 by
//! `scale_q · head_dim^-0.5 · scale_k`; softmax is the f32 one of the f32 path (f64 sum);
//! `P·V` stays in f32: the probabilities need more than 8 bits (a 1500-key row has most weights
//! below 1/127 of the peak), and `P·V` is only `head_dim` multiply-adds per score, the same as
//! `Q·Kᵀ`, so quantizing `V` per call would cost as much as it saves.

use super::kernels::{dot_keys, weighted_sum, Isa, MAX_R};
use super::parts::{Parts, MAX_PARTS};
use super::quant::quantize_row;
use crate::cpu::{softmax_in_place, AttentionShape, CpuPool};

/// Reusable INT8 buffers of [`attention_q8`]: codes and scales of `Q` and `K`.
#[derive(Default)]
pub struct Q8AttentionScratch {
    q_codes: Vec<i8>,
    q_scales: Vec<f32>,
    k_codes: Vec<i8>,
    k_scales: Vec<f32>,
}

impl Q8AttentionScratch {
    /// An empty scratch (grows on first use).
    pub fn new() -> Q8AttentionScratch {
        Q8AttentionScratch::default()
    }

    /// Grows the buffers so calls with `shape` (or smaller) allocate nothing.
    pub fn reserve(&mut self, shape: &AttentionShape) {
        let dp = padded_head(shape.head_dim);
        grow(&mut self.q_codes, shape.q_len * shape.heads * dp, 0);
        grow(&mut self.q_scales, shape.q_len * shape.heads, 0.0);
        grow(&mut self.k_codes, shape.kv_len * shape.heads * dp, 0);
        grow(&mut self.k_scales, shape.kv_len * shape.heads, 0.0);
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Head width rounded up to the 32-byte AVX2 chunk.
fn padded_head(head_dim: usize) -> usize {
    head_dim.next_multiple_of(32)
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
    let AttentionShape {
        heads,
        head_dim: d,
        q_len,
        kv_len,
        causal_offset,
    } = *shape;
    let width = heads * d;
    assert_eq!(
        q.len(),
        q_len * width,
        "attention_q8: q is not q_len·heads·head_dim"
    );
    assert_eq!(
        k.len(),
        kv_len * width,
        "attention_q8: k is not kv_len·heads·head_dim"
    );
    assert_eq!(
        v.len(),
        kv_len * width,
        "attention_q8: v is not kv_len·heads·head_dim"
    );
    assert_eq!(
        out.len(),
        q_len * width,
        "attention_q8: out is not q_len·heads·head_dim"
    );
    assert!(
        scores.len() >= attention_q8_scratch_len(pool, shape),
        "attention_q8: scores shorter than attention_q8_scratch_len"
    );
    if q_len == 0 || width == 0 {
        return;
    }
    assert!(kv_len > 0, "attention_q8: no keys");
    if let Some(off) = causal_offset {
        assert!(
            off + q_len <= kv_len,
            "attention_q8: causal_offset + q_len > kv_len"
        );
    }
    codes.reserve(shape);
    let dp = padded_head(d);
    let Q8AttentionScratch {
        q_codes,
        q_scales,
        k_codes,
        k_scales,
    } = codes;
    quantize_heads(
        pool,
        q,
        q_len,
        heads,
        d,
        &mut q_codes[..q_len * heads * dp],
        &mut q_scales[..q_len * heads],
    );
    quantize_heads(
        pool,
        k,
        kv_len,
        heads,
        d,
        &mut k_codes[..kv_len * heads * dp],
        &mut k_scales[..kv_len * heads],
    );
    let (q_codes, q_scales, k_codes, k_scales) = (&*q_codes, &*q_scales, &*k_codes, &*k_scales);
    let score_scale = (d as f32).powf(-0.5);

    // Tasks own blocks of query rows (all heads), so each writes one contiguous part of out.
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
        let mut sums = [0i32; 64];
        for h in 0..heads {
            for r0 in (0..rows).step_by(MAX_R) {
                let r_n = MAX_R.min(rows - r0);
                let i0 = task * rows_per_task + r0;
                let seen_max = visible(i0 + r_n - 1);
                for r in 0..r_n {
                    let i = i0 + r;
                    let seen = visible(i);
                    let qi = (i * heads + h) * dp;
                    let qs = q_scales[i * heads + h] * score_scale;
                    let s = &mut p[r * kv_len..r * kv_len + seen_max];
                    for (j0, s) in (0..seen).step_by(64).zip(s[..seen].chunks_mut(64)) {
                        let sums = &mut sums[..s.len()];
                        let keys = &k_codes[(j0 * heads + h) * dp..];
                        dot_keys(isa, &q_codes[qi..qi + dp], keys, heads * dp, sums);
                        for (t, (s, &a)) in s.iter_mut().zip(sums.iter()).enumerate() {
                            *s = a as f32 * qs * k_scales[(j0 + t) * heads + h];
                        }
                    }
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

/// Quantizes `x [rows, heads·d]` per (row, head) into `codes [rows, heads, dp]` (zero-padded
/// head width) and `scales [rows, heads]`, in parallel over row blocks.
fn quantize_heads(
    pool: &CpuPool,
    x: &[f32],
    rows: usize,
    heads: usize,
    d: usize,
    codes: &mut [i8],
    scales: &mut [f32],
) {
    let dp = padded_head(d);
    let block = rows
        .div_ceil(4 * pool.threads())
        .max(rows.div_ceil(MAX_PARTS))
        .max(1);
    let code_parts = Parts::new(codes, block * heads * dp);
    let scale_parts = Parts::new(scales, block * heads);
    pool.run(code_parts.count(), |task| {
        let (codes, scales) = (code_parts.take(task), scale_parts.take(task));
        let x = &x[task * block * heads * d..];
        for ((xh, c), s) in x
            .chunks_exact(d)
            .zip(codes.chunks_exact_mut(dp))
            .zip(scales)
        {
            *s = quantize_row(xh, c);
        }
    });
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
