//! Preparing a model's weights ahead of its first window (`Whisper::prepare_weights`,
//! `Model::prepare_weights`: the INT8 code sums, the mapped file's page faults), shared between
//! threads while a session is created, as the CLI does: every matrix is prepared once, and the
//! transcript is the one an unprepared model gives.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, TranscribeOptions, Transcript};
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_int8_backend::{CpuInt8Backend, Int8OrF32Matrix};
use amanuensis::{LoadOptions, Model};

fn text(t: &Transcript) -> Vec<(String, i64, i64)> {
    t.segments
        .iter()
        .map(|s| {
            let ms = |x: f64| (x * 1000.0).round() as i64;
            (s.text.clone(), ms(s.start), ms(s.end))
        })
        .collect()
}

fn code_sums_derived(model: &Whisper<CpuInt8Backend>) -> (usize, usize) {
    let all = model
        .encoder
        .program()
        .matrices()
        .iter()
        .chain(model.decoder.program().matrices());
    let int8: Vec<_> = all
        .filter_map(|m| match m {
            Int8OrF32Matrix::Int8(q) => Some(q),
            Int8OrF32Matrix::F32(_) => None,
        })
        .collect();
    let derived = int8.iter().filter(|q| q.code_sums_derived()).count();
    (derived, int8.len())
}

#[test]
fn weights_prepared_on_two_threads_transcribe_as_unprepared_ones() {
    let path = resolve_model(Some("tiny.en.int8")).unwrap_or_else(|e| panic!("{e}"));
    let audio = load_wav(&common::speech("jfk.wav")).unwrap();
    let opts = TranscribeOptions::default();

    let unprepared = Arc::new(Whisper::load(&path, CpuInt8Backend::new(2)).unwrap());
    // Only the matrices quantized at load (the conv stem, owned) have their sums; those read in
    // place from the file derive them on first use.
    let (derived, int8) = code_sums_derived(&unprepared);
    assert!(derived < int8 / 2, "{derived} of {int8} derived at load");
    let want = Session::new(Arc::clone(&unprepared))
        .unwrap()
        .transcribe(&audio, &opts)
        .unwrap();

    let prepared = Arc::new(Whisper::load(&path, CpuInt8Backend::new(2)).unwrap());
    let next = AtomicUsize::new(0);
    let mut session = std::thread::scope(|s| {
        let helper = s.spawn(|| prepared.prepare_weights(&next));
        let session = Session::new(Arc::clone(&prepared)).unwrap();
        prepared.prepare_weights(&next);
        helper.join().unwrap();
        session
    });
    assert!(next.into_inner() >= prepared.weight_matrices());
    assert_eq!(code_sums_derived(&prepared), (int8, int8));
    let got = session.transcribe(&audio, &opts).unwrap();
    assert_eq!(text(&got), text(&want));
    assert!(!want.segments.is_empty());

    // The facade, with the counter already past the end: nothing left to do, same result.
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let done = AtomicUsize::new(usize::MAX / 2);
    model.prepare_weights(&done);
    let next = AtomicUsize::new(0);
    model.prepare_weights(&next);
    model.prepare_weights(&next);
    let got = model.session().unwrap().transcribe(&audio, &opts).unwrap();
    assert_eq!(text(&got), text(&want));
}
