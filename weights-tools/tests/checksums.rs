//! Model-file checksums (format_version 2 and 3) on the small synthetic model: the converter writes
//! them, `verify` and `inspect --verify` find a changed tensor byte or metadata byte and name
//! it, a version-1 file (no checksums) still loads and says it cannot be verified, and a file
//! truncated while mapped is a named error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use amanuensis_model::checksum::Verification;
use amanuensis_model::names;
use amanuensis_model::weights::{LoadError, WeightsFile};
use common::{SynthCt2, TempDir};
use weights_tools::{convert, ConvertError, SourceKind};

fn synth_model(tmp: &TempDir) -> PathBuf {
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    SynthCt2::new().write(&src);
    let out = tmp.path().join("m.safetensors");
    convert(&src, SourceKind::Ct2, &out).unwrap();
    out
}

/// The file offset of tensor `name`'s first data byte and its length.
fn tensor_range(bytes: &[u8], name: &str) -> (usize, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offs = &header[name]["data_offsets"];
    let (a, b) = (
        offs[0].as_u64().unwrap() as usize,
        offs[1].as_u64().unwrap() as usize,
    );
    (8 + n + a, b - a)
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in the file", String::from_utf8_lossy(from)));
    let mut b = bytes.to_vec();
    b[at..at + to.len()].copy_from_slice(to);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn weights_tools_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weights-tools"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_converted_file_verifies_and_any_changed_byte_is_named() {
    let tmp = TempDir::new("crc");
    let path = synth_model(&tmp);
    let w = WeightsFile::open(&path).unwrap();
    let n_tensors = w.tensor_names().count();
    assert!(
        matches!(w.verify().unwrap(), Verification::Verified { tensors, .. } if tensors == n_tensors)
    );
    let o = weights_tools_cmd(&["inspect", "--verify", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("verify: OK: metadata and"), "{text}");

    let bytes = std::fs::read(&path).unwrap();
    // One bit of one tensor: the file still opens (and would load), verify names the tensor.
    let name = names::weight(&names::mlp(names::Stack::Decoder, 0, false));
    let (start, len) = tensor_range(&bytes, &name);
    let mut bad = bytes.clone();
    bad[start + len / 2] ^= 0x01;
    let p = write(tmp.path(), "bit.safetensors", &bad);
    let w = WeightsFile::open(&p).unwrap();
    match w.verify() {
        Err(e @ LoadError::ChecksumMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("tensor `{name}`")), "{msg}");
            assert!(msg.contains("scripts/setup-models.sh"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    let o = weights_tools_cmd(&["inspect", "--verify", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("tensor `{name}` fails")));
    // Without --verify, inspect reads the header only.
    assert!(weights_tools_cmd(&["inspect", p.to_str().unwrap()])
        .status
        .success());

    // The tokenizer's tensors (format_version 3) are covered too: a byte of the stored
    // decoding table's bytes (the table stays consistent: only the checksum can tell).
    let (start, len) = tensor_range(&bytes, names::DECODE_BYTES);
    assert!(len > 0);
    let mut bad = bytes.clone();
    bad[start] ^= 0x20;
    let p = write(tmp.path(), "table-bit.safetensors", &bad);
    match WeightsFile::open(&p).unwrap().verify() {
        Err(LoadError::ChecksumMismatch { what, .. }) => {
            assert_eq!(what, format!("tensor `{}`", names::DECODE_BYTES))
        }
        other => panic!("{other:?}"),
    }
    for name in [names::TOKENIZER_JSON, names::DECODE_ENDS] {
        let (start, len) = tensor_range(&bytes, name);
        let mut bad = bytes.clone();
        // The JSON's last byte (`}` -> `|`: opens, fails its checksum); the last end offset's
        // high byte (no longer the bytes' length: refused at open, naming the tensor).
        bad[start + len - 1] ^= 0x01;
        let p = write(tmp.path(), "tok-bit.safetensors", &bad);
        match WeightsFile::open(&p).map(|w| w.verify()) {
            Ok(Err(LoadError::ChecksumMismatch { what, .. })) => {
                assert_eq!(what, format!("tensor `{name}`"))
            }
            Err(LoadError::BadTensor { name: n, .. }) => assert_eq!(n, names::DECODE_ENDS),
            other => panic!("{name}: {other:?}"),
        }
    }

    // A metadata byte (same length, still valid JSON): the metadata checksum.
    let bad = replaced(
        &bytes,
        b"\"source\":\"ctranslate2\"",
        b"\"source\":\"ctranslate3\"",
    );
    let p = write(tmp.path(), "meta.safetensors", &bad);
    match WeightsFile::open(&p).unwrap().verify() {
        Err(LoadError::ChecksumMismatch { what, .. }) => assert_eq!(what, "the metadata"),
        other => panic!("{other:?}"),
    }

    // A checksum table that misses a tensor is refused at open.
    let bad = replaced(&bytes, br#"\"mel_filters\""#, br#"\"mel_filterz\""#);
    let p = write(tmp.path(), "table.safetensors", &bad);
    match WeightsFile::open(&p) {
        Err(LoadError::BadMetadata { key, reason, .. }) => {
            assert_eq!(key, "tensor_crc32");
            assert!(reason.contains("mel_filters"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_version_1_file_loads_and_says_it_cannot_be_verified() {
    let tmp = TempDir::new("v1");
    let bytes = std::fs::read(synth_model(&tmp)).unwrap();
    let v1 = common::ModelFileParts::read(&bytes).downgraded("1").write();
    let p = write(tmp.path(), "v1.safetensors", &v1);
    let w = WeightsFile::open(&p).unwrap();
    assert_eq!(w.verify().unwrap(), Verification::NoChecksums);
    assert!(matches!(
        weights_tools::inspect::inspect_with(&p, true),
        Err(ConvertError::Unverifiable { .. })
    ));
    let text = weights_tools::inspect::inspect(&p).unwrap();
    assert!(text.contains("no checksum in this file"), "{text}");
    let o = weights_tools_cmd(&["inspect", "--verify", p.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no checksum in this file") && err.contains("scripts/setup-models.sh"),
        "{err}"
    );
}

#[test]
fn a_file_truncated_while_open_is_a_named_error() {
    let tmp = TempDir::new("trunc");
    let path = synth_model(&tmp);
    let len = std::fs::metadata(&path).unwrap().len();
    let w = WeightsFile::open(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let name = names::DECODER_LN;
    match w.tensor_f32(&names::weight(name), &[common::D]) {
        Err(e @ LoadError::ChangedWhileMapped { .. }) => {
            assert!(e.to_string().contains("changed while in use"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.verify(),
        Err(LoadError::ChangedWhileMapped { .. })
    ));
    // Read into memory, the same file is immune: the copy was taken before the truncation.
    std::fs::write(
        &path,
        std::fs::read(synth_model(&TempDir::new("trunc2"))).unwrap(),
    )
    .unwrap();
    let w = WeightsFile::open_with(&path, false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(w.tensor_f32(&names::weight(name), &[common::D]).is_ok());
    assert!(matches!(w.verify(), Ok(Verification::Verified { .. })));
}
