//! `--device emu`: every INT8 linear of the model whose `(K, N)` are multiples of 64 (all but
//! the logits) runs on the emulated NPU — base's MLP (fc1 K512×N2048, fc2 K2048×N512) through
//! the fixture INT8 GEMM programs, every other linear (q/k/v/out, cross K/V, tiny's MLP) through
//! our own GEMM design's instruction streams with the aie kernels' Rust models as the array —
//! every submission validated and executed by the emulator's shim-DMA interpreter on
//! non-coherent device memory (the linears a stage's chain plan groups go as one
//! `ERT_CMD_CHAIN` submission), and the transcripts equal the CPU INT8 path's exactly: the same
//! tokens, segment times and average log-probabilities (the device arithmetic is bit-exact with
//! `gemm_q8`).
//!
//! tiny.en runs six files by default and the whole shared set (26 files) as an ignored test;
//! base, slower on the emulator, two short files. Numbers are printed.

mod common;

use std::time::Instant;

use amanuensis::model_path::resolve_model;
use amanuensis::{Device, LoadOptions, Model, TranscribeOptions, Transcript};

fn transcribe(model: &Model, file: &str) -> (Transcript, f64) {
    let audio = amanuensis::load_audio(common::speech(file)).unwrap();
    let opts = TranscribeOptions {
        language: "en".into(),
        ..TranscribeOptions::default()
    };
    let t = Instant::now();
    let tr = model.session().unwrap().transcribe(&audio, &opts).unwrap();
    (tr, t.elapsed().as_secs_f64())
}

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

fn assert_same(file: &str, got: &Transcript, want: &Transcript) {
    assert_eq!(got.segments.len(), want.segments.len(), "{file}");
    for (g, w) in got.segments.iter().zip(&want.segments) {
        assert_eq!(g.tokens, w.tokens, "{file}");
        assert_eq!((g.start, g.end), (w.start, w.end), "{file}");
        assert_eq!(g.text, w.text, "{file}");
        assert_eq!(g.avg_logprob.to_bits(), w.avg_logprob.to_bits(), "{file}");
    }
}

/// The shared set's files, from refs.tsv.
fn shared_set() -> Vec<String> {
    let refs = std::fs::read_to_string(common::speech("refs.tsv")).unwrap();
    refs.lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// tiny.en on six files of the shared set (jfk, two LJ Speech files, the three LibriSpeech
/// files the base test does not run): one window each, about a fifth of the whole set's
/// emulator time.
#[test]
fn tiny_emu_transcripts_equal_the_cpu_int8_transcripts() {
    let files: Vec<String> = shared_set()
        .into_iter()
        .filter(|f| {
            f == "jfk.wav"
                || f == "lj-LJ001-0001.wav"
                || f == "lj-LJ001-0002.wav"
                || (f.starts_with("ls-") && f != "ls-61-70968-0000.wav")
        })
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
    tiny_emu_equals_cpu_int8(&files);
}

/// The whole shared set (26 files, 32 windows): minutes on the emulator, so not in the default
/// run (`cargo test --test npu_emu -- --ignored`).
#[test]
#[ignore = "the whole shared set on the emulator takes minutes"]
fn tiny_emu_transcripts_equal_the_cpu_int8_transcripts_on_the_shared_set() {
    let files = shared_set();
    assert_eq!(files.len(), 26, "{files:?}");
    tiny_emu_equals_cpu_int8(&files);
}

fn tiny_emu_equals_cpu_int8(files: &[String]) {
    let cpu = load("tiny.en.int8", Device::Cpu);
    let emu = load("tiny.en.int8", Device::Emu);
    assert_eq!(emu.backend_name(), "npu-emu-int8");
    let (mut t_cpu, mut t_emu, mut audio) = (0.0, 0.0, 0.0);
    for file in files {
        let (want, tc) = transcribe(&cpu, file);
        let (got, te) = transcribe(&emu, file);
        t_cpu += tc;
        t_emu += te;
        audio += got.duration;
        eprintln!(
            "{file}: {:.1} s audio, cpu-int8 {tc:.2} s, emu {te:.2} s",
            got.duration
        );
        assert_same(file, &got, &want);
    }
    // Declared once the workspaces made the designs. The encoder (4 layers): the first
    // layer's [attention norm, q, k, v], then per layer [out, MLP norm + residual, (fc1,
    // quantize, fc2) × 4 chunks, the next layer's attention norm (x: the MLP norm's x_out;
    // residual: the four fc2 results) + its q, k, v]. The decoder's one-row results come back
    // 512 wide from the decoder mapping (d 384), so no residual joins there: per layer [norm,
    // self q/k/v], [self out], [norm, cross q], [cross out], [norm, fc1, quantize, fc2].
    let sub = emu.submissions();
    assert_eq!(
        (
            sub.encoder_window,
            sub.cross_kv_per_window,
            sub.decoder_token
        ),
        (1 + 4, 1, 4 * 5),
        "{sub:?}"
    );
    let s = emu.npu_stats().unwrap();
    eprintln!(
        "tiny.en, {} files, {audio:.1} s of audio: cpu-int8 {t_cpu:.1} s, emu {t_emu:.1} s; \
         {} submissions for {} device linears, {:.1} MB to / {:.1} MB from the device, \
         {:.1} MB of weight images",
        files.len(),
        s.submissions,
        s.device_linears,
        s.bytes_to_device as f64 / 1e6,
        s.bytes_from_device as f64 / 1e6,
        s.weight_bytes as f64 / 1e6
    );
    // tiny has no fixture program: every linear on the device is one sub-command, and the
    // chains put several in one submission (q/k/v, cross K/V, hoisted MLP chunks).
    assert!(s.submissions > 0);
    assert!(s.submissions < s.device_linears, "{s:?}");
    let errors = emu.emulator_command_errors().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn emu_transcripts_equal_the_cpu_int8_transcripts() {
    let path = resolve_model(Some("base.int8")).unwrap_or_else(|e| panic!("{e}"));
    let load = |device| {
        Model::load(
            &path,
            &LoadOptions {
                device,
                threads: Some(2),
                ..LoadOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{device:?}: {e}"))
    };
    let cpu = load(Device::Cpu);
    let emu = load(Device::Emu);
    assert_eq!(cpu.backend_name(), "cpu-int8");
    assert_eq!(emu.backend_name(), "npu-emu-int8");
    assert_eq!(emu.device(), Device::Emu);
    let sub = emu.submissions();
    eprintln!("declared device submissions: {sub:?}");
    let mut before = emu.npu_stats().unwrap();
    assert_eq!(
        before.weight_bytes,
        12 * 2 * 512 * 2048,
        "fc1 + fc2 of 12 blocks at load (the other linears' images at the first session)"
    );
    for file in ["jfk.wav", "ls-61-70968-0000.wav"] {
        let (want, t_cpu) = transcribe(&cpu, file);
        let (got, t_emu) = transcribe(&emu, file);
        let s = emu.npu_stats().unwrap();
        eprintln!(
            "{file}: {:.2} s audio, {} windows, {} decoder passes; cpu-int8 {t_cpu:.2} s, emu {t_emu:.2} s; \
             {} submissions for {} linears, {:.1} MB to / {:.1} MB from the device, {:.2} s in submit + wait",
            got.duration,
            got.timings.windows,
            got.timings.decoder_passes,
            s.submissions - before.submissions,
            s.device_linears - before.device_linears,
            (s.bytes_to_device - before.bytes_to_device) as f64 / 1e6,
            (s.bytes_from_device - before.bytes_from_device) as f64 / 1e6,
            (s.device_ns - before.device_ns) as f64 / 1e9,
        );
        assert!(
            s.submissions > before.submissions,
            "{file}: nothing ran on the device"
        );
        before = s;
        eprintln!("  {}", got.text());
        assert_same(file, &got, &want);
    }
    let errors = emu.emulator_command_errors().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn f32_precision_on_the_npu_is_a_named_error() {
    let path = resolve_model(Some("base.int8")).unwrap_or_else(|e| panic!("{e}"));
    let opts = LoadOptions {
        device: Device::Emu,
        precision: amanuensis::Precision::F32,
        threads: Some(1),
        ..Default::default()
    };
    match Model::load(&path, &opts) {
        Err(amanuensis::Error::DeviceFailed { device, step, .. }) => {
            assert_eq!((device, step), ("emu", "precision"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("f32 on the emulated NPU loaded"),
    }
}

/// `amanuensis bench --device emu` on jfk.wav: the per-window and per-token counts it prints are
/// the dispatch logs' sums, which equal the backend's own counters and the submissions the
/// program declares (base: fixture programs for fc1 / fc2 loaded, but fed by a device norm or a
/// device quantize they run on our designs, as every other linear, all in one hardware context;
/// the stage's chain plan groups them).
#[test]
fn bench_counts_equal_the_dispatch_logs() {
    let path = resolve_model(Some("base.int8")).unwrap_or_else(|e| panic!("{e}"));
    let report = amanuensis::bench::run(
        &path,
        2,
        amanuensis::Precision::Auto,
        Device::Emu,
        1,
        &[common::speech("jfk.wav")],
    )
    .unwrap();
    assert_eq!(report.backend, "npu-emu-int8");
    let b = report
        .dispatch
        .as_ref()
        .expect("a device run has a dispatch budget");
    eprintln!("{report}");
    assert_eq!(b.windows, 1);
    assert!(b.tokens > 10 && b.passes > b.tokens, "{b:?}");
    // The logs against the backend's counters (kept apart from the logs).
    let c = &b.counters;
    assert_eq!(b.encoder.submissions + b.decoder.submissions, c.submissions);
    assert_eq!(
        b.encoder.bytes_to_device + b.decoder.bytes_to_device,
        c.bytes_to_device
    );
    assert_eq!(
        b.encoder.bytes_from_device + b.decoder.bytes_from_device,
        c.bytes_from_device
    );
    // Per window: the encoder stage's declared submissions. The first layer's attention norm
    // with q, k, v reading its image (one chain); then per layer one chain: out, the MLP norm
    // taking out's result as its residual, the fc1 of all four 384-row chunks reading its
    // image (on our design, not the fixture program: a device norm feeds it), each chunk's
    // fc2 reading its fc1's result through the device quantize (on our design too), the next
    // layer's attention norm (its x: the MLP norm's x_out on the device; its residual: the
    // four fc2 results, each at its rows of one device region) and that layer's q, k, v; the
    // last layer's chain ends with its MLP (the final norm's output is read on the host):
    // 1 + 6 (was 6 × (1 + 1) with the next layer's norm apart, 6 × (1 + 1 + 4) with fc2's
    // input quantized on the host, 6 × (1 + 1 + 1 + 4) with the norms on the host).
    let declared = report.submissions.unwrap();
    assert_eq!(declared.encoder_window, 1 + 6);
    // Cross-attention K/V of the six layers all read the encoder output: one chain.
    assert_eq!(declared.cross_kv_per_window, 1);
    // A decoder step: the first layer's [norm, self q/k/v]; per layer [self out, norm +
    // residual, cross q], [cross out, norm + residual, fc1, quantize, fc2, the next layer's
    // norm (its x: the MLP norm's x_out on the device, fc2's result its residual), its self
    // q/k/v]; the last layer's [cross out, norm + residual, fc1, quantize, fc2] (its MLP
    // norm's output h is a stage's scratch, never read after the step: it stays on the
    // device); the logits on the host. Was 1 + 6 × 2 + 1 with the last MLP norm on the host,
    // 6 × 3 + 1 before the norm chaining through x_out, 6 × 4 + 1 with fc2's input quantized
    // on the host, 6 a layer with the norms there. (The encoder's residual of several parts
    // changes nothing here: a step's fc2 is one linear.)
    assert_eq!(declared.decoder_token, 1 + 6 * 2);
    assert_eq!(
        b.encoder.submissions,
        declared.encoder_window as u64 * b.windows as u64
    );
    let w = b.per_window();
    assert_eq!(w.submissions, declared.encoder_window as f64);
    let t = b.per_token();
    assert_eq!(
        t.submissions,
        b.decoder.submissions as f64 / b.tokens as f64
    );
    assert_eq!(
        t.bytes_to_device,
        b.decoder.bytes_to_device as f64 / b.tokens as f64
    );
    let text = report.to_string();
    assert!(text.contains("PROJECTION (not measured; nothing has run on an NPU)"));
    assert!(
        text.contains(&format!("{:.1} submissions", w.submissions)),
        "{text}"
    );
}
