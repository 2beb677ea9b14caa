//! End-to-end checks of the `amanuensis` binary: bad input gets a clear error and a non-zero
//! exit, never a panic; the output formats are well formed on real speech.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn amanuensis(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amanuensis"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running amanuensis")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        err.contains(needle),
        "stderr does not mention {needle:?}: {err}"
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn missing_model_prints_the_setup_command() {
    let empty_cache =
        std::env::temp_dir().join(format!("amanuensis-empty-cache-{}", std::process::id()));
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &["transcribe", wav.to_str().unwrap()],
        &[
            ("AMANUENSIS_CACHE", empty_cache.to_str().unwrap()),
            ("AMANUENSIS_MODEL", ""),
        ],
    );
    assert_clean_failure(&o, "scripts/setup-models.sh tiny.en");
}

#[test]
fn corrupt_or_missing_audio_is_a_clear_error() {
    let bad = temp_file("bad.wav", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk");
    let o = amanuensis(&["transcribe", "-m", "tiny.en", bad.to_str().unwrap()], &[]);
    assert_clean_failure(&o, "bad.wav");
    let o = amanuensis(&["transcribe", "-m", "tiny.en", "/nonexistent/x.wav"], &[]);
    assert_clean_failure(&o, "/nonexistent/x.wav");
}

#[test]
fn truncated_model_file_is_a_clear_error() {
    let model =
        amanuensis::model_path::resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&model).unwrap();
    let cut = temp_file("cut.safetensors", &bytes[..bytes.len() / 2]);
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            cut.to_str().unwrap(),
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert_clean_failure(&o, "cut.safetensors");
}

#[test]
fn srt_and_json_outputs_on_real_speech() {
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "--output-format",
            "srt",
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let srt = String::from_utf8(o.stdout).unwrap();
    assert!(
        srt.starts_with("1\n00:00:00,000 --> 00:00:07,740\nAnd so my fellow Americans"),
        "{srt}"
    );
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "--output-format",
            "json",
            "--no-timestamps",
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v["text"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
    // Without timestamps a window is one segment spanning the audio.
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
}
