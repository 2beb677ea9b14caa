//! Test helpers: a tiny deterministic random number generator (no `rand` dependency).

/// xorshift64* generator; good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-scale, scale).
    pub(crate) fn f32(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }

    pub(crate) fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(scale)).collect()
    }

    /// Uniform in lo..=hi.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Exact attention in f64 from the f32 inputs: the reference the f32 kernels' tests hold
/// to their bounds.
pub(crate) fn attention_f64(
    shape: &super::attention::AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f64> {
    let (width, d) = (shape.heads * shape.head_dim, shape.head_dim);
    let mut out = vec![0.0; shape.q_len * width];
    for h in 0..shape.heads {
        for i in 0..shape.q_len {
            let seen = shape.visible(i);
            let s: Vec<f64> = (0..seen)
                .map(|j| {
                    (0..d)
                        .map(|c| q[i * width + h * d + c] as f64 * k[j * width + h * d + c] as f64)
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                out[i * width + h * d + c] = (0..seen)
                    .map(|j| e[j] / z * v[j * width + h * d + c] as f64)
                    .sum();
            }
        }
    }
    out
}
