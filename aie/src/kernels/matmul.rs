//! The INT8 matmul tile and its dequantize / bias / GELU epilogue: the Rust model of
//! `aie/kernels/matmul_i8.cc` (bit for bit, `tests/host_build.rs`).
//!
//! One compute tile owns a 32-row × 64-channel output tile and computes, over the `k_tiles`
//! depth steps of a layer,
//!
//! ```text
//! acc[m, n] = Σ_k a[m, k] · w[n, k]                      (i32, exact)
//! out[m, n] = f(acc[m, n] as f32 · sx[m] · sw[n] + b[n])  (f32, in this order)
//! ```
//!
//! which is `amanuensis_runtime::q8::gemm_q8`'s arithmetic exactly (same rounding order, same
//! GELU), so an NPU matmul gives the CPU INT8 path's bits (tested in `tests/cpu_equivalence.rs`).
//!
//! The epilogue operands travel as one more depth step of each stream (see
//! `crate::program::gemm`): the **row-scale object** is the A object after the last depth step,
//! whose row `m` starts with `sx[m]` as little-endian f32 bytes (the activation image's rows are
//! `k_pad + 64` bytes: codes, then the row's scale, then zeros); the **parameter object** is the
//! W object after the last depth tile of a channel block, whose channel row `n` starts with
//! `sw[n]` then `b[n]` (f32 LE) — a 4 KB "parameter tile" appended to every 64-channel block of
//! the device weight image.

use super::layout::{
    a_offset, c_offset, w_offset, A_BYTES, C_ELEMS, TILE_K, TILE_M, TILE_N, W_BYTES,
};
use super::numerics::gelu;

/// What the epilogue does after the affine dequantization (`Store` = 0, `Gelu` = 1 in C++).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpilogueMode {
    /// `out = r`.
    Store,
    /// `out = gelu(r)`.
    Gelu,
}

impl EpilogueMode {
    /// The integer the C++ kernel takes.
    pub fn code(self) -> i32 {
        match self {
            Self::Store => 0,
            Self::Gelu => 1,
        }
    }
}

/// `acc = 0` (`zero_i32` in C++).
pub fn zero(acc: &mut [i32]) {
    acc[..C_ELEMS].fill(0);
}

/// `acc[m, n] += Σ_k a[m, k] · w[n, k]` over one 64-deep step (`matmul_i8_i32`).
///
/// # Panics
/// If a slice is shorter than its object.
pub fn matmul_i8_i32(a: &[i8], w: &[i8], acc: &mut [i32]) {
    for m in 0..TILE_M {
        for n in 0..TILE_N {
            let mut s = 0i32;
            for k in 0..TILE_K {
                s += a[a_offset(m, k)] as i32 * w[w_offset(n, k)] as i32;
            }
            acc[c_offset(m, n)] += s;
        }
    }
}

/// The sums of [`matmul_i8_i32`] from the objects as the streams deliver them, before the
/// memory tile blocks them: `a` row-major `TILE_M × TILE_K`, `w` a channel-major file tile
/// (`w[n·TILE_K + k]`), as bytes. `acc[m, n] += Σ_k a[m, k] · w[n, k]`: i32 sums of at most
/// 64 products of ±128 are exact, so any order gives the same bits as the blocked kernel
/// (tested). The emulator's array model runs this form: contiguous dot products the host
/// compiler vectorises, the blocking being a permutation the sums do not see.
///
/// # Panics
/// If a slice is shorter than its object.
pub fn matmul_i8_i32_unblocked(a: &[u8], w: &[u8], acc: &mut [i32]) {
    // Widened to i16 once per object, in fixed-size rows: the dot products then compile to
    // multiply-add-pairs (`pmaddwd`) on any x86-64 (products of two i8 fit an i16).
    let mut wt = [[0i16; TILE_K]; TILE_N];
    for (d, s) in wt.iter_mut().zip(w[..W_BYTES].chunks_exact(TILE_K)) {
        for (x, &y) in d.iter_mut().zip(s) {
            *x = i16::from(y as i8);
        }
    }
    let mut ar = [0i16; TILE_K];
    for (m, src) in a[..A_BYTES].chunks_exact(TILE_K).enumerate() {
        // A zero row adds exactly 0: the padding rows of a decoder step's super-block (31 of
        // 32 for one row) cost nothing.
        if src.iter().all(|&b| b == 0) {
            continue;
        }
        for (x, &y) in ar.iter_mut().zip(src) {
            *x = i16::from(y as i8);
        }
        let row = &mut acc[c_offset(m, 0)..c_offset(m, 0) + TILE_N];
        for (o, wr) in row.iter_mut().zip(&wt) {
            *o += dot64(&ar, wr);
        }
    }
}

#[inline(always)]
fn dot64(a: &[i16; TILE_K], b: &[i16; TILE_K]) -> i32 {
    let mut s = 0i32;
    for i in 0..TILE_K {
        s += i32::from(a[i]) * i32::from(b[i]);
    }
    s
}

/// Row scale `sx[m]` stored in a row-scale object.
#[inline]
pub fn row_scale(scales: &[i8], m: usize) -> f32 {
    f32_at(scales, a_offset(m, 0))
}

/// `(sw[n], b[n])` stored in a parameter object.
#[inline]
pub fn channel_params(params: &[i8], n: usize) -> (f32, f32) {
    (
        f32_at(params, w_offset(n, 0)),
        f32_at(params, w_offset(n, 4)),
    )
}

fn f32_at(obj: &[i8], off: usize) -> f32 {
    let b = |i: usize| obj[off + i] as u8;
    f32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// The epilogue (`dequant_bias_act`): `out[m, n] = f(acc as f32 · sx[m] · sw[n] + b[n])`.
pub fn epilogue(acc: &[i32], scales: &[i8], params: &[i8], mode: EpilogueMode, out: &mut [f32]) {
    for m in 0..TILE_M {
        let sx = row_scale(scales, m);
        for n in 0..TILE_N {
            let (sw, b) = channel_params(params, n);
            let r = acc[c_offset(m, n)] as f32 * sx * sw + b;
            out[c_offset(m, n)] = match mode {
                EpilogueMode::Store => r,
                EpilogueMode::Gelu => gelu(r),
            };
        }
    }
}

/// Writes `sx[m]` into row `m` of a row-major 32 × 64 byte block (the host side of the
/// activation image's extra column), leaving the rest of the row zero.
pub fn put_row_scale(row: &mut [i8], scale: f32) {
    row[..TILE_K].fill(0);
    for (d, s) in row.iter_mut().zip(scale.to_le_bytes()) {
        *d = s as i8;
    }
}

/// Writes `(sw, b)` into a channel row of a parameter tile (row-major, 64 bytes a channel).
pub fn put_channel_params(row: &mut [i8], scale: f32, bias: f32) {
    row[..TILE_K].fill(0);
    let bytes = scale.to_le_bytes().into_iter().chain(bias.to_le_bytes());
    for (d, s) in row.iter_mut().zip(bytes) {
        *d = s as i8;
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{block_a, block_w};
    use super::*;

    #[test]
    fn the_unblocked_sums_equal_the_blocked_kernel() {
        let mut seed = 11u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        for case in 0..20 {
            // Random bytes, then the ±128 extremes (-128 included: raw stream bytes).
            let fill = |r: &mut dyn FnMut() -> u8, n: usize| -> Vec<u8> {
                (0..n)
                    .map(|i| match case {
                        18 => 0x80,
                        19 => [0x80u8, 0x7F][i % 2],
                        _ => r(),
                    })
                    .collect()
            };
            let mut a_rm = fill(&mut rnd, A_BYTES);
            // Some all-zero rows (skipped by the unblocked form).
            if case % 3 == 0 {
                a_rm[5 * TILE_K..9 * TILE_K].fill(0);
            }
            let w_rm = fill(&mut rnd, W_BYTES);
            let signed = |v: &[u8]| v.iter().map(|&x| x as i8).collect::<Vec<i8>>();
            let (mut a, mut w) = (vec![0; A_BYTES], vec![0; W_BYTES]);
            block_a(&signed(&a_rm), &mut a);
            block_w(&signed(&w_rm), &mut w);
            let mut want: Vec<i32> = (0..C_ELEMS as i32).collect();
            let mut got = want.clone();
            matmul_i8_i32(&a, &w, &mut want);
            matmul_i8_i32_unblocked(&a_rm, &w_rm, &mut got);
            assert_eq!(got, want, "case {case}");
        }
    }

    #[test]
    fn one_tile_against_a_plain_triple_loop() {
        let mut seed = 7u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 24) as i32 - 128).clamp(-127, 127) as i8
        };
        let a_rm: Vec<i8> = (0..A_BYTES).map(|_| rnd()).collect();
        let w_rm: Vec<i8> = (0..W_BYTES).map(|_| rnd()).collect();
        let (mut a, mut w) = (vec![0; A_BYTES], vec![0; W_BYTES]);
        block_a(&a_rm, &mut a);
        block_w(&w_rm, &mut w);
        let mut acc = vec![5; C_ELEMS];
        zero(&mut acc);
        matmul_i8_i32(&a, &w, &mut acc);
        matmul_i8_i32(&a, &w, &mut acc);
        for m in 0..TILE_M {
            for n in 0..TILE_N {
                let want: i32 = (0..TILE_K)
                    .map(|k| a_rm[m * 64 + k] as i32 * w_rm[n * 64 + k] as i32)
                    .sum();
                assert_eq!(acc[m * 64 + n], 2 * want);
            }
        }
        // Extremes do not overflow: 127·127·64·2 steps.
        let ones = vec![-127i8; A_BYTES];
        let w = vec![-127i8; W_BYTES];
        zero(&mut acc);
        matmul_i8_i32(&ones, &w, &mut acc);
        assert!(acc.iter().all(|&v| v == 127 * 127 * 64));
    }

    #[test]
    fn epilogue_reads_its_operands_where_the_images_put_them() {
        let mut rows = vec![0i8; A_BYTES];
        let mut params = vec![0i8; W_BYTES];
        for m in 0..TILE_M {
            put_row_scale(&mut rows[m * 64..(m + 1) * 64], 0.5 + m as f32);
        }
        for n in 0..TILE_N {
            put_channel_params(
                &mut params[n * 64..(n + 1) * 64],
                2.0 + n as f32,
                -(n as f32),
            );
        }
        let (mut s, mut p) = (vec![0; A_BYTES], vec![0; W_BYTES]);
        block_a(&rows, &mut s);
        block_w(&params, &mut p);
        let acc: Vec<i32> = (0..C_ELEMS as i32).collect();
        let mut out = vec![0.0; C_ELEMS];
        epilogue(&acc, &s, &p, EpilogueMode::Store, &mut out);
        for m in 0..TILE_M {
            for n in 0..TILE_N {
                let a = (m * 64 + n) as f32;
                let want = a * (0.5 + m as f32) * (2.0 + n as f32) - n as f32;
                assert_eq!(out[m * 64 + n], want);
            }
        }
        epilogue(&acc, &s, &p, EpilogueMode::Gelu, &mut out);
        assert_eq!(out[64 + 3], gelu(67.0 * 1.5 * 5.0 - 3.0));
    }
}
