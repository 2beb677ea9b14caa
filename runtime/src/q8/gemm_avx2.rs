//! AVX2 INT8 micro-kernel (x86-64, no VNNI) for [`super::kernels::dot_block`].
//!
//! Per 32-byte chunk and (row, channel) pair, the sign trick:
//! `madd_epi16(maddubs_epi16(sign_epi8(x, x), sign_epi8(w, x)), 1)`: `|x|` as unsigned bytes
//! times `w` with x's sign moved onto it gives `x·w` per byte; `maddubs` sums byte pairs into
//! i16 (at most 2·127² = 32 258, no saturation because codes are never -128), `madd` with ones
//! sums i16 pairs into i32. Accumulators stay in registers for the whole depth; one horizontal
//! sum per (row, channel) at the end.

use super::kernels::{cols_for, MAX_C, MAX_R};
use super::layout::{TILE, TILE_BYTES};
use std::arch::x86_64::*;

/// Safe entry: checks what the kernel reads, then runs it.
///
/// # Panics
/// If AVX2 is not available, `rows` is not in `1..=MAX_R`, the channel block leaves the tile or
/// a slice is too short (the caller, `dot_block`, has already checked the last three).
pub(super) fn dot_block(
    rows: usize,
    x: &[i8],
    k_tiles: usize,
    w_tiles: &[i8],
    c0: usize,
    acc: &mut [i32; MAX_R * MAX_C],
) {
    let kp = k_tiles * TILE;
    assert!(
        is_x86_feature_detected!("avx2"),
        "INT8 AVX2 kernel without AVX2"
    );
    assert!((1..=MAX_R).contains(&rows));
    assert!(c0 + cols_for(rows) <= TILE);
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    let (x, w, acc) = (x.as_ptr(), w_tiles.as_ptr(), acc.as_mut_ptr());
    // SAFETY: AVX2 was detected above. The kernel reads rows `0..rows` of `x` (`kp` bytes
    // each, inside `x` as asserted), channels `c0..c0 + C` (`C = cols_for(rows)`, inside the
    // tile as asserted) of `k_tiles` weight tiles (inside `w_tiles`), and writes `rows · C`
    // rounded up to 4 (≤ 8 ≤ `MAX_R · MAX_C`) entries of `acc`.
    unsafe {
        match rows {
            1 => block::<1, 4>(x, kp, w, c0, k_tiles, acc),
            2 => block::<2, 4>(x, kp, w, c0, k_tiles, acc),
            3 => block::<3, 2>(x, kp, w, c0, k_tiles, acc),
            _ => block::<4, 2>(x, kp, w, c0, k_tiles, acc),
        }
    }
}

/// The register-blocked `R × C` kernel.
///
/// # Safety
/// AVX2 must be available; `x` must be valid for reading `R · kp` bytes, `w` for `k_tiles`
/// tiles of `TILE_BYTES`, `c0 + C <= TILE`, and `acc` for writing 8 values.
#[target_feature(enable = "avx2")]
unsafe fn block<const R: usize, const C: usize>(
    x: *const i8,
    kp: usize,
    w: *const i8,
    c0: usize,
    k_tiles: usize,
    acc: *mut i32,
) {
    let ones = _mm256_set1_epi16(1);
    let mut sums = [[_mm256_setzero_si256(); C]; R];
    for kt in 0..k_tiles {
        for half in 0..2 {
            let mut wv = [_mm256_setzero_si256(); C];
            for (c, wv) in wv.iter_mut().enumerate() {
                // SAFETY: channel c0 + c < TILE of tile kt < k_tiles, bytes half·32..+32 of its
                // 64-byte row: inside the weight tiles (caller contract).
                *wv = unsafe {
                    _mm256_loadu_si256(
                        w.add(kt * TILE_BYTES + (c0 + c) * TILE + half * 32) as *const __m256i
                    )
                };
            }
            for (r, sums) in sums.iter_mut().enumerate() {
                // SAFETY: row r < R, bytes kt·64 + half·32 .. +32 < kp: inside x.
                let xv = unsafe {
                    _mm256_loadu_si256(x.add(r * kp + kt * TILE + half * 32) as *const __m256i)
                };
                let ax = _mm256_sign_epi8(xv, xv);
                for (s, &wv) in sums.iter_mut().zip(&wv) {
                    let sw = _mm256_sign_epi8(wv, xv);
                    let p16 = _mm256_maddubs_epi16(ax, sw);
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p16, ones));
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
    assert!(d % 32 == 0);
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

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}
