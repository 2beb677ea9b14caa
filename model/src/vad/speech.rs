//! From per-chunk speech probabilities to speech stretches, the audio kept, and the map back to
//! the original timeline: faster-whisper 1.2.1's `get_speech_timestamps`, `collect_chunks` and
//! `SpeechTimestampsMap` (vad.py), rule for rule.

use super::silero::{CHUNK, SAMPLE_RATE};

/// faster-whisper's `VadOptions`, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadOptions {
    /// A chunk whose probability is at least this starts (or continues) speech.
    pub threshold: f32,
    /// A chunk below this ends speech (after `min_silence_duration_ms`); `None`:
    /// `max(threshold − 0.15, 0.01)`.
    pub neg_threshold: Option<f32>,
    /// Speech stretches this short or shorter are dropped.
    pub min_speech_duration_ms: u32,
    /// Longer stretches are split (at the last silence over 98 ms if any).
    pub max_speech_duration_s: f64,
    /// Silence needed to end a stretch.
    pub min_silence_duration_ms: u32,
    /// Padding added on each side of every stretch.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

/// A stretch of speech in samples, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechChunk {
    pub start: usize,
    pub end: usize,
}

/// faster-whisper's `get_speech_timestamps` after the model: the speech stretches of audio of
/// `n_samples` samples whose chunk probabilities are `probs`.
pub fn speech_chunks(probs: &[f32], n_samples: usize, opts: &VadOptions) -> Vec<SpeechChunk> {
    let sr = SAMPLE_RATE as f64;
    let window = CHUNK as f64;
    let min_speech = sr * opts.min_speech_duration_ms as f64 / 1000.0;
    let pad = sr * opts.speech_pad_ms as f64 / 1000.0;
    let max_speech = sr * opts.max_speech_duration_s - window - 2.0 * pad;
    let min_silence = sr * opts.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_at_max_speech = sr * 98.0 / 1000.0;
    let threshold = opts.threshold;
    let neg_threshold = opts
        .neg_threshold
        .unwrap_or_else(|| (threshold as f64 - 0.15).max(0.01) as f32);

    let mut triggered = false;
    let mut speeches: Vec<(usize, usize)> = Vec::new();
    // The stretch being built: its start, if any ("current_speech" holds a start).
    let mut current: Option<usize> = None;
    let (mut temp_end, mut prev_end, mut next_start) = (0usize, 0usize, 0usize);

    for (i, &p) in probs.iter().enumerate() {
        let pos = CHUNK * i;
        // numpy ≥ 2 compares a float32 with a Python float in float32 (NEP 50): so do we.
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = pos;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current = Some(pos);
            continue;
        }
        if triggered {
            let start = current.unwrap_or(0);
            if (pos as f64) - (start as f64) > max_speech {
                if prev_end != 0 {
                    speeches.push((start, prev_end));
                    current = None;
                    if next_start < prev_end {
                        triggered = false;
                    } else {
                        current = Some(next_start);
                    }
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                } else {
                    speeches.push((start, pos));
                    current = None;
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    triggered = false;
                    continue;
                }
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = pos;
            }
            if (pos - temp_end) as f64 > min_silence_at_max_speech {
                prev_end = temp_end;
            }
            if ((pos - temp_end) as f64) < min_silence {
                continue;
            }
            if let Some(start) = current.take() {
                if (temp_end as f64 - start as f64) > min_speech {
                    speeches.push((start, temp_end));
                }
            }
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
            continue;
        }
    }
    if let Some(start) = current {
        if (n_samples as f64 - start as f64) > min_speech {
            speeches.push((start, n_samples));
        }
    }

    // Padding: `int(...)` truncates toward zero; every value here is non-negative.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - pad).max(0.0) as usize;
        }
        if i + 1 != n {
            let silence = speeches[i + 1].0 as f64 - speeches[i].1 as f64;
            if silence < 2.0 * pad {
                let half = (silence / 2.0).floor();
                speeches[i].1 = (speeches[i].1 as f64 + half) as usize;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - half).max(0.0) as usize;
            } else {
                speeches[i].1 = (speeches[i].1 as f64 + pad).min(n_samples as f64) as usize;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - pad).max(0.0) as usize;
            }
        } else {
            speeches[i].1 = (speeches[i].1 as f64 + pad).min(n_samples as f64) as usize;
        }
    }
    speeches
        .into_iter()
        .map(|(start, end)| SpeechChunk { start, end })
        .collect()
}

/// The speech stretches of `samples` concatenated (faster-whisper `collect_chunks` with no
/// maximum duration); empty when there is no speech.
pub fn collect_speech(samples: &[f32], chunks: &[SpeechChunk]) -> Vec<f32> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.end - c.start).sum());
    for c in chunks {
        out.extend_from_slice(&samples[c.start.min(samples.len())..c.end.min(samples.len())]);
    }
    out
}

/// Maps times in the concatenated speech back to the original audio (faster-whisper
/// `SpeechTimestampsMap`, time precision 2 decimals).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechMap {
    /// End of each stretch in the concatenated audio, in samples.
    chunk_end_sample: Vec<usize>,
    /// Silence removed before each stretch, in seconds.
    total_silence_before: Vec<f64>,
}

impl SpeechMap {
    /// The map for `chunks` (sorted, non-overlapping, as [`speech_chunks`] returns them).
    pub fn new(chunks: &[SpeechChunk]) -> Self {
        let mut previous_end = 0usize;
        let mut silent = 0usize;
        let mut chunk_end_sample = Vec::with_capacity(chunks.len());
        let mut total_silence_before = Vec::with_capacity(chunks.len());
        for c in chunks {
            silent += c.start - previous_end;
            previous_end = c.end;
            chunk_end_sample.push(c.end - silent);
            total_silence_before.push(silent as f64 / SAMPLE_RATE as f64);
        }
        Self {
            chunk_end_sample,
            total_silence_before,
        }
    }

    /// The original time of `time` seconds of the concatenated audio; `is_end` resolves a time
    /// that falls exactly on a stretch's end to that stretch (a segment end), not the next.
    pub fn original_time(&self, time: f64, is_end: bool) -> f64 {
        if self.chunk_end_sample.is_empty() {
            return time;
        }
        let index = self.chunk_index(time, is_end);
        round2(self.total_silence_before[index] + time)
    }

    /// The original time of `time` within stretch `index` (faster-whisper
    /// `get_original_time(time, chunk_index)`).
    pub fn original_time_in(&self, time: f64, index: usize) -> f64 {
        match self.total_silence_before.get(index) {
            Some(&silence) => round2(silence + time),
            None => time,
        }
    }

    /// The stretch `time` falls in (faster-whisper `get_chunk_index`).
    pub fn chunk_index(&self, time: f64, is_end: bool) -> usize {
        let sample = (time * SAMPLE_RATE as f64) as i64;
        if is_end && sample >= 0 {
            if let Some(i) = self
                .chunk_end_sample
                .iter()
                .position(|&e| e as i64 == sample)
            {
                return i;
            }
        }
        // bisect.bisect (right): the first index whose end is greater than `sample`.
        let i = self
            .chunk_end_sample
            .partition_point(|&e| (e as i64) <= sample);
        i.min(self.chunk_end_sample.len().saturating_sub(1))
    }
}

/// Python's `round(x, 2)` (half to even) as `x · 100` rounded: equal to Python's correctly
/// rounded result except when `x · 100` itself rounds across a tie (|x| < 10⁵ s: a few ulps).
fn round2(x: f64) -> f64 {
    let y = x * 100.0;
    let r = y.round();
    let r = if (y - y.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - y.signum()
    } else {
        r
    };
    r / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(p: &[f32], n: usize, opts: &VadOptions) -> Vec<(usize, usize)> {
        speech_chunks(p, n, opts)
            .into_iter()
            .map(|c| (c.start, c.end))
            .collect()
    }

    #[test]
    fn silence_has_no_speech() {
        assert!(chunks_of(&[0.0; 100], 100 * 512, &VadOptions::default()).is_empty());
    }

    #[test]
    fn one_stretch_is_padded_and_clipped_to_the_audio() {
        // Speech in chunks 10..20 of 100; 2 s of silence (63 chunks) ends it.
        let mut p = vec![0.0f32; 100];
        p[10..20].iter_mut().for_each(|v| *v = 0.9);
        let n = 100 * 512 - 100;
        // start 10·512 − 6400 (pad 400 ms) → 0; end at the first silent chunk 20·512 + 6400.
        assert_eq!(
            chunks_of(&p, n, &VadOptions::default()),
            vec![(0, 20 * 512 + 6400)]
        );
    }

    #[test]
    fn short_silences_do_not_split_and_long_ones_do() {
        let mut p = vec![0.0f32; 400];
        p[10..20].iter_mut().for_each(|v| *v = 0.9);
        p[40..50].iter_mut().for_each(|v| *v = 0.9); // 20 chunks = 0.64 s gap: joined
        p[200..210].iter_mut().for_each(|v| *v = 0.9); // 150 chunks = 4.8 s gap: split
        let n = 400 * 512;
        let got = chunks_of(&p, n, &VadOptions::default());
        assert_eq!(
            got,
            vec![(0, 50 * 512 + 6400), (200 * 512 - 6400, 210 * 512 + 6400)]
        );
    }

    #[test]
    fn close_stretches_split_the_gap_between_them() {
        let opts = VadOptions {
            min_silence_duration_ms: 100,
            ..Default::default()
        };
        let mut p = vec![0.0f32; 100];
        p[10..20].iter_mut().for_each(|v| *v = 0.9);
        p[40..50].iter_mut().for_each(|v| *v = 0.9); // gap 20 chunks = 10240 < 2 · 6400
        let got = chunks_of(&p, 100 * 512, &opts);
        assert_eq!(
            got,
            vec![(0, 20 * 512 + 5120), (40 * 512 - 5120, 50 * 512 + 6400)]
        );
    }

    #[test]
    fn hysteresis_keeps_speech_between_thresholds() {
        // 0.4 is below 0.5 but above neg 0.35: speech continues, never ends.
        let mut p = vec![0.4f32; 200];
        p[0] = 0.9;
        let got = chunks_of(&p, 200 * 512, &VadOptions::default());
        assert_eq!(got, vec![(0, 200 * 512)]);
    }

    #[test]
    fn map_restores_original_times() {
        let chunks = [
            SpeechChunk {
                start: 16000,
                end: 48000,
            },
            SpeechChunk {
                start: 80000,
                end: 96000,
            },
        ];
        let m = SpeechMap::new(&chunks);
        // Concatenated: [0, 2 s) is original [1, 3); [2, 3) is original [5, 6).
        assert_eq!(m.original_time(0.5, false), 1.5);
        assert_eq!(m.original_time(2.0, true), 3.0);
        assert_eq!(m.original_time(2.0, false), 5.0);
        assert_eq!(m.original_time(2.5, false), 5.5);
        assert_eq!(m.original_time(9.0, false), 12.0);
        assert_eq!(collect_speech(&[1.0; 100000], &chunks).len(), 48000);
    }

    #[test]
    fn round2_is_half_even_on_exact_halves() {
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(0.375), 0.38);
        assert_eq!(round2(1.234), 1.23);
    }
}
