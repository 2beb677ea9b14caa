//! Symmetric INT8 quantization: weights per output channel (once, at load) and activations per
//! row (every call).
//!
//! Both use `scale = max|v| / 127` and `q = round_half_away_from_zero(v / scale)` clamped to
//! `[-127, 127]`, so `-128` never occurs (the AVX2 sign trick relies on it). A row that is all
//! zero gets scale 0 and all-zero codes (no division by zero, no NaN).

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::layout::{padded_len, tile_offset};

/// The largest code; `-QMAX..=QMAX` is the code range.
pub const QMAX: f32 = 127.0;

/// The float just below 0.5: `trunc(c + copysign(JUST_UNDER_HALF, c))` is [`code`] for every
/// clamped `c` (the SIMD quantizers round this way; checked on all 2³² floats).
pub(crate) const JUST_UNDER_HALF: f32 = f32::from_bits(0.5f32.to_bits() - 1);

/// Quantizes a row-major f32 weight matrix `[n_out, k]` per output channel into the tile-major
/// layout of [`super::layout`]: returns `(data, scales)` with `data.len() =
/// padded_len(n_out, k)` (zero padding) and `scales.len() = n_out`.
///
/// `scales[r] = max_c |w[r, c]| / 127`; `data[tile_offset(r, c, k)] = round(w[r, c] /
/// scales[r])` (half away from zero, clamped to ±127); an all-zero row has scale 0 and zero
/// codes.
///
/// # Panics
/// If `w.len() != n_out · k` or the padded size overflows.
pub fn quantize_to_tiles(w: &[f32], n_out: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(w.len(), n_out * k, "quantize_to_tiles: w is not n_out·k");
    let len = padded_len(n_out, k).expect("quantize_to_tiles: padded size overflows");
    let mut data = vec![0i8; len];
    let mut scales = Vec::with_capacity(n_out);
    for (r, row) in w.chunks_exact(k.max(1)).take(n_out).enumerate() {
        scales.push(quantize_weight_row(row, r, k, &mut data));
    }
    scales.resize(n_out, 0.0); // k == 0: every row is empty
    (data, scales)
}

/// [`quantize_to_tiles`] of an f16 matrix, each row widened to f32 (exactly) as it is
/// quantized: the codes and scales of the widened matrix, without its copy.
///
/// # Panics
/// If `w.len() != n_out · k` or the padded size overflows.
pub fn quantize_f16_to_tiles(w: &[f16], n_out: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(
        w.len(),
        n_out * k,
        "quantize_f16_to_tiles: w is not n_out·k"
    );
    let len = padded_len(n_out, k).expect("quantize_f16_to_tiles: padded size overflows");
    let mut data = vec![0i8; len];
    let mut scales = Vec::with_capacity(n_out);
    let mut wide = vec![0f32; k];
    for (r, row) in w.chunks_exact(k.max(1)).take(n_out).enumerate() {
        row.convert_to_f32_slice(&mut wide);
        scales.push(quantize_weight_row(&wide, r, k, &mut data));
    }
    scales.resize(n_out, 0.0); // k == 0: every row is empty
    (data, scales)
}

/// Quantizes weight row `r` (`k` values) into its places of the tile-major `data`; returns its
/// scale.
fn quantize_weight_row(row: &[f32], r: usize, k: usize, data: &mut [i8]) -> f32 {
    let scale = max_abs(row) / QMAX;
    for (c, &v) in row.iter().enumerate() {
        data[tile_offset(r, c, k)] = if scale > 0.0 { code(v / scale) } else { 0 };
    }
    scale
}

/// Quantizes one activation row: writes the codes of `x` to `out[..x.len()]`, zeros to the
/// rest of `out`, and returns the row's scale (`max|x| / 127`, 0 for an all-zero row).
///
/// Codes are `round(x · (127 / max|x|))`: a multiply instead of a divide, so it vectorises; the
/// result differs from `round(x / scale)` at most by one code at exact ties, which is within
/// the quantization error anyway. Non-finite inputs are not meaningful here (the f32 path
/// would propagate them; this one yields finite garbage), as for any INT8 runtime.
///
/// # Panics
/// If `out` is shorter than `x`.
#[inline]
pub fn quantize_row(x: &[f32], out: &mut [i8]) -> f32 {
    assert!(out.len() >= x.len(), "quantize_row: out shorter than x");
    let (head, pad) = out.split_at_mut(x.len());
    pad.fill(0);
    match row_scale(max_abs(x)) {
        Some((scale, inv)) => {
            for (o, &v) in head.iter_mut().zip(x) {
                *o = code(v * inv);
            }
            scale
        }
        None => {
            head.fill(0);
            0.0
        }
    }
}

/// `(scale, 1/scale) = (max / 127, 127 / max)` of a row with maximum `max|x|`, or `None` when
/// the row quantizes to zeros (`max` zero or not finite).
#[inline]
pub fn row_scale(max: f32) -> Option<(f32, f32)> {
    (max > 0.0 && max.is_finite()).then(|| (max / QMAX, QMAX / max))
}

/// `round_half_away_from_zero(y)` clamped to `[-127, 127]`, as `i8`.
///
/// Written without `f32::round` (a libm call on baseline x86-64) so loops over it vectorise:
/// truncate, then step away from zero when the dropped fraction is at least one half (the
/// fraction `y - trunc(y)` is exact in f32 for `|y| < 2²³`, and larger values are clamped).
#[inline]
pub fn code(y: f32) -> i8 {
    let y = y.clamp(-QMAX, QMAX); // NaN stays NaN; `as i32` maps it to 0
    let t = y as i32; // truncation toward zero
    let frac = y - t as f32;
    let q = t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32;
    q as i8
}

/// `max |v|` over a slice (0 for an empty one); 8 lanes so it vectorises.
#[inline]
pub fn max_abs(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = l.max(x.abs());
        }
    }
    let mut m = lanes.iter().copied().fold(0.0f32, f32::max);
    for &x in rest {
        m = m.max(x.abs());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::q8::layout::QuantMatrix;

    #[test]
    fn f16_weights_quantize_as_their_widened_values() {
        // Shapes with padding in both dimensions and an all-zero row; values of every f16
        // magnitude (subnormals to 65504) and both signs.
        let mut rng = Rng::new(7);
        for (n_out, k) in [(1, 1), (3, 130), (70, 65), (64, 64)] {
            let mut w: Vec<f16> = (0..n_out * k)
                .map(|_| {
                    // Finite magnitudes, either sign.
                    let r = rng.next_u64();
                    f16::from_bits((r % 0x7c00) as u16 | ((r >> 32) as u16 & 0x8000))
                })
                .collect();
            w[..k].fill(f16::ZERO);
            let wide: Vec<f32> = w.iter().map(|h| h.to_f32()).collect();
            let (data, scales) = quantize_f16_to_tiles(&w, n_out, k);
            let (want_data, want_scales) = quantize_to_tiles(&wide, n_out, k);
            assert_eq!(data, want_data, "{n_out}x{k}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&scales), bits(&want_scales), "{n_out}x{k}");
            assert!(n_out == 1 || scales[1..].iter().any(|&s| s > 0.0));
        }
    }

    fn code_by_adding_just_under_a_half(y: f32) -> i8 {
        if y.is_nan() {
            return 0;
        }
        let c = y.clamp(-QMAX, QMAX);
        (c + JUST_UNDER_HALF.copysign(c)) as i32 as i8
    }

    /// The SIMD quantizers' rounding equals [`code`] on the floats near every tie, every
    /// boundary and the specials (the whole of it, all 2³² floats, under `--ignored`: ~12 s
    /// optimised).
    #[test]
    fn code_by_adding_just_under_a_half_is_code_near_every_tie() {
        let mut ys = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        for n in 0..=128 {
            for base in [n as f32, n as f32 + 0.5, n as f32 + 0.25] {
                for d in -64i32..=64 {
                    let y = f32::from_bits((base.to_bits() as i32 + d).max(0) as u32);
                    ys.extend([y, -y]);
                }
            }
        }
        for e in -30..8 {
            ys.extend([2f32.powi(e), -2f32.powi(e)]);
        }
        for y in ys {
            assert_eq!(
                code_by_adding_just_under_a_half(y),
                code(y),
                "{y} ({:#x})",
                y.to_bits()
            );
        }
    }

    #[test]
    #[ignore = "exhaustive: all 2^32 floats"]
    fn code_by_adding_just_under_a_half_is_code_on_every_float() {
        for bits in 0..=u32::MAX {
            let y = f32::from_bits(bits);
            assert_eq!(code_by_adding_just_under_a_half(y), code(y), "{bits:#x}");
        }
    }

    #[test]
    fn code_rounds_half_away_from_zero_and_clamps() {
        for (y, want) in [
            (0.0, 0),
            (0.49999997, 0),
            (0.5, 1),
            (-0.5, -1),
            (1.5, 2),
            (-1.5, -2),
            (2.5, 3),
            (-2.4999998, -2),
            (126.5, 127),
            (127.4, 127),
            (300.0, 127),
            (-300.0, -127),
            (f32::INFINITY, 127),
            (f32::NEG_INFINITY, -127),
        ] {
            assert_eq!(code(y), want, "code({y})");
        }
        // Agrees with f32::round on a dense sweep (no ties except the exact .5 ones).
        for i in -260_000..=260_000 {
            let y = i as f32 * 0.000_49;
            assert_eq!(code(y) as f32, y.round().clamp(-127.0, 127.0), "{y}");
        }
    }

    #[test]
    fn weight_round_trip_error_is_at_most_half_a_step() {
        let mut rng = Rng::new(11);
        let (n, k) = (37, 150);
        let mut w = rng.vec(n * k, 2.0);
        w[3 * k..4 * k].fill(0.0); // an all-zero row: scale 0, no NaN
        w[5 * k + 7] = 100.0; // an outlier row
        let m = QuantMatrix::quantize(&w, n, k);
        assert_eq!(m.scales()[3], 0.0);
        let mut row = vec![0.0; k];
        for r in 0..n {
            let scale = m.scales()[r];
            m.dequantize_row_into(r, &mut row);
            for c in 0..k {
                assert!(m.get(r, c) != -128);
                // |w/s - q| ≤ 1/2 up to the f32 rounding of w/s (≤ 127·2⁻²⁴ codes) and of
                // q·s (half an ulp of w): bound scale/2·(1 + 1e-5) + 1e-7·|w|.
                let err = (row[c] - w[r * k + c]).abs();
                let tol = scale / 2.0 * (1.0 + 1e-5) + 1e-7 * w[r * k + c].abs();
                assert!(err <= tol, "[{r},{c}] err {err} > {tol} (scale {scale})");
                assert!(row[c].is_finite());
            }
        }
        // The largest |w| of each row maps to ±127 exactly.
        assert_eq!(m.get(5, 7), 127);
    }

    #[test]
    fn activation_rows_quantize_within_half_a_step_and_pad_with_zeros() {
        let mut rng = Rng::new(12);
        let x = rng.vec(100, 3.0);
        let mut q = vec![5i8; 128];
        let scale = quantize_row(&x, &mut q);
        assert_eq!(scale, max_abs(&x) / 127.0);
        for (i, &v) in x.iter().enumerate() {
            let err = (q[i] as f32 * scale - v).abs();
            assert!(err <= scale / 2.0 * (1.0 + 1e-5) + 1e-7 * v.abs(), "{i}");
        }
        assert!(q[100..].iter().all(|&v| v == 0));
        assert!(q.iter().all(|&v| v != -128));
        let mut q = vec![5i8; 4];
        assert_eq!(quantize_row(&[0.0; 3], &mut q), 0.0);
        assert_eq!(q, [0, 0, 0, 0]);
    }
}
