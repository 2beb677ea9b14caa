//! Our txt, vtt, srt and tsv writers against openai-whisper's own (`whisper.utils.get_writer`),
//! byte for byte, on the edge-case segments of `tests/goldens/writers/` (made by
//! `make_writer_goldens.py` with the real package); the json has openai's `verbose_json` keys.

use amanuensis::model::segment::Segment;
use amanuensis::model::session::{Timings, Transcript};
use amanuensis::output::{render_format, FileFormat, JsonMeta};

fn goldens() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/writers")
}

fn transcript() -> (Transcript, serde_json::Value) {
    let text = std::fs::read_to_string(goldens().join("segments.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let segments = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Segment {
            id: s["id"].as_u64().unwrap() as usize + 1,
            seek: s["seek"].as_u64().unwrap() as usize,
            start: s["start"].as_f64().unwrap(),
            end: s["end"].as_f64().unwrap(),
            text: s["text"].as_str().unwrap().to_string(),
            tokens: vec![s["tokens"][0].as_u64().unwrap() as u32],
            avg_logprob: s["avg_logprob"].as_f64().unwrap(),
            no_speech_prob: s["no_speech_prob"].as_f64().unwrap(),
            temperature: s["temperature"].as_f64().unwrap(),
            words: Vec::new(),
        })
        .collect();
    (
        Transcript {
            segments,
            duration: 36001.5,
            timings: Timings::default(),
        },
        v,
    )
}

#[test]
fn line_formats_are_byte_identical_to_openai_whisper() {
    let (t, _) = transcript();
    for (format, ext) in [
        (FileFormat::Txt, "txt"),
        (FileFormat::Vtt, "vtt"),
        (FileFormat::Srt, "srt"),
        (FileFormat::Tsv, "tsv"),
    ] {
        let want = std::fs::read(goldens().join(format!("segments.{ext}"))).unwrap();
        let got = render_format(&t, format, &JsonMeta::default());
        assert_eq!(
            String::from_utf8_lossy(&want),
            got,
            "{ext} differs from openai-whisper's writer"
        );
    }
}

#[test]
fn json_has_the_verbose_json_keys() {
    let (t, _) = transcript();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(goldens().join("segments.json")).unwrap())
            .unwrap();
    let ours: serde_json::Value =
        serde_json::from_str(&render_format(&t, FileFormat::Json, &JsonMeta::default())).unwrap();
    for key in ["text", "segments", "language"] {
        assert!(ours.get(key).is_some(), "missing {key}");
    }
    for key in ["task", "duration"] {
        assert!(ours.get(key).is_some(), "missing {key}");
    }
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours["segments"][0]), keys(&golden["segments"][0]));
    for (a, b) in ours["segments"]
        .as_array()
        .unwrap()
        .iter()
        .zip(golden["segments"].as_array().unwrap())
    {
        for key in ["id", "seek", "start", "end", "text", "tokens"] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
}
