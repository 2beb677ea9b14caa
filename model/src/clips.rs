//! Which parts of the audio a transcription reads: faster-whisper 1.2.1's `clip_timestamps`
//! (`transcribe.py`, `generate_segments`), `start,end,start,end,…` in seconds; the last end
//! defaults to the end of the audio. Each clip is transcribed as a long file of its own would
//! be (windows of at most 30 s that never cross the clip's end), with the prompt carried from
//! one clip to the next.

/// Mel frames per second (16000 // 160).
const FRAMES_PER_SECOND: f64 = 100.0;

/// Why a clip list is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClipError {
    /// A value that is not a finite number of seconds, 0 or more.
    #[error("clip timestamp {} (`{value}`) is not a number of seconds (finite, 0 or more)", index + 1)]
    NotSeconds { index: usize, value: String },
    /// A value smaller than the one before it: windows are read front to back.
    #[error(
        "clip timestamp {} ({value} s) is before the one ahead of it ({previous} s): clips \
         must be in order and must not overlap",
        index + 1
    )]
    Decreasing {
        index: usize,
        value: f64,
        previous: f64,
    },
}

/// Parses faster-whisper's string form `"0,5.5,10"` (an empty string: the whole audio), and
/// checks the values as [`check`] does.
pub fn parse(text: &str) -> Result<Vec<f64>, ClipError> {
    let values = if text.trim().is_empty() {
        Vec::new()
    } else {
        text.split(',')
            .enumerate()
            .map(|(index, v)| {
                v.trim().parse::<f64>().map_err(|_| ClipError::NotSeconds {
                    index,
                    value: v.to_string(),
                })
            })
            .collect::<Result<Vec<f64>, ClipError>>()?
    };
    check(&values)?;
    Ok(values)
}

/// Every value finite and 0 or more, none smaller than the one before. faster-whisper also
/// accepts clips out of order and goes back for them; our windows are read front to back
/// (`MelWindows`), so such a list is refused instead.
pub fn check(clip_timestamps: &[f64]) -> Result<(), ClipError> {
    let mut previous = 0.0f64;
    for (index, &value) in clip_timestamps.iter().enumerate() {
        if !value.is_finite() || value < 0.0 {
            return Err(ClipError::NotSeconds {
                index,
                value: value.to_string(),
            });
        }
        if value < previous {
            return Err(ClipError::Decreasing {
                index,
                value,
                previous,
            });
        }
        previous = value;
    }
    Ok(())
}

/// The `(start, end)` mel frames of each clip: `round(t · 100)` (ties to even, as Python), an
/// odd count closed by `content_frames`, no values: the whole audio. Ends are not clipped here
/// (the loop clips them to `content_frames`, as faster-whisper does).
pub fn seek_clips(clip_timestamps: &[f64], content_frames: usize) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = clip_timestamps
        .iter()
        .map(|&t| (t * FRAMES_PER_SECOND).round_ties_even().max(0.0) as usize)
        .collect();
    if points.is_empty() {
        points.push(0);
    }
    if points.len() % 2 == 1 {
        points.push(content_frames);
    }
    points.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

/// Where language detection reads (faster-whisper: `int(start · 100)` of the first clip when
/// that is inside the audio, else 0).
pub fn language_detection_seek(clip_timestamps: &[f64], content_frames: usize) -> usize {
    let start = clip_timestamps.first().copied().unwrap_or(0.0);
    let frames = start * FRAMES_PER_SECOND;
    if frames < content_frames as f64 {
        frames as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faster_whisper_strings() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("0"), Ok(vec![0.0]));
        assert_eq!(parse("1.5, 4,10"), Ok(vec![1.5, 4.0, 10.0]));
        assert!(matches!(
            parse("1,x"),
            Err(ClipError::NotSeconds { index: 1, .. })
        ));
        assert!(matches!(
            parse("-1"),
            Err(ClipError::NotSeconds { index: 0, .. })
        ));
        assert!(matches!(
            parse("1,inf"),
            Err(ClipError::NotSeconds { index: 1, .. })
        ));
        assert!(matches!(
            parse("0,5,4,8"),
            Err(ClipError::Decreasing { index: 2, .. })
        ));
        // Touching clips are fine.
        assert_eq!(parse("0,5,5,8"), Ok(vec![0.0, 5.0, 5.0, 8.0]));
        let e = parse("3,2").unwrap_err().to_string();
        assert!(e.contains("clip timestamp 2 (2 s)"), "{e}");
    }

    #[test]
    fn seek_clips_pair_frames_and_close_an_odd_list() {
        assert_eq!(seek_clips(&[], 4000), vec![(0, 4000)]);
        assert_eq!(seek_clips(&[0.0], 4000), vec![(0, 4000)]);
        assert_eq!(seek_clips(&[2.5], 4000), vec![(250, 4000)]);
        assert_eq!(
            seek_clips(&[1.0, 2.0, 30.0], 4000),
            vec![(100, 200), (3000, 4000)]
        );
        // Python's round: 0.125 s · 100 = 12.5 → 12; an end past the audio stays as given.
        assert_eq!(seek_clips(&[0.125, 99.0], 4000), vec![(12, 9900)]);
    }

    #[test]
    fn language_detection_reads_the_first_clip_inside_the_audio() {
        assert_eq!(language_detection_seek(&[], 4000), 0);
        assert_eq!(language_detection_seek(&[12.349, 20.0], 4000), 1234);
        assert_eq!(language_detection_seek(&[45.0], 4000), 0);
    }
}
