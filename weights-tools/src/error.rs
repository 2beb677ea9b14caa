//! Why a conversion failed. Every variant names the file and the variable, key or token at fault.

use std::path::PathBuf;

use amanuensis_model::weights::LoadError;

use crate::ct2::Ct2Error;

/// A conversion that could not be done, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Ct2 {
        path: PathBuf,
        #[source]
        source: Ct2Error,
    },
    /// The input ONNX file (Silero VAD) could not be parsed.
    #[error("{path}: {source}")]
    Onnx {
        path: PathBuf,
        #[source]
        source: crate::onnx::OnnxError,
    },
    /// The input safetensors file (Hugging Face) could not be parsed.
    #[error("{path}: not a readable safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: `{name}` is missing")]
    MissingVariable { path: PathBuf, name: String },
    #[error("{path}: `{name}` has shape {got:?}, expected {expected:?}")]
    VariableShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: `{name}` has shape {got:?}, expected rank {expected}")]
    VariableRank {
        path: PathBuf,
        name: String,
        expected: usize,
        got: Vec<usize>,
    },
    #[error("{path}: `{name}` is {dtype}, expected a float tensor (f16 or f32)")]
    VariableDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// The key part of a fused bias should be zero (the key projection has no bias).
    #[error("{path}: `{name}`: key bias element {index} is {value}, expected 0 (key projections have no bias)")]
    KeyBiasNotZero {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    /// A variable says the network is not the Whisper this runtime computes.
    #[error("{path}: `{name}` = {value}: {reason}")]
    Unsupported {
        path: PathBuf,
        name: String,
        value: String,
        reason: String,
    },
    /// A variable the converter does not know (it would be silently dropped).
    #[error("{path}: unexpected variable `{name}`")]
    UnexpectedVariable { path: PathBuf, name: String },
    /// A JSON file is unreadable or lacks a key.
    #[error("{path}: `{key}`: {reason}")]
    Json {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The tokenizer / vocabulary lacks a token or disagrees with the weights.
    #[error("{path}: {reason}")]
    Vocabulary { path: PathBuf, reason: String },
    /// The derived config is inconsistent.
    #[error("derived config: metadata `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// The written file does not load back.
    #[error("written file does not load back: {0}")]
    Verify(#[from] LoadError),
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    /// `inspect --verify`: the file fails a check (checksum mismatch, changed while mapped).
    #[error("{0}")]
    Inspect(LoadError),
    /// `inspect --verify` on a file that has nothing to verify against.
    #[error("{path}: cannot verify: {reason}")]
    Unverifiable { path: PathBuf, reason: String },
}
