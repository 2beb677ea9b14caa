//! A transcription engine chosen at run time: the f32 reference path or the INT8 path, each a
//! [`Session`] over a model loaded onto its backend.

use std::path::Path;
use std::sync::Arc;

use amanuensis_model::config::Dims;
use amanuensis_model::error::WhisperError;
use amanuensis_model::mel::MelFrontend;
use amanuensis_model::mel_windows::MelWindows;
use amanuensis_model::session::{
    DetectedLanguage, Session, TranscribeOptions, Transcript, WindowDone,
};
use amanuensis_model::weights::{Quantization, WeightsFile};
use amanuensis_model::whisper::Whisper;
use amanuensis_runtime::cpu_backend::CpuBackend;
use amanuensis_runtime::cpu_int8_backend::CpuInt8Backend;

/// Which arithmetic runs the network's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// INT8 when the model file is INT8, else f32.
    Auto,
    /// f32 everywhere: the accuracy reference (INT8 files are dequantized).
    F32,
    /// INT8 matrices (an f16 file is quantized at load).
    Int8,
}

/// A loaded model and its per-stream state, on one backend.
pub enum Engine {
    F32(Session<CpuBackend>),
    Int8(Session<CpuInt8Backend>),
}

impl Engine {
    /// Opens `path` and loads it for `precision` with `threads` threads.
    pub fn load(path: &Path, threads: usize, precision: Precision) -> Result<Engine, WhisperError> {
        let file = WeightsFile::open(path)?;
        let int8 = match precision {
            Precision::Auto => file.quantization() == Quantization::Int8,
            Precision::F32 => false,
            Precision::Int8 => true,
        };
        Ok(if int8 {
            let model = Whisper::from_file(&file, CpuInt8Backend::new(threads))?;
            Engine::Int8(Session::new(Arc::new(model)))
        } else {
            let model = Whisper::from_file(&file, CpuBackend::new(threads))?;
            Engine::F32(Session::new(Arc::new(model)))
        })
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<Transcript, WhisperError> {
        match self {
            Engine::F32(s) => s.transcribe(samples, opts),
            Engine::Int8(s) => s.transcribe(samples, opts),
        }
    }

    /// Transcribes streamed (or in-memory) log-mel windows, calling `on_window` after each.
    pub fn transcribe_windows(
        &mut self,
        mel: &mut dyn MelWindows,
        opts: &TranscribeOptions,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        match self {
            Engine::F32(s) => s.transcribe_windows(mel, opts, on_window),
            Engine::Int8(s) => s.transcribe_windows(mel, opts, on_window),
        }
    }

    /// Identifies the language from the first window (multilingual models).
    pub fn detect_language(
        &mut self,
        mel: &mut dyn MelWindows,
    ) -> Result<DetectedLanguage, WhisperError> {
        match self {
            Engine::F32(s) => s.detect_language(mel),
            Engine::Int8(s) => s.detect_language(mel),
        }
    }

    /// The model's log-mel frontend.
    pub fn mel_frontend(&self) -> &MelFrontend {
        match self {
            Engine::F32(s) => &s.model().mel,
            Engine::Int8(s) => &s.model().mel,
        }
    }

    /// Whether the model is multilingual (else English-only).
    pub fn multilingual(&self) -> bool {
        match self {
            Engine::F32(s) => s.model().config.multilingual,
            Engine::Int8(s) => s.model().config.multilingual,
        }
    }

    /// The model's language codes.
    pub fn languages(&self) -> Vec<String> {
        let langs = match self {
            Engine::F32(s) => &s.model().config.languages,
            Engine::Int8(s) => &s.model().config.languages,
        };
        langs.iter().map(|(code, _)| code.clone()).collect()
    }

    /// The backend's name (`cpu-f32`, `cpu-int8`).
    pub fn backend_name(&self) -> &'static str {
        match self {
            Engine::F32(s) => s.model().backend_name(),
            Engine::Int8(s) => s.model().backend_name(),
        }
    }

    /// The model's dimensions.
    pub fn dims(&self) -> Dims {
        match self {
            Engine::F32(s) => s.model().config.dims,
            Engine::Int8(s) => s.model().config.dims,
        }
    }
}
