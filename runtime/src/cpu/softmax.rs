//! Softmax and log-softmax over one row, in place, in f32.
//!
//! Both subtract the row maximum first, so every exponent is ≤ 0 and nothing overflows.
//! Exponentials use `exp_nonpositive`, a branch-free polynomial that vectorises (std's `exp`
//! is a libm call per element, the dominant cost of attention softmax); the normalising sum is
//! accumulated in 8 f64 lanes (a plain f32 running sum over a 51 864-token vocabulary row was
//! measured 5e-5 off relatively). On x86-64 with AVX2+FMA the loops are compiled a second time
//! for that ISA and chosen at run time.

use super::gemm_kernels::Isa;

/// `row[i] = exp(row[i] - max) / Σ exp(row[j] - max)`. An empty row is left as is.
///
/// A row whose entries are all `-inf` (fully masked) produces NaN, as the math does.
pub fn softmax_in_place(row: &mut [f32]) {
    match Isa::detect() {
        Isa::Portable => softmax_body(row),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected at run time; the body is safe code.
        Isa::Avx2Fma => unsafe { softmax_avx2(row) },
    }
}

/// `row[i] = row[i] - max - ln Σ exp(row[j] - max)`. An empty row is left as is.
pub fn log_softmax_in_place(row: &mut [f32]) {
    match Isa::detect() {
        Isa::Portable => log_softmax_body(row),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected at run time; the body is safe code.
        Isa::Avx2Fma => unsafe { log_softmax_avx2(row) },
    }
}

/// `ln Σ exp(row[i])`, vectorised: the f32 exponentials of [`softmax_in_place`] (relative
/// error < 2e-7 each) summed in f64 lanes, so the result is within ~2e-7 of the exact value
/// (the error of a sum of positive terms is at most the largest relative error of a term).
/// −∞ for an empty or all −∞ row.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    match Isa::detect() {
        Isa::Portable => log_sum_exp_body(row),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected at run time; the body is safe code.
        Isa::Avx2Fma => unsafe { log_sum_exp_avx2(row) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn log_sum_exp_avx2(row: &[f32]) -> f64 {
    log_sum_exp_body(row)
}

#[inline(always)]
fn log_sum_exp_body(row: &[f32]) -> f64 {
    let max = row_max(row);
    if max == f32::NEG_INFINITY || row.is_empty() {
        return f64::NEG_INFINITY;
    }
    max as f64 + sum_exp_f64(row, max).ln()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32]) {
    softmax_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn log_softmax_avx2(row: &mut [f32]) {
    log_softmax_body(row)
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row_max(row);
    // Two simple loops vectorise; fusing exp and the f64 sum into one was measured 3.5× slower.
    row.iter_mut().for_each(|x| *x = exp_nonpositive(*x - max));
    let inv = (1.0 / lane_sum_f64(row)) as f32;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[inline(always)]
fn log_softmax_body(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row_max(row);
    let shift = max + sum_exp_f64(row, max).ln() as f32;
    row.iter_mut().for_each(|x| *x -= shift);
}

/// `Σ exp(row[i] - max)` in f64: blocks exponentiated into a stack buffer, then summed (two
/// simple loops vectorise, a fused exp-and-f64-sum loop does not).
#[inline(always)]
fn sum_exp_f64(row: &[f32], max: f32) -> f64 {
    let mut buf = [0.0f32; 256];
    let mut sum = 0.0f64;
    for block in row.chunks(256) {
        let e = &mut buf[..block.len()];
        e.iter_mut()
            .zip(block)
            .for_each(|(e, &x)| *e = exp_nonpositive(x - max));
        sum += lane_sum_f64(e);
    }
    sum
}

/// Sum in 8 f64 lanes (vectorises; exact enough for any row length we meet).
#[inline(always)]
fn lane_sum_f64(row: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x as f64;
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Maximum of a non-empty row (NaN entries are skipped).
#[inline(always)]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            // A plain compare-select compiles to one `maxps`; `f32::max`'s NaN handling
            // costs a compare and blend per vector on a dependency chain.
            *l = if x > *l { x } else { *l };
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rest {
        max = max.max(x);
    }
    max
}

/// `exp(x)` for `x ≤ 0` (NaN in, NaN out), relative error below 3e-7 (≈ 2.5 ulp; tested);
/// `x < -87.3` (results below f32's normal range), including `-inf`, gives exactly 0.
///
/// Cephes `expf`: `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln2 split in two for exactness), a
/// degree-6 polynomial for `e^r`, and `2^n` built from the exponent bits. No branches or libm
/// calls, so loops over it vectorise. Larger `x` than 0 are clamped to 0 (gives 1).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.3;
    let xc = x.clamp(-87.3, 0.0);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // `shifted`'s bits are 0x4B40_0000 + n; `(n + 127) << 23` is 2^n (n ∈ [-126, 0]). Integer
    // ops on the bits, not a float-to-int cast (whose saturation blocks vectorisation).
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    let y = e * scale;
    if underflow {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    fn softmax_f64(row: &[f32]) -> Vec<f64> {
        let max = row
            .iter()
            .map(|&x| x as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    #[test]
    fn log_sum_exp_matches_f64() {
        let mut rng = Rng::new(5);
        for n in [2, 7, 1501, 51_864] {
            let mut row = rng.vec(n, 8.0);
            row[n / 2] = f32::NEG_INFINITY; // a suppressed token
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let want = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let got = log_sum_exp(&row);
            assert!(
                (got - want).abs() <= 2e-7 * want.abs().max(1.0),
                "n={n}: {got} vs {want}"
            );
        }
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
    }

    #[test]
    fn softmax_matches_f64() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 7, 8, 9, 31, 448, 1500, 51_864] {
            let row = rng.vec(n, 8.0);
            let want = softmax_f64(&row);
            let mut got = row.clone();
            softmax_in_place(&mut got);
            // Each output: exp of an argument rounded to f32 (|x - max| ≤ 16: ≤ 16·6e-8
            // relative) plus the final scaling's rounding: 2e-6 relative + 1e-9 absolute.
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    ((*g as f64) - w).abs() <= 2e-6 * w + 1e-9,
                    "n={n}: {g} vs {w}"
                );
            }
            let total: f64 = got.iter().map(|&x| x as f64).sum();
            assert!((total - 1.0).abs() < 1e-5, "n={n}: sum {total}");
        }
    }

    #[test]
    fn exp_nonpositive_matches_f64() {
        let steps = 400_000;
        let mut worst = 0.0f64;
        for i in 0..=steps {
            let x = -87.0 * i as f32 / steps as f32;
            let want = (x as f64).exp();
            let rel = ((exp_nonpositive(x) as f64) - want).abs() / want;
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_handles_large_and_masked_values() {
        let mut row = vec![1000.0, 1000.0, f32::NEG_INFINITY, 999.0];
        softmax_in_place(&mut row);
        let e = (-1.0f64).exp();
        let want = [1.0 / (2.0 + e), 1.0 / (2.0 + e), 0.0, e / (2.0 + e)];
        for (g, w) in row.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
    }

    #[test]
    fn log_softmax_matches_f64() {
        let mut rng = Rng::new(2);
        for n in [1, 3, 16, 51_864] {
            let row = rng.vec(n, 20.0);
            let want: Vec<f64> = softmax_f64(&row).iter().map(|p| p.ln()).collect();
            let mut got = row.clone();
            log_softmax_in_place(&mut got);
            // Values are O(40); f32 subtraction rounding ~ 40·6e-8, plus ln(sum) error: 1e-5 abs.
            for (g, w) in got.iter().zip(&want) {
                assert!(((*g as f64) - w).abs() <= 1e-5, "n={n}: {g} vs {w}");
            }
        }
    }
}
