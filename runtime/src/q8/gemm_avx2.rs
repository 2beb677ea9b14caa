//! AVX2 INT8 kernels (x86-64, no VNNI): the GEMM micro-kernel behind
//! [`super::kernels::dot_tile`], activation quantization, and attention scores.
//!
//! GEMM: weights stay int8 in memory; each 16-byte weight chunk is sign-extended to i16
//! (`vpmovsxbw`, a shuffle-pipe op, once per channel and reused by every row of the block) and
//! multiplied against i16 activation codes with `vpmaddwd` (16 multiply-adds into 8 i32 lanes;
//! |a·b| ≤ 127², pair sums ≤ 32 258·2, no overflow). Measured on this Zen 3 (L1-resident
//! 4×2 micro-kernels): 103.6 G multiply-adds/s for this form versus 78.8 G for the
//! `vpmaddubsw` sign trick, whose `vpsignb` + `vpmaddubsw` + `vpmaddwd` all compete for the
//! same two vector multiply pipes (1.5 cycles per 32 multiply-adds), while here one
//! `vpmaddwd` per 16 multiply-adds is the only multiply-pipe op.
//!
//! Attention scores (`dot_keys`): the sign trick on int8 Q and K,
//! `madd_epi16(maddubs_epi16(sign_epi8(q, q), sign_epi8(k, q)), 1)`: `|q|` as unsigned bytes
//! times `k` carrying q's sign gives `q·k` per byte; byte pairs sum to at most 2·127² = 32 258
//! (no i16 saturation because codes are never -128); `madd` with ones widens to i32.

use super::kernels::{TileSums, MAX_R};
use super::layout::{TILE, TILE_BYTES};
use super::quant;
use std::arch::x86_64::*;

/// Safe entry of the GEMM micro-kernel over one channel tile (see
/// [`super::kernels::dot_tile`]): checks what the kernels read, then runs them.
///
/// # Panics
/// If AVX2 is not available, `rows` is not in `1..=MAX_R`, `width > TILE` or a slice is too
/// short.
pub(super) fn dot_tile(
    rows: usize,
    x: &[i16],
    k_tiles: usize,
    w_tiles: &[i8],
    width: usize,
    out: &mut TileSums,
) {
    let kp = k_tiles * TILE;
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    assert!((1..=MAX_R).contains(&rows) && width <= TILE);
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    let (x, w) = (x.as_ptr(), w_tiles.as_ptr());
    // SAFETY: AVX2 was detected above. The kernels read rows `0..rows` of `x` (`kp` i16 each,
    // inside `x` as asserted) and channels below `width` rounded up to `C = cols_for(rows)`
    // (≤ TILE, since C divides TILE) of `k_tiles` weight tiles (inside `w_tiles`).
    unsafe {
        match rows {
            1 => tile::<1, 4>(x, kp, w, k_tiles, width, out),
            2 => tile::<2, 4>(x, kp, w, k_tiles, width, out),
            3 => tile::<3, 2>(x, kp, w, k_tiles, width, out),
            _ => tile::<4, 2>(x, kp, w, k_tiles, width, out),
        }
    }
}

/// All channel blocks of one tile, so the per-call checks are paid once per tile.
///
/// # Safety
/// As [`block`] for every `c0 < width` in steps of `C`; `C` divides `TILE`, `width <= TILE`.
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const C: usize>(
    x: *const i16,
    kp: usize,
    w: *const i8,
    k_tiles: usize,
    width: usize,
    out: &mut TileSums,
) {
    let mut acc = [0i32; 8];
    for c0 in (0..width).step_by(C) {
        // SAFETY: c0 + C <= TILE (C divides TILE, c0 < width <= TILE); the rest is the
        // caller's contract; acc holds 8 values.
        unsafe { block::<R, C>(x, kp, w, c0, k_tiles, acc.as_mut_ptr()) };
        for (r, out) in out.iter_mut().enumerate().take(R) {
            out[c0..c0 + C].copy_from_slice(&acc[r * C..(r + 1) * C]);
        }
    }
}

/// The register-blocked `R × C` kernel.
///
/// # Safety
/// AVX2 must be available; `x` must be valid for reading `R · kp` i16, `w` for `k_tiles`
/// tiles of `TILE_BYTES`, `c0 + C <= TILE`, and `acc` for writing 8 values.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block<const R: usize, const C: usize>(
    x: *const i16,
    kp: usize,
    w: *const i8,
    c0: usize,
    k_tiles: usize,
    acc: *mut i32,
) {
    let mut sums = [[_mm256_setzero_si256(); C]; R];
    for kt in 0..k_tiles {
        for part in 0..TILE / 16 {
            let mut wv = [_mm256_setzero_si256(); C];
            for (c, wv) in wv.iter_mut().enumerate() {
                // SAFETY: channel c0 + c < TILE of tile kt < k_tiles, bytes part·16..+16 of its
                // 64-byte row: inside the weight tiles (caller contract).
                *wv = _mm256_cvtepi8_epi16(unsafe {
                    _mm_loadu_si128(
                        w.add(kt * TILE_BYTES + (c0 + c) * TILE + part * 16) as *const __m128i
                    )
                });
            }
            for (r, sums) in sums.iter_mut().enumerate() {
                // SAFETY: row r < R, elements kt·64 + part·16 .. +16 <= kp: inside x.
                let xv = unsafe {
                    _mm256_loadu_si256(x.add(r * kp + kt * TILE + part * 16) as *const __m256i)
                };
                for (s, &wv) in sums.iter_mut().zip(&wv) {
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(xv, wv));
                }
            }
        }
    }
    // Horizontal sums four accumulators at a time (`R·C` is 4, 6 or 8; a partial group is
    // padded with zeros and its extra lanes land in `acc[R·C..8]`, inside the 16 entries).
    let mut flat = [_mm256_setzero_si256(); 8];
    for (r, sums) in sums.iter().enumerate() {
        flat[r * C..(r + 1) * C].copy_from_slice(sums);
    }
    for g in (0..R * C).step_by(4) {
        let s = hsum4(flat[g], flat[g + 1], flat[g + 2], flat[g + 3]);
        // SAFETY: g + 4 <= 8 <= MAX_R·MAX_C entries of acc (caller contract).
        unsafe { _mm_storeu_si128(acc.add(g) as *mut __m128i, s) };
    }
}

/// The lane sums of four vectors, as four i32.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let t = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1))
}

/// Safe entry of [`super::kernels::dot_keys`]: `out[j] = Σ_p q[p] · keys[j·stride + p]`.
///
/// # Panics
/// If AVX2 is missing, `q.len()` is not a multiple of 32 or `keys` is too short.
pub(super) fn dot_keys(q: &[i8], keys: &[i8], stride: usize, out: &mut [i32]) {
    let d = q.len();
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    assert!(d.is_multiple_of(32));
    if out.is_empty() {
        return;
    }
    assert!(keys.len() >= (out.len() - 1) * stride + d);
    // SAFETY: AVX2 detected; key j < out.len() reads keys[j·stride .. j·stride + d], inside
    // `keys` as asserted; q is read for d bytes; out is written for out.len() values.
    unsafe {
        dot_keys_avx2(
            q.as_ptr(),
            d,
            keys.as_ptr(),
            stride,
            out.as_mut_ptr(),
            out.len(),
        )
    }
}

/// Four keys at a time (four accumulators summed horizontally together), then one at a time.
///
/// # Safety
/// AVX2 available; `q` readable for `d` (multiple of 32) bytes, `keys` for
/// `(count - 1)·stride + d` bytes, `out` writable for `count` values.
#[target_feature(enable = "avx2")]
unsafe fn dot_keys_avx2(
    q: *const i8,
    d: usize,
    keys: *const i8,
    stride: usize,
    out: *mut i32,
    count: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut j = 0;
    while j + 4 <= count {
        let mut acc = [_mm256_setzero_si256(); 4];
        for p in (0..d).step_by(32) {
            // SAFETY: p + 32 <= d bytes of q.
            let qv = unsafe { _mm256_loadu_si256(q.add(p) as *const __m256i) };
            let aq = _mm256_sign_epi8(qv, qv);
            for (u, acc) in acc.iter_mut().enumerate() {
                // SAFETY: key j + u < count, bytes p..p + 32 < d of it.
                let kv =
                    unsafe { _mm256_loadu_si256(keys.add((j + u) * stride + p) as *const __m256i) };
                let p16 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(kv, qv));
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p16, ones));
            }
        }
        let s = hsum4(acc[0], acc[1], acc[2], acc[3]);
        // SAFETY: out[j..j + 4] with j + 4 <= count.
        unsafe { _mm_storeu_si128(out.add(j) as *mut __m128i, s) };
        j += 4;
    }
    while j < count {
        let mut acc = _mm256_setzero_si256();
        for p in (0..d).step_by(32) {
            // SAFETY: as above, for key j < count.
            let (qv, kv) = unsafe {
                (
                    _mm256_loadu_si256(q.add(p) as *const __m256i),
                    _mm256_loadu_si256(keys.add(j * stride + p) as *const __m256i),
                )
            };
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(kv, qv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
        }
        // SAFETY: j < count.
        unsafe { *out.add(j) = hsum(acc) };
        j += 1;
    }
}

/// AVX2 form of [`super::kernels::activation_row`], bit-identical to the portable one:
/// `row[..x.len()]` = `quant::code(x · inv)` as i16, the rest of `row` zero.
///
/// # Panics
/// If AVX2 is missing or `row` is shorter than `x`.
pub(super) fn activation_row(x: &[f32], row: &mut [i16]) -> f32 {
    assert!(row.len() >= x.len());
    let Some((scale, inv)) = quant::row_scale(max_abs(x)) else {
        row.fill(0);
        return 0.0;
    };
    codes_i16(x, inv, &mut row[..x.len()]);
    row[x.len()..].fill(0);
    scale
}

/// `max |x[i]|` ignoring NaN (bit-identical to [`quant::max_abs`]).
///
/// # Panics
/// If AVX2 is missing.
pub(super) fn max_abs(x: &[f32]) -> f32 {
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    // SAFETY: AVX2 detected; `max_abs_avx2` reads `x.len()` floats of `x`.
    unsafe { max_abs_avx2(x.as_ptr(), x.len()) }
}

/// `out[i] = quant::code(x[i] · inv)` (bit-identical to the scalar function).
///
/// # Panics
/// If AVX2 is missing or `out.len() != x.len()`.
pub(super) fn codes_i16(x: &[f32], inv: f32, out: &mut [i16]) {
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    assert_eq!(out.len(), x.len());
    let full = x.len() / 16 * 16;
    // SAFETY: AVX2 detected; reads x[..full] and writes out[..full], in bounds.
    unsafe { codes_avx2(x.as_ptr(), full, inv, out.as_mut_ptr()) };
    for (c, &v) in out[full..].iter_mut().zip(&x[full..]) {
        *c = quant::code(v * inv) as i16;
    }
}

/// `max |x[i]|` ignoring NaN, like [`quant::max_abs`] (max is exact, so the order is free).
///
/// # Safety
/// AVX2 available; `x` readable for `len` floats.
#[target_feature(enable = "avx2")]
unsafe fn max_abs_avx2(x: *const f32, len: usize) -> f32 {
    let no_sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len floats.
        let v = _mm256_and_ps(unsafe { _mm256_loadu_ps(x.add(i)) }, no_sign);
        m = _mm256_max_ps(v, m); // a NaN in `v` yields `m` (the second operand)
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: 8 floats into an 8-float array.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let mut max = lanes.iter().copied().fold(0.0f32, f32::max);
    while i < len {
        // SAFETY: i < len.
        max = max.max(unsafe { *x.add(i) }.abs());
        i += 1;
    }
    max
}

/// Codes of 16 floats at a time, exactly as [`quant::code`]: clamp to ±127, then
/// `trunc(c + copysign(0.5⁻, c))` (equal to `code` on every float, see
/// [`quant::JUST_UNDER_HALF`]); NaN gives 0.
///
/// # Safety
/// AVX2 available; `x` readable and `codes` writable for `len` (a multiple of 16) elements.
#[target_feature(enable = "avx2")]
unsafe fn codes_avx2(x: *const f32, len: usize, inv: f32, codes: *mut i16) {
    let inv = _mm256_set1_ps(inv);
    let (lo, hi) = (_mm256_set1_ps(-quant::QMAX), _mm256_set1_ps(quant::QMAX));
    let (sign, below_half) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(quant::JUST_UNDER_HALF));
    let mut i = 0;
    while i < len {
        let mut q = [_mm256_setzero_si256(); 2];
        for (u, q) in q.iter_mut().enumerate() {
            // SAFETY: i + 8u + 8 <= len floats.
            let y = _mm256_mul_ps(unsafe { _mm256_loadu_ps(x.add(i + 8 * u)) }, inv);
            let valid = _mm256_cmp_ps::<_CMP_ORD_Q>(y, y);
            let c = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            let h = _mm256_or_ps(_mm256_and_ps(c, sign), below_half);
            let r = _mm256_and_ps(_mm256_add_ps(c, h), valid);
            *q = _mm256_cvttps_epi32(r);
        }
        // packs interleaves 128-bit lanes: [a0-3 b0-3 | a4-7 b4-7]; restore element order.
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q[0], q[1]));
        // SAFETY: i + 16 <= len i16 of codes.
        unsafe { _mm256_storeu_si256(codes.add(i) as *mut __m256i, packed) };
        i += 16;
    }
}

/// AVX2 form of [`super::kernels::weighted_sum`] for `d % 16 == 0`: 16 columns of up to four
/// rows at a time (eight accumulators), the same multiply-then-add per term as the portable
/// loop, so the results are bit-identical.
///
/// # Panics
/// If AVX2 is missing, `d % 16 != 0`, `rows` is not in `1..=MAX_R` or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(super) fn weighted_sum(
    rows: usize,
    p: &[f32],
    p_stride: usize,
    seen: usize,
    v: &[f32],
    v_stride: usize,
    d: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    assert!(d.is_multiple_of(16) && (1..=MAX_R).contains(&rows));
    assert!(p.len() >= (rows - 1) * p_stride + seen);
    assert!(seen == 0 || v.len() >= (seen - 1) * v_stride + d);
    assert!(out.len() >= (rows - 1) * out_stride + d);
    let (p, v, o) = (p.as_ptr(), v.as_ptr(), out.as_mut_ptr());
    // SAFETY: AVX2 detected; reads p[r·p_stride + j] (r < rows, j < seen), v[j·v_stride + c]
    // (c < d) and writes out[r·out_stride + c], all inside the slices as asserted.
    unsafe {
        match rows {
            1 => weighted::<1>(p, p_stride, seen, v, v_stride, d, o, out_stride),
            2 => weighted::<2>(p, p_stride, seen, v, v_stride, d, o, out_stride),
            3 => weighted::<3>(p, p_stride, seen, v, v_stride, d, o, out_stride),
            _ => weighted::<4>(p, p_stride, seen, v, v_stride, d, o, out_stride),
        }
    }
}

/// # Safety
/// AVX2 available; pointers valid as described in [`weighted_sum`] for `R` rows.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn weighted<const R: usize>(
    p: *const f32,
    p_stride: usize,
    seen: usize,
    v: *const f32,
    v_stride: usize,
    d: usize,
    out: *mut f32,
    out_stride: usize,
) {
    for c0 in (0..d).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for j in 0..seen {
            // SAFETY: key j < seen, columns c0..c0 + 16 <= d.
            let (v0, v1) = unsafe {
                (
                    _mm256_loadu_ps(v.add(j * v_stride + c0)),
                    _mm256_loadu_ps(v.add(j * v_stride + c0 + 8)),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row r < R, key j < seen.
                let pj = _mm256_set1_ps(unsafe { *p.add(r * p_stride + j) });
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(pj, v0));
                acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(pj, v1));
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: row r < R, columns c0..c0 + 16 <= d of its output row.
            unsafe {
                _mm256_storeu_ps(out.add(r * out_stride + c0), acc[0]);
                _mm256_storeu_ps(out.add(r * out_stride + c0 + 8), acc[1]);
            }
        }
    }
}

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}
