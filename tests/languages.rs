//! Language identification and the multilingual prompt against faster-whisper (base, float32):
//! speech that espeak-ng made in French, German and Spanish (tests/goldens/languages/, made by
//! make_language_goldens.py, FLAC so the samples are exact) gives the same detected language,
//! its probability within 1e-3 (CTranslate2's float32 encoder differs from ours by ~1e-4
//! relative, which moves a softmax probability by far less), and the same first-window tokens.

mod common;

use std::sync::Arc;

use amanuensis::model::audio::AudioInput;
use amanuensis::model::mel_windows::StreamedLogMel;
use amanuensis::model::session::{Session, TranscribeOptions};

#[test]
fn detected_language_and_first_window_equal_faster_whisper() {
    let dir = common::goldens_dir().join("languages");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("languages.json")).unwrap())
            .unwrap();
    let path =
        amanuensis::model_path::resolve_model(Some("base")).unwrap_or_else(|e| panic!("{e}"));
    let model = amanuensis::load_cpu(&path, 2).unwrap();
    let mut session = Session::new(Arc::clone(&model)).unwrap();
    for name in ["fr", "de", "es"] {
        let want = &golden[name];
        let input = AudioInput::File(dir.join(format!("{name}.flac")));
        let mut mel = StreamedLogMel::open(&input, &model.mel).unwrap();
        let detected = session.detect_language(&mut mel).unwrap();
        assert_eq!(detected.code, want["language"].as_str().unwrap(), "{name}");
        let p = want["language_probability"].as_f64().unwrap();
        assert!(
            (detected.probability - p).abs() < 1e-3,
            "{name}: probability {} vs faster-whisper {p}",
            detected.probability
        );
        let opts = TranscribeOptions {
            language: detected.code.clone(),
            condition_on_previous_text: false,
            // The goldens are faster-whisper's at temperature 0.
            fallback: amanuensis::model::decode::fallback::FallbackOptions::off(),
            ..Default::default()
        };
        let mut mel = StreamedLogMel::open(&input, &model.mel).unwrap();
        let t = session
            .transcribe_windows(&mut mel, &opts, &mut |_| {})
            .unwrap();
        let first_seek = t.segments.first().map_or(0, |s| s.seek);
        let tokens: Vec<u64> = t
            .segments
            .iter()
            .filter(|s| s.seek == first_seek)
            .flat_map(|s| s.tokens.iter().map(|&t| t as u64))
            .collect();
        let want_tokens: Vec<u64> = want["first_window_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(tokens, want_tokens, "{name}: {}", t.text());
    }
}
