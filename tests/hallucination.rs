//! `hallucination_silence_threshold` against faster-whisper 1.2.1 (goldens in
//! `tests/goldens/hallucination/`, made by `make_hallucination_goldens.py`, which builds the
//! same audio): ls-1089-134686-0000, 20 s of low noise, ls-61-70968-0000. There faster-whisper
//! without the threshold places the first file's words after the noise; with 2 s it takes that
//! segment for a hallucination between silences, drops it and decodes on from it.
//!
//! On the f32 path (tiny.en, faster-whisper's arithmetic) with faster-whisper's settings
//! (guards off, word timestamps), for each threshold: the same segment texts, and starts and
//! ends within 0.2 s (the word-timestamp tolerance of `tests/words.rs`). The two golden runs
//! differ, so a threshold that did nothing would fail.

mod common;

use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{GuardOptions, Session, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_backend::CpuBackend;

const TOLERANCE: f64 = 0.2;

/// The golden script's LCG noise: uniform integers in [-amplitude, amplitude], as 16-bit
/// samples / 32768.
fn lcg_noise(n: usize, amplitude: u32) -> Vec<f32> {
    let mut x: u64 = 1;
    (0..n)
        .map(|_| {
            x = (x * 1_103_515_245 + 12_345) & 0x7FFF_FFFF;
            let v = ((x >> 8) % (2 * amplitude as u64 + 1)) as i32 - amplitude as i32;
            v as f32 / 32768.0
        })
        .collect()
}

struct Run {
    threshold: Option<f64>,
    segments: Vec<(f64, f64, String)>,
}

fn goldens() -> (Vec<f32>, Vec<Run>) {
    let path = common::goldens_dir().join("hallucination/tiny.en.json");
    let doc: serde_json::Value = serde_json::from_str(&common::read_text(&path)).unwrap();
    let a = &doc["meta"]["audio"];
    let mut audio = load_wav(&common::speech(a["before"].as_str().unwrap())).unwrap();
    let noise_seconds = a["noise_seconds"].as_u64().unwrap() as usize;
    let amplitude = a["noise_amplitude"].as_u64().unwrap() as u32;
    audio.extend(lcg_noise(16_000 * noise_seconds, amplitude));
    audio.extend(load_wav(&common::speech(a["after"].as_str().unwrap())).unwrap());
    let runs = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Run {
            threshold: r["threshold"].as_f64(),
            segments: r["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["start"].as_f64().unwrap(),
                        s["end"].as_f64().unwrap(),
                        s["text"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        })
        .collect();
    (audio, runs)
}

#[test]
fn noise_between_speech_matches_faster_whisper_with_and_without_the_threshold() {
    let (audio, runs) = goldens();
    assert_eq!(runs.len(), 2);
    assert_ne!(
        runs[0].segments, runs[1].segments,
        "the goldens no longer show the threshold at work"
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Whisper::load(&path, CpuBackend::new(threads)).unwrap());
    let mut session = Session::new(model).unwrap();
    for run in &runs {
        let opts = TranscribeOptions {
            word_timestamps: true,
            hallucination_silence_threshold: run.threshold,
            guards: GuardOptions::off(),
            ..Default::default()
        };
        let t = session.transcribe(&audio, &opts).unwrap();
        let ours: Vec<(f64, f64, String)> = t
            .segments
            .iter()
            .map(|s| (s.start, s.end, s.text.clone()))
            .collect();
        let texts = |v: &[(f64, f64, String)]| v.iter().map(|s| s.2.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(&ours),
            texts(&run.segments),
            "threshold {:?}: segment texts",
            run.threshold
        );
        for (o, g) in ours.iter().zip(&run.segments) {
            assert!(
                (o.0 - g.0).abs() <= TOLERANCE && (o.1 - g.1).abs() <= TOLERANCE,
                "threshold {:?}: segment {:?} vs faster-whisper {:?}",
                run.threshold,
                (o.0, o.1),
                (g.0, g.1)
            );
        }
    }
}
