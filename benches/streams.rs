//! Many streams on one model: aggregate throughput of N concurrent sessions on one loaded model
//! against one session, in the same process on the same files, and the resident memory each
//! extra session adds.
//!
//!     cargo bench --bench streams                       # tiny.en.int8, 2 streams, 2 threads
//!     AMANUENSIS_BENCH_MODEL=base.int8 cargo bench --bench streams
//!
//! The thread budget is the same for both runs (`AMANUENSIS_BENCH_THREADS`, default: the
//! machine's cores): one session on all of them, or N sessions (`AMANUENSIS_BENCH_STREAMS`,
//! default 2) on `threads / N` each, the shared speech set split round-robin between them.
//! Memory: the process's resident set (VmRSS) after one session has transcribed the first file,
//! then after each further session has done the same, divided by the extra sessions. Timings
//! are printed, never asserted.

use std::path::PathBuf;
use std::time::Instant;

use amanuensis::model_path::resolve_model;
use amanuensis::{LoadOptions, Model, TranscribeOptions};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("AMANUENSIS_BENCH_MODEL").unwrap_or_else(|_| "tiny.en.int8".into());
    let threads: usize = env_or("AMANUENSIS_BENCH_THREADS", amanuensis::available_threads());
    let streams: usize = env_or("AMANUENSIS_BENCH_STREAMS", 2).max(1);
    let speech = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/speech");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&speech)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    files.sort();
    let audio: Vec<Vec<f32>> = files
        .iter()
        .map(amanuensis::load_audio)
        .collect::<Result<_, _>>()?;
    let seconds: f64 = audio.iter().map(|a| a.len() as f64 / 16_000.0).sum();
    let model = Model::load(
        resolve_model(Some(&name))?,
        &LoadOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )?;
    let opts = TranscribeOptions::default();
    println!(
        "streams bench: {name} ({}), {} files, {seconds:.1} s of audio, {threads} threads in all",
        model.backend_name(),
        files.len()
    );

    // Memory per extra session.
    let mut sessions = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..streams.max(2) {
        let mut s = model.session_with_threads((threads / streams).max(1))?;
        s.transcribe(&audio[0], &opts)?;
        sessions.push(s);
        rss.push(rss_kib().unwrap_or(0));
    }
    let extra = (rss[rss.len() - 1] - rss[0]) as f64 / 1024.0 / (rss.len() - 1) as f64;
    println!(
        "resident: {:.1} MiB with one session, {extra:.1} MiB per extra session",
        rss[0] as f64 / 1024.0
    );
    drop(sessions);

    // One session on every thread (warmed up above on a session of its own).
    let mut one = model.session_with_threads(threads)?;
    one.transcribe(&audio[0], &opts)?;
    let t = Instant::now();
    for a in &audio {
        one.transcribe(a, &opts)?;
    }
    let t_one = t.elapsed().as_secs_f64();
    drop(one);

    // N sessions on threads / N each, files round-robin, all at once.
    let per = (threads / streams).max(1);
    let mut many: Vec<_> = (0..streams)
        .map(|_| model.session_with_threads(per))
        .collect::<Result<_, _>>()?;
    for s in &mut many {
        s.transcribe(&audio[0], &opts)?;
    }
    let t = Instant::now();
    std::thread::scope(|scope| -> Result<(), amanuensis::Error> {
        let handles: Vec<_> = many
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                let (audio, opts) = (&audio, &opts);
                scope.spawn(move || -> Result<(), amanuensis::Error> {
                    for a in audio.iter().skip(i).step_by(streams) {
                        s.transcribe(a, opts)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("stream thread")?;
        }
        Ok(())
    })?;
    let t_many = t.elapsed().as_secs_f64();
    println!(
        "1 session x {threads} threads: {t_one:.2} s wall, {:.1}x realtime",
        seconds / t_one
    );
    println!(
        "{streams} sessions x {per} threads: {t_many:.2} s wall, {:.1}x realtime aggregate",
        seconds / t_many
    );
    println!(
        "aggregate throughput {streams} sessions / 1 session: {:.2}x (same files, same process)",
        t_one / t_many
    );
    Ok(())
}
