//! Two streams at once on one loaded model: each file is transcribed by its own session on its
//! own thread, sharing the model's weights; the transcripts are printed in argument order with
//! the CLI's segment lines.
//!
//!     cargo run --release --example two_streams -- MODEL A.wav B.wav
//!
//! Each session computes on half the machine's threads (at least one), so the two streams
//! together use what one stream would.

use amanuensis::model_path::resolve_model;
use amanuensis::output::{render, OutputFormat};
use amanuensis::{LoadOptions, Model, TranscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, a, b] = &args[..] else {
        return Err("usage: two_streams MODEL A.wav B.wav".into());
    };
    let threads = (amanuensis::available_threads() / 2).max(1);
    let model = Model::load(
        resolve_model(Some(model))?,
        &LoadOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )?;
    let files = [a, b];
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|&file| {
                let model = &model;
                s.spawn(move || -> Result<String, String> {
                    let mut session = model.session().map_err(|e| e.to_string())?;
                    let transcript = session
                        .transcribe_file(file, &TranscribeOptions::default())
                        .map_err(|e| format!("{file}: {e}"))?;
                    Ok(render(&transcript, OutputFormat::Console, file, true))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a stream panicked".into())))
            .collect()
    });
    for (file, result) in files.iter().zip(results) {
        println!("==> {file} <==");
        print!("{}", result?);
    }
    Ok(())
}
