//! AVX-512 VNNI INT8 GEMM micro-kernel (x86-64 with `avx512vnni` + `avx512bw`, e.g. Zen 4),
//! 512-bit `vpdpbusd`: four u8 × i8 products summed into each of 16 i32 lanes per instruction,
//! so one instruction covers a whole 64-byte tile row (one channel's 64 k values).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so activations are stored offset by 128
//! (`u = q + 128`, in `[1, 255]`) and the offset is removed exactly afterwards:
//! `Σ_p q_p·w_p = Σ_p u_p·w_p - 128·Σ_p w_p`, with `Σ_p w_p` precomputed per output channel
//! ([`super::layout::QuantMatrix::code_sums`]). Padding is exact because padded weights are
//! zero. Products and sums are integers (`|Σ u·w| ≤ 255·127·k`, no i32 overflow below
//! k = 66 000; `vpdpbusd` does not saturate), so the result equals the scalar reference bit for
//! bit.
//!
//! Blocking: up to 4 activation rows × 4 channels = 16 zmm accumulators (of 32 registers), each
//! a (row, channel) dot product over k, folded horizontally once at the end (zmm → ymm, then a
//! `vphaddd` tree four sums at a time); per k tile, 4 row loads and 4 channel loads feed 16
//! `vpdpbusd`. Against the earlier 256-bit kernel (4 rows × 2 channels, 8 accumulators, 6 loads
//! per 8 instructions), `examples/gemm_q8_bench` on Zen 4 (runs 2.5 h apart, see
//! docs/int8-layout.md §7): 1500×384×1536 unchanged at ~54 % of peak, 1500×1536×384 58 → 72 %;
//! one or two rows take 8 channels per block (more loads in flight for the memory-bound decoder
//! GEMVs): the 1×384×51 864 logits GEMV 0.68 → 0.44 ms on one thread, 0.27 → 0.23 ms on two.

use super::kernels::{TileSums, MAX_R};
use super::layout::{TILE, TILE_BYTES};
use std::arch::x86_64::*;

/// Whether this CPU can run the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512f")
}

/// [`super::kernels::activation_row_u8`] on AVX-512: `row[i] = quant::code(x[i] · inv) + 128`
/// for `i < x.len()`, 128 past it, with `inv` from the row's `max |x|` (NaN ignored, as the
/// other paths); returns the row's scale (0 for a zero or non-finite row, whose bytes are all
/// 128). Bit-identical to the scalar path: the same clamp, truncation and half-away step, 16
/// lanes at a time, written straight to bytes.
///
/// # Panics
/// If the CPU lacks AVX-512F/BW or `row` is shorter than `x`.
pub(super) fn activation_row_u8(x: &[f32], row: &mut [u8]) -> f32 {
    assert!(
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
        "AVX-512 activation quantizer without AVX-512F/BW"
    );
    assert!(
        row.len() >= x.len(),
        "activation_row_u8: row shorter than x"
    );
    let (head, pad) = row.split_at_mut(x.len());
    pad.fill(128);
    // SAFETY: AVX-512F detected; reads `x.len()` floats of `x`.
    let max = unsafe { max_abs_avx512(x) };
    let Some((scale, inv)) = super::quant::row_scale(max) else {
        head.fill(128);
        return 0.0;
    };
    // SAFETY: AVX-512F/BW detected; `head` has `x.len()` bytes.
    unsafe { codes_u8_avx512(x, inv, head) };
    scale
}

/// `max |x|` ignoring NaN (0 for an empty slice). Four accumulators over 64 values a step
/// (the maximum is exact, so the order does not change it).
///
/// # Safety
/// AVX-512F available.
#[target_feature(enable = "avx512f")]
unsafe fn max_abs_avx512(x: &[f32]) -> f32 {
    let mut m = [_mm512_setzero_ps(); 4];
    let p = x.as_ptr();
    let mut i = 0;
    while i + 64 <= x.len() {
        for (u, m) in m.iter_mut().enumerate() {
            // SAFETY: i + 16u + 16 <= x.len().
            let v = _mm512_abs_ps(unsafe { _mm512_loadu_ps(p.add(i + 16 * u)) });
            *m = _mm512_max_ps(v, *m); // a NaN in `v` yields `m` (the second operand)
        }
        i += 64;
    }
    while i < x.len() {
        let lanes = (x.len() - i).min(16);
        let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
        // SAFETY: lanes below `lanes` are inside `x`; the others are not read.
        let v = _mm512_abs_ps(unsafe { _mm512_maskz_loadu_ps(k, p.add(i)) });
        m[0] = _mm512_max_ps(v, m[0]);
        i += 16;
    }
    let m = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
    let mut lanes = [0.0f32; 16];
    // SAFETY: 16 floats into a 16-float array.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), m) };
    lanes.iter().copied().fold(0.0f32, f32::max)
}

/// `out[i] = quant::code(x[i] · inv) + 128` for `i < x.len()`.
///
/// Rounding half away from zero as `trunc(c + copysign(0.5⁻, c))` for the clamped `c`, with
/// `0.5⁻` the float just below 0.5: checked equal to [`super::quant::code`] on all 2³² floats
/// (`quant::tests::code_by_adding_just_under_a_half_is_code_on_every_float`), in three
/// instructions fewer than truncating and comparing the fraction.
///
/// # Safety
/// AVX-512F/BW available; `out.len() == x.len()`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn codes_u8_avx512(x: &[f32], inv: f32, out: &mut [u8]) {
    let inv = _mm512_set1_ps(inv);
    let (lo, hi) = (
        _mm512_set1_ps(-super::quant::QMAX),
        _mm512_set1_ps(super::quant::QMAX),
    );
    let sign = _mm512_set1_epi32(i32::MIN);
    let below_half = _mm512_set1_epi32(super::quant::JUST_UNDER_HALF.to_bits() as i32);
    let offset = _mm512_set1_epi32(128);
    for c0 in (0..x.len()).step_by(16) {
        let lanes = (x.len() - c0).min(16);
        let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
        // SAFETY: lanes below `lanes` are inside `x` and `out`; the others are not touched.
        unsafe {
            let y = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x.as_ptr().add(c0)), inv);
            let valid = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y);
            let c = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
            let h = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(c), sign), below_half);
            let r = _mm512_add_ps(c, _mm512_castsi512_ps(h));
            // A NaN gives code 0 (as `quant::code`), 128 as an offset byte.
            let q = _mm512_add_epi32(_mm512_maskz_cvttps_epi32(valid, r), offset);
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(c0) as *mut i8, k, q);
        }
    }
}

/// `out[r][c] = Σ_{p < kp} (x[r·kp + p] - 128) · w(c, p)` for `r < rows`, `c < width`
/// (entries up to the next multiple of 8 past `width` may be written too), where `x` holds
/// offset activation codes and `sums[c] = Σ_p w(c, p)` for the tile's 64 channels.
///
/// # Panics
/// If the CPU lacks the features, `rows` is not in `1..=MAX_R`, `width > TILE`, or a slice is
/// too short.
pub(super) fn dot_tile(
    rows: usize,
    x: &[u8],
    k_tiles: usize,
    w_tiles: &[i8],
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let kp = k_tiles * TILE;
    assert!(available(), "VNNI kernel on a CPU without AVX-512 VNNI");
    assert!((1..=MAX_R).contains(&rows) && width <= TILE && sums.len() >= TILE);
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    let (x, w) = (x.as_ptr(), w_tiles.as_ptr());
    // SAFETY: the features were detected above. The kernels read rows `0..rows` of `x` (`kp`
    // bytes each, inside `x` as asserted) and channels below `width` rounded up to
    // 4 (≤ TILE) of `k_tiles` weight tiles (inside `w_tiles`).
    unsafe {
        match rows {
            1 => tile::<1, 8>(x, kp, w, k_tiles, sums, width, out),
            2 => tile::<2, 8>(x, kp, w, k_tiles, sums, width, out),
            3 => tile::<3, 4>(x, kp, w, k_tiles, sums, width, out),
            _ => tile::<4, 4>(x, kp, w, k_tiles, sums, width, out),
        }
    }
}

/// All channel blocks of one tile.
///
/// # Safety
/// AVX-512F/BW/VNNI available; `x` readable for `R · kp` bytes, `w` for `k_tiles` tiles,
/// `width <= TILE`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const C: usize>(
    x: *const u8,
    kp: usize,
    w: *const i8,
    k_tiles: usize,
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let mut acc = [0i32; 16];
    for c0 in (0..width).step_by(C) {
        // SAFETY: c0 + C <= TILE (C divides TILE, c0 < width <= TILE); the rest is the
        // caller's contract; acc holds 16 ≥ R·C values.
        unsafe { block::<R, C>(x, kp, w, c0, k_tiles, &mut acc) };
        for (r, out) in out.iter_mut().enumerate().take(R) {
            for c in 0..C {
                out[c0 + c] = acc[r * C + c].wrapping_sub(128 * sums[c0 + c]);
            }
        }
    }
}

/// `acc[r·C + c] = Σ_p x[r·kp + p] · w(c0 + c, p)` (unsigned × signed bytes).
///
/// # Safety
/// As [`tile`], with `c0 + C <= TILE`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<const R: usize, const C: usize>(
    x: *const u8,
    kp: usize,
    w: *const i8,
    c0: usize,
    k_tiles: usize,
    acc: &mut [i32; 16],
) {
    let mut s = [[_mm512_setzero_si512(); C]; R];
    for kt in 0..k_tiles {
        let mut wv = [_mm512_setzero_si512(); C];
        for (c, wv) in wv.iter_mut().enumerate() {
            // SAFETY: channel c0 + c < TILE of tile kt < k_tiles: its 64 bytes.
            *wv = unsafe { _mm512_loadu_si512(w.add(kt * TILE_BYTES + (c0 + c) * TILE).cast()) };
        }
        for (r, s) in s.iter_mut().enumerate() {
            // SAFETY: row r < R, bytes kt·64 .. +64 <= kp.
            let xv = unsafe { _mm512_loadu_si512(x.add(r * kp + kt * TILE).cast()) };
            for (s, &wv) in s.iter_mut().zip(&wv) {
                *s = _mm512_dpbusd_epi32(*s, xv, wv);
            }
        }
    }
    // Horizontal sums: each zmm folded to a ymm (one add), then four at a time through a
    // `vphaddd` tree (R·C is a multiple of 4), ~3.5 instructions per sum instead of ~8.
    let mut flat = [_mm256_setzero_si256(); 16];
    for (r, s) in s.iter().enumerate() {
        for (c, &z) in s.iter().enumerate() {
            flat[r * C + c] =
                _mm256_add_epi32(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z));
        }
    }
    for g in (0..R * C).step_by(4) {
        let t = _mm256_hadd_epi32(
            _mm256_hadd_epi32(flat[g], flat[g + 1]),
            _mm256_hadd_epi32(flat[g + 2], flat[g + 3]),
        );
        let sum = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
        // SAFETY: entries g .. g + 4 <= R·C <= 16 of acc.
        unsafe { _mm_storeu_si128(acc.as_mut_ptr().add(g).cast(), sum) };
    }
}
