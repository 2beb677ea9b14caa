//! One model, many streams, through the embedding API: sessions on one loaded model transcribe
//! at once from several threads and give byte-identical results to one session alone; the
//! segment and progress callbacks see what the transcript holds; a set abort flag stops a
//! transcription; the alignment heads' cross-attention comes back on request and changes
//! nothing else.
//!
//! Needs the converted models (scripts/setup-models.sh tiny.en tiny.en.int8).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use amanuensis::model_path::resolve_model;
use amanuensis::{Error, Hooks, LoadOptions, Model, Precision, Segment, TranscribeOptions};

/// Short files of the shared set, one per stream.
const FILES: [&str; 4] = [
    "jfk.wav",
    "lj-LJ001-0002.wav",
    "ls-1089-134686-0000.wav",
    "lj-LJ001-0005.wav",
];

fn load(name: &str, precision: Precision, threads: usize) -> Model {
    let path = resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
    Model::load(
        &path,
        &LoadOptions {
            precision,
            threads: Some(threads),
            ..Default::default()
        },
    )
    .unwrap()
}

fn audio(file: &str) -> Vec<f32> {
    amanuensis::load_audio(common::speech(file)).unwrap()
}

/// Everything a segment holds, floats by their bits.
fn fingerprint(segments: &[Segment]) -> Vec<(Vec<u32>, String, u64, u64, u64, u64)> {
    segments
        .iter()
        .map(|s| {
            (
                s.tokens.clone(),
                s.text.clone(),
                s.start.to_bits(),
                s.end.to_bits(),
                s.avg_logprob.to_bits(),
                s.no_speech_prob.to_bits(),
            )
        })
        .collect()
}

fn four_streams_match_one(name: &str, precision: Precision) {
    let model = load(name, precision, 1);
    let audio: Vec<Vec<f32>> = FILES.iter().map(|f| audio(f)).collect();
    let opts = TranscribeOptions::default();
    let mut alone = model.session().unwrap();
    let want: Vec<_> = audio
        .iter()
        .map(|a| fingerprint(&alone.transcribe(a, &opts).unwrap().segments))
        .collect();
    // Four sessions, four threads, each on its own file at the same time, twice over (the
    // second round on warm sessions, files rotated).
    for round in 0..2 {
        let got: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (model, audio, opts) = (&model, &audio, &opts);
                    s.spawn(move || {
                        let mut session = model.session().unwrap();
                        let file = (i + round) % 4;
                        let t = session.transcribe(&audio[file], opts).unwrap();
                        (file, fingerprint(&t.segments))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (file, segments) in got {
            assert!(!segments.is_empty(), "{name} {}: no segments", FILES[file]);
            assert_eq!(
                segments, want[file],
                "{name} {}: concurrent session differs from one alone",
                FILES[file]
            );
        }
    }
}

#[test]
fn four_int8_sessions_on_one_model_match_one_session_alone() {
    four_streams_match_one("tiny.en.int8", Precision::Auto);
}

#[test]
fn four_f32_sessions_on_one_model_match_one_session_alone() {
    four_streams_match_one("tiny.en", Precision::F32);
}

#[test]
fn callbacks_see_every_segment_and_abort_stops() {
    let model = load("tiny.en.int8", Precision::Auto, 2);
    let mut session = model.session().unwrap();
    let long = audio("long-lj001-0001to0020.wav");
    let opts = TranscribeOptions::default();

    let mut seen: Vec<Segment> = Vec::new();
    let mut progress = Vec::new();
    let mut on_segment = |s: &Segment| seen.push(s.clone());
    let mut on_progress = |p: amanuensis::Progress| progress.push(p);
    let t = session
        .transcribe_with(
            &long,
            &opts,
            &mut Hooks {
                on_segment: Some(&mut on_segment),
                on_progress: Some(&mut on_progress),
                abort: None,
            },
        )
        .unwrap();
    assert_eq!(
        seen, t.segments,
        "the callback saw exactly the transcript's segments"
    );
    assert!(
        progress.len() >= 2,
        "progress after each window: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0].done < w[1].done));
    let last = progress.last().unwrap();
    assert_eq!(last.done, last.total);
    assert_eq!(last.total, t.duration);

    // Abort once the first segment is decided: the call ends with Aborted, having decided
    // fewer segments than the whole file has.
    let abort = Arc::new(AtomicBool::new(false));
    let mut count = 0;
    let flag = Arc::clone(&abort);
    let mut stop_after_first = |_: &Segment| {
        count += 1;
        flag.store(true, Ordering::Relaxed);
    };
    let r = session.transcribe_with(
        &long,
        &opts,
        &mut Hooks {
            on_segment: Some(&mut stop_after_first),
            on_progress: None,
            abort: Some(Arc::clone(&abort)),
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::Whisper(
                amanuensis::model::error::WhisperError::Aborted
            ))
        ),
        "{:?}",
        r.map(|t| t.segments.len())
    );
    assert!(
        count >= 1 && count < t.segments.len(),
        "{count} segments before abort"
    );

    // A session that was aborted transcribes normally afterwards.
    let again = session.transcribe(&long, &opts).unwrap();
    assert_eq!(fingerprint(&again.segments), fingerprint(&t.segments));
}

#[test]
fn alignment_weights_on_request_change_nothing_else() {
    let model = load("tiny.en", Precision::F32, 2);
    let mut session = model.session().unwrap();
    let jfk = audio("jfk.wav");
    let plain = session
        .transcribe(&jfk, &TranscribeOptions::default())
        .unwrap();

    // Through the model session: one window, its alignment pass.
    let whisper = amanuensis::load_cpu(&resolve_model(Some("tiny.en")).unwrap(), 2).unwrap();
    let heads = whisper.config.alignment_heads.clone();
    assert!(
        !heads.is_empty(),
        "tiny.en's metadata lists alignment heads"
    );
    let mut s = amanuensis::model::session::Session::new(Arc::clone(&whisper)).unwrap();
    let mel = whisper.mel.compute(&jfk);
    let mut window = vec![0.0; mel.n_mels * 3000];
    mel.window(0, &mut window).unwrap();
    s.encode(&window).unwrap();
    let sot = whisper.sot_sequence("en").unwrap();
    let mut timings = Default::default();
    let opts = TranscribeOptions {
        alignment_weights: true,
        ..Default::default()
    };
    let r = s.decode_window(&sot, 0, &opts, &mut timings).unwrap();
    let a = r.alignment.expect("weights on request");
    assert_eq!(a.heads, heads);
    assert_eq!(a.frames, 1500);
    assert_eq!(a.tokens.len(), sot.len() + r.tokens.len() + 1);
    assert_eq!(
        &a.tokens[a.first_sampled..a.tokens.len() - 1],
        &r.tokens[..]
    );
    assert_eq!(a.weights.len(), heads.len() * a.tokens.len() * 1500);
    for h in 0..heads.len() {
        for i in 0..a.tokens.len() {
            let row = a.row(h, i);
            let sum: f64 = row.iter().map(|&w| w as f64).sum();
            assert!((sum - 1.0).abs() < 1e-4, "head {h} token {i}: sum {sum}");
            assert!(row.iter().all(|&w| (0.0..=1.0).contains(&w)));
        }
    }
    // The text tokens' attention moves forward through the audio: averaged over the heads,
    // the attended frame (weight centroid) of the later half of the words lies after that of
    // the earlier half. (Raw weights are noisy per token; DTW normalises them first.)
    let centroid = |i: usize| {
        (0..heads.len())
            .map(|h| {
                let row = a.row(h, i).iter().enumerate();
                row.map(|(f, &w)| f as f64 * w as f64).sum::<f64>()
            })
            .sum::<f64>()
            / heads.len() as f64
    };
    let timestamp_begin = whisper.config.special.timestamp_begin;
    let words: Vec<f64> = (a.first_sampled..a.tokens.len() - 1)
        .filter(|&i| a.tokens[i] < timestamp_begin)
        .map(centroid)
        .collect();
    let half = words.len() / 2;
    let mean = |c: &[f64]| c.iter().sum::<f64>() / c.len() as f64;
    let (early, late) = (mean(&words[..half]), mean(&words[half..]));
    assert!(
        late > early + 100.0,
        "attended frames: early words {early:.0}, late words {late:.0}: {words:?}"
    );

    // Without the request: no weights, and the same transcript as with it.
    let r2 = s
        .decode_window(&sot, 0, &TranscribeOptions::default(), &mut timings)
        .unwrap();
    assert!(r2.alignment.is_none());
    assert_eq!(r2.tokens, r.tokens);
    let with = session.transcribe(&jfk, &opts).unwrap();
    assert_eq!(fingerprint(&with.segments), fingerprint(&plain.segments));
}
