//! Why a model file could not be loaded. Every variant names the file, and the tensor, key or
//! byte offset at fault.

use std::path::PathBuf;

pub use safetensors::Dtype;

/// A model file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file (bad header length, header not UTF-8 JSON,
    /// inconsistent tensor offsets, bytes after the last tensor).
    #[error("{path}: not a safetensors file: {reason} (at byte {offset})")]
    NotSafetensors {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The file ends before the data its header declares.
    #[error("{path}: truncated: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        len: u64,
    },
    /// A metadata entry is missing or invalid.
    #[error("{path}: metadata `{key}`: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// `format_version` is not one this code reads.
    #[error("{path}: format_version {found:?} is not supported (this build reads {supported})")]
    UnsupportedFormatVersion {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },
    /// A tensor the config implies is absent.
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("{path}: tensor `{name}` is {got:?}, expected {expected:?}")]
    Dtype {
        path: PathBuf,
        name: String,
        expected: Dtype,
        got: Dtype,
    },
    /// An INT8 weight tensor's data or scales break the tile layout's rules.
    #[error("{path}: INT8 tensor `{name}`: {reason}")]
    BadQuantized {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A tensor's contents break the format's rules (e.g. the stored decoding table).
    #[error("{path}: tensor `{name}`: {reason}")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A checksum of the file (format_version 2) does not match its bytes: the file was
    /// damaged or changed after it was written.
    #[error(
        "{path}: {what} fails its checksum (CRC-32 {got:08x}, written {expected:08x}): the file \
         is damaged or was changed after conversion; re-run scripts/setup-models.sh (or convert \
         it again)"
    )]
    ChecksumMismatch {
        path: PathBuf,
        /// `tensor `NAME`` or `the metadata`.
        what: String,
        expected: u32,
        got: u32,
    },
    /// The file changed under the memory map while in use (truncated, or unreadable: the
    /// kernel raised SIGBUS on the mapped pages, caught by `amanuensis_runtime::mapped_file`).
    #[error(
        "{path}: the model file changed while in use (truncated or unreadable at byte {offset} \
         of the mapping); do not replace or truncate a model file in place while it is loaded, \
         or load with --no-mmap"
    )]
    ChangedWhileMapped { path: PathBuf, offset: u64 },
    /// A tensor's data is not aligned for its element type (a zero-copy view is impossible).
    #[error("{path}: tensor `{name}` data at byte {offset} is not aligned for {dtype:?}")]
    Misaligned {
        path: PathBuf,
        name: String,
        offset: u64,
        dtype: Dtype,
    },
}
