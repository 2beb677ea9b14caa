//! Corpus word error rate, computed as ../shared/peers/wer_util.py does (normalise every string
//! with the English normaliser, then total word edits / total reference words), without Python.

use super::english_normalizer::normalize_english;

/// Edit counts of a corpus: the minimum edits per utterance, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WerCounts {
    /// Substitutions + deletions + insertions.
    pub errors: usize,
    /// Words of the normalised references.
    pub ref_words: usize,
}

impl WerCounts {
    /// errors / ref_words in percent (NaN for an empty reference corpus).
    pub fn percent(&self) -> f64 {
        100.0 * self.errors as f64 / self.ref_words as f64
    }
}

/// Minimum number of word substitutions, deletions and insertions turning `reference` into
/// `hypothesis` (Levenshtein distance over words; what jiwer's S + D + I adds up to).
pub fn word_edit_distance(reference: &[&str], hypothesis: &[&str]) -> usize {
    // One row of the DP table: prev[j] = distance(reference[..i], hypothesis[..j]).
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut cur = vec![0usize; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitute = prev[j] + usize::from(r != h);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hypothesis.len()]
}

/// Corpus edit counts after normalising both sides with [`normalize_english`].
pub fn wer_counts(refs: &[String], hyps: &[String]) -> WerCounts {
    assert_eq!(
        refs.len(),
        hyps.len(),
        "WER over {} references but {} hypotheses",
        refs.len(),
        hyps.len()
    );
    let mut counts = WerCounts::default();
    for (r, h) in refs.iter().zip(hyps) {
        let (r, h) = (normalize_english(r), normalize_english(h));
        let r: Vec<&str> = r.split_whitespace().collect();
        let h: Vec<&str> = h.split_whitespace().collect();
        counts.errors += word_edit_distance(&r, &h);
        counts.ref_words += r.len();
    }
    counts
}

/// Corpus WER in percent: total word edits / total reference words, after [`normalize_english`]
/// on every reference and hypothesis (as wer_util.py's corpus_wer with whisper's normaliser).
pub fn wer(refs: &[String], hyps: &[String]) -> f64 {
    wer_counts(refs, hyps).percent()
}
