//! Writes an Amanuensis model file (`docs/model-format.md`) and checks it loads back.

use std::collections::HashMap;
use std::path::Path;

use amanuensis_model::config::{keys, ModelConfig, FORMAT, FORMAT_VERSION};
use amanuensis_model::mel_filters::mel_filters;
use amanuensis_model::names;
use amanuensis_model::weights::{expected_tensors, Dtype, WeightsFile};
use safetensors::tensor::TensorView;

use crate::error::ConvertError;

/// A tensor ready to be written: little-endian bytes of `dtype`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Everything that goes into a model file besides the mel filters (which are computed here).
pub struct ModelParts {
    pub config: ModelConfig,
    /// `source` metadata (`ctranslate2`, `huggingface`).
    pub source: String,
    pub tokenizer_json: String,
    /// Every tensor of `expected_tensors(&config.dims)` except `mel_filters`.
    pub tensors: Vec<OwnedTensor>,
}

/// The mel filterbank tensor for `n_mels` (n_fft 400, 16 kHz), f32.
pub fn mel_filters_tensor(n_mels: usize) -> OwnedTensor {
    let values = mel_filters(n_mels, 400, 16000);
    OwnedTensor {
        name: names::MEL_FILTERS.into(),
        dtype: Dtype::F32,
        shape: vec![n_mels, 201],
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `parts` to `output` atomically (a temporary file in the same directory, then a
/// rename), after checking the tensor set is exactly the format's, then opens the result with
/// the loader. Returns the file size.
pub fn write_model(parts: ModelParts, output: &Path) -> Result<u64, ConvertError> {
    let ModelParts {
        config,
        source,
        tokenizer_json,
        mut tensors,
    } = parts;
    config.validate().map_err(|e| ConvertError::Config {
        key: e.key,
        reason: e.reason,
    })?;
    tensors.push(mel_filters_tensor(config.dims.n_mels));
    check_tensor_set(&config, &tensors)?;

    let mut meta: HashMap<String, String> = config.to_metadata();
    meta.insert(keys::FORMAT.into(), FORMAT.into());
    meta.insert(keys::FORMAT_VERSION.into(), FORMAT_VERSION.into());
    meta.insert(keys::SOURCE.into(), source);
    meta.insert(keys::TOKENIZER_JSON.into(), tokenizer_json);

    let write_err = |reason: String| ConvertError::Write {
        path: output.to_path_buf(),
        reason,
    };
    let mut views = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let view = TensorView::new(t.dtype, t.shape.clone(), &t.data)
            .map_err(|e| write_err(format!("tensor `{}`: {e:?}", t.name)))?;
        views.push((t.name.as_str(), view));
    }
    // serialize_to_file writes a sibling temporary file and renames it over `output`.
    safetensors::serialize_to_file(views, Some(meta), output)
        .map_err(|e| write_err(format!("{e:?}")))?;
    drop(tensors);
    // The temporary file behind the atomic write is created 0600; a model file is readable by all.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o644)).map_err(
            |source| ConvertError::Io {
                path: output.to_path_buf(),
                source,
            },
        )?;
    }

    let written = WeightsFile::open(output)?;
    if written.config() != &config {
        return Err(write_err(
            "config read back differs from the one written".into(),
        ));
    }
    let size = std::fs::metadata(output)
        .map_err(|source| ConvertError::Io {
            path: output.to_path_buf(),
            source,
        })?
        .len();
    Ok(size)
}

/// The tensors must be exactly the format's table for these dims: no missing, no extra, right
/// shapes and dtypes, and data lengths matching.
fn check_tensor_set(config: &ModelConfig, tensors: &[OwnedTensor]) -> Result<(), ConvertError> {
    let mut by_name: HashMap<&str, &OwnedTensor> = HashMap::new();
    for t in tensors {
        if by_name.insert(&t.name, t).is_some() {
            return Err(ConvertError::Config {
                key: t.name.clone(),
                reason: "tensor produced twice".into(),
            });
        }
    }
    let expected = expected_tensors(&config.dims);
    for spec in &expected {
        let t = by_name
            .get(spec.name.as_str())
            .ok_or_else(|| ConvertError::Config {
                key: spec.name.clone(),
                reason: "tensor not produced".into(),
            })?;
        let n: usize = spec.shape.iter().product();
        let elem = if spec.dtype == Dtype::F32 { 4 } else { 2 };
        if t.dtype != spec.dtype || t.shape != spec.shape || t.data.len() != n * elem {
            return Err(ConvertError::Config {
                key: spec.name.clone(),
                reason: format!(
                    "produced {:?} {:?} ({} bytes), the format wants {:?} {:?}",
                    t.dtype,
                    t.shape,
                    t.data.len(),
                    spec.dtype,
                    spec.shape
                ),
            });
        }
    }
    if tensors.len() != expected.len() {
        let extra = tensors
            .iter()
            .find(|t| !expected.iter().any(|s| s.name == t.name))
            .map(|t| t.name.clone())
            .unwrap_or_default();
        return Err(ConvertError::Config {
            key: extra,
            reason: "tensor not in the format".into(),
        });
    }
    Ok(())
}
