//! The streamed log-mel (two passes over a file, windows produced as the session asks) equals the
//! whole-file frontend bit for bit on real speech, window by window, including the irregular
//! seeks long-form decoding makes; and a transcription through it equals the in-memory one.

mod common;

use amanuensis::model::audio::{load_wav, AudioInput};
use amanuensis::model::mel_windows::{MelWindows, StreamedLogMel};
use amanuensis::model::session::{Session, TranscribeOptions};

fn model(
) -> std::sync::Arc<amanuensis::model::whisper::Whisper<amanuensis::runtime::cpu_backend::CpuBackend>>
{
    let path =
        amanuensis::model_path::resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    amanuensis::load_cpu(&path, 2).unwrap()
}

#[test]
fn streamed_windows_are_bit_exact() {
    let model = model();
    for file in ["jfk.wav", "long-lj001-0001to0020.wav"] {
        let path = common::speech(file);
        let whole = model.mel.compute(&load_wav(&path).unwrap());
        let mut streamed =
            StreamedLogMel::open(&AudioInput::File(path.clone()), &model.mel).unwrap();
        assert_eq!(streamed.content_frames(), whole.content_frames, "{file}");
        assert!(!streamed.spooled());
        let n = whole.n_mels * 3000;
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        // Irregular forward seeks, overlapping windows, a repeat, and past the end.
        for seek in [0usize, 0, 1234, 2999, 3000, 5500, 8001, 14000, 14407, 20000] {
            let want = whole.window(seek, &mut a).unwrap();
            let got = MelWindows::window(&mut streamed, seek, &mut b).unwrap();
            assert_eq!(got, want, "{file} seek {seek}");
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{file} seek {seek}: values differ"
            );
        }
        assert!(MelWindows::window(&mut streamed, 100, &mut b).is_err());
    }
}

#[test]
fn streamed_transcription_equals_in_memory() {
    let model = model();
    let path = common::speech("jfk.wav");
    let mut session = Session::new(model.clone()).unwrap();
    let opts = TranscribeOptions::default();
    let reference = session
        .transcribe(&load_wav(&path).unwrap(), &opts)
        .unwrap();
    let mut mel = StreamedLogMel::open(&AudioInput::File(path), &model.mel).unwrap();
    let mut live = Vec::new();
    let streamed = session
        .transcribe_windows(&mut mel, &opts, &mut |w| {
            live.extend(w.segments.iter().map(|s| s.text.clone()))
        })
        .unwrap();
    let texts = |t: &amanuensis::model::session::Transcript| {
        t.segments
            .iter()
            .map(|s| (s.text.clone(), s.start, s.end, s.tokens.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&streamed), texts(&reference));
    assert_eq!(streamed.duration, reference.duration);
    assert_eq!(
        live,
        reference
            .segments
            .iter()
            .map(|s| s.text.clone())
            .collect::<Vec<_>>()
    );
}
