//! `suppress_tokens` (every step) and `suppress_blank` (first sampled step).

use super::LogitFilter;

fn disable(ids: &[u32], logits: &mut [f32]) {
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Disables a fixed set of tokens at every step (config.json `suppress_ids`: the non-speech
/// tokens and the task/special tokens).
pub struct SuppressTokens {
    ids: Vec<u32>,
}

impl SuppressTokens {
    /// Ids outside the vocabulary are ignored when applied.
    pub fn new(ids: Vec<u32>) -> Self {
        Self { ids }
    }
}

impl LogitFilter for SuppressTokens {
    fn apply(&self, logits: &mut [f32], _sampled: &[u32]) {
        disable(&self.ids, logits);
    }
}

/// Disables `suppress_ids_begin` (" " and EOT) at the first sampled step only.
pub struct SuppressBlank {
    ids: Vec<u32>,
}

impl SuppressBlank {
    /// `ids`: config.json `suppress_ids_begin`.
    pub fn new(ids: Vec<u32>) -> Self {
        Self { ids }
    }
}

impl LogitFilter for SuppressBlank {
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        if sampled.is_empty() {
            SuppressTokens {
                ids: self.ids.clone(),
            }
            .apply(logits, sampled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppress_tokens_every_step_blank_only_first() {
        let mut l = vec![0.0f32; 10];
        SuppressTokens::new(vec![1, 3, 99]).apply(&mut l, &[5]);
        assert_eq!(l.iter().filter(|v| v.is_infinite()).count(), 2);
        let blank = SuppressBlank::new(vec![2]);
        let mut l = vec![0.0f32; 10];
        blank.apply(&mut l, &[5]);
        assert!(l.iter().all(|v| v.is_finite()));
        blank.apply(&mut l, &[]);
        assert_eq!(l[2], f32::NEG_INFINITY);
    }
}
