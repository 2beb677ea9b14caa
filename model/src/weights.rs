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
//! Widening all of tiny.en this way (37.8 M values) allocates 151 MB of f32 on the heap (the
//! 78 MB file stays mapped, page-cache backed) and took 48–136 ms on the 2-core dev machine
//! (F16C present, other builds running); `open` itself (map, header JSON with the 2 MB
//! tokenizer, config and tensor-table checks) took 5–13 ms. Measured by
//! `weights-tools/tests/ct2_tiny_en.rs` (`widening_every_tensor_of_tiny_en`, prints both).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amanuensis_runtime::mapped_file::MappedFile;
use amanuensis_runtime::q8::layout::SharedBytes;
use amanuensis_runtime::q8::QuantMatrix;
use amanuensis_runtime::table::Table;
use half::f16;
use half::slice::HalfFloatSliceExt;
use safetensors::tensor::Metadata;

use crate::config::{
    keys, Dims, ModelConfig, FORMAT, FORMAT_VERSION, FORMAT_VERSION_NO_CHECKSUMS,
    FORMAT_VERSION_TOKENIZER_IN_METADATA, SUPPORTED_FORMAT_VERSIONS,
};
pub use crate::load_error::{Dtype, LoadError};
use crate::names::{self, AttnKind, Proj, Stack};
use crate::tokenizer::{check_decode_table, DecodeTable, JsonSource};

/// The safetensors limit on the JSON header (100 MB, as the `safetensors` crate).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// A tensor the model file must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

/// How a file stores its weight matrices (metadata key `quantization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// f16, `[out, in]` row-major.
    None,
    /// Symmetric INT8 per output channel in 64 × 64 tiles (`docs/int8-layout.md`): the weight
    /// tensor is i8 `[out/64, in/64, 64, 64]` (zero-padded), its `{name}_scale` f32 `[out]`.
    Int8,
}

impl Quantization {
    /// The metadata value (`None` has no key).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Quantization::None => None,
            Quantization::Int8 => Some("int8"),
        }
    }
}

/// The weight matrices an INT8 file stores quantized: every linear layer of both stacks and the
/// token embedding (also the tied output projection), as `(weight name, out, in)`. Convolutions,
/// norms, biases and position tables stay f16.
pub fn quantized_matrices(dims: &Dims) -> Vec<(String, usize, usize)> {
    expected_tensors(dims)
        .into_iter()
        .filter(|t| {
            t.shape.len() == 2
                && t.name.ends_with(".weight")
                && (t.name.contains(".blocks.") || t.name == names::TOKEN_EMBEDDING)
        })
        .map(|t| (t.name, t.shape[0], t.shape[1]))
        .collect()
}

/// The tile-major shape of an INT8 `[out, in]` matrix: `[out/64, in/64, 64, 64]`, rounded up.
pub fn int8_tile_shape(n_out: usize, k: usize) -> Vec<usize> {
    let t = amanuensis_runtime::q8::TILE;
    vec![n_out.div_ceil(t), k.div_ceil(t), t, t]
}

/// Every tensor of a file with these dims and this storage, in a fixed order.
pub fn expected_tensors_for(dims: &Dims, quantization: Quantization) -> Vec<TensorSpec> {
    let specs = expected_tensors(dims);
    if quantization == Quantization::None {
        return specs;
    }
    let quantized = quantized_matrices(dims);
    let mut out = Vec::with_capacity(specs.len() + quantized.len());
    for spec in specs {
        match quantized.iter().find(|(n, _, _)| *n == spec.name) {
            Some(&(_, n_out, k)) => {
                out.push(TensorSpec {
                    name: names::weight_scale(&spec.name),
                    shape: vec![n_out],
                    dtype: Dtype::F32,
                });
                out.push(TensorSpec {
                    shape: int8_tile_shape(n_out, k),
                    dtype: Dtype::I8,
                    ..spec
                });
            }
            None => out.push(spec),
        }
    }
    out
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
    /// Shared with the INT8 matrices, which read their tiles from it in place.
    file: Arc<MappedFile>,
    tensors: HashMap<String, TensorEntry>,
    /// Tensor names in file order.
    order: Vec<String>,
    metadata: HashMap<String, String>,
    config: ModelConfig,
    quantization: Quantization,
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
        Self::open_with(path, true)
    }

    /// [`WeightsFile::open`], mapping the file (`mmap`) or reading it whole into memory (then
    /// nothing done to the file later can reach the loaded model; costs the file's size in RAM).
    pub fn open_with(path: &Path, mmap: bool) -> Result<WeightsFile, LoadError> {
        let file = if mmap {
            MappedFile::open(path)
        } else {
            MappedFile::read(path)
        }
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header, config, quantization) = validate(path, file.bytes())?;
        Ok(WeightsFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            tensors: header.tensors,
            order: header.order,
            metadata: header.metadata,
            config,
            quantization,
        })
    }

    /// The dims, special tokens and decoding lists of this model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Whether the tokenizer is stored in tensors, beside its decoding table (format_version
    /// 3), rather than in the metadata.
    pub fn has_tokenizer_tensors(&self) -> bool {
        tokenizer_in_tensors(&self.metadata)
    }

    /// The Hugging Face `tokenizer.json`, verbatim (format_version 3: the `tokenizer.json`
    /// tensor, checked to be UTF-8 here; older: the `tokenizer_json` metadata).
    pub fn tokenizer_json(&self) -> Result<&str, LoadError> {
        if !self.has_tokenizer_tensors() {
            return Ok(&self.metadata[keys::TOKENIZER_JSON]);
        }
        let entry = &self.tensors[names::TOKENIZER_JSON];
        std::str::from_utf8(&self.file.bytes()[entry.start..entry.end]).map_err(|e| {
            LoadError::BadTensor {
                path: self.path.clone(),
                name: names::TOKENIZER_JSON.into(),
                reason: format!("not UTF-8 (at byte {})", e.valid_up_to()),
            }
        })
    }

    /// Where the tokenizer JSON is, for a tokenizer that reads it only when it needs it: a
    /// range of the map (format_version 3), else a copy of the metadata entry.
    pub fn tokenizer_json_source(&self) -> JsonSource {
        if !self.has_tokenizer_tensors() {
            return JsonSource::Owned(self.metadata[keys::TOKENIZER_JSON].clone());
        }
        let entry = &self.tensors[names::TOKENIZER_JSON];
        JsonSource::Shared {
            file: Arc::clone(&self.file) as SharedBytes,
            range: entry.start..entry.end,
        }
    }

    /// The stored id → bytes decoding table, read in place (format_version 3; checked at
    /// open), or `None` for older files (build it from [`WeightsFile::tokenizer_json`]).
    pub fn decode_table(&self) -> Result<Option<DecodeTable>, LoadError> {
        if !self.has_tokenizer_tensors() {
            return Ok(None);
        }
        let bytes = &self.tensors[names::DECODE_BYTES];
        let ends = &self.tensors[names::DECODE_ENDS];
        let table = DecodeTable::from_shared(
            Arc::clone(&self.file) as SharedBytes,
            bytes.start..bytes.end,
            ends.start..ends.end,
        );
        // A mapping that faulted read zeros: that, not what the zeros caused, is the error.
        self.check_mapping()?;
        table.map(Some).map_err(|reason| LoadError::BadTensor {
            path: self.path.clone(),
            name: names::DECODE_ENDS.into(),
            reason,
        })
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
        let out = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            _ => {
                let halves = self.tensor_f16(name, shape)?;
                let mut out = vec![0f32; halves.len()];
                halves.convert_to_f32_slice(&mut out);
                out
            }
        };
        // Copied out: its mapped pages need not stay resident beside the copy.
        self.file.release(entry.start..entry.end);
        self.check_mapping()?;
        Ok(out)
    }

    /// The f16 or f32 tensor `name`, checked to have `shape`, as a row table: f16 values read
    /// in place from the map (no copy, no widening at load: the table widens as it is read, which
    /// is exact), f32 values (or f16 ones not aligned in the map) copied out as f32.
    pub fn tensor_table(&self, name: &str, shape: &[usize]) -> Result<Table, LoadError> {
        let entry = self.entry(name, shape, &[Dtype::F16, Dtype::F32])?;
        if entry.dtype == Dtype::F16 {
            let bytes: SharedBytes = Arc::clone(&self.file) as SharedBytes;
            if let Some(table) = Table::f16_in_place(&bytes, entry.start..entry.end) {
                return Ok(table);
            }
        }
        self.tensor_f32(name, shape).map(Table::F32)
    }

    /// The tensor `name`, checked to have `shape` and to be stored in f16 or f32: its f16
    /// values as a view into the memory map when it is stored in f16 (and aligned there), `None`
    /// otherwise (read it with [`WeightsFile::tensor_f32`]). Once a copy of its own is made
    /// from the view, [`WeightsFile::done_reading`] drops the mapped pages and checks the read.
    pub fn tensor_f16_if_stored(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<&[f16]>, LoadError> {
        let entry = self.entry(name, shape, &[Dtype::F16, Dtype::F32])?;
        if entry.dtype != Dtype::F16 {
            return Ok(None);
        }
        Ok(bytemuck::try_cast_slice(&self.file.bytes()[entry.start..entry.end]).ok())
    }

    /// After tensor `name` was read from the map into a copy of its own: drops this process's
    /// copies of its mapped pages (as [`WeightsFile::tensor_f32`] does) and checks that the read
    /// found the file's bytes (`Err(ChangedWhileMapped)` if the file shrank under the map).
    pub fn done_reading(&self, name: &str) -> Result<(), LoadError> {
        if let Some(entry) = self.tensors.get(name) {
            self.file.release(entry.start..entry.end);
        }
        self.check_mapping()
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

    /// `Err(ChangedWhileMapped)` when a read of the mapped file found its pages gone (the file
    /// was truncated, or became unreadable, after it was opened): those reads returned zeros.
    pub fn check_mapping(&self) -> Result<(), LoadError> {
        match self.file.fault() {
            None => Ok(()),
            Some(offset) => Err(LoadError::ChangedWhileMapped {
                path: self.path.clone(),
                offset,
            }),
        }
    }

    /// The SIGBUS guard of the mapping, to check for a fault after this value is gone from
    /// scope (see `amanuensis_runtime::sigbus`); `None` when read into memory.
    pub fn map_guard(&self) -> Option<amanuensis_runtime::sigbus::Guard> {
        self.file.guard()
    }

    /// The raw data bytes of tensor `name` (any dtype), as a view into the file.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        let entry = self.tensors.get(name)?;
        Some(&self.file.bytes()[entry.start..entry.end])
    }

    /// How the weight matrices are stored.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// The INT8 weight `name` (`[n_out, k]` logically) with its scales, read in place from the
    /// map ([`QuantMatrix::from_shared`]: nothing copied, no tile read; lengths and scales
    /// checked, the codes trusted as the converter wrote them).
    pub fn tensor_q8(&self, name: &str, n_out: usize, k: usize) -> Result<QuantMatrix, LoadError> {
        let entry = self.entry(name, &int8_tile_shape(n_out, k), &[Dtype::I8])?;
        let data = entry.start..entry.end;
        let scale = self.entry(&names::weight_scale(name), &[n_out], &[Dtype::F32])?;
        let scales = scale.start..scale.end;
        let bytes: SharedBytes = Arc::clone(&self.file) as SharedBytes;
        QuantMatrix::from_shared(&bytes, data, scales, n_out, k).map_err(|e| {
            LoadError::BadQuantized {
                path: self.path.clone(),
                name: name.to_string(),
                reason: e.to_string(),
            }
        })
    }

    /// Looks up `name` and checks its shape and that its dtype is one of `dtypes`.
    fn entry(
        &self,
        name: &str,
        shape: &[usize],
        dtypes: &[Dtype],
    ) -> Result<&TensorEntry, LoadError> {
        lookup(&self.path, &self.tensors, name, shape, dtypes)
    }
}

/// Validates a whole model file held in memory, exactly as [`WeightsFile::open`] does, and
/// returns its config. For fuzzing and for checking bytes before they are written.
pub fn validate_model_bytes(bytes: &[u8]) -> Result<ModelConfig, LoadError> {
    validate(Path::new("<memory>"), bytes).map(|(_, config, _)| config)
}

/// Everything `open` checks: framing, format, metadata, and the tensor table.
fn validate(path: &Path, bytes: &[u8]) -> Result<(Header, ModelConfig, Quantization), LoadError> {
    let header = parse_header(path, bytes)?;
    let metadata = &header.metadata;
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
        Some(v)
            if v == FORMAT_VERSION
                || v == FORMAT_VERSION_TOKENIZER_IN_METADATA
                || v == FORMAT_VERSION_NO_CHECKSUMS => {}
        Some(v) => {
            return Err(LoadError::UnsupportedFormatVersion {
                path: path.to_path_buf(),
                found: v.clone(),
                supported: SUPPORTED_FORMAT_VERSIONS,
            })
        }
        None => return Err(bad(keys::FORMAT_VERSION, "missing".into())),
    }
    let tokenizer_key = (!tokenizer_in_tensors(metadata)).then_some(keys::TOKENIZER_JSON);
    for key in std::iter::once(keys::SOURCE).chain(tokenizer_key) {
        if metadata.get(key).is_none_or(|v| v.is_empty()) {
            return Err(bad(key, "missing".into()));
        }
    }
    if tokenizer_key.is_none() {
        check_tokenizer_tensors(path, bytes, &header.tensors)?;
    }
    let config = ModelConfig::from_metadata(metadata).map_err(|e| bad(&e.key, e.reason))?;
    let quantization = match metadata.get(keys::QUANTIZATION).map(String::as_str) {
        None | Some("none") => Quantization::None,
        Some("int8") => Quantization::Int8,
        Some(other) => {
            return Err(bad(
                keys::QUANTIZATION,
                format!("{other:?}, expected \"int8\" or absent"),
            ))
        }
    };
    crate::checksum::check_table(path, metadata, header.tensors.keys().map(String::as_str))?;
    for spec in expected_tensors_for(&config.dims, quantization) {
        lookup(
            path,
            &header.tensors,
            &spec.name,
            &spec.shape,
            &[spec.dtype],
        )?;
    }
    Ok((header, config, quantization))
}

/// Whether the metadata says the tokenizer is in tensors (format_version 3 on; 1 and 2 have it
/// in the metadata).
fn tokenizer_in_tensors(metadata: &HashMap<String, String>) -> bool {
    !matches!(
        metadata.get(keys::FORMAT_VERSION).map(String::as_str),
        Some(FORMAT_VERSION_TOKENIZER_IN_METADATA | FORMAT_VERSION_NO_CHECKSUMS) | None
    )
}

/// The tokenizer tensors of a format-version-3 file: present, 1-D, of their dtypes, the JSON
/// not empty, and the decoding table consistent (what its lookups rely on).
fn check_tokenizer_tensors(
    path: &Path,
    bytes: &[u8],
    tensors: &HashMap<String, TensorEntry>,
) -> Result<(), LoadError> {
    let get = |name: &str, dtype: Dtype| {
        let entry = tensors.get(name).ok_or_else(|| LoadError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
        })?;
        if entry.dtype != dtype {
            return Err(LoadError::Dtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                expected: dtype,
                got: entry.dtype,
            });
        }
        if entry.shape.len() != 1 {
            return Err(LoadError::BadTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                reason: format!("shape {:?}, expected one dimension", entry.shape),
            });
        }
        Ok(&bytes[entry.start..entry.end])
    };
    if get(names::TOKENIZER_JSON, Dtype::U8)?.is_empty() {
        return Err(LoadError::BadTensor {
            path: path.to_path_buf(),
            name: names::TOKENIZER_JSON.into(),
            reason: "empty".into(),
        });
    }
    let blob = get(names::DECODE_BYTES, Dtype::U8)?;
    let ends = get(names::DECODE_ENDS, Dtype::U32)?;
    check_decode_table(blob, ends).map_err(|reason| LoadError::BadTensor {
        path: path.to_path_buf(),
        name: names::DECODE_ENDS.into(),
        reason,
    })
}

/// Looks up `name` and checks its shape and that its dtype is one of `dtypes`.
fn lookup<'t>(
    path: &Path,
    tensors: &'t HashMap<String, TensorEntry>,
    name: &str,
    shape: &[usize],
    dtypes: &[Dtype],
) -> Result<&'t TensorEntry, LoadError> {
    let entry = tensors.get(name).ok_or_else(|| LoadError::MissingTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
    })?;
    if !dtypes.contains(&entry.dtype) {
        return Err(LoadError::Dtype {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: dtypes[0],
            got: entry.dtype,
        });
    }
    if entry.shape != shape {
        return Err(LoadError::Shape {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: shape.to_vec(),
            got: entry.shape.clone(),
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use safetensors::tensor::TensorView;

    use super::*;
    use crate::config::{SpecialTokens, N_TIMESTAMPS};

    /// A small but complete model: 1 + 1 layers, d 4, 2 heads, 1521 tokens.
    fn small_config() -> ModelConfig {
        let no_timestamps = 19;
        ModelConfig {
            dims: Dims {
                n_mels: 2,
                n_audio_ctx: 3,
                n_audio_state: 4,
                n_audio_head: 2,
                n_audio_layer: 1,
                n_vocab: (no_timestamps + 1 + N_TIMESTAMPS) as usize,
                n_text_ctx: 3,
                n_text_state: 4,
                n_text_head: 2,
                n_text_layer: 1,
            },
            special: SpecialTokens {
                eot: 10,
                sot: 11,
                translate: 14,
                transcribe: 15,
                startoflm: 16,
                startofprev: 17,
                no_speech: 18,
                no_timestamps,
                timestamp_begin: no_timestamps + 1,
            },
            languages: vec![("en".into(), 12), ("de".into(), 13)],
            multilingual: false,
            suppress_ids: vec![1, 2, 14],
            suppress_ids_begin: vec![5, 10],
            alignment_heads: vec![(0, 1)],
        }
    }

    /// Deterministic value `i` of tensor number `t` (exact in f16).
    fn value(t: usize, i: usize) -> f32 {
        ((t * 7 + i) % 64) as f32 / 16.0 - 2.0
    }

    struct Tensor {
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    }

    fn small_tensors(config: &ModelConfig) -> Vec<Tensor> {
        expected_tensors(&config.dims)
            .into_iter()
            .enumerate()
            .map(|(t, spec)| {
                let n: usize = spec.shape.iter().product();
                let data = if spec.dtype == Dtype::F32 {
                    (0..n).flat_map(|i| value(t, i).to_le_bytes()).collect()
                } else {
                    (0..n)
                        .flat_map(|i| f16::from_f32(value(t, i)).to_le_bytes())
                        .collect()
                };
                Tensor {
                    name: spec.name,
                    dtype: spec.dtype,
                    shape: spec.shape,
                    data,
                }
            })
            .collect()
    }

    fn small_metadata(config: &ModelConfig) -> HashMap<String, String> {
        let mut meta = config.to_metadata();
        meta.insert(keys::FORMAT.into(), FORMAT.into());
        // Version 1: no checksums (`checksum` tests the version-2 table).
        meta.insert(
            keys::FORMAT_VERSION.into(),
            FORMAT_VERSION_NO_CHECKSUMS.into(),
        );
        meta.insert(keys::SOURCE.into(), "test".into());
        meta.insert(keys::TOKENIZER_JSON.into(), "{\"version\":\"1.0\"}".into());
        meta
    }

    fn serialize(tensors: &[Tensor], meta: HashMap<String, String>) -> Vec<u8> {
        let views = tensors.iter().map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        });
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    fn small_file() -> Vec<u8> {
        let c = small_config();
        serialize(&small_tensors(&c), small_metadata(&c))
    }

    /// Writes `bytes` to a fresh temporary file and opens it.
    fn open_bytes(bytes: &[u8]) -> Result<WeightsFile, LoadError> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "amanuensis-weights-{}-{}.safetensors",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        let result = WeightsFile::open(&path);
        // The map stays valid after unlinking (the inode lives while mapped).
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn a_complete_file_opens_and_reads_back() {
        let config = small_config();
        let w = open_bytes(&small_file()).unwrap();
        assert_eq!(w.config(), &config);
        assert_eq!(w.tokenizer_json().unwrap(), "{\"version\":\"1.0\"}");
        assert_eq!(w.source(), "test");
        let specs = expected_tensors(&config.dims);
        assert_eq!(w.tensor_names().count(), specs.len());
        // 1 mel + 5 encoder stem + 15 per encoder block + 2 + 2 decoder stem
        // + 24 per decoder block + 2.
        assert_eq!(specs.len(), 1 + 5 + 15 + 2 + 2 + 24 + 2);
        for (t, spec) in specs.iter().enumerate() {
            assert_eq!(
                w.tensor_info(&spec.name),
                Some((spec.dtype, spec.shape.clone()))
            );
            let got = w.tensor_f32(&spec.name, &spec.shape).unwrap();
            let want: Vec<f32> = (0..got.len()).map(|i| value(t, i)).collect();
            assert_eq!(got, want, "{}", spec.name);
            if spec.dtype == Dtype::F16 {
                let view = w.tensor_f16(&spec.name, &spec.shape).unwrap();
                assert!(view.iter().zip(&want).all(|(h, &f)| h.to_f32() == f));
            }
        }
        let key = names::weight(&names::attn_proj(
            Stack::Decoder,
            0,
            AttnKind::Cross,
            Proj::Key,
        ));
        assert!(w.tensor_info(&key).is_some());
        assert!(w
            .tensor_info(&names::bias(&names::attn_proj(
                Stack::Decoder,
                0,
                AttnKind::Cross,
                Proj::Key
            )))
            .is_none());
    }

    #[test]
    fn wrong_requests_name_the_tensor() {
        let w = open_bytes(&small_file()).unwrap();
        let name = names::TOKEN_EMBEDDING;
        match w.tensor_f32(name, &[1521, 5]) {
            Err(LoadError::Shape {
                name: n,
                expected,
                got,
                ..
            }) => assert_eq!(
                (n.as_str(), expected, got),
                (name, vec![1521, 5], vec![1521, 4])
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            w.tensor_f32("decoder.nope", &[1]),
            Err(LoadError::MissingTensor { name, .. }) if name == "decoder.nope"
        ));
        assert!(matches!(
            w.tensor_f16(names::MEL_FILTERS, &[2, 201]),
            Err(LoadError::Dtype {
                expected: Dtype::F16,
                got: Dtype::F32,
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_is_a_truncated_error() {
        let bytes = small_file();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(211).collect();
        cuts.extend([1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, bytes.len() - 1]);
        for cut in cuts {
            match open_bytes(&bytes[..cut]) {
                Err(LoadError::Truncated { needed, len, .. }) => {
                    assert_eq!(len, cut as u64);
                    assert!(needed > len);
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn framing_errors_are_not_safetensors() {
        let good = small_file();
        // Hostile header lengths: huge, and just over the limit.
        for n in [u64::MAX, MAX_HEADER_LEN + 1] {
            let mut b = good.clone();
            b[..8].copy_from_slice(&n.to_le_bytes());
            assert!(matches!(
                open_bytes(&b),
                Err(LoadError::NotSafetensors { offset: 0, .. })
            ));
        }
        // Header JSON broken.
        let mut b = good.clone();
        b[8] = b'[';
        assert!(matches!(
            open_bytes(&b),
            Err(LoadError::NotSafetensors { offset: 8, .. })
        ));
        // Header not UTF-8.
        let mut b = good.clone();
        b[12] = 0xff;
        assert!(matches!(
            open_bytes(&b),
            Err(LoadError::NotSafetensors { offset: 12, .. })
        ));
        // Trailing bytes.
        let mut b = good.clone();
        b.extend_from_slice(&[0, 0]);
        assert!(matches!(
            open_bytes(&b),
            Err(LoadError::NotSafetensors { offset, .. }) if offset == good.len() as u64
        ));
        // Empty file.
        assert!(matches!(
            open_bytes(&[]),
            Err(LoadError::Truncated {
                needed: 8,
                len: 0,
                ..
            })
        ));
    }

    #[test]
    fn metadata_errors_name_the_key() {
        let c = small_config();
        let tensors = small_tensors(&c);
        let with = |edit: &dyn Fn(&mut HashMap<String, String>)| {
            let mut meta = small_metadata(&c);
            edit(&mut meta);
            open_bytes(&serialize(&tensors, meta))
        };
        assert!(matches!(
            with(&|m| {
                m.insert(keys::FORMAT_VERSION.into(), "4".into());
            }),
            Err(LoadError::UnsupportedFormatVersion { found, .. }) if found == "4"
        ));
        let key_of = |r: Result<WeightsFile, LoadError>| match r {
            Err(LoadError::BadMetadata { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key_of(with(&|m| {
                m.insert(keys::FORMAT.into(), "gguf".into());
            })),
            keys::FORMAT
        );
        assert_eq!(
            key_of(with(&|m| {
                m.remove(keys::FORMAT);
            })),
            keys::FORMAT
        );
        assert_eq!(
            key_of(with(&|m| {
                m.remove(keys::TOKENIZER_JSON);
            })),
            keys::TOKENIZER_JSON
        );
        assert_eq!(
            key_of(with(&|m| {
                m.insert(keys::DIMS.into(), "{".into());
            })),
            keys::DIMS
        );
        assert_eq!(
            key_of(with(&|m| {
                m.insert(keys::SUPPRESS_IDS.into(), "[99999]".into());
            })),
            keys::SUPPRESS_IDS
        );
        // No metadata at all.
        let views = tensors.iter().map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        });
        let b = safetensors::serialize(views, None).unwrap();
        assert_eq!(key_of(open_bytes(&b)), keys::FORMAT);
    }

    #[test]
    fn tensor_table_errors_name_the_tensor() {
        let c = small_config();
        let meta = small_metadata(&c);
        let name = names::weight(&names::mlp(Stack::Encoder, 0, true));

        let mut t = small_tensors(&c);
        t.retain(|t| t.name != name);
        assert!(matches!(
            open_bytes(&serialize(&t, meta.clone())),
            Err(LoadError::MissingTensor { name: n, .. }) if n == name
        ));

        let mut t = small_tensors(&c);
        let x = t.iter_mut().find(|t| t.name == name).unwrap();
        x.shape = vec![16, 4]; // [d, 4d] stored transposed
        assert!(matches!(
            open_bytes(&serialize(&t, meta.clone())),
            Err(LoadError::Shape { name: n, expected, got, .. })
                if n == name && expected == vec![4, 16] && got == vec![16, 4]
        ));

        let mut t = small_tensors(&c);
        let x = t.iter_mut().find(|t| t.name == name).unwrap();
        x.dtype = Dtype::BF16;
        assert!(matches!(
            open_bytes(&serialize(&t, meta.clone())),
            Err(LoadError::Dtype { name: n, got: Dtype::BF16, .. }) if n == name
        ));

        // Extra tensors are allowed.
        let mut t = small_tensors(&c);
        t.push(Tensor {
            name: "extra".into(),
            dtype: Dtype::U8,
            shape: vec![3],
            data: vec![1, 2, 3],
        });
        assert!(open_bytes(&serialize(&t, meta)).is_ok());
    }

    #[test]
    fn the_io_error_names_the_path() {
        let path = Path::new("/nonexistent/amanuensis/model.safetensors");
        match WeightsFile::open(path) {
            Err(e @ LoadError::Io { .. }) => {
                assert!(e
                    .to_string()
                    .contains("/nonexistent/amanuensis/model.safetensors"))
            }
            other => panic!("{other:?}"),
        }
    }
}
