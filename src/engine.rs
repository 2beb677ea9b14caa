//! A transcription engine chosen at run time: the f32 reference path or the INT8 path, each a
//! [`Session`] over a model loaded onto its backend.

use std::path::Path;
use std::sync::Arc;

use amanuensis_model::config::Dims;
use amanuensis_model::decode::guards::SpeechGate;
use amanuensis_model::error::WhisperError;
use amanuensis_model::session::{Session, TranscribeOptions, Transcript};
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

    /// [`Engine::transcribe`] gated by the file's speech stretches (`Session::transcribe_gated`).
    pub fn transcribe_gated(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
        gate: Option<&SpeechGate>,
    ) -> Result<Transcript, WhisperError> {
        match self {
            Engine::F32(s) => s.transcribe_gated(samples, opts, gate),
            Engine::Int8(s) => s.transcribe_gated(samples, opts, gate),
        }
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
