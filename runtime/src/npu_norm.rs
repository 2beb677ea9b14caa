//! The LayerNorm + quantize design (`amanuensis_aie`: `aie/designs/norm_quant.py`, its TXN
//! streams from `amanuensis_aie::program::norm`) as a device program: `m` rows of the residual
//! stream `x` (plus, with a residual, the output `r` of the GEMM before it: `x += r` first)
//! normalized with gamma / beta / eps and quantized per row straight into the activation image
//! a GEMM design reads (codes, then the row scale), in **one** submission for any `m`. With it,
//! a norm and the GEMM after it can be sub-commands of one `ERT_CMD_CHAIN`: the norm's output
//! never comes back to the host.
//!
//! The arithmetic is the CPU INT8 path's bit for bit (`cpu::layer_norm`, then
//! `q8::quant::quantize_row`; the residual sum is the `AddInto` epilogue's `*out += r`): the
//! kernel's Rust model is tested equal to those functions, and the stream's result through the
//! emulated device is tested equal here.
//!
//! **No xclbin of this design has been built** (no mlir-aie / Peano here), so, like
//! [`crate::aie_gemm`], it exists only on the emulated device: [`emulated_xclbin`] wraps a PDI
//! that is a text naming the design, and [`register_norm_model`] makes the emulator's firmware
//! run that PDI with the design's array model (`amanuensis_aie::program::norm::norm_array`).
//! The host side (BOs, the regmap packet, the validated instruction stream, flushes) is what a
//! real device would get.
//!
//! Buffer arguments, in order: x, r, the parameter object (gamma, beta, eps;
//! `amanuensis_aie::kernels::norm_quant::param_object`, padded to [`NormDesign::params_len`]),
//! the activation image, x_out (may be the same memory as x). Sizes: [`NormDesign::arg_lens`].
//!
//! Not yet done: the NPU backend does not plan norms into its chains (`chain_plan` groups only
//! linears), so transcription still runs the norms on the CPU; this module is the device op
//! such a plan would submit. What the backend needs for it, worked out but not built:
//! - the norm designs as CUs of the GEMM context (the emulated multi-kernel xclbin takes 3
//!   buffer args per kernel today; this design takes [`NORM_ARGS`]);
//! - the chain plan: a `LayerNorm` may join a group when its output buffer is read only by
//!   device linears of the group until it is next written (the f32 result is then never
//!   needed on the host), and such a linear reads the norm's activation image instead of
//!   quantizing on the host;
//! - the residual: a member linear with the `AddInto` epilogue followed by a member norm of
//!   the same buffer becomes `Store` into its C region, the norm's `r`; x is uploaded at the
//!   group's start (it is final then: nothing in between writes it) and the host still adds
//!   `x += r` at the linear's own position (same bits: one f32 add). Rows with no pending
//!   residual (an encoder MLP chunk's rows added before the group) take `r = -0.0`, which
//!   leaves every x, signed zeros included, unchanged;
//! - with attention on the host this gives per encoder layer `[out, LN2 + residual, fc1 × 4]`
//!   as one chain instead of two (the fc2 chunks stay apart: their input is fc1's GELU output,
//!   which needs a plain quantize op), i.e. base 36 instead of 42 submissions per window
//!   (30 if the last chunk's fc2 also joins the next layer's norm and q/k/v, its C region laid
//!   at its rows' offset in an r buffer of `-0.0`); per decoder step `[out, LN, cross q]`,
//!   `[cross out, LN, fc1]`, `[fc2, next LN, next q/k/v]`: 19 instead of 36 (counted by this
//!   rule, not measured).

use std::collections::BTreeMap;

use amanuensis_aie::design::NormQuantDesign;
use amanuensis_aie::program::norm::{arg_lens, norm_array, norm_program, padded_rows};
use amanuensis_aie::txn::{Direction as AieDirection, Target};

use crate::npu::emu::EmuDriver;
use crate::npu::program::RegmapLayout;
use crate::npu::txn::{self, ArrayIo, Limits};
use crate::npu::xclbin::XclbinBuilder;
use crate::npu::NpuError;

/// Buffer arguments of the design (x, r, parameters, activation image, x_out).
pub const NORM_ARGS: usize = 5;

/// What identifies a norm design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NormKey {
    /// Row width (`d_model`).
    pub d: usize,
    /// `x += r` before the norm.
    pub residual: bool,
}

/// A norm design on one target: its geometry and regmap layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormDesign {
    /// What it is.
    pub key: NormKey,
    /// Its geometry (cores, rounds, budgets).
    pub design: NormQuantDesign,
}

impl NormDesign {
    /// The design `key` on `target`, or why it does not fit (width, L1 budget).
    pub fn new(target: Target, key: NormKey) -> Result<Self, NpuError> {
        let design = NormQuantDesign::new(target, key.d, key.residual).map_err(|e| {
            NpuError::InvalidRequest {
                what: format!("norm design d {} residual {}: {e}", key.d, key.residual),
            }
        })?;
        Ok(Self { key, design })
    }

    /// The regmap of the emulated xclbins' kernel: opcode, instr, ninstr, then the 5 buffers.
    pub fn layout(&self) -> RegmapLayout {
        RegmapLayout::mlir_aie(NORM_ARGS)
    }

    /// Bytes of the buffer arguments for `rows` rows (whole rounds of the design).
    pub fn arg_lens(&self, rows: usize) -> [usize; NORM_ARGS] {
        arg_lens(&self.design, rows.max(1))
    }

    /// Rows the buffers hold for `rows` rows.
    pub fn padded_rows(&self, rows: usize) -> usize {
        padded_rows(&self.design, rows.max(1))
    }

    /// Bytes of the parameter object argument.
    pub fn params_len(&self) -> usize {
        self.design.row_object_bytes()
    }

    /// The instruction stream for `rows` rows, validated against the buffers it addresses
    /// within a partition of `partition_cols` columns, with every task awaited.
    pub fn stream(&self, rows: usize, partition_cols: u8) -> Result<Vec<u32>, NpuError> {
        let words = norm_program(&self.design, rows).map_err(|e| NpuError::InvalidRequest {
            what: format!("norm design {:?}, {rows} rows: {e}", self.key),
        })?;
        let lens = self.arg_lens(rows).map(|l| l as u64);
        let plan = txn::validate(
            &words,
            &Limits {
                arg_lens: &lens,
                partition_cols: Some(partition_cols),
            },
        )?;
        if plan.summary.unawaited != 0 {
            return Err(NpuError::InvalidRequest {
                what: format!(
                    "norm design {:?}: {} tasks never awaited",
                    self.key, plan.summary.unawaited
                ),
            });
        }
        Ok(words)
    }
}

/// The PDI of a norm design on the emulated device: a text naming it (no real PDI exists).
pub fn emulated_pdi(target: Target, key: &NormKey) -> Vec<u8> {
    format!(
        "amanuensis EMULATED AIE NORM/QUANTIZE (no real PDI): {:?} {}c d{} residual {}",
        target.generation, target.cols, key.d, key.residual
    )
    .into_bytes()
}

/// An mlir-aie-shaped xclbin (one PDI, kernel `MLIR_AIE`, the 5 buffer args) around
/// [`emulated_pdi`].
pub fn emulated_xclbin(target: Target, key: &NormKey) -> Vec<u8> {
    XclbinBuilder::mlir_aie(&emulated_pdi(target, key), target.cols as u16, NORM_ARGS).build()
}

/// Makes `emu`'s firmware run the design's PDI with its array model: the streams the shim DMA
/// interpreter delivered go through `norm_array`, its output streams are what the S2MM tasks
/// write.
pub fn register_norm_model(emu: &EmuDriver, target: Target, key: NormKey) -> Result<(), NpuError> {
    let d = NormDesign::new(target, key)?;
    emu.register_kernel(&emulated_pdi(target, &key), move |io: &mut ArrayIo| {
        run_array(&d.design, io)
    });
    Ok(())
}

fn run_array(d: &NormQuantDesign, io: &mut ArrayIo) -> Result<(), String> {
    let sent: BTreeMap<_, _> = io
        .inputs()
        .map(|(ch, b)| ((ch.col, AieDirection::Mm2s, ch.channel), b.to_vec()))
        .collect();
    for ((col, _, chan), bytes) in norm_array(d, &sent)? {
        io.send(col, chan, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use amanuensis_aie::kernels::norm_quant::param_object;

    use super::*;
    use crate::aie_gemm::EMULATED_TARGET;
    use crate::cpu::layer_norm;
    use crate::npu::arena::{ArenaPlan, BoArena};
    use crate::npu::device::Device;
    use crate::npu::heap::Heap;
    use crate::npu::hwctx::HwContext;
    use crate::npu::program::Program;
    use crate::npu::ring::CommandRing;
    use crate::npu::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
    use crate::npu_backend::emulated_config;
    use crate::q8::quant::quantize_row;

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

    fn put_f32(dst: &mut [u8], v: &[f32]) {
        for (d, x) in dst.chunks_exact_mut(4).zip(v) {
            d.copy_from_slice(&x.to_le_bytes());
        }
    }

    /// One norm submission through the emulated device (context, BOs, regmap packet, ring):
    /// the activation image rows are the CPU INT8 path's codes and scales, x_out its residual
    /// sum, bit for bit; the padding rows of the image are not touched past the last round.
    #[test]
    fn a_norm_submission_on_the_emulated_device_writes_the_cpu_int8_rows() {
        let mut rng = Rng(41);
        for (rows, d, residual) in [(1, 384, false), (5, 512, true), (1500, 512, true)] {
            let key = NormKey { d, residual };
            let nd = NormDesign::new(EMULATED_TARGET, key).unwrap();
            let emu = Arc::new(EmuDriver::new(emulated_config()));
            register_norm_model(&emu, EMULATED_TARGET, key).unwrap();
            let device = Device::from_driver(emu.clone()).unwrap();
            let heap = Heap::create(&device).unwrap();
            let xclbin_bytes = emulated_xclbin(EMULATED_TARGET, &key);
            let xclbin = Xclbin::parse(&xclbin_bytes).unwrap();
            let ctx =
                Arc::new(HwContext::load(&device, &heap, &xclbin, MLIR_AIE_DPU_KERNEL_ID).unwrap());
            let words = nd.stream(rows, EMULATED_TARGET.cols).unwrap();
            let lens = nd.arg_lens(rows);
            let mut plan = ArenaPlan::new();
            let instr = plan.instructions("instr", words.len());
            let names = ["x", "r", "params", "image", "x_out"];
            let bufs: Vec<_> = names
                .iter()
                .zip(lens)
                .map(|(n, l)| plan.buffer(n, l))
                .collect();
            let mut arena = BoArena::allocate(&device, &heap, &plan).unwrap();
            arena.write_instructions(instr, &words).unwrap();
            let program = Program::new(
                &nd.layout(),
                &arena,
                instr,
                &bufs,
                Some(EMULATED_TARGET.cols),
            )
            .unwrap();
            program.check(&arena).unwrap();

            let n = nd.padded_rows(rows) * d;
            let x: Vec<f32> = (0..n).map(|_| rng.f() * 4.0 + 1.0).collect();
            let r: Vec<f32> = (0..n).map(|_| rng.f() * 2.0).collect();
            let gamma: Vec<f32> = (0..d).map(|_| rng.f() * 2.0).collect();
            let beta: Vec<f32> = (0..d).map(|_| rng.f() * 0.3).collect();
            put_f32(arena.bytes_mut(bufs[0]), &x);
            put_f32(arena.bytes_mut(bufs[1]), &r);
            let p = param_object(&gamma, &beta, 1e-5);
            arena.bytes_mut(bufs[2])[..p.len()].copy_from_slice(&p);
            arena.bytes_mut(bufs[3]).fill(0xEE);
            for &b in &bufs {
                arena.flush(b);
            }
            let mut ring = CommandRing::new(&device, ctx, 2, Duration::from_secs(30)).unwrap();
            let packet = program.packet();
            let ticket = ring.submit(&packet, arena.handles()).unwrap();
            ring.wait(ticket).unwrap();
            arena.flush(bufs[3]);
            arena.flush(bufs[4]);

            let mut v = x[..rows * d].to_vec();
            if residual {
                for (a, &b) in v.iter_mut().zip(&r) {
                    *a += b;
                }
            }
            let mut y = vec![0f32; rows * d];
            layer_norm(&v, rows, d, &gamma, &beta, 1e-5, &mut y);
            let image = arena.bytes(bufs[3]);
            let mut codes = vec![0i8; d];
            for row in 0..rows {
                let scale = quantize_row(&y[row * d..(row + 1) * d], &mut codes);
                let got = &image[row * (d + 64)..(row + 1) * (d + 64)];
                assert!(
                    got[..d].iter().zip(&codes).all(|(&g, &c)| g as i8 == c),
                    "rows {rows} d {d}: codes of row {row}"
                );
                assert_eq!(got[d..d + 4], scale.to_le_bytes(), "row {row} scale");
            }
            if residual {
                let got = arena.bytes(bufs[4]);
                for (i, want) in v.iter().enumerate() {
                    let g = f32::from_le_bytes(got[4 * i..4 * i + 4].try_into().unwrap());
                    assert_eq!(g.to_bits(), want.to_bits(), "x_out {i}");
                }
            }
        }
    }

    #[test]
    fn a_width_the_design_cannot_hold_is_a_typed_error() {
        let e = NormDesign::new(
            EMULATED_TARGET,
            NormKey {
                d: 768,
                residual: true,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("compute tile"), "{e}");
        let nd = NormDesign::new(
            EMULATED_TARGET,
            NormKey {
                d: 384,
                residual: false,
            },
        )
        .unwrap();
        assert!(nd.stream(0, EMULATED_TARGET.cols).is_err());
    }
}
