//! Transcript writers: the console view, and txt, srt, vtt, tsv and json as openai-whisper's
//! `whisper.utils.get_writer` writes them (byte for byte for txt/srt/vtt/tsv: checked against
//! goldens that `tests/goldens/writers/make_writer_goldens.py` makes with the real package).
//!
//! The line formats are written segment by segment ([`SegmentWriter`]), so a transcript can be
//! printed while it is decided; json is one document per transcript ([`render_json`]).

use std::fmt::Write;

use amanuensis_model::segment::Segment;
use amanuensis_model::session::Transcript;

/// How a transcript is printed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `[hh:mm:ss.mmm --> hh:mm:ss.mmm]  text`, one segment per line (whisper.cpp's console
    /// view); written as txt with `--output-dir`.
    Console,
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// Tab-separated start and end (integer milliseconds) and text.
    Tsv,
    /// OpenAI `verbose_json`: task, language, duration, text, segments with scores.
    Json,
    /// Every file format (txt, vtt, srt, tsv, json); needs `--output-dir`.
    All,
}

/// One concrete format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// See [`OutputFormat::Console`] (`timestamps` false: text only).
    Console {
        /// Print the time range before each line.
        timestamps: bool,
    },
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// Tab-separated start, end (integer milliseconds) and text.
    Tsv,
    /// openai-whisper's verbose_json shape.
    Json,
}

impl FileFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Console { .. } | FileFormat::Txt => "txt",
            FileFormat::Srt => "srt",
            FileFormat::Vtt => "vtt",
            FileFormat::Tsv => "tsv",
            FileFormat::Json => "json",
        }
    }
}

impl OutputFormat {
    /// The formats this choice writes, in openai-whisper's `all` order (txt, vtt, srt, tsv,
    /// json).
    pub fn formats(self, timestamps: bool) -> Vec<FileFormat> {
        match self {
            OutputFormat::Console => vec![FileFormat::Console { timestamps }],
            OutputFormat::Txt => vec![FileFormat::Txt],
            OutputFormat::Srt => vec![FileFormat::Srt],
            OutputFormat::Vtt => vec![FileFormat::Vtt],
            OutputFormat::Tsv => vec![FileFormat::Tsv],
            OutputFormat::Json => vec![FileFormat::Json],
            OutputFormat::All => vec![
                FileFormat::Txt,
                FileFormat::Vtt,
                FileFormat::Srt,
                FileFormat::Tsv,
                FileFormat::Json,
            ],
        }
    }

    /// The file extension used with `--output-dir` (the first format's for `all`).
    pub fn extension(self) -> &'static str {
        self.formats(true)[0].extension()
    }
}

/// openai-whisper's `format_timestamp`: `[hh:]mm:ss{marker}mmm`, milliseconds rounded half to
/// even (Python's `round`), hours shown when asked or nonzero.
pub fn format_timestamp(seconds: f64, always_include_hours: bool, decimal_marker: char) -> String {
    let ms = python_round(seconds.max(0.0) * 1000.0);
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if always_include_hours || h > 0 {
        format!("{h:02}:{m:02}:{s:02}{decimal_marker}{ms:03}")
    } else {
        format!("{m:02}:{s:02}{decimal_marker}{ms:03}")
    }
}

/// `hh:mm:ss{sep}mmm` (the console view's timestamp), rounded as [`format_timestamp`].
pub fn timestamp(seconds: f64, sep: char) -> String {
    format_timestamp(seconds, true, sep)
}

/// Python's `round(x)` for a non-negative float: to the nearest integer, halves to even.
fn python_round(x: f64) -> u64 {
    x.round_ties_even().max(0.0) as u64
}

/// Python's `str.strip()`: Unicode whitespace as `str.isspace` defines it (Rust's `trim` plus
/// the four information separators U+001C..U+001F).
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Writes a line format segment by segment.
#[derive(Debug, Clone)]
pub struct SegmentWriter {
    format: FileFormat,
    count: usize,
}

impl SegmentWriter {
    /// A writer for a line format (`Json` writes nothing here: use [`render_json`]).
    pub fn new(format: FileFormat) -> Self {
        SegmentWriter { format, count: 0 }
    }

    /// What comes before the first segment.
    pub fn header(&self) -> &'static str {
        match self.format {
            FileFormat::Vtt => "WEBVTT\n\n",
            FileFormat::Tsv => "start\tend\ttext\n",
            _ => "",
        }
    }

    /// One segment, as the writer prints it.
    pub fn segment(&mut self, s: &Segment) -> String {
        self.count += 1;
        let text = python_strip(&s.text);
        match self.format {
            FileFormat::Console { timestamps: true } => format!(
                "[{} --> {}]  {text}\n",
                timestamp(s.start, '.'),
                timestamp(s.end, '.')
            ),
            FileFormat::Console { timestamps: false } | FileFormat::Txt => format!("{text}\n"),
            FileFormat::Srt => format!(
                "{}\n{} --> {}\n{}\n\n",
                self.count,
                format_timestamp(s.start, true, ','),
                format_timestamp(s.end, true, ','),
                text.replace("-->", "->")
            ),
            FileFormat::Vtt => format!(
                "{} --> {}\n{}\n\n",
                format_timestamp(s.start, false, '.'),
                format_timestamp(s.end, false, '.'),
                text.replace("-->", "->")
            ),
            FileFormat::Tsv => format!(
                "{}\t{}\t{}\n",
                python_round(1000.0 * s.start),
                python_round(1000.0 * s.end),
                text.replace('\t', " ")
            ),
            FileFormat::Json => String::new(),
        }
    }
}

/// What the json carries besides the segments.
#[derive(Debug, Clone, Default)]
pub struct JsonMeta {
    /// The input's name.
    pub file: String,
    /// `transcribe` or `translate`.
    pub task: String,
    /// The language code used.
    pub language: String,
    /// Its detected probability, when it was detected.
    pub language_probability: Option<f64>,
}

/// The OpenAI `verbose_json` shape on one line (task, language, duration, text, segments with
/// id, seek, start, end, text, tokens, temperature, avg_logprob, compression_ratio,
/// no_speech_prob), plus `file` and `language_probability`.
pub fn render_json(t: &Transcript, meta: &JsonMeta) -> String {
    let segments: Vec<serde_json::Value> = t
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id - 1, "seek": s.seek, "start": s.start, "end": s.end,
                "text": s.text, "tokens": s.tokens, "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": compression_ratio(&s.text),
                "no_speech_prob": s.no_speech_prob,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "file": meta.file, "task": meta.task, "language": meta.language,
        "language_probability": meta.language_probability,
        "duration": t.duration, "text": t.text(), "segments": segments,
    });
    let mut out = doc.to_string();
    out.push('\n');
    out
}

/// `len(text.encode()) / len(zlib.compress(text.encode()))` is what openai reports; without a
/// zlib in the dependency tree this is `null` until the decoder's fallback (which needs the same
/// ratio) provides it.
fn compression_ratio(_text: &str) -> Option<f64> {
    None
}

/// Renders a whole transcript in one format (the line formats via [`SegmentWriter`]).
pub fn render_format(t: &Transcript, format: FileFormat, meta: &JsonMeta) -> String {
    if format == FileFormat::Json {
        return render_json(t, meta);
    }
    let mut writer = SegmentWriter::new(format);
    let mut out = writer.header().to_string();
    for s in &t.segments {
        let _ = write!(out, "{}", writer.segment(s));
    }
    out
}

/// Renders `t` of audio file `source` in `format` (the first format for `all`).
pub fn render(t: &Transcript, format: OutputFormat, source: &str, timestamps: bool) -> String {
    let meta = JsonMeta {
        file: source.to_string(),
        task: "transcribe".into(),
        ..Default::default()
    };
    render_format(t, format.formats(timestamps)[0], &meta)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            words: Vec::new(),
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
    fn timestamps_round_half_to_even_like_python() {
        assert_eq!(format_timestamp(3661.2506, true, ','), "01:01:01,251");
        assert_eq!(format_timestamp(0.0, false, '.'), "00:00.000");
        // 0.0125 * 1000 = 12.5 exactly: Python's round gives 12.
        assert_eq!(format_timestamp(0.0125, false, '.'), "00:00.012");
        assert_eq!(format_timestamp(0.0135, false, '.'), "00:00.014");
        assert_eq!(python_strip("\u{1c} a \u{a0}"), "a");
    }

    #[test]
    fn srt_vtt_console_and_json() {
        let t = transcript();
        assert_eq!(
            render(&t, OutputFormat::Srt, "a.wav", true),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        assert!(render(&t, OutputFormat::Vtt, "a.wav", true)
            .starts_with("WEBVTT\n\n00:00.000 --> 00:02.500\nHello there.\n"));
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
        let json = render(&t, OutputFormat::Json, "a.wav", true);
        assert_eq!(json.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["text"], "Hello there. Bye.");
        assert_eq!(v["segments"][1]["start"], 3661.25);
        assert_eq!(v["segments"][0]["id"], 0);
        assert_eq!(v["task"], "transcribe");
    }
}
