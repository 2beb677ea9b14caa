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
//! **In the NPU backend's chains** ([`crate::npu_backend`], on the emulated designs): the norm
//! designs are CUs of the GEMM designs' hardware context ([`AieNorm`], 5 buffer args in the
//! multi-kernel xclbin), and the chain plan ([`crate::chain_plan`]) makes a `LayerNorm` a
//! member of a group when its output buffer is read only by device linears of the group until
//! it is next overwritten whole (its f32 result is then never needed on the host, which skips
//! it); those linears read the norm's activation image instead of quantizing on the host. The
//! residual: member linears with the `AddInto` epilogue into consecutive rows covering the
//! norm's input rows exactly (one linear into all of them, or the encoder's fc2 chunks),
//! whose device results are f32 rows of the norm's width, are the norm's `r` (one C region,
//! each part's result at its row offset, sized for the norm's whole rounds and every part's
//! padded output); x is uploaded at the group's start (nothing else in between writes it) or
//! is an earlier member norm's x_out, and the host still adds `x += r` at each part's own
//! position (the same single f32 add per row). A linear whose matrix a fixture program holds moves to our design when it reads a
//! device norm's image.
//!
//! **The plain quantize** ([`NormKey::quantize`], `norm: false`): the same design without the
//! norm (`nq_quant`; no parameters, r or x_out), rows of a GEMM's f32 output quantized per row
//! (`q8::quant::quantize_row`'s bits, tested here through the emulated device) into the
//! activation image of the GEMM after it: fc2 reads fc1's GELU output through it, so fc1 → fc2
//! chains (the chain plan's `quantized`).
//!
//! Measured (`amanuensis bench --device emu`, jfk.wav, counts are deterministic): with the
//! norms on the device base went 42 → 36 submissions per window and 36 → 25 per token, tiny.en
//! 28 → 24 per window (24 per token unchanged: the decoder mapping's output rows for d 384
//! are 512 wide, not rows a norm can add). With the device quantize before fc2: base **12**
//! per window (per layer `[norm, q, k, v]`, `[out, norm + residual, fc1 × 4, (quantize, fc2)
//! × 4]`) and **19** per token (per layer `[norm, q, k, v]`, `[self out, norm + residual,
//! cross q]`, `[cross out, norm + residual, fc1, quantize, fc2]`; the last layer's cross out
//! and `[fc1, quantize, fc2]` apart, its MLP norm on the host); tiny.en **8** per window, **20**
//! per token. Then a norm whose x was added into twice in its group (the next layer's
//! attention norm after fc2) reads the x_out an earlier member norm of the same rows left on
//! the device (the chain plan's `x_from`): base **14** per token (the first layer's `[norm, q,
//! k, v]`; per layer `[self out, norm + residual, cross q]`, `[cross out, norm + residual, fc1,
//! quantize, fc2, next norm + residual, next q, k, v]`; the last layer's cross out and `[fc1,
//! quantize, fc2]` apart); tiny.en unchanged (its fc2 rows are not 384 wide on the device).
//! Then the encoder's four fc2 chunks as one residual (the chain plan's residual parts: each
//! chunk's result at its rows of one C region, which is the next layer's attention norm's
//! `r`): base **7** per window (the first layer's `[norm, q, k, v]`, then per layer `[out,
//! norm + residual, fc1 × 4, (quantize, fc2) × 4, next norm (x_out, four-part residual), next
//! q, k, v]`), tiny.en **5**; per token unchanged. With the decoder's `h` a stage's scratch
//! (`Program::mark_stage_local`), the last layer's MLP norm joins too: base **13** per token
//! (the last layer's `[cross out, norm + residual, fc1, quantize, fc2]` one chain), tiny.en
//! 20 (its norms take no residual). Not done: attention (its own context; Q/K
//! quantized on the host). The x rows go to the device as f32
//! (4 bytes a value instead of the 1-byte codes the readers took), so a window moves more
//! bytes to the device until the residual stream stays resident there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use amanuensis_aie::design::NormQuantDesign;
use amanuensis_aie::program::norm::{arg_lens, norm_array, norm_program, padded_rows};
use amanuensis_aie::txn::{Direction as AieDirection, Target};

use crate::npu::emu::EmuDriver;
use crate::npu::heap::{DevBo, Heap};
use crate::npu::program::RegmapLayout;
use crate::npu::txn::{self, ArrayIo, Limits};
use crate::npu::xclbin::XclbinBuilder;
use crate::npu::NpuError;

/// Buffer arguments of the design (x, r, parameters, activation image, x_out).
pub const NORM_ARGS: usize = 5;

/// What identifies a norm design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NormKey {
    /// Row width (`d_model`; a GEMM's output width for the plain quantize).
    pub d: usize,
    /// `x += r` before the norm.
    pub residual: bool,
    /// The LayerNorm; false: the plain per-row quantize (`nq_quant`: a GEMM's f32 output rows
    /// quantized for the GEMM after it), which takes only x and the image.
    pub norm: bool,
}

impl NormKey {
    /// The plain quantize of rows of width `d`.
    pub fn quantize(d: usize) -> Self {
        Self {
            d,
            residual: false,
            norm: false,
        }
    }
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
        let design = if key.norm {
            NormQuantDesign::new(target, key.d, key.residual)
        } else {
            NormQuantDesign::quantize(target, key.d)
        }
        .map_err(|e| NpuError::InvalidRequest {
            what: format!(
                "norm design d {} residual {} norm {}: {e}",
                key.d, key.residual, key.norm
            ),
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

/// A norm design as a CU of the NPU backend's design context
/// ([`crate::aie_gemm::AieContext`]): its instruction streams, one per round count, generated,
/// validated and uploaded the first time a workspace declares a norm that needs them (never
/// on the hot path).
pub struct AieNorm {
    /// What it is.
    pub key: NormKey,
    /// Its geometry.
    pub design: NormDesign,
    pub(crate) layout: RegmapLayout,
    /// Partition width the streams are validated against.
    cols: u8,
    /// Stream `i` normalizes `i + 1` rounds.
    streams: Mutex<Vec<(DevBo, u32)>>,
}

impl AieNorm {
    /// The design `key` on `target` (streams made by [`AieNorm::ensure_rows`]).
    pub fn new(target: Target, key: NormKey) -> Result<Self, NpuError> {
        let design = NormDesign::new(target, key)?;
        Ok(Self {
            key,
            layout: design.layout(),
            design,
            cols: target.cols,
            streams: Mutex::new(Vec::new()),
        })
    }

    fn rounds(&self, rows: usize) -> usize {
        self.design.padded_rows(rows) / self.design.design.rows_per_round()
    }

    /// Makes sure the streams for up to `rows` rows exist (validated, uploaded to DEV BOs).
    pub fn ensure_rows(&self, heap: &Arc<Heap>, rows: usize) -> Result<(), NpuError> {
        let rounds = self.rounds(rows);
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        while streams.len() < rounds {
            let m = (streams.len() + 1) * self.design.design.rows_per_round();
            let words = self.design.stream(m, self.cols)?;
            let mut bo = DevBo::create(heap, 4 * words.len())?;
            for (d, w) in bo.bytes_mut().chunks_exact_mut(4).zip(&words) {
                d.copy_from_slice(&w.to_le_bytes());
            }
            bo.flush(0..4 * words.len());
            streams.push((bo, words.len() as u32));
        }
        Ok(())
    }

    /// `(device address, handle, words)` of the stream for `rows` rows, if uploaded.
    pub fn stream(&self, rows: usize) -> Option<(u64, u32, u32)> {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .get(self.rounds(rows) - 1)
            .map(|(bo, words)| (bo.device_addr(), bo.handle(), *words))
    }
}

/// The PDI of a norm design on the emulated device: a text naming it (no real PDI exists).
pub fn emulated_pdi(target: Target, key: &NormKey) -> Vec<u8> {
    format!(
        "amanuensis EMULATED AIE NORM/QUANTIZE (no real PDI): {:?} {}c d{} residual {} norm {}",
        target.generation, target.cols, key.d, key.residual, key.norm
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

    /// One norm (or plain quantize) submission through the emulated device (context, BOs,
    /// regmap packet, ring): the activation image rows are the CPU INT8 path's codes and
    /// scales, x_out its residual sum, bit for bit.
    #[test]
    fn a_norm_submission_on_the_emulated_device_writes_the_cpu_int8_rows() {
        let mut rng = Rng(41);
        for (rows, d, residual, norm) in [
            (1, 384, false, true),
            (5, 512, true, true),
            (1500, 512, true, true),
            (3, 2048, false, false),
        ] {
            let key = NormKey { d, residual, norm };
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
            if norm {
                layer_norm(&v, rows, d, &gamma, &beta, 1e-5, &mut y);
            } else {
                y.copy_from_slice(&v);
            }
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
                norm: true,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("compute tile"), "{e}");
        let nd = NormDesign::new(
            EMULATED_TARGET,
            NormKey {
                d: 384,
                residual: false,
                norm: true,
            },
        )
        .unwrap();
        assert!(nd.stream(0, EMULATED_TARGET.cols).is_err());
    }
}
