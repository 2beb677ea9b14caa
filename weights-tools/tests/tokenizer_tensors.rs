//! The tokenizer's tensors of format_version 3 on the small synthetic model: the converter
//! stores the JSON and the id → bytes decoding table built from it; the loader reads the table
//! in place and it decodes every id as the table built from the JSON does (the check against
//! the BPE on the real vocabularies is `tests/decode_table.rs` at the root); files of versions 1
//! and 2 (tokenizer in the metadata) still load and decode the same; a damaged, truncated or
//! missing table tensor is a named error at open, never a panic.

mod common;

use std::path::PathBuf;

use amanuensis_model::config::{keys, FORMAT_VERSION};
use amanuensis_model::names;
use amanuensis_model::tokenizer::{DecodeTable, Tokenizer};
use amanuensis_model::weights::{Dtype, LoadError, WeightsFile};
use common::{ModelFileParts, SynthCt2, TempDir};
use weights_tools::{convert, SourceKind};

fn synth_model(tmp: &TempDir) -> PathBuf {
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    SynthCt2::new().write(&src);
    let out = tmp.path().join("m.safetensors");
    convert(&src, SourceKind::Ct2, &out).unwrap();
    out
}

fn open(tmp: &TempDir, name: &str, bytes: &[u8]) -> Result<WeightsFile, LoadError> {
    let p = tmp.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    WeightsFile::open(&p)
}

/// Every id's bytes (and a few past the table), as the tokenizer of `w` decodes them.
fn decoded(w: &WeightsFile) -> Vec<Vec<u8>> {
    let t = Tokenizer::from_file(w, w.config().special).unwrap();
    let n = common::N_VOCAB as u32 + 5;
    (0..n)
        .map(|id| t.decode_table().bytes(id).to_vec())
        .collect()
}

#[test]
fn the_stored_table_is_the_jsons_and_old_versions_decode_the_same() {
    let tmp = TempDir::new("tok3");
    let path = synth_model(&tmp);
    let w = WeightsFile::open(&path).unwrap();
    assert_eq!(w.metadata()[keys::FORMAT_VERSION], FORMAT_VERSION);
    assert!(w.has_tokenizer_tensors());
    assert!(
        !w.metadata().contains_key(keys::TOKENIZER_JSON),
        "the JSON is out of the header"
    );
    let json = w.tokenizer_json().unwrap();
    assert_eq!(json, SynthCt2::new().tokenizer_json);
    let built = DecodeTable::from_json(json).unwrap();
    let stored = w.decode_table().unwrap().expect("a stored table");
    assert_eq!(stored.ends(), built.ends());
    assert_eq!(stored.blob(), built.blob());
    assert_eq!(
        w.tensor_info(names::DECODE_ENDS),
        Some((Dtype::U32, vec![built.len()]))
    );
    let v3 = decoded(&w);
    assert_eq!(v3[0], b"t0");
    assert!(v3[common::EOT as usize].is_empty(), "a special token");

    let bytes = std::fs::read(&path).unwrap();
    for version in ["2", "1"] {
        let old = ModelFileParts::read(&bytes).downgraded(version).write();
        let w = open(&tmp, &format!("v{version}.safetensors"), &old).unwrap();
        assert!(!w.has_tokenizer_tensors());
        assert!(w.decode_table().unwrap().is_none());
        assert_eq!(w.tokenizer_json().unwrap(), json);
        assert_eq!(decoded(&w), v3, "version {version}");
        if version == "2" {
            w.verify().unwrap();
        }
    }
}

#[test]
fn a_bad_table_tensor_is_a_named_error_at_open() {
    let tmp = TempDir::new("tokbad");
    let bytes = std::fs::read(synth_model(&tmp)).unwrap();
    let edited = |edit: &dyn Fn(&mut ModelFileParts)| {
        let mut parts = ModelFileParts::read(&bytes);
        edit(&mut parts);
        open(&tmp, "bad.safetensors", &parts.write())
    };
    let bad_tensor = |r: Result<WeightsFile, LoadError>| match r {
        Err(e @ LoadError::BadTensor { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(names::DECODE_ENDS), "{msg}");
            msg
        }
        other => panic!("{other:?}"),
    };
    // Ends out of order.
    let msg = bad_tensor(edited(&|p| {
        let ends = p.data_mut(names::DECODE_ENDS);
        ends[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    }));
    assert!(msg.contains("before the previous end"), "{msg}");
    // The bytes truncated (one byte short of the last end).
    let msg = bad_tensor(edited(&|p| {
        p.data_mut(names::DECODE_BYTES).pop();
    }));
    assert!(msg.contains("the last end"), "{msg}");
    // The ends truncated to 5 ids (text ids lost: the last end no longer covers the bytes).
    let msg = bad_tensor(edited(&|p| p.data_mut(names::DECODE_ENDS).truncate(4 * 5)));
    assert!(msg.contains("the last end"), "{msg}");
    // A tensor missing, of the wrong dtype, empty JSON, JSON not UTF-8.
    assert!(matches!(
        edited(&|p| p.tensors.retain(|t| t.0 != names::DECODE_BYTES)),
        Err(LoadError::MissingTensor { name, .. }) if name == names::DECODE_BYTES
    ));
    assert!(matches!(
        edited(&|p| {
            let t = p.tensors.iter_mut().find(|t| t.0 == names::DECODE_ENDS).unwrap();
            t.1 = Dtype::I32;
        }),
        Err(LoadError::Dtype { name, got: Dtype::I32, .. }) if name == names::DECODE_ENDS
    ));
    assert!(matches!(
        edited(&|p| p.data_mut(names::TOKENIZER_JSON).clear()),
        Err(LoadError::BadTensor { name, .. }) if name == names::TOKENIZER_JSON
    ));
    let w = edited(&|p| p.data_mut(names::TOKENIZER_JSON)[0] = 0xff).unwrap();
    assert!(matches!(
        w.tokenizer_json(),
        Err(LoadError::BadTensor { name, .. }) if name == names::TOKENIZER_JSON
    ));
    // The BPE (built from the JSON on first use) says so too, without a panic.
    let t = Tokenizer::from_file(&w, w.config().special).unwrap();
    assert!(t.encode("a").is_err());
    // The file cut anywhere inside the table: a truncation error, never a panic.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in [8 + n + 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(
            open(&tmp, "cut.safetensors", &bytes[..cut]),
            Err(LoadError::Truncated { .. })
        ));
    }
}
