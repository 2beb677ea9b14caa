//! Whisper's timestamp rules (openai `ApplyTimestampRules`, CTranslate2's equivalent), as
//! `docs/whisper.md` states them.

use super::{log_sum_exp, LogitFilter};

/// Forces well-formed `<|t0|> text <|t1|>` pairs with non-decreasing times.
#[derive(Debug, Clone, Copy)]
pub struct TimestampRules {
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`.
    pub timestamp_begin: u32,
    /// The first timestamp may be at most `<|0.00|> + this` (50 = 1.00 s); `None`: no limit.
    pub max_initial_timestamp_index: Option<u32>,
}

fn disable(range: &mut [f32]) {
    range.fill(f32::NEG_INFINITY);
}

impl LogitFilter for TimestampRules {
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let tb = self.timestamp_begin as usize;
        let eot = self.eot as usize;
        let n = logits.len();
        if tb >= n {
            return;
        }
        logits[self.no_timestamps as usize] = f32::NEG_INFINITY;

        if let Some(&last) = sampled.last() {
            let last_was_ts = last as usize >= tb;
            let penultimate_was_ts = sampled.len() < 2 || sampled[sampled.len() - 2] as usize >= tb;
            if last_was_ts {
                if penultimate_was_ts {
                    disable(&mut logits[tb..]);
                } else {
                    disable(&mut logits[..eot]);
                }
            }
            // Timestamps never go back: not before the latest one (nor equal to it, unless it
            // closes a segment and the next one opens at the same time).
            if let Some(&latest) = sampled.iter().rev().find(|&&t| t as usize >= tb) {
                let end = if last_was_ts && !penultimate_was_ts {
                    latest
                } else {
                    latest + 1
                };
                disable(&mut logits[tb..(end as usize).min(n)]);
            }
        } else {
            disable(&mut logits[..tb]);
            if let Some(max) = self.max_initial_timestamp_index {
                let first_disabled = (tb + max as usize + 1).min(n);
                disable(&mut logits[first_disabled..]);
            }
        }

        // If the timestamps together are more probable than any single text token, sample a
        // timestamp. (log_softmax normalisers cancel on both sides.)
        if logits[tb..].iter().all(|&v| v == f32::NEG_INFINITY) {
            return;
        }
        let ts_lse = log_sum_exp(&logits[tb..]);
        let text_max = logits[..tb]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        if ts_lse > text_max {
            disable(&mut logits[..tb]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A toy vocabulary: 0..5 text, 5 = EOT, 6 = notimestamps, 7.. timestamps (7 = <|0.00|>).
    const EOT: u32 = 5;
    const TB: u32 = 7;
    fn rules() -> TimestampRules {
        TimestampRules {
            eot: EOT,
            no_timestamps: 6,
            timestamp_begin: TB,
            max_initial_timestamp_index: Some(2),
        }
    }
    fn disabled(l: &[f32]) -> Vec<usize> {
        l.iter()
            .enumerate()
            .filter(|(_, v)| **v == f32::NEG_INFINITY)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn first_step_allows_only_early_timestamps() {
        let mut l = vec![0.0f32; 14];
        rules().apply(&mut l, &[]);
        // text, EOT, notimestamps and timestamps after index 2 (ids > 9) are off.
        assert_eq!(disabled(&l), vec![0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13]);
    }

    #[test]
    fn after_text_timestamp_pair_closing_needs_text_or_eot() {
        // <|0.00|> text <|0.04|>: a lone closing timestamp -> only timestamps >= it, or EOT.
        let mut l = vec![0.0f32; 14];
        l[EOT as usize] = 5.0; // EOT likelier than all timestamps together
        rules().apply(&mut l, &[TB, 1, TB + 2]);
        assert_eq!(disabled(&l), vec![0, 1, 2, 3, 4, 6, 7, 8]);
    }

    #[test]
    fn two_timestamps_in_a_row_forbid_a_third() {
        let mut l = vec![0.0f32; 14];
        l[1] = 5.0; // make text clearly best so the probability rule does not fire
        rules().apply(&mut l, &[TB, 1, TB + 2, TB + 2]);
        assert_eq!(disabled(&l), vec![6, 7, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn after_text_timestamps_must_not_go_back() {
        let mut l = vec![0.0f32; 14];
        l[2] = 10.0;
        rules().apply(&mut l, &[TB + 3, 1]);
        assert_eq!(disabled(&l), vec![6, 7, 8, 9, 10]);
    }

    #[test]
    fn probable_timestamps_disable_text() {
        let mut l = vec![0.0f32; 14];
        l[TB as usize + 4] = 3.0;
        l[TB as usize + 5] = 3.0;
        l[1] = 3.5; // text max 3.5 < ln(4 + 2·e³) ≈ 3.79
        rules().apply(&mut l, &[TB, 1]);
        assert!(disabled(&l).contains(&1));
        assert!(disabled(&l).contains(&(EOT as usize)));
    }
}
