//! Writes an Amanuensis model file (`docs/model-format.md`) and checks it loads back.

use std::collections::HashMap;
use std::path::Path;

use amanuensis_model::checksum;
use amanuensis_model::config::{keys, ModelConfig, FORMAT, FORMAT_VERSION};
use amanuensis_model::mel_filters::mel_filters;
use amanuensis_model::names;
use amanuensis_model::tokenizer::DecodeTable;
use amanuensis_model::weights::{expected_tensors_for, Dtype, Quantization, WeightsFile};
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

/// The tokenizer tensors of format_version 3 (`docs/model-format.md`, "Tokenizer"): the JSON
/// verbatim and the id → bytes decoding table built from it.
pub fn tokenizer_tensors(tokenizer_json: &str) -> Result<[OwnedTensor; 3], ConvertError> {
    let table = DecodeTable::from_json(tokenizer_json).map_err(|e| ConvertError::Config {
        key: "tokenizer.json".into(),
        reason: e.to_string(),
    })?;
    let blob = table.blob().to_vec();
    let ends = table.ends();
    let u8_tensor = |name: &str, data: Vec<u8>| OwnedTensor {
        name: name.into(),
        dtype: Dtype::U8,
        shape: vec![data.len()],
        data,
    };
    Ok([
        u8_tensor(names::TOKENIZER_JSON, tokenizer_json.as_bytes().to_vec()),
        u8_tensor(names::DECODE_BYTES, blob),
        OwnedTensor {
            name: names::DECODE_ENDS.into(),
            dtype: Dtype::U32,
            shape: vec![ends.len()],
            data: ends.iter().flat_map(|e| e.to_le_bytes()).collect(),
        },
    ])
}

/// Writes `parts` to `output` atomically (a temporary file in the same directory, then a
/// rename), after checking the tensor set is exactly the format's, then opens the result with
/// the loader. Returns the file size.
pub fn write_model(parts: ModelParts, output: &Path) -> Result<u64, ConvertError> {
    write_model_with(parts, Quantization::None, output)
}

/// [`write_model`] for tensors stored as `quantization` says (see [`crate::quantize`]).
pub fn write_model_with(
    parts: ModelParts,
    quantization: Quantization,
    output: &Path,
) -> Result<u64, ConvertError> {
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
    check_tensor_set(&config, quantization, &tensors)?;
    tensors.extend(tokenizer_tensors(&tokenizer_json)?);

    let mut meta: HashMap<String, String> = config.to_metadata();
    meta.insert(keys::FORMAT.into(), FORMAT.into());
    meta.insert(keys::FORMAT_VERSION.into(), FORMAT_VERSION.into());
    meta.insert(keys::SOURCE.into(), source);
    if let Some(q) = quantization.as_str() {
        meta.insert(keys::QUANTIZATION.into(), q.into());
    }
    // Checksums last: `metadata_crc32` covers every other entry, `tensor_crc32` included.
    meta.insert(
        keys::TENSOR_CRC32.into(),
        checksum::tensor_table_json(
            tensors
                .iter()
                .map(|t| (t.name.as_str(), checksum::crc32(&t.data))),
        ),
    );
    meta.insert(
        keys::METADATA_CRC32.into(),
        checksum::metadata_crc32(&meta).to_string(),
    );

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
    // Written under a temporary sibling name, made byte-deterministic, then renamed over
    // `output`: a reader never sees a partial file, and a failed write leaves no `output`.
    let file_name = output
        .file_name()
        .ok_or_else(|| write_err("not a file path".into()))?
        .to_string_lossy()
        .into_owned();
    let partial = output.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    let written = safetensors::serialize_to_file(views, Some(meta), &partial)
        .map_err(|e| write_err(format!("{e:?}")))
        .and_then(|()| canonicalize_header(&partial).map_err(io(&partial)))
        .and_then(|()| set_readable(&partial).map_err(io(&partial)))
        .and_then(|()| std::fs::rename(&partial, output).map_err(io(output)));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written?;
    drop(tensors);

    let written = WeightsFile::open(output)?;
    written.verify()?;
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

/// Model files are readable by everyone (the temporary file safetensors writes is 0600).
fn set_readable(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Rewrites the JSON header of a safetensors file with every object's keys sorted.
///
/// `safetensors` serialises `__metadata__` from a `HashMap`, whose order changes from run to
/// run; sorting makes a conversion byte-for-byte reproducible. The sorted header has the same
/// length (same members, compact either way), so it is padded to the original size and written
/// in place; tensor offsets are relative to the end of the header and do not move.
pub(crate) fn canonicalize_header(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(std::io::Error::other)?;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    let mut canonical = String::with_capacity(n);
    write_sorted_json(&value, &mut canonical);
    if canonical.len() > n {
        return Err(std::io::Error::other(format!(
            "sorted header is {} bytes, the original {n}",
            canonical.len()
        )));
    }
    let mut bytes = canonical.into_bytes();
    bytes.resize(n, b' ');
    f.seek(SeekFrom::Start(8))?;
    f.write_all(&bytes)?;
    f.sync_all()
}

/// Compact JSON with object keys in sorted order (independent of serde_json's map type).
fn write_sorted_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted_json(v, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// The tensors must be exactly the format's table for these dims: no missing, no extra, right
/// shapes and dtypes, and data lengths matching.
fn check_tensor_set(
    config: &ModelConfig,
    quantization: Quantization,
    tensors: &[OwnedTensor],
) -> Result<(), ConvertError> {
    let mut by_name: HashMap<&str, &OwnedTensor> = HashMap::new();
    for t in tensors {
        if by_name.insert(&t.name, t).is_some() {
            return Err(ConvertError::Config {
                key: t.name.clone(),
                reason: "tensor produced twice".into(),
            });
        }
    }
    let expected = expected_tensors_for(&config.dims, quantization);
    for spec in &expected {
        let t = by_name
            .get(spec.name.as_str())
            .ok_or_else(|| ConvertError::Config {
                key: spec.name.clone(),
                reason: "tensor not produced".into(),
            })?;
        let n: usize = spec.shape.iter().product();
        let elem = spec.dtype.bitsize() / 8;
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
