//! Multi-head attention in f32 over keys **and values** packed per head: same contract as
//! [`crate::cpu::attention()`], for `head_dim` a positive multiple of 16 (Whisper: 64). The
//! INT8 backend's encoder self-attention on CPUs without native bf16 (AVX2 machines).
//!
//! Differences from [`crate::cpu::attention()`]'s micro-kernel path (same 6×16 f32 tiles):
//! - values are packed too, per head into 16-column blocks `[head_dim/16][kv_len][16]`, so each
//!   `P·V` micro-tile streams one contiguous block instead of a 64-byte piece of every
//!   `heads·head_dim`-wide row (a 1500-row head spans 560 4-KiB pages at Whisper tiny's
//!   1536-byte row); packing both takes one pass over `k` and `v` per call;
//! - raw scores go from the tile to the score rows (no scaling pass), and the tiles of panels
//!   every query of the block sees keep each row's running maximum;
//! - the softmax is fused and f32: one pass that writes `exp((s − max)·scale)` and sums it in 8
//!   f32 lanes (an AVX2+FMA exponential on x86-64), no normalising pass (the `P·V` tile is
//!   scaled by `1/Σ` as it is stored).
//!
//! Speed (6 heads × 64, 1500 × 1500, AMD EPYC Zen 3, shared machine): 44-47 ms on 1 thread,
//! 22-23 ms on 2, packing included, against 67-70 / 34-35 ms for the reference kernel (README,
//! Performance); both products run at the f32 GEMM's rate (93-98 GFLOP/s per thread).
//!
//! Accuracy (against exact attention): the products are f32 FMA sums as in the reference path;
//! each exponential is within 3e-7 relatively (tested); the f32 sum of ≤ n positive terms in 8
//! lanes is within ~(n/8)·2⁻²⁴ relatively (≤ 1.2e-5 for 1500 keys, typically √ of that), and
//! that one relative error scales the whole output row. So outputs (convex combinations of `v`)
//! are within ~1e-5·max|v| of the f32 reference path, plus that path's own f32 rounding; the
//! tests check 2e-5·(1 + √kv_len/10) against an f64 reference, the reference path's bound.

use super::attention::AttentionShape;
use super::gemm_kernels::{packed_tile, Isa, Tile, MR, NR};
use super::packed::{pack_panel, packed_len};
use super::pool::{CpuPool, DisjointSlice};
use super::softmax::{exp_nonpositive, row_max};

/// Queries per task (four micro-tile rows); their score rows are the per-thread scratch.
const BLOCK_Q: usize = 4 * MR;
/// Keys per packing task (a multiple of the 16-key panel).
const PACK_KEYS: usize = 128;

/// Whether [`attention_packed`] takes `shape` (`head_dim` a positive multiple of 16).
pub fn attention_packed_supports(shape: &AttentionShape) -> bool {
    shape.head_dim > 0 && shape.head_dim.is_multiple_of(NR)
}

/// Floats of one head's packed keys.
fn head_key_len(shape: &AttentionShape) -> usize {
    packed_len(shape.kv_len, shape.head_dim)
}

/// Floats of one head's packed values.
fn head_value_len(shape: &AttentionShape) -> usize {
    shape.kv_len * shape.head_dim
}

/// Row stride of the score rows (whole 16-key panels).
fn score_stride(kv_len: usize) -> usize {
    kv_len.next_multiple_of(NR)
}

/// Scratch length [`attention_packed`] needs for `shape` (enough for any smaller shape too):
/// every head's packed keys and values, plus 24 score rows per pool thread.
pub fn attention_packed_scratch_len(pool: &CpuPool, shape: &AttentionShape) -> usize {
    shape.heads * (head_key_len(shape) + head_value_len(shape))
        + pool.threads() * BLOCK_Q * score_stride(shape.kv_len)
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v`, per head, as
/// [`crate::cpu::attention()`] (same layouts), on the fastest instruction set.
/// `scratch` must be at least [`attention_packed_scratch_len`] long; nothing is allocated.
///
/// # Panics
/// As [`crate::cpu::attention()`]; also if `head_dim` is not a positive multiple of 16 or
/// `scratch` is too short.
pub fn attention_packed(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention_packed_with(Isa::detect(), pool, shape, q, k, v, scratch, out);
}

/// [`attention_packed`] on the kernels of `isa`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_packed_with(
    isa: Isa,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    assert!(
        attention_packed_supports(shape),
        "attention_packed: head_dim is not a positive multiple of 16"
    );
    assert!(
        scratch.len() >= attention_packed_scratch_len(pool, shape),
        "attention_packed: scratch shorter than attention_packed_scratch_len"
    );
    if !shape.check("attention_packed", q, k, v, out) {
        return;
    }
    let AttentionShape {
        heads,
        head_dim: d,
        q_len,
        kv_len,
        ..
    } = *shape;
    let width = heads * d;
    let (key_len, value_len) = (head_key_len(shape), head_value_len(shape));
    let stride = score_stride(kv_len);
    let (keys, rest) = scratch.split_at_mut(heads * key_len);
    let (values, rest) = rest.split_at_mut(heads * value_len);
    let scores = &mut rest[..pool.threads() * BLOCK_Q * stride];

    // 1. Pack every head's keys (16-key panels, `[kv/16][d][16]`) and values (16-column
    //    blocks, `[d/16][kv_len][16]`), a run of 128 keys of one head per task.
    {
        let keys = DisjointSlice::new(&mut *keys);
        let values = DisjointSlice::new(&mut *values);
        let chunks = kv_len.div_ceil(PACK_KEYS);
        pool.run(heads * chunks, |task| {
            let (h, c) = (task / chunks, task % chunks);
            let rows = c * PACK_KEYS..((c + 1) * PACK_KEYS).min(kv_len);
            for jp in rows.start / NR..rows.end.div_ceil(NR) {
                let at = h * key_len + jp * d * NR;
                // SAFETY: every (head, panel) range is written by exactly one task (chunks are
                // whole panels).
                let panel = unsafe { keys.range(at..at + d * NR) };
                pack_panel(&k[h * d..], width, kv_len, d, jp, panel);
            }
            for cb in 0..d / NR {
                let at = h * value_len + cb * kv_len * NR;
                // SAFETY: every (head, column block, key run) range is written by one task.
                let block = unsafe { values.range(at + rows.start * NR..at + rows.end * NR) };
                for (j, dst) in rows.clone().zip(block.chunks_exact_mut(NR)) {
                    dst.copy_from_slice(&v[j * width + h * d + cb * NR..][..NR]);
                }
            }
        });
    }
    let (keys, values): (&[f32], &[f32]) = (keys, values);

    let scale = (d as f32).powf(-0.5);
    let q_blocks = q_len.div_ceil(BLOCK_Q);
    let scores = DisjointSlice::new(scores);
    let out = DisjointSlice::new(out);
    pool.run_on_threads(heads * q_blocks, |thread, task| {
        let (h, qb) = (task / q_blocks, task % q_blocks);
        let queries = qb * BLOCK_Q..((qb + 1) * BLOCK_Q).min(q_len);
        let n_q = queries.len();
        let at = thread * BLOCK_Q * stride;
        // SAFETY: each thread uses only its own score rows, one task at a time.
        let s = unsafe { scores.range(at..at + BLOCK_Q * stride) };
        // Visible keys grow with the query index, so the last query sees the most.
        let seen_max = shape.visible(queries.end - 1);
        let head_keys = &keys[h * key_len..(h + 1) * key_len];
        let head_values = &values[h * value_len..(h + 1) * value_len];
        let q_head = &q[h * d..];

        // Keys below `full` are in whole panels every query of the block sees: their tiles
        // also keep each row's running maximum (in 8 lanes), so the softmax reads only the
        // rest of a row for its maximum.
        let full = shape.visible(queries.start) / NR * NR;
        let mut maxes = [[f32::NEG_INFINITY; 8]; BLOCK_Q];

        // Raw scores q_i·k_j for the panels below seen_max (whole panels: padding keys score
        // 0 and, like masked keys, are left out of the softmax and of `maxes`).
        for jp in 0..seen_max.div_ceil(NR) {
            let panel = &head_keys[jp * d * NR..(jp + 1) * d * NR];
            let track = (jp + 1) * NR <= full;
            for r0 in (0..n_q).step_by(MR) {
                let rows = MR.min(n_q - r0);
                let a = &q_head[(queries.start + r0) * width..];
                let s = &mut s[r0 * stride + jp * NR..];
                let maxes = track.then(|| &mut maxes[r0..r0 + rows]);
                score_tile(isa, rows, d, a, width, panel, s, stride, maxes);
            }
        }

        // Unnormalised probabilities over each query's visible keys, zero up to seen_max.
        let mut inv_sum = [0.0f32; BLOCK_Q];
        for (r, i) in queries.clone().enumerate() {
            let seen = shape.visible(i);
            let row = &mut s[r * stride..r * stride + seen_max];
            let known = maxes[r].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            inv_sum[r] = 1.0 / exp_shifted_sum(isa, &mut row[..seen], full, known, scale);
            row[seen..].fill(0.0);
        }

        // out[i, head h] = (Σ_j p_ij · v_j) / Σ_j p_ij, one packed 16-column block at a time.
        let mut tile: Tile = [[0.0; NR]; MR];
        for r0 in (0..n_q).step_by(MR) {
            let rows = MR.min(n_q - r0);
            let p = &s[r0 * stride..];
            let inv = &inv_sum[r0..r0 + rows];
            for cb in 0..d / NR {
                let block = &head_values[cb * kv_len * NR..(cb + 1) * kv_len * NR];
                value_tile(isa, seen_max, p, stride, block, inv, &mut tile);
                for (r, t) in tile.iter().enumerate().take(rows) {
                    let at = (queries.start + r0 + r) * width + h * d + cb * NR;
                    // SAFETY: tasks own disjoint (query rows, head) column ranges of `out`.
                    unsafe { out.range(at..at + NR) }.copy_from_slice(t);
                }
            }
        }
    });
}

/// `s[r·lds + c] = Σ_{t<d} a[r·lda + t] · panel[t·16 + c]` for `r < rows` (1..=6), `c < 16`;
/// with `maxes`, also `maxes[r][l] = max(maxes[r][l], s[r·lds + l], s[r·lds + 8 + l])` (NaN
/// skipped, as [`row_max`] does).
#[allow(clippy::too_many_arguments)]
fn score_tile(
    isa: Isa,
    rows: usize,
    d: usize,
    a: &[f32],
    lda: usize,
    panel: &[f32],
    s: &mut [f32],
    lds: usize,
    maxes: Option<&mut [[f32; 8]]>,
) {
    assert!((1..=MR).contains(&rows) && a.len() >= (rows - 1) * lda + d);
    assert!(panel.len() >= d * NR && s.len() >= (rows - 1) * lds + NR);
    assert!(maxes.as_ref().is_none_or(|m| m.len() >= rows));
    match isa {
        Isa::Portable => {
            let mut tile: Tile = [[0.0; NR]; MR];
            packed_tile(isa, rows, d, a, lda, panel, NR, &mut tile);
            for (r, t) in tile.iter().enumerate().take(rows) {
                s[r * lds..r * lds + NR].copy_from_slice(t);
            }
            if let Some(maxes) = maxes {
                for (m, t) in maxes.iter_mut().zip(&tile[..rows]) {
                    for (c, &x) in t.iter().enumerate() {
                        let l = &mut m[c % 8];
                        *l = if x > *l { x } else { *l };
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected (see `Isa`); the lengths asserted above cover every read
        // and write.
        Isa::Avx2Fma => unsafe {
            let (a, b, s) = (a.as_ptr(), panel.as_ptr(), s.as_mut_ptr());
            match rows {
                1 => avx2::scores::<1>(d, a, lda, b, s, lds, maxes),
                2 => avx2::scores::<2>(d, a, lda, b, s, lds, maxes),
                3 => avx2::scores::<3>(d, a, lda, b, s, lds, maxes),
                4 => avx2::scores::<4>(d, a, lda, b, s, lds, maxes),
                5 => avx2::scores::<5>(d, a, lda, b, s, lds, maxes),
                _ => avx2::scores::<6>(d, a, lda, b, s, lds, maxes),
            }
        },
    }
}

/// `tile[r][c] = inv[r] · Σ_{j<kc} p[r·ldp + j] · block[j·16 + c]` for `r < inv.len()`
/// (1..=6), `c < 16`.
fn value_tile(
    isa: Isa,
    kc: usize,
    p: &[f32],
    ldp: usize,
    block: &[f32],
    inv: &[f32],
    tile: &mut Tile,
) {
    let rows = inv.len();
    assert!((1..=MR).contains(&rows) && p.len() >= (rows - 1) * ldp + kc);
    assert!(block.len() >= kc * NR);
    match isa {
        Isa::Portable => {
            packed_tile(isa, rows, kc, p, ldp, block, NR, tile);
            for (t, &inv) in tile.iter_mut().zip(inv) {
                t.iter_mut().for_each(|t| *t *= inv);
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected (see `Isa`); the lengths asserted above cover every read.
        Isa::Avx2Fma => unsafe {
            let (p, b) = (p.as_ptr(), block.as_ptr());
            match rows {
                1 => avx2::values::<1>(kc, p, ldp, b, inv, tile),
                2 => avx2::values::<2>(kc, p, ldp, b, inv, tile),
                3 => avx2::values::<3>(kc, p, ldp, b, inv, tile),
                4 => avx2::values::<4>(kc, p, ldp, b, inv, tile),
                5 => avx2::values::<5>(kc, p, ldp, b, inv, tile),
                _ => avx2::values::<6>(kc, p, ldp, b, inv, tile),
            }
        },
    }
}

/// `row[j] = exp((row[j] − max)·scale)` with `max = max(known, max row[from..])` (`known`:
/// the maximum of `row[..from]`, kept as the scores were computed); returns `Σ row[j]` (f32,
/// 8 lanes). `row` is non-empty and `scale > 0`.
fn exp_shifted_sum(isa: Isa, row: &mut [f32], from: usize, known: f32, scale: f32) -> f32 {
    match isa {
        Isa::Portable => exp_shifted_sum_portable(row, known.max(row_max(&row[from..])), scale),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only constructed after run-time detection of AVX2 and FMA.
        Isa::Avx2Fma => unsafe { avx2::exp_shifted_sum(row, from, known, scale) },
    }
}

fn exp_shifted_sum_portable(row: &mut [f32], max: f32, scale: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c.iter_mut()) {
            *x = exp_nonpositive((*x - max) * scale);
            *l += *x;
        }
    }
    let mut sum = sum8(&lanes);
    for x in chunks.into_remainder() {
        *x = exp_nonpositive((*x - max) * scale);
        sum += *x;
    }
    sum
}

/// Pairwise sum of 8 lanes.
#[inline(always)]
fn sum8(v: &[f32; 8]) -> f32 {
    let q = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The micro-tiles and the fused exponential-and-sum pass with AVX2+FMA intrinsics.
    // Register tiles read best as indexed loops over const bounds (LLVM unrolls them fully).
    #![allow(clippy::needless_range_loop)]
    use super::{exp_nonpositive, row_max, sum8, Tile, NR};
    use std::arch::x86_64::*;

    /// See [`super::score_tile`] (`R` rows).
    ///
    /// # Safety
    /// AVX2 and FMA available; `a` readable at `r·lda + t` (`r < R`, `t < d`), `b` for
    /// `d·16` floats, `s` writable at `r·lds + c` (`c < 16`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores<const R: usize>(
        d: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        s: *mut f32,
        lds: usize,
        maxes: Option<&mut [[f32; 8]]>,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for t in 0..d {
            // SAFETY: t < d (caller's extents).
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(b.add(t * NR)),
                    _mm256_loadu_ps(b.add(t * NR + 8)),
                )
            };
            for r in 0..R {
                // SAFETY: r < R, t < d.
                let x = unsafe { _mm256_broadcast_ss(&*a.add(r * lda + t)) };
                lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
            }
        }
        for r in 0..R {
            // SAFETY: r < R: 16 writable floats at r·lds.
            unsafe {
                _mm256_storeu_ps(s.add(r * lds), lo[r]);
                _mm256_storeu_ps(s.add(r * lds + 8), hi[r]);
            }
        }
        if let Some(maxes) = maxes {
            for r in 0..R {
                let m = maxes[r].as_mut_ptr();
                // SAFETY: `maxes` holds at least R rows of 8 (checked by the caller).
                unsafe {
                    // `max_ps(new, old)` keeps `old` where `new` is NaN.
                    let old = _mm256_loadu_ps(m);
                    let new = _mm256_max_ps(lo[r], old);
                    _mm256_storeu_ps(m, _mm256_max_ps(hi[r], new));
                }
            }
        }
    }

    /// See [`super::value_tile`] (`R` rows).
    ///
    /// # Safety
    /// AVX2 and FMA available; `p` readable at `r·ldp + j` (`r < R`, `j < kc`), `b` for
    /// `kc·16` floats; `inv` holds at least `R` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn values<const R: usize>(
        kc: usize,
        p: *const f32,
        ldp: usize,
        b: *const f32,
        inv: &[f32],
        tile: &mut Tile,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for j in 0..kc {
            // SAFETY: j < kc (caller's extents).
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(b.add(j * NR)),
                    _mm256_loadu_ps(b.add(j * NR + 8)),
                )
            };
            for r in 0..R {
                // SAFETY: r < R, j < kc.
                let x = unsafe { _mm256_broadcast_ss(&*p.add(r * ldp + j)) };
                lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
            }
        }
        for r in 0..R {
            let scale = _mm256_set1_ps(inv[r]);
            let t = tile[r].as_mut_ptr();
            // SAFETY: a tile row holds 16 floats.
            unsafe {
                _mm256_storeu_ps(t, _mm256_mul_ps(lo[r], scale));
                _mm256_storeu_ps(t.add(8), _mm256_mul_ps(hi[r], scale));
            }
        }
    }

    /// See [`super::exp_shifted_sum`].
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted_sum(
        row: &mut [f32],
        from: usize,
        known: f32,
        scale: f32,
    ) -> f32 {
        let max = known.max(row_max(&row[from..]));
        let (m, sc) = (_mm256_set1_ps(max), _mm256_set1_ps(scale));
        let mut acc = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 floats.
            let x = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let e = exp8(_mm256_mul_ps(_mm256_sub_ps(x, m), sc));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
            acc = _mm256_add_ps(acc, e);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut sum = sum8(&lanes);
        for x in chunks.into_remainder() {
            *x = exp_nonpositive((*x - max) * scale);
            sum += *x;
        }
        sum
    }

    /// `exp(x)` for `x ≤ 0` in 8 lanes: [`exp_nonpositive`]'s Cephes reduction and polynomial
    /// with FMAs (relative error below 3e-7, tested); below −87.3 exactly 0; NaN stays NaN.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn exp8(x: __m256) -> __m256 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
        const LOWEST: f32 = -87.3;
        let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST));
        // `max_ps(a, x)` returns `x` when `x` is NaN, so NaN flows through to the result.
        let xc = _mm256_max_ps(_mm256_set1_ps(LOWEST), x);
        let shifted = _mm256_fmadd_ps(xc, _mm256_set1_ps(LOG2E), _mm256_set1_ps(ROUND));
        let n = _mm256_sub_ps(shifted, _mm256_set1_ps(ROUND));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        // `shifted`'s bits are 0x4B40_0000 + n; (n + 127) << 23 is 2^n for n ∈ [-126, 0].
        let bits = _mm256_sub_epi32(
            _mm256_castps_si256(shifted),
            _mm256_set1_epi32(0x4B40_0000 - 127),
        );
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits));
        _mm256_andnot_ps(underflow, _mm256_mul_ps(e, pow2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{attention_f64, Rng};

    fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            isas.push(Isa::detect());
        }
        isas
    }

    #[test]
    fn packed_attention_matches_f64() {
        let mut rng = Rng::new(17);
        for threads in [1, 2, 3] {
            let pool = CpuPool::new(threads);
            for (heads, head_dim, q_len, kv_len, causal_offset) in [
                (1, 16, 1, 1, None),
                (2, 16, 5, 7, None),
                (3, 32, 17, 33, None),
                (2, 64, 16, 16, Some(0)),  // causal, square
                (2, 64, 40, 40, Some(0)),  // causal prompt, several query blocks
                (3, 48, 29, 61, Some(32)), // new rows against a cache, odd lengths
                (2, 64, 70, 333, None),    // odd kv_len, a partial last block
                (6, 64, 30, 1500, None),   // encoder-like: 1500 keys
                (1, 64, 25, 1500, Some(1475)),
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
                let want = attention_f64(&shape, &q, &k, &v);
                // Outputs are convex combinations of |v| ≤ 1; the reference path's bound (f32
                // products, ~ε·√kv_len from the weighted sum) plus ≤ 1.2e-5 from the f32
                // softmax sum (see the module docs): 2e-5·(1 + √kv_len/10) absolute.
                let tol = 2e-5 * (1.0 + (kv_len as f64).sqrt() / 10.0);
                for isa in isas() {
                    let mut scratch = vec![f32::NAN; attention_packed_scratch_len(&pool, &shape)];
                    let mut out = vec![f32::NAN; q.len()];
                    attention_packed_with(isa, &pool, &shape, &q, &k, &v, &mut scratch, &mut out);
                    let worst = out
                        .iter()
                        .zip(&want)
                        .map(|(&g, &w)| (g as f64 - w).abs())
                        .fold(0.0f64, f64::max);
                    assert!(
                        worst <= tol,
                        "{isa:?} {shape:?}: off by {worst:e} > {tol:e}"
                    );
                }
            }
        }
    }

    /// Larger scores (sharper softmax, the regime of trained attention) and a shorter scratch
    /// reused across shapes: still within the bound, and a second call on the same scratch
    /// gives the same bits.
    #[test]
    fn packed_attention_with_sharp_scores_and_reused_scratch() {
        let mut rng = Rng::new(23);
        let pool = CpuPool::new(2);
        let big = AttentionShape {
            heads: 2,
            head_dim: 64,
            q_len: 50,
            kv_len: 700,
            causal_offset: None,
        };
        let mut scratch = vec![f32::NAN; attention_packed_scratch_len(&pool, &big)];
        for shape in [
            big,
            AttentionShape {
                q_len: 31,
                kv_len: 97,
                causal_offset: Some(66),
                ..big
            },
        ] {
            let width = 128;
            let q = rng.vec(shape.q_len * width, 4.0);
            let k = rng.vec(shape.kv_len * width, 4.0);
            let v = rng.vec(shape.kv_len * width, 1.0);
            let want = attention_f64(&shape, &q, &k, &v);
            let mut a = vec![f32::NAN; q.len()];
            attention_packed(&pool, &shape, &q, &k, &v, &mut scratch, &mut a);
            let mut b = vec![f32::NAN; q.len()];
            attention_packed(&pool, &shape, &q, &k, &v, &mut scratch, &mut b);
            assert_eq!(a, b);
            // Scores up to ~16·64/8: a score's f32 rounding (~ε·Σ|q k|/8 ≈ 1e-5) moves a
            // weight by that much relatively; 2e-5·(1 + √kv/10) still covers it.
            let tol = 2e-5 * (1.0 + (shape.kv_len as f64).sqrt() / 10.0);
            for (idx, (&g, &w)) in a.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() <= tol, "{shape:?} [{idx}]: {g} vs {w}");
            }
        }
    }

    #[test]
    fn causal_mask_hides_future_keys() {
        // v = one-hot rows: output component j > off + i must be exactly zero.
        let pool = CpuPool::new(2);
        let shape = AttentionShape {
            heads: 1,
            head_dim: 16,
            q_len: 3,
            kv_len: 16,
            causal_offset: Some(1),
        };
        let q = vec![1.0; 3 * 16];
        let k = vec![0.5; 16 * 16];
        let mut v = vec![0.0; 16 * 16];
        for j in 0..16 {
            v[j * 16 + j] = 1.0;
        }
        for isa in isas() {
            let mut scratch = vec![f32::NAN; attention_packed_scratch_len(&pool, &shape)];
            let mut out = vec![f32::NAN; 3 * 16];
            attention_packed_with(isa, &pool, &shape, &q, &k, &v, &mut scratch, &mut out);
            for i in 0..3 {
                for j in 0..16 {
                    let want = if j <= 1 + i {
                        1.0 / (2 + i) as f32
                    } else {
                        0.0
                    };
                    let got = out[i * 16 + j];
                    assert!((got - want).abs() < 1e-6, "{isa:?} [{i},{j}]: {got}");
                    if want == 0.0 {
                        assert_eq!(got, 0.0);
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_exp_matches_f64() {
        use std::arch::x86_64::*;
        if Isa::detect() == Isa::Portable {
            return;
        }
        let steps = 400_000;
        let mut worst = 0.0f64;
        let mut lanes = [0.0f32; 8];
        for i in (0..=steps).step_by(8) {
            let xs: [f32; 8] = std::array::from_fn(|l| -87.0 * (i + l) as f32 / steps as f32);
            // SAFETY: AVX2+FMA detected above; both arrays hold 8 floats.
            unsafe {
                let e = avx2::exp8(_mm256_loadu_ps(xs.as_ptr()));
                _mm256_storeu_ps(lanes.as_mut_ptr(), e);
            }
            for (&x, &e) in xs.iter().zip(&lanes) {
                let want = (x as f64).exp();
                worst = worst.max((e as f64 - want).abs() / want);
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        let special = [
            0.0,
            -87.4,
            -100.0,
            f32::NEG_INFINITY,
            f32::NAN,
            -1e-30,
            -0.5,
            -87.0,
        ];
        // SAFETY: as above.
        unsafe {
            let e = avx2::exp8(_mm256_loadu_ps(special.as_ptr()));
            _mm256_storeu_ps(lanes.as_mut_ptr(), e);
        }
        assert_eq!(lanes[0], 1.0);
        assert_eq!(&lanes[1..4], &[0.0; 3]);
        assert!(lanes[4].is_nan());
        assert_eq!(lanes[5], 1.0);
    }

    /// Time of each phase on the encoder shape, one thread (timing only, never asserted):
    /// `cargo test --release -p amanuensis-runtime --lib cpu::attention_packed::tests::phases
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only; run by hand with --ignored --nocapture"]
    fn phases() {
        use std::time::Instant;
        let isa = Isa::detect();
        let mut rng = Rng::new(5);
        let (d, n) = (64, 1500);
        let q = rng.vec(n * d, 1.0);
        let k = rng.vec(n * d, 1.0);
        let v = rng.vec(n * d, 1.0);
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        // One head (×6 for the 6-head layer).
        let mut keys = vec![0.0; packed_len(n, d)];
        for jp in 0..n.div_ceil(NR) {
            pack_panel(&k, d, n, d, jp, &mut keys[jp * d * NR..(jp + 1) * d * NR]);
        }
        let mut values = vec![0.0; n * d];
        for cb in 0..d / NR {
            for j in 0..n {
                values[cb * n * NR + j * NR..][..NR].copy_from_slice(&v[j * d + cb * NR..][..NR]);
            }
        }
        let stride = score_stride(n);
        let mut s = vec![0.0; BLOCK_Q * stride];
        let t_scores = best(&mut || {
            for qb in 0..n.div_ceil(BLOCK_Q) {
                let n_q = BLOCK_Q.min(n - qb * BLOCK_Q);
                for jp in 0..n.div_ceil(NR) {
                    let panel = &keys[jp * d * NR..(jp + 1) * d * NR];
                    for r0 in (0..n_q).step_by(MR) {
                        let rows = MR.min(n_q - r0);
                        let a = &q[(qb * BLOCK_Q + r0) * d..];
                        score_tile(
                            isa,
                            rows,
                            d,
                            a,
                            d,
                            panel,
                            &mut s[r0 * stride + jp * NR..],
                            stride,
                            None,
                        );
                    }
                }
            }
        });
        let scores = s.clone();
        let mut inv = [0.0f32; BLOCK_Q];
        let t_softmax = best(&mut || {
            for _ in 0..n.div_ceil(BLOCK_Q) {
                s.copy_from_slice(&scores);
                for (r, inv) in inv.iter_mut().enumerate() {
                    *inv = 1.0
                        / exp_shifted_sum(
                            isa,
                            &mut s[r * stride..r * stride + n],
                            0,
                            f32::NEG_INFINITY,
                            0.125,
                        );
                }
            }
        });
        let t_copy = best(&mut || {
            for _ in 0..n.div_ceil(BLOCK_Q) {
                s.copy_from_slice(&scores);
            }
        });
        let mut tile: Tile = [[0.0; NR]; MR];
        let t_values = best(&mut || {
            for _ in 0..n.div_ceil(BLOCK_Q) {
                for r0 in (0..BLOCK_Q).step_by(MR) {
                    for cb in 0..d / NR {
                        let block = &values[cb * n * NR..(cb + 1) * n * NR];
                        value_tile(
                            isa,
                            n,
                            &s[r0 * stride..],
                            stride,
                            block,
                            &inv[r0..r0 + MR],
                            &mut tile,
                        );
                    }
                }
            }
        });
        let flop = 2.0 * (n * n * d) as f64;
        println!(
            "one head of 1500×1500×64, {isa:?}: scores {t_scores:.2} ms ({:.1} GFLOP/s), softmax {:.2} ms, P·V {t_values:.2} ms ({:.1} GFLOP/s)",
            flop / t_scores / 1e6,
            t_softmax - t_copy,
            flop / t_values / 1e6
        );
    }

    #[test]
    #[should_panic(expected = "attention_packed: head_dim is not a positive multiple of 16")]
    fn refuses_unsupported_head_dim() {
        let pool = CpuPool::new(1);
        let shape = AttentionShape {
            heads: 1,
            head_dim: 8,
            q_len: 1,
            kv_len: 1,
            causal_offset: None,
        };
        let x = [0.0; 8];
        attention_packed(&pool, &shape, &x, &x, &x, &mut [0.0; 1024], &mut [0.0; 8]);
    }
}
