//! Multi-head attention over bf16-stored keys and values with f32 arithmetic: same contract
//! as [`crate::cpu::attention()`], reading `k`, `v` from a [`Bf16KeyValues`] (the decoder's
//! bf16 self-attention cache), for `head_dim` a multiple of 64.
//!
//! Unlike [`crate::cpu::attention_bf16()`], only the stored keys and values are bf16: each is
//! widened to f32 (exact: a bf16 is the top half of an f32) and multiplied by the f32 query or
//! the f32 probability with f32 FMA accumulation; the softmax is the f32 one. Per (head,
//! query): scores `q·kᵀ · head_dim^-0.5` a 32-key panel at a time, `softmax_in_place` over the
//! visible keys, then `Σ p_j · v_j` 64 columns at a time.
//!
//! On x86-64 with AVX-512F the products are 512-bit FMAs over keys/values widened by a shift
//! or a mask; elsewhere a portable path computes the same products, with the low and high
//! halves of each packed pair summed in the same two partial sums; the two agree within f32
//! rounding (FMA vs. multiply-add), not bit for bit.
//!
//! Accuracy against f32 attention on the unrounded `k`, `v`: each stored value is within 2⁻⁹
//! relatively of its f32 value and nothing else is rounded beyond f32, so a score moves by at
//! most `δ = 2⁻⁹ · head_dim^-0.5 · Σ_c |q_c k_c|`, each probability by a factor within
//! `e^{±2δ}`, and each output by at most `2⁻⁹·max|v| + (e^{2δ} − 1)·(max v − min v)/2`
//! (the tests check this bound, and f32-exactness when `k`, `v` are already bf16 values).

use super::attention::AttentionShape;
use super::attention_bf16::{Bf16Call, Bf16KeyValues, PANEL};
use super::pool::{CpuPool, DisjointSlice};
use super::softmax::softmax_in_place;

/// Value columns per `Σ p·v` pass.
const COLS: usize = 64;

/// Whether this machine runs the AVX-512F kernels (else the portable ones): decided once per
/// process.
pub fn has_avx512f() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Per-thread scratch words [`attention_bf16_kv`] needs (any smaller shape too): one score row.
pub fn attention_bf16_kv_scratch_len(pool: &CpuPool, shape: &AttentionShape) -> usize {
    pool.threads() * shape.kv_len.next_multiple_of(PANEL)
}

/// `out = softmax(q·kᵀ · head_dim^-0.5 [+ causal mask]) · v` per head, with `k`, `v` from `kv`
/// (bf16, widened to f32) and everything else in f32.
///
/// # Panics
/// As [`crate::cpu::attention()`]; also if `head_dim` is not a multiple of 64, `kv` holds
/// another shape, or `scratch` is shorter than [`attention_bf16_kv_scratch_len`].
pub fn attention_bf16_kv(
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Bf16KeyValues,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    attention_bf16_kv_with(has_avx512f(), pool, shape, q, kv, scratch, out)
}

/// [`attention_bf16_kv`] on the AVX-512F kernels (`native`) or the portable ones.
///
/// # Panics
/// As [`attention_bf16_kv`], or if `native` is asked for on a CPU without AVX-512F.
pub fn attention_bf16_kv_with(
    native: bool,
    pool: &CpuPool,
    shape: &AttentionShape,
    q: &[f32],
    kv: &Bf16KeyValues,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let call = Bf16Call {
        name: "attention_bf16_kv",
        scratch_needed: attention_bf16_kv_scratch_len(pool, shape),
        native_isa: "AVX-512F",
        native_available: has_avx512f(),
    };
    if !call.check(native, shape, q, kv, scratch, out) {
        return;
    }
    let (heads, d, q_len) = (shape.heads, shape.head_dim, shape.q_len);
    let (width, half) = (heads * d, d / 2);
    let scale = (d as f32).powf(-0.5);
    let per_thread = shape.kv_len.next_multiple_of(PANEL);
    let head_words = kv.head_words();
    let scratch = DisjointSlice::new(&mut scratch[..pool.threads() * per_thread]);
    let out = DisjointSlice::new(out);
    pool.run_on_threads(heads * q_len, |thread, task| {
        let (h, i) = (task / q_len, task % q_len);
        // SAFETY: each thread uses only its own region, one task at a time.
        let scores = unsafe { scratch.range(thread * per_thread..(thread + 1) * per_thread) };
        let keys = &kv.keys()[h * head_words..(h + 1) * head_words];
        let values = &kv.values()[h * head_words..(h + 1) * head_words];
        let qi = &q[i * width + h * d..][..d];
        let seen = shape.visible(i);

        // 1. Scores of the visible keys, a 32-key panel at a time.
        let mut tile = [0.0f32; PANEL];
        for p in 0..seen.div_ceil(PANEL) {
            let panel = &keys[p * PANEL * half..(p + 1) * PANEL * half];
            score_panel(native, qi, panel, &mut tile);
            let cols = PANEL.min(seen - p * PANEL);
            let row = &mut scores[p * PANEL..p * PANEL + cols];
            row.iter_mut().zip(&tile).for_each(|(s, &t)| *s = t * scale);
        }

        // 2. f32 softmax over them.
        let probs = &mut scores[..seen];
        softmax_in_place(probs);

        // 3. out = Σ p_j · v_j, 64 columns at a time.
        let at = i * width + h * d;
        // SAFETY: tasks own disjoint (query row, head) ranges of `out`.
        let o = unsafe { out.range(at..at + d) };
        for (cb, o) in o.chunks_exact_mut(COLS).enumerate() {
            let o: &mut [f32; COLS] = o.try_into().expect("64 columns");
            weighted_values(native, probs, &values[cb * COLS..], d, o);
        }
    });
}

#[inline(always)]
fn widen(w: u32) -> (f32, f32) {
    (f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000))
}

/// `tile[j] = Σ_t q[2t]·k_j[2t] + q[2t+1]·k_j[2t+1]` over the 32 keys of one packed panel
/// (`q.len()/2` words per key).
fn score_panel(native: bool, q: &[f32], panel: &[u32], tile: &mut [f32; PANEL]) {
    let half = q.len() / 2;
    assert!(q.len().is_multiple_of(2) && panel.len() >= half * PANEL);
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: AVX-512F checked by the caller; lengths checked above.
        unsafe { native::score_panel(q, panel, tile) };
        return;
    }
    let _ = native;
    let mut lo = [0.0f32; PANEL];
    let mut hi = [0.0f32; PANEL];
    for (t, two) in q.chunks_exact(2).enumerate() {
        let kw = &panel[t * PANEL..(t + 1) * PANEL];
        for ((l, h), &k) in lo.iter_mut().zip(hi.iter_mut()).zip(kw) {
            let (k0, k1) = widen(k);
            *l += two[0] * k0;
            *h += two[1] * k1;
        }
    }
    for ((t, l), h) in tile.iter_mut().zip(lo).zip(hi) {
        *t = l + h;
    }
}

/// `out[c] = Σ_j p[j] · v_j[c]` for 64 columns, `values` the packed steps (pairs of rows
/// `2s`, `2s + 1`, `v_stride` words apart) from the first column; rows `≥ p.len()` (the high
/// half of an odd tail) get weight zero.
fn weighted_values(
    native: bool,
    p: &[f32],
    values: &[u32],
    v_stride: usize,
    out: &mut [f32; COLS],
) {
    let steps = p.len().div_ceil(2);
    assert!(steps == 0 || values.len() >= (steps - 1) * v_stride + COLS);
    #[cfg(target_arch = "x86_64")]
    if native {
        // SAFETY: AVX-512F checked by the caller; lengths checked above.
        unsafe { native::weighted_values(p, values, v_stride, out) };
        return;
    }
    let _ = native;
    let mut lo = [0.0f32; COLS];
    let mut hi = [0.0f32; COLS];
    for s in 0..steps {
        let (p0, p1) = (p[2 * s], p.get(2 * s + 1).copied().unwrap_or(0.0));
        let vw = &values[s * v_stride..][..COLS];
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(vw) {
            let (v0, v1) = widen(v);
            *l += p0 * v0;
            *h += p1 * v1;
        }
    }
    for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
        *o = l + h;
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    //! The AVX-512F kernels: bf16 halves widened by a shift (low) or a mask (high).
    use super::{COLS, PANEL};
    use std::arch::x86_64::*;

    /// The low and high bf16 halves of 16 words at `p`, as f32.
    ///
    /// # Safety
    /// AVX-512F present; `p` readable for 64 bytes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_widened(p: *const u32) -> (__m512, __m512) {
        // SAFETY: `p` is readable for 64 bytes (caller).
        let w = unsafe { _mm512_loadu_si512(p.cast()) };
        let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w));
        let hi = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(-65536)));
        (lo, hi)
    }

    /// See [`super::score_panel`].
    ///
    /// # Safety
    /// AVX-512F present; `q.len()` even and `panel` holds `q.len()/2 · 32` words.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn score_panel(q: &[f32], panel: &[u32], tile: &mut [f32; PANEL]) {
        let mut acc = [_mm512_setzero_ps(); 4];
        for (t, two) in q.chunks_exact(2).enumerate() {
            let (a0, a1) = (_mm512_set1_ps(two[0]), _mm512_set1_ps(two[1]));
            // SAFETY: t < q.len()/2, so both 16-word loads lie in `panel` (caller).
            let (l0, h0) = unsafe { load_widened(panel.as_ptr().add(t * PANEL)) };
            // SAFETY: as above.
            let (l1, h1) = unsafe { load_widened(panel.as_ptr().add(t * PANEL + 16)) };
            acc[0] = _mm512_fmadd_ps(a0, l0, acc[0]);
            acc[1] = _mm512_fmadd_ps(a1, h0, acc[1]);
            acc[2] = _mm512_fmadd_ps(a0, l1, acc[2]);
            acc[3] = _mm512_fmadd_ps(a1, h1, acc[3]);
        }
        // SAFETY: `tile` holds 32 f32.
        unsafe {
            _mm512_storeu_ps(tile.as_mut_ptr(), _mm512_add_ps(acc[0], acc[1]));
            _mm512_storeu_ps(tile.as_mut_ptr().add(16), _mm512_add_ps(acc[2], acc[3]));
        }
    }

    /// See [`super::weighted_values`].
    ///
    /// # Safety
    /// AVX-512F present; `values` holds `p.len().div_ceil(2)` steps of 64 words at
    /// `v_stride`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values(
        p: &[f32],
        values: &[u32],
        v_stride: usize,
        out: &mut [f32; COLS],
    ) {
        let mut lo = [_mm512_setzero_ps(); 4];
        let mut hi = [_mm512_setzero_ps(); 4];
        for s in 0..p.len().div_ceil(2) {
            let (p0, p1) = (p[2 * s], p.get(2 * s + 1).copied().unwrap_or(0.0));
            let (a0, a1) = (_mm512_set1_ps(p0), _mm512_set1_ps(p1));
            for c in 0..4 {
                // SAFETY: step s < steps holds 64 words from s · v_stride (caller).
                let (l, h) = unsafe { load_widened(values.as_ptr().add(s * v_stride + 16 * c)) };
                lo[c] = _mm512_fmadd_ps(a0, l, lo[c]);
                hi[c] = _mm512_fmadd_ps(a1, h, hi[c]);
            }
        }
        for c in 0..4 {
            // SAFETY: `out` holds 64 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * c), _mm512_add_ps(lo[c], hi[c])) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::attention::{attention, attention_scratch_len};
    use crate::cpu::attention_bf16::{bf16_bits, bf16_value};
    use crate::cpu::testing::Rng;

    fn run(
        native: bool,
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let mut kv = Bf16KeyValues::new(shape.heads, shape.head_dim, shape.kv_len + 40);
        kv.pack(pool, k, v);
        let mut scratch = vec![f32::NAN; attention_bf16_kv_scratch_len(pool, shape)];
        let mut out = vec![f32::NAN; q.len()];
        attention_bf16_kv_with(native, pool, shape, q, &kv, &mut scratch, &mut out);
        out
    }

    fn reference(
        pool: &CpuPool,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let mut s = vec![0.0; attention_scratch_len(pool, shape)];
        let mut out = vec![0.0; q.len()];
        attention(pool, shape, q, k, v, &mut s, &mut out);
        out
    }

    const SHAPES: [(usize, usize, usize, Option<usize>); 8] = [
        (1, 1, 1, None),
        (6, 1, 1500, None),   // one token over a long history
        (6, 5, 448, None),    // five beams, the decoder's full context
        (2, 40, 40, Some(0)), // causal prompt
        (3, 3, 20, Some(17)), // new tokens against a cache: rows past `visible` are held
        (3, 2, 21, Some(19)), // odd visible lengths (a step's high half masked)
        (2, 70, 333, None),   // odd kv_len
        (1, 4, 64, None),     // whole panels only
    ];

    fn shape_of(
        heads: usize,
        q_len: usize,
        kv_len: usize,
        causal: Option<usize>,
    ) -> AttentionShape {
        AttentionShape {
            heads,
            head_dim: 64,
            q_len,
            kv_len,
            causal_offset: causal,
        }
    }

    fn worst_gap(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    }

    /// With `k`, `v` already bf16 values nothing is rounded beyond f32: f32 attention's result
    /// up to summation order.
    #[test]
    fn equals_f32_attention_on_bf16_values() {
        let mut rng = Rng::new(5);
        for threads in 1..=3 {
            let pool = CpuPool::new(threads);
            for (heads, q_len, kv_len, causal) in SHAPES {
                let shape = shape_of(heads, q_len, kv_len, causal);
                let width = heads * 64;
                let round = |x: Vec<f32>| x.into_iter().map(|x| bf16_value(bf16_bits(x))).collect();
                let q = rng.vec(q_len * width, 1.5);
                let k: Vec<f32> = round(rng.vec(kv_len * width, 1.5));
                let v: Vec<f32> = round(rng.vec(kv_len * width, 1.0));
                let want = reference(&pool, &shape, &q, &k, &v);
                for native in [false, true] {
                    if native && !has_avx512f() {
                        continue;
                    }
                    let got = run(native, &pool, &shape, &q, &k, &v);
                    // Scores O(5) summed over 64 terms, outputs ≤ 1 over ≤ 1500 rows: the f32
                    // rounding of either order is ~1e-6.
                    let gap = worst_gap(&got, &want);
                    assert!(gap < 1e-5, "{shape:?} native={native}: off by {gap}");
                }
            }
        }
    }

    /// On unrounded `k`, `v`: within the bound of the module docs, per (query, head).
    #[test]
    fn within_the_derived_bound_of_f32_attention() {
        let mut rng = Rng::new(17);
        let pool = CpuPool::new(2);
        let eps = 2f32.powi(-9);
        for (heads, q_len, kv_len, causal) in SHAPES {
            let shape = shape_of(heads, q_len, kv_len, causal);
            let width = heads * 64;
            let q = rng.vec(q_len * width, 1.5);
            let k = rng.vec(kv_len * width, 1.5);
            // Values offset from zero, so the `max|v|` and the spread terms differ.
            let v: Vec<f32> = rng
                .vec(kv_len * width, 1.0)
                .iter()
                .map(|x| x + 0.5)
                .collect();
            let want = reference(&pool, &shape, &q, &k, &v);
            for native in [false, true] {
                if native && !has_avx512f() {
                    continue;
                }
                let got = run(native, &pool, &shape, &q, &k, &v);
                for i in 0..q_len {
                    let seen = shape.visible(i);
                    for h in 0..heads {
                        let qi = &q[i * width + h * 64..][..64];
                        let mut delta = 0.0f32;
                        let (mut vmax, mut vlo, mut vhi) = (0.0f32, f32::MAX, f32::MIN);
                        for j in 0..seen {
                            let kj = &k[j * width + h * 64..][..64];
                            let s: f32 = qi.iter().zip(kj).map(|(a, b)| (a * b).abs()).sum();
                            delta = delta.max(eps * s / 8.0);
                            for &x in &v[j * width + h * 64..][..64] {
                                (vmax, vlo, vhi) = (vmax.max(x.abs()), vlo.min(x), vhi.max(x));
                            }
                        }
                        let bound = eps * vmax + ((2.0 * delta).exp() - 1.0) * (vhi - vlo) / 2.0;
                        let at = i * width + h * 64;
                        let gap = worst_gap(&got[at..at + 64], &want[at..at + 64]);
                        assert!(
                            gap <= bound + 1e-5,
                            "{shape:?} native={native} query {i} head {h}: {gap} > {bound}"
                        );
                    }
                }
            }
        }
    }
}
