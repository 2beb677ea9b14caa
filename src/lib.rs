//! Amanuensis: Whisper speech-to-text on the CPU and AMD Ryzen AI NPUs.
//!
//! Load a model once into a shareable [`Model`], open any number of [`Session`]s on it (one per
//! stream, each on its own thread), transcribe 16 kHz mono samples:
//!
//! ```no_run
//! use amanuensis::{LoadOptions, Model, TranscribeOptions};
//! let model = Model::load(amanuensis::model_path::resolve_model(None)?, &LoadOptions::default())?;
//! let mut session = model.session()?;
//! let audio = amanuensis::load_audio("speech.wav")?;
//! let transcript = session.transcribe(&audio, &TranscribeOptions::default())?;
//! println!("{}", transcript.text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Word timestamps (faster-whisper's `word_timestamps=True`): set
//! [`TranscribeOptions::word_timestamps`]; each [`Segment`] then carries its [`Word`]s (start,
//! end, text, probability), and [`output::SubtitleOptions`] cuts srt/vtt by them.
//!
//! [`Session::transcribe_with`] adds a callback per decided segment, a progress callback and a
//! cooperative abort flag ([`Hooks`]). The workspace crates are re-exported as [`model`] (what
//! Whisper computes) and [`runtime`] (the backends).
#![warn(missing_docs)]

pub mod bench;
pub mod engine;
pub mod guarded;
pub mod model_path;
pub mod output;

use std::path::Path;

pub use amanuensis_model as model;
pub use amanuensis_runtime as runtime;

pub use amanuensis_model::segment::Segment;
pub use amanuensis_model::session::{
    AlignmentWeights, Hooks, Progress, Timings, TranscribeOptions, Transcript,
};
pub use amanuensis_model::whisper::Submissions;
pub use amanuensis_model::words::Word;
pub use engine::{
    available_threads, resolve_threads, Device, DispatchTotals, Error, LoadOptions, Model,
    Precision, Session, ThreadCount, Verification,
};

/// Loads a model file onto the f32 CPU backend with `threads` threads per session (the
/// reference path, typed; [`Model`] hides the backend).
pub fn load_cpu(
    path: &Path,
    threads: usize,
) -> Result<
    std::sync::Arc<model::whisper::Whisper<runtime::cpu_backend::CpuBackend>>,
    model::error::WhisperError,
> {
    Ok(std::sync::Arc::new(model::whisper::Whisper::load(
        path,
        runtime::cpu_backend::CpuBackend::new(threads),
    )?))
}

/// Decodes an audio file to 16 kHz mono f32 samples (mixed down and resampled as needed).
pub fn load_audio(path: impl AsRef<Path>) -> Result<Vec<f32>, Error> {
    Ok(amanuensis_model::audio::load_wav(path.as_ref())?)
}

/// Decodes an audio file held in memory to 16 kHz mono f32 samples.
pub fn decode_audio(bytes: &[u8]) -> Result<Vec<f32>, Error> {
    use amanuensis_model::audio::{parse_wav, resample_to_16k, TARGET_RATE};
    let wav = parse_wav(bytes)?;
    if wav.sample_rate == TARGET_RATE {
        return Ok(wav.samples);
    }
    Ok(resample_to_16k(&wav.samples, wav.sample_rate)?)
}
