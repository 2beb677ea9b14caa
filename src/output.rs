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

/// How srt and vtt are cut when the segments carry words (openai-whisper's
/// `--highlight_words`, `--max_line_width`, `--max_line_count`, `--max_words_per_line`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubtitleOptions {
    /// Cut srt and vtt by words (openai-whisper does whenever the segments carry words, i.e.
    /// with word timestamps on); otherwise one cue per segment and the rest is ignored.
    pub words: bool,
    /// One cue per word, the text of the whole line with that word underlined (`<u>`).
    pub highlight_words: bool,
    /// Characters per line before a line break (`None`: 1000).
    pub max_line_width: Option<usize>,
    /// Lines per cue; with `max_line_width`, cues no longer follow segments.
    pub max_line_count: Option<usize>,
    /// Words per line (`None`: 1000).
    pub max_words_per_line: Option<usize>,
}

/// One word of a cue being built.
#[derive(Debug, Clone)]
struct CueWord {
    word: String,
    start: f64,
    end: f64,
}

/// openai-whisper's `SubtitlesWriter.iterate_result` over words, fed segment by segment.
#[derive(Debug, Clone)]
struct WordCues {
    opts: SubtitleOptions,
    preserve_segments: bool,
    max_line_width: usize,
    max_words_per_line: usize,
    line_len: usize,
    line_count: usize,
    subtitle: Vec<CueWord>,
    last: Option<f64>,
}

/// Python's `len` of a string: code points.
fn py_len(s: &str) -> usize {
    s.chars().count()
}

impl WordCues {
    fn new(opts: SubtitleOptions) -> Self {
        let nonzero = |v: Option<usize>| v.filter(|&n| n > 0);
        let opts = SubtitleOptions {
            max_line_width: nonzero(opts.max_line_width),
            max_line_count: nonzero(opts.max_line_count),
            max_words_per_line: nonzero(opts.max_words_per_line),
            ..opts
        };
        WordCues {
            preserve_segments: opts.max_line_count.is_none() || opts.max_line_width.is_none(),
            max_line_width: opts.max_line_width.unwrap_or(1000),
            max_words_per_line: opts.max_words_per_line.unwrap_or(1000),
            opts,
            line_len: 0,
            line_count: 1,
            subtitle: Vec::new(),
            last: None,
        }
    }

    /// The cues (subtitles: lists of words) completed by `s`'s words.
    fn segment(&mut self, s: &Segment, done: &mut Vec<Vec<CueWord>>) {
        let words = &s.words;
        let max_wpl = self.max_words_per_line;
        let mut chunk_index = 0;
        let mut words_count = max_wpl;
        while chunk_index < words.len() {
            let remaining = words.len() - chunk_index;
            if max_wpl > remaining {
                words_count = remaining;
            }
            let end = (chunk_index + words_count).min(words.len());
            for (i, w) in words[chunk_index..end].iter().enumerate() {
                let mut timing = CueWord {
                    word: w.word.clone(),
                    start: w.start,
                    end: w.end,
                };
                let last = *self.last.get_or_insert(w.start);
                let long_pause = !self.preserve_segments && timing.start - last > 3.0;
                let has_room = self.line_len + py_len(&timing.word) <= self.max_line_width;
                let seg_break = i == 0 && !self.subtitle.is_empty() && self.preserve_segments;
                if self.line_len > 0 && has_room && !long_pause && !seg_break {
                    self.line_len += py_len(&timing.word);
                } else {
                    timing.word = python_strip(&timing.word).to_string();
                    if (!self.subtitle.is_empty()
                        && self.opts.max_line_count.is_some()
                        && (long_pause || Some(self.line_count) >= self.opts.max_line_count))
                        || seg_break
                    {
                        done.push(std::mem::take(&mut self.subtitle));
                        self.line_count = 1;
                    } else if self.line_len > 0 {
                        self.line_count += 1;
                        timing.word = format!("\n{}", timing.word);
                    }
                    self.line_len = py_len(python_strip(&timing.word));
                }
                self.last = Some(timing.start);
                self.subtitle.push(timing);
            }
            chunk_index += max_wpl;
        }
    }

    fn finish(&mut self, done: &mut Vec<Vec<CueWord>>) {
        if !self.subtitle.is_empty() {
            done.push(std::mem::take(&mut self.subtitle));
        }
    }
}

/// `re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word)`: the word after its leading whitespace
/// underlined (`.` stops at a line feed; `$` may match before a final one).
fn underline(word: &str) -> String {
    let lead_len = word
        .char_indices()
        .find(|&(_, c)| !is_py_space(c))
        .map_or(word.len(), |(i, _)| i);
    let (lead, body) = word.split_at(lead_len);
    let (core, tail) = match body.strip_suffix('\n') {
        Some(core) if !core.contains('\n') => (core, "\n"),
        _ => (body, ""),
    };
    if core.contains('\n') {
        return word.to_string();
    }
    format!("{lead}<u>{core}</u>{tail}")
}

/// Python's `str.isspace` for one character.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Writes a line format segment by segment.
#[derive(Debug, Clone)]
pub struct SegmentWriter {
    format: FileFormat,
    count: usize,
    cues: Option<WordCues>,
}

impl SegmentWriter {
    /// A writer for a line format (`Json` writes nothing here: use [`render_json`]).
    pub fn new(format: FileFormat) -> Self {
        SegmentWriter {
            format,
            count: 0,
            cues: None,
        }
    }

    /// A writer whose srt and vtt follow `subtitles` (words, highlighting, line limits).
    pub fn with_subtitles(format: FileFormat, subtitles: SubtitleOptions) -> Self {
        let words = subtitles.words && matches!(format, FileFormat::Srt | FileFormat::Vtt);
        SegmentWriter {
            format,
            count: 0,
            cues: words.then(|| WordCues::new(subtitles)),
        }
    }

    /// What comes after the last segment (the last word cue, if any).
    pub fn finish(&mut self) -> String {
        let mut done = Vec::new();
        match self.cues.as_mut() {
            Some(c) => c.finish(&mut done),
            None => return String::new(),
        }
        self.render_cues(done)
    }

    fn render_cues(&mut self, cues: Vec<Vec<CueWord>>) -> String {
        let highlight = self.cues.as_ref().is_some_and(|c| c.opts.highlight_words);
        let (hours, marker) = match self.format {
            FileFormat::Srt => (true, ','),
            _ => (false, '.'),
        };
        let ts = |t: f64| format_timestamp(t, hours, marker);
        let mut out = String::new();
        let emit = |out: &mut String, count: &mut usize, start: &str, end: &str, text: &str| {
            *count += 1;
            if self.format == FileFormat::Srt {
                let _ = write!(out, "{count}\n{start} --> {end}\n{text}\n\n");
            } else {
                let _ = write!(out, "{start} --> {end}\n{text}\n\n");
            }
        };
        let mut count = self.count;
        for cue in cues {
            let (Some(first), Some(last_word)) = (cue.first(), cue.last()) else {
                continue;
            };
            let (start, end) = (ts(first.start), ts(last_word.end));
            let text: String = cue.iter().map(|w| w.word.as_str()).collect();
            if !highlight {
                emit(&mut out, &mut count, &start, &end, &text);
                continue;
            }
            let mut last = start;
            for (i, w) in cue.iter().enumerate() {
                let (ws, we) = (ts(w.start), ts(w.end));
                if last != ws {
                    emit(&mut out, &mut count, &last, &ws, &text);
                }
                let line: String = cue
                    .iter()
                    .enumerate()
                    .map(|(j, x)| {
                        if j == i {
                            underline(&x.word)
                        } else {
                            x.word.clone()
                        }
                    })
                    .collect();
                emit(&mut out, &mut count, &ws, &we, &line);
                last = we;
            }
        }
        self.count = count;
        out
    }

    /// What comes before the first segment.
    pub fn header(&self) -> &'static str {
        match self.format {
            FileFormat::Vtt => "WEBVTT\n\n",
            FileFormat::Tsv => "start\tend\ttext\n",
            _ => "",
        }
    }

    /// One segment, as the writer prints it (by words: the cues it completed).
    pub fn segment(&mut self, s: &Segment) -> String {
        if let Some(cues) = self.cues.as_mut() {
            let mut done = Vec::new();
            cues.segment(s, &mut done);
            return self.render_cues(done);
        }
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
    /// How srt and vtt are cut (and, with `words`, json segments carry their words).
    pub subtitles: SubtitleOptions,
}

/// The OpenAI `verbose_json` shape on one line (task, language, duration, text, segments with
/// id, seek, start, end, text, tokens, temperature, avg_logprob, compression_ratio,
/// no_speech_prob, and with word timestamps `words`: word, start, end, probability), plus
/// `file` and `language_probability`.
pub fn render_json(t: &Transcript, meta: &JsonMeta) -> String {
    let segments: Vec<serde_json::Value> = t
        .segments
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "id": s.id - 1, "seek": s.seek, "start": s.start, "end": s.end,
                "text": s.text, "tokens": s.tokens, "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": compression_ratio(&s.text),
                "no_speech_prob": s.no_speech_prob,
            });
            if meta.subtitles.words {
                let words: Vec<serde_json::Value> = s
                    .words
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "word": w.word, "start": w.start, "end": w.end,
                            "probability": w.probability,
                        })
                    })
                    .collect();
                v["words"] = serde_json::Value::Array(words);
            }
            v
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
    let mut writer = SegmentWriter::with_subtitles(format, meta.subtitles);
    let mut out = writer.header().to_string();
    for s in &t.segments {
        let _ = write!(out, "{}", writer.segment(s));
    }
    out.push_str(&writer.finish());
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
