//! Where a model load's time and page faults go, part by part: the steps of `Model::load` and
//! of a session's creation done one at a time (as `Whisper::from_file` and `Session::new` do
//! them), each timed and counted in minor page faults (`/proc/self/stat`), then the first
//! encoder window and the whole transcription of a file.
//!
//!     cargo run --release --example load_breakdown -- MODEL [FILE.wav] [RUNS] [prepare]
//!
//! With `prepare`, the weights are prepared after the session (`Whisper::prepare_weights` on
//! this thread: the INT8 code sums and the mapped file's faults, which the first window would
//! otherwise pay), timed as a part of its own; compare the first encoder window with and without.
//!
//! MODEL is a model file or a cached model name (tiny.en.int8, base.int8, ...). Prints one line
//! per part per run, then the minimum and median over the runs (each run loads afresh in this
//! process: the page cache is warm after the first). Linux only (reads `/proc/self/stat`).

use std::sync::Arc;
use std::time::Instant;

use amanuensis::model::decoder::TextDecoder;
use amanuensis::model::encoder::AudioEncoder;
use amanuensis::model::mel::MelFrontend;
use amanuensis::model::names;
use amanuensis::model::session::{Session, TranscribeOptions};
use amanuensis::model::tokenizer::Tokenizer;
use amanuensis::model::weights::WeightsFile;
use amanuensis::model::whisper::Whisper;
use amanuensis::model_path::resolve_model;
use amanuensis::runtime::cpu_int8_backend::CpuInt8Backend;

/// Minor page faults of this process so far (field 10 of `/proc/self/stat`).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) is parenthesised and may hold spaces: count after its `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Times and counts the faults of successive parts.
struct Clock {
    parts: Vec<(&'static str, f64, u64)>,
    t: Instant,
    faults: u64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            parts: Vec::new(),
            faults: minor_faults(),
            t: Instant::now(),
        }
    }
    fn lap(&mut self, name: &'static str) {
        let ms = self.t.elapsed().as_secs_f64() * 1e3;
        let faults = minor_faults();
        self.parts.push((name, ms, faults - self.faults));
        self.faults = minor_faults();
        self.t = Instant::now();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or("usage: load_breakdown MODEL [FILE.wav] [RUNS]")?;
    let audio_path = args.next();
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(7);
    let prepare = args.next().as_deref() == Some("prepare");
    let path = resolve_model(Some(&model))?;
    let threads = amanuensis::available_threads().clamp(1, 8);
    let audio = audio_path
        .filter(|p| !p.is_empty())
        .map(amanuensis::load_audio)
        .transpose()?;
    let mut all: Vec<Vec<(&'static str, f64, u64)>> = Vec::new();
    for run in 0..runs {
        let mut c = Clock::new();
        let file = WeightsFile::open(&path)?;
        c.lap("open (map, header, checks)");
        let config = file.config().clone();
        let dims = config.dims;
        let tokenizer = Tokenizer::from_file(&file, config.special)?;
        c.lap("tokenizer (decode table)");
        let filters = file.tensor_f32(names::MEL_FILTERS, &[dims.n_mels, 201])?;
        let mel = MelFrontend::new(filters, dims.n_mels)?;
        let backend = Arc::new(CpuInt8Backend::new(threads));
        let encoder = AudioEncoder::load(&file, &*backend, &dims)?;
        c.lap("encoder weights");
        let decoder = TextDecoder::load(&file, &*backend, &dims, &config.alignment_heads)?;
        c.lap("decoder weights");
        let model = Arc::new(Whisper {
            config,
            tokenizer,
            mel,
            encoder,
            decoder,
            encoder_backend: Arc::clone(&backend),
            decoder_backend: backend,
        });
        let encoder_ws = model.encoder.workspace(&model.encoder_backend, threads)?;
        c.lap("encoder workspace");
        let decoder_ws = model.decoder.workspace(&model.decoder_backend, threads)?;
        c.lap("decoder workspace");
        drop((encoder_ws, decoder_ws));
        c.lap("(dropped)");
        let mut session = Session::with_threads(Arc::clone(&model), threads)?;
        c.lap("session (pool, buffers)");
        if prepare {
            model.prepare_weights(&std::sync::atomic::AtomicUsize::new(0));
            c.lap("weights prepared (1 thread)");
        }
        if run == 0 {
            let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
            for line in smaps
                .lines()
                .filter(|l| l.starts_with("AnonHugePages") || l.starts_with("Rss"))
            {
                println!("{line}");
            }
        }
        if let Some(audio) = &audio {
            let window = vec![0f32; dims.n_mels * model.encoder.n_frames()];
            session.encode(&window)?;
            c.lap("first encoder window");
            session.encode(&window)?;
            c.lap("second encoder window");
            session.transcribe(audio, &TranscribeOptions::default())?;
            c.lap("transcription of the file");
        }
        for (name, ms, faults) in &c.parts {
            println!("run {run}: {name:32} {ms:8.2} ms {faults:7} faults");
        }
        all.push(c.parts);
    }
    println!("min / median over {runs} runs:");
    for i in 0..all[0].len() {
        let mut ms: Vec<f64> = all.iter().map(|p| p[i].1).collect();
        let mut faults: Vec<u64> = all.iter().map(|p| p[i].2).collect();
        ms.sort_by(f64::total_cmp);
        faults.sort();
        println!(
            "{:32} {:8.2} / {:8.2} ms {:7} / {:7} faults",
            all[0][i].0,
            ms[0],
            ms[ms.len() / 2],
            faults[0],
            faults[faults.len() / 2]
        );
    }
    Ok(())
}
