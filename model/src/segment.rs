//! Segments: a window's sampled tokens cut at timestamp pairs, and where the next window starts
//! (faster-whisper `_split_segments_by_timestamps`).

/// Seconds per timestamp token step.
pub const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp step (two 10 ms frames per 20 ms).
pub const INPUT_STRIDE: usize = 2;
/// Seconds per mel frame.
pub const TIME_PER_FRAME: f64 = 0.01;

/// A transcribed stretch of audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// 1-based index among the emitted segments.
    pub id: usize,
    /// The window's first mel frame.
    pub seek: usize,
    /// Start time in seconds (not clipped to the audio).
    pub start: f64,
    /// End time in seconds (not clipped to the audio: the last window may end past it).
    pub end: f64,
    /// The decoded text, with Whisper's leading space.
    pub text: String,
    /// The segment's tokens, timestamps included.
    pub tokens: Vec<u32>,
    /// The window's average log-probability.
    pub avg_logprob: f64,
    /// The window's no-speech probability.
    pub no_speech_prob: f64,
    /// The sampling temperature of the window (0 for greedy).
    pub temperature: f64,
    /// With word timestamps on: the segment's words (else empty).
    pub words: Vec<crate::words::Word>,
}

/// One candidate segment before text decoding and filtering.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    pub start: f64,
    pub end: f64,
    pub tokens: Vec<u32>,
}

/// Where a window's tokens cut into segments, and how far `seek` advances.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSplit {
    pub segments: Vec<RawSegment>,
    /// Mel frames to advance `seek` by.
    pub seek_delta: usize,
}

/// Cuts `tokens` (sampled, EOT excluded) of a window starting at `time_offset` seconds and
/// holding `segment_size` real frames.
pub fn split_by_timestamps(
    tokens: &[u32],
    timestamp_begin: u32,
    time_offset: f64,
    segment_size: usize,
) -> WindowSplit {
    let is_ts = |t: u32| t >= timestamp_begin;
    let ts = |t: u32| (t - timestamp_begin) as f64 * TIME_PRECISION;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();

    if consecutive.is_empty() {
        let duration = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&last) if last != timestamp_begin => ts(last),
            _ => segment_size as f64 * TIME_PER_FRAME,
        };
        return WindowSplit {
            segments: vec![RawSegment {
                start: time_offset,
                end: time_offset + duration,
                tokens: tokens.to_vec(),
            }],
            seek_delta: segment_size,
        };
    }

    let mut cuts = consecutive;
    if single_timestamp_ending {
        cuts.push(n);
    }
    let mut segments = Vec::with_capacity(cuts.len());
    let mut last_cut = 0;
    for &cut in &cuts {
        let piece = &tokens[last_cut..cut];
        segments.push(RawSegment {
            start: time_offset + ts(piece[0]),
            end: time_offset + ts(piece[piece.len() - 1]),
            tokens: piece.to_vec(),
        });
        last_cut = cut;
    }
    let seek_delta = if single_timestamp_ending {
        segment_size
    } else {
        (tokens[last_cut - 1] - timestamp_begin) as usize * INPUT_STRIDE
    };
    WindowSplit {
        segments,
        seek_delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 1000;

    #[test]
    fn pairs_cut_segments_and_seek_to_last_complete_one() {
        // <0.00> a b <1.00><1.00> c <2.00><2.40> d  (ends with text: trailing piece dropped)
        let t = [TB, 1, 2, TB + 50, TB + 50, 3, TB + 100, TB + 120, 4];
        let s = split_by_timestamps(&t, TB, 30.0, 3000);
        assert_eq!(s.segments.len(), 2);
        assert_eq!((s.segments[0].start, s.segments[0].end), (30.0, 31.0));
        assert_eq!(s.segments[1].tokens, vec![TB + 50, 3, TB + 100]);
        assert_eq!(s.seek_delta, 200);
    }

    #[test]
    fn single_timestamp_ending_keeps_last_piece_and_consumes_window() {
        let t = [TB, 1, TB + 50, TB + 50, 3, TB + 100];
        let s = split_by_timestamps(&t, TB, 0.0, 1234);
        assert_eq!(s.segments.len(), 2);
        assert_eq!(s.segments[1].end, 2.0);
        assert_eq!(s.seek_delta, 1234);
    }

    #[test]
    fn no_pair_is_one_segment() {
        let s = split_by_timestamps(&[TB, 1, 2, TB + 10], TB, 5.0, 800);
        assert_eq!(s.segments.len(), 1);
        assert!((s.segments[0].end - 5.2).abs() < 1e-12);
        assert_eq!(s.seek_delta, 800);
        let s = split_by_timestamps(&[1, 2], TB, 5.0, 800);
        assert!((s.segments[0].end - 13.0).abs() < 1e-12);
    }
}
