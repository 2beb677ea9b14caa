//! Softmax and log-softmax over one row, in place, in f32.
//!
//! Both subtract the row maximum first, so no `exp` overflows. Exponentials are f32; the
//! normalising sum is accumulated in f64 (a plain f32 running sum over a 51 864-token
//! vocabulary row was measured 5e-5 off relatively; the f64 adds cost nothing next to `exp`).

/// `row[i] = exp(row[i] - max) / Σ exp(row[j] - max)`. An empty row is left as is.
///
/// A row whose entries are all `-inf` (fully masked) produces NaN, as the math does.
pub fn softmax_in_place(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row_max(row);
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `row[i] = row[i] - max - ln Σ exp(row[j] - max)`. An empty row is left as is.
pub fn log_softmax_in_place(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row_max(row);
    let sum: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
    let shift = max + sum.ln() as f32;
    row.iter_mut().for_each(|x| *x -= shift);
}

/// Maximum of a non-empty row (NaN-ignoring like `f32::max`).
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = l.max(x);
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rest {
        max = max.max(x);
    }
    max
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
