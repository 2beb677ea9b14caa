//! Our own GEMM design (`amanuensis_aie`: `aie/designs/gemm_i8.py`, its TXN instruction
//! streams from `amanuensis_aie::program::gemm`) as device programs of the NPU backend: a whole
//! `out[m×n] = f(A[m×k] · Wᵀ · scales + bias)` (f = identity or GELU) in **one** submission for
//! any `m`, any `(k, n)` that are multiples of 64, with the dequantize / bias / GELU epilogue on
//! the device and the weight image in the INT8 file's tile layout.
//!
//! One [`AieGemm`] is one design (`k`, `n`, epilogue, mapping): its regmap layout and its
//! instruction streams, one per super-block count, generated and uploaded the first time a
//! workspace declares a linear that needs them (never on the hot path). The designs one program
//! needs are the CUs of one hardware context ([`AieContext`], loaded from one xclbin with a
//! kernel per design, as `aiecc.py --xclbin-input` extends an xclbin), so the linears of a
//! stage can go to the device as one `ERT_CMD_CHAIN` whatever their shapes and epilogues. The encoder's rows use
//! [`Mapping::RowBlocks`] (128-row super-blocks); up to 32 rows (decoder steps, beam 5) use
//! [`Mapping::ChannelSpread`] when the design accepts the shape.
//!
//! **No xclbin of this design has been built** (no mlir-aie / Peano here, `aie/build.sh`), so
//! these programs exist only on the emulated device: [`emulated_xclbin`] is an mlir-aie-shaped
//! xclbin whose PDI is a text naming the design, and [`register_array_model`] makes the
//! emulator's firmware run that PDI with the aie crate's array model
//! (`amanuensis_aie::program::replay::gemm_array`: the design's stream consumption and the
//! kernels' Rust models, bit-exact with `q8::gemm_q8`). The host side (BOs, packets, the
//! instruction streams, flushes) is what a real device would get.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use amanuensis_aie::design::{GemmDesign, Mapping};
use amanuensis_aie::kernels::matmul::EpilogueMode;
use amanuensis_aie::program::attention::AttentionImages;
use amanuensis_aie::program::gemm::gemm_program;
use amanuensis_aie::program::images::{activation_image_len, output_len};
use amanuensis_aie::program::replay::gemm_array;
use amanuensis_aie::txn::{Direction as AieDirection, Target};

use crate::npu::device::Device;
use crate::npu::emu::EmuDriver;
use crate::npu::heap::{DevBo, Heap};
use crate::npu::hwctx::HwContext;
use crate::npu::program::RegmapLayout;
use crate::npu::txn::{self, ArrayIo, Limits};
use crate::npu::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::NpuError;
use crate::npu_attention_chain::{ChainAttention, ChainKind};
use crate::npu_norm::{AieNorm, NormKey};

/// The target the emulated designs are generated for: npu2 (Strix, 8 columns), the geometry
/// of the emulated device the fixture programs also need.
pub const EMULATED_TARGET: Target = Target::NPU2;

/// Most rows the decoder mapping takes (one 32-row super-block).
pub const SPREAD_MAX_ROWS: usize = 32;

/// What identifies a design.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DesignKey {
    /// Depth.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// The epilogue compiled into the core.
    pub mode: EpilogueMode,
    /// The data movement.
    pub mapping: Mapping,
}

impl DesignKey {
    /// The design on `target`, or why it does not fit.
    pub fn design(&self, target: Target) -> Result<GemmDesign, NpuError> {
        GemmDesign::with_mapping(target, self.k, self.n, self.mapping).map_err(|e| {
            NpuError::InvalidRequest {
                what: format!(
                    "GEMM design K{}×N{} {:?}: {e}",
                    self.k, self.n, self.mapping
                ),
            }
        })
    }
}

/// The PDI of a design on the emulated device: a text naming it (no real PDI exists).
pub fn emulated_pdi(target: Target, key: &DesignKey) -> Vec<u8> {
    format!(
        "amanuensis EMULATED AIE GEMM (no real PDI): {:?} {}c K{} N{} {:?} {:?}",
        target.generation, target.cols, key.k, key.n, key.mode, key.mapping
    )
    .into_bytes()
}

/// An mlir-aie-shaped xclbin (one PDI, kernel `MLIR_AIE`, buffer args A, W, out) around
/// [`emulated_pdi`].
pub fn emulated_xclbin(target: Target, key: &DesignKey) -> Vec<u8> {
    XclbinBuilder::mlir_aie(&emulated_pdi(target, key), target.cols as u16, 3).build()
}

/// An xclbin with one mlir-aie kernel per design of `keys` (kernel `i`: PDI
/// [`emulated_pdi`] of `keys[i]`, `dpu_kernel_id` 0x901 + i, buffer args A, W, out).
pub fn emulated_xclbin_of(target: Target, keys: &[DesignKey]) -> Vec<u8> {
    let pdis: Vec<Vec<u8>> = keys.iter().map(|k| emulated_pdi(target, k)).collect();
    XclbinBuilder::mlir_aie_kernels(&pdis, target.cols as u16, 3).build()
}

/// An xclbin with one mlir-aie kernel per GEMM design of `keys` (buffer args A, W, out), then
/// one per norm design of `norms` (its [`crate::npu_norm::NORM_ARGS`] buffer args): kernel `i`
/// has `dpu_kernel_id` 0x901 + i.
pub fn emulated_xclbin_with_norms(
    target: Target,
    keys: &[DesignKey],
    norms: &[NormKey],
) -> Vec<u8> {
    emulated_xclbin_with(target, keys, norms, &[])
}

/// [`emulated_xclbin_with_norms`] with, after the norms, the attention design's kernel (when
/// `attention` is not empty) and one kernel per chain attention shape of `attention` (its
/// first step): kernel `i` has `dpu_kernel_id` 0x901 + i (the chain members of
/// [`crate::npu_attention_chain`]).
pub fn emulated_xclbin_with(
    target: Target,
    keys: &[DesignKey],
    norms: &[NormKey],
    attention: &[(AttentionImages, ChainKind)],
) -> Vec<u8> {
    let attend = (!attention.is_empty())
        .then(|| (crate::npu_attention::emulated_pdi(target), 3))
        .into_iter();
    let inputs = attention.iter().map(|(im, kind)| {
        let args = match kind {
            ChainKind::SelfAttention => amanuensis_aie::program::attention_inputs::INPUT_ARGS,
            ChainKind::Prepared => 2,
            ChainKind::Cached => amanuensis_aie::program::cache_inputs::CACHE_INPUT_ARGS,
        };
        (
            crate::npu_attention_chain::inputs_pdi(target, im, *kind),
            args,
        )
    });
    let kernels: Vec<(Vec<u8>, usize)> = keys
        .iter()
        .map(|k| (emulated_pdi(target, k), 3))
        .chain(norms.iter().map(|k| {
            (
                crate::npu_norm::emulated_pdi(target, k),
                crate::npu_norm::NORM_ARGS,
            )
        }))
        .chain(attend)
        .chain(inputs)
        .collect();
    XclbinBuilder::mlir_aie_kernels_args(&kernels, target.cols as u16).build()
}

/// Makes `emu`'s firmware run the design's PDI with the aie crate's array model: the streams
/// the shim DMA interpreter delivered go through `gemm_array`, and its output streams are
/// what the S2MM tasks write. The super-block count comes from the column stream's length.
pub fn register_array_model(
    emu: &EmuDriver,
    target: Target,
    key: DesignKey,
) -> Result<(), NpuError> {
    let d = key.design(target)?;
    emu.register_kernel(&emulated_pdi(target, &key), move |io: &mut ArrayIo| {
        run_array(&d, key.mode, io)
    });
    Ok(())
}

fn run_array(d: &GemmDesign, mode: EpilogueMode, io: &mut ArrayIo) -> Result<(), String> {
    let sent: BTreeMap<_, _> = io
        .inputs()
        .map(|(ch, b)| ((ch.col, AieDirection::Mm2s, ch.channel), b.to_vec()))
        .collect();
    let c0 = (0..d.cols()).find(|&c| d.groups_of(c) > 0).unwrap_or(0);
    let per_block = d.groups_of(c0)
        * (d.k_tiles() + 1)
        * amanuensis_aie::kernels::layout::W_BYTES
        * match d.mapping {
            Mapping::RowBlocks => 1,
            Mapping::ChannelSpread => amanuensis_aie::design::CORE_ROWS,
        };
    let col_len = sent
        .get(&(c0 as u8, AieDirection::Mm2s, 1))
        .map_or(0, Vec::len);
    if per_block == 0 || col_len == 0 || col_len % per_block != 0 {
        return Err(format!(
            "column stream of {col_len} bytes is not whole super-blocks of {per_block}"
        ));
    }
    let m = col_len / per_block * d.block_rows();
    let produced = gemm_array(d, m, mode, &sent).map_err(|e| e.to_string())?;
    for ((col, _, chan), bytes) in produced {
        io.send(col, chan, &bytes)?;
    }
    Ok(())
}

/// One uploaded instruction stream.
struct Stream {
    bo: DevBo,
    words: u32,
}

/// A design: its argument layout and instruction streams (its CU lives in an [`AieContext`]).
pub struct AieGemm {
    /// What it is.
    pub key: DesignKey,
    /// Its geometry.
    pub design: GemmDesign,
    pub(crate) layout: RegmapLayout,
    /// Partition width the streams are validated against.
    cols: u8,
    /// Stream `i` computes `i + 1` super-blocks.
    streams: Mutex<Vec<Stream>>,
}

/// The hardware context holding a set of designs, CU `i` running `designs[i]`, then CU
/// `designs.len() + j` running `norms[j]`, then (with chain attention) the attention design's
/// CU and one attention-inputs CU per shape of `attention`.
pub struct AieContext {
    pub(crate) ctx: Arc<HwContext>,
    /// The GEMM designs, by CU index.
    pub designs: Vec<Arc<AieGemm>>,
    /// The norm designs, after the GEMM designs.
    pub norms: Vec<Arc<AieNorm>>,
    /// The attention shapes chained on this context (their inputs CUs after the attention
    /// design's).
    pub attention: Vec<Arc<ChainAttention>>,
}

impl AieContext {
    /// Loads an xclbin with one kernel per design of `designs` (made by `xclbin_of`) into one
    /// context on `device`.
    pub fn load(
        device: &Device,
        heap: &Arc<Heap>,
        designs: Vec<Arc<AieGemm>>,
        norms: Vec<Arc<AieNorm>>,
        xclbin: &[u8],
    ) -> Result<Self, NpuError> {
        Self::load_with(device, heap, designs, norms, Vec::new(), xclbin)
    }

    /// [`AieContext::load`] with the chain attention shapes `attention` (the xclbin made by
    /// [`emulated_xclbin_with`]).
    pub fn load_with(
        device: &Device,
        heap: &Arc<Heap>,
        designs: Vec<Arc<AieGemm>>,
        norms: Vec<Arc<AieNorm>>,
        attention: Vec<Arc<ChainAttention>>,
        xclbin: &[u8],
    ) -> Result<Self, NpuError> {
        let x = Xclbin::parse(xclbin)?;
        let kernels = x.kernels()?;
        let mut ids = Vec::with_capacity(designs.len() + norms.len() + attention.len() + 1);
        let attend = attention
            .first()
            .map(|a| ("attention design".to_string(), &a.attend_layout))
            .into_iter();
        let wanted = designs
            .iter()
            .map(|g| (format!("GEMM design {:?}", g.key), &g.layout))
            .chain(
                norms
                    .iter()
                    .map(|n| (format!("norm design {:?}", n.key), &n.layout)),
            )
            .chain(attend)
            .chain(
                attention
                    .iter()
                    .map(|a| (format!("attention inputs {:?}", a.im), &a.inputs_layout)),
            );
        for (i, (what, layout)) in wanted.enumerate() {
            let id = MLIR_AIE_DPU_KERNEL_ID + i as u64;
            let kernel = kernels
                .iter()
                .find(|k| k.kind == "dpu" && k.dpu_kernel_id == Some(id))
                .ok_or_else(|| NpuError::InvalidRequest {
                    what: format!("{what}: no dpu kernel {id:#x} in the xclbin"),
                })?;
            if RegmapLayout::from_kernel(kernel)? != *layout {
                return Err(NpuError::InvalidRequest {
                    what: format!("{what}: kernel {id:#x} has another regmap"),
                });
            }
            ids.push(id);
        }
        let ctx = HwContext::load_kernels(device, heap, &x, &ids)?;
        Ok(Self {
            ctx: Arc::new(ctx),
            designs,
            norms,
            attention,
        })
    }

    /// The CU running the attention design, with chain attention.
    pub fn cu_of_attention(&self) -> Option<u32> {
        (!self.attention.is_empty()).then_some((self.designs.len() + self.norms.len()) as u32)
    }

    /// The chain attention of shape `im` and the CU of its inputs step.
    pub fn chain_attention(
        &self,
        im: &AttentionImages,
        kind: ChainKind,
    ) -> Option<(&Arc<ChainAttention>, u32)> {
        let p = self
            .attention
            .iter()
            .position(|a| a.im == *im && a.kind == kind)?;
        Some((
            &self.attention[p],
            (self.designs.len() + self.norms.len() + 1 + p) as u32,
        ))
    }

    /// The CU running norm design `key`.
    pub fn cu_of_norm(&self, key: &NormKey) -> Option<u32> {
        self.norms
            .iter()
            .position(|n| n.key == *key)
            .map(|i| (self.designs.len() + i) as u32)
    }

    /// The CU running `key`.
    pub fn cu_of(&self, key: &DesignKey) -> Option<u32> {
        self.designs
            .iter()
            .position(|g| g.key == *key)
            .map(|i| i as u32)
    }

    /// Whether each chain attention shape `i` of this context reads sources of every row
    /// stride of `strides[i]`.
    pub fn reads_strides(&self, strides: &[Vec<usize>]) -> bool {
        self.attention.len() == strides.len()
            && self
                .attention
                .iter()
                .zip(strides)
                .all(|(a, s)| s.iter().all(|w| a.strides.contains(w)))
    }

    /// Whether this context holds exactly `keys`, `norms` and the chain attention shapes
    /// `attention`, in order.
    pub fn holds(
        &self,
        keys: &[DesignKey],
        norms: &[NormKey],
        attention: &[(AttentionImages, ChainKind)],
    ) -> bool {
        self.attention.len() == attention.len()
            && self
                .attention
                .iter()
                .zip(attention)
                .all(|(a, (im, kind))| a.im == *im && a.kind == *kind)
            && self.designs.len() == keys.len()
            && self.designs.iter().zip(keys).all(|(g, k)| g.key == *k)
            && self.norms.len() == norms.len()
            && self.norms.iter().zip(norms).all(|(n, k)| n.key == *k)
    }
}

impl AieGemm {
    /// The design `key` on `target` (streams made by [`AieGemm::ensure_rows`]).
    pub fn new(target: Target, key: DesignKey) -> Result<Self, NpuError> {
        Ok(Self {
            key,
            design: key.design(target)?,
            // The emulated xclbins' kernel: opcode, instr, ninstr, A, W, out.
            layout: RegmapLayout::mlir_aie(3),
            cols: target.cols,
            streams: Mutex::new(Vec::new()),
        })
    }

    /// Makes sure the streams for up to `rows` rows exist: generated, validated against the
    /// buffer sizes they address (every task awaited), uploaded to DEV BOs.
    pub fn ensure_rows(&self, heap: &Arc<Heap>, rows: usize) -> Result<(), NpuError> {
        let blocks = self.design.row_blocks(rows.max(1));
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        while streams.len() < blocks {
            let m = (streams.len() + 1) * self.design.block_rows();
            let words = gemm_program(&self.design, m).map_err(|e| NpuError::InvalidRequest {
                what: format!("GEMM design {:?}, {m} rows: {e}", self.key),
            })?;
            let lens = [
                activation_image_len(&self.design, m) as u64,
                amanuensis_aie::program::images::weight_image_len(&self.design) as u64,
                output_len(&self.design, m) as u64,
            ];
            let plan = txn::validate(
                &words,
                &Limits {
                    arg_lens: &lens,
                    partition_cols: Some(self.cols),
                },
            )?;
            if plan.summary.unawaited != 0 {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "GEMM design {:?}: {} tasks never awaited",
                        self.key, plan.summary.unawaited
                    ),
                });
            }
            let mut bo = DevBo::create(heap, 4 * words.len())?;
            for (d, w) in bo.bytes_mut().chunks_exact_mut(4).zip(&words) {
                d.copy_from_slice(&w.to_le_bytes());
            }
            bo.flush(0..4 * words.len());
            streams.push(Stream {
                bo,
                words: words.len() as u32,
            });
        }
        Ok(())
    }

    /// `(device address, handle, words)` of the stream for `rows` rows, if uploaded.
    pub fn stream(&self, rows: usize) -> Option<(u64, u32, u32)> {
        let blocks = self.design.row_blocks(rows.max(1));
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .get(blocks - 1)
            .map(|s| (s.bo.device_addr(), s.bo.handle(), s.words))
    }
}
