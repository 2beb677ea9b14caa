//! `amanuensis bench`: where the time goes on real audio, in one run: model load, mel, encoder
//! per window, decoder per pass, end-to-end realtime factor, peak RSS and the encoder's achieved
//! arithmetic rate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amanuensis_model::config::Dims;
use amanuensis_model::session::{Timings, TranscribeOptions};

use crate::engine::{LoadOptions, Model, Precision};

/// Totals over the benchmarked files.
#[derive(Debug, Default)]
pub struct BenchReport {
    /// Model load time.
    pub load: Duration,
    /// Files transcribed.
    pub files: usize,
    /// Their audio duration.
    pub audio_seconds: f64,
    /// Wall time of the timed transcriptions.
    pub wall: Duration,
    /// Stage timings summed over the files.
    pub timings: Timings,
    /// Peak resident set size.
    pub peak_rss_kib: Option<u64>,
    /// Multiply-accumulates of one encoder window.
    pub encoder_macs_per_window: f64,
    /// Device submissions per encoder window and per decoded token.
    pub submissions: Option<crate::Submissions>,
    /// The backend that ran (`cpu-f32`, `cpu-int8`).
    pub backend: String,
    /// INT8 runs: the measured `vpdpbusd` peak (GMAC/s) on the same threads, if the CPU has it.
    pub int8_peak_gmacs: Option<f64>,
    /// INT8 runs: `(m, k, n, GMAC/s)` of the INT8 GEMM alone on the encoder's MLP shape.
    pub gemm_gmacs: Option<(usize, usize, usize, f64)>,
}

/// Multiply-accumulates of one encoder window: conv stem, projections, MLP and attention.
pub fn encoder_macs(d: &Dims) -> f64 {
    let (t, s, m) = (
        d.n_audio_ctx as f64,
        d.n_audio_state as f64,
        d.n_mels as f64,
    );
    let conv = 2.0 * t * s * m * 3.0 + t * s * s * 3.0;
    let per_layer = 4.0 * t * s * s + 2.0 * t * s * 4.0 * s + 2.0 * t * t * s;
    conv + d.n_audio_layer as f64 * per_layer
}

/// Peak resident set size of this process (`VmHWM`), if the kernel reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Loads `model` with `threads` threads and transcribes every file once (after one untimed
/// warm-up run of the first file).
pub fn run(
    model: &Path,
    threads: usize,
    precision: Precision,
    beam_size: usize,
    files: &[PathBuf],
) -> Result<BenchReport, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let loaded = Model::load(
        model,
        &LoadOptions {
            precision,
            threads: Some(threads),
            ..Default::default()
        },
    )?;
    let mut session = loaded.session()?;
    let load = t.elapsed();
    let opts = TranscribeOptions {
        beam_size,
        ..Default::default()
    };
    let audio: Vec<Vec<f32>> = files
        .iter()
        .map(crate::load_audio)
        .collect::<Result<_, _>>()?;
    if let Some(first) = audio.first() {
        session.transcribe(first, &opts)?;
    }
    let mut report = BenchReport {
        load,
        files: files.len(),
        encoder_macs_per_window: encoder_macs(&loaded.dims()),
        submissions: Some(loaded.submissions()),
        backend: loaded.backend_name(),
        ..Default::default()
    };
    for samples in &audio {
        let t = Instant::now();
        let tr = session.transcribe(samples, &opts)?;
        report.wall += t.elapsed();
        report.audio_seconds += tr.duration;
        report.timings += &tr.timings;
    }
    report.peak_rss_kib = peak_rss_kib();
    if report.backend == "cpu-int8" {
        let pool = amanuensis_runtime::cpu::CpuPool::new(threads);
        let d = loaded.dims();
        let (m, k, n) = (d.n_audio_ctx, d.n_audio_state, 4 * d.n_audio_state);
        let rate = amanuensis_runtime::q8::peak::gemm_q8_gmacs(&pool, m, k, n, 5);
        report.gemm_gmacs = Some((m, k, n, rate));
        report.int8_peak_gmacs = amanuensis_runtime::q8::peak::vnni_peak_gmacs(&pool, 10_000_000);
    }
    Ok(report)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let tm = &self.timings;
        let per_window = ms(tm.encode) / tm.windows.max(1) as f64;
        writeln!(f, "model load        {:9.1} ms", ms(self.load))?;
        writeln!(
            f,
            "files             {:9} ({:.1} s of audio)",
            self.files, self.audio_seconds
        )?;
        writeln!(f, "mel               {:9.1} ms total", ms(tm.mel))?;
        writeln!(
            f,
            "encoder           {:9.1} ms per window ({} windows)",
            per_window, tm.windows
        )?;
        writeln!(
            f,
            "encoder rate      {:9.1} GOPS (2 x {:.2} GMAC per window / window time)",
            2.0 * self.encoder_macs_per_window / (per_window * 1e-3) / 1e9,
            self.encoder_macs_per_window / 1e9
        )?;
        if let Some((m, k, n, rate)) = self.gemm_gmacs {
            write!(
                f,
                "INT8 GEMM alone  {:9.1} GOPS ({m}x{k}x{n}, best of 5)",
                2.0 * rate
            )?;
            match self.int8_peak_gmacs {
                Some(peak) => writeln!(
                    f,
                    " = {:.0} % of the measured INT8 peak {:.0} GOPS (vpdpbusd chains, same threads)",
                    100.0 * rate / peak,
                    2.0 * peak
                )?,
                None => writeln!(f, " (no AVX-512 VNNI: no INT8 peak measured)")?,
            }
        }
        writeln!(
            f,
            "decoder           {:9.2} ms per pass ({} passes, {} tokens)",
            ms(tm.decode) / tm.decoder_passes.max(1) as f64,
            tm.decoder_passes,
            tm.sampled_tokens
        )?;
        let per_token = |d: Duration| ms(d) / tm.sampled_tokens.max(1) as f64;
        writeln!(
            f,
            "  per token       {:9.2} ms blocks + logits (one stage), {:.2} ms filters + pick; prompt logits {:.1} ms in all",
            per_token(tm.decoder_layers),
            per_token(tm.sampling),
            ms(tm.logits)
        )?;
        writeln!(
            f,
            "end to end        {:9.1} ms, {:.1}x realtime",
            ms(self.wall),
            self.audio_seconds / self.wall.as_secs_f64()
        )?;
        if let Some(s) = self.submissions {
            writeln!(
                f,
                "submissions       {:9} per encoder window, {} per decoded token, {} per window for cross K/V",
                s.encoder_window, s.decoder_token, s.cross_kv_per_window
            )?;
        }
        match self.peak_rss_kib {
            Some(k) => writeln!(f, "peak RSS          {:9.1} MiB", k as f64 / 1024.0),
            None => writeln!(f, "peak RSS          unknown (no /proc/self/status)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_encoder_macs_by_hand() {
        let d = Dims {
            n_mels: 80,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_vocab: 51864,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
        };
        // conv1 3000·384·80·3 + conv2 1500·384·384·3 + 4 · (12·1500·384² + 2·1500²·384)
        let want = 276_480_000.0 + 663_552_000.0 + 4.0 * (2_654_208_000.0 + 1_728_000_000.0);
        assert_eq!(encoder_macs(&d), want);
    }
}
