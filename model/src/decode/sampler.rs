//! Sampling at a temperature (faster-whisper's fallback at T > 0: CTranslate2's `RandomSampler`
//! with top-k 0): draw from `softmax(logits / T)` over the filtered logits; the returned
//! log-probability is the token's under the untempered filtered distribution
//! (`log_softmax(logits)`), as CTranslate2 scores hypotheses.
//!
//! The random numbers come from a seeded xoshiro256** generator: the same seed gives the same
//! transcript (CTranslate2's own generator is not reproduced; its draws are not comparable).

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            splitmix64(sm)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64's output function of an already advanced state.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sampled token and its log-probability under `log_softmax(logits)` (temperature 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub logprob: f64,
}

/// Draws a token from `softmax(logits / temperature)` (`temperature > 0`); disabled tokens
/// (−∞) are never drawn. `None` if every token is disabled. Allocates nothing.
pub fn sample(logits: &[f32], temperature: f64, rng: &mut Rng) -> Option<SampledToken> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return None;
    }
    let m = max as f64;
    let inv_t = 1.0 / temperature;
    let (mut sum_t, mut sum_1) = (0.0f64, 0.0f64);
    for &l in logits {
        let d = l as f64 - m;
        sum_t += (d * inv_t).exp();
        sum_1 += d.exp();
    }
    let target = rng.next_f64() * sum_t;
    let mut acc = 0.0;
    let mut last_enabled = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l == f32::NEG_INFINITY {
            continue;
        }
        last_enabled = i;
        acc += ((l as f64 - m) * inv_t).exp();
        if acc > target {
            break;
        }
    }
    // Rounding can leave `target` just above the running sum: the last enabled token then.
    let token = last_enabled;
    Some(SampledToken {
        token: token as u32,
        logprob: logits[token] as f64 - m - sum_1.ln(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_and_xoshiro_reference_values() {
        // SplitMix64 from state 0: first output 0xE220A8397B1DCDAF (Vigna's reference code).
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0xE220_A839_7B1D_CDAF);
        // Same seed, same stream; different seeds, different streams.
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xa: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn uniform_floats_fill_the_unit_interval() {
        let mut rng = Rng::new(1);
        let mut bins = [0usize; 10];
        for _ in 0..100_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        for &n in &bins {
            assert!((9_400..10_600).contains(&n), "{bins:?}"); // ±6 σ
        }
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, 1.0, f32::NEG_INFINITY, 2.0];
        for t in [0.5f64, 1.0] {
            let w: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp()).collect();
            let z: f64 = w.iter().sum();
            let mut rng = Rng::new(42);
            let mut counts = [0usize; 4];
            let n = 200_000;
            for _ in 0..n {
                counts[sample(&logits, t, &mut rng).unwrap().token as usize] += 1;
            }
            assert_eq!(counts[2], 0, "a disabled token was drawn");
            for i in [0, 1, 3] {
                let p = w[i] / z;
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                let f = counts[i] as f64 / n as f64;
                assert!((f - p).abs() < 6.0 * sd, "T {t} token {i}: {f} vs {p}");
            }
        }
    }

    #[test]
    fn logprob_is_untempered() {
        let logits = [0.0f32, 1.0, 2.0];
        let mut rng = Rng::new(3);
        let s = sample(&logits, 0.2, &mut rng).unwrap();
        let lse = (1.0f64 + 1f64.exp() + 2f64.exp()).ln();
        assert!((s.logprob - (logits[s.token as usize] as f64 - lse)).abs() < 1e-12);
        assert_eq!(sample(&[f32::NEG_INFINITY; 3], 1.0, &mut rng), None);
    }
}
