//! Checksums of a model file (format_version 2, `docs/model-format.md`, "Checksums"): the
//! CRC-32 of every tensor's data bytes (`tensor_crc32`) and of the other metadata entries
//! (`metadata_crc32`), written by the converter and checked on request by
//! [`WeightsFile::verify`] (`weights-tools inspect --verify`, `amanuensis transcribe
//! --verify-model`).
//!
//! CRC-32 is the IEEE 802.3 polynomial, as zlib's `crc32` and Python's `zlib.crc32`, computed
//! by `crc32fast` (PCLMULQDQ folding on x86-64). It detects every burst error up to 32 bits and
//! all but 2⁻³² of random damage per tensor; it is no defence against a deliberate forgery (the
//! file is trusted like the program itself). Per tensor, so a mismatch names the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::{keys, FORMAT_VERSION_NO_CHECKSUMS};
use crate::load_error::LoadError;
use crate::weights::WeightsFile;

/// CRC-32 (IEEE) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// CRC-32 of the metadata entries other than `metadata_crc32` itself, in key order, each as
/// `key 0x00 value 0x00` (so moving bytes between a key and its value changes it).
pub fn metadata_crc32(metadata: &HashMap<String, String>) -> u32 {
    let mut entries: Vec<(&String, &String)> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != keys::METADATA_CRC32)
        .collect();
    entries.sort();
    let mut h = crc32fast::Hasher::new();
    for (k, v) in entries {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.finalize()
}

/// The `tensor_crc32` value for `(name, crc)` pairs: a JSON object with sorted keys.
pub fn tensor_table_json<'a>(entries: impl IntoIterator<Item = (&'a str, u32)>) -> String {
    let table: BTreeMap<&str, u32> = entries.into_iter().collect();
    serde_json::to_string(&table).expect("a map of strings to numbers serialises")
}

/// Whether the file carries checksums (`format_version` 2).
pub fn has_checksums(metadata: &HashMap<String, String>) -> bool {
    metadata
        .get(keys::FORMAT_VERSION)
        .is_some_and(|v| v != FORMAT_VERSION_NO_CHECKSUMS)
}

/// The parsed checksums: per tensor, and of the metadata.
struct Table {
    tensors: BTreeMap<String, u32>,
    metadata: u32,
}

fn parse_table(path: &Path, metadata: &HashMap<String, String>) -> Result<Table, LoadError> {
    let bad = |key: &str, reason: String| LoadError::BadMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let tensors = metadata
        .get(keys::TENSOR_CRC32)
        .ok_or_else(|| bad(keys::TENSOR_CRC32, "missing (format_version 2)".into()))?;
    let tensors: BTreeMap<String, u32> = serde_json::from_str(tensors).map_err(|e| {
        bad(
            keys::TENSOR_CRC32,
            format!("not a JSON object of tensor name → u32: {e}"),
        )
    })?;
    let m = metadata
        .get(keys::METADATA_CRC32)
        .ok_or_else(|| bad(keys::METADATA_CRC32, "missing (format_version 2)".into()))?;
    let metadata = m
        .parse::<u32>()
        .map_err(|e| bad(keys::METADATA_CRC32, format!("{m:?}: {e}")))?;
    Ok(Table { tensors, metadata })
}

/// At open: a version-2 file's checksum entries parse and name exactly the file's tensors
/// (no data is read).
pub(crate) fn check_table<'a>(
    path: &Path,
    metadata: &HashMap<String, String>,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), LoadError> {
    if !has_checksums(metadata) {
        return Ok(());
    }
    let table = parse_table(path, metadata)?;
    let mut n = 0;
    for name in names {
        n += 1;
        if !table.tensors.contains_key(name) {
            return Err(LoadError::BadMetadata {
                path: path.to_path_buf(),
                key: keys::TENSOR_CRC32.into(),
                reason: format!("no checksum for tensor `{name}`"),
            });
        }
    }
    if n != table.tensors.len() {
        return Err(LoadError::BadMetadata {
            path: path.to_path_buf(),
            key: keys::TENSOR_CRC32.into(),
            reason: format!(
                "{} checksums for {n} tensors (names a tensor the file does not have)",
                table.tensors.len()
            ),
        });
    }
    Ok(())
}

/// What [`WeightsFile::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Every tensor and the metadata match their checksums.
    Verified {
        /// Tensors checked.
        tensors: usize,
        /// Bytes of tensor data read.
        bytes: u64,
    },
    /// A format_version 1 file: nothing to check against.
    NoChecksums,
}

/// What to say about a file without checksums.
pub const NO_CHECKSUMS: &str =
    "no checksum in this file (format_version 1); re-run scripts/setup-models.sh (or convert it \
     again) to get one";

impl WeightsFile {
    /// Reads every tensor's bytes and the metadata and compares their CRC-32 with the file's
    /// checksums: the first mismatch is [`LoadError::ChecksumMismatch`] naming the tensor.
    /// `Ok(NoChecksums)` for a format_version 1 file.
    pub fn verify(&self) -> Result<Verification, LoadError> {
        let metadata = self.metadata();
        if !has_checksums(metadata) {
            return Ok(Verification::NoChecksums);
        }
        let path = self.path();
        let table = parse_table(path, metadata)?;
        let got = metadata_crc32(metadata);
        if got != table.metadata {
            return Err(LoadError::ChecksumMismatch {
                path: path.to_path_buf(),
                what: "the metadata".into(),
                expected: table.metadata,
                got,
            });
        }
        let mut bytes = 0u64;
        for (name, &expected) in &table.tensors {
            let data = self
                .tensor_bytes(name)
                .ok_or_else(|| LoadError::MissingTensor {
                    path: path.to_path_buf(),
                    name: name.clone(),
                })?;
            let got = crc32(data);
            // A mapping that faulted reads zeros: say so rather than "damaged".
            self.check_mapping()?;
            if got != expected {
                return Err(LoadError::ChecksumMismatch {
                    path: path.to_path_buf(),
                    what: format!("tensor `{name}`"),
                    expected,
                    got,
                });
            }
            bytes += data.len() as u64;
        }
        Ok(Verification::Verified {
            tensors: table.tensors.len(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        // Python: zlib.crc32(b"123456789") == 0xCBF43926 (the CRC-32 check value).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn metadata_crc_covers_keys_and_values_but_not_itself() {
        let mut m: HashMap<String, String> = [("a", "xy"), ("b", "z")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let base = metadata_crc32(&m);
        assert_eq!(base, crc32(b"a\0xy\0b\0z\0"));
        m.insert(keys::METADATA_CRC32.into(), "123".into());
        assert_eq!(metadata_crc32(&m), base);
        m.insert("a".into(), "x".into());
        m.insert("b".into(), "yz".into());
        assert_ne!(metadata_crc32(&m), base);
    }

    #[test]
    fn table_json_is_sorted() {
        assert_eq!(
            tensor_table_json([("b", 2), ("a", 4_294_967_295)]),
            r#"{"a":4294967295,"b":2}"#
        );
    }
}
