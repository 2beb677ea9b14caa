//! INT8 accuracy on hard audio (issue #10 item 7, `docs/int8-layout.md` section 8): the stress
//! set of `tests/stress/texts.tsv` (synthetic espeak-ng voices at several rates, some mixed with
//! white, pink or brown noise at 0-20 dB SNR) is generated into the target directory by
//! `tests/stress/make_stress.sh`, transcribed by tiny.en in f32 (the f16 file, the exact
//! reference) and in INT8 (the INT8 file, the default), and the INT8 WER must stay within
//! [`MAX_INT8_LOSS_POINTS`] of the f32 WER. Skips with a message when espeak-ng or sox is missing
//! (CI installs both).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::TranscribeOptions;
use amanuensis::model_path::resolve_model;
use amanuensis::{Device, LoadOptions, Model, Precision};

/// INT8 may lose at most this many WER points against f32 on the stress set (the goal).
const MAX_INT8_LOSS_POINTS: f64 = 1.0;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Generates the stress set into the target directory; `None` (with a message) when the
/// generator's tools are missing.
fn stress_set() -> Option<PathBuf> {
    for tool in ["espeak-ng", "sox"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED: {tool} not installed (apt-get install espeak-ng sox)");
            return None;
        }
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stress-set");
    let script = common::repo_root().join("tests/stress/make_stress.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());
    Some(out)
}

/// Transcribes every file of `set` with the model `name` at `precision`; the transcripts in
/// the order of `refs`.
fn transcripts(
    set: &Path,
    refs: &[(String, String)],
    name: &str,
    precision: Precision,
) -> Vec<String> {
    let path = resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
    let model = Model::load(
        &path,
        &LoadOptions {
            device: Device::Cpu,
            precision,
            threads: Some(threads()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut session = model.session().unwrap();
    refs.iter()
        .map(|(file, _)| {
            let audio = load_wav(&set.join(file)).unwrap();
            session
                .transcribe(&audio, &TranscribeOptions::default())
                .unwrap()
                .text()
        })
        .collect()
}

#[test]
fn tiny_en_int8_wer_on_the_stress_set_is_within_a_point_of_f32() {
    let Some(set) = stress_set() else { return };
    let refs_path = set.join("refs.tsv");
    let refs = common::parse_tsv(
        &common::read_text(&refs_path),
        &refs_path.display().to_string(),
    );
    assert!(
        refs.len() >= 30,
        "the stress set has {} utterances",
        refs.len()
    );
    let f32_text = transcripts(&set, &refs, "tiny.en.f16", Precision::F32);
    let int8_text = transcripts(&set, &refs, "tiny.en.int8", Precision::Auto);
    let references: Vec<String> = refs.iter().map(|(_, r)| r.clone()).collect();
    for (((file, _), a), b) in refs.iter().zip(&f32_text).zip(&int8_text) {
        if common::normalize_english(a) != common::normalize_english(b) {
            eprintln!("{file}: INT8 differs from f32\n  f32:  {a}\n  int8: {b}");
        }
    }
    let (w_f32, w_int8) = (
        common::wer(&references, &f32_text),
        common::wer(&references, &int8_text),
    );
    eprintln!(
        "stress set ({} utterances): WER tiny.en f32 {w_f32:.2} %, INT8 {w_int8:.2} %",
        refs.len()
    );
    assert!(
        w_int8 <= w_f32 + MAX_INT8_LOSS_POINTS,
        "INT8 WER {w_int8:.2} % is more than {MAX_INT8_LOSS_POINTS} points above f32's {w_f32:.2} %"
    );
}
