//! Transcript writers: the console view, txt, srt, vtt and json.

use std::fmt::Write;

use amanuensis_model::session::Transcript;

/// How a transcript is printed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `[hh:mm:ss.mmm --> hh:mm:ss.mmm]  text`, one segment per line (whisper.cpp's console view).
    Console,
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// Segments with times, tokens and scores.
    Json,
}

impl OutputFormat {
    /// The file extension used with `--output-dir`.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Console | OutputFormat::Txt => "txt",
            OutputFormat::Srt => "srt",
            OutputFormat::Vtt => "vtt",
            OutputFormat::Json => "json",
        }
    }
}

/// `hh:mm:ss{sep}mmm`, rounded to the millisecond.
pub fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

/// Renders `t` of audio file `source` in `format`.
pub fn render(t: &Transcript, format: OutputFormat, source: &str, timestamps: bool) -> String {
    let mut out = String::new();
    match format {
        OutputFormat::Console => {
            for s in &t.segments {
                if timestamps {
                    let _ = writeln!(
                        out,
                        "[{} --> {}]  {}",
                        timestamp(s.start, '.'),
                        timestamp(s.end, '.'),
                        s.text.trim()
                    );
                } else {
                    let _ = writeln!(out, "{}", s.text.trim());
                }
            }
        }
        OutputFormat::Txt => {
            for s in &t.segments {
                let _ = writeln!(out, "{}", s.text.trim());
            }
        }
        OutputFormat::Srt => {
            for (i, s) in t.segments.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}\n{} --> {}\n{}\n",
                    i + 1,
                    timestamp(s.start, ','),
                    timestamp(s.end, ','),
                    s.text.trim()
                );
            }
        }
        OutputFormat::Vtt => {
            out.push_str("WEBVTT\n\n");
            for s in &t.segments {
                let _ = writeln!(
                    out,
                    "{} --> {}\n{}\n",
                    timestamp(s.start, '.'),
                    timestamp(s.end, '.'),
                    s.text.trim()
                );
            }
        }
        OutputFormat::Json => {
            let segments: Vec<serde_json::Value> = t
                .segments
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id, "seek": s.seek, "start": s.start, "end": s.end,
                        "text": s.text, "tokens": s.tokens, "avg_logprob": s.avg_logprob,
                        "no_speech_prob": s.no_speech_prob, "temperature": s.temperature,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "file": source, "duration": t.duration, "text": t.text(), "segments": segments,
            });
            out = serde_json::to_string_pretty(&doc).unwrap_or_default();
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use amanuensis_model::segment::Segment;
    use amanuensis_model::session::Timings;

    fn transcript() -> Transcript {
        let seg = |id, start, end, text: &str| Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.to_string(),
            tokens: vec![1, 2],
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            temperature: 0.0,
        };
        Transcript {
            segments: vec![
                seg(1, 0.0, 2.5, " Hello there."),
                seg(2, 3661.25, 3662.0, " Bye."),
            ],
            duration: 3662.0,
            timings: Timings::default(),
        }
    }

    #[test]
    fn timestamps_format_hours_and_millis() {
        assert_eq!(timestamp(3661.2506, ','), "01:01:01,251");
        assert_eq!(timestamp(0.0, '.'), "00:00:00.000");
    }

    #[test]
    fn srt_vtt_console_and_json() {
        let t = transcript();
        assert_eq!(
            render(&t, OutputFormat::Srt, "a.wav", true),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        assert!(render(&t, OutputFormat::Vtt, "a.wav", true)
            .starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n"));
        assert_eq!(
            render(&t, OutputFormat::Console, "a.wav", true)
                .lines()
                .next()
                .unwrap(),
            "[00:00:00.000 --> 00:00:02.500]  Hello there."
        );
        assert_eq!(
            render(&t, OutputFormat::Txt, "a.wav", true),
            "Hello there.\nBye.\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render(&t, OutputFormat::Json, "a.wav", true)).unwrap();
        assert_eq!(v["text"], "Hello there. Bye.");
        assert_eq!(v["segments"][1]["start"], 3661.25);
    }
}
