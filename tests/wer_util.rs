//! Tests of the shared test helpers in tests/common: the word edit distance, the corpus WER, the
//! English normaliser (against strings normalised by Python's whisper EnglishTextNormalizer), the
//! golden loaders and cosine.

mod common;

use common::{
    cosine, fw_transcripts, golden, l2_norm, normalize_english, refs, speech, wer, wer_counts,
    word_edit_distance,
};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn word_edit_distance_counts_substitutions_deletions_insertions() {
    let w = |s: &'static str| s.split_whitespace().collect::<Vec<_>>();
    assert_eq!(word_edit_distance(&w("a b c"), &w("a b c")), 0);
    assert_eq!(word_edit_distance(&w("a b c"), &w("a x c")), 1); // substitution
    assert_eq!(word_edit_distance(&w("a b c"), &w("a c")), 1); // deletion
    assert_eq!(word_edit_distance(&w("a b c"), &w("a b b c")), 1); // insertion
    assert_eq!(word_edit_distance(&w("a b c"), &w("")), 3);
    assert_eq!(word_edit_distance(&w(""), &w("x y")), 2);
    assert_eq!(word_edit_distance(&w("a b c d"), &w("b c d a")), 2); // rotation: del + ins
    assert_eq!(
        word_edit_distance(&w("the cat sat"), &w("a cat sat on it")),
        3
    );
}

#[test]
fn corpus_wer_is_total_edits_over_total_reference_words() {
    // Per-utterance edits 1 (of 4 words) and 2 (of 2 words): corpus 3 / 6 = 50 %, not the
    // mean of the per-file rates (62.5 %).
    let refs = strings(&["the cat sat down", "hello there"]);
    let hyps = strings(&["the cat sat", "bye"]);
    let c = wer_counts(&refs, &hyps);
    assert_eq!((c.errors, c.ref_words), (3, 6));
    assert!((wer(&refs, &hyps) - 50.0).abs() < 1e-12);
    // Normalisation happens before counting: case and punctuation are not errors.
    assert_eq!(
        wer(&strings(&["Hello, World!"]), &strings(&["hello world"])),
        0.0
    );
}

#[test]
fn normaliser_matches_python_on_hand_made_cases() {
    // Expected outputs produced by whisper.normalizers.EnglishTextNormalizer (openai-whisper
    // 20250625) via ../shared/peers/wer_util.py, trimmed.
    let cases = [
        ("Hello, World!", "hello world"),
        ("[MUSIC] I won't go (laughs) there.", "i will not go there"),
        ("Mr. Smith's car", "mister smith is car"),
        (
            "the \"forty-two line Bible\" of about fourteen fifty-five",
            "the 42 line bible of about 1455",
        ),
        ("in the fifteenth century", "in the 15th century"),
        ("twenty dollars", "$20"),
        ("ten percent", "10%"),
        ("the colour of honour", "the color of honor"),
        ("1,000 people", "1000 people"),
        ("Café au lait", "cafe au lait"),
        ("Hmm, uh, one of the ones", "one of the ones"),
        ("It's 3.5 metres", "it is 3.5 meters"),
        ("one hundred and twenty three", "123"),
        ("the first and the ninth", "the 1st and the ninth"),
        ("two and a half", "2.5"),
        ("double oh seven", "007"),
        ("$1.50", "one.50"),
        ("minus five", "-5"),
        (
            "I've been there; they'd gone.",
            "i have been there they had gone",
        ),
        ("lower-case", "lower case"),
        ("i.e. the letter", "i e the letter"),
        (
            "hundreds of people in the 1960s",
            "100s of people in the 1960s",
        ),
        ("five hundred thousand", "500000"),
        ("two per cent", "2%"),
        ("point five", ".5"),
        ("three point one four", "3.14"),
        ("twenty first century", "21st century"),
        ("the twenties", "the 20s"),
        ("one million dollars", "$1000000"),
        ("$20 million", "$20000000"),
        ("nineteen ninety-nine", "1999"),
        ("a hundredth", "a 100th"),
        ("it's 10:30 a.m.", "it is 10 30 a m"),
        ("St. Louis, Dr. Who", "saint louis doctor who"),
        ("ma'am, y'all gonna", "madam you all going to"),
        ("they're we'll can't", "they are we will can not"),
        ("<|endoftext|> text", "text"),
        ("umbrella um", "umbrella"),
        ("Naïve façade", "naive facade"),
        ("Œuvre, straße", "oeuvre strasse"),
        ("one oh one", "101"),
        ("zero", "0"),
        ("first, second, third", "1st 2nd 3rd"),
        ("1st 2nd", "1st 2nd"),
        ("10 %", "10"),
        ("5th", "5th"),
        ("two thousand and five", "2005"),
        ("minus", "minus"),
        ("plus three", "+3"),
        ("triple x", "triple x"),
        ("mr smith mrs jones", "mister smith missus jones"),
        // Known difference (no NFKD): Python turns "…" into "..." and keeps it ("hello world ..").
        ("Hello—world…", "hello world"),
    ];
    let mut bad = Vec::new();
    for (raw, want) in cases {
        let got = normalize_english(raw);
        if got != want {
            bad.push(format!("{raw:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "normaliser differs from Python:\n{}",
        bad.join("\n")
    );
}

#[test]
fn normaliser_matches_python_on_every_reference_and_fw_transcript() {
    // tests/goldens/normalizer_cases.tsv: raw<TAB>Python-normalised, for every reference and
    // every faster-whisper transcript of the speech set (made by make_goldens.py).
    let path = common::goldens_dir().join("normalizer_cases.tsv");
    let cases = common::parse_tsv(&common::read_text(&path), "normalizer_cases.tsv");
    assert!(cases.len() >= 50, "only {} normaliser cases", cases.len());
    let bad: Vec<String> = cases
        .iter()
        .filter(|(raw, want)| normalize_english(raw) != want.trim())
        .map(|(raw, want)| {
            format!(
                "{raw:?}\n  got  {:?}\n  want {want:?}",
                normalize_english(raw)
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// The Rust WER of faster-whisper's transcripts must equal the official number wer_util.py
/// computed (tests/goldens/fw_wer.json) within 0.3 points; with the normaliser matching Python on
/// every string, the error counts are expected to be identical.
#[test]
fn rust_wer_of_fw_transcripts_matches_official_number() {
    let official: serde_json::Value = serde_json::from_str(&common::read_text(
        &common::goldens_dir().join("fw_wer.json"),
    ))
    .expect("fw_wer.json");
    let refs = refs();
    for model in ["tiny.en", "base"] {
        let fw = fw_transcripts(model);
        let hyps: Vec<String> = refs.iter().map(|(f, _)| fw[f].clone()).collect();
        let texts: Vec<String> = refs.iter().map(|(_, t)| t.clone()).collect();
        let c = wer_counts(&texts, &hyps);
        let want = official[model]["wer_percent"]
            .as_f64()
            .expect("wer_percent");
        println!(
            "{model}: Rust WER {:.4}% ({}/{}), official {want:.4}% ({}/{})",
            c.percent(),
            c.errors,
            c.ref_words,
            official[model]["errors"],
            official[model]["ref_words"]
        );
        assert!(
            (c.percent() - want).abs() <= 0.3,
            "{model}: {} vs {want}",
            c.percent()
        );
        assert_eq!(
            c.ref_words as u64,
            official[model]["ref_words"].as_u64().unwrap()
        );
    }
}

#[test]
fn refs_and_fw_transcripts_cover_the_shared_speech_set() {
    let refs = refs();
    assert_eq!(refs.len(), 26);
    for (file, text) in &refs {
        assert!(
            speech(file).is_file(),
            "{file} missing from ../shared/speech"
        );
        assert!(!text.trim().is_empty(), "{file}: empty reference");
    }
    for model in ["tiny.en", "base"] {
        let fw = fw_transcripts(model);
        assert_eq!(fw.len(), refs.len(), "{model}");
        assert!(
            refs.iter().all(|(f, _)| !fw[f].trim().is_empty()),
            "{model}: empty transcript"
        );
    }
}

#[test]
fn goldens_load_and_are_self_consistent() {
    let cases = [
        ("tiny.en", "jfk.wav", 384),
        ("tiny.en", "ls-1089-134686-0000", 384),
        ("tiny.en", "ls-1089-134686-0001", 384),
        ("tiny.en", "ls-1221-135766-0001", 384),
        ("tiny.en", "ls-61-70968-0000", 384),
        ("tiny.en", "lj-LJ001-0001", 384),
        ("tiny.en", "lj-LJ001-0002", 384),
        ("tiny.en", "long-lj001-0001to0020", 384),
        ("base", "jfk", 512),
        ("base", "long-lj001-0001to0020.wav", 512),
    ];
    for (model, file, d) in cases {
        let g = golden(model, file);
        let what = format!("{model}/{file}");
        assert_eq!(g.meta.model, model, "{what}");
        assert_eq!(g.audio.content_frames, g.audio.n_samples / 160, "{what}");
        assert_eq!(g.mel.shape, [80, g.audio.content_frames + 1], "{what}");
        assert_eq!(g.mel.frame_sums.len(), g.mel.shape[1], "{what}");
        assert_eq!(g.mel.frames.len(), 12, "{what}");
        assert!(g.mel.frames.iter().all(|f| f.values.len() == 80), "{what}");
        assert!(
            g.mel.max - g.mel.min <= 2.0 + 1e-6,
            "{what}: mel range is clamped to 8/4"
        );
        assert_eq!(g.encoder.shape, [1, 1500, d], "{what}");
        assert_eq!(
            g.encoder.window_frames,
            g.audio.content_frames.min(3000),
            "{what}"
        );
        assert_eq!(g.encoder.frame_norms.len(), 1500, "{what}");
        for f in &g.encoder.frames {
            assert_eq!(f.values.len(), d, "{what}");
            // values and norms are rounded to 7 significant digits independently
            let n = g.encoder.frame_norms[f.index];
            assert!(
                (l2_norm(&f.values) - n).abs() <= 1e-5 * n,
                "{what} frame {}",
                f.index
            );
        }
        // the stored frame sums agree with the stored full frames (6 significant digits)
        for f in &g.mel.frames {
            let sum: f64 = f.values.iter().map(|&v| f64::from(v)).sum();
            let want = g.mel.frame_sums[f.index];
            assert!(
                (sum - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{what} mel frame {}",
                f.index
            );
        }
        assert!(!g.segments.is_empty(), "{what}");
        let joined: String = g.segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, g.text, "{what}");
        for s in &g.segments {
            assert!(s.start < s.end, "{what} segment {}", s.id);
            assert!(s.tokens.len() >= 3, "{what} segment {}", s.id);
        }
    }
}

#[test]
fn cosine_of_hand_made_vectors() {
    let a = [1.0f32, 2.0, 3.0];
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-12);
    assert!((cosine(&a, &[-1.0, -2.0, -3.0]) + 1.0).abs() < 1e-12);
    assert!((cosine(&a, &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12); // scale invariant
    assert!(cosine(&[1.0, 0.0], &[0.0, 5.0]).abs() < 1e-12);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    assert!((l2_norm(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
}
