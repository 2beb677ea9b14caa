//! The whole pipeline on real speech, INT8 against our own f32 reference path in the same
//! process, with the stage report of `amanuensis bench` for each:
//!
//!     cargo bench --bench pipeline                  # tiny.en, all of ../shared/speech, greedy
//!     AMANUENSIS_BENCH_MODEL=base AMANUENSIS_BENCH_BEAM=5 cargo bench --bench pipeline
//!
//! Needs `scripts/setup-models.sh NAME NAME.int8`. The comparison against faster-whisper (a
//! Python process) is `scripts/peer-compare.sh`; this harness gives the INT8/f32 ratio and the
//! per-stage split (mel, encoder per window and its GOPS against the measured INT8 peak,
//! decoder per token, realtime factor, peak RSS). Timings are printed, never asserted. Peak RSS
//! is the process high-water mark, so the f32 run's includes the INT8 run before it.

use std::path::PathBuf;

use amanuensis::bench::{run, BenchReport};
use amanuensis::engine::{Device, Precision};
use amanuensis::model_path::resolve_model;

fn main() {
    // `cargo bench` passes libtest-style flags (e.g. --bench); there are none to honour.
    let model = std::env::var("AMANUENSIS_BENCH_MODEL").unwrap_or_else(|_| "tiny.en".into());
    let beam: usize = std::env::var("AMANUENSIS_BENCH_BEAM")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let speech = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/speech");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&speech) {
        Ok(dir) => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wav"))
            .collect(),
        Err(e) => {
            eprintln!("pipeline bench: cannot read {}: {e}", speech.display());
            std::process::exit(1);
        }
    };
    files.sort();
    let mut reports: Vec<(String, BenchReport)> = Vec::new();
    for (name, precision) in [
        (format!("{model}.int8"), Precision::Auto),
        (model.clone(), Precision::F32),
    ] {
        let path = match resolve_model(Some(&name)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("pipeline bench: {e}");
                std::process::exit(1);
            }
        };
        match run(&path, threads, precision, Device::Auto, beam, &files) {
            Ok(r) => {
                println!(
                    "== {name} ({}), beam {beam}, {threads} threads\n{r}",
                    r.backend
                );
                reports.push((name, r));
            }
            Err(e) => {
                eprintln!("pipeline bench: {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    if let [(a, int8), (b, f32)] = &reports[..] {
        println!(
            "{a} vs {b}: {:.2}x the f32 path's speed (end to end, same files, same process)",
            f32.wall.as_secs_f64() / int8.wall.as_secs_f64()
        );
    }
}
