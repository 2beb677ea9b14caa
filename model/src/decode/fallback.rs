//! Temperature fallback as faster-whisper 1.2.1 runs it (`generate_with_fallback`): decode a
//! window at each temperature in turn until the result passes the compression-ratio and
//! log-probability checks (or is judged silence); if none passes, keep the best.
//!
//! The decoding itself is the caller's (a closure per temperature), so this file holds only the
//! rules: which result fails, which to keep, which of `best_of` samples wins.

/// faster-whisper's defaults: temperatures 0, 0.2, …, 1.0.
pub const DEFAULT_TEMPERATURES: [f64; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];

/// The fallback settings (faster-whisper's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackOptions {
    /// Temperatures tried in order; `[0.0]` alone is plain greedy (or beam) decoding, no
    /// fallback.
    pub temperatures: Vec<f64>,
    /// Samples drawn at each temperature above 0; the best by CTranslate2's score (summed
    /// log-probability / length) is the result.
    pub best_of: usize,
    /// A result whose text's gzip compression ratio is above this fails (too repetitive).
    pub compression_ratio_threshold: Option<f64>,
    /// The previous-text prompt is dropped after a window whose final temperature is above
    /// this.
    pub prompt_reset_on_temperature: f64,
    /// Seed of the sampling generator (the same seed gives the same transcript).
    pub seed: u64,
}

impl Default for FallbackOptions {
    fn default() -> Self {
        Self {
            temperatures: DEFAULT_TEMPERATURES.to_vec(),
            best_of: 5,
            compression_ratio_threshold: Some(2.4),
            prompt_reset_on_temperature: 0.5,
            seed: 0,
        }
    }
}

impl FallbackOptions {
    /// No fallback: one pass at temperature 0 (the results of the golden tests).
    pub fn off() -> Self {
        Self {
            temperatures: vec![0.0],
            ..Self::default()
        }
    }
}

/// One decoding of a window with the numbers the rules look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<R> {
    pub result: R,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    /// Of the decoded text, stripped.
    pub compression_ratio: f64,
}

/// The thresholds the rules compare against (`None` disables a check).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub compression_ratio: Option<f64>,
    pub log_prob: Option<f64>,
    pub no_speech: Option<f64>,
}

/// Whether a result fails: too repetitive, or too unlikely, unless it is judged silence
/// (no-speech probability above its threshold and log-probability below its threshold).
pub fn needs_fallback<R>(s: &Scored<R>, th: &Thresholds) -> bool {
    let too_repetitive = th
        .compression_ratio
        .is_some_and(|t| s.compression_ratio > t);
    let too_unlikely = th.log_prob.is_some_and(|t| s.avg_logprob < t);
    let silence = th.no_speech.is_some_and(|t| s.no_speech_prob > t) && too_unlikely;
    (too_repetitive || too_unlikely) && !silence
}

/// Runs `decode(temperature)` for each of `temperatures` until a result passes
/// [`needs_fallback`]; if all fail, keeps the one with the highest average log-probability among
/// those within the compression-ratio threshold (else among all; the first on ties). Returns it
/// with the temperature faster-whisper labels it with: the one it was decoded at if it passed,
/// else the last temperature tried (which drives the prompt reset).
///
/// # Panics
/// If `temperatures` is empty.
pub fn decode_with_fallback<R, E>(
    temperatures: &[f64],
    th: &Thresholds,
    mut decode: impl FnMut(f64) -> Result<Scored<R>, E>,
) -> Result<(Scored<R>, f64), E> {
    assert!(!temperatures.is_empty(), "no temperature to decode at");
    let mut all: Vec<Scored<R>> = Vec::with_capacity(temperatures.len());
    let mut below_cr: Vec<usize> = Vec::new();
    for &t in temperatures {
        let s = decode(t)?;
        if th
            .compression_ratio
            .is_none_or(|c| s.compression_ratio <= c)
        {
            below_cr.push(all.len());
        }
        if !needs_fallback(&s, th) {
            return Ok((s, t));
        }
        all.push(s);
    }
    let candidates: Vec<usize> = if below_cr.is_empty() {
        (0..all.len()).collect()
    } else {
        below_cr
    };
    let mut best = candidates[0];
    for &i in &candidates[1..] {
        if all[i].avg_logprob > all[best].avg_logprob {
            best = i;
        }
    }
    let last = temperatures[temperatures.len() - 1];
    Ok((all.swap_remove(best), last))
}

/// Which of several sampled hypotheses CTranslate2 returns first: the highest summed
/// log-probability divided by `token count ^ length_penalty` (faster-whisper's default 1; EOT
/// not counted, so an empty hypothesis scores −∞ unless the penalty is 0, where `0⁰ = 1`);
/// the first on ties. `None` for no hypotheses.
pub fn best_hypothesis(
    sum_logprob_and_len: impl IntoIterator<Item = (f64, usize)>,
    length_penalty: f64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (sum, len)) in sum_logprob_and_len.into_iter().enumerate() {
        let score = if len == 0 && length_penalty != 0.0 {
            f64::NEG_INFINITY
        } else {
            sum / (len as f64).powf(length_penalty)
        };
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        compression_ratio: Some(2.4),
        log_prob: Some(-1.0),
        no_speech: Some(0.6),
    };

    fn s(avg_logprob: f64, no_speech_prob: f64, compression_ratio: f64) -> Scored<u32> {
        Scored {
            result: 0,
            avg_logprob,
            no_speech_prob,
            compression_ratio,
        }
    }

    #[test]
    fn the_rules() {
        assert!(!needs_fallback(&s(-0.3, 0.1, 1.5), &TH));
        assert!(needs_fallback(&s(-0.3, 0.1, 2.5), &TH), "repetitive");
        assert!(needs_fallback(&s(-1.2, 0.1, 1.5), &TH), "unlikely");
        assert!(!needs_fallback(&s(-1.2, 0.7, 1.5), &TH), "silence");
        assert!(
            !needs_fallback(&s(-1.2, 0.7, 3.0), &TH),
            "silence wins over repetition"
        );
        assert!(
            needs_fallback(&s(-0.5, 0.7, 3.0), &TH),
            "likely text is not silence"
        );
        let off = Thresholds {
            compression_ratio: None,
            log_prob: None,
            no_speech: None,
        };
        assert!(!needs_fallback(&s(-5.0, 0.0, 9.0), &off));
    }

    #[test]
    fn stops_at_the_first_passing_temperature() {
        let mut tried = Vec::new();
        let (r, t) = decode_with_fallback::<u32, ()>(&DEFAULT_TEMPERATURES, &TH, |t| {
            tried.push(t);
            Ok(if t < 0.3 {
                s(-2.0, 0.1, 1.0)
            } else {
                s(-0.5, 0.1, 1.0)
            })
        })
        .unwrap();
        assert_eq!(tried, vec![0.0, 0.2, 0.4]);
        assert_eq!((r.avg_logprob, t), (-0.5, 0.4));
    }

    #[test]
    fn all_failing_keeps_the_best_below_the_ratio_labelled_with_the_last_temperature() {
        let results = [
            s(-1.5, 0.1, 1.0),
            s(-0.2, 0.1, 3.0), // best log-prob but repetitive
            s(-1.1, 0.1, 2.0), // best of those below 2.4
            s(-1.9, 0.1, 1.0),
            s(-1.3, 0.1, 1.0),
            s(-1.4, 0.1, 1.0),
        ];
        let mut i = 0;
        let (r, t) = decode_with_fallback::<u32, ()>(&DEFAULT_TEMPERATURES, &TH, |_| {
            i += 1;
            Ok(results[i - 1].clone())
        })
        .unwrap();
        assert_eq!((r.avg_logprob, t), (-1.1, 1.0));
        // All repetitive: the best of all.
        let (r, _) =
            decode_with_fallback::<u32, ()>(&[0.0, 0.5], &TH, |t| Ok(s(-0.1 - t, 0.1, 3.0)))
                .unwrap();
        assert_eq!(r.avg_logprob, -0.1);
        // Errors stop the loop.
        assert_eq!(
            decode_with_fallback::<u32, &str>(&[0.0], &TH, |_| Err("boom")).unwrap_err(),
            "boom"
        );
    }

    #[test]
    fn temperature_zero_alone_is_one_pass() {
        let mut n = 0;
        let (_, t) = decode_with_fallback::<u32, ()>(&[0.0], &TH, |_| {
            n += 1;
            Ok(s(-3.0, 0.0, 5.0))
        })
        .unwrap();
        assert_eq!((n, t), (1, 0.0));
    }

    #[test]
    fn best_hypothesis_is_by_mean_log_probability() {
        assert_eq!(
            best_hypothesis([(-4.0, 2), (-5.0, 5), (-1.0, 0)], 1.0),
            Some(1)
        );
        assert_eq!(best_hypothesis([(-1.0, 1), (-2.0, 2)], 1.0), Some(0));
        assert_eq!(best_hypothesis(std::iter::empty(), 1.0), None);
        // Length penalty 0: raw sums (the empty one too).
        assert_eq!(
            best_hypothesis([(-4.0, 2), (-5.0, 5), (-1.0, 0)], 0.0),
            Some(2)
        );
        // −7/5 > −4/2 with penalty 1, but −7/√5 < −4/√2 with 0.5.
        assert_eq!(best_hypothesis([(-4.0, 2), (-7.0, 5)], 1.0), Some(1));
        assert_eq!(best_hypothesis([(-4.0, 2), (-7.0, 5)], 0.5), Some(0));
    }
}
