//! Helpers shared by the root package's integration tests: where the shared speech set lives, the
//! faster-whisper golden values (tests/goldens/, made by tests/goldens/make_goldens.py), and a
//! corpus WER with a Rust port of Whisper's English text normaliser.
//!
//! Use from an integration test with `mod common;`.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset of these helpers

mod english_normalizer;
mod goldens;
pub mod signals;
mod wer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use english_normalizer::normalize_english;
pub use goldens::{
    Golden, GoldenAudio, GoldenEncoder, GoldenFrame, GoldenMel, GoldenMeta, GoldenSegment,
};
pub use wer::{wer, wer_counts, word_edit_distance, WerCounts};

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared read-only material beside the repository: `<repo>/../shared`.
pub fn shared_dir() -> PathBuf {
    repo_root().join("..").join("shared")
}

/// Path of a file of the shared speech set, e.g. `speech("jfk.wav")`.
pub fn speech(name: &str) -> PathBuf {
    shared_dir().join("speech").join(name)
}

/// The golden directory, `tests/goldens/`.
pub fn goldens_dir() -> PathBuf {
    repo_root().join("tests").join("goldens")
}

/// Reads a whole text file, panicking with the path in the message (tests only).
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Parses `file<TAB>text` lines; blank lines are skipped, a line without a tab panics.
pub fn parse_tsv(text: &str, what: &str) -> Vec<(String, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let (a, b) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("{what}: line {} has no tab: {l:?}", i + 1));
            (a.to_string(), b.to_string())
        })
        .collect()
}

/// `(wav file name, reference transcript)` for every file of `../shared/speech/refs.tsv`, in order.
pub fn refs() -> Vec<(String, String)> {
    let path = shared_dir().join("speech").join("refs.tsv");
    parse_tsv(&read_text(&path), &path.display().to_string())
}

/// The golden values of faster-whisper for `model` ("tiny.en" or "base") on a speech file
/// (`"jfk.wav"` or `"jfk"`). Panics if that golden was not generated.
pub fn golden(model: &str, file: &str) -> Golden {
    let stem = file.strip_suffix(".wav").unwrap_or(file);
    let path = goldens_dir().join(model).join(format!("{stem}.json"));
    serde_json::from_str(&read_text(&path))
        .unwrap_or_else(|e| panic!("parsing golden {}: {e}", path.display()))
}

/// faster-whisper's float32 greedy transcript of every file of refs.tsv, keyed by file name:
/// `tests/goldens/fw_<model with '.' -> '_'>_greedy.tsv` (e.g. `fw_tiny_en_greedy.tsv`).
pub fn fw_transcripts(model: &str) -> HashMap<String, String> {
    let path = goldens_dir().join(format!("fw_{}_greedy.tsv", model.replace('.', "_")));
    parse_tsv(&read_text(&path), &path.display().to_string())
        .into_iter()
        .collect()
}

/// Cosine similarity of two equally long vectors, accumulated in f64. Zero vectors give 0.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Euclidean norm accumulated in f64 (the goldens' `frame_norms` are computed the same way).
pub fn l2_norm(a: &[f32]) -> f64 {
    a.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}
