//! The LayerNorm + quantize design's instruction stream on the runtime's TXN validator and
//! shim-DMA interpreter (`amanuensis_runtime::npu::txn::{validate, execute}`), with the design's
//! array model (`program::norm::norm_array`: the kernel's Rust model, the memory tiles'
//! re-layout): the activation image it writes holds, for every row, exactly the codes and
//! scale of the CPU INT8 path (`cpu::layer_norm` + `q8::quant::quantize_row`), and x_out the
//! CPU's residual sum, bit for bit.

use std::collections::BTreeMap;

use amanuensis_aie::design::NormQuantDesign;
use amanuensis_aie::kernels::norm_quant::param_object;
use amanuensis_aie::program::norm::{arg_lens, norm_array, norm_program};
use amanuensis_aie::txn::{Direction, Target};
use amanuensis_runtime::cpu::layer_norm;
use amanuensis_runtime::npu::txn::{execute, validate, ArrayIo, Limits};
use amanuensis_runtime::q8::quant::quantize_row;

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

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn the_norm_stream_writes_the_cpu_int8_activation_rows() {
    let mut rng = Rng(23);
    for (t, m, d, residual) in [
        (Target::NPU1, 1, 384, false),
        (Target::NPU1, 5, 512, true),
        (Target::NPU1, 37, 384, true),
        (Target::NPU2, 130, 512, false),
        (Target::NPU2, 1500, 512, true),
    ] {
        let nd = NormQuantDesign::new(t, d, residual).unwrap();
        let lens = arg_lens(&nd, m);
        let rows = lens[0] / (4 * d);
        let gamma: Vec<f32> = (0..d).map(|_| rng.f() * 2.0).collect();
        let beta: Vec<f32> = (0..d).map(|_| rng.f() * 0.3).collect();
        let eps = 1e-5;
        // Rows beyond m are whatever the buffer holds: here nonzero, to show they stay apart.
        let x: Vec<f32> = (0..rows * d)
            .map(|i| rng.f() * if i % 7 == 0 { 30.0 } else { 3.0 })
            .collect();
        let r: Vec<f32> = (0..rows * d).map(|_| rng.f() * 2.0).collect();
        let mut params = param_object(&gamma, &beta, eps);
        params.resize(lens[2], 0);

        let words = norm_program(&nd, m).unwrap();
        let arg_lens: Vec<u64> = lens.iter().map(|&l| l as u64).collect();
        let limits = Limits {
            arg_lens: &arg_lens,
            partition_cols: Some(t.cols),
        };
        let plan = validate(&words, &limits).unwrap_or_else(|e| panic!("validator: {e}"));
        assert_eq!(plan.summary.unawaited, 0);
        let mut mem = vec![
            le(&x),
            le(&r),
            params,
            vec![0xEEu8; lens[3]],
            vec![0u8; lens[4]],
        ];
        execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
            let sent: BTreeMap<_, _> = io
                .inputs()
                .map(|(ch, b)| ((ch.col, Direction::Mm2s, ch.channel), b.to_vec()))
                .collect();
            for ((col, _, chan), bytes) in norm_array(&nd, &sent)? {
                io.send(col, chan, &bytes)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("interpreter: {e}"));

        // The CPU INT8 path on the first m rows.
        let mut v = x[..m * d].to_vec();
        if residual {
            for (a, &b) in v.iter_mut().zip(&r) {
                *a += b;
            }
        }
        let mut y = vec![0f32; m * d];
        layer_norm(&v, m, d, &gamma, &beta, eps, &mut y);
        let image = &mem[3];
        let row_bytes = d + 64;
        let mut codes = vec![0i8; d];
        for row in 0..m {
            let scale = quantize_row(&y[row * d..(row + 1) * d], &mut codes);
            let got = &image[row * row_bytes..(row + 1) * row_bytes];
            let got_codes: Vec<i8> = got[..d].iter().map(|&b| b as i8).collect();
            assert_eq!(got_codes, codes, "{t:?} m {m} d {d} row {row}");
            assert_eq!(&got[d..d + 4], &scale.to_le_bytes(), "row {row} scale");
            assert!(got[d + 4..].iter().all(|&b| b == 0), "row {row} padding");
        }
        if residual {
            let got: Vec<u32> = mem[4][..m * d * 4]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let want: Vec<u32> = v.iter().map(|f| f.to_bits()).collect();
            assert_eq!(got, want, "x_out");
        }
    }
}

/// The plain quantize (fc2's input: fc1's GELU output rows, f32) through the validator and the
/// interpreter: every row's codes and scale are `q8::quant::quantize_row`'s, bit for bit.
#[test]
fn the_quantize_stream_writes_the_cpu_int8_activation_rows() {
    let mut rng = Rng(29);
    for (t, m, d) in [
        (Target::NPU1, 1, 1536),
        (Target::NPU1, 70, 2048),
        (Target::NPU2, 384, 2048),
    ] {
        let nd = NormQuantDesign::quantize(t, d).unwrap();
        let lens = arg_lens(&nd, m);
        let rows = lens[0] / (4 * d);
        // GELU-like rows (small negatives), one all zero; rows past m nonzero.
        let mut x: Vec<f32> = (0..rows * d)
            .map(|_| {
                let v = rng.f() * 4.0;
                if v < 0.0 {
                    v * 0.04
                } else {
                    v
                }
            })
            .collect();
        if m > 1 {
            x[d..2 * d].fill(0.0);
        }
        let words = norm_program(&nd, m).unwrap();
        let arg_lens: Vec<u64> = lens.iter().map(|&l| l as u64).collect();
        let limits = Limits {
            arg_lens: &arg_lens,
            partition_cols: Some(t.cols),
        };
        let plan = validate(&words, &limits).unwrap_or_else(|e| panic!("validator: {e}"));
        assert_eq!(plan.summary.unawaited, 0);
        let mut mem = vec![
            le(&x),
            vec![0u8; lens[1]],
            vec![0u8; lens[2]],
            vec![0xEEu8; lens[3]],
            vec![0u8; lens[4]],
        ];
        execute(&plan, mem.as_mut_slice(), &mut |io: &mut ArrayIo| {
            let sent: BTreeMap<_, _> = io
                .inputs()
                .map(|(ch, b)| ((ch.col, Direction::Mm2s, ch.channel), b.to_vec()))
                .collect();
            for ((col, _, chan), bytes) in norm_array(&nd, &sent)? {
                io.send(col, chan, &bytes)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("interpreter: {e}"));
        let image = &mem[3];
        let row_bytes = d + 64;
        let mut codes = vec![0i8; d];
        for row in 0..m {
            let scale = quantize_row(&x[row * d..(row + 1) * d], &mut codes);
            assert_eq!(scale == 0.0, row == 1, "{t:?} m {m} row {row}");
            let got = &image[row * row_bytes..(row + 1) * row_bytes];
            let got_codes: Vec<i8> = got[..d].iter().map(|&b| b as i8).collect();
            assert_eq!(got_codes, codes, "{t:?} m {m} d {d} row {row}");
            assert_eq!(&got[d..d + 4], &scale.to_le_bytes(), "row {row} scale");
            assert!(got[d + 4..].iter().all(|&b| b == 0), "row {row} padding");
        }
        // Nothing reads or writes the norm's other arguments.
        assert!(mem[4].iter().all(|&b| b == 0));
    }
}
