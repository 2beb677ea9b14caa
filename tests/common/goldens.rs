//! The JSON golden files written by tests/goldens/make_goldens.py (one per model and speech file).
//! Field meanings are documented in tests/goldens/README.md.

use serde::Deserialize;

/// Everything recorded for one (model, speech file) pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    /// How the golden was made (model, settings, library versions).
    pub meta: GoldenMeta,
    /// Facts about the decoded audio.
    pub audio: GoldenAudio,
    /// The whole-file normalised log-mel.
    pub mel: GoldenMel,
    /// The CTranslate2 encoder output of the first 30 s window.
    pub encoder: GoldenEncoder,
    /// Every segment faster-whisper yielded, in order.
    pub segments: Vec<GoldenSegment>,
    /// The segments' texts concatenated as they are (each starts with its own space).
    pub text: String,
}

/// Provenance of a golden.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenMeta {
    /// "tiny.en" or "base".
    pub model: String,
    /// Always "float32".
    pub compute_type: String,
    /// CTranslate2 intra-op threads used.
    pub cpu_threads: u32,
    /// faster-whisper, ctranslate2, numpy and python versions.
    pub versions: std::collections::HashMap<String, String>,
}

/// The decoded audio (16 kHz mono, int16 / 32768).
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenAudio {
    /// Speech file name, e.g. "jfk.wav".
    pub file: String,
    /// Number of 16 kHz samples.
    pub n_samples: usize,
    /// n_samples / 160: the mel frames transcription iterates over.
    pub content_frames: usize,
}

/// One full frame (a column of the mel, or one encoder output position).
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenFrame {
    /// Frame index.
    pub index: usize,
    /// All values of that frame (80 mel bins, or d_model encoder channels).
    pub values: Vec<f32>,
}

/// The whole-file normalised log-mel, `[n_mels, content_frames + 1]`.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenMel {
    /// `[n_mels, frames]` with frames = content_frames + 1.
    pub shape: [usize; 2],
    /// Same as `GoldenAudio::content_frames`.
    pub content_frames: usize,
    /// Global minimum over all bins and frames.
    pub min: f64,
    /// Global maximum.
    pub max: f64,
    /// Global mean.
    pub mean: f64,
    /// Global population standard deviation.
    pub std: f64,
    /// Sum over the mel bins of every frame (6 significant digits), `frames` entries.
    pub frame_sums: Vec<f64>,
    /// Full frames 0..4, four in the middle (frames/2 - 2 ..) and the last four.
    pub frames: Vec<GoldenFrame>,
}

/// The encoder output of the first window, `[1, 1500, d_model]`.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenEncoder {
    /// Window start in mel frames (0).
    pub window_seek: usize,
    /// Real mel frames in the window, min(3000, content_frames); the rest is zero padding.
    pub window_frames: usize,
    /// `[1, 1500, d_model]`.
    pub shape: [usize; 3],
    /// L2 norm of every one of the 1500 output positions.
    pub frame_norms: Vec<f64>,
    /// Full output vectors at positions 0, 1, 2, 100, 500, 749, 1000, 1499.
    pub frames: Vec<GoldenFrame>,
}

/// One faster-whisper `Segment`.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenSegment {
    /// faster-whisper's id (starts at 1).
    pub id: u32,
    /// Start of the window that produced it, in mel frames.
    pub seek: usize,
    /// Start time in seconds (float64 arithmetic as faster-whisper: 42.040000000000006 occurs).
    pub start: f64,
    /// End time in seconds (may pass the end of the audio).
    pub end: f64,
    /// Segment text, with its leading space.
    pub text: String,
    /// Token ids including the timestamp tokens, excluding EOT.
    pub tokens: Vec<u32>,
    /// Mean log-prob of the window's sampled tokens (shared by all segments of one window).
    pub avg_logprob: f64,
    /// Softmax probability of the no-speech token at the SOT position (per window).
    pub no_speech_prob: f64,
    /// Temperature of the accepted decode (always 0 here).
    pub temperature: f64,
    /// Compression ratio of the window's text (per window).
    pub compression_ratio: f64,
}
