//! Hallucination guards beyond faster-whisper's: Whisper writes text where nothing was said
//! (on silence, noise, tones) and gets stuck repeating a phrase. These are pure rules the
//! long-form loop applies; none of them touches a window that holds speech.
//!
//! * [`SpeechGate`]: the speech stretches of the file (Silero VAD with faster-whisper's default
//!   options); a 30 s window with no speech in it is not decoded, and a segment that lies wholly
//!   outside every stretch is dropped. The stretches are padded by 400 ms and bridge silences
//!   under 2 s, so speech always lies inside one.
//! * [`is_digital_silence`]: a window whose samples are all (near) zero, for when no VAD model is
//!   at hand.
//! * [`repetition_cut`]: a window whose text ends in one phrase repeated over and over is cut
//!   after the phrase's first occurrence.

use crate::vad::SpeechChunk;

/// Samples per 10 ms mel frame at 16 kHz.
const SAMPLES_PER_FRAME: usize = 160;
/// Samples per second.
const RATE: f64 = 16_000.0;

/// Where the file has speech, as a gate on windows and segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechGate {
    /// Sorted, non-overlapping, in samples.
    chunks: Vec<SpeechChunk>,
}

impl SpeechGate {
    /// A gate from speech stretches in samples (as `vad::speech_chunks` returns them).
    pub fn new(mut chunks: Vec<SpeechChunk>) -> Self {
        chunks.sort_by_key(|c| c.start);
        Self { chunks }
    }

    /// The speech stretches.
    pub fn chunks(&self) -> &[SpeechChunk] {
        &self.chunks
    }

    /// Whether samples `start..end` overlap any speech stretch.
    pub fn has_speech(&self, start: usize, end: usize) -> bool {
        // The first stretch ending after `start`; it overlaps iff it begins before `end`.
        let i = self.chunks.partition_point(|c| c.end <= start);
        self.chunks.get(i).is_some_and(|c| c.start < end)
    }

    /// Whether the window of `n_frames` mel frames from frame `seek` holds speech.
    pub fn window_has_speech(&self, seek: usize, n_frames: usize) -> bool {
        self.has_speech(
            seek * SAMPLES_PER_FRAME,
            (seek + n_frames) * SAMPLES_PER_FRAME,
        )
    }

    /// Whether the segment `start..end` (seconds) overlaps speech. A zero-length segment is
    /// tested as the 20 ms step at `start`.
    pub fn segment_has_speech(&self, start: f64, end: f64) -> bool {
        let s = (start.max(0.0) * RATE).floor() as usize;
        let e = (end.max(start + 0.02) * RATE).ceil() as usize;
        self.has_speech(s, e)
    }
}

/// Largest |sample| below which a window counts as digital silence (one 16-bit step).
pub const DIGITAL_SILENCE_PEAK: f32 = 1.0 / 32768.0;

/// Whether every sample of `samples` is within one 16-bit step of zero.
pub fn is_digital_silence(samples: &[f32]) -> bool {
    samples.iter().all(|x| x.abs() <= DIGITAL_SILENCE_PEAK)
}

/// Which 10 ms frames (160 samples) of an input are digital silence, built as the samples
/// stream past ([`SilenceMap::push`]), so the digital-silence guard needs no copy of the input:
/// one bit per frame (45 KB per hour).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SilenceMap {
    /// Bit `f` set: frame `f` has a sample louder than [`DIGITAL_SILENCE_PEAK`].
    loud: Vec<u64>,
    samples: usize,
}

impl SilenceMap {
    /// The map of whole `samples`.
    pub fn of(samples: &[f32]) -> Self {
        let mut map = Self::default();
        map.push(samples);
        map
    }

    /// Takes the next samples.
    pub fn push(&mut self, samples: &[f32]) {
        for &x in samples {
            let f = self.samples / SAMPLES_PER_FRAME;
            if f / 64 >= self.loud.len() {
                self.loud.push(0);
            }
            if x.abs() > DIGITAL_SILENCE_PEAK {
                self.loud[f / 64] |= 1 << (f % 64);
            }
            self.samples += 1;
        }
    }

    /// Samples taken.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Whether samples `start..end` are digital silence, judged by whole frames: a frame that
    /// the range touches and that holds a louder sample anywhere counts (so a range is called
    /// silent only if it is; a few samples beside it may keep it).
    pub fn is_silent(&self, start: usize, end: usize) -> bool {
        let end = end.min(self.samples);
        if start >= end {
            return true;
        }
        let (first, last) = (start / SAMPLES_PER_FRAME, (end - 1) / SAMPLES_PER_FRAME);
        (first..=last).all(|f| self.loud[f / 64] & (1 << (f % 64)) == 0)
    }
}

/// Least number of times a phrase must repeat at the end of a window to count as a loop.
pub const MIN_REPEATS: usize = 4;
/// Longest phrase (in text tokens) looked for.
pub const MAX_PHRASE: usize = 32;

/// If the text tokens (those below `timestamp_begin`) of `tokens` end in a phrase of at most
/// [`MAX_PHRASE`] tokens repeated at least [`MIN_REPEATS`] times in a row (timestamps between the
/// repetitions are ignored), the number of tokens to keep: through the phrase's first
/// occurrence in that run and the timestamp right after it, if there is one. `None` when there
/// is no such loop. The shortest repeating phrase is the one found.
pub fn repetition_cut(tokens: &[u32], timestamp_begin: u32) -> Option<usize> {
    let text: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i] < timestamp_begin)
        .collect();
    let n = text.len();
    for p in 1..=MAX_PHRASE.min(n / MIN_REPEATS) {
        // Length of the periodic run (period p) ending at the last text token.
        let mut run = p;
        while run < n && tokens[text[n - 1 - run]] == tokens[text[n - 1 - run + p]] {
            run += 1;
        }
        let repeats = run / p;
        if repeats >= MIN_REPEATS {
            // The run's first whole phrase: text positions n - repeats·p .. + p.
            let first_end = text[n - repeats * p + p - 1] + 1;
            let keep = match tokens.get(first_end) {
                Some(&t) if t >= timestamp_begin => first_end + 1,
                _ => first_end,
            };
            return Some(keep);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 1000;

    #[test]
    fn silence_map_agrees_with_the_sample_check_on_frame_ranges() {
        let mut samples = vec![0f32; 16_000];
        samples[5_000] = 0.01;
        samples[12_345] = -0.2;
        let whole = SilenceMap::of(&samples);
        let mut streamed = SilenceMap::default();
        for block in samples.chunks(777) {
            streamed.push(block);
        }
        assert_eq!(whole, streamed);
        for (a, b) in [
            (0, 4_800),
            (0, 5_120),
            (4_960, 5_120),
            (5_120, 12_320),
            (12_320, 12_480),
        ] {
            assert_eq!(
                whole.is_silent(a, b),
                is_digital_silence(&samples[a..b]),
                "{a}..{b}"
            );
        }
        // Past the end and empty ranges are silent; a range that ends inside a loud frame is not.
        assert!(whole.is_silent(16_000, 32_000));
        assert!(whole.is_silent(100, 100));
        assert!(!whole.is_silent(4_900, 4_961));
        assert!(!SilenceMap::of(&[0.0, 0.5]).is_silent(0, 1));
    }

    #[test]
    fn gate_overlaps() {
        let g = SpeechGate::new(vec![
            SpeechChunk {
                start: 32_000,
                end: 48_000,
            },
            SpeechChunk {
                start: 160_000,
                end: 176_000,
            },
        ]);
        assert!(!g.has_speech(0, 32_000));
        assert!(g.has_speech(0, 32_001));
        assert!(!g.has_speech(48_000, 160_000));
        assert!(g.has_speech(170_000, 300_000));
        assert!(!g.has_speech(176_000, 900_000));
        assert!(g.window_has_speech(0, 3000));
        assert!(!g.window_has_speech(1100, 3000));
        assert!(g.segment_has_speech(2.5, 2.5));
        assert!(!g.segment_has_speech(4.0, 9.0));
        assert!(!SpeechGate::new(Vec::new()).window_has_speech(0, 3000));
    }

    #[test]
    fn digital_silence() {
        assert!(is_digital_silence(&[0.0; 100]));
        assert!(is_digital_silence(&[1.0 / 32768.0, -1.0 / 32768.0]));
        assert!(!is_digital_silence(&[0.0, 0.001]));
    }

    #[test]
    fn loops_are_cut_after_the_first_phrase() {
        // "a b" then "c d" four times, no timestamps: keep "a b c d".
        let t = [1, 2, 3, 4, 3, 4, 3, 4, 3, 4];
        assert_eq!(repetition_cut(&t, TB), Some(4));
        // One token repeated: keep through its first occurrence.
        let t = [7, 5, 5, 5, 5, 5, 5];
        assert_eq!(repetition_cut(&t, TB), Some(2));
        // With timestamps between repetitions: keep the first phrase and its closing timestamp.
        let t = [
            TB,
            9,
            8,
            TB + 50,
            TB + 50,
            9,
            8,
            TB + 100,
            TB + 100,
            9,
            8,
            TB + 150,
            TB + 150,
            9,
            8,
            TB + 200,
        ];
        assert_eq!(repetition_cut(&t, TB), Some(4));
    }

    #[test]
    fn speech_is_not_a_loop() {
        assert_eq!(repetition_cut(&[1, 2, 3, 4, 5, 6, 7, 8], TB), None);
        // Three repetitions are allowed ("no, no, no").
        assert_eq!(repetition_cut(&[1, 2, 2, 2], TB), None);
        // A repeat that does not reach the end is not a loop at the end.
        assert_eq!(repetition_cut(&[5, 5, 5, 5, 5, 1, 2], TB), None);
        assert_eq!(repetition_cut(&[], TB), None);
    }
}
