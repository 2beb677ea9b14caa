//! Transcribe audio files with the embedding API, printing each segment as soon as it is
//! decided (the CLI's console lines).
//!
//!     cargo run --release --example transcribe -- MODEL FILE.wav [FILE.wav ...]
//!
//! MODEL is a model file or a cached model name (tiny.en, base.int8, ...).

use amanuensis::model_path::resolve_model;
use amanuensis::output::timestamp;
use amanuensis::{Hooks, LoadOptions, Model, Segment, TranscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), files) = (args.next(), args.collect::<Vec<_>>()) else {
        return Err("usage: transcribe MODEL FILE.wav [FILE.wav ...]".into());
    };
    if files.is_empty() {
        return Err("usage: transcribe MODEL FILE.wav [FILE.wav ...]".into());
    }
    let model = Model::load(resolve_model(Some(&model))?, &LoadOptions::default())?;
    let mut session = model.session()?;
    let opts = TranscribeOptions::default();
    for file in &files {
        if files.len() > 1 {
            println!("==> {file} <==");
        }
        let audio = amanuensis::load_audio(file)?;
        let mut print = |s: &Segment| {
            println!(
                "[{} --> {}]  {}",
                timestamp(s.start, '.'),
                timestamp(s.end, '.'),
                s.text.trim()
            )
        };
        session.transcribe_with(
            &audio,
            &opts,
            &mut Hooks {
                on_segment: Some(&mut print),
                ..Default::default()
            },
        )?;
    }
    Ok(())
}
