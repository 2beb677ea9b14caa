//! A whole matmul through the GEMM design's instruction stream: every stream passes the
//! runtime's TXN validator (`amanuensis_runtime::npu::txn::validate`) and runs on its shim-DMA
//! interpreter (`execute`) with the design's array model and kernel models, and on this crate's
//! own replay; both give the same bytes, `C == A·B` exactly, and with the dequantize / bias /
//! GELU epilogue the output equals the CPU INT8 path (`amanuensis_runtime::q8::gemm_q8`) bit
//! for bit.

use std::collections::BTreeMap;

use amanuensis_aie::design::{GemmDesign, Mapping};
use amanuensis_aie::kernels::matmul::EpilogueMode;
use amanuensis_aie::program::gemm::gemm_program;
use amanuensis_aie::program::images::{
    activation_image_len, output_len, put_activation_row, weight_image,
};
use amanuensis_aie::program::replay::{gemm_array, run_shim, scatter};
use amanuensis_aie::txn::{Direction, Target};
use amanuensis_runtime::cpu::{CpuPool, Epilogue};
use amanuensis_runtime::npu::txn::{execute, validate, ArrayIo, Limits};
use amanuensis_runtime::q8::quant::quantize_row;
use amanuensis_runtime::q8::{gemm_q8, Q8Scratch, QuantMatrix};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Runs the design on `codes` (m × k) with row scales, returns the padded output (f32).
fn run_design(
    d: &GemmDesign,
    m: usize,
    codes: &[i8],
    row_scales: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    mode: EpilogueMode,
) -> Vec<f32> {
    let mut act = vec![0u8; activation_image_len(d, m)];
    for r in 0..m {
        put_activation_row(
            d,
            &mut act,
            r,
            &codes[r * d.k..(r + 1) * d.k],
            row_scales[r],
        );
    }
    let wimg = weight_image(d, w.data(), w.scales(), bias);
    let mut out = vec![0u8; output_len(d, m)];
    let words = gemm_program(d, m).unwrap();

    // The runtime's validator and shim-DMA interpreter, with this design's array model.
    let lens = [act.len() as u64, wimg.len() as u64, out.len() as u64];
    let limits = Limits {
        arg_lens: &lens,
        partition_cols: Some(d.target.cols),
    };
    let plan = validate(&words, &limits).unwrap_or_else(|e| panic!("validator: {e}"));
    assert_eq!(plan.summary.unawaited, 0);
    let mut mem = vec![act.clone(), wimg.clone(), vec![0u8; out.len()]];
    let report = execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
        let sent: BTreeMap<_, _> = io
            .inputs()
            .map(|(ch, b)| ((ch.col, Direction::Mm2s, ch.channel), b.to_vec()))
            .collect();
        let produced = gemm_array(d, m, mode, &sent).map_err(|e| e.to_string())?;
        for ((col, _, chan), bytes) in produced {
            io.send(col, chan, &bytes)?;
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("interpreter: {e}"));
    assert_eq!(report.bytes_written, out.len() as u64);

    // This crate's replay gives the same bytes.
    let traffic = run_shim(&words, &[&act, &wimg, &out]).unwrap();
    let produced = gemm_array(d, m, mode, &traffic.sent).unwrap();
    let mut empty_a: [u8; 0] = [];
    let mut empty_w: [u8; 0] = [];
    scatter(
        &traffic,
        &produced,
        &mut [&mut empty_a, &mut empty_w, &mut out],
    )
    .unwrap();
    assert!(mem[2] == out, "runtime interpreter and aie replay disagree");
    out.chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn c_equals_a_times_b_exactly() {
    // Unit scales, no bias, Store: the f32 output is the i32 sum (|sum| < 2^24, exact).
    let mut rng = Rng(1);
    for (t, m, k, n, map) in [
        (Target::NPU1, 1, 384, 384, Mapping::RowBlocks),
        (Target::NPU1, 5, 384, 1536, Mapping::RowBlocks),
        (Target::NPU1, 130, 1536, 384, Mapping::RowBlocks),
        (Target::NPU2, 37, 512, 1536, Mapping::RowBlocks),
        (Target::NPU1, 300, 64, 320, Mapping::RowBlocks),
        (Target::NPU1, 1, 384, 384, Mapping::ChannelSpread),
        (Target::NPU1, 5, 512, 2048, Mapping::ChannelSpread),
        (Target::NPU2, 3, 1536, 384, Mapping::ChannelSpread),
        (Target::NPU1, 70, 384, 1152, Mapping::ChannelSpread),
    ] {
        let d = GemmDesign::with_mapping(t, k, n, map).unwrap();
        let width = d.out_width();
        let a: Vec<i8> = (0..m * k).map(|_| (rng.f() * 127.0) as i8).collect();
        let wf: Vec<f32> = (0..n * k).map(|_| (rng.f() * 127.0).round()).collect();
        // Every row has a ±127 so the per-channel scale is exactly 1.
        let wf: Vec<f32> = wf
            .chunks(k)
            .flat_map(|r| std::iter::once(127.0).chain(r[1..].iter().copied()))
            .collect();
        let w = QuantMatrix::quantize(&wf, n, k);
        assert!(w.scales().iter().all(|&s| s == 1.0));
        let got = run_design(&d, m, &a, &vec![1.0; m], &w, None, EpilogueMode::Store);
        for r in 0..m {
            for c in 0..n {
                let want: i64 = (0..k)
                    .map(|i| a[r * k + i] as i64 * wf[c * k + i] as i64)
                    .sum();
                assert_eq!(
                    got[r * width + c],
                    want as f32,
                    "{t:?} m={m} k={k} n={n} at ({r}, {c})"
                );
            }
        }
    }
}

#[test]
fn epilogue_output_equals_the_cpu_int8_gemm_bit_for_bit() {
    let pool = CpuPool::new(1);
    let mut scratch = Q8Scratch::new();
    let mut rng = Rng(2);
    use EpilogueMode::{Gelu as G, Store as S};
    let (rows, spread) = (Mapping::RowBlocks, Mapping::ChannelSpread);
    for (t, m, k, n, mode, map) in [
        (Target::NPU1, 3, 384, 1536, G, rows),
        (Target::NPU1, 200, 512, 512, S, rows),
        (Target::NPU2, 5, 2048, 512, S, rows),
        (Target::NPU1, 129, 384, 1152, G, rows),
        (Target::NPU1, 5, 384, 1536, G, spread),
        (Target::NPU1, 1, 512, 1536, S, spread),
        (Target::NPU2, 4, 2048, 512, S, spread),
    ] {
        let gelu = if mode == G {
            Epilogue::Gelu
        } else {
            Epilogue::Store
        };
        let d = GemmDesign::with_mapping(t, k, n, map).unwrap();
        let width = d.out_width();
        let x: Vec<f32> = (0..m * k).map(|_| rng.f() * 3.0).collect();
        let wf: Vec<f32> = (0..n * k).map(|_| rng.f() * 0.2).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.f()).collect();
        let w = QuantMatrix::quantize(&wf, n, k);
        let mut want = vec![0.0f32; m * n];
        gemm_q8(&pool, &x, m, &w, Some(&bias), gelu, &mut scratch, &mut want);
        let mut codes = vec![0i8; m * k];
        let scales: Vec<f32> = (0..m)
            .map(|r| quantize_row(&x[r * k..(r + 1) * k], &mut codes[r * k..(r + 1) * k]))
            .collect();
        let got = run_design(&d, m, &codes, &scales, &w, Some(&bias), mode);
        for r in 0..m {
            for c in 0..n {
                let (g, e) = (got[r * width + c], want[r * n + c]);
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{t:?} m={m} k={k} n={n} ({r}, {c}): {g} vs {e}"
                );
            }
        }
    }
}

#[test]
fn a_window_of_encoder_rows_at_tiny_width() {
    // 1500 rows (12 super-blocks, BD sets alternating, waits two behind) on tiny's d × d.
    let mut rng = Rng(3);
    let (m, k, n) = (1500, 384, 384);
    let d = GemmDesign::new(Target::NPU1, k, n).unwrap();
    let a: Vec<i8> = (0..m * k).map(|_| (rng.f() * 127.0) as i8).collect();
    let wf: Vec<f32> = (0..n * k).map(|_| rng.f()).collect();
    let w = QuantMatrix::quantize(&wf, n, k);
    let got = run_design(&d, m, &a, &vec![0.5; m], &w, None, EpilogueMode::Store);
    for r in (0..m).step_by(97).chain([m - 1]) {
        for c in (0..n).step_by(13) {
            let acc: i32 = (0..k)
                .map(|i| a[r * k + i] as i32 * w.get(c, i) as i32)
                .sum();
            assert_eq!(
                got[r * n + c],
                acc as f32 * 0.5 * w.scales()[c],
                "({r}, {c})"
            );
        }
    }
}

#[test]
fn every_whisper_stream_passes_the_runtime_validator() {
    // tiny and base, every GEMM shape, decoder rows 1-5 (greedy, beam 5), a window, long M.
    use amanuensis_aie::design::{gemm_shapes, BASE, TINY};
    for dims in [TINY, BASE] {
        for (k, n) in gemm_shapes(&dims) {
            let rows: &[usize] = &[1, 5, 128, 129, 1500, 4000];
            let decoder: &[usize] = &[1, 2, 3, 4, 5, 33];
            for (t, map, ms) in [
                (Target::NPU1, Mapping::RowBlocks, rows),
                (Target::NPU2, Mapping::RowBlocks, rows),
                (Target::NPU1, Mapping::ChannelSpread, decoder),
                (Target::NPU2, Mapping::ChannelSpread, decoder),
            ] {
                let d = GemmDesign::with_mapping(t, k, n, map).unwrap();
                for &m in ms {
                    let words = gemm_program(&d, m).unwrap();
                    let lens = [
                        activation_image_len(&d, m) as u64,
                        (d.image_tiles() * d.weight_block_bytes()) as u64,
                        output_len(&d, m) as u64,
                    ];
                    let limits = Limits {
                        arg_lens: &lens,
                        partition_cols: Some(t.cols),
                    };
                    let plan = validate(&words, &limits)
                        .unwrap_or_else(|e| panic!("{} {k}×{n} m={m} {t:?}: {e}", dims.name));
                    assert_eq!(plan.summary.unawaited, 0);
                    // A buffer one word short is refused: the streams touch their last bytes.
                    let short = [lens[0], lens[1], lens[2] - 4];
                    let limits = Limits {
                        arg_lens: &short,
                        partition_cols: Some(t.cols),
                    };
                    assert!(validate(&words, &limits).is_err(), "{k}×{n} m={m}");
                }
            }
        }
    }
}
