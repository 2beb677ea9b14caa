//! `AMANUENSIS_NPU_ATTENTION=1 --device emu`: every attention of tiny.en.int8 and base.int8 on
//! the emulated device's attention design — the encoder's self-attention, the decoder's
//! cross-attention and its causal self-attention over the device-resident K/V cache (beam forks
//! copying slots in the cache image; greedy steps and prompts with the attention and its
//! cache writes inside the layers' chains: base 2 submissions a step, tiny.en 12) — on
//! jfk.wav, greedy and beam 5. The kernel's arithmetic (int8 Q·Kᵀ) is
//! not the CPU INT8 path's (bf16), so the transcripts are compared by their words (Whisper's
//! English normaliser) with the CPU INT8 path's and the reference, not token for token.
//!
//! And base.int8 greedy on a file of two windows, the second with the first's text as its
//! prompt: base's attentions are members of its chains (the encoder's self-attention, the
//! decoder's cross-attention in query buckets: the prompt pass takes a bucket of 32 rows, the
//! next step one of 4 again, whose Q headers lie where the device wrote Q codes).

mod common;

use amanuensis::model_path::resolve_model;
use amanuensis::{Device, LoadOptions, Model, TranscribeOptions};

fn load(name: &str, device: Device) -> Model {
    let path = resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
    Model::load(
        &path,
        &LoadOptions {
            device,
            threads: Some(2),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name} on {device:?}: {e}"))
}

fn words(model: &Model, beam_size: usize) -> String {
    words_of(model, "jfk.wav", beam_size)
}

fn words_of(model: &Model, file: &str, beam_size: usize) -> String {
    let audio = amanuensis::load_audio(common::speech(file)).unwrap();
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
    // The switch is read when a model loads (every test of this binary sets it).
    std::env::set_var("AMANUENSIS_NPU_ATTENTION", "1");
    let reference = common::refs()
        .into_iter()
        .find(|(f, _)| f == "jfk.wav")
        .map(|(_, r)| common::normalize_english(&r))
        .unwrap();
    for (name, token_submissions) in [("tiny.en.int8", 12), ("base.int8", 2)] {
        let emu = load(name, Device::Emu);
        let cpu = load(name, Device::Cpu);
        for beam in [1, 5] {
            let before = emu.npu_stats().unwrap().submissions;
            let got = words(&emu, beam);
            let after = emu.npu_stats().unwrap().submissions;
            eprintln!(
                "{name} beam {beam}: {got:?}, {} submissions",
                after - before
            );
            assert_eq!(
                got,
                words(&cpu, beam),
                "{name} beam {beam}: the CPU INT8 path's words"
            );
            assert_eq!(got, reference, "{name} beam {beam}: the reference");
        }
        // (Declared once a session has put the linears on the designs.) Both models' decoder
        // attentions are in the layers' chains (tiny.en's q, k, v rows come back 512 wide and
        // are read 384 of 512; its norms after an out-projection stay on the host: 3 chains a
        // layer); base: 2 chains of 3 layers.
        assert_eq!(
            emu.submissions().decoder_token,
            token_submissions,
            "{name}: submissions per decoded token"
        );
        let errors = emu.emulator_command_errors().unwrap();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn base_chains_with_attention_on_two_windows_with_a_prompt() {
    std::env::set_var("AMANUENSIS_NPU_ATTENTION", "1");
    let file = "lj-LJ001-0001.wav";
    let emu = load("base.int8", Device::Emu);
    let cpu = load("base.int8", Device::Cpu);
    let got = words_of(&emu, file, 1);
    assert_eq!(got, words_of(&cpu, file, 1), "the CPU INT8 path's words");
    let errors = emu.emulator_command_errors().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}
