//! Greedy sampling: argmax of the filtered logits, with its log-probability.

/// The token chosen at one step and its log-probability under the filtered distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GreedyPick {
    pub token: u32,
    pub logprob: f64,
}

/// Index of the largest value (the first one on ties); `None` if all are −∞ or NaN.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v > f32::NEG_INFINITY && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// `ln Σ exp(v)` in f64, stable; −∞ for an empty or all −∞ slice.
pub fn log_sum_exp(values: &[f32]) -> f64 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let m = max as f64;
    let sum: f64 = values.iter().map(|&v| ((v as f64) - m).exp()).sum();
    m + sum.ln()
}

impl GreedyPick {
    /// Picks the argmax of `logits` (already filtered); `None` if every token is disabled.
    ///
    /// The log-probability's normaliser is the runtime's vectorised `log_sum_exp` (f32
    /// exponentials, f64 sum; within ~2e-7 of [`log_sum_exp`], 10× faster over a 51 864-token
    /// vocabulary): it only feeds `avg_logprob`, never the choice of token.
    pub fn pick(logits: &[f32]) -> Option<Self> {
        let i = argmax(logits)?;
        let logprob = logits[i] as f64 - amanuensis_runtime::cpu::log_sum_exp(logits);
        Some(Self {
            token: i as u32,
            logprob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_max_and_its_log_probability() {
        let l = [0.0f32, 2.0, f32::NEG_INFINITY, 1.0];
        let p = GreedyPick::pick(&l).unwrap();
        assert_eq!(p.token, 1);
        let expect = 2.0 - (1.0f64 + 2f64.exp() + 1f64.exp()).ln();
        // f32 exponentials in the normaliser: within 2e-7 relative (see runtime log_sum_exp).
        assert!((p.logprob - expect).abs() < 1e-6);
        assert_eq!(GreedyPick::pick(&[f32::NEG_INFINITY; 3]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    }
}
