//! The `transcribe` command's arguments.

use std::path::PathBuf;

use amanuensis::output::OutputFormat;
use amanuensis::{Device, Precision};

/// What to do with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// Text in the spoken language.
    Transcribe,
    /// English text (multilingual models only).
    Translate,
}

#[derive(clap::Args, Debug)]
pub struct TranscribeArgs {
    /// Audio files: WAV (PCM, float, µ-law, A-law, extensible; unknown-length headers from
    /// pipes), FLAC, MP3, Ogg Vorbis, M4A/AAC; any rate and channel count. `-` reads standard
    /// input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Model file, or a model name in the cache: tiny.en, base (their INT8 files, or their
    /// f16 files with --precision f32), tiny.en.int8, base.int8, tiny.en.f16, base.f16.
    /// Default: $AMANUENSIS_MODEL, else tiny.en.
    #[arg(short, long)]
    pub model: Option<String>,
    /// Threads (default and 0: all available cores; more than those is capped, with a
    /// warning).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Decode without timestamp tokens (one segment per 30 s window).
    #[arg(long)]
    pub no_timestamps: bool,
    /// What to print, or to write with --output-dir (`all`: txt, vtt, srt, tsv and json).
    #[arg(short = 'f', long, value_enum, default_value = "console")]
    pub output_format: OutputFormat,
    /// Write DIR/NAME.EXT (NAME: the input's file name minus its final extension) instead of
    /// printing; the folder is created. Each file is written whole or not at all.
    #[arg(short = 'o', long)]
    pub output_dir: Option<PathBuf>,
    /// Language code (en, fr, de, ...), or `auto` to detect it from the first 30 s. Default:
    /// auto for multilingual models; English-only (.en) models take only `en`.
    #[arg(short, long)]
    pub language: Option<String>,
    /// transcribe, or translate to English (multilingual models only).
    #[arg(long, value_enum, default_value = "transcribe")]
    pub task: Task,
    /// Text that seeds the previous-text prompt of the first window.
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Check the model file against its checksums before loading it (reads it whole once;
    /// fails naming the damaged tensor; a file converted before checksums existed loads with a
    /// warning).
    #[arg(long)]
    pub verify_model: bool,
    /// Read the model file into memory instead of mapping it: nothing done to the file while
    /// transcribing can then reach the model (a mapped file truncated meanwhile is an error).
    #[arg(long)]
    pub no_mmap: bool,
    /// Print load and stage timings on stderr.
    #[arg(long)]
    pub timings: bool,
    /// Beams: 1 = greedy; 5 = faster-whisper's default beam search (patience 1, length
    /// penalty 1).
    #[arg(short, long, default_value_t = 1)]
    pub beam_size: usize,
    /// Arithmetic: auto = INT8 for an INT8 model file, else f32; f32 = the exact reference
    /// (a model name then means its f16 file).
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionArg,
    /// Where the network runs: auto (the NPU when one is usable and its GEMM programs load and
    /// pass their self-test, else the CPU; the choice is printed on stderr), cpu, npu, emu (the
    /// emulated NPU: slow).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// No progress bar, no live segment lines with --output-dir, no informational messages
    /// (errors and warnings still go to stderr).
    #[arg(short, long)]
    pub quiet: bool,
    /// Word timestamps (faster-whisper's `word_timestamps=True`): json segments get `words`
    /// (word, start, end, probability); srt and vtt are cut by words; segment times follow
    /// the words. One extra decoder pass per 30 s window.
    #[arg(long)]
    pub word_timestamps: bool,
    /// srt/vtt: one cue per word, the line's text with that word underlined (`<u>`); needs
    /// --word-timestamps.
    #[arg(long)]
    pub highlight_words: bool,
    /// srt/vtt: at most N characters per line, then a line break; needs --word-timestamps.
    #[arg(long, value_name = "N")]
    pub max_line_width: Option<usize>,
    /// srt/vtt: at most N lines per cue (with --max-line-width; cues then no longer follow
    /// segments and a pause of more than 3 s starts a new cue).
    #[arg(long, value_name = "N")]
    pub max_line_count: Option<usize>,
    /// srt/vtt: at most N words per line (a new cue at every N words, as openai-whisper
    /// does); needs --word-timestamps.
    #[arg(long, value_name = "N")]
    pub max_words_per_line: Option<usize>,
    /// Skip silent periods longer than this many seconds around a possible hallucination
    /// (faster-whisper's `hallucination_silence_threshold`: a segment of improbable, very short
    /// or very long words between such silences is dropped and decoding resumes at it); needs
    /// --word-timestamps.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub hallucination_silence_threshold: Option<f64>,
    /// Transcribe only these clips: `start,end,start,end,…` in seconds, in order (the last
    /// end defaults to the end of the audio; faster-whisper's and openai-whisper's
    /// `clip_timestamps`). Times stay those of the whole file.
    #[arg(long, value_name = "START,END,...", value_parser = clip_timestamps)]
    pub clip_timestamps: Option<ClipTimestamps>,
    #[command(flatten)]
    pub decoding: super::decoding::DecodeArgs,
}

impl TranscribeArgs {
    /// The subtitle options; an error names a word option given without --word-timestamps
    /// (openai-whisper refuses the subtitle ones and warns for the hallucination threshold,
    /// which faster-whisper ignores without word timestamps: we refuse them all).
    pub fn subtitles(&self) -> Result<amanuensis::output::SubtitleOptions, String> {
        if !self.word_timestamps {
            let given = [
                ("--highlight-words", self.highlight_words),
                ("--max-line-width", self.max_line_width.is_some()),
                ("--max-line-count", self.max_line_count.is_some()),
                ("--max-words-per-line", self.max_words_per_line.is_some()),
                (
                    "--hallucination-silence-threshold",
                    self.hallucination_silence_threshold.is_some(),
                ),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
                return Err(format!("{flag} needs --word-timestamps"));
            }
        }
        Ok(amanuensis::output::SubtitleOptions {
            words: self.word_timestamps,
            highlight_words: self.highlight_words,
            max_line_width: self.max_line_width,
            max_line_count: self.max_line_count,
            max_words_per_line: self.max_words_per_line,
        })
    }
}

/// `--precision`, mapped to [`Precision`] (the library's types carry no clap derives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// INT8 when the model file is INT8, else f32.
    Auto,
    /// f32 everywhere: the accuracy reference.
    F32,
    /// INT8 matrices.
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => Precision::Auto,
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

/// `--device`, mapped to [`Device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The best device available.
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The AMD Ryzen AI NPU.
    Npu,
    /// The emulated NPU.
    Emu,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Npu => Device::Npu,
            DeviceArg::Emu => Device::Emu,
        }
    }
}

/// A duration in seconds: a finite number, not negative.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds (finite, 0 or more)"
        )),
    }
}

/// The seconds of `--clip-timestamps` (one value for clap, not a list of arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTimestamps(pub Vec<f64>);

/// `start,end,…` seconds (`model::clips::parse`).
fn clip_timestamps(s: &str) -> Result<ClipTimestamps, String> {
    amanuensis::model::clips::parse(s)
        .map(ClipTimestamps)
        .map_err(|e| e.to_string())
}
