//! `clip_timestamps` against faster-whisper 1.2.1 (goldens in `tests/goldens/clips/`, made by
//! `make_clip_goldens.py`): the f32 path (tiny.en) gives faster-whisper's tokens, times and
//! seeks exactly, through both the in-memory log-mel and the streamed one the CLI uses; the
//! CLI refuses bad clip lists and `--vad` with clips.

mod common;

use std::process::Command;
use std::sync::Arc;

use amanuensis::model::audio::{load_wav, AudioInput};
use amanuensis::model::mel_windows::StreamedLogMel;
use amanuensis::model::segment::Segment;
use amanuensis::model::session::{GuardOptions, Session, TranscribeOptions};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_backend::CpuBackend;

struct Case {
    file: String,
    clips: String,
    /// (seek, start, end, text, tokens)
    segments: Vec<(usize, f64, f64, String, Vec<u32>)>,
}

fn cases() -> Vec<Case> {
    let path = common::goldens_dir().join("clips/tiny.en.json");
    let doc: serde_json::Value = serde_json::from_str(&common::read_text(&path)).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            file: c["file"].as_str().unwrap().to_string(),
            clips: c["clip_timestamps"].as_str().unwrap().to_string(),
            segments: c["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["seek"].as_u64().unwrap() as usize,
                        s["start"].as_f64().unwrap(),
                        s["end"].as_f64().unwrap(),
                        s["text"].as_str().unwrap().to_string(),
                        s["tokens"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|t| t.as_u64().unwrap() as u32)
                            .collect(),
                    )
                })
                .collect(),
        })
        .collect()
}

fn ours(segments: &[Segment]) -> Vec<(usize, f64, f64, String, Vec<u32>)> {
    segments
        .iter()
        .map(|s| (s.seek, s.start, s.end, s.text.clone(), s.tokens.clone()))
        .collect()
}

fn assert_same(case: &Case, got: &[(usize, f64, f64, String, Vec<u32>)], path: &str) {
    assert_eq!(
        got.len(),
        case.segments.len(),
        "{} {} ({path}): {got:?}",
        case.file,
        case.clips
    );
    for (g, w) in got.iter().zip(&case.segments) {
        assert_eq!(
            (&g.3, &g.4, g.0),
            (&w.3, &w.4, w.0),
            "{} ({path})",
            case.file
        );
        // Times come from the same tokens and offsets; f64 sums may differ in the last bit.
        assert!(
            (g.1 - w.1).abs() < 1e-9 && (g.2 - w.2).abs() < 1e-9,
            "{} ({path}): {:?} vs faster-whisper {:?}",
            case.file,
            (g.1, g.2),
            (w.1, w.2)
        );
    }
}

#[test]
fn clips_match_faster_whisper_in_memory_and_streamed() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Whisper::load(&path, CpuBackend::new(threads)).unwrap());
    let mut session = Session::new(Arc::clone(&model)).unwrap();
    let cases = cases();
    assert!(cases.iter().any(|c| c.clips.split(',').count() >= 4));
    for case in &cases {
        let opts = TranscribeOptions {
            clip_timestamps: amanuensis::model::clips::parse(&case.clips).unwrap(),
            guards: GuardOptions::off(),
            ..Default::default()
        };
        let audio = load_wav(&common::speech(&case.file)).unwrap();
        let t = session.transcribe(&audio, &opts).unwrap();
        assert_same(case, &ours(&t.segments), "in memory");

        let input = AudioInput::File(common::speech(&case.file));
        let mut mel = StreamedLogMel::open(&input, &model.mel).unwrap();
        let t = session
            .transcribe_windows(&mut mel, &opts, &mut |_| {})
            .unwrap();
        assert_same(case, &ours(&t.segments), "streamed");
    }
}

#[test]
fn out_of_order_clips_are_an_error_not_a_backwards_seek() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Whisper::load(&path, CpuBackend::new(threads)).unwrap());
    let mut session = Session::new(model).unwrap();
    let audio = load_wav(&common::speech("jfk.wav")).unwrap();
    let opts = TranscribeOptions {
        clip_timestamps: vec![5.0, 8.0, 1.0],
        ..Default::default()
    };
    let e = session.transcribe(&audio, &opts).unwrap_err().to_string();
    assert!(e.contains("clip timestamp 3 (1 s)"), "{e}");
}

#[test]
fn cli_clip_timestamps() {
    let bin = env!("CARGO_BIN_EXE_amanuensis");
    let jfk = common::speech("jfk.wav");
    let run = |extra: &[&str]| {
        Command::new(bin)
            .arg("transcribe")
            .arg(&jfk)
            .args(["-m", "tiny.en", "-q", "--precision", "f32"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--clip-timestamps", "2.5,7.25", "-f", "txt"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    // The golden's clip: guards on by default do not touch speech.
    assert_eq!(text.trim(), "ask not what your country can do for you");
    for (bad, message) in [
        (
            &["--clip-timestamps", "5,3"][..],
            "is before the one ahead of it",
        ),
        (&["--clip-timestamps", "1,x"], "is not a number of seconds"),
        (&["--clip-timestamps", "1,5", "--vad"], "cannot be combined"),
    ] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{bad:?}: {err}");
    }
}
