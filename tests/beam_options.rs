//! Beam search patience and length penalty against faster-whisper 1.2.1 (`beam_size` 5;
//! goldens in `tests/goldens/beam_options/`, made by `make_beam_options_goldens.py`): the f32
//! path (tiny.en, faster-whisper's arithmetic) gives faster-whisper's tokens for every run
//! whose output the options change, and for all option sets on jfk. The goldens hold at least
//! one changed transcript, so options that did nothing would fail.

mod common;

use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::decode::fallback::FallbackOptions;
use amanuensis::model::decode::BeamOptions;
use amanuensis::model::session::{GuardOptions, Session, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_backend::CpuBackend;

#[test]
fn patience_and_length_penalty_match_faster_whisper() {
    let path = common::goldens_dir().join("beam_options/tiny.en.json");
    let doc: serde_json::Value = serde_json::from_str(&common::read_text(&path)).unwrap();
    let runs: Vec<&serde_json::Value> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["differs_from_default"].as_bool().unwrap() || r["file"] == "jfk.wav")
        .collect();
    assert!(
        runs.iter()
            .any(|r| r["differs_from_default"].as_bool().unwrap()),
        "the goldens no longer show the options at work"
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let model_path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Whisper::load(&model_path, CpuBackend::new(threads)).unwrap());
    let mut session = Session::new(model).unwrap();
    for run in runs {
        let file = run["file"].as_str().unwrap();
        let options = BeamOptions {
            patience: run["patience"].as_f64().unwrap() as f32,
            length_penalty: run["length_penalty"].as_f64().unwrap() as f32,
        };
        let opts = TranscribeOptions {
            beam_size: 5,
            beam_options: options,
            fallback: FallbackOptions::off(),
            guards: GuardOptions::off(),
            ..Default::default()
        };
        let audio = load_wav(&common::speech(file)).unwrap();
        let t = session.transcribe(&audio, &opts).unwrap();
        let ours: Vec<Vec<u32>> = t.segments.iter().map(|s| s.tokens.clone()).collect();
        let want: Vec<Vec<u32>> = run["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        assert_eq!(ours, want, "{file} with {options:?}");
        // avg_logprob: faster-whisper undoes the penalty in f64 from CTranslate2's f32 score.
        for (s, w) in t.segments.iter().zip(run["segments"].as_array().unwrap()) {
            let want = w["avg_logprob"].as_f64().unwrap();
            assert!(
                (s.avg_logprob - want).abs() < 1e-4,
                "{file} with {options:?}: avg_logprob {} vs {want}",
                s.avg_logprob
            );
        }
    }
}

#[test]
fn cli_refuses_a_patience_that_keeps_no_hypothesis() {
    let bin = env!("CARGO_BIN_EXE_amanuensis");
    let jfk = common::speech("jfk.wav");
    for (args, message) in [
        (
            &["--beam-size", "2", "--patience", "0.2"][..],
            "--patience 0.2",
        ),
        (&["--patience", "0"], "--patience 0"),
        (&["--length-penalty", "inf"], "--length-penalty inf"),
    ] {
        let o = std::process::Command::new(bin)
            .arg("transcribe")
            .arg(&jfk)
            .args(["-m", "tiny.en", "-q"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
