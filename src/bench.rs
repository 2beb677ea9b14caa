//! `amanuensis bench`: where the time goes on real audio, in one run: model load, mel, encoder
//! per window, decoder per pass, end-to-end realtime factor, peak RSS and the encoder's achieved
//! arithmetic rate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amanuensis_model::config::Dims;
use amanuensis_model::session::{Timings, TranscribeOptions};

use amanuensis_aie::budget::{self, Assumptions, Chaining, Platform, PHOENIX, STRIX};
use amanuensis_aie::design::WhisperDims;

use amanuensis_runtime::npu_backend::NpuStats;

use crate::engine::{Device, DispatchTotals, LoadOptions, Model, Precision};

/// Totals over the benchmarked files.
#[derive(Debug, Default)]
pub struct BenchReport {
    /// Model load time (file, weights, session with its pool and pre-touched buffers).
    pub load: Duration,
    /// Of [`BenchReport::load`], the session's creation (pool, buffers).
    pub session: Duration,
    /// Whether huge pages were found cold during the load (`resident::huge_pages_cold`: the
    /// session's buffers went to 4 KiB pages).
    pub huge_pages_cold: bool,
    /// The untimed first transcription of the first file (first-touch page faults, lazy
    /// tokenizer, cold caches) and the same file's timed, steady transcription.
    pub first_run: Option<(Duration, Duration)>,
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
    /// NPU / emulator runs: what the timed transcriptions submitted, and the dispatch budget.
    pub dispatch: Option<DispatchBudget>,
}

/// Host time per submission the projection adds to the measured host preparation: one
/// driver round trip (EXEC_CMD + completion), an empty XRT kernel call (`npu-hardware.md`
/// §3b, not measured by this project).
pub const ASSUMED_ROUND_TRIP_S: f64 = 45e-6;

/// The dispatch budget of a device run: what the encoder and the decoder submitted (the sums
/// of their dispatch logs over the timed transcriptions), per 30 s window and per token, and a
/// **projected** time on Phoenix and Strix. On the emulated device every INT8 linear whose
/// `(K, N)` are multiples of 64 runs on the device (on our GEMM designs; a fixture program only
/// where no device norm or device quantize feeds it), with the LayerNorms and fc2's input
/// quantization as device ops, the ops a stage's chain plan groups in one `ERT_CMD_CHAIN`
/// submission; attention (unless on its design), the norms whose output the host reads, the
/// conv stem and the logits run on the CPU.
#[derive(Debug, Clone)]
pub struct DispatchBudget {
    /// Encoder submissions over the timed run.
    pub encoder: DispatchTotals,
    /// Decoder submissions over the timed run.
    pub decoder: DispatchTotals,
    /// Encoder windows of the timed run.
    pub windows: usize,
    /// Sampled tokens of the timed run.
    pub tokens: usize,
    /// Decoder passes of the timed run (prompts and tokens).
    pub passes: usize,
    /// Encoder wall time of the timed run (device submissions included).
    pub encode: Duration,
    /// Decoder wall time of the timed run (device submissions included).
    pub decode: Duration,
    /// Model widths for the all-on-device projection.
    pub dims: WhisperDims,
    /// The backend's own counters over the same run (`Model::npu_stats` after minus before;
    /// `weight_bytes` is the load's): a cross-check of the logs.
    pub counters: NpuStats,
    /// Whether attention (the encoder's self-attention, the decoder's cross-attention and its
    /// self-attention over the device K/V cache) ran on the (emulated) device's attention
    /// design (`AMANUENSIS_NPU_ATTENTION=1`).
    pub attention_on_device: bool,
}

/// Per-unit figures of a [`DispatchTotals`] divided by a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerUnit {
    /// Submissions.
    pub submissions: f64,
    /// Bytes written for the device.
    pub bytes_to_device: f64,
    /// Bytes read back.
    pub bytes_from_device: f64,
    /// Multiply-accumulates the array computed.
    pub macs: f64,
}

impl PerUnit {
    fn of(t: &DispatchTotals, n: usize) -> Self {
        let n = n.max(1) as f64;
        PerUnit {
            submissions: t.submissions as f64 / n,
            bytes_to_device: t.bytes_to_device as f64 / n,
            bytes_from_device: t.bytes_from_device as f64 / n,
            macs: t.macs as f64 / n,
        }
    }
}

/// One platform's projection of a 30 s window (seconds; a projection, not a measurement).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    /// As built today: the measured device submissions per window (encoder) and per token
    /// (decoder, × the assumed tokens per window), each with the host overhead, plus the
    /// multiply-accumulates they computed at the platform's int8 peak (compute only: DMA not
    /// modelled), plus the CPU time measured here for everything else.
    pub as_built_device_s: f64,
    /// The CPU part of as built today, measured on this machine (emulator time removed).
    pub as_built_cpu_s: f64,
    /// Every linear and attention on the device (`amanuensis_aie::budget::window`), grouped
    /// by today's chain rule (`Chaining::AsBuilt`): device and dispatch only; the CPU work
    /// (mel, conv stem, norms, logits, search) is not included.
    pub all_on_device_s: f64,
    /// Submissions per window of the all-on-device design.
    pub all_on_device_submissions: usize,
    /// The all-on-device window with no host preparation, only the assumed round trip per
    /// submission (`budget.rs`'s own default): what the design gives once the host side is
    /// cut to writing and reading the rows it uses.
    pub all_on_device_round_trip_only_s: f64,
    /// The target shape (`Chaining::PerLayer`: one chain per encoder layer, one for the
    /// cross K/V, one per decoder step, everything on the device, the norms' device time
    /// counted) with the assumed round trip per submission and `budget.rs`'s assumed
    /// per-sub-command cost.
    pub per_layer_chains_s: f64,
    /// Submissions per window of that shape.
    pub per_layer_chains_submissions: usize,
}

impl DispatchBudget {
    /// Encoder submissions, bytes per 30 s window.
    pub fn per_window(&self) -> PerUnit {
        PerUnit::of(&self.encoder, self.windows)
    }

    /// Decoder submissions, bytes per sampled token (prompt passes included).
    pub fn per_token(&self) -> PerUnit {
        PerUnit::of(&self.decoder, self.tokens)
    }

    /// Measured host time per submission around the device (quantize A, flush A and C,
    /// invalidate C), seconds, over encoder and decoder.
    pub fn host_prep_s(&self) -> f64 {
        let n = (self.encoder.submissions + self.decoder.submissions).max(1);
        (self.encoder.host_prep_ns() + self.decoder.host_prep_ns()) as f64 * 1e-9 / n as f64
    }

    /// The projection's assumptions for the encoder's (`encoder`) or the decoder's
    /// submissions: that side's measured host preparation per submission plus one assumed
    /// driver round trip; the rest `budget.rs`'s defaults (peak efficiency, 120 tokens per
    /// window, greedy).
    pub fn assumptions(&self, encoder: bool) -> Assumptions {
        let t = if encoder {
            &self.encoder
        } else {
            &self.decoder
        };
        let prep = t.host_prep_ns() as f64 * 1e-9 / t.submissions.max(1) as f64;
        Assumptions {
            host_overhead_s: prep + ASSUMED_ROUND_TRIP_S,
            ..Assumptions::default()
        }
    }

    /// Seconds of CPU work per window (encoder) and per token (decoder) measured here: wall
    /// time minus the submissions' host time (flush, ioctl, wait, invalidate).
    pub fn cpu_s(&self) -> (f64, f64) {
        let dev = |t: &DispatchTotals| {
            (t.flush_ns + t.submit_ns + t.wait_ns + t.invalidate_ns) as f64 * 1e-9
        };
        let enc = (self.encode.as_secs_f64() - dev(&self.encoder)).max(0.0);
        let dec = (self.decode.as_secs_f64() - dev(&self.decoder)).max(0.0);
        (
            enc / self.windows.max(1) as f64,
            dec / self.tokens.max(1) as f64,
        )
    }

    /// The projection of one 30 s window on `p`.
    pub fn project(&self, p: &Platform) -> Projection {
        let (ae, ad) = (self.assumptions(true), self.assumptions(false));
        let w = &self.dims;
        // Per submission: host overhead; per MAC (padding rows included): the int8 peak at the
        // assumed efficiency.
        let rate = |a: &Assumptions| p.cores as f64 * p.int8_macs * p.clock_hz * a.efficiency;
        let side =
            |u: &PerUnit, a: &Assumptions| u.submissions * a.host_overhead_s + u.macs / rate(a);
        let tokens = ad.tokens_per_window;
        let (pw, pt) = (self.per_window(), self.per_token());
        let (cpu_window, cpu_token) = self.cpu_s();
        let per_layer = budget::window(
            p,
            &Assumptions {
                host_overhead_s: ASSUMED_ROUND_TRIP_S,
                chaining: Chaining::PerLayer,
                ..Assumptions::default()
            },
            w,
        );
        let mut all = budget::encoder(p, &ae, w);
        all += budget::cross_kv(p, &ae, w);
        all += budget::decoder_step(p, &ad, w) * tokens;
        Projection {
            as_built_device_s: side(&pw, &ae) + tokens as f64 * side(&pt, &ad),
            as_built_cpu_s: cpu_window + tokens as f64 * cpu_token,
            all_on_device_s: all.projected_s,
            all_on_device_submissions: all.submissions,
            all_on_device_round_trip_only_s: budget::window(
                p,
                &Assumptions {
                    host_overhead_s: ASSUMED_ROUND_TRIP_S,
                    ..Assumptions::default()
                },
                w,
            )
            .projected_s,
            per_layer_chains_s: per_layer.projected_s,
            per_layer_chains_submissions: per_layer.submissions,
        }
    }
}

impl std::fmt::Display for DispatchBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (pw, pt) = (self.per_window(), self.per_token());
        let us = |ns: u64, n: u64| ns as f64 / 1e3 / n.max(1) as f64;
        writeln!(
            f,
            "dispatch budget   on the device today: every INT8 linear with K, N multiples of 64 (d {}, MLP {}); one submission per group of a stage's chain plan (ERT_CMD_CHAIN: a LayerNorm (+ residual add) with the linears reading it, fc2 with fc1 through the device quantize, cross K/V of all layers, a fixture linear's 128-row tiles); {}",
            self.dims.d,
            self.dims.mlp,
            if self.attention_on_device {
                "every attention on the attention design (one submission each; Q/K quantized on the host; the decoder's self-attention K/V cache resident on the device, each step's new rows uploaded); norms whose output the host reads, conv stem, logits on the CPU"
            } else {
                "attention, norms whose output the host reads, conv stem, logits on the CPU"
            }
        )?;
        writeln!(
            f,
            "  measured        {} windows, {} tokens, {} decoder passes: encoder {} submissions, decoder {}",
            self.windows, self.tokens, self.passes, self.encoder.submissions, self.decoder.submissions
        )?;
        writeln!(
            f,
            "  per 30 s window {:9.1} submissions, {:.2} MB to / {:.2} MB from the device (encoder)",
            pw.submissions,
            pw.bytes_to_device / 1e6,
            pw.bytes_from_device / 1e6
        )?;
        writeln!(
            f,
            "  per token       {:9.2} submissions, {:.1} KB to / {:.1} KB from the device (decoder, prompt passes included)",
            pt.submissions,
            pt.bytes_to_device / 1e3,
            pt.bytes_from_device / 1e3
        )?;
        for (name, t) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            let n = t.submissions;
            writeln!(
                f,
                "  host/submission {name}: {:.0} us quantize + flush, {:.0} us invalidate (measured); {:.0} us ioctl + wait (the emulator running the program, not a device time)",
                us(t.flush_ns, n),
                us(t.invalidate_ns, n),
                us(t.submit_ns + t.wait_ns, n)
            )?;
        }
        let (ae, ad) = (self.assumptions(true), self.assumptions(false));
        writeln!(
            f,
            "PROJECTION (not measured; nothing has run on an NPU): host per submission = the quantize + flush + invalidate measured above ({:.0} us encoder, {:.0} us decoder) + {:.0} us assumed driver round trip (npu-hardware.md 3b); device time from the peaks (npu-hardware.md 2) at {:.0} % efficiency (aie/src/budget.rs); {} tokens per 30 s window (assumed)",
            ae.host_overhead_s * 1e6 - ASSUMED_ROUND_TRIP_S * 1e6,
            ad.host_overhead_s * 1e6 - ASSUMED_ROUND_TRIP_S * 1e6,
            ASSUMED_ROUND_TRIP_S * 1e6,
            ae.efficiency * 100.0,
            ae.tokens_per_window
        )?;
        for p in [&PHOENIX, &STRIX] {
            let j = self.project(p);
            let built = j.as_built_device_s + j.as_built_cpu_s;
            writeln!(
                f,
                "  {:26} as built: {:.3} s device + {:.3} s CPU (measured here) per window = {:.1}x realtime; all linears + attention on device, today's chain rule: {} submissions, {:.3} s = {:.0}x realtime, {:.3} s = {:.0}x with the {:.0} us round trip alone; one chain per encoder layer / decoder step (issue 14's target, norms on the device at {:.2} cycles/element, derived from the kernel's vector operations; {:.0} us per sub-command assumed): {} submissions, {:.3} s = {:.0}x (device + dispatch only, CPU work not included)",
                p.name,
                j.as_built_device_s,
                j.as_built_cpu_s,
                30.0 / built,
                j.all_on_device_submissions,
                j.all_on_device_s,
                30.0 / j.all_on_device_s,
                j.all_on_device_round_trip_only_s,
                30.0 / j.all_on_device_round_trip_only_s,
                ASSUMED_ROUND_TRIP_S * 1e6,
                Assumptions::default().norm_cycles_per_element,
                Assumptions::default().subcommand_s * 1e6,
                j.per_layer_chains_submissions,
                j.per_layer_chains_s,
                30.0 / j.per_layer_chains_s
            )?;
        }
        Ok(())
    }
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
    device: Device,
    beam_size: usize,
    files: &[PathBuf],
) -> Result<BenchReport, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let loaded = Model::load(
        model,
        &LoadOptions {
            precision,
            device,
            threads: Some(threads),
            ..LoadOptions::default()
        },
    )?;
    let t_session = Instant::now();
    let mut session = loaded.session()?;
    let load = t.elapsed();
    let session_time = t_session.elapsed();
    let huge_pages_cold = amanuensis_runtime::resident::huge_pages_cold();
    let opts = TranscribeOptions {
        beam_size,
        ..Default::default()
    };
    let audio: Vec<Vec<f32>> = files
        .iter()
        .map(crate::load_audio)
        .collect::<Result<_, _>>()?;
    // The emulator takes ~60 ms of CPU per submission: no warm-up run there.
    let mut first_run = None;
    if loaded.device() != Device::Emu {
        if let Some(first) = audio.first() {
            let t = Instant::now();
            session.transcribe(first, &opts)?;
            first_run = Some(t.elapsed());
        }
    }
    let before = session.dispatch_totals();
    let stats_before = loaded.npu_stats();
    let mut report = BenchReport {
        load,
        session: session_time,
        huge_pages_cold,
        files: files.len(),
        encoder_macs_per_window: encoder_macs(&loaded.dims()),
        submissions: Some(loaded.submissions()),
        backend: loaded.backend_name(),
        ..Default::default()
    };
    for (i, samples) in audio.iter().enumerate() {
        let t = Instant::now();
        let tr = session.transcribe(samples, &opts)?;
        let wall = t.elapsed();
        if let (0, Some(first)) = (i, first_run) {
            report.first_run = Some((first, wall));
        }
        report.wall += wall;
        report.audio_seconds += tr.duration;
        report.timings += &tr.timings;
    }
    if let (Some((e0, d0)), Some((e1, d1)), Some(s0), Some(s1)) = (
        before,
        session.dispatch_totals(),
        stats_before,
        loaded.npu_stats(),
    ) {
        let d = loaded.dims();
        let tm = &report.timings;
        report.dispatch = Some(DispatchBudget {
            encoder: e1 - e0,
            decoder: d1 - d0,
            windows: tm.windows,
            tokens: tm.sampled_tokens,
            passes: tm.decoder_passes,
            encode: tm.encode,
            decode: tm.decode,
            dims: WhisperDims {
                name: "model",
                d: d.n_audio_state,
                mlp: 4 * d.n_audio_state,
                heads: d.n_audio_head,
                encoder_layers: d.n_audio_layer,
                decoder_layers: d.n_text_layer,
            },
            counters: NpuStats {
                submissions: s1.submissions - s0.submissions,
                device_linears: s1.device_linears - s0.device_linears,
                bytes_to_device: s1.bytes_to_device - s0.bytes_to_device,
                bytes_from_device: s1.bytes_from_device - s0.bytes_from_device,
                device_ns: s1.device_ns - s0.device_ns,
                weight_bytes: s1.weight_bytes,
            },
            attention_on_device: report.backend.starts_with("npu-emu")
                && amanuensis_runtime::npu_attention::requested_by_env(),
        });
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
        writeln!(
            f,
            "model load        {:9.1} ms (of which session {:.1} ms: pool, pre-touched buffers; huge pages {})",
            ms(self.load),
            ms(self.session),
            if self.huge_pages_cold {
                "cold, 4 KiB pages used"
            } else {
                "advised"
            }
        )?;
        if let Some((first, steady)) = self.first_run {
            writeln!(
                f,
                "first run extra   {:9.1} ms (first file's first transcription {:.1} ms, steady {:.1} ms)",
                ms(first.saturating_sub(steady)),
                ms(first),
                ms(steady)
            )?;
        }
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
                    " = {:.0} % of the 512-bit VNNI peak {:.0} GOPS (vpdpbusd chains, same \
                     threads{})",
                    100.0 * rate / peak,
                    2.0 * peak,
                    if amanuensis_runtime::q8::Isa::detect().name() == "amx" {
                        "; the GEMM runs on AMX tiles"
                    } else {
                        ""
                    }
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
                "submissions       {:9} per encoder window, {} per decoded token, {} per window for cross K/V (as the backend declares them; a device linear counted at its most rows)",
                s.encoder_window, s.decoder_token, s.cross_kv_per_window
            )?;
        }
        match self.peak_rss_kib {
            Some(k) => writeln!(f, "peak RSS          {:9.1} MiB", k as f64 / 1024.0)?,
            None => writeln!(f, "peak RSS          unknown (no /proc/self/status)")?,
        }
        if let Some(d) = &self.dispatch {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(submissions: u64, prep_ns: u64, device_ns: u64) -> DispatchTotals {
        DispatchTotals {
            submissions,
            bytes_to_device: submissions * 1000,
            bytes_from_device: submissions * 3000,
            flush_ns: submissions * prep_ns / 2,
            submit_ns: submissions * device_ns,
            wait_ns: 0,
            invalidate_ns: submissions * prep_ns / 2,
            macs: submissions * 128 * 512 * 2048,
        }
    }

    #[test]
    fn dispatch_budget_divides_and_projects_by_hand() {
        let b = DispatchBudget {
            encoder: totals(288, 20_000, 1_000_000),
            decoder: totals(600, 20_000, 100_000),
            windows: 2,
            tokens: 48,
            passes: 50,
            encode: Duration::from_millis(2 * 500 + 288),
            decode: Duration::from_millis(48 * 10 + 60),
            dims: amanuensis_aie::design::BASE,
            counters: NpuStats::default(),
            attention_on_device: false,
        };
        let w = b.per_window();
        assert_eq!(
            (w.submissions, w.bytes_to_device, w.bytes_from_device),
            (144.0, 144_000.0, 432_000.0)
        );
        assert_eq!(b.per_token().submissions, 12.5);
        assert!((b.host_prep_s() - 20e-6).abs() < 1e-12);
        // CPU = wall − (flush + submit + wait + invalidate): encoder (1288 − 288·1.02) ms / 2
        // windows, decoder (540 − 600·0.12) ms / 48 tokens.
        let (cw, ct) = b.cpu_s();
        assert!((cw - (1.288 - 288.0 * 1.02e-3) / 2.0).abs() < 1e-9, "{cw}");
        assert!((ct - (0.540 - 600.0 * 0.12e-3) / 48.0).abs() < 1e-9, "{ct}");
        for p in [PHOENIX, STRIX] {
            // Same host preparation on both sides: the all-on-device figure is budget.rs's own
            // window with 20 µs + 45 µs per submission.
            let a = Assumptions {
                host_overhead_s: 20e-6 + ASSUMED_ROUND_TRIP_S,
                ..Assumptions::default()
            };
            let j = b.project(&p);
            let want = budget::window(&p, &a, &amanuensis_aie::design::BASE);
            assert!((j.all_on_device_s - want.projected_s).abs() < 1e-12);
            assert_eq!(j.all_on_device_submissions, want.submissions);
            // Per submission 65 µs of host and 128·512·2048 MACs at the int8 peak.
            let per =
                65e-6 + (128 * 512 * 2048) as f64 / (p.cores as f64 * p.int8_macs * p.clock_hz);
            let built = (144.0 + 120.0 * 12.5) * per;
            assert!(
                (j.as_built_device_s - built).abs() < 1e-9,
                "{} vs {built}",
                j.as_built_device_s
            );
            assert!((j.as_built_cpu_s - (cw + 120.0 * ct)).abs() < 1e-12);
            let default =
                budget::window(&p, &Assumptions::default(), &amanuensis_aie::design::BASE);
            assert!((j.all_on_device_round_trip_only_s - default.projected_s).abs() < 1e-12);
            let layer = budget::window(
                &p,
                &Assumptions {
                    chaining: Chaining::PerLayer,
                    ..Assumptions::default()
                },
                &amanuensis_aie::design::BASE,
            );
            assert_eq!(j.per_layer_chains_submissions, 6 + 1 + 120);
            assert!((j.per_layer_chains_s - layer.projected_s).abs() < 1e-12);
            assert!(j.per_layer_chains_s < j.all_on_device_round_trip_only_s);
        }
    }

    #[test]
    fn the_budget_chunks_the_mlp_as_the_model_does() {
        assert_eq!(
            budget::MLP_CHUNK_ROWS,
            amanuensis_model::layers::MLP_CHUNK_ROWS
        );
    }

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
