//! Word timestamps against faster-whisper 1.2.1 `word_timestamps=True` (goldens in
//! `tests/goldens/words/`, made by `make_word_goldens.py`): on jfk and the four ls-* files
//! (and the 144 s long file, several windows, where the seek follows the last word), the share
//! of words whose start AND end are both within 0.2 s of faster-whisper's must be ≥ 90 % on
//! the f32 path (with the same word texts) and ≥ 85 % on the INT8 path (tiny.en.int8; words
//! matched by text, a missing or extra word counts as a miss).

mod common;

use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::backend::Backend;
use amanuensis::runtime::cpu_backend::CpuBackend;
use amanuensis::runtime::cpu_int8_backend::CpuInt8Backend;

const SHORT: [&str; 5] = [
    "jfk",
    "ls-1089-134686-0000",
    "ls-1089-134686-0001",
    "ls-1221-135766-0001",
    "ls-61-70968-0000",
];
const LONG: &str = "long-lj001-0001to0020";
const TOLERANCE: f64 = 0.2;

#[derive(Debug, Clone)]
struct W {
    word: String,
    start: f64,
    end: f64,
    probability: f64,
}

struct GoldenFile {
    words: Vec<W>,
    /// Segment (start, end, text).
    segments: Vec<(f64, f64, String)>,
}

fn golden(stem: &str) -> GoldenFile {
    let path = common::goldens_dir().join(format!("words/tiny.en/{stem}.json"));
    let doc: serde_json::Value = serde_json::from_str(&common::read_text(&path)).unwrap();
    let mut words = Vec::new();
    let mut segments = Vec::new();
    for s in doc["segments"].as_array().unwrap() {
        segments.push((
            s["start"].as_f64().unwrap(),
            s["end"].as_f64().unwrap(),
            s["text"].as_str().unwrap().to_string(),
        ));
        for w in s["words"].as_array().unwrap() {
            words.push(W {
                word: w["word"].as_str().unwrap().to_string(),
                start: w["start"].as_f64().unwrap(),
                end: w["end"].as_f64().unwrap(),
                probability: w["probability"].as_f64().unwrap(),
            });
        }
    }
    GoldenFile { words, segments }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn transcribe<B: Backend>(
    model: &Arc<Whisper<B>>,
    stem: &str,
) -> (Vec<W>, Vec<(f64, f64, String)>) {
    let mut session = Session::new(Arc::clone(model)).unwrap();
    let audio = load_wav(&common::speech(&format!("{stem}.wav"))).unwrap();
    let opts = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let t = session.transcribe(&audio, &opts).unwrap();
    let words = t
        .segments
        .iter()
        .flat_map(|s| s.words.iter())
        .map(|w| W {
            word: w.word.clone(),
            start: w.start,
            end: w.end,
            probability: w.probability,
        })
        .collect();
    let segments = t
        .segments
        .iter()
        .map(|s| (s.start, s.end, s.text.clone()))
        .collect();
    (words, segments)
}

/// Pairs of (golden index, ours index) of the longest common subsequence of word texts.
fn match_words(golden: &[W], ours: &[W]) -> Vec<(usize, usize)> {
    let (n, m) = (golden.len(), ours.len());
    let mut l = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if golden[i].word.trim() == ours[j].word.trim() {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut pairs) = (0, 0, Vec::new());
    while i < n && j < m {
        if golden[i].word.trim() == ours[j].word.trim() {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if l[i + 1][j] >= l[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

/// (golden words, words with start and end both within the tolerance, max |Δ|).
fn score(stem: &str, golden: &[W], ours: &[W]) -> (usize, usize, f64) {
    let pairs = match_words(golden, ours);
    let mut good = 0;
    let mut worst: f64 = 0.0;
    for &(i, j) in &pairs {
        let (g, o) = (&golden[i], &ours[j]);
        let ds = (g.start - o.start).abs();
        let de = (g.end - o.end).abs();
        worst = worst.max(ds).max(de);
        if ds <= TOLERANCE + 1e-9 && de <= TOLERANCE + 1e-9 {
            good += 1;
        } else {
            eprintln!(
                "  {stem}: {:?} fw [{:.2}, {:.2}] ours [{:.2}, {:.2}]",
                g.word, g.start, g.end, o.start, o.end
            );
        }
    }
    (golden.len(), good, worst)
}

fn run<B: Backend>(model: &Arc<Whisper<B>>, label: &str, files: &[&str], exact_text: bool) -> f64 {
    let (mut total, mut good) = (0, 0);
    for stem in files {
        let g = golden(stem);
        let (ours, segments) = transcribe(model, stem);
        if exact_text {
            let gw: Vec<&str> = g.words.iter().map(|w| w.word.as_str()).collect();
            let ow: Vec<&str> = ours.iter().map(|w| w.word.as_str()).collect();
            assert_eq!(
                ow, gw,
                "{label} {stem}: word texts differ from faster-whisper's"
            );
            assert_eq!(
                segments.len(),
                g.segments.len(),
                "{label} {stem}: segment count"
            );
            for (s, gs) in segments.iter().zip(&g.segments) {
                assert_eq!(s.2, gs.2, "{label} {stem}: segment text");
            }
            // Probabilities: the mean of the tokens' (softmax over the text vocabulary).
            let mut worst_p: f64 = 0.0;
            for (o, gw) in ours.iter().zip(&g.words) {
                assert!(
                    o.start <= o.end,
                    "{label} {stem}: {:?} starts after it ends",
                    o.word
                );
                worst_p = worst_p.max((o.probability - gw.probability).abs());
            }
            eprintln!(
                "{label} {stem}: word probabilities within {worst_p:.2e} of faster-whisper's"
            );
            assert!(
                worst_p < 1e-3,
                "{label} {stem}: probability off by {worst_p}"
            );
        }
        let (n, k, worst) = score(stem, &g.words, &ours);
        let seg_starts = segments
            .iter()
            .zip(&g.segments)
            .filter(|(s, gs)| (s.0 - gs.0).abs() <= TOLERANCE && (s.1 - gs.1).abs() <= TOLERANCE)
            .count();
        eprintln!(
            "{label} {stem}: {k}/{n} words within {TOLERANCE} s ({:.1} %), max |Δ| {worst:.2} s; \
             segments within {TOLERANCE} s: {seg_starts}/{}",
            100.0 * k as f64 / n as f64,
            g.segments.len()
        );
        total += n;
        good += k;
    }
    let pct = 100.0 * good as f64 / total as f64;
    eprintln!("{label}: {good}/{total} words within {TOLERANCE} s = {pct:.1} %");
    pct
}

fn f32_model() -> Arc<Whisper<CpuBackend>> {
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Whisper::load(&path, CpuBackend::new(threads())).unwrap())
}

#[test]
fn f32_words_match_faster_whisper() {
    let model = f32_model();
    let pct = run(&model, "tiny.en f32", &SHORT, true);
    assert!(
        pct >= 90.0,
        "f32: {pct:.1} % of words within {TOLERANCE} s (need ≥ 90 %)"
    );
}

#[test]
fn f32_words_match_faster_whisper_long_form() {
    let model = f32_model();
    let pct = run(&model, "tiny.en f32", &[LONG], true);
    assert!(
        pct >= 90.0,
        "f32 long: {pct:.1} % of words within {TOLERANCE} s (need ≥ 90 %)"
    );
}

#[test]
fn int8_words_match_faster_whisper() {
    let path = resolve_model(Some("tiny.en.int8")).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Whisper::load(&path, CpuInt8Backend::new(threads())).unwrap());
    let pct = run(&model, "tiny.en.int8", &SHORT, false);
    assert!(
        pct >= 85.0,
        "INT8: {pct:.1} % of words within {TOLERANCE} s (need ≥ 85 %)"
    );
}

/// The library API (`Model`, `Session`, `TranscribeOptions::word_timestamps`) gives the same
/// words as the model session, and the default gives none.
#[test]
fn engine_api_carries_words() {
    use amanuensis::{LoadOptions, Model, Precision};
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let opts = LoadOptions {
        precision: Precision::F32,
        ..Default::default()
    };
    let model = Model::load(&path, &opts).unwrap();
    let mut session = model.session().unwrap();
    let audio = load_wav(&common::speech("jfk.wav")).unwrap();
    let with = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let t = session.transcribe(&audio, &with).unwrap();
    let words: Vec<amanuensis::Word> = t.segments.iter().flat_map(|s| s.words.clone()).collect();
    let g = golden("jfk");
    let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
    let want: Vec<&str> = g.words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(texts, want);
    for (w, gw) in words.iter().zip(&g.words) {
        assert!((w.start - gw.start).abs() <= TOLERANCE && (w.end - gw.end).abs() <= TOLERANCE);
    }
    // Segment times follow the words.
    assert_eq!(t.segments[0].start, words[0].start);
    let plain = session
        .transcribe(&audio, &TranscribeOptions::default())
        .unwrap();
    assert!(plain.segments.iter().all(|s| s.words.is_empty()));
}

/// The CLI: json segments carry words; the word options need --word-timestamps (exit 2).
#[test]
fn cli_word_timestamps() {
    use std::process::Command;
    let jfk = common::speech("jfk.wav");
    let jfk = jfk.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_amanuensis");
    let o = Command::new(bin)
        .args([
            "transcribe",
            jfk,
            "-m",
            "tiny.en",
            "--precision",
            "f32",
            "-q",
            "--word-timestamps",
            "-f",
            "json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = &v["segments"][0]["words"][0];
    assert_eq!(w["word"], " And");
    assert_eq!(w["start"], 0.0);
    assert!(w["probability"].as_f64().unwrap() > 0.0);
    let o = Command::new(bin)
        .args([
            "transcribe",
            jfk,
            "-m",
            "tiny.en",
            "--precision",
            "f32",
            "-q",
            "--word-timestamps",
            "-f",
            "srt",
        ])
        .args(["--max-line-width", "20", "--max-line-count", "2"])
        .output()
        .unwrap();
    let srt = String::from_utf8(o.stdout).unwrap();
    assert!(
        srt.starts_with(
            "1\n00:00:00,000 --> 00:00:04,520\nAnd so my fellow\nAmericans ask not\n\n"
        ),
        "{srt}"
    );
    for flag in [
        &["--highlight-words"][..],
        &["--max-line-width", "20"],
        &["--max-words-per-line", "3"],
        &["--hallucination-silence-threshold", "2"],
    ] {
        let o = Command::new(bin)
            .args(["transcribe", jfk, "-m", "tiny.en", "-q"])
            .args(flag)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("needs --word-timestamps"));
    }
    // A threshold must be a number of seconds.
    for bad in ["-1", "nan", "inf", "two"] {
        let o = Command::new(bin)
            .args([
                "transcribe",
                jfk,
                "-m",
                "tiny.en",
                "-q",
                "--word-timestamps",
            ])
            .arg(format!("--hallucination-silence-threshold={bad}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is not a number of seconds"),
            "{bad}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
