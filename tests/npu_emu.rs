//! `--device emu`: base.int8 with its MLP linears (fc1 K512×N2048, fc2 K2048×N512, encoder and
//! decoder) computed by the fixture INT8 GEMM programs on the emulated NPU (every submission
//! validated and executed by its shim-DMA interpreter on non-coherent device memory) gives
//! exactly the CPU INT8 transcript: the same tokens and the same segment times.
//!
//! The emulator is slow (an array model in Rust behind the interpreter): one 30 s window of
//! base is 144 submissions of 128 rows (12 per matmul × 2 × 6 blocks: 1500 rows in 384-row chunks
//! of 3 tiles), so this test keeps to two short files and English (no language-detection
//! window). Numbers are printed.

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
        "fc1 + fc2 of 12 blocks, once"
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
        assert_eq!(got.segments.len(), want.segments.len(), "{file}");
        for (g, w) in got.segments.iter().zip(&want.segments) {
            assert_eq!(g.tokens, w.tokens, "{file}");
            assert_eq!((g.start, g.end), (w.start, w.end), "{file}");
            assert_eq!(g.text, w.text, "{file}");
            assert_eq!(g.avg_logprob.to_bits(), w.avg_logprob.to_bits(), "{file}");
        }
    }
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
/// shapes imply (base: 2 device linears × 6 blocks; the encoder's 1500 rows in 384-row chunks
/// of 3 tiles each = 12 submissions per linear per window; each decoder pass ≤ 128 rows = 1).
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
    // Per window: 144 submissions; A tiles of 128 × 512 (fc1) and 128 × 2048 (fc2) bytes, 72
    // of each; C = 1500 rows × (2048 + 512) i32 per block.
    let declared = report.submissions.unwrap();
    assert_eq!(declared.encoder_window, 144);
    assert_eq!(b.encoder.submissions, 144 * b.windows as u64);
    let w = b.per_window();
    assert_eq!(w.submissions, 144.0);
    assert_eq!(w.bytes_to_device, (72 * 128 * (512 + 2048)) as f64);
    assert_eq!(w.bytes_from_device, (6 * 1500 * (2048 + 512) * 4) as f64);
    // Per token: every decoder pass is one tile per device linear.
    assert_eq!(b.decoder.submissions, 12 * b.passes as u64);
    let t = b.per_token();
    assert_eq!(
        t.submissions,
        b.decoder.submissions as f64 / b.tokens as f64
    );
    assert_eq!(
        t.bytes_to_device,
        b.decoder.bytes_to_device as f64 / b.tokens as f64
    );
    assert_eq!(
        b.decoder.bytes_to_device,
        b.passes as u64 * 6 * 128 * (512 + 2048)
    );
    let text = report.to_string();
    assert!(text.contains("PROJECTION (not measured; nothing has run on an NPU)"));
    assert!(text.contains("144.0 submissions"), "{text}");
}
