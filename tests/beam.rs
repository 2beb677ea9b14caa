//! Beam search (beam 5, faster-whisper's default) against faster-whisper 1.2.1's own beam
//! search (float32, temperature 0, patience 1, length penalty 1) on the same weights: every
//! segment's tokens, times and text, and avg_logprob within 2e-3. Goldens:
//! tests/goldens/fw_<model>_beam5.json, made by tests/goldens/make_beam_goldens.py. The INT8
//! path's beam search is held to WER (tests/int8.rs style) instead: its tokens may differ.
//!
//! Needs the converted models (scripts/setup-models.sh tiny.en base).

mod common;

use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, TranscribeOptions};
use amanuensis::model_path::resolve_model;

fn check(model_name: &str) {
    let goldens: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/goldens/fw_{}_beam5.json",
            env!("CARGO_MANIFEST_DIR"),
            model_name.replace('.', "_")
        ))
        .unwrap(),
    )
    .unwrap();
    let path = resolve_model(Some(model_name)).unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let model = amanuensis::load_cpu(&path, threads).unwrap();
    let mut session = Session::new(Arc::clone(&model)).unwrap();
    let opts = TranscribeOptions {
        beam_size: 5,
        ..Default::default()
    };
    for (file, want) in goldens.as_object().unwrap() {
        let audio = load_wav(&common::speech(file)).unwrap();
        let t = session.transcribe(&audio, &opts).unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(
            t.segments.len(),
            want.len(),
            "{model_name} {file}: segment count"
        );
        for (i, (s, w)) in t.segments.iter().zip(want).enumerate() {
            let tokens: Vec<u32> = w["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(s.tokens, tokens, "{model_name} {file} segment {i}: tokens");
            assert_eq!(s.start, w["start"].as_f64().unwrap(), "{file} {i}: start");
            assert_eq!(s.end, w["end"].as_f64().unwrap(), "{file} {i}: end");
            assert_eq!(s.text, w["text"].as_str().unwrap(), "{file} {i}: text");
            let lp = w["avg_logprob"].as_f64().unwrap();
            assert!(
                (s.avg_logprob - lp).abs() < 2e-3,
                "{file} {i}: avg_logprob {} vs {lp}",
                s.avg_logprob
            );
        }
    }
}

#[test]
fn tiny_en_beam5_matches_faster_whisper() {
    check("tiny.en");
}

#[test]
fn base_beam5_matches_faster_whisper() {
    check("base");
}
