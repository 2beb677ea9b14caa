//! 256-bit VNNI INT8 GEMM micro-kernel for CPUs with AVX-VNNI but no AVX-512 (Intel Core 12th
//! generation and later, Intel Atom/E-cores, AMD Zen 5 client parts), selected as
//! [`super::Isa::AvxVnni`].
//!
//! Same contract and arithmetic as the 512-bit kernel (`gemm_vnni.rs`): activations stored as
//! offset bytes `u = q + 128`, `vpdpbusd` sums four u8 × i8 products into each i32 lane
//! without saturation, and `128·Σ w` per channel is subtracted exactly afterwards, so the sums
//! equal the scalar reference bit for bit.
//!
//! The kernel body is written once ([`vnni256_kernel!`]) and instantiated twice:
//! - [`vex`]: `avxvnni` + `avx2`, `_mm256_dpbusd_avx_epi32` (VEX `{vex} vpdpbusd`), the path
//!   for AVX-VNNI CPUs;
//! - [`evex`]: `avx512vnni` + `avx512vl`, `_mm256_dpbusd_epi32` (EVEX encoding, same
//!   semantics on ymm registers), so the very same kernel runs, and is tested, on AVX-512
//!   machines without AVX-VNNI (AMD Zen 4). `AMANUENSIS_Q8_ISA=avxvnni` forces this kernel;
//!   on such a CPU it runs the EVEX twin and says so on stderr.
//!
//! Blocking (16 ymm registers without AVX-512): one k tile is two 32-byte halves per channel;
//! 1 row × 8 channels, 2 × 4, 3 × 4 or 4 × 2 accumulators; weights as memory operands or one
//! register per channel, one activation register. Horizontal sums four at a time (`vphaddd`).

use super::kernels::{TileSums, MAX_R};
use super::layout::{TILE, TILE_BYTES};

/// Which encoding of 256-bit `vpdpbusd` a CPU offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    /// AVX-VNNI (VEX): the native path of AVX-VNNI CPUs.
    Vex,
    /// AVX-512 VNNI + VL (EVEX) on ymm registers: the twin for AVX-512 CPUs.
    Evex,
}

/// Whether this CPU can run the VEX instantiation.
pub(super) fn has_vex() -> bool {
    is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2")
}

/// Whether this CPU can run the EVEX instantiation.
pub(super) fn has_evex() -> bool {
    is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
}

/// The encoding this CPU runs the kernel with (VEX preferred), if any.
pub(super) fn encoding() -> Option<Encoding> {
    if has_vex() {
        Some(Encoding::Vex)
    } else if has_evex() {
        Some(Encoding::Evex)
    } else {
        None
    }
}

/// `out[r][c] = Σ_{p < kp} (x[r·kp + p] - 128) · w(c, p)` for `r < rows`, `c < width`
/// (entries up to the next multiple of 8 past `width` may be written too), where `x` holds
/// offset activation codes and `sums[c] = Σ_p w(c, p)` for the tile's 64 channels; the
/// encoding of [`encoding`].
///
/// # Panics
/// If the CPU has neither encoding, `rows` is not in `1..=MAX_R`, `width > TILE`, or a slice
/// is too short.
pub(super) fn dot_tile(
    rows: usize,
    x: &[u8],
    k_tiles: usize,
    w_tiles: &[i8],
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let enc = encoding().expect("256-bit VNNI kernel on a CPU without AVX-VNNI or AVX-512 VNNI");
    dot_tile_with(enc, rows, x, k_tiles, w_tiles, sums, width, out);
}

/// [`dot_tile`] with a chosen encoding (tests run both where the CPU allows).
///
/// # Panics
/// As [`dot_tile`], and if the CPU lacks `enc`'s features.
#[allow(clippy::too_many_arguments)]
pub(super) fn dot_tile_with(
    enc: Encoding,
    rows: usize,
    x: &[u8],
    k_tiles: usize,
    w_tiles: &[i8],
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let kp = k_tiles * TILE;
    let ok = match enc {
        Encoding::Vex => has_vex(),
        Encoding::Evex => has_evex(),
    };
    assert!(ok, "256-bit VNNI kernel: CPU lacks {enc:?} vpdpbusd");
    assert!((1..=MAX_R).contains(&rows) && width <= TILE && sums.len() >= TILE);
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    let (x, w) = (x.as_ptr(), w_tiles.as_ptr());
    macro_rules! run {
        ($m:ident) => {
            // SAFETY: the encoding's features were checked above. The kernels read rows
            // `0..rows` of `x` (`kp` bytes each, inside `x` as asserted) and channels below
            // `width` rounded up to C (C divides TILE, so ≤ TILE) of `k_tiles` weight tiles
            // (inside `w_tiles`); `sums` has TILE entries.
            unsafe {
                match rows {
                    1 => $m::tile::<1, 8>(x, kp, w, k_tiles, sums, width, out),
                    2 => $m::tile::<2, 4>(x, kp, w, k_tiles, sums, width, out),
                    3 => $m::tile::<3, 4>(x, kp, w, k_tiles, sums, width, out),
                    _ => $m::tile::<4, 2>(x, kp, w, k_tiles, sums, width, out),
                }
            }
        };
    }
    match enc {
        Encoding::Vex => run!(vex),
        Encoding::Evex => run!(evex),
    }
}

/// The kernel body, instantiated per encoding: `$features` are the target features,
/// `$dpbusd` the 256-bit `vpdpbusd` intrinsic of that encoding.
macro_rules! vnni256_kernel {
    ($name:ident, $features:literal, $dpbusd:ident) => {
        pub(super) mod $name {
            use super::super::kernels::TileSums;
            use super::super::layout::{TILE, TILE_BYTES};
            use std::arch::x86_64::*;

            /// All channel blocks of one tile.
            ///
            /// # Safety
            /// The module's target features available; `x` readable for `R · kp` bytes, `w`
            /// for `k_tiles` tiles, `width <= TILE`, `sums.len() >= TILE`; `C` divides TILE and
            /// `R·C <= 16`.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn tile<const R: usize, const C: usize>(
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
                    // SAFETY: c0 + C <= TILE (C divides TILE, c0 < width <= TILE); the rest
                    // is the caller's contract; acc holds 16 ≥ R·C values.
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
            #[target_feature(enable = $features)]
            unsafe fn block<const R: usize, const C: usize>(
                x: *const u8,
                kp: usize,
                w: *const i8,
                c0: usize,
                k_tiles: usize,
                acc: &mut [i32; 16],
            ) {
                let mut s = [[_mm256_setzero_si256(); C]; R];
                for kt in 0..k_tiles {
                    for half in 0..2 {
                        let mut wv = [_mm256_setzero_si256(); C];
                        for (c, wv) in wv.iter_mut().enumerate() {
                            // SAFETY: channel c0 + c < TILE of tile kt < k_tiles, bytes
                            // half·32 .. +32 of its 64-byte row.
                            *wv = unsafe {
                                _mm256_loadu_si256(
                                    w.add(kt * TILE_BYTES + (c0 + c) * TILE + half * 32).cast(),
                                )
                            };
                        }
                        for (r, s) in s.iter_mut().enumerate() {
                            // SAFETY: row r < R, bytes kt·64 + half·32 .. +32 <= kp.
                            let xv = unsafe {
                                _mm256_loadu_si256(x.add(r * kp + kt * TILE + half * 32).cast())
                            };
                            for (s, &wv) in s.iter_mut().zip(&wv) {
                                *s = $dpbusd(*s, xv, wv);
                            }
                        }
                    }
                }
                // Horizontal sums four accumulators at a time (R·C is 8 or 12).
                let mut flat = [_mm256_setzero_si256(); 16];
                for (r, s) in s.iter().enumerate() {
                    flat[r * C..(r + 1) * C].copy_from_slice(s);
                }
                for g in (0..R * C).step_by(4) {
                    let t = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(flat[g], flat[g + 1]),
                        _mm256_hadd_epi32(flat[g + 2], flat[g + 3]),
                    );
                    let sum =
                        _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
                    // SAFETY: entries g .. g + 4 <= 16 of acc (g < R·C <= 16, g % 4 == 0).
                    unsafe { _mm_storeu_si128(acc.as_mut_ptr().add(g).cast(), sum) };
                }
            }
        }
    };
}

vnni256_kernel!(vex, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
vnni256_kernel!(
    evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    /// Both instantiations against the scalar reference (`kernels::dot_tile_u8` on
    /// `Isa::Scalar`), with random and extreme codes; an encoding the CPU lacks is skipped
    /// with a printed reason.
    #[test]
    fn both_encodings_match_the_scalar_reference_bit_for_bit() {
        use super::super::kernels::{dot_tile_u8, Isa};
        let mut ran = 0;
        for (enc, present) in [(Encoding::Vex, has_vex()), (Encoding::Evex, has_evex())] {
            if !present {
                eprintln!("skipped: this CPU lacks the {enc:?} encoding of 256-bit vpdpbusd");
                continue;
            }
            ran += 1;
            let mut rng = Rng::new(31);
            for k_tiles in [1, 2, 7, 24] {
                let kp = k_tiles * TILE;
                for fill in [
                    None,
                    Some((255u8, 127i8)),
                    Some((1, -127)),
                    Some((255, -127)),
                ] {
                    let (x, w): (Vec<u8>, Vec<i8>) = match fill {
                        None => (
                            (0..MAX_R * kp)
                                .map(|_| (rng.next_u64() % 255) as u8 + 1)
                                .collect(),
                            (0..k_tiles * TILE_BYTES)
                                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                                .collect(),
                        ),
                        Some((xv, wv)) => (vec![xv; MAX_R * kp], vec![wv; k_tiles * TILE_BYTES]),
                    };
                    let sums: Vec<i32> = (0..TILE)
                        .map(|c| {
                            (0..kp)
                                .map(|p| w[(p / TILE) * TILE_BYTES + c * TILE + p % TILE] as i32)
                                .sum()
                        })
                        .collect();
                    for rows in 1..=MAX_R {
                        for width in [1, 3, 8, 30, 64] {
                            let mut want = [[0; TILE]; MAX_R];
                            dot_tile_u8(
                                Isa::Scalar,
                                rows,
                                &x,
                                k_tiles,
                                &w,
                                &sums,
                                width,
                                &mut want,
                            );
                            let mut got = [[9; TILE]; MAX_R];
                            dot_tile_with(enc, rows, &x, k_tiles, &w, &sums, width, &mut got);
                            for r in 0..rows {
                                assert_eq!(
                                    got[r][..width],
                                    want[r][..width],
                                    "{enc:?} rows {rows} width {width} k_tiles {k_tiles}"
                                );
                            }
                        }
                    }
                }
            }
        }
        eprintln!("256-bit VNNI encodings tested on this CPU: {ran} of 2");
    }
}
