//! `AMANUENSIS_NPU_ATTENTION=1 --device emu`: every attention of tiny.en.int8 on the emulated
//! device's attention design — the encoder's self-attention, the decoder's cross-attention and
//! its causal self-attention over the device-resident K/V cache (beam forks copying slots in
//! the cache image) — on jfk.wav, greedy and beam 5. The kernel's arithmetic (int8 Q·Kᵀ) is
//! not the CPU INT8 path's (bf16), so the transcripts are compared by their words (Whisper's
//! English normaliser) with the CPU INT8 path's and the reference, not token for token.

mod common;

use amanuensis::model_path::resolve_model;
use amanuensis::{Device, LoadOptions, Model, TranscribeOptions};

fn load(device: Device) -> Model {
    let path = resolve_model(Some("tiny.en.int8")).unwrap_or_else(|e| panic!("{e}"));
    Model::load(
        &path,
        &LoadOptions {
            device,
            threads: Some(2),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("tiny.en.int8 on {device:?}: {e}"))
}

fn words(model: &Model, beam_size: usize) -> String {
    let audio = amanuensis::load_audio(common::speech("jfk.wav")).unwrap();
    let opts = TranscribeOptions {
        language: "en".into(),
        beam_size,
        ..TranscribeOptions::default()
    };
    let tr = model.session().unwrap().transcribe(&audio, &opts).unwrap();
    let text: String = tr.segments.iter().map(|s| s.text.as_str()).collect();
    common::normalize_english(&text)
}

#[test]
fn jfk_with_every_attention_on_the_emulated_device_greedy_and_beam_5() {
    // This test binary's only test: the switch is read when the model loads.
    std::env::set_var("AMANUENSIS_NPU_ATTENTION", "1");
    let emu = load(Device::Emu);
    let cpu = load(Device::Cpu);
    let reference = common::refs()
        .into_iter()
        .find(|(f, _)| f == "jfk.wav")
        .map(|(_, r)| common::normalize_english(&r))
        .unwrap();
    for beam in [1, 5] {
        let before = emu.npu_stats().unwrap().submissions;
        let got = words(&emu, beam);
        let after = emu.npu_stats().unwrap().submissions;
        eprintln!("beam {beam}: {got:?}, {} submissions", after - before);
        assert_eq!(
            got,
            words(&cpu, beam),
            "beam {beam}: the CPU INT8 path's words"
        );
        assert_eq!(got, reference, "beam {beam}: the reference");
    }
    let errors = emu.emulator_command_errors().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}
