//! The model file, opened: a read-only memory map plus its parsed safetensors header
//! (`docs/model-format.md`).
//!
//! [`WeightsFile::open`] maps the file (nothing is copied), parses and checks the header and
//! metadata, and checks every tensor the config implies is present with the right dtype and
//! shape, so a later [`WeightsFile::tensor_f32`] / [`WeightsFile::tensor_f16`] with the
//! documented shape cannot fail on a file that opened.
//!
//! f16 → f32 widening: [`WeightsFile::tensor_f32`] converts one tensor per call with `half`'s
//! `HalfFloatSliceExt::convert_to_f32_slice` (F16C instructions when the CPU has them, exact
//! either way: every f16 is representable in f32) into a fresh `Vec<f32>`; nothing is cached.
//! Widening all of tiny.en this way (37.8 M values) allocates 151 MB and takes the time measured
//! in `weights-tools/tests/ct2_tiny_en.rs` (`widening_every_tensor_of_tiny_en`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use amanuensis_runtime::mapped_file::MappedFile;
use half::f16;
use half::slice::HalfFloatSliceExt;
use safetensors::tensor::Metadata;

use crate::config::{keys, Dims, ModelConfig, FORMAT, FORMAT_VERSION};
pub use crate::load_error::{Dtype, LoadError};
use crate::names::{self, AttnKind, Proj, Stack};

/// The safetensors limit on the JSON header (100 MB, as the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// A tensor the model file must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

/// Every tensor of a model with these dims, in a fixed order (`docs/model-format.md` table):
/// `mel_filters` f32, everything else f16.
pub fn expected_tensors(dims: &Dims) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let dtype = if name == names::MEL_FILTERS {
            Dtype::F32
        } else {
            Dtype::F16
        };
        out.push(TensorSpec { name, shape, dtype });
    };
    let da = dims.n_audio_state;
    let dt = dims.n_text_state;
    add(names::MEL_FILTERS.into(), vec![dims.n_mels, 201]);
    add(names::weight(names::CONV1), vec![da, dims.n_mels, 3]);
    add(names::bias(names::CONV1), vec![da]);
    add(names::weight(names::CONV2), vec![da, da, 3]);
    add(names::bias(names::CONV2), vec![da]);
    add(names::ENCODER_POSITIONS.into(), vec![dims.n_audio_ctx, da]);

    let block = |add: &mut dyn FnMut(String, Vec<usize>),
                 stack: Stack,
                 layer: usize,
                 kinds: &[AttnKind]| {
        let d = match stack {
            Stack::Encoder => da,
            Stack::Decoder => dt,
        };
        for &kind in kinds {
            let ln = names::attn_ln(stack, layer, kind);
            add(names::weight(&ln), vec![d]);
            add(names::bias(&ln), vec![d]);
            for proj in Proj::ALL {
                let module = names::attn_proj(stack, layer, kind, proj);
                // Cross-attention K/V read the encoder output (width n_audio_state).
                let d_in = match (kind, proj) {
                    (AttnKind::Cross, Proj::Key | Proj::Value) => da,
                    _ => d,
                };
                add(names::weight(&module), vec![d, d_in]);
                if proj.has_bias() {
                    add(names::bias(&module), vec![d]);
                }
            }
        }
        let ln = names::mlp_ln(stack, layer);
        add(names::weight(&ln), vec![d]);
        add(names::bias(&ln), vec![d]);
        let fc1 = names::mlp(stack, layer, false);
        add(names::weight(&fc1), vec![4 * d, d]);
        add(names::bias(&fc1), vec![4 * d]);
        let fc2 = names::mlp(stack, layer, true);
        add(names::weight(&fc2), vec![d, 4 * d]);
        add(names::bias(&fc2), vec![d]);
    };
    for layer in 0..dims.n_audio_layer {
        block(&mut add, Stack::Encoder, layer, &[AttnKind::SelfAttn]);
    }
    add(names::weight(names::ENCODER_LN_POST), vec![da]);
    add(names::bias(names::ENCODER_LN_POST), vec![da]);

    add(names::TOKEN_EMBEDDING.into(), vec![dims.n_vocab, dt]);
    add(names::DECODER_POSITIONS.into(), vec![dims.n_text_ctx, dt]);
    for layer in 0..dims.n_text_layer {
        block(
            &mut add,
            Stack::Decoder,
            layer,
            &[AttnKind::SelfAttn, AttnKind::Cross],
        );
    }
    add(names::weight(names::DECODER_LN), vec![dt]);
    add(names::bias(names::DECODER_LN), vec![dt]);
    out
}

/// Where one tensor's bytes are, relative to the start of the file.
#[derive(Debug, Clone)]
struct TensorEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened, validated model file. Tensor data stays in the memory map until asked for.
#[derive(Debug)]
pub struct WeightsFile {
    path: PathBuf,
    file: MappedFile,
    tensors: HashMap<String, TensorEntry>,
    /// Tensor names in file order.
    order: Vec<String>,
    metadata: HashMap<String, String>,
    config: ModelConfig,
}

/// The parsed safetensors header: tensors (offsets relative to the file) and metadata.
struct Header {
    tensors: HashMap<String, TensorEntry>,
    order: Vec<String>,
    metadata: HashMap<String, String>,
}

/// Parses and checks the safetensors framing of `bytes` (the whole file).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header, LoadError> {
    let len = bytes.len() as u64;
    let not_st = |offset: u64, reason: String| LoadError::NotSafetensors {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(LoadError::Truncated {
            path: path.to_path_buf(),
            what: "the 8-byte header length".into(),
            needed: 8,
            len,
        });
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(not_st(
            0,
            format!("header length {n} exceeds the {MAX_HEADER_LEN}-byte limit"),
        ));
    }
    let header_end = 8 + n; // n <= 1e8: no overflow
    if header_end > len {
        return Err(LoadError::Truncated {
            path: path.to_path_buf(),
            what: format!("the {n}-byte JSON header"),
            needed: header_end,
            len,
        });
    }
    let header_bytes = &bytes[8..header_end as usize];
    let text = std::str::from_utf8(header_bytes).map_err(|e| {
        not_st(
            8 + e.valid_up_to() as u64,
            "header is not UTF-8".to_string(),
        )
    })?;
    // `Metadata`'s deserialiser checks the tensors tile the data section in offset order and
    // that every size matches its dtype and shape (overflow-checked).
    let meta: Metadata =
        serde_json::from_str(text).map_err(|e| not_st(8, format!("header JSON: {e}")))?;
    let data_start = header_end;
    let data_len = meta.data_len() as u64;
    let data_end = data_start
        .checked_add(data_len)
        .ok_or_else(|| not_st(8, "tensor data size overflows".into()))?;
    if data_end > len {
        return Err(LoadError::Truncated {
            path: path.to_path_buf(),
            what: format!("{data_len} bytes of tensor data from byte {data_start}"),
            needed: data_end,
            len,
        });
    }
    if data_end < len {
        return Err(not_st(
            data_end,
            format!("{} bytes after the last tensor", len - data_end),
        ));
    }
    let data_start = data_start as usize;
    let order = meta.offset_keys();
    let tensors = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let entry = TensorEntry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            };
            (name, entry)
        })
        .collect();
    Ok(Header {
        tensors,
        order,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

impl WeightsFile {
    /// Maps and validates a model file: safetensors framing, `format` / `format_version`,
    /// the config metadata, the tokenizer's presence, and every tensor of
    /// [`expected_tensors`] (present, right dtype, right shape). Extra tensors are allowed.
    pub fn open(path: &Path) -> Result<WeightsFile, LoadError> {
        let file = MappedFile::open(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let Header {
            tensors,
            order,
            metadata,
        } = parse_header(path, file.bytes())?;
        let bad = |key: &str, reason: String| LoadError::BadMetadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        match metadata.get(keys::FORMAT) {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(bad(keys::FORMAT, format!("{f:?}, expected {FORMAT:?}"))),
            None => {
                return Err(bad(
                    keys::FORMAT,
                    "missing (not an Amanuensis model file)".into(),
                ))
            }
        }
        match metadata.get(keys::FORMAT_VERSION) {
            Some(v) if v == FORMAT_VERSION => {}
            Some(v) => {
                return Err(LoadError::UnsupportedFormatVersion {
                    path: path.to_path_buf(),
                    found: v.clone(),
                    supported: FORMAT_VERSION,
                })
            }
            None => return Err(bad(keys::FORMAT_VERSION, "missing".into())),
        }
        for key in [keys::SOURCE, keys::TOKENIZER_JSON] {
            if metadata.get(key).is_none_or(|v| v.is_empty()) {
                return Err(bad(key, "missing".into()));
            }
        }
        let config = ModelConfig::from_metadata(&metadata).map_err(|e| bad(&e.key, e.reason))?;
        let weights = WeightsFile {
            path: path.to_path_buf(),
            file,
            tensors,
            order,
            metadata,
            config,
        };
        for spec in expected_tensors(&weights.config.dims) {
            weights.entry(&spec.name, &spec.shape, &[spec.dtype])?;
        }
        Ok(weights)
    }

    /// The dims, special tokens and decoding lists of this model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The Hugging Face `tokenizer.json`, verbatim.
    pub fn tokenizer_json(&self) -> &str {
        &self.metadata[keys::TOKENIZER_JSON]
    }

    /// What the file was converted from (`ctranslate2`, `huggingface`).
    pub fn source(&self) -> &str {
        &self.metadata[keys::SOURCE]
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw `__metadata__` entries.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Dtype and shape of a tensor, if present.
    pub fn tensor_info(&self, name: &str) -> Option<(Dtype, Vec<usize>)> {
        self.tensors.get(name).map(|e| (e.dtype, e.shape.clone()))
    }

    /// Every tensor name, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// The tensor `name` as f32, checked to have `shape`: f16 data is widened (exactly), f32
    /// copied. A fresh allocation each call.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let entry = self.entry(name, shape, &[Dtype::F16, Dtype::F32])?;
        let bytes = &self.file.bytes()[entry.start..entry.end];
        match entry.dtype {
            Dtype::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()),
            _ => {
                let halves = self.tensor_f16(name, shape)?;
                let mut out = vec![0f32; halves.len()];
                halves.convert_to_f32_slice(&mut out);
                Ok(out)
            }
        }
    }

    /// The f16 tensor `name`, checked to have `shape`, as a view into the memory map (no copy).
    pub fn tensor_f16(&self, name: &str, shape: &[usize]) -> Result<&[f16], LoadError> {
        let entry = self.entry(name, shape, &[Dtype::F16])?;
        let bytes = &self.file.bytes()[entry.start..entry.end];
        bytemuck::try_cast_slice(bytes).map_err(|_| LoadError::Misaligned {
            path: self.path.clone(),
            name: name.to_string(),
            offset: entry.start as u64,
            dtype: Dtype::F16,
        })
    }

    /// Looks up `name` and checks its shape and that its dtype is one of `dtypes`.
    fn entry(
        &self,
        name: &str,
        shape: &[usize],
        dtypes: &[Dtype],
    ) -> Result<&TensorEntry, LoadError> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if !dtypes.contains(&entry.dtype) {
            return Err(LoadError::Dtype {
                path: self.path.clone(),
                name: name.to_string(),
                expected: dtypes[0],
                got: entry.dtype,
            });
        }
        if entry.shape != shape {
            return Err(LoadError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: entry.shape.clone(),
            });
        }
        Ok(entry)
    }
}
