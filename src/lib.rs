//! Amanuensis: Whisper speech-to-text on the CPU and AMD Ryzen AI NPUs.
//!
//! The facade over the workspace: load a model file onto a backend, open a session, transcribe.
//!
//! ```no_run
//! use std::sync::Arc;
//! let model = amanuensis::load_cpu(&amanuensis::model_path::resolve_model(None)?, 2)?;
//! let mut session = amanuensis::model::session::Session::new(Arc::clone(&model));
//! let audio = amanuensis::model::audio::load_wav(std::path::Path::new("speech.wav"))?;
//! let transcript = session.transcribe(&audio, &Default::default())?;
//! println!("{}", transcript.text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod engine;
pub mod guarded;
pub mod model_path;
pub mod output;

use std::path::Path;
use std::sync::Arc;

pub use amanuensis_model as model;
pub use amanuensis_runtime as runtime;

use amanuensis_model::error::WhisperError;
use amanuensis_model::whisper::Whisper;
use amanuensis_runtime::cpu_backend::CpuBackend;

/// Loads a model file onto the f32 CPU backend with `threads` threads.
pub fn load_cpu(path: &Path, threads: usize) -> Result<Arc<Whisper<CpuBackend>>, WhisperError> {
    Ok(Arc::new(Whisper::load(path, CpuBackend::new(threads))?))
}
