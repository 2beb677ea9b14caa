//! Accuracy over the whole shared speech set: the WER of tiny.en greedy (f32 CPU path) must be
//! within 0.3 points of faster-whisper float32 greedy on the same weights. Both WERs are computed
//! here with the same normaliser (tests/common) from faster-whisper's stored transcripts
//! (tests/goldens/fw_tiny_en_greedy.tsv), and printed.

mod common;

use std::sync::Arc;

use amanuensis::model::audio::load_wav;
use amanuensis::model::session::{Session, TranscribeOptions};
use amanuensis::model_path::resolve_model;

#[test]
fn tiny_en_wer_within_0_3_points_of_faster_whisper() {
    let path = resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let model = amanuensis::load_cpu(&path, threads).unwrap();
    let mut session = Session::new(Arc::clone(&model)).unwrap();
    let fw = common::fw_transcripts("tiny.en");
    let (mut refs, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for (file, reference) in common::refs() {
        let audio = load_wav(&common::speech(&file)).unwrap();
        let t = session
            .transcribe(&audio, &TranscribeOptions::default())
            .unwrap();
        let text = t.text();
        let fw_text = fw
            .get(&file)
            .unwrap_or_else(|| panic!("no faster-whisper transcript for {file}"));
        if common::normalize_english(&text) != common::normalize_english(fw_text) {
            eprintln!("{file}: differs from faster-whisper\n  ours: {text}\n  fw:   {fw_text}");
        }
        refs.push(reference);
        ours.push(text);
        theirs.push(fw_text.clone());
    }
    let (w_ours, w_fw) = (common::wer(&refs, &ours), common::wer(&refs, &theirs));
    eprintln!("WER over {} files: amanuensis tiny.en f32 greedy {w_ours:.2} %, faster-whisper float32 greedy {w_fw:.2} %", refs.len());
    assert!(
        w_ours <= w_fw + 0.3,
        "WER {w_ours:.2} % is more than 0.3 points above faster-whisper's {w_fw:.2} %"
    );
}
