//! faster-whisper 1.2.1's `hallucination_silence_threshold` (`transcribe.py`, in
//! `generate_segments` after `add_word_timestamps`; from openai-whisper's `transcribe.py`):
//! with word timestamps, a segment whose words look anomalous (improbable, very short or very
//! long) and that sits between silences longer than the threshold is taken for a
//! hallucination: the window is cut just before it and decoding resumes there, or, when it is
//! the window's first segment after a long leading silence, the whole window is skipped to the
//! start of that segment.
//!
//! Every comparison below is faster-whisper's, on the same f64 values, so the long-form loop
//! takes the same decisions (`tests/hallucination.rs` checks whole transcripts against
//! faster-whisper).

use crate::segment::RawSegment;
use crate::words::Word;

/// faster-whisper's `punctuation` string in `generate_segments`. A word is left out of the
/// anomaly score when its text occurs **as a substring** of this string (Python's
/// `w["word"] not in punctuation` on a `str`): so the empty word and runs such as `".。"` are
/// left out too, while words with Whisper's leading space never are.
pub const PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";

/// Mel frames per second (`frames_per_second` = 16000 // 160); seeks are computed as
/// `round(time · 100)` with ties to even, as Python's `round`.
const FRAMES_PER_SECOND: f64 = 100.0;

/// `word_anomaly_score`: one point for a probability under 0.15, up to two for a word shorter
/// than 0.133 s, and a point per second beyond 2 s.
pub fn word_anomaly_score(word: &Word) -> f64 {
    let duration = word.end - word.start;
    let mut score = 0.0;
    if word.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// `is_segment_anomaly`: over the segment's first 8 non-punctuation words, a summed score of 3
/// or more, or one within 0.01 of the number of words. `None` (no segment) and a segment
/// without words are not anomalies.
pub fn is_segment_anomaly(words: Option<&[Word]>) -> bool {
    let Some(words) = words.filter(|w| !w.is_empty()) else {
        return false;
    };
    let scored: Vec<&Word> = words
        .iter()
        .filter(|w| !PUNCTUATION.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = scored.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= scored.len() as f64
}

/// Where one window stands in the audio, in faster-whisper's variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpan {
    /// `previous_seek`: the window's first mel frame.
    pub seek: usize,
    /// `time_offset`: the window's start, seconds.
    pub time_offset: f64,
    /// `segment_duration`: the window's audio, seconds (30 s but for the last window).
    pub segment_duration: f64,
    /// `window_end_time`: `(seek + 3000) · 0.01`, even past the audio's end.
    pub window_end_time: f64,
    /// `content_frames`: mel frames of the whole audio.
    pub content_frames: usize,
    /// `content_duration`: the whole audio, seconds.
    pub content_duration: f64,
}

/// What the silence-before-hallucination rule decides for one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HallucinationSkip {
    /// Nothing looks like a hallucination: the window's segments and seek stand.
    Keep,
    /// The first segment with words is anomalous and starts more than the threshold after
    /// the window's start: drop the whole window (no segments; the prompt, the reset rule and
    /// the last speech time are untouched) and go on at `seek`.
    SkipWindow { seek: usize },
    /// The segment at `keep` is anomalous between silences: keep the segments before it and
    /// go on at `seek`.
    Truncate { keep: usize, seek: usize },
}

/// Applies faster-whisper's rule to one window's segments (times already moved to their
/// words by word timestamps) and their `words`, given the last speech time before the window
/// (`last_speech_timestamp`) and the silence `threshold` in seconds.
pub fn skip_silence_before_hallucinations(
    threshold: f64,
    segments: &[RawSegment],
    words: &[Vec<Word>],
    last_speech_timestamp: f64,
    span: &WindowSpan,
) -> HallucinationSkip {
    let words_of = |i: usize| words.get(i).map(Vec::as_slice).unwrap_or(&[]);
    let next_words_segment =
        |from: usize| (from..segments.len()).find(|&i| !words_of(i).is_empty());

    // If the first segment might be a hallucination, skip the leading silence.
    if let Some(first) = next_words_segment(0) {
        if is_segment_anomaly(Some(words_of(first))) {
            let gap = segments[first].start - span.time_offset;
            if gap > threshold {
                return HallucinationSkip::SkipWindow {
                    seek: span.seek + round_frames(gap),
                };
            }
        }
    }

    // Skip the silence before any possible hallucination surrounded by silence or by more
    // hallucinations.
    let mut hal_last_end = last_speech_timestamp;
    for (si, segment) in segments.iter().enumerate() {
        if words_of(si).is_empty() {
            continue;
        }
        if is_segment_anomaly(Some(words_of(si))) {
            let next = next_words_segment(si + 1);
            let hal_next_start = match next {
                Some(n) => words_of(n)[0].start,
                None => span.time_offset + span.segment_duration,
            };
            let silence_before = segment.start - hal_last_end > threshold
                || segment.start < threshold
                || segment.start - span.time_offset < 2.0;
            let silence_after = hal_next_start - segment.end > threshold
                || is_segment_anomaly(next.map(words_of))
                || span.window_end_time - segment.end < 2.0;
            if silence_before && silence_after {
                let mut seek = round_frames((span.time_offset + 1.0).max(segment.start));
                if span.content_duration - segment.end < threshold {
                    seek = span.content_frames;
                }
                return HallucinationSkip::Truncate { keep: si, seek };
            }
        }
        hal_last_end = segment.end;
    }
    HallucinationSkip::Keep
}

/// `round(seconds · frames_per_second)`, Python's ties-to-even, as a frame index (a negative
/// time, which the loop never produces, gives 0).
fn round_frames(seconds: f64) -> usize {
    (seconds * FRAMES_PER_SECOND).round_ties_even().max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start: f64, end: f64, probability: f64) -> Word {
        Word {
            start,
            end,
            word: text.to_string(),
            probability,
        }
    }

    /// A plausible word: probable, 0.3 s long.
    fn good(start: f64) -> Word {
        word(" fine", start, start + 0.3, 0.9)
    }

    /// An anomalous word: improbable and 0.02 s long (score 1 + 0.113·15 = 2.695 ≥ 1).
    fn bad(start: f64) -> Word {
        word(" uh", start, start + 0.02, 0.05)
    }

    fn segment(words: &[Word]) -> RawSegment {
        RawSegment {
            start: words.first().map_or(0.0, |w| w.start),
            end: words.last().map_or(0.0, |w| w.end),
            tokens: vec![1],
        }
    }

    fn span(seek: usize) -> WindowSpan {
        let time_offset = seek as f64 * 0.01;
        WindowSpan {
            seek,
            time_offset,
            segment_duration: 30.0,
            window_end_time: time_offset + 30.0,
            content_frames: 10_000,
            content_duration: 100.0,
        }
    }

    #[test]
    fn word_scores_follow_faster_whisper() {
        assert_eq!(word_anomaly_score(&word(" a", 0.0, 0.5, 0.5)), 0.0);
        assert_eq!(word_anomaly_score(&word(" a", 0.0, 0.5, 0.1)), 1.0);
        // 0.033 s short: (0.133 − 0.033)·15 ≈ 1.5.
        let short = word_anomaly_score(&word(" a", 1.0, 1.033, 0.5));
        assert!((short - 1.5).abs() < 1e-9, "{short}");
        // 3.5 s long: 1.5 points.
        assert!((word_anomaly_score(&word(" a", 0.0, 3.5, 0.5)) - 1.5).abs() < 1e-12);
        // Probability exactly 0.15 and duration exactly 0.133 and 2.0 score nothing.
        assert_eq!(word_anomaly_score(&word(" a", 0.0, 0.133, 0.15)), 0.0);
        assert_eq!(word_anomaly_score(&word(" a", 0.0, 2.0, 0.15)), 0.0);
    }

    #[test]
    fn segment_anomaly_uses_eight_non_punctuation_words() {
        assert!(!is_segment_anomaly(None));
        assert!(!is_segment_anomaly(Some(&[])));
        // One bad word among plausible ones: 2.695 < 3 and < 3 words.
        let mixed = [bad(0.0), good(1.0), good(2.0)];
        assert!(!is_segment_anomaly(Some(&mixed)));
        // A lone bad word: its score reaches the word count.
        assert!(is_segment_anomaly(Some(&[bad(0.0)])));
        // Punctuation is left out of the count: with a "." the bad word is one of two words
        // (2.705 ≥ 2)...
        assert!(is_segment_anomaly(Some(&[
            bad(0.0),
            word(".", 0.1, 0.5, 0.9),
            good(2.0)
        ])));
        // ...but " ." (leading space) is not in the string: one of three (2.705 < 3).
        assert!(!is_segment_anomaly(Some(&[
            bad(0.0),
            word(" .", 0.1, 0.5, 0.9),
            good(2.0)
        ])));
        // Python's substring test: "" and ".。" are in the string, ".," is not.
        assert!(PUNCTUATION.contains(""));
        assert!(PUNCTUATION.contains(".。"));
        assert!(!PUNCTUATION.contains(".,"));
        // Only the first 8 words count: 8 plausible words, then bad ones.
        let mut late = vec![good(0.0); 8];
        late.extend([bad(9.0), bad(10.0), bad(11.0), bad(12.0)]);
        assert!(!is_segment_anomaly(Some(&late)));
        // Two bad words score 5.39 ≥ 3 even among many good ones.
        let mut two = vec![bad(0.0), bad(1.0)];
        two.extend(vec![good(2.0); 6]);
        assert!(is_segment_anomaly(Some(&two)));
    }

    #[test]
    fn plausible_speech_is_kept() {
        let words = vec![vec![good(0.5), good(1.0)], vec![good(5.0)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        assert_eq!(
            skip_silence_before_hallucinations(2.0, &segments, &words, 0.0, &span(0)),
            HallucinationSkip::Keep
        );
    }

    #[test]
    fn anomalous_first_segment_after_long_silence_skips_to_it() {
        // Window at 10 s; the first worded segment (after an empty one) starts at 17.255 s.
        let words = vec![vec![], vec![bad(17.255)], vec![good(20.0)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        let got = skip_silence_before_hallucinations(3.0, &segments, &words, 9.0, &span(1000));
        // seek = previous_seek + round(gap · 100), gap = 17.255 − 10 in f64.
        let want = 1000 + ((17.255f64 - 10.0) * 100.0).round_ties_even() as usize;
        assert!((1725..=1726).contains(&want));
        assert_eq!(got, HallucinationSkip::SkipWindow { seek: want });
        // A gap under the threshold does not skip the window; the segment then falls to the
        // second rule: silence before (17.255 − 9 = 8.255 > 8) but not after (20 − 17.275 =
        // 2.725 ≤ 8, the next segment plausible, the window's end far): kept.
        assert_eq!(
            skip_silence_before_hallucinations(8.0, &segments, &words, 9.0, &span(1000)),
            HallucinationSkip::Keep
        );
    }

    #[test]
    fn hallucination_between_silences_truncates_the_window() {
        // Speech until 3.3 s, a bad segment at 8 s, speech again at 15 s.
        let words = vec![vec![good(1.0), good(3.0)], vec![bad(8.0)], vec![good(15.0)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        let got = skip_silence_before_hallucinations(2.0, &segments, &words, 0.0, &span(0));
        assert_eq!(got, HallucinationSkip::Truncate { keep: 1, seek: 800 });
        // With a threshold longer than both silences (4.7 s before, 6.98 s after) it stays.
        assert_eq!(
            skip_silence_before_hallucinations(7.0, &segments, &words, 0.0, &span(0)),
            HallucinationSkip::Keep
        );
        // Followed by another anomaly, silence after is not needed.
        let words = vec![vec![good(1.0), good(3.0)], vec![bad(8.0)], vec![bad(8.5)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        assert_eq!(
            skip_silence_before_hallucinations(2.0, &segments, &words, 0.0, &span(0)),
            HallucinationSkip::Truncate { keep: 1, seek: 800 }
        );
    }

    #[test]
    fn seek_is_at_least_one_second_into_the_window_and_ends_the_audio_near_its_end() {
        // A bad segment right at the window start (silence before: start − offset < 2) with
        // silence after: seek = max(offset + 1, start).
        let words = vec![vec![bad(10.2)], vec![good(20.0)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        assert_eq!(
            skip_silence_before_hallucinations(2.0, &segments, &words, 10.0, &span(1000)),
            HallucinationSkip::Truncate {
                keep: 0,
                seek: 1100
            }
        );
        // The last segment with words, ending within the threshold of the audio's end: seek
        // jumps to the end of the content.
        let mut end = span(7000);
        end.content_frames = 9950;
        end.content_duration = 99.5;
        end.segment_duration = 29.5;
        // Silence after: no next segment and 100 − 98.02 < 2 to the window's end; the audio
        // ends 1.48 s after it, under the threshold.
        let words = vec![vec![good(71.0)], vec![bad(98.0)]];
        let segments: Vec<_> = words.iter().map(|w| segment(w)).collect();
        assert_eq!(
            skip_silence_before_hallucinations(2.0, &segments, &words, 60.0, &end),
            HallucinationSkip::Truncate {
                keep: 1,
                seek: 9950
            }
        );
    }
}
