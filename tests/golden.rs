//! Golden tests against faster-whisper 1.2.1 (compute_type float32, greedy, temperature 0) on the
//! same CTranslate2 weights: the whole-file mel, the first window's encoder output and every
//! segment's tokens. Goldens: tests/goldens/, made by tests/goldens/make_goldens.py.
//!
//! Needs the converted models (scripts/setup-models.sh tiny.en base); a missing model fails with
//! that command in the message.

mod common;

use std::sync::{Arc, OnceLock};

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_backend::CpuBackend;

/// Files with goldens, per model.
const TINY_FILES: &[&str] = &[
    "jfk.wav",
    "ls-1089-134686-0000.wav",
    "ls-1089-134686-0001.wav",
    "ls-1221-135766-0001.wav",
    "ls-61-70968-0000.wav",
    "lj-LJ001-0001.wav",
    "lj-LJ001-0002.wav",
    "long-lj001-0001to0020.wav",
];
const BASE_FILES: &[&str] = &["jfk.wav", "long-lj001-0001to0020.wav"];

fn load(name: &str) -> Arc<Whisper<CpuBackend>> {
    let path = resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    amanuensis::load_cpu(&path, threads)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn tiny() -> Arc<Whisper<CpuBackend>> {
    static M: OnceLock<Arc<Whisper<CpuBackend>>> = OnceLock::new();
    Arc::clone(M.get_or_init(|| load("tiny.en")))
}

fn base() -> Arc<Whisper<CpuBackend>> {
    static M: OnceLock<Arc<Whisper<CpuBackend>>> = OnceLock::new();
    Arc::clone(M.get_or_init(|| load("base")))
}

/// Normalised log-mel: max abs error ≤ 1e-4 on the golden frames (the mel is ~[-1.5, 1.5];
/// 1e-4 leaves room for f32 FFT rounding, far below anything that moves a token), frame sums
/// within 80 · 1e-4 plus the golden's 6-significant-digit rounding, global stats within 1e-4.
fn check_mel(model: &Whisper<CpuBackend>, model_name: &str, file: &str) -> f64 {
    let g = common::golden(model_name, file);
    let audio = load_wav(&common::speech(file)).unwrap();
    assert_eq!(audio.len(), g.audio.n_samples, "{file}: sample count");
    let mel = model.mel.compute(&audio);
    assert_eq!(
        mel.content_frames, g.audio.content_frames,
        "{file}: content frames"
    );
    assert_eq!([mel.n_mels, mel.n_frames], g.mel.shape, "{file}: mel shape");
    let mut max_err = 0f64;
    for frame in &g.mel.frames {
        for (m, &want) in frame.values.iter().enumerate() {
            let got = mel.data[m * mel.n_frames + frame.index];
            max_err = max_err.max((got as f64 - want as f64).abs());
        }
    }
    assert!(
        max_err <= 1e-4,
        "{file}: mel max abs error {max_err:e} > 1e-4"
    );
    for (i, &want) in g.mel.frame_sums.iter().enumerate() {
        let got: f64 = (0..mel.n_mels)
            .map(|m| mel.data[m * mel.n_frames + i] as f64)
            .sum();
        let tol = 8e-3 + want.abs() * 1e-5;
        assert!(
            (got - want).abs() <= tol,
            "{file}: frame {i} sum {got} vs {want}"
        );
    }
    max_err
}

/// Encoder output of the first window: cosine ≥ 0.9999 on every golden frame and the L2 norm of
/// all 1500 frames within 0.1 % (f32 accumulation over 4-6 layers of width 384-512 drifts
/// ~1e-5 relative; 0.9999 is the bar).
fn check_encoder(model: &Arc<Whisper<CpuBackend>>, model_name: &str, file: &str) -> f64 {
    let g = common::golden(model_name, file);
    let audio = load_wav(&common::speech(file)).unwrap();
    let mel = model.mel.compute(&audio);
    let mut session = Session::new(Arc::clone(model)).unwrap();
    let mut window = vec![0.0; mel.n_mels * 3000];
    let frames = 3000.min(mel.content_frames);
    assert_eq!(frames, g.encoder.window_frames);
    assert_eq!(mel.window(0, &mut window).unwrap(), frames);
    let out = session.encode(&window).unwrap().to_vec();
    let d = g.encoder.shape[2];
    assert_eq!(out.len(), 1500 * d);
    let mut min_cos = 1f64;
    for frame in &g.encoder.frames {
        let got = &out[frame.index * d..(frame.index + 1) * d];
        min_cos = min_cos.min(common::cosine(got, &frame.values));
    }
    assert!(
        min_cos >= 0.9999,
        "{file}: encoder frame cosine {min_cos} < 0.9999"
    );
    for (i, &want) in g.encoder.frame_norms.iter().enumerate() {
        let got = common::l2_norm(&out[i * d..(i + 1) * d]);
        assert!(
            (got - want).abs() <= 1e-3 * want,
            "{file}: encoder frame {i} norm {got} vs {want}"
        );
    }
    min_cos
}

/// Every segment: identical token ids, identical times, identical text.
fn check_tokens(model: &Arc<Whisper<CpuBackend>>, model_name: &str, file: &str) {
    let g = common::golden(model_name, file);
    let audio = load_wav(&common::speech(file)).unwrap();
    let mut session = Session::new(Arc::clone(model)).unwrap();
    let t = session
        .transcribe(&audio, &TranscribeOptions::default())
        .unwrap();
    let got: Vec<(usize, f64, f64, &[u32])> = t
        .segments
        .iter()
        .map(|s| (s.seek, s.start, s.end, s.tokens.as_slice()))
        .collect();
    let want: Vec<(usize, f64, f64, &[u32])> = g
        .segments
        .iter()
        .map(|s| (s.seek, s.start, s.end, s.tokens.as_slice()))
        .collect();
    assert_eq!(got, want, "{model_name} {file}: segments differ");
    assert_eq!(t.text(), g.text.trim(), "{model_name} {file}: text");
    for (s, gs) in t.segments.iter().zip(&g.segments) {
        assert!(
            (s.avg_logprob - gs.avg_logprob).abs() < 2e-3,
            "{file}: avg_logprob {} vs {}",
            s.avg_logprob,
            gs.avg_logprob
        );
        assert!(
            (s.no_speech_prob - gs.no_speech_prob).abs() < 2e-3,
            "{file}: no_speech_prob"
        );
    }
}

#[test]
fn tiny_en_mel_matches_faster_whisper() {
    let m = tiny();
    for f in TINY_FILES {
        let err = check_mel(&m, "tiny.en", f);
        eprintln!("tiny.en {f}: mel max abs error {err:.2e}");
    }
}

#[test]
fn tiny_en_encoder_matches_ctranslate2() {
    let m = tiny();
    for f in TINY_FILES {
        let c = check_encoder(&m, "tiny.en", f);
        eprintln!("tiny.en {f}: min encoder cosine {c:.7}");
    }
}

#[test]
fn tiny_en_tokens_match_faster_whisper() {
    let m = tiny();
    for f in TINY_FILES {
        check_tokens(&m, "tiny.en", f);
    }
}

#[test]
fn base_mel_encoder_and_tokens_match_faster_whisper() {
    let m = base();
    for f in BASE_FILES {
        check_mel(&m, "base", f);
        let c = check_encoder(&m, "base", f);
        eprintln!("base {f}: min encoder cosine {c:.7}");
        check_tokens(&m, "base", f);
    }
}
