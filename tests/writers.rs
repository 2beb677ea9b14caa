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

/// srt and vtt by words (highlighting, line width, line count, words per line) against
/// openai-whisper's writers on `tests/goldens/writers/words/` (made by
/// `make_word_writer_goldens.py` from faster-whisper's words of jfk and the long file plus
/// hand-made edge cases), byte for byte, both whole and fed segment by segment.
#[test]
fn srt_and_vtt_by_words_match_openai_whisper() {
    use amanuensis::model::words::Word;
    use amanuensis::output::{SegmentWriter, SubtitleOptions};
    let dir = goldens().join("words");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("segments.json")).unwrap()).unwrap();
    let segments: Vec<Segment> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Segment {
            id: s["id"].as_u64().unwrap() as usize + 1,
            seek: 0,
            start: s["start"].as_f64().unwrap(),
            end: s["end"].as_f64().unwrap(),
            text: s["text"].as_str().unwrap().to_string(),
            tokens: Vec::new(),
            avg_logprob: -0.1,
            no_speech_prob: 0.0,
            temperature: 0.0,
            words: s["words"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| Word {
                    word: w["word"].as_str().unwrap().to_string(),
                    start: w["start"].as_f64().unwrap(),
                    end: w["end"].as_f64().unwrap(),
                    probability: w["probability"].as_f64().unwrap(),
                })
                .collect(),
        })
        .collect();
    let t = Transcript {
        segments,
        duration: 3601.0,
        timings: Timings::default(),
    };
    let cases = v["cases"].as_object().unwrap();
    assert!(cases.len() >= 7);
    for (name, o) in cases {
        let n = |k: &str| o.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let subtitles = SubtitleOptions {
            words: true,
            highlight_words: o.get("highlight_words").is_some_and(|x| x == true),
            max_line_width: n("max_line_width"),
            max_line_count: n("max_line_count"),
            max_words_per_line: n("max_words_per_line"),
        };
        let meta = JsonMeta {
            subtitles,
            ..Default::default()
        };
        for (format, ext) in [(FileFormat::Srt, "srt"), (FileFormat::Vtt, "vtt")] {
            let want = std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap();
            let got = render_format(&t, format, &meta);
            assert_eq!(got, want, "{name}.{ext}");
            // Segment by segment (as the CLI prints live) gives the same bytes.
            let mut w = SegmentWriter::with_subtitles(format, subtitles);
            let mut live = w.header().to_string();
            for s in &t.segments {
                live.push_str(&w.segment(s));
            }
            live.push_str(&w.finish());
            assert_eq!(live, want, "{name}.{ext} segment by segment");
        }
    }
}
