//! Layer normalisation over the last dimension.

/// `out[r] = (x[r] - mean) / sqrt(var + eps) · gamma + beta` for each of `rows` rows of `dim`.
///
/// Mean and (biased) variance are computed in two passes with f32 accumulation in 8 lanes; the
/// two-pass form avoids the cancellation of `E[x²] - E[x]²`.
///
/// # Panics
/// If `x`/`out` are not `rows·dim` long or `gamma`/`beta` not `dim` long, or `dim == 0`.
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    assert!(dim > 0, "layer_norm: dim must be positive");
    assert_eq!(x.len(), rows * dim, "layer_norm: x length");
    assert_eq!(out.len(), rows * dim, "layer_norm: out length");
    assert_eq!(gamma.len(), dim, "layer_norm: gamma length");
    assert_eq!(beta.len(), dim, "layer_norm: beta length");
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = lane_sum(xr.iter().copied()) / dim as f32;
        let var = lane_sum(xr.iter().map(|&v| (v - mean) * (v - mean))) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &b) in or.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

/// Sum with 8 interleaved accumulators (vectorisable, and more accurate than one running sum).
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (i, v) in values.enumerate() {
        lanes[i % 8] += v;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    #[test]
    fn layer_norm_matches_f64() {
        let mut rng = Rng::new(3);
        for (rows, dim) in [(1, 1), (1, 384), (3, 7), (17, 384), (5, 1536)] {
            // An offset tests the mean removal (cancellation).
            let x: Vec<f32> = rng.vec(rows * dim, 3.0).iter().map(|v| v + 10.0).collect();
            let gamma = rng.vec(dim, 1.0);
            let beta = rng.vec(dim, 1.0);
            let eps = 1e-5;
            let mut out = vec![0.0; rows * dim];
            layer_norm(&x, rows, dim, &gamma, &beta, eps, &mut out);
            for r in 0..rows {
                let xr = &x[r * dim..(r + 1) * dim];
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
                for c in 0..dim {
                    let n = (xr[c] as f64 - mean) / (var + eps as f64).sqrt();
                    let want = n * gamma[c] as f64 + beta[c] as f64;
                    // Inputs ~10 carry 6e-7 absolute rounding; normalised by σ≈1.7 and scaled
                    // by |γ|≤1: 2e-5 absolute covers mean/var accumulation error with margin.
                    let got = out[r * dim + c] as f64;
                    assert!(
                        (got - want).abs() < 2e-5,
                        "{rows}x{dim} [{r},{c}]: {got} {want}"
                    );
                }
            }
        }
    }
}
