//! The NPU backend: the CPU INT8 backend with the linear layers computed on the NPU (a real
//! amdxdna device or the emulated one) by one of two kinds of device program.
//!
//! **Fixture GEMM programs** ([`GemmProgramFiles`]: a prebuilt xclbin and its TXN instruction
//! stream, real compiled kernels) are a fixed 128-row tile `C[128×N] i32 = A[128×K] i8 ·
//! B[K×N] i8`, A and C row-major, B `K×N` row-major (the transpose of the `[out, in]` weight).
//! They do no scaling: the host quantizes the activations per row exactly as the CPU INT8 path
//! does ([`quantize_row`]), and applies the dequantize / bias / epilogue with the same code
//! ([`dequantize_into`]), so a device linear is bit-identical to [`crate::q8::gemm_q8`]. Per
//! linear call of `rows` rows: `⌈rows/128⌉` sub-commands, one per 128-row tile of A and C. At
//! load: one hardware context per program (each is its own real xclbin, so its tiles chain
//! only with its own), the stream validated against the buffer sizes
//! ([`crate::npu::txn::validate`]) and copied once into a DEV BO; every INT8 weight of a
//! matching `(K, N)` repacked once into its B layout in its own BO.
//!
//! **Our GEMM design** ([`crate::aie_gemm`], enabled by [`NpuBackend::with_emulated_designs`];
//! on the emulated device only, since none of its xclbins has been built) takes every other
//! INT8 linear whose `(K, N)` are multiples of 64: one sub-command per linear call for any row
//! count, the dequantize / bias / GELU epilogue on the device (`AddInto`: the host adds the
//! device's result), the weight image (the file's INT8 tiles byte for byte, then each block's
//! scales and bias) uploaded once, when the first workspace declares the linear (its bias and
//! epilogue are known then). Bit-identical to `gemm_q8` as well. Every design a program uses is
//! a CU of one hardware context ([`crate::aie_gemm::AieContext`]).
//!
//! **Submissions** follow each stage's chain plan ([`crate::chain_plan`], made when a workspace
//! is created): a group of device linears of one context is submitted when the stage reaches
//! its first member ([`LayerKernels::begin_op`]): every member's rows quantized into its A
//! region (members with the same input share one), one `ERT_START_CU` per design linear or
//! fixture tile, all in one `ERT_CMD_CHAIN` (a single command when there is one), waited for,
//! C invalidated; each member's result is written into the stage's buffers when the stage
//! reaches that member ([`LayerKernels::try_linear`]). So q/k/v of an attention, the fc1 of
//! every MLP chunk and the cross-attention K/V of all layers are one submission each.
//!
//! Per workspace (stream): the plans, one A BO sized for the largest group, one C BO in which
//! groups whose spans overlap (a hoisted group's results wait while others run) have disjoint
//! regions, one command ring per context with its chain's sub-command BOs; nothing is
//! allocated per call.
//!
//! **Norms** join the chains on the emulated designs ([`crate::npu_norm`]: the chain plan's
//! rule for a `LayerNorm`): a member norm's x rows (f32) go to the session's norm-input BO
//! (or it reads an earlier member norm's x_out there), the device normalizes and quantizes
//! them (plus the residual `r`: its residual parts' results, each at its row offset of the
//! first part's C region, which is sized for the norm's whole rounds and every part's padded
//! output; the parts run in ascending row order, so a part's padding rows land in the next
//! part's rows before that part writes them) into its activation image in the session's image
//! BO, and the linears reading it
//! take that image as their A; the host skips the norm. The image BO is written only by the
//! device (the host never writes or flushes it), so no host flush of the norm-input BO's x
//! rows or of a region's cleared padding can cover bytes the device wrote for a reader.
//!
//! **The device quantize** (the chain plan's rule for a linear reading a member linear's
//! stored result: fc2 reading fc1's GELU output): the norm design's plain-quantize mode
//! quantizes the source's C rows per row (`q8::quant::quantize_row`'s bits) into an image in
//! the image BO, one sub-command before the reader's, which takes it as A; the source's C
//! region is sized for the quantize's whole rounds, and its result is still written back at
//! its own position. A fixture program's linear that reads a device norm or a device quantize
//! runs on our design instead (its matrix gets a design image when a norm or a stored linear
//! writes its input).
//!
//! **Attention in the chains** (with [`NpuBackend::with_emulated_attention`]; the chain plan's
//! rule for an [`Op::Attention`] whose q, k and v are member linears' stored results and whose
//! query and key counts are fixed at load): two sub-commands on the designs' context
//! ([`crate::npu_attention_chain`]): the attention inputs (the Q and K/V images, in the
//! session's attention-image BO, from the q/k/v members' C rows; the host writes only the Q
//! headers) and the attention writing its rows row-major into a C region, which the device
//! quantize reads for the out-projection; its rows are written back at its own position
//! ([`LayerKernels::attention`]). The decoder's cross-attention over the resident K/V and its
//! greedy self-attention over the device K/V cache join the same way (their first step writes
//! only the Q image, or the Q image and the step's new K/V rows at the step's position in the
//! cache image). A chain is bounded by the driver's 4 KiB chain buffer in bytes (each
//! sub-command's slot: 8 bytes and its regmap), so whisper-base's encoder window is 2 chains
//! (69 and 56 sub-commands) and its decoder step 2 (3 layers each). Every other op (other attentions: on the attention
//! design's own context or the host; norms whose f32 output the host reads, the conv stem,
//! linears no program takes, such as a vocabulary-wide logits projection) runs on the CPU INT8
//! kernels. Nothing here knows which network it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use amanuensis_aie::design::Mapping;
use amanuensis_aie::kernels::matmul::EpilogueMode;
use amanuensis_aie::program::attention::AttentionImages;
use amanuensis_aie::program::attention_inputs::INPUT_ARGS;
use amanuensis_aie::program::cache_inputs::CACHE_INPUT_ARGS;
use amanuensis_aie::program::images::{activation_image_len, output_len, weight_image};
use amanuensis_aie::txn::Target;

use crate::aie_gemm::{
    emulated_xclbin_with, register_array_model, AieContext, AieGemm, DesignKey, EMULATED_TARGET,
    SPREAD_MAX_ROWS,
};
use crate::backend::{AttentionShape, Backend, BackendError, Epilogue, LayerKernels};
use crate::chain_plan::{ChainPlan, DeviceLinear, Limits as ChainLimits, Role};
use crate::cpu_int8_backend::{
    CpuInt8Backend, Int8KeyValueCache, Int8KeyValues, Int8OrF32Matrix, Int8Scratch,
};
use crate::dirty_ranges::DirtyRanges;
use crate::dispatch::{DispatchLog, DispatchRecord};
use crate::host::HostWorkspace;
use crate::npu::bo::MappedBo;
use crate::npu::device::Device;
use crate::npu::driver::Backend as DriverBackend;
use crate::npu::emu::{EmuConfig, EmuDriver, Int8GemmModel};
use crate::npu::ert::{
    chain_slot_bytes, max_chain_len, StartCu, CHAIN_BUFFER_BYTES, MLIR_AIE_OPCODE_TXN,
};
use crate::npu::heap::{DevBo, Heap};
use crate::npu::hwctx::{HwContext, MAX_CUS};
use crate::npu::program::RegmapLayout;
use crate::npu::ring::{CommandRing, Packet};
use crate::npu::txn::{self, Direction, Limits};
use crate::npu::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::NpuError;
use crate::npu_attention::{self, AttentionSession, AttentionStats, DeviceAttention};
use crate::npu_attention_chain::{register_inputs_model, ChainAttention, ChainKind};
use crate::npu_norm::{register_norm_model, AieNorm, NormKey, NORM_ARGS};
use crate::q8::quant::quantize_row;
use crate::q8::{dequantize_into, QuantMatrix};
use crate::stage::{BufferId, KeyValueCacheSpec, Op, Program, StageArgs, StageId};

/// Rows of A and C one submission of a device GEMM program computes.
pub const GEMM_ROWS: usize = 128;

/// How long a submission may take before it is reported as timed out.
pub const SUBMISSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Dispatch records each workspace keeps.
const LOG_CAPACITY: usize = 4096;

/// A device GEMM program as files: `C[128×n] i32 = A[128×k] i8 · B[k×n] i8`.
#[derive(Clone, Debug)]
pub struct GemmProgramFiles {
    /// Depth.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Where the xclbin came from (for messages).
    pub xclbin_path: PathBuf,
    /// The xclbin.
    pub xclbin: Vec<u8>,
    /// The instruction stream (TXN, little-endian u32 words, header included).
    pub insts: Vec<u32>,
}

impl GemmProgramFiles {
    /// Reads the pair `final_*_K{k}_N{n}.xclbin` + `insts_*_K{k}_N{n}.txt` for each wanted
    /// `(k, n)` from `dir` (the names the fixture build uses).
    pub fn find_in(dir: &Path, shapes: &[(usize, usize)]) -> Result<Vec<Self>, NpuError> {
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| NpuError::InvalidRequest {
                what: format!("GEMM program directory {}: {e}", dir.display()),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let named = |prefix: &str, suffix: &str| -> Option<&PathBuf> {
            entries.iter().find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
        };
        let mut out = Vec::with_capacity(shapes.len());
        for &(k, n) in shapes {
            let tag = format!("_K{k}_N{n}");
            let (Some(x), Some(i)) = (
                named("final_", &format!("{tag}.xclbin")),
                named("insts_", &format!("{tag}.txt")),
            ) else {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "no GEMM program for K{k}×N{n} in {} (final_*{tag}.xclbin + insts_*{tag}.txt)",
                        dir.display()
                    ),
                });
            };
            out.push(Self::read(k, n, x, i)?);
        }
        Ok(out)
    }

    /// Reads one program.
    pub fn read(k: usize, n: usize, xclbin: &Path, insts: &Path) -> Result<Self, NpuError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| NpuError::InvalidRequest {
                what: format!("{}: {e}", p.display()),
            })
        };
        let bytes = read(insts)?;
        let insts_words =
            txn::words_from_le_bytes(&bytes).ok_or_else(|| NpuError::InvalidRequest {
                what: format!(
                    "{}: {} bytes is not a multiple of 4",
                    insts.display(),
                    bytes.len()
                ),
            })?;
        Ok(Self {
            k,
            n,
            xclbin_path: xclbin.to_path_buf(),
            xclbin: read(xclbin)?,
            insts: insts_words,
        })
    }

    fn arg_lens(&self) -> [u64; 3] {
        [
            (GEMM_ROWS * self.k) as u64,
            (self.k * self.n) as u64,
            (4 * GEMM_ROWS * self.n) as u64,
        ]
    }

    /// The shim columns that return C (the design's width), from the validated stream.
    fn output_columns(&self, partition_cols: u8) -> Result<usize, NpuError> {
        let lens = self.arg_lens();
        let plan = txn::validate(
            &self.insts,
            &Limits {
                arg_lens: &lens,
                partition_cols: Some(partition_cols),
            },
        )?;
        let mut cols: Vec<u8> = plan
            .channel_bytes()
            .into_iter()
            .filter(|(c, _)| c.dir == Direction::S2mm)
            .map(|(c, _)| c.col)
            .collect();
        cols.sort_unstable();
        cols.dedup();
        Ok(cols.len())
    }
}

/// The emulated device for `programs`: an 8-column AIE2P-like array (the fixture programs are
/// npu2 designs) whose firmware runs each program's PDI with the INT8 GEMM array model
/// ([`Int8GemmModel`]), under the driver profile of `AMANUENSIS_EMU_PROFILE`.
pub fn emulated_device(
    programs: &[GemmProgramFiles],
) -> Result<(Arc<EmuDriver>, Device), NpuError> {
    let emu = Arc::new(EmuDriver::new(emulated_config()));
    register_gemm_models(&emu, programs)?;
    let device = Device::from_driver(emu.clone())?;
    Ok((emu, device))
}

/// The emulated device's geometry for the GEMM programs: 8 columns (npu2), the rest as
/// [`EmuConfig::default`].
pub fn emulated_config() -> EmuConfig {
    EmuConfig {
        cols: 8,
        ..EmuConfig::default()
    }
}

/// Registers the INT8 GEMM array model for each program's PDI on `emu` (the design's width is
/// read from the instruction stream: the shim columns that return C).
pub fn register_gemm_models(
    emu: &EmuDriver,
    programs: &[GemmProgramFiles],
) -> Result<(), NpuError> {
    for p in programs {
        let x = Xclbin::parse(&p.xclbin)?;
        let part = x.aie_partition()?;
        let pdi = part.pdi_for_kernel(dpu_kernel_id(&x))?;
        let cols = p.output_columns(part.column_width as u8)?;
        let model = Int8GemmModel::new(p.k, p.n, cols).ok_or_else(|| NpuError::InvalidRequest {
            what: format!(
                "{}: K{}×N{} on {cols} columns does not fit the INT8 GEMM array model",
                p.xclbin_path.display(),
                p.k,
                p.n
            ),
        })?;
        emu.register_kernel(pdi, move |io| model.run(io));
    }
    Ok(())
}

fn dpu_kernel_id(x: &Xclbin<'_>) -> u64 {
    x.kernels()
        .ok()
        .and_then(|ks| ks.into_iter().find_map(|k| k.dpu_kernel_id))
        .unwrap_or(MLIR_AIE_DPU_KERNEL_ID)
}

/// A loaded device GEMM program.
struct DeviceGemm {
    k: usize,
    n: usize,
    layout: RegmapLayout,
    instr: DevBo,
    instr_words: u32,
    ctx: Arc<HwContext>,
}

/// Totals over every workspace of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NpuStats {
    /// Device submissions (linear groups and, with device attention, attention commands).
    pub submissions: u64,
    /// Linear calls computed on the device.
    pub device_linears: u64,
    /// Bytes the host wrote for the device and flushed (A rows of every submission; Q and K/V
    /// images of the attention commands).
    pub bytes_to_device: u64,
    /// Bytes the host read back (C rows of every submission).
    pub bytes_from_device: u64,
    /// Host time in submit + wait (on the emulator: its execution), ns.
    pub device_ns: u64,
    /// Weight bytes uploaded once at load (B layouts).
    pub weight_bytes: u64,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    device_linears: AtomicU64,
    bytes_to_device: AtomicU64,
    bytes_from_device: AtomicU64,
    device_ns: AtomicU64,
    weight_bytes: AtomicU64,
}

/// The NPU backend (see the module docs).
pub struct NpuBackend {
    cpu: CpuInt8Backend,
    // Field order is drop order: contexts and the instruction BOs before the heap, the heap
    // before the device.
    gemms: Vec<DeviceGemm>,
    aie: Option<AieDesigns>,
    /// The attention design, when attention runs on the device ([`crate::npu_attention`]).
    attention: Option<DeviceAttention>,
    heap: Arc<Heap>,
    device: Device,
    counters: Counters,
    timeout: Duration,
}

/// Our GEMM design's programs ([`crate::aie_gemm`]) on the emulated device: loaded the first
/// time a workspace declares a linear of their shape.
struct AieDesigns {
    emu: Arc<EmuDriver>,
    target: Target,
    /// Every design made so far.
    loaded: Mutex<Vec<Arc<AieGemm>>>,
    /// The hardware contexts made so far, one per set of designs a program uses.
    contexts: Mutex<Vec<Arc<AieContext>>>,
    /// Every norm design made so far (its array model registered).
    norms: Mutex<Vec<Arc<AieNorm>>>,
    /// Every chain attention shape made so far (its inputs model registered).
    attention: Mutex<Vec<Arc<ChainAttention>>>,
}

/// A weight matrix of [`NpuBackend`]: the CPU INT8 form, and the B layout on the device when a
/// loaded fixture program has its shape, or else the weight image of our GEMM design (made
/// when the first workspace declares the linear: its bias and epilogue go into the image).
pub struct NpuMatrix {
    cpu: Int8OrF32Matrix,
    device: Option<DeviceWeights>,
    aie: OnceLock<AieWeights>,
}

/// A matrix's weight image for our GEMM design (`amanuensis_aie::program::images`): the
/// file's INT8 tiles byte for byte per 64-channel block, then the block's scales and bias.
struct AieWeights {
    /// The design for encoder-sized row counts.
    rows: Arc<AieGemm>,
    /// The decoder mapping, for up to [`SPREAD_MAX_ROWS`] rows, when it takes the shape.
    spread: Option<Arc<AieGemm>>,
    image: MappedBo,
    /// The bias vector the image holds (address and length) and the epilogue compiled in:
    /// a linear with another bias or epilogue on the same matrix runs on the host.
    bias: Option<(usize, usize)>,
    mode: EpilogueMode,
}

impl AieWeights {
    /// Whether a linear with `bias` and `epilogue` is what the image and design compute
    /// (`AddInto` = `Store` on the device, the host adds).
    fn computes(&self, bias: Option<&[f32]>, epilogue: Epilogue) -> bool {
        self.bias == bias.map(|b| (b.as_ptr() as usize, b.len())) && self.mode == mode_of(epilogue)
    }

    /// The design for `rows` rows.
    fn design_for(&self, rows: usize) -> &Arc<AieGemm> {
        match &self.spread {
            Some(s) if rows <= SPREAD_MAX_ROWS => s,
            _ => &self.rows,
        }
    }
}

fn mode_of(e: Epilogue) -> EpilogueMode {
    match e {
        Epilogue::Gelu => EpilogueMode::Gelu,
        Epilogue::Store | Epilogue::AddInto => EpilogueMode::Store,
    }
}

struct DeviceWeights {
    gemm: usize,
    b: MappedBo,
}

impl NpuMatrix {
    /// Whether this matrix's linear runs on the device.
    pub fn on_device(&self) -> bool {
        self.device.is_some() || self.aie.get().is_some()
    }
}

/// Per-stream state of [`NpuBackend`]: the CPU INT8 scratch and the device session.
pub struct NpuScratch {
    cpu: Int8Scratch,
    session: Option<GemmSession>,
    attention: Option<AttentionSession>,
}

/// One stream's device state: the chain plan of every stage, one activation (A) and one
/// output (C) BO sized for the largest group, one command ring per hardware context (each with
/// its chain's sub-command BOs preallocated), and what the group last submitted. Nothing is
/// allocated per call.
struct GemmSession {
    /// Per stage ([`StageId`] index).
    plans: Vec<ChainPlan>,
    /// Rings by context: fixture program `i` is context `i`, the designs' context the last.
    rings: Vec<CommandRing>,
    /// The designs' context, when the program has linears on them.
    aie: Option<Arc<AieContext>>,
    a: MappedBo,
    /// What of `a` may be non-zero: each region's padding (rows the device computes, nobody
    /// reads) is kept zero by clearing only what an earlier group left there.
    a_dirty: DirtyRanges,
    c: MappedBo,
    /// Row scales of the fixture programs' rows, each group from its `scales_base`.
    scales: Vec<f32>,
    /// Per stage and group: its members as last submitted, in order.
    runs: Vec<Vec<Vec<MemberRun>>>,
    /// Per stage and group: where its outputs start in C and its row scales in `scales`.
    /// Groups whose spans (first to last member) overlap get disjoint regions: a hoisted
    /// group's results wait in C while other groups run.
    c_base: Vec<Vec<usize>>,
    scales_base: Vec<Vec<usize>>,
    /// Per stage and group: submitted in this call of the stage.
    done: Vec<Vec<bool>>,
    /// Per stage and op: where a member norm works.
    norms: Vec<Vec<Option<NormRegion>>>,
    /// Per stage and op: where the device quantize a member linear reads works (its `x_len`:
    /// the bytes it reads of the source's C rows; `params_off` unused).
    quants: Vec<Vec<Option<NormRegion>>>,
    /// The member norms' parameter objects (gamma, beta, eps), written once.
    params: MappedBo,
    /// The member norms' x rows (f32, whole rounds; x_out is written over them).
    nx: MappedBo,
    /// What of `nx` may be non-zero (the padding rows are kept zero).
    nx_dirty: DirtyRanges,
    /// The member norms' activation images (written by the device only; their readers' A).
    img: MappedBo,
    /// Per stage and op: a member attention's chain programs and the CU of its inputs step.
    atts: Vec<Vec<Option<ChainMember>>>,
    /// Per stage and op: a member whose result no host op reads ([`crate::unread_results`]).
    unread: Vec<Vec<bool>>,
    /// The member attentions' Q and K/V images (the host writes only the Q headers).
    att: MappedBo,
    /// Sub-command regmaps of the group being built, `stride` words each.
    regmaps: Vec<u32>,
    cu_masks: Vec<u32>,
    /// Words of each sub-command's regmap.
    cmd_words: Vec<usize>,
    stride: usize,
    handles: Vec<u32>,
    /// The op `begin_op` announced: (stage, op).
    current: (u16, usize),
    log: DispatchLog,
}

/// Where one member's result is.
#[derive(Clone, Copy, Debug, Default)]
struct MemberRun {
    rows: usize,
    /// Input region (`x`, `rows` and `layout` say whether a later member shares it).
    x: Option<crate::stage::At>,
    /// The input image's geometry: (bytes per row, rows it holds).
    layout: (usize, usize),
    a_off: usize,
    c_off: usize,
    /// f32 values per output row in C (our design) or i32 accumulators per row (fixture).
    width: usize,
    /// First row scale in `scales` (fixture programs).
    scales_off: usize,
    fixture: bool,
    /// A norm (its `a_off` is its image region in the image BO).
    norm: bool,
    /// A norm's x region in the norm-input BO (also its x_out).
    x_off: usize,
    /// An attention (its rows row-major at `c_off`, `width` wide).
    attention: bool,
    /// No host op reads its result ([`crate::unread_results`]): not read back.
    unread: bool,
}

/// Where a member norm works: its x region (f32, whole rounds; also its x_out) in the
/// session's norm-input BO, its image region (sized for every reader) in the image BO, its
/// parameter object.
struct NormRegion {
    norm: Arc<AieNorm>,
    cu: u32,
    /// Bytes of its image region.
    image_len: usize,
    /// Bytes of its x region (whole rounds at its most rows).
    x_len: usize,
    /// Most rows a call may have.
    max_rows: usize,
    /// Its parameter object in the session's params BO.
    params_off: usize,
}

/// A member attention's programs: its shape's streams, the CU of its inputs step and the
/// attention design's CU.
#[derive(Clone)]
struct ChainMember {
    programs: Arc<ChainAttention>,
    inputs_cu: u32,
    attend_cu: u32,
}

/// The attention session's device-resident images a group's member attentions read: a
/// prepared key/value slot's (`(address, handle, rows)`, when prepared this window), a K/V
/// cache's (`(address, handle, bytes per slot, slots, keys per slot image)`).
struct ResidentImages<'a> {
    prepared: &'a dyn Fn(usize) -> Option<(u64, u32, usize)>,
    cache: &'a dyn Fn(usize) -> Option<(u64, u32, usize, usize, usize)>,
}

/// The most bytes of member linear `i`'s C rows a member attention's inputs step reads (its
/// query rows, keys or new cache rows, `heads · 64` f32 each, whole regions), 0 when none
/// reads them.
fn attention_read(plan: &ChainPlan, atts: &[Option<ChainMember>], i: usize) -> usize {
    plan.attention
        .iter()
        .zip(atts)
        .filter_map(|(a, c)| Some((a.as_ref()?, c.as_ref()?)))
        .map(|(src, c)| {
            let im = c.programs.im;
            let widest = c.programs.strides.iter().copied().max().unwrap_or(0);
            let row = 4 * widest.max(im.heads * amanuensis_aie::kernels::attention::HEAD_DIM);
            if src.q == i {
                row * im.q_rows
            } else if src.kv.is_some_and(|(k, v)| k == i || v == i) {
                row * c.programs.kv_rows_read()
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0)
}

/// Notes that design `key` is needed for up to `rows` rows.
fn want_norm(keys: &mut Vec<NormKey>, rows: &mut Vec<usize>, key: NormKey, max_rows: usize) {
    match keys.iter().position(|k| *k == key) {
        Some(p) => rows[p] = rows[p].max(max_rows),
        None => {
            keys.push(key);
            rows.push(max_rows);
        }
    }
}

/// The most bytes of member linear `i`'s result (`rows` rows) a member's device quantize
/// reads (whole rounds of the quantize design), 0 when none reads it.
fn quantize_read(
    plan: &ChainPlan,
    quants: &[Option<NormRegion>],
    group: &crate::chain_plan::Group,
    i: usize,
    rows: Option<usize>,
) -> usize {
    group
        .members
        .iter()
        .filter(|&&j| plan.quantized[j] == Some(i))
        .filter_map(|&j| quants[j].as_ref())
        .map(|q| match rows {
            Some(r) => 4 * q.norm.key.d * q.norm.design.padded_rows(r),
            None => q.x_len,
        })
        .max()
        .unwrap_or(0)
}

/// Regions of A and C start on page boundaries.
const REGION_ALIGN: usize = 4096;
/// Most device bytes (inputs + outputs at their most rows) of one group: the session's A, C
/// and image BOs are sized for its largest group. 150 MiB lets whisper-base's encoder with
/// device attention run in 2 chains (145.5 MB each, 3 layers); 256 MiB gives the same 2
/// chains (167 and 124 MB: the first ends with layer 4's attention) and the same transcripts,
/// with 21 MB more C. (Stop 26 saw empty transcripts at 256 MiB and suspected that cut; the
/// stale-line bugs fixed since, a header or x stored into lines the device had written without
/// dropping the CPU's copy first, made device inputs wrong depending on the regions' layout.)
/// Groups without attention stay under 64 MiB (42 MB), so this bound changes nothing for them.
const MAX_GROUP_BYTES: usize = 150 << 20;

fn device_err(op: &'static str) -> impl Fn(NpuError) -> BackendError {
    move |e| BackendError::Device {
        backend: "npu-int8",
        op,
        reason: e.to_string(),
    }
}

fn chain_err(reason: String) -> BackendError {
    BackendError::Device {
        backend: "npu-int8",
        op: "chain",
        reason,
    }
}

/// Writes an attention image's Q header `header` at every head of the image at `q_off` in
/// `att`; returns the bytes flushed. The device may have written those lines since (a bucket
/// of other rows put Q codes where this bucket's headers are): the CPU's copy is dropped before
/// the store, so no stale line can hide it or be written back with it.
fn write_q_headers(att: &mut MappedBo, im: &AttentionImages, q_off: usize, header: &[u8]) -> usize {
    for h in 0..im.heads {
        let at = q_off + im.q_header(h);
        att.flush(at..at + header.len());
        att.bytes_mut()[at..at + header.len()].copy_from_slice(header);
        att.flush(at..at + header.len());
    }
    im.heads * header.len()
}

/// Appends a member attention's two sub-commands, its first step (`(stream address, words,
/// arguments)`) and the attention, to the group's regmaps (`stride` words each), CU masks and
/// regmap lengths.
fn push_attention_commands(
    (regmaps, cu_masks, cmd_words): (&mut [u32], &mut Vec<u32>, &mut Vec<usize>),
    stride: usize,
    m: &ChainMember,
    (in_addr, in_words, first): (u64, u32, &[u64]),
    (at_addr, at_words, attend): (u64, u32, &[u64]),
) -> Result<(), BackendError> {
    let steps = [
        (
            &m.programs.inputs_layout,
            m.inputs_cu,
            in_addr,
            in_words,
            first,
        ),
        (
            &m.programs.attend_layout,
            m.attend_cu,
            at_addr,
            at_words,
            attend,
        ),
    ];
    for (layout, cu, addr, words, args) in steps {
        let j = cu_masks.len();
        layout
            .write(
                MLIR_AIE_OPCODE_TXN,
                addr,
                words,
                args,
                &mut regmaps[j * stride..(j + 1) * stride],
            )
            .map_err(|e| chain_err(format!("command: {e}")))?;
        cu_masks.push(1 << cu);
        cmd_words.push(layout.words());
    }
    Ok(())
}

impl NpuBackend {
    /// Loads `programs` onto `device` (one context each; instruction streams validated and
    /// uploaded); host work runs on `threads` threads per stream.
    pub fn new(
        device: Device,
        programs: &[GemmProgramFiles],
        threads: usize,
    ) -> Result<Self, NpuError> {
        let heap = Heap::create(&device)?;
        let mut gemms = Vec::with_capacity(programs.len());
        for p in programs {
            let x = Xclbin::parse(&p.xclbin)?;
            let kernels = x.kernels()?;
            let kernel = kernels.iter().find(|k| k.kind == "dpu").ok_or_else(|| {
                NpuError::InvalidRequest {
                    what: format!("{}: no dpu kernel", p.xclbin_path.display()),
                }
            })?;
            let layout = RegmapLayout::from_kernel(kernel)?;
            if layout.buffers() < 3 {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "{}: {} buffer arguments, a GEMM takes A, B, C",
                        p.xclbin_path.display(),
                        layout.buffers()
                    ),
                });
            }
            let ctx = HwContext::load(&device, &heap, &x, dpu_kernel_id(&x))?;
            let lens = p.arg_lens();
            let plan = txn::validate(
                &p.insts,
                &Limits {
                    arg_lens: &lens,
                    partition_cols: Some(ctx.columns() as u8),
                },
            )?;
            if plan.summary.unawaited != 0 {
                return Err(NpuError::InvalidRequest {
                    what: format!(
                        "{}: {} tasks never awaited",
                        p.xclbin_path.display(),
                        plan.summary.unawaited
                    ),
                });
            }
            let mut instr = DevBo::create(&heap, 4 * p.insts.len())?;
            for (d, w) in instr.bytes_mut().chunks_exact_mut(4).zip(&p.insts) {
                d.copy_from_slice(&w.to_le_bytes());
            }
            instr.flush(0..4 * p.insts.len());
            gemms.push(DeviceGemm {
                k: p.k,
                n: p.n,
                layout,
                instr,
                instr_words: p.insts.len() as u32,
                ctx: Arc::new(ctx),
            });
        }
        Ok(Self {
            cpu: CpuInt8Backend::new(threads),
            gemms,
            aie: None,
            attention: None,
            heap,
            device,
            counters: Counters::default(),
            timeout: SUBMISSION_TIMEOUT,
        })
    }

    /// Also runs every other INT8 linear whose `(K, N)` are multiples of 64 on our own GEMM
    /// design ([`crate::aie_gemm`]), on the emulated device `emu` (this backend's device):
    /// its xclbins exist only there (see the module docs of `aie_gemm`).
    pub fn with_emulated_designs(mut self, emu: Arc<EmuDriver>) -> Self {
        self.aie = Some(AieDesigns {
            emu,
            target: EMULATED_TARGET,
            loaded: Mutex::new(Vec::new()),
            contexts: Mutex::new(Vec::new()),
            norms: Mutex::new(Vec::new()),
            attention: Mutex::new(Vec::new()),
        });
        self
    }

    /// Also runs attention on the emulated device's attention design
    /// ([`crate::npu_attention`]: the encoder's self-attention, the decoder's cross-attention
    /// and its causal self-attention over a device-resident K/V cache; int8 `Q·Kᵀ`, so not the
    /// CPU INT8 path's arithmetic). Needs
    /// [`NpuBackend::with_emulated_designs`] first (the design exists only on the emulator).
    pub fn with_emulated_attention(mut self) -> Result<Self, NpuError> {
        let Some(aie) = &self.aie else {
            return Err(NpuError::InvalidRequest {
                what: "device attention needs the emulated device (with_emulated_designs)".into(),
            });
        };
        self.attention = Some(DeviceAttention::load_emulated(
            &self.device,
            &self.heap,
            &aie.emu,
            aie.target,
        )?);
        Ok(self)
    }

    /// Totals of the device attention, if it is on.
    pub fn attention_stats(&self) -> Option<AttentionStats> {
        self.attention.as_ref().map(DeviceAttention::stats)
    }

    /// Why commands of the emulated device ended in a state other than COMPLETED (a stream
    /// the validator refused, an array-model failure), oldest first; empty on a real device
    /// (its failures are errors of the calls that waited for them).
    pub fn emulator_command_errors(&self) -> Vec<String> {
        self.aie
            .as_ref()
            .map_or_else(Vec::new, |a| a.emu.command_errors())
    }

    /// The designs loaded so far: `(K, N, GELU, decoder mapping)`.
    pub fn designs(&self) -> Vec<(usize, usize, bool, bool)> {
        self.aie.as_ref().map_or_else(Vec::new, |a| {
            a.loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|g| {
                    let k = g.key;
                    (
                        k.k,
                        k.n,
                        k.mode == EpilogueMode::Gelu,
                        k.mapping == Mapping::ChannelSpread,
                    )
                })
                .collect()
        })
    }

    /// The hardware contexts of our designs so far: the CUs (designs) of each.
    pub fn design_contexts(&self) -> Vec<usize> {
        self.aie.as_ref().map_or_else(Vec::new, |a| {
            a.contexts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|c| c.designs.len())
                .collect()
        })
    }

    /// The design `key` (its array model registered on the emulator) if it is not yet.
    fn aie_design(
        &self,
        aie: &AieDesigns,
        loaded: &mut Vec<Arc<AieGemm>>,
        key: DesignKey,
    ) -> Result<Arc<AieGemm>, BackendError> {
        if let Some(g) = loaded.iter().find(|g| g.key == key) {
            return Ok(g.clone());
        }
        let g = Arc::new(AieGemm::new(aie.target, key).map_err(device_err("load GEMM design"))?);
        register_array_model(&aie.emu, aie.target, key).map_err(device_err("load GEMM design"))?;
        loaded.push(g.clone());
        Ok(g)
    }

    /// The weight image of `q` with `bias` for `mode`, uploaded once; `None` when our design
    /// does not take the shape (the linear stays on the host).
    fn aie_weights(
        &self,
        aie: &AieDesigns,
        loaded: &mut Vec<Arc<AieGemm>>,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        mode: EpilogueMode,
    ) -> Result<Option<AieWeights>, BackendError> {
        let (k, n) = (q.k(), q.n_out());
        if k % 64 != 0 || n % 64 != 0 {
            return Ok(None);
        }
        let key = |mapping| DesignKey {
            k,
            n,
            mode,
            mapping,
        };
        if key(Mapping::RowBlocks).design(aie.target).is_err() {
            return Ok(None);
        }
        let rows = self.aie_design(aie, loaded, key(Mapping::RowBlocks))?;
        let spread = match key(Mapping::ChannelSpread).design(aie.target) {
            Ok(_) => Some(self.aie_design(aie, loaded, key(Mapping::ChannelSpread))?),
            Err(_) => None,
        };
        // The decoder mapping's image (whole quads of blocks) also serves the row mapping,
        // which reads only the first `n/64` blocks: one image per matrix.
        let d = spread.as_ref().map_or(&rows.design, |s| &s.design);
        let image = weight_image(d, q.data(), q.scales(), bias);
        let mut bo =
            MappedBo::share(&self.device, image.len()).map_err(device_err("allocate weights"))?;
        bo.bytes_mut()[..image.len()].copy_from_slice(&image);
        bo.flush(0..image.len());
        self.counters
            .weight_bytes
            .fetch_add(image.len() as u64, Ordering::Relaxed);
        Ok(Some(AieWeights {
            rows,
            spread,
            image: bo,
            bias: bias.map(|b| (b.as_ptr() as usize, b.len())),
            mode,
        }))
    }

    /// For every linear of `program` our design computes: its weight image (once per matrix)
    /// and its instruction streams up to the declared rows. Returns the context holding every
    /// design the program uses (one CU each), if any linear is on the designs.
    fn prepare_aie(
        &self,
        program: &Program<NpuMatrix>,
    ) -> Result<Option<Arc<AieContext>>, BackendError> {
        let Some(aie) = &self.aie else {
            return Ok(None);
        };
        let mut loaded = aie.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut used: Vec<DesignKey> = Vec::new();
        for (ops, j, op) in program
            .stages()
            .iter()
            .flat_map(|s| s.ops.iter().enumerate().map(move |(j, op)| (&s.ops, j, op)))
        {
            let Op::Linear {
                x,
                w,
                bias,
                epilogue,
                max_rows,
                ..
            } = op
            else {
                continue;
            };
            let m = program.matrix(*w);
            let Int8OrF32Matrix::Int8(q) = &m.cpu else {
                continue;
            };
            // A fixture program's matrix also gets a design image when the op reads a norm's
            // output or a linear's stored result (the last op before it writing its input is a
            // norm, or a linear without `AddInto`): it runs on the design when that norm goes
            // on the device (reading its image), or a device quantize reads that result.
            let norm_fed = || {
                ops[..j]
                    .iter()
                    .rev()
                    .find(|o| o.writes().any(|b| b == x.buffer))
                    .is_some_and(|o| match o {
                        Op::LayerNorm { .. } => true,
                        Op::Linear { epilogue, .. } => *epilogue != Epilogue::AddInto,
                        _ => false,
                    })
            };
            if m.device.is_some() && !norm_fed() {
                continue;
            }
            let bias = bias.map(|b| program.vector(b));
            if m.aie.get().is_none() {
                match self.aie_weights(aie, &mut loaded, q, bias, mode_of(*epilogue))? {
                    Some(wts) => {
                        let _ = m.aie.set(wts);
                    }
                    None => continue,
                }
            }
            let Some(wts) = m.aie.get().filter(|w| w.computes(bias, *epilogue)) else {
                continue;
            };
            let rows = (*max_rows).max(1);
            wts.rows
                .ensure_rows(&self.heap, rows)
                .map_err(device_err("load GEMM stream"))?;
            if !used.contains(&wts.rows.key) {
                used.push(wts.rows.key);
            }
            if let Some(sp) = &wts.spread {
                sp.ensure_rows(&self.heap, rows.min(SPREAD_MAX_ROWS))
                    .map_err(device_err("load GEMM stream"))?;
                if !used.contains(&sp.key) {
                    used.push(sp.key);
                }
            }
        }
        drop(loaded);
        if used.is_empty() {
            return Ok(None);
        }
        // The norms the chain plans put on the device (they read into design linears only).
        let mut norm_keys: Vec<NormKey> = Vec::new();
        let mut norm_rows: Vec<usize> = Vec::new();
        for st in 0..program.stages().len() {
            let stage = StageId(st as u16);
            let plan = self.plan(program, stage);
            for (i, n) in plan.norms.iter().enumerate() {
                let (Some(n), Op::LayerNorm { gamma, .. }) = (n, &program.stage(stage).ops[i])
                else {
                    continue;
                };
                let key = NormKey {
                    d: program.vector(*gamma).len(),
                    residual: n.residual.is_some(),
                    norm: true,
                };
                want_norm(&mut norm_keys, &mut norm_rows, key, n.max_rows);
            }
            // The plain quantizes: each reader's input rows (its depth wide).
            for (i, l) in plan.quantized.iter().enumerate() {
                let (Some(_), Op::Linear { w, max_rows, .. }) = (l, &program.stage(stage).ops[i])
                else {
                    continue;
                };
                let key = NormKey::quantize(program.matrix(*w).cpu.cols());
                want_norm(&mut norm_keys, &mut norm_rows, key, (*max_rows).max(1));
            }
        }
        let mut norms = Vec::with_capacity(norm_keys.len());
        {
            let mut made = aie.norms.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, &rows) in norm_keys.iter().zip(&norm_rows) {
                let norm = match made.iter().find(|n| n.key == *key) {
                    Some(n) => n.clone(),
                    None => {
                        let n = Arc::new(
                            AieNorm::new(aie.target, *key)
                                .map_err(device_err("load norm design"))?,
                        );
                        register_norm_model(&aie.emu, aie.target, *key)
                            .map_err(device_err("load norm design"))?;
                        made.push(n.clone());
                        n
                    }
                };
                norm.ensure_rows(&self.heap, rows)
                    .map_err(device_err("load norm stream"))?;
                norms.push(norm);
            }
        }
        // The attentions the chain plans make members: one inputs step per shape, and the
        // attention design's CU.
        // Per shape, the row strides of the q/k/v results its first steps read.
        let mut shapes: Vec<(AttentionImages, ChainKind)> = Vec::new();
        let mut strides: Vec<Vec<usize>> = Vec::new();
        for st in 0..program.stages().len() {
            let stage = StageId(st as u16);
            let plan = self.plan(program, stage);
            let ops = &program.stage(stage).ops;
            for (a, op) in plan.attention.iter().zip(ops) {
                let Some(a) = a else {
                    continue;
                };
                let shape = self.chain_attention_shape(program, op).ok_or_else(|| {
                    chain_err("a member attention of a shape the design does not take".into())
                })?;
                let p = match shapes.iter().position(|s| *s == shape) {
                    Some(p) => p,
                    None => {
                        shapes.push(shape);
                        strides.push(Vec::new());
                        shapes.len() - 1
                    }
                };
                let sources = [Some(a.q), a.kv.map(|kv| kv.0), a.kv.map(|kv| kv.1)];
                for l in sources.into_iter().flatten() {
                    let widths = match self.device_linear_of(program, &ops[l], false) {
                        Some(DeviceLinear {
                            role:
                                Role::Linear {
                                    row_widths: Some(ws),
                                    ..
                                },
                            ..
                        }) => ws,
                        _ => {
                            return Err(chain_err(format!(
                                "op {l}: a member attention's source without device rows"
                            )))
                        }
                    };
                    for w in widths {
                        if !strides[p].contains(&w) {
                            strides[p].push(w);
                        }
                    }
                }
            }
        }
        let mut chained = Vec::with_capacity(shapes.len());
        {
            let mut made = aie.attention.lock().unwrap_or_else(PoisonError::into_inner);
            for (&(im, kind), strides) in shapes.iter().zip(&strides) {
                let has = |a: &ChainAttention| {
                    a.im == im && a.kind == kind && strides.iter().all(|w| a.strides.contains(w))
                };
                let a = match made.iter().find(|a| has(a)) {
                    Some(a) => a.clone(),
                    None => {
                        let a = Arc::new(
                            ChainAttention::new(aie.target, &self.heap, im, kind, strides)
                                .map_err(device_err("load chain attention"))?,
                        );
                        register_inputs_model(&aie.emu, aie.target, im, kind);
                        made.push(a.clone());
                        a
                    }
                };
                chained.push(a);
            }
        }
        let attention_cus = if shapes.is_empty() {
            0
        } else {
            1 + shapes.len()
        };
        if used.len() + norm_keys.len() + attention_cus > MAX_CUS {
            return Err(chain_err(format!(
                "{} GEMM, {} norm and {attention_cus} attention designs in one program, a \
                 hardware context holds {MAX_CUS}",
                used.len(),
                norm_keys.len()
            )));
        }
        let mut contexts = aie.contexts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = contexts
            .iter()
            .find(|c| c.holds(&used, &norm_keys, &shapes) && c.reads_strides(&strides))
        {
            return Ok(Some(c.clone()));
        }
        let loaded = aie.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let designs: Vec<Arc<AieGemm>> = used
            .iter()
            .filter_map(|k| loaded.iter().find(|g| g.key == *k).cloned())
            .collect();
        drop(loaded);
        let c = AieContext::load_with(
            &self.device,
            &self.heap,
            designs,
            norms,
            chained,
            &emulated_xclbin_with(aie.target, &used, &norm_keys, &shapes),
        )
        .map_err(device_err("load GEMM designs"))?;
        let c = Arc::new(c);
        contexts.push(c.clone());
        Ok(Some(c))
    }

    /// The images (at its most queries) and kind of attention `op` as a chain member
    /// ([`crate::npu_attention_chain`]): with device attention on the emulated designs, the
    /// shapes the attention design takes: an [`Op::Attention`] with query and key counts fixed
    /// at load (its inputs step moves whole regions), an [`Op::AttentionPrepared`] over
    /// prepared keys/values (its queries in buckets), an [`Op::CachedSelfAttention`] over a
    /// device-resident K/V cache (its queries in buckets, its new rows written per row count).
    fn chain_attention_shape(
        &self,
        program: &Program<NpuMatrix>,
        op: &Op,
    ) -> Option<(AttentionImages, ChainKind)> {
        let fixed = |e: crate::stage::Extent, max: usize| {
            e.per_row == 0 && e.per_pos == 0 && e.constant == max
        };
        if self.attention.is_none() || self.aie.is_none() {
            return None;
        }
        match op {
            Op::Attention { dims, .. }
                if npu_attention::takes(dims)
                    && fixed(dims.q_len, dims.max_q_len)
                    && fixed(dims.kv_len, dims.max_kv_len) =>
            {
                let im = AttentionImages::new(dims.heads, dims.max_q_len, dims.max_kv_len);
                Some((im.ok()?, ChainKind::SelfAttention))
            }
            Op::AttentionPrepared { kv, dims, .. } if npu_attention::on_device(program, op) => {
                let keys = program.key_values()[kv.0 as usize].capacity;
                let im = AttentionImages::new(dims.heads, dims.max_q_len, keys);
                Some((im.ok()?, ChainKind::Prepared))
            }
            Op::CachedSelfAttention { cache, dims, .. }
                if npu_attention::on_device(program, op) =>
            {
                let positions = program.key_value_caches()[cache.0 as usize].positions;
                let keys = npu_attention::cache_keys(positions);
                let im = AttentionImages::new(dims.heads, dims.max_q_len, keys);
                Some((im.ok()?, ChainKind::Cached))
            }
            _ => None,
        }
    }

    /// The device, when `op` (a linear, a norm or an attention of `program`) runs there: its context
    /// (fixture program `i` = `i`, our designs = `gemms.len()`), sub-commands and bytes at its
    /// most rows, and what it can do in a chain (a design linear reads a norm's image; its f32
    /// result rows are a norm's residual when they are exactly `n` wide for every row count the
    /// op can have; a norm has a residual design).
    fn device_linear_of(
        &self,
        program: &Program<NpuMatrix>,
        op: &Op,
        fixture: bool,
    ) -> Option<DeviceLinear> {
        if let Op::Attention { dims, .. }
        | Op::AttentionPrepared { dims, .. }
        | Op::CachedSelfAttention { dims, .. } = op
        {
            let (im, kind) = self.chain_attention_shape(program, op)?;
            // (Prepared keys/values and K/V caches are resident in their own BOs.)
            let (args, kv) = match kind {
                ChainKind::SelfAttention => (INPUT_ARGS, im.kv_image_len()),
                ChainKind::Prepared => (2, 0),
                ChainKind::Cached => (CACHE_INPUT_ARGS, 0),
            };
            return Some(DeviceLinear {
                context: self.gemms.len(),
                commands: 2,
                bytes: im.q_image_len() + kv + im.out_len(),
                slot_bytes: chain_slot_bytes(RegmapLayout::mlir_aie_words(args))
                    + chain_slot_bytes(RegmapLayout::mlir_aie_words(3)),
                width: dims.width(),
                role: Role::Attention,
            });
        }
        if let Op::LayerNorm { gamma, rows, .. } = op {
            let aie = self.aie.as_ref()?;
            let d = program.vector(*gamma).len();
            let key = |residual| NormKey {
                d,
                residual,
                norm: true,
            };
            let design = crate::npu_norm::NormDesign::new(aie.target, key(false)).ok()?;
            let residual = crate::npu_norm::NormDesign::new(aie.target, key(true)).is_ok();
            // x in f32 (the image is counted by the linears that read it); rows of a call
            // that depend on its arguments are not known here.
            let fixed_rows = (rows.per_row == 0 && rows.per_pos == 0).then_some(rows.constant);
            return Some(DeviceLinear {
                context: self.gemms.len(),
                commands: 1,
                bytes: 4 * d * design.padded_rows(fixed_rows.unwrap_or(1)),
                slot_bytes: chain_slot_bytes(design.layout().words()),
                width: d,
                role: Role::Norm { residual },
            });
        }
        let Op::Linear {
            w,
            bias,
            epilogue,
            max_rows,
            rows: op_rows,
            ..
        } = op
        else {
            return None;
        };
        let m = program.matrix(*w);
        let Int8OrF32Matrix::Int8(q) = &m.cpu else {
            return None;
        };
        let rows = (*max_rows).max(1);
        if let Some(dw) = m
            .device
            .as_ref()
            .filter(|_| fixture || m.aie.get().is_none())
        {
            let tiles = rows.div_ceil(GEMM_ROWS);
            return Some(DeviceLinear {
                context: dw.gemm,
                commands: tiles,
                bytes: tiles * GEMM_ROWS * (q.k() + 4 * q.n_out()),
                slot_bytes: tiles * chain_slot_bytes(self.gemms[dw.gemm].layout.words()),
                width: q.k(),
                role: Role::Linear {
                    reads_image: false,
                    residual_width: None,
                    quantized_input: false,
                    row_widths: None,
                    outputs: q.n_out(),
                },
            });
        }
        let bias = bias.map(|b| program.vector(b));
        let wts = m.aie.get().filter(|a| a.computes(bias, *epilogue))?;
        let d = &wts.rows.design;
        let mut bytes = activation_image_len(d, rows) + output_len(d, rows);
        if let Some(sp) = &wts.spread {
            let r = rows.min(SPREAD_MAX_ROWS);
            bytes = bytes.max(activation_image_len(&sp.design, r) + output_len(&sp.design, r));
        }
        let n = q.n_out();
        // Whether a call may have few enough rows for the decoder mapping.
        let few_rows =
            !(op_rows.per_row == 0 && op_rows.per_pos == 0 && op_rows.constant > SPREAD_MAX_ROWS);
        let exact = d.out_width() == n
            && (!few_rows
                || wts
                    .spread
                    .as_ref()
                    .is_none_or(|s| s.design.out_width() == n));
        // The row widths of its result: the encoder mapping's, and the decoder mapping's for
        // calls of few rows.
        let spread_width = wts
            .spread
            .as_ref()
            .filter(|_| few_rows)
            .map_or(d.out_width(), |s| s.design.out_width());
        Some(DeviceLinear {
            context: self.gemms.len(),
            commands: 1,
            bytes,
            slot_bytes: chain_slot_bytes(wts.rows.layout.words()),
            width: q.k(),
            role: Role::Linear {
                reads_image: true,
                residual_width: exact.then_some(n),
                row_widths: Some([d.out_width(), spread_width]),
                outputs: n,
                quantized_input: self.aie.as_ref().is_some_and(|a| {
                    crate::npu_norm::NormDesign::new(a.target, NormKey::quantize(q.k())).is_ok()
                }),
            },
        })
    }

    /// The chain plan of `stage`: which device linears share a submission.
    fn plan(&self, program: &Program<NpuMatrix>, stage: StageId) -> ChainPlan {
        // The driver's 4 KiB chain buffer bounds a chain: each sub-command's slot is 8 bytes
        // plus its regmap (a GEMM design's 11 words, a norm's or quantize's 15, a fixture
        // tile's its program's), the last slot ending before byte 4096 under every profile.
        let limits = ChainLimits {
            commands: max_chain_len(RegmapLayout::mlir_aie_words(3)),
            bytes: MAX_GROUP_BYTES,
            slot_bytes: CHAIN_BUFFER_BYTES - 4,
            quantize_slot_bytes: chain_slot_bytes(RegmapLayout::mlir_aie_words(NORM_ARGS)),
        };
        let ops = &program.stage(stage).ops;
        // A stage's scratch buffer is not read after the stage: a norm writing it may stay on
        // the device though nothing overwrites it before the stage ends.
        let stage_local = |b: BufferId| program.buffers()[b.0 as usize].stage_local;
        // Every linear that can on our designs first, to see which read a device norm's
        // image or a device quantize; then the fixture programs take back every other linear
        // they can run.
        let designs = ChainPlan::with_stage_local(
            ops,
            |_, op| self.device_linear_of(program, op, false),
            limits,
            stage_local,
        );
        ChainPlan::with_stage_local(
            ops,
            |i, op| {
                // Reading a device norm's image or a device quantize, or the source a device
                // quantize reads (a fixture's i32 result is not rows it can read).
                let on_design = designs.image_of[i].is_some()
                    || designs.quantized[i].is_some()
                    || designs.quantized.contains(&Some(i))
                    || designs.attention.iter().flatten().any(|a| a.contains(i));
                self.device_linear_of(program, op, !on_design)
            },
            limits,
            stage_local,
        )
    }

    /// The longest regmap of a sub-command on the designs' context (GEMM designs, norms,
    /// attention inputs, cache inputs: at most 7 buffer arguments).
    fn design_regmap_words(&self) -> usize {
        if self.aie.is_some() {
            RegmapLayout::mlir_aie_words(NORM_ARGS.max(INPUT_ARGS).max(CACHE_INPUT_ARGS))
        } else {
            RegmapLayout::mlir_aie_words(3)
        }
    }

    /// The longest regmap of any sub-command (fixture programs, our GEMM designs, norms,
    /// attention inputs).
    fn regmap_words(&self) -> usize {
        let design = self.design_regmap_words();
        self.gemms
            .iter()
            .map(|g| g.layout.words())
            .chain(std::iter::once(design))
            .max()
            .unwrap_or(0)
    }

    /// Where member norm `i` of `stage` works (see [`NormRegion`]), its params object at
    /// `params_off`.
    fn norm_region(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        plan: &ChainPlan,
        aie: &AieContext,
        i: usize,
        params_off: usize,
    ) -> Result<NormRegion, BackendError> {
        let ops = &program.stage(stage).ops;
        let (Some(member), Op::LayerNorm { gamma, .. }) = (plan.norms[i], &ops[i]) else {
            return Err(chain_err(format!("op {i} is not a member norm")));
        };
        let d = program.vector(*gamma).len();
        let key = NormKey {
            d,
            residual: member.residual.is_some(),
            norm: true,
        };
        let norm = aie
            .norms
            .iter()
            .find(|n| n.key == key)
            .cloned()
            .ok_or_else(|| chain_err(format!("op {i}: no norm design {key:?} in the context")))?;
        let cu = aie.cu_of_norm(&key).unwrap_or(0);
        // The image holds the norm's rows and every row a reader's design reads.
        let mut rows = norm.design.padded_rows(member.max_rows);
        for (r, img) in plan.image_of.iter().enumerate() {
            let (Some((n, first)), Op::Linear { w, max_rows, .. }) = (img, &ops[r]) else {
                continue;
            };
            if *n != i {
                continue;
            }
            if let Some(wts) = program.matrix(*w).aie.get() {
                let mut p = wts.rows.design.padded_rows((*max_rows).max(1));
                if let Some(sp) = &wts.spread {
                    p = p.max(sp.design.padded_rows((*max_rows).clamp(1, SPREAD_MAX_ROWS)));
                }
                rows = rows.max(first + p);
            }
        }
        Ok(NormRegion {
            image_len: rows * (d + 64),
            x_len: 4 * d * norm.design.padded_rows(member.max_rows),
            max_rows: member.max_rows,
            params_off,
            cu,
            norm,
        })
    }

    /// Where the device quantize that member linear `i` of `stage` reads works: its design
    /// (the plain quantize of the linear's depth), the bytes it reads of its source's C rows
    /// (whole rounds), and its image region (sized for every row the linear's designs read).
    fn quant_region(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        aie: &AieContext,
        i: usize,
    ) -> Result<NormRegion, BackendError> {
        let Op::Linear { w, max_rows, .. } = &program.stage(stage).ops[i] else {
            return Err(chain_err(format!(
                "op {i}: a device quantize reader is not a linear"
            )));
        };
        let m = program.matrix(*w);
        let k = m.cpu.cols();
        let key = NormKey::quantize(k);
        let norm = aie
            .norms
            .iter()
            .find(|n| n.key == key)
            .cloned()
            .ok_or_else(|| {
                chain_err(format!("op {i}: no quantize design {key:?} in the context"))
            })?;
        let cu = aie.cu_of_norm(&key).unwrap_or(0);
        let max_rows = (*max_rows).max(1);
        let mut rows = norm.design.padded_rows(max_rows);
        if let Some(wts) = m.aie.get() {
            rows = rows.max(wts.rows.design.padded_rows(max_rows));
            if let Some(sp) = &wts.spread {
                rows = rows.max(sp.design.padded_rows(max_rows.min(SPREAD_MAX_ROWS)));
            }
        }
        Ok(NormRegion {
            image_len: rows * (k + 64),
            x_len: 4 * k * norm.design.padded_rows(max_rows),
            max_rows,
            params_off: 0,
            cu,
            norm,
        })
    }

    /// Bytes of the C region holding member norm `n`'s residual `r` (of `stage`): every
    /// residual part's whole output (its design's padded rows) at its row offset, and the
    /// norm's whole rounds; at the call's rows (`args`), or at the most rows (`None`).
    #[allow(clippy::too_many_arguments)]
    fn residual_len(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        plan: &ChainPlan,
        norms: &[Option<NormRegion>],
        n: usize,
        args: Option<&StageArgs>,
    ) -> usize {
        let ops = &program.stage(stage).ops;
        let (Some(region), Op::LayerNorm { rows, .. }) = (norms[n].as_ref(), &ops[n]) else {
            return 0;
        };
        let d = region.norm.key.d;
        let norm_rows = args.map_or(region.max_rows, |a| rows.at(a));
        let mut len = 4 * d * region.norm.design.padded_rows(norm_rows);
        for (l, part) in plan.residual_of.iter().enumerate() {
            let (
                Some((m, first)),
                Op::Linear {
                    w, rows, max_rows, ..
                },
            ) = (part, &ops[l])
            else {
                continue;
            };
            let Some(wts) = program.matrix(*w).aie.get().filter(|_| *m == n) else {
                continue;
            };
            let rows = args.map_or((*max_rows).max(1), |a| rows.at(a));
            let mut out = output_len(&wts.rows.design, rows);
            if let Some(sp) = &wts.spread {
                out = out.max(output_len(&sp.design, rows.min(SPREAD_MAX_ROWS)));
            }
            len = len.max(4 * d * first + out);
        }
        len
    }

    /// Region bytes (A, C, fixture row scales, norm inputs, norm images, attention images) of
    /// `group`'s members at their most rows, each region aligned.
    #[allow(clippy::too_many_arguments)]
    fn group_bytes(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        plan: &ChainPlan,
        group: &crate::chain_plan::Group,
        norms: &[Option<NormRegion>],
        quants: &[Option<NormRegion>],
        atts: &[Option<ChainMember>],
    ) -> [usize; 6] {
        let (mut a, mut c, mut scale_rows, mut x, mut img, mut att) = (0, 0, 0, 0, 0, 0);
        for &i in &group.members {
            if let Some(r) = &norms[i] {
                x += r.x_len.next_multiple_of(REGION_ALIGN);
                img += r.image_len.next_multiple_of(REGION_ALIGN);
                continue;
            }
            if let Some(m) = &atts[i] {
                let im = m.programs.im;
                att += im.q_image_len().next_multiple_of(REGION_ALIGN);
                if m.programs.kind == ChainKind::SelfAttention {
                    att += im.kv_image_len().next_multiple_of(REGION_ALIGN);
                }
                let out = im
                    .out_len()
                    .max(quantize_read(plan, quants, group, i, None));
                c += out.next_multiple_of(REGION_ALIGN);
                continue;
            }
            let Op::Linear { w, max_rows, .. } = &program.stage(stage).ops[i] else {
                continue;
            };
            // A member norm's residual part: the first part's C region holds every part's rows
            // (the norm's `r`), the later parts' rows are in it; a member whose result a device
            // quantize reads: its C rows are that op's x.
            let residual = match plan.residual_of[i] {
                Some((_, first)) if first > 0 => None,
                Some((n, _)) => Some(self.residual_len(program, stage, plan, norms, n, None)),
                None => Some(0),
            };
            let residual_rows = residual.map(|r| {
                r.max(quantize_read(plan, quants, group, i, None))
                    .max(attention_read(plan, atts, i))
            });
            if let Some(q) = &quants[i] {
                img += q.image_len.next_multiple_of(REGION_ALIGN);
            }
            let m = program.matrix(*w);
            let rows = (*max_rows).max(1);
            let fixture = m.device.as_ref().filter(|dw| dw.gemm == group.context);
            let (da, dc) = match (fixture, m.aie.get(), &m.cpu) {
                (Some(_), _, Int8OrF32Matrix::Int8(q)) => {
                    let t = rows.div_ceil(GEMM_ROWS) * GEMM_ROWS;
                    scale_rows += rows;
                    (t * q.k(), 4 * t * q.n_out())
                }
                (None, Some(wts), _) => {
                    let d = &wts.rows.design;
                    let (mut da, mut dc) = (activation_image_len(d, rows), output_len(d, rows));
                    if let Some(sp) = &wts.spread {
                        let r = rows.min(SPREAD_MAX_ROWS);
                        da = da.max(activation_image_len(&sp.design, r));
                        dc = dc.max(output_len(&sp.design, r));
                    }
                    (da, dc)
                }
                _ => (0, 0),
            };
            if plan.image_of[i].is_none() && plan.quantized[i].is_none() {
                a += da.next_multiple_of(REGION_ALIGN);
            }
            if let Some(r) = residual_rows {
                c += dc.max(r).next_multiple_of(REGION_ALIGN);
            }
        }
        [a, c, scale_rows, x, img, att]
    }

    /// A stream's device session for `program`: plans, A/C sized for its largest group, a
    /// ring per context with room for its longest chain.
    fn session(
        &self,
        program: &Program<NpuMatrix>,
        aie: Option<Arc<AieContext>>,
    ) -> Result<GemmSession, BackendError> {
        let stages = program.stages().len();
        let plans: Vec<ChainPlan> = (0..stages)
            .map(|s| self.plan(program, StageId(s as u16)))
            .collect();
        // Member norms: their regions and parameter objects (one per gamma / beta / eps).
        let mut objects: Vec<((u16, u16, u32), usize)> = Vec::new();
        let mut params_len = 0usize;
        let mut norms = Vec::with_capacity(stages);
        let mut quants = Vec::with_capacity(stages);
        let mut params_data: Vec<(usize, Vec<u8>)> = Vec::new();
        for (st, plan) in plans.iter().enumerate() {
            let stage = StageId(st as u16);
            let mut q_regions = Vec::with_capacity(plan.quantized.len());
            for (i, l) in plan.quantized.iter().enumerate() {
                q_regions.push(match (l, aie.as_deref()) {
                    (None, _) => None,
                    (Some(_), Some(ctx)) => Some(self.quant_region(program, stage, ctx, i)?),
                    (Some(_), None) => {
                        return Err(chain_err(format!(
                            "op {i}: a device quantize without designs"
                        )))
                    }
                });
            }
            quants.push(q_regions);
            let mut regions = Vec::with_capacity(plan.norms.len());
            for (i, op) in program.stage(stage).ops.iter().enumerate() {
                let (
                    Some(_),
                    Op::LayerNorm {
                        gamma, beta, eps, ..
                    },
                ) = (plan.norms[i], op)
                else {
                    regions.push(None);
                    continue;
                };
                let Some(ctx) = aie.as_deref() else {
                    return Err(chain_err(format!("op {i}: a device norm without designs")));
                };
                let id = (gamma.0, beta.0, eps.to_bits());
                let off = match objects.iter().find(|o| o.0 == id) {
                    Some(o) => o.1,
                    None => {
                        let (g, b) = (program.vector(*gamma), program.vector(*beta));
                        let obj = amanuensis_aie::kernels::norm_quant::param_object(g, b, *eps);
                        let off = params_len.next_multiple_of(REGION_ALIGN);
                        let d = crate::npu_norm::NormDesign::new(
                            EMULATED_TARGET,
                            NormKey {
                                d: g.len(),
                                residual: false,
                                norm: true,
                            },
                        )
                        .map_err(device_err("norm parameters"))?;
                        params_len = off + d.params_len().max(obj.len());
                        objects.push((id, off));
                        params_data.push((off, obj));
                        off
                    }
                };
                regions.push(Some(self.norm_region(program, stage, plan, ctx, i, off)?));
            }
            norms.push(regions);
        }
        // Member attentions: their shape's programs on the designs' context.
        let mut atts = Vec::with_capacity(stages);
        for (st, plan) in plans.iter().enumerate() {
            let ops = &program.stage(StageId(st as u16)).ops;
            let mut row = Vec::with_capacity(ops.len());
            for (i, op) in ops.iter().enumerate() {
                if plan.attention[i].is_none() {
                    row.push(None);
                    continue;
                }
                let member = self
                    .chain_attention_shape(program, op)
                    .zip(aie.as_deref())
                    .and_then(|((im, kind), ctx)| {
                        let (programs, inputs_cu) = ctx.chain_attention(&im, kind)?;
                        Some(ChainMember {
                            programs: programs.clone(),
                            inputs_cu,
                            attend_cu: ctx.cu_of_attention()?,
                        })
                    })
                    .ok_or_else(|| {
                        chain_err(format!("op {i}: a member attention without its programs"))
                    })?;
                row.push(Some(member));
            }
            atts.push(row);
        }
        let mut params = MappedBo::share(&self.device, params_len.max(1))
            .map_err(device_err("allocate norm params"))?;
        for (off, obj) in &params_data {
            params.bytes_mut()[*off..off + obj.len()].copy_from_slice(obj);
        }
        params.flush(0..params_len);
        let contexts = self.gemms.len() + 1;
        let mut chain_len = vec![0usize; contexts];
        let (mut a_len, mut c_len, mut scale_len, mut commands) = (1, 1, 0, 0);
        let (mut nx_len, mut img_len, mut att_len) = (1, 1, 1);
        let (mut c_base, mut scales_base, mut runs, mut done) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (st, plan) in plans.iter().enumerate() {
            // Live groups: (last member, end of their C region, end of their scales).
            let mut live: Vec<(usize, usize, usize)> = Vec::new();
            let (mut cb, mut sb, mut rs) = (Vec::new(), Vec::new(), Vec::new());
            for g in &plan.groups {
                let [a, c, rows, x, img, att] = self.group_bytes(
                    program,
                    StageId(st as u16),
                    plan,
                    g,
                    &norms[st],
                    &quants[st],
                    &atts[st],
                );
                nx_len = nx_len.max(x);
                img_len = img_len.max(img);
                att_len = att_len.max(att);
                let (first, last) = (g.members[0], g.members[g.members.len() - 1]);
                live.retain(|l| l.0 > first);
                let c_off = live.iter().map(|l| l.1).max().unwrap_or(0);
                let s_off = live.iter().map(|l| l.2).max().unwrap_or(0);
                live.push((last, c_off + c, s_off + rows));
                cb.push(c_off);
                sb.push(s_off);
                rs.push(Vec::with_capacity(g.members.len()));
                a_len = a_len.max(a);
                c_len = c_len.max(c_off + c);
                scale_len = scale_len.max(s_off + rows);
                chain_len[g.context] = chain_len[g.context].max(g.commands);
                commands = commands.max(g.commands);
            }
            done.push(vec![false; plan.groups.len()]);
            c_base.push(cb);
            scales_base.push(sb);
            runs.push(rs);
        }
        let rings = (0..contexts)
            .map(|i| {
                let ctx = match self.gemms.get(i) {
                    Some(g) => g.ctx.clone(),
                    None => match &aie {
                        Some(a) => a.ctx.clone(),
                        // No design context: no group runs on it, no ring.
                        None => return Ok(None),
                    },
                };
                CommandRing::with_chains(
                    &self.device,
                    ctx,
                    1,
                    self.timeout,
                    if chain_len[i] > 1 { chain_len[i] } else { 0 },
                )
                .map(Some)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(device_err("create command ring"))?;
        let rings: Vec<CommandRing> = rings.into_iter().flatten().collect();
        let stride = self.regmap_words();
        let unread = plans
            .iter()
            .enumerate()
            .map(|(st, plan)| {
                let width = |op: &Op| match op {
                    Op::Linear { w, .. } => Some(program.matrix(*w).cpu.rows()),
                    Op::LayerNorm { gamma, .. } => Some(program.vector(*gamma).len()),
                    Op::Attention { dims, .. }
                    | Op::AttentionPrepared { dims, .. }
                    | Op::CachedSelfAttention { dims, .. }
                    | Op::SlotSelfAttention { dims, .. } => Some(dims.width()),
                    _ => None,
                };
                let stage_local = |b: BufferId| program.buffers()[b.0 as usize].stage_local;
                let ops = &program.stage(StageId(st as u16)).ops;
                crate::unread_results::unread_results(ops, plan, width, stage_local)
            })
            .collect();
        Ok(GemmSession {
            plans,
            rings,
            aie,
            a: MappedBo::share(&self.device, a_len).map_err(device_err("allocate A"))?,
            a_dirty: DirtyRanges::unknown(a_len, 4 * commands + 8),
            c: MappedBo::share(&self.device, c_len).map_err(device_err("allocate C"))?,
            scales: vec![0.0; scale_len],
            runs,
            c_base,
            scales_base,
            done,
            norms,
            quants,
            params,
            nx: MappedBo::share(&self.device, nx_len).map_err(device_err("allocate norm input"))?,
            nx_dirty: DirtyRanges::unknown(nx_len, 4 * commands + 8),
            img: MappedBo::share(&self.device, img_len)
                .map_err(device_err("allocate norm images"))?,
            atts,
            unread,
            att: MappedBo::share(&self.device, att_len)
                .map_err(device_err("allocate attention images"))?,
            regmaps: vec![0; stride * commands.max(1)],
            cu_masks: Vec::with_capacity(commands),
            cmd_words: Vec::with_capacity(commands),
            stride,
            handles: Vec::with_capacity(3 * commands + 2),
            current: (u16::MAX, 0),
            log: DispatchLog::with_capacity(LOG_CAPACITY),
        })
    }

    /// Submits group `g` of `stage` (begun at its first member): every member's rows
    /// quantized into its A region (members with the same input share one), one sub-command
    /// per design linear or per 128-row tile of a fixture program, one submission (a chain when
    /// there is more than one sub-command), waited for; C invalidated. The members' results are
    /// written into the stage's buffers at their own positions ([`LayerKernels::try_linear`]).
    #[allow(clippy::too_many_arguments)]
    fn run_group<'a>(
        &self,
        s: &mut GemmSession,
        program: &Program<NpuMatrix>,
        stage: StageId,
        g: u32,
        args: &StageArgs,
        input: &dyn Fn(crate::stage::At, usize) -> Option<&'a [f32]>,
        resident: &ResidentImages<'_>,
    ) -> Result<(), BackendError> {
        let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
        let t0 = Instant::now();
        let ops = &program.stage(stage).ops;
        let (st, gi) = (stage.0 as usize, g as usize);
        let plan = &s.plans[st];
        let group = &plan.groups[gi];
        let context = group.context;
        let runs = &mut s.runs[st][gi];
        runs.clear();
        s.cu_masks.clear();
        s.cmd_words.clear();
        s.handles.clear();
        s.done[st][gi] = false;
        let (mut a_cur, mut c_cur, mut scales_cur, mut x_cur, mut img_cur) = (
            0usize,
            s.c_base[st][gi],
            s.scales_base[st][gi],
            0usize,
            0usize,
        );
        let mut att_cur = 0usize;
        let (mut flushed, mut macs) = (0usize, 0u64);
        let (a_addr, c_addr) = (s.a.device_addr(), s.c.device_addr());
        let (nx_addr, params_addr) = (s.nx.device_addr(), s.params.device_addr());
        let img_addr = s.img.device_addr();
        let stride = s.stride;
        for &i in &group.members {
            if let Op::LayerNorm { x, rows, gamma, .. } = &ops[i] {
                // A member norm: x uploaded (its value at the group's start), normalized and
                // quantized by the device into its image region, which its readers take as A.
                let (Some(region), Some(member)) = (s.norms[st][i].as_ref(), plan.norms[i]) else {
                    return Err(chain_err(format!(
                        "op {i}: a member norm without its region"
                    )));
                };
                let rows = rows.at(args);
                if rows > region.max_rows {
                    return Err(chain_err(format!(
                        "op {i}: {rows} rows, its readers declare at most {}",
                        region.max_rows
                    )));
                }
                if rows == 0 {
                    runs.push(MemberRun {
                        norm: true,
                        ..MemberRun::default()
                    });
                    continue;
                }
                let d = program.vector(*gamma).len();
                let xs = input(*x, rows * d).ok_or_else(|| {
                    chain_err(format!(
                        "op {i}: {rows} rows of input do not fit its buffer"
                    ))
                })?;
                let read = 4 * d * region.norm.design.padded_rows(rows);
                let x_off = match member.x_from {
                    // x is what an earlier member norm of the same rows left in its x region
                    // (its x_out, every residual before this norm's added): nothing to upload.
                    Some(n) => {
                        let nm = plan.member[n].map_or(usize::MAX, |m| m.1 as usize);
                        let run = runs
                            .get(nm)
                            .filter(|r| r.norm && r.rows == rows)
                            .ok_or_else(|| {
                                chain_err(format!("op {i}: its x's norm (op {n}) did not run"))
                            })?;
                        let room = s.norms[st][n].as_ref().map_or(0, |r| r.x_len);
                        if read > room {
                            return Err(chain_err(format!(
                                "op {i}: reads {read} bytes of op {n}'s x region of {room}"
                            )));
                        }
                        run.x_off
                    }
                    None => {
                        let x_off = x_cur;
                        x_cur = (x_off + region.x_len).next_multiple_of(REGION_ALIGN);
                        // The stream for `rows` reads whole rounds of x: their padding rows
                        // are zero where the host wrote last (the rest of the region is never
                        // read by this call). Padding rows the device's x_out wrote keep its
                        // finite values (x + r of rows nobody reads; each row is its own), as
                        // clearing them would upload the whole round every call.
                        let used = 4 * rows * d;
                        // The device wrote x_out over these lines (whole rounds) last time:
                        // drop the CPU's copy before storing, so no stale line can hide a store
                        // of the bytes it holds (x written again as it was) or be written back.
                        s.nx.flush(x_off..x_off + read);
                        let end = s
                            .nx_dirty
                            .prepare(s.nx.bytes_mut(), x_off..x_off + read, used);
                        s.nx.bytes_mut()[x_off..x_off + used]
                            .copy_from_slice(bytemuck::cast_slice(xs));
                        s.nx.flush(x_off..end);
                        flushed += end - x_off;
                        x_off
                    }
                };
                // The image in its own BO, which only the device writes (not in A: the
                // host-quantized regions there keep their known-zero padding).
                let a_off = img_cur;
                img_cur = (a_off + region.image_len).next_multiple_of(REGION_ALIGN);
                let r_addr = match member.residual {
                    Some(l) => {
                        // `r`: the residual parts' results, each at its row offset of the
                        // first part's C region, covering the norm's rows in order.
                        let lm = plan.member[l].map_or(usize::MAX, |m| m.1 as usize);
                        let base = runs.get(lm).map_or(usize::MAX, |r| r.c_off);
                        let mut covered = 0;
                        for (m, &p) in group.members.iter().enumerate() {
                            let Some((_, first)) = plan.residual_of[p].filter(|r| r.0 == i) else {
                                continue;
                            };
                            let run = runs
                                .get(m)
                                .filter(|r| {
                                    !r.norm
                                        && !r.fixture
                                        && r.width == d
                                        && first == covered
                                        && r.c_off == base + 4 * d * first
                                })
                                .ok_or_else(|| {
                                    chain_err(format!(
                                        "op {i}: its residual part op {p} did not run at row \
                                         {first} of its region"
                                    ))
                                })?;
                            covered += run.rows;
                        }
                        if covered != rows {
                            return Err(chain_err(format!(
                                "op {i}: its residual parts cover {covered} of its {rows} rows"
                            )));
                        }
                        c_addr + base as u64
                    }
                    None => nx_addr + x_off as u64,
                };
                let Some((instr_addr, instr_handle, instr_words)) = region.norm.stream(rows) else {
                    return Err(chain_err(format!("op {i}: no norm stream for {rows} rows")));
                };
                let j = s.cu_masks.len();
                region
                    .norm
                    .layout
                    .write(
                        MLIR_AIE_OPCODE_TXN,
                        instr_addr,
                        instr_words,
                        &[
                            nx_addr + x_off as u64,
                            r_addr,
                            params_addr + region.params_off as u64,
                            img_addr + a_off as u64,
                            nx_addr + x_off as u64,
                        ],
                        &mut s.regmaps[j * stride..(j + 1) * stride],
                    )
                    .map_err(|e| chain_err(format!("command: {e}")))?;
                s.cu_masks.push(1 << region.cu);
                s.cmd_words.push(region.norm.layout.words());
                s.handles.push(instr_handle);
                runs.push(MemberRun {
                    rows,
                    a_off,
                    x_off,
                    norm: true,
                    ..MemberRun::default()
                });
                continue;
            }
            if let Op::CachedSelfAttention {
                cache, slot, dims, ..
            } = &ops[i]
            {
                // A member self-attention over a K/V cache: its first step writes the Q image
                // from the q member's C rows and appends the k and v members' C rows to the
                // slot's image in the cache BO at the call's position (the position patched
                // into its destination addresses); the host writes only the Q headers (the
                // causal mask from `pos`). The attention reads the slot's image, its rows go
                // row-major into its C region.
                let (Some(m), Some(src)) = (s.atts[st][i].as_ref(), plan.attention[i]) else {
                    return Err(chain_err(format!(
                        "op {i}: a member attention without its programs"
                    )));
                };
                let Some((k_src, v_src)) = src.kv else {
                    return Err(chain_err(format!(
                        "op {i}: a cache attention without k and v"
                    )));
                };
                let (w, n_q, pos) = (dims.width(), args.rows, args.pos);
                let (cache_addr, cache_handle, slot_len, slots, keys) =
                    (resident.cache)(cache.0 as usize).ok_or_else(|| {
                        chain_err(format!("op {i}: its K/V cache has no device image"))
                    })?;
                let positions = program.key_value_caches()[cache.0 as usize].positions;
                // The sources' rows: `w` outputs each, all `row_stride` f32 apart.
                let mut c_src = [0u64; 3];
                let mut row_stride = 0;
                for ((c, l), want) in c_src.iter_mut().zip([src.q, k_src, v_src]).zip([n_q; 3]) {
                    let lm = plan.member[l].map_or(usize::MAX, |m| m.1 as usize);
                    let run = runs
                        .get(lm)
                        .filter(|r| r.rows == want && !r.fixture && !r.norm && r.width >= w)
                        .filter(|r| row_stride == 0 || r.width == row_stride)
                        .ok_or_else(|| {
                            chain_err(format!(
                                "op {i}: its input's source (op {l}) did not run {want} rows of \
                                 width {w} (in rows as wide as the other sources')"
                            ))
                        })?;
                    row_stride = run.width;
                    *c = c_addr + run.c_off as u64;
                }
                let Some((im, (in_addr, in_handle, in_words), (at_addr, at_handle, at_words), n_w)) =
                    m.programs.cached(n_q, row_stride).filter(|_| n_q > 0)
                else {
                    return Err(chain_err(format!(
                        "op {i}: no cache attention streams for {n_q} new rows {row_stride} apart"
                    )));
                };
                if *slot >= slots || pos + n_q > positions || pos + n_w > keys {
                    return Err(chain_err(format!(
                        "op {i}: {n_q} rows at position {pos} of slot {slot}, the cache holds \
                         {slots} slots of {positions} positions"
                    )));
                }
                let att_addr = s.att.device_addr();
                let q_off = att_cur;
                att_cur = (q_off + im.q_image_len()).next_multiple_of(REGION_ALIGN);
                let header = im.header(n_q, pos + n_q, Some(pos));
                flushed += write_q_headers(&mut s.att, &im, q_off, &header);
                let q_img = att_addr + q_off as u64;
                let image = cache_addr + (slot * slot_len) as u64;
                let at_pos = |bytes_per_row: usize| image + (bytes_per_row * pos) as u64;
                let c_off = c_cur;
                let out_len =
                    im.out_len()
                        .max(quantize_read(plan, &s.quants[st], group, i, Some(n_q)));
                c_cur = (c_off + out_len).next_multiple_of(REGION_ALIGN);
                let head = amanuensis_aie::kernels::attention::HEAD_DIM;
                push_attention_commands(
                    (&mut s.regmaps, &mut s.cu_masks, &mut s.cmd_words),
                    stride,
                    m,
                    (
                        in_addr,
                        in_words,
                        &[
                            c_src[0],
                            c_src[1],
                            c_src[2],
                            q_img,
                            at_pos(head),
                            at_pos(4),
                            at_pos(2 * head),
                        ],
                    ),
                    (at_addr, at_words, &[q_img, image, c_addr + c_off as u64]),
                )?;
                s.handles.extend([in_handle, at_handle, cache_handle]);
                let keys =
                    (pos + n_q).next_multiple_of(amanuensis_aie::kernels::attention::KEY_CHUNK);
                macs += (2 * im.heads * im.q_rows * keys * head) as u64;
                runs.push(MemberRun {
                    rows: n_q,
                    c_off,
                    width: w,
                    attention: true,
                    ..MemberRun::default()
                });
                continue;
            }
            if let Op::Attention { dims, .. } | Op::AttentionPrepared { dims, .. } = &ops[i] {
                // A member attention: its first step writes the Q (and K/V) images from the
                // q (k, v) members' C rows (the host writes only the Q headers; prepared K/V
                // are on the device already), the attention writes its rows (row-major) into
                // its C region, where a device quantize reads them; the host writes them back
                // at its own position.
                let (Some(m), Some(src)) = (s.atts[st][i].as_ref(), plan.attention[i]) else {
                    return Err(chain_err(format!(
                        "op {i}: a member attention without its programs"
                    )));
                };
                let w = dims.width();
                let n_q = dims.q_len.at(args);
                let (n_keys, prepared_kv) = match &ops[i] {
                    Op::AttentionPrepared { kv, .. } => {
                        let (addr, handle, rows) =
                            (resident.prepared)(kv.0 as usize).ok_or_else(|| {
                                chain_err(format!("op {i}: its keys/values are not prepared"))
                            })?;
                        (rows, Some((addr, handle)))
                    }
                    _ => {
                        let n_keys = dims.kv_len.at(args);
                        if n_q != dims.max_q_len || n_keys != dims.max_kv_len {
                            return Err(chain_err(format!(
                                "op {i}: {n_q} queries over {n_keys} keys, its programs move \
                                 {} over {}",
                                dims.max_q_len, dims.max_kv_len
                            )));
                        }
                        (n_keys, None)
                    }
                };
                // The sources' rows: `w` outputs each, all `row_stride` f32 apart.
                let mut c_src = [0u64; 3];
                let mut row_stride = 0;
                let sources = [Some(src.q), src.kv.map(|kv| kv.0), src.kv.map(|kv| kv.1)];
                for ((slot, l), want) in c_src.iter_mut().zip(sources).zip([n_q, n_keys, n_keys]) {
                    let Some(l) = l else { continue };
                    let lm = plan.member[l].map_or(usize::MAX, |m| m.1 as usize);
                    let run = runs
                        .get(lm)
                        .filter(|r| r.rows == want && !r.fixture && !r.norm && r.width >= w)
                        .filter(|r| row_stride == 0 || r.width == row_stride)
                        .ok_or_else(|| {
                            chain_err(format!(
                                "op {i}: its input's source (op {l}) did not run {want} rows of \
                                 width {w} (in rows as wide as the other sources')"
                            ))
                        })?;
                    row_stride = run.width;
                    *slot = c_addr + run.c_off as u64;
                }
                let Some((im, (in_addr, in_handle, in_words), (at_addr, at_handle, at_words))) = m
                    .programs
                    .bucket(n_q, row_stride)
                    .filter(|_| n_q > 0 && n_keys > 0)
                else {
                    return Err(chain_err(format!(
                        "op {i}: no attention streams for {n_q} queries over {n_keys} keys, \
                         sources {row_stride} apart"
                    )));
                };
                let att_addr = s.att.device_addr();
                let q_off = att_cur;
                att_cur = (q_off + im.q_image_len()).next_multiple_of(REGION_ALIGN);
                let (kv_img, kv_handle) = match prepared_kv {
                    Some(kv) => kv,
                    None => {
                        let kv_off = att_cur;
                        att_cur = (kv_off + im.kv_image_len()).next_multiple_of(REGION_ALIGN);
                        (att_addr + kv_off as u64, s.att.handle())
                    }
                };
                let header = im.header(n_q, n_keys, None);
                flushed += write_q_headers(&mut s.att, &im, q_off, &header);
                let q_img = att_addr + q_off as u64;
                let c_off = c_cur;
                let out_len =
                    im.out_len()
                        .max(quantize_read(plan, &s.quants[st], group, i, Some(n_q)));
                c_cur = (c_off + out_len).next_multiple_of(REGION_ALIGN);
                let first_args = [c_src[0], c_src[1], c_src[2], q_img, kv_img];
                let first: &[u64] = match m.programs.kind {
                    ChainKind::SelfAttention => &first_args,
                    ChainKind::Prepared => &[c_src[0], q_img],
                    ChainKind::Cached => {
                        return Err(chain_err(format!(
                            "op {i}: a cache attention's programs on another op"
                        )))
                    }
                };
                push_attention_commands(
                    (&mut s.regmaps, &mut s.cu_masks, &mut s.cmd_words),
                    stride,
                    m,
                    (in_addr, in_words, first),
                    (at_addr, at_words, &[q_img, kv_img, c_addr + c_off as u64]),
                )?;
                s.handles.extend([in_handle, at_handle]);
                if prepared_kv.is_some() {
                    s.handles.push(kv_handle);
                }
                // Q·Kᵀ and P·V over whole query groups and key chunks.
                let keys = n_keys.next_multiple_of(amanuensis_aie::kernels::attention::KEY_CHUNK);
                macs += (2
                    * im.heads
                    * im.q_rows
                    * keys
                    * amanuensis_aie::kernels::attention::HEAD_DIM) as u64;
                runs.push(MemberRun {
                    rows: n_q,
                    c_off,
                    width: w,
                    attention: true,
                    ..MemberRun::default()
                });
                continue;
            }
            let Op::Linear {
                x,
                rows,
                max_rows,
                w,
                bias,
                epilogue,
                ..
            } = &ops[i]
            else {
                return Err(chain_err(format!("op {i} of a group is not a linear")));
            };
            let rows = rows.at(args);
            if rows > *max_rows {
                // The group's regions are sized for the declared rows.
                return Err(chain_err(format!(
                    "op {i}: {rows} rows, the program declares at most {max_rows}"
                )));
            }
            let m = program.matrix(*w);
            let Int8OrF32Matrix::Int8(q) = &m.cpu else {
                return Err(chain_err(format!("op {i}: not an INT8 matrix")));
            };
            let (k, n) = (q.k(), q.n_out());
            if rows == 0 {
                runs.push(MemberRun::default());
                continue;
            }
            let xs = input(*x, rows * k).ok_or_else(|| {
                chain_err(format!(
                    "op {i}: {rows} rows of input do not fit its buffer"
                ))
            })?;
            let shared = runs
                .iter()
                .find(|r| r.x == Some(*x) && r.rows == rows)
                .copied();
            if let Some(dw) = m.device.as_ref().filter(|dw| dw.gemm == context) {
                let gp = &self.gemms[dw.gemm];
                let tiles = rows.div_ceil(GEMM_ROWS);
                let layout = (k, tiles * GEMM_ROWS);
                let (a_off, scales_off) = match shared.filter(|r| r.fixture && r.layout == layout) {
                    Some(r) => (r.a_off, r.scales_off),
                    None => {
                        let a_off = a_cur;
                        let region = a_off..a_off + tiles * GEMM_ROWS * k;
                        a_cur = region.end.next_multiple_of(REGION_ALIGN);
                        let end = s.a_dirty.prepare(s.a.bytes_mut(), region, rows * k);
                        let a: &mut [i8] =
                            bytemuck::cast_slice_mut(&mut s.a.bytes_mut()[a_off..a_off + rows * k]);
                        let sc = &mut s.scales[scales_cur..scales_cur + rows];
                        for (r, codes) in a.chunks_exact_mut(k).enumerate() {
                            sc[r] = quantize_row(&xs[r * k..(r + 1) * k], codes);
                        }
                        s.a.flush(a_off..end);
                        flushed += end - a_off;
                        scales_cur += rows;
                        (a_off, scales_cur - rows)
                    }
                };
                let c_off = c_cur;
                c_cur = (c_off + 4 * tiles * GEMM_ROWS * n).next_multiple_of(REGION_ALIGN);
                for t in 0..tiles {
                    let j = s.cu_masks.len();
                    gp.layout
                        .write(
                            MLIR_AIE_OPCODE_TXN,
                            gp.instr.device_addr(),
                            gp.instr_words,
                            &[
                                a_addr + (a_off + t * GEMM_ROWS * k) as u64,
                                dw.b.device_addr(),
                                c_addr + (c_off + 4 * t * GEMM_ROWS * n) as u64,
                            ],
                            &mut s.regmaps[j * stride..(j + 1) * stride],
                        )
                        .map_err(|e| chain_err(format!("command: {e}")))?;
                    s.cu_masks.push(1);
                    s.cmd_words.push(gp.layout.words());
                }
                s.handles.extend([gp.instr.handle(), dw.b.handle()]);
                macs += (tiles * GEMM_ROWS * k * n) as u64;
                runs.push(MemberRun {
                    rows,
                    x: Some(*x),
                    layout,
                    a_off,
                    c_off,
                    width: n,
                    scales_off,
                    fixture: true,
                    norm: false,
                    x_off: 0,
                    attention: false,
                    unread: false,
                });
                continue;
            }
            let bias = bias.map(|b| program.vector(b));
            let wts = m
                .aie
                .get()
                .filter(|a| a.computes(bias, *epilogue))
                .ok_or_else(|| chain_err(format!("op {i}: no design computes it")))?;
            let gd = wts.design_for(rows);
            let (Some((instr_addr, instr_handle, instr_words)), Some(cu)) = (
                gd.stream(rows),
                s.aie.as_ref().and_then(|c| c.cu_of(&gd.key)),
            ) else {
                return Err(chain_err(format!(
                    "op {i}: the design {:?} has no stream for {rows} rows or no CU here",
                    gd.key
                )));
            };
            let d = &gd.design;
            let row_bytes = d.activation_row_bytes();
            let layout = (row_bytes, d.padded_rows(rows));
            let image = match (plan.image_of[i], plan.quantized[i]) {
                // A member norm's image (rows `first..` of it): nothing to quantize.
                (Some((norm, first)), _) => {
                    let nm = plan.member[norm].map_or(usize::MAX, |m| m.1 as usize);
                    let run = runs
                        .get(nm)
                        .filter(|r| r.norm && r.rows > 0)
                        .ok_or_else(|| {
                            chain_err(format!("op {i}: its norm (op {norm}) did not run"))
                        })?;
                    Some(run.a_off + first * row_bytes)
                }
                // The device quantize of member `l`'s result (its C rows, this linear's input)
                // into an image region: one sub-command before this linear's.
                (None, Some(l)) => {
                    let q = s.quants[st][i].as_ref().ok_or_else(|| {
                        chain_err(format!("op {i}: a quantized input without its region"))
                    })?;
                    let lm = plan.member[l].map_or(usize::MAX, |m| m.1 as usize);
                    let run = runs
                        .get(lm)
                        .filter(|r| r.rows == rows && !r.fixture && !r.norm && r.width == k)
                        .ok_or_else(|| {
                            chain_err(format!(
                                "op {i}: its input's source (op {l}) did not run {rows} rows of \
                                 width {k}"
                            ))
                        })?;
                    let Some((q_addr, q_handle, q_words)) = q.norm.stream(rows) else {
                        return Err(chain_err(format!(
                            "op {i}: no quantize stream for {rows} rows"
                        )));
                    };
                    let off = img_cur;
                    img_cur = (off + q.image_len).next_multiple_of(REGION_ALIGN);
                    let src = c_addr + run.c_off as u64;
                    let j = s.cu_masks.len();
                    // x = the source's rows; r, the parameters and x_out are not read.
                    q.norm
                        .layout
                        .write(
                            MLIR_AIE_OPCODE_TXN,
                            q_addr,
                            q_words,
                            &[src, src, params_addr, img_addr + off as u64, src],
                            &mut s.regmaps[j * stride..(j + 1) * stride],
                        )
                        .map_err(|e| chain_err(format!("command: {e}")))?;
                    s.cu_masks.push(1 << q.cu);
                    s.cmd_words.push(q.norm.layout.words());
                    s.handles.push(q_handle);
                    Some(off)
                }
                (None, None) => None,
            };
            let a_off = match image.or(shared
                .filter(|r| !r.fixture && r.layout == layout)
                .map(|r| r.a_off))
            {
                // A norm's image, or the same input, rows and activation-image geometry as
                // an earlier member: the same image.
                Some(a_off) => a_off,
                None => {
                    let a_off = a_cur;
                    let region = a_off..a_off + activation_image_len(d, rows);
                    a_cur = region.end.next_multiple_of(REGION_ALIGN);
                    let used = rows * row_bytes;
                    let end = s.a_dirty.prepare(s.a.bytes_mut(), region, used);
                    let a = &mut s.a.bytes_mut()[a_off..a_off + used];
                    // Rows: k codes, the row's scale (f32 LE), zeros; the padding rows zero.
                    for (r, row) in a.chunks_exact_mut(row_bytes).enumerate() {
                        let (codes, tail) = row.split_at_mut(k);
                        let scale =
                            quantize_row(&xs[r * k..(r + 1) * k], bytemuck::cast_slice_mut(codes));
                        tail[..4].copy_from_slice(&scale.to_le_bytes());
                        tail[4..].fill(0);
                    }
                    s.a.flush(a_off..end);
                    flushed += end - a_off;
                    a_off
                }
            };
            // A norm's image is in the image BO.
            let a_base = if image.is_some() { img_addr } else { a_addr };
            let c_off = match plan.residual_of[i] {
                // A later residual part of a member norm: its rows of the region the first
                // part's C region holds (the norm's `r`, every part at its row offset).
                Some((norm, first)) if first > 0 => {
                    let base = plan.norms[norm]
                        .and_then(|m| m.residual)
                        .and_then(|p| plan.member[p])
                        .and_then(|m| runs.get(m.1 as usize))
                        .filter(|r| r.rows > 0 && !r.norm && !r.fixture && r.width == n)
                        .ok_or_else(|| {
                            chain_err(format!(
                                "op {i}: the first residual part of its norm (op {norm}) did \
                                 not run"
                            ))
                        })?;
                    base.c_off + 4 * n * first
                }
                part => {
                    let c_off = c_cur;
                    // A norm's residual (the first part): its C region holds the norm's
                    // whole rounds of `r` and every part's whole output at its row offset.
                    let r_len = part
                        .map_or(0, |(norm, _)| {
                            self.residual_len(program, stage, plan, &s.norms[st], norm, Some(args))
                        })
                        .max(quantize_read(plan, &s.quants[st], group, i, Some(rows)))
                        .max(attention_read(plan, &s.atts[st], i));
                    c_cur = (c_off + output_len(d, rows).max(r_len)).next_multiple_of(REGION_ALIGN);
                    c_off
                }
            };
            let j = s.cu_masks.len();
            gd.layout
                .write(
                    MLIR_AIE_OPCODE_TXN,
                    instr_addr,
                    instr_words,
                    &[
                        a_base + a_off as u64,
                        wts.image.device_addr(),
                        c_addr + c_off as u64,
                    ],
                    &mut s.regmaps[j * stride..(j + 1) * stride],
                )
                .map_err(|e| chain_err(format!("command: {e}")))?;
            s.cu_masks.push(1 << cu);
            s.cmd_words.push(gd.layout.words());
            s.handles.extend([instr_handle, wts.image.handle()]);
            macs += (d.padded_rows(rows) * k * d.out_width()) as u64;
            runs.push(MemberRun {
                rows,
                // An image reader's region is its norm's: no later member shares it.
                x: image.is_none().then_some(*x),
                layout,
                a_off,
                c_off,
                width: d.out_width(),
                scales_off: 0,
                fixture: false,
                norm: false,
                x_off: 0,
                attention: false,
                unread: false,
            });
        }
        // Results no host op reads stay on the device: neither invalidated nor written back.
        for (r, &i) in runs.iter_mut().zip(&group.members) {
            r.unread = s.unread[st][i];
        }
        let c_bytes: usize = runs
            .iter()
            .filter(|r| r.rows > 0 && !r.norm && !r.unread)
            .map(|r| 4 * r.rows * r.width)
            .sum();
        let commands = s.cu_masks.len();
        if commands == 0 {
            s.done[st][gi] = true;
            return Ok(());
        }
        s.handles.extend([s.a.handle(), s.c.handle()]);
        if x_cur > 0 || img_cur > 0 {
            s.handles
                .extend([s.nx.handle(), s.params.handle(), s.img.handle()]);
        }
        if att_cur > 0 {
            s.handles.push(s.att.handle());
        }
        let t1 = Instant::now();
        let Some(ring) = s.rings.get_mut(context) else {
            return Err(chain_err(format!("no command ring for context {context}")));
        };
        let (regmaps, masks, words) = (&s.regmaps, &s.cu_masks, &s.cmd_words);
        let command = |j: usize| StartCu {
            cu_mask: masks[j],
            regmap: &regmaps[j * stride..j * stride + words[j]],
        };
        let ticket = if commands == 1 {
            ring.submit(&Packet::StartCu(command(0)), &s.handles)
        } else {
            ring.submit_chain((0..commands).map(command), &s.handles)
        }
        .map_err(device_err("submit GEMM"))?;
        let t2 = Instant::now();
        if let Err(e) = ring.wait(ticket) {
            let _ = ring.drain();
            // The emulator says why a command failed (a device's reason is the error itself).
            let seq = match &e {
                NpuError::ChainFailed { seq, .. } | NpuError::CommandFailed { seq, .. } => {
                    Some(format!("seq {seq}: "))
                }
                _ => None,
            };
            let mut err = device_err("wait for GEMM")(e);
            let why = seq.and_then(|seq| {
                let errors = self.emulator_command_errors();
                errors.into_iter().rev().find(|w| w.starts_with(&seq))
            });
            if let (BackendError::Device { reason, .. }, Some(why)) = (&mut err, why) {
                reason.push_str(&format!(" (emulator: {why})"));
            }
            return Err(err);
        }
        let t3 = Instant::now();
        let runs = &s.runs[st][gi];
        for r in runs {
            if r.rows > 0 && !r.norm && !r.unread {
                s.c.flush(r.c_off..r.c_off + 4 * r.rows * r.width);
            }
        }
        let t4 = Instant::now();
        s.done[st][gi] = true;
        let record = DispatchRecord {
            bytes: (flushed + c_bytes) as u64,
            bytes_out: c_bytes as u64,
            flush_ns: ns(t0, t1),
            submit_ns: ns(t1, t2),
            wait_ns: ns(t2, t3),
            invalidate_ns: ns(t3, t4),
            macs,
        };
        s.log.record(record);
        let c = &self.counters;
        c.submissions.fetch_add(1, Ordering::Relaxed);
        c.device_linears.fetch_add(
            runs.iter()
                .filter(|r| r.rows > 0 && !r.norm && !r.attention)
                .count() as u64,
            Ordering::Relaxed,
        );
        c.bytes_to_device
            .fetch_add(flushed as u64, Ordering::Relaxed);
        c.bytes_from_device
            .fetch_add(c_bytes as u64, Ordering::Relaxed);
        c.device_ns.fetch_add(ns(t1, t3), Ordering::Relaxed);
        Ok(())
    }

    /// Writes member `member`'s result (of the group last submitted) into `out`: our design's
    /// f32 rows copied (`AddInto`: added), a fixture program's accumulators dequantized as
    /// the CPU INT8 path does.
    #[allow(clippy::too_many_arguments)]
    fn write_back(
        s: &GemmSession,
        (stage, group, member): (usize, usize, usize),
        rows: usize,
        q: &QuantMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let r = s.runs[stage][group]
            .get(member)
            .ok_or_else(|| chain_err(format!("member {member} of group {group} did not run")))?;
        if r.rows != rows {
            return Err(chain_err(format!(
                "member {member} ran {} rows, the op has {rows}",
                r.rows
            )));
        }
        if rows == 0 || r.unread {
            // Unread: no host op reads `out` before it is overwritten (or after the stage).
            return Ok(());
        }
        let n = q.n_out();
        let bytes = &s.c.bytes()[r.c_off..r.c_off + 4 * rows * r.width];
        if r.fixture {
            let c: &[i32] = bytemuck::cast_slice(bytes);
            for (row, acc) in c.chunks_exact(n).enumerate() {
                dequantize_into(
                    &mut out[row * n..(row + 1) * n],
                    acc,
                    s.scales[r.scales_off + row],
                    q.scales(),
                    bias,
                    epilogue,
                );
            }
        } else {
            let c: &[f32] = bytemuck::cast_slice(bytes);
            for (o, v) in out[..rows * n]
                .chunks_exact_mut(n)
                .zip(c.chunks_exact(r.width))
            {
                match epilogue {
                    Epilogue::AddInto => o.iter_mut().zip(v).for_each(|(o, v)| *o += v),
                    Epilogue::Store | Epilogue::Gelu => o.copy_from_slice(&v[..n]),
                }
            }
        }
        Ok(())
    }

    /// The current op's run when it is a member attention whose group ran it with `len`
    /// values of result (`rows · width`).
    fn chained_attention_run(s: &GemmSession, len: usize) -> Option<MemberRun> {
        let (stage, op) = s.current;
        let st = stage as usize;
        s.plans.get(st)?.attention.get(op)?.as_ref()?;
        let (g, m) = s.plans[st].member.get(op).copied().flatten()?;
        if !*s.done.get(st)?.get(g as usize)? {
            return None;
        }
        let r = *s.runs.get(st)?.get(g as usize)?.get(m as usize)?;
        (r.attention && r.rows * r.width == len).then_some(r)
    }

    /// The device (emulated or real).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the device is the emulator.
    pub fn emulated(&self) -> bool {
        self.device.backend() == DriverBackend::Emulated
    }

    /// `(K, N)` of every loaded program.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        self.gemms.iter().map(|g| (g.k, g.n)).collect()
    }

    /// Totals over every workspace so far.
    pub fn stats(&self) -> NpuStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let attention = self.attention_stats().unwrap_or_default();
        NpuStats {
            submissions: l(&c.submissions) + attention.submissions,
            device_linears: l(&c.device_linears),
            bytes_to_device: l(&c.bytes_to_device) + attention.bytes_to_device,
            bytes_from_device: l(&c.bytes_from_device) + attention.bytes_from_device,
            device_ns: l(&c.device_ns) + attention.device_ns,
            weight_bytes: l(&c.weight_bytes),
        }
    }

    /// The matrix for `q`: uploaded in B layout when a program has its `(K, N)`.
    fn load_matrix(&self, q: QuantMatrix) -> Result<NpuMatrix, BackendError> {
        let (k, n) = (q.k(), q.n_out());
        let device = match self.gemms.iter().position(|g| (g.k, g.n) == (k, n)) {
            None => None,
            Some(gemm) => {
                let mut b =
                    MappedBo::share(&self.device, k * n).map_err(device_err("allocate weights"))?;
                let bytes = b.bytes_mut();
                for j in 0..n {
                    for kk in 0..k {
                        bytes[kk * n + j] = q.get(j, kk) as u8;
                    }
                }
                b.flush(0..k * n);
                self.counters
                    .weight_bytes
                    .fetch_add((k * n) as u64, Ordering::Relaxed);
                Some(DeviceWeights { gemm, b })
            }
        };
        Ok(NpuMatrix {
            cpu: self.cpu.matrix_from_quantized(q),
            device,
            aie: OnceLock::new(),
        })
    }

    /// Runs every program once on fixed pseudo-random int8 A and B (B in its own buffer) and
    /// checks `C == A·B` exactly against a host reference: the check `--device auto` makes
    /// before it takes the NPU. Not counted in [`NpuBackend::stats`].
    pub fn self_test(&self) -> Result<(), BackendError> {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 56) as u8 as i8
        };
        for g in &self.gemms {
            let (k, n) = (g.k, g.n);
            let share = |len| MappedBo::share(&self.device, len).map_err(device_err("self-test"));
            let (mut a, mut b, c) = (
                share(GEMM_ROWS * k)?,
                share(k * n)?,
                share(4 * GEMM_ROWS * n)?,
            );
            let bb: &mut [i8] = bytemuck::cast_slice_mut(b.bytes_mut());
            bb.iter_mut().for_each(|v| *v = next().max(-127));
            b.flush(0..k * n);
            let aa: &mut [i8] = bytemuck::cast_slice_mut(a.bytes_mut());
            aa.iter_mut().for_each(|v| *v = next().max(-127));
            a.flush(0..GEMM_ROWS * k);
            c.flush(0..4 * GEMM_ROWS * n);
            let mut regmap = vec![0u32; g.layout.words()];
            g.layout
                .write(
                    MLIR_AIE_OPCODE_TXN,
                    g.instr.device_addr(),
                    g.instr_words,
                    &[a.device_addr(), b.device_addr(), c.device_addr()],
                    &mut regmap,
                )
                .map_err(|e| chain_err(format!("self-test command: {e}")))?;
            let mut ring = CommandRing::new(&self.device, g.ctx.clone(), 1, self.timeout)
                .map_err(device_err("self-test"))?;
            let handles = [g.instr.handle(), a.handle(), b.handle(), c.handle()];
            let ticket = ring
                .submit(
                    &Packet::StartCu(StartCu {
                        cu_mask: 1,
                        regmap: &regmap,
                    }),
                    &handles,
                )
                .map_err(device_err("self-test submit"))?;
            ring.wait(ticket).map_err(device_err("self-test wait"))?;
            c.flush(0..4 * GEMM_ROWS * n);
            let a: &[i8] = bytemuck::cast_slice(&a.bytes()[..GEMM_ROWS * k]);
            let cc: &[i32] = bytemuck::cast_slice(&c.bytes()[..4 * GEMM_ROWS * n]);
            let bb: &[i8] = bytemuck::cast_slice(b.bytes());
            let mut want = vec![0i32; n];
            for r in 0..GEMM_ROWS {
                want.fill(0);
                for (kk, &x) in a[r * k..(r + 1) * k].iter().enumerate() {
                    for (o, &y) in want.iter_mut().zip(&bb[kk * n..(kk + 1) * n]) {
                        *o += x as i32 * y as i32;
                    }
                }
                if let Some(j) = (0..n).find(|&j| cc[r * n + j] != want[j]) {
                    return Err(BackendError::Device {
                        backend: "npu-int8",
                        op: "self-test",
                        reason: format!(
                            "K{k}×N{n}: C[{r}, {j}] = {} on the device, A·B = {}",
                            cc[r * n + j],
                            want[j]
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

impl NpuScratch {
    /// This stream's dispatch records (one per submission), if it has a device session.
    pub fn dispatch_log(&self) -> Option<&DispatchLog> {
        self.session.as_ref().map(|s| &s.log)
    }
}

impl LayerKernels for NpuBackend {
    type Matrix = NpuMatrix;
    type KeyValues = Int8KeyValues;
    type Scratch = NpuScratch;
    type KeyValueCache = Int8KeyValueCache;

    fn name(&self) -> &'static str {
        if self.emulated() {
            "npu-emu-int8"
        } else {
            "npu-int8"
        }
    }

    fn default_threads(&self) -> usize {
        LayerKernels::default_threads(&self.cpu)
    }

    /// A host-only matrix (the device copy is made by [`Backend::matrix`]).
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> NpuMatrix {
        NpuMatrix {
            cpu: LayerKernels::matrix(&self.cpu, data, rows, cols),
            device: None,
            aie: OnceLock::new(),
        }
    }

    /// A host-only matrix (the device copy is made by [`Backend::matrix_q8`]).
    fn matrix_q8(&self, q: QuantMatrix) -> NpuMatrix {
        NpuMatrix {
            cpu: self.cpu.matrix_from_quantized(q),
            device: None,
            aie: OnceLock::new(),
        }
    }

    fn matrix_shape(&self, w: &NpuMatrix) -> (usize, usize) {
        (w.cpu.rows(), w.cpu.cols())
    }

    fn prepare_matrix(&self, w: &NpuMatrix) {
        LayerKernels::prepare_matrix(&self.cpu, &w.cpu)
    }

    fn scratch_pool<'a>(&self, s: &'a NpuScratch) -> Option<&'a crate::cpu::CpuPool> {
        Some(s.cpu.pool())
    }

    fn scratch(&self, threads: usize) -> NpuScratch {
        NpuScratch {
            cpu: self.cpu.scratch(threads),
            session: None,
            attention: None,
        }
    }

    fn reserve_linear(&self, s: &mut NpuScratch, rows: usize, w: &NpuMatrix) {
        self.cpu.reserve_linear(&mut s.cpu, rows, &w.cpu);
    }

    fn reserve_attention(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_attention(&mut s.cpu, shape)
    }

    fn reserve_attention_prepared(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_attention_prepared(&mut s.cpu, shape)
    }

    /// The host kernels (device linears go through [`LayerKernels::try_linear`]).
    fn linear(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        w: &NpuMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        self.cpu
            .linear(&mut s.cpu, x, rows, &w.cpu, bias, epilogue, out);
    }

    /// A member of the group this stream submitted last: its result written from C. Every
    /// other linear on the host kernels.
    fn try_linear(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        w: &NpuMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        if let (Some(session), Int8OrF32Matrix::Int8(q)) = (s.session.as_ref(), &w.cpu) {
            let (stage, op) = session.current;
            let member = session
                .plans
                .get(stage as usize)
                .and_then(|p| p.member.get(op).copied().flatten());
            if let Some((g, m)) = member {
                let key = (stage as usize, g as usize, m as usize);
                if !session.done[key.0][key.1] {
                    return Err(chain_err(format!(
                        "op {op} of stage {stage}: its group {g} was not submitted"
                    )));
                }
                return Self::write_back(session, key, rows, q, bias, epilogue, out);
            }
        }
        self.linear(s, x, rows, w, bias, epilogue, out);
        Ok(())
    }

    fn begin_op<'a>(
        &self,
        s: &mut NpuScratch,
        program: &Program<NpuMatrix>,
        stage: StageId,
        op: usize,
        args: &StageArgs,
        input: &dyn Fn(crate::stage::At, usize) -> Option<&'a [f32]>,
    ) -> Result<(), BackendError> {
        // A member attention runs in its group's chain, not on the attention context.
        let chained = s.session.as_ref().is_some_and(|g| {
            g.plans
                .get(stage.0 as usize)
                .and_then(|p| p.attention.get(op))
                .is_some_and(Option::is_some)
        });
        if let (Some(a), Some(session)) = (&self.attention, s.attention.as_mut()) {
            if chained {
                session.clear_pending();
            } else {
                let log = s.session.as_mut().map(|g| &mut g.log);
                a.begin_op(session, program, stage, op, args, input, log)?;
            }
        }
        let NpuScratch {
            session, attention, ..
        } = s;
        let Some(session) = session.as_mut() else {
            return Ok(());
        };
        session.current = (stage.0, op);
        if op == 0 {
            if let Some(d) = session.done.get_mut(stage.0 as usize) {
                d.fill(false);
            }
        }
        if chained {
            // Its result must be in C: the group submitted, the member run at the call's rows.
            let n_q = match &program.stage(stage).ops[op] {
                Op::Attention { dims, .. } | Op::AttentionPrepared { dims, .. } => {
                    (dims.q_len.at(args), dims)
                }
                Op::CachedSelfAttention { dims, .. } => (args.rows, dims),
                _ => return Err(chain_err(format!("op {op}: a member attention is not one"))),
            };
            let (n_q, dims) = n_q;
            if Self::chained_attention_run(session, n_q * dims.width()).is_none() {
                return Err(chain_err(format!(
                    "op {op} of stage {}: its group did not run it for {n_q} queries",
                    stage.0
                )));
            }
        }
        let start = session
            .plans
            .get(stage.0 as usize)
            .and_then(|p| p.starts.get(op).copied().flatten());
        match start {
            Some(g) => {
                // Prepared keys/values (the window's cross K/V image) and K/V caches a
                // member reads.
                let prepared = |kv: usize| attention.as_ref()?.prepared_image(kv);
                let cache = |c: usize| attention.as_ref()?.cache_image(c);
                let resident = ResidentImages {
                    prepared: &prepared,
                    cache: &cache,
                };
                self.run_group(session, program, stage, g, args, input, &resident)
            }
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv1d_k3(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        t_in: usize,
        w: &NpuMatrix,
        bias: &[f32],
        stride: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        self.cpu
            .conv1d_k3(&mut s.cpu, x, t_in, &w.cpu, bias, stride, epilogue, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        s: &mut NpuScratch,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        // A member norm of a submitted group: the device made its image, and the chain plan
        // made sure nothing reads its f32 output on the host.
        if let Some(session) = &s.session {
            let (stage, op) = session.current;
            let on_device = session
                .plans
                .get(stage as usize)
                .is_some_and(|p| p.norms.get(op).is_some_and(Option::is_some));
            if on_device {
                return;
            }
        }
        self.cpu
            .layer_norm(&mut s.cpu, x, rows, gamma, beta, eps, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let len = shape.q_len * shape.heads * shape.head_dim;
        if let Some(run) = s
            .session
            .as_ref()
            .and_then(|g| Self::chained_attention_run(g, len).map(|r| (g, r)))
        {
            // A member attention of the group submitted last (checked in `begin_op`); an
            // unread result stays on the device.
            let (g, r) = run;
            if r.unread {
                return;
            }
            let c: &[f32] = bytemuck::cast_slice(&g.c.bytes()[r.c_off..r.c_off + 4 * len]);
            out[..len].copy_from_slice(c);
            return;
        }
        if s.attention.as_mut().is_some_and(|a| a.take_result(out)) {
            return;
        }
        self.cpu.attention(&mut s.cpu, shape, q, k, v, scratch, out);
    }

    fn key_values(&self, heads: usize, head_dim: usize, capacity: usize) -> Int8KeyValues {
        self.cpu.key_values(heads, head_dim, capacity)
    }

    fn key_values_len(&self, kv: &Int8KeyValues) -> usize {
        self.cpu.key_values_len(kv)
    }

    fn prepare_key_values(&self, s: &mut NpuScratch, k: &[f32], v: &[f32], kv: &mut Int8KeyValues) {
        self.cpu.prepare_key_values(&mut s.cpu, k, v, kv);
    }

    fn attention_prepared(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let len = shape.q_len * shape.heads * shape.head_dim;
        if let Some((g, r)) = s
            .session
            .as_ref()
            .and_then(|g| Self::chained_attention_run(g, len).map(|r| (g, r)))
        {
            // A member attention of the group submitted last (checked in `begin_op`); an
            // unread result stays on the device.
            if r.unread {
                return;
            }
            let c: &[f32] = bytemuck::cast_slice(&g.c.bytes()[r.c_off..r.c_off + 4 * len]);
            out[..len].copy_from_slice(c);
            return;
        }
        if s.attention.as_mut().is_some_and(|a| a.take_result(out)) {
            return;
        }
        self.cpu
            .attention_prepared(&mut s.cpu, shape, q, kv, scratch, out);
    }

    fn attention_weights(
        &self,
        shape: &AttentionShape,
        q: &[f32],
        kv: &Int8KeyValues,
        head: usize,
        out: &mut [f32],
    ) {
        self.cpu.attention_weights(shape, q, kv, head, out);
    }

    fn key_value_cache(&self, spec: &KeyValueCacheSpec) -> Int8KeyValueCache {
        self.cpu.key_value_cache(spec)
    }

    fn reserve_cache_attention(&self, s: &mut NpuScratch, shape: &AttentionShape) -> usize {
        self.cpu.reserve_cache_attention(&mut s.cpu, shape)
    }

    fn cache_write(
        &self,
        cache: &mut Int8KeyValueCache,
        slot: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
    ) {
        self.cpu.cache_write(cache, slot, pos, k, v);
    }

    fn cache_attention(
        &self,
        s: &mut NpuScratch,
        shape: &AttentionShape,
        q: &[f32],
        cache: &Int8KeyValueCache,
        slot: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let len = shape.q_len * shape.heads * shape.head_dim;
        if let Some((g, r)) = s
            .session
            .as_ref()
            .and_then(|g| Self::chained_attention_run(g, len).map(|r| (g, r)))
        {
            // A member attention of the group submitted last (checked in `begin_op`); an
            // unread result stays on the device.
            if r.unread {
                return;
            }
            let c: &[f32] = bytemuck::cast_slice(&g.c.bytes()[r.c_off..r.c_off + 4 * len]);
            out[..len].copy_from_slice(c);
            return;
        }
        if s.attention.as_mut().is_some_and(|a| a.take_result(out)) {
            return;
        }
        self.cpu
            .cache_attention(&mut s.cpu, shape, q, cache, slot, scratch, out);
    }

    fn cache_copy_slot(&self, cache: &mut Int8KeyValueCache, from: usize, to: usize, len: usize) {
        self.cpu.cache_copy_slot(cache, from, to, len);
    }

    fn gather_rows(&self, table: &NpuMatrix, ids: &[u32], out: &mut [f32]) {
        self.cpu.gather_rows(&table.cpu, ids, out);
    }
}

impl Backend for NpuBackend {
    type Matrix = NpuMatrix;
    type Workspace = HostWorkspace<NpuBackend>;

    fn name(&self) -> &'static str {
        LayerKernels::name(self)
    }

    fn default_threads(&self) -> usize {
        LayerKernels::default_threads(self)
    }

    /// Quantized per output channel (as the CPU INT8 backend does), then as
    /// [`Backend::matrix_q8`].
    fn matrix(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<NpuMatrix, BackendError> {
        if data.len() != rows * cols {
            return Err(BackendError::Unsupported {
                backend: LayerKernels::name(self),
                reason: format!("{} values for a {rows}x{cols} matrix", data.len()),
            });
        }
        self.load_matrix(QuantMatrix::quantize(&data, rows, cols))
    }

    fn matrix_q8(&self, q: QuantMatrix) -> Result<NpuMatrix, BackendError> {
        self.load_matrix(q)
    }

    fn prepare_matrix(&self, w: &NpuMatrix) {
        LayerKernels::prepare_matrix(self, w)
    }

    fn workspace(
        &self,
        program: &Program<NpuMatrix>,
        threads: usize,
    ) -> Result<Self::Workspace, BackendError> {
        let mut ws = HostWorkspace::new(self, program, threads);
        let aie = self.prepare_aie(program)?;
        if program.matrices().iter().any(NpuMatrix::on_device) {
            ws.scratch_mut().session = Some(self.session(program, aie)?);
        }
        if let Some(a) = &self.attention {
            ws.scratch_mut().attention =
                a.session(&self.device, &self.heap, program, self.timeout)?;
        }
        Ok(ws)
    }

    fn run(
        &self,
        program: &Program<NpuMatrix>,
        stage: StageId,
        args: &StageArgs,
        ws: &mut Self::Workspace,
    ) -> Result<(), BackendError> {
        ws.run(self, program, stage, args)
    }

    fn read<'a>(
        &self,
        ws: &'a Self::Workspace,
        buffer: BufferId,
        range: std::ops::Range<usize>,
    ) -> Result<&'a [f32], BackendError> {
        ws.read(LayerKernels::name(self), buffer, range)
    }

    fn write(
        &self,
        ws: &mut Self::Workspace,
        buffer: BufferId,
        offset: usize,
        data: &[f32],
    ) -> Result<(), BackendError> {
        ws.write(LayerKernels::name(self), buffer, offset, data)
    }

    /// Device submissions of one call of `stage` at its linears' declared most rows: one per
    /// group of its chain plan (a chain of the group's design linears and fixture tiles, or a
    /// single command); the host ops are not submissions.
    fn submissions(&self, program: &Program<NpuMatrix>, stage: StageId) -> usize {
        let plan = self.plan(program, stage);
        let attention = match self.attention {
            // The member attentions are in their groups' chains.
            Some(_) => {
                npu_attention::submissions(program, stage) - plan.attention.iter().flatten().count()
            }
            None => 0,
        };
        plan.groups.len() + attention
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;
    use crate::npu::ert::CmdState;
    use crate::stage::{At, Extent, Residency};

    fn fixture_programs() -> Vec<GemmProgramFiles> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/npu-fixtures/1bit-monster");
        GemmProgramFiles::find_in(&dir, &[(512, 2048), (2048, 512)]).unwrap()
    }

    /// One linear of `w` (`[n, k]`) as a program: x → out, up to `max_rows` rows.
    fn linear_program<B: Backend>(
        b: &B,
        w: &QuantMatrix,
        bias: Option<Vec<f32>>,
        epilogue: Epilogue,
        max_rows: usize,
    ) -> (Program<B::Matrix>, BufferId, BufferId, StageId) {
        let mut p = Program::new();
        let (n, k) = (w.n_out(), w.k());
        let m = p.add_matrix(b.matrix_q8(w.clone()).unwrap());
        let bias = bias.map(|v| p.add_vector(v));
        let x = p.add_buffer("x", max_rows * k, Residency::Resident);
        let out = p.add_buffer("out", max_rows * n, Residency::Resident);
        let s = p.add_stage(
            "linear",
            vec![Op::Linear {
                x: At::start(x),
                out: At::start(out),
                rows: Extent::rows(1),
                max_rows,
                w: m,
                bias,
                epilogue,
            }],
        );
        (p, x, out, s)
    }

    #[test]
    fn device_linears_equal_the_cpu_int8_linears_bit_for_bit() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 2).unwrap();
        let cpu = CpuInt8Backend::new(2);
        assert_eq!(npu.shapes(), vec![(512, 2048), (2048, 512)]);
        let mut rng = Rng::new(14);
        let mut expected_submissions = 0;
        let mut device_linears = 0;
        // (n, k, rows, epilogue, bias): both programs, rows around the 128-row tile, every
        // epilogue, and a shape no program has (runs on the CPU kernels).
        let cases = [
            (2048, 512, 1, Epilogue::Gelu, true),
            (2048, 512, 129, Epilogue::Gelu, true),
            (2048, 512, 300, Epilogue::Store, false),
            (512, 2048, 5, Epilogue::AddInto, true),
            (512, 2048, 128, Epilogue::Store, true),
            (512, 2048, 257, Epilogue::AddInto, false),
            (512, 512, 70, Epilogue::Store, true),
        ];
        for (n, k, rows, epilogue, with_bias) in cases {
            let w = QuantMatrix::quantize(&rng.vec(n * k, 0.2), n, k);
            let bias = with_bias.then(|| rng.vec(n, 0.5));
            let x = rng.vec(rows * k, 2.0);
            let start = rng.vec(rows * n, 1.0); // AddInto adds to it
            let (pn, xn, on, sn) = linear_program(&npu, &w, bias.clone(), epilogue, rows);
            let (pc, xc, oc, sc) = linear_program(&cpu, &w, bias, epilogue, rows);
            let on_device = (k, n) != (512, 512);
            assert_eq!(pn.matrix(crate::stage::MatrixId(0)).on_device(), on_device);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            let args = StageArgs {
                rows,
                ..Default::default()
            };
            npu.write(&mut wn, xn, 0, &x).unwrap();
            npu.write(&mut wn, on, 0, &start).unwrap();
            cpu.write(&mut wc, xc, 0, &x).unwrap();
            cpu.write(&mut wc, oc, 0, &start).unwrap();
            npu.run(&pn, sn, &args, &mut wn).unwrap();
            cpu.run(&pc, sc, &args, &mut wc).unwrap();
            let got = npu.read(&wn, on, 0..rows * n).unwrap();
            let want = cpu.read(&wc, oc, 0..rows * n).unwrap();
            let diff = got
                .iter()
                .zip(want)
                .position(|(g, w)| g.to_bits() != w.to_bits());
            assert_eq!(diff, None, "n {n} k {k} rows {rows} {epilogue:?}");
            if on_device {
                // The linear's 128-row tiles: one chain (one command for a single tile).
                expected_submissions += 1;
                device_linears += 1;
                assert_eq!(npu.submissions(&pn, sn), 1, "declared submissions");
                let log = wn.scratch().dispatch_log().unwrap();
                assert_eq!(log.total(), 1);
            } else {
                assert_eq!(npu.submissions(&pn, sn), 0);
            }
        }
        let s = npu.stats();
        assert_eq!(s.submissions, expected_submissions);
        assert_eq!(s.device_linears, device_linears);
        assert_eq!(s.weight_bytes, 6 * 512 * 2048);
        assert_eq!(emu.stats().submitted, expected_submissions);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    #[test]
    fn our_gemm_design_equals_the_cpu_int8_linears_bit_for_bit() {
        // No fixture program: every INT8 linear with K, N multiples of 64 on our design.
        let (emu, device) = emulated_device(&[]).unwrap();
        let npu = NpuBackend::new(device, &[], 2)
            .unwrap()
            .with_emulated_designs(emu.clone());
        let cpu = CpuInt8Backend::new(2);
        let mut rng = Rng::new(41);
        // (n, k, rows, epilogue, bias): tiny's and base's shapes, decoder rows (the decoder
        // mapping), encoder rows around the 128-row super-blocks, every epilogue, and a shape
        // the design does not take (n not a multiple of 64: on the host).
        let cases = [
            (384, 384, 1, Epilogue::Store, true),
            (1536, 384, 5, Epilogue::Gelu, true),
            (384, 1536, 32, Epilogue::AddInto, true),
            (384, 384, 33, Epilogue::Store, false),
            (1536, 384, 129, Epilogue::Gelu, true),
            (512, 2048, 300, Epilogue::AddInto, true),
            (512, 512, 3, Epilogue::AddInto, false),
            (100, 384, 7, Epilogue::Store, true),
        ];
        let mut submissions = 0;
        for (n, k, rows, epilogue, with_bias) in cases {
            let w = QuantMatrix::quantize(&rng.vec(n * k, 0.2), n, k);
            let bias = with_bias.then(|| rng.vec(n, 0.5));
            let x = rng.vec(rows * k, 2.0);
            let start = rng.vec(rows * n, 1.0);
            let (pn, xn, on, sn) = linear_program(&npu, &w, bias.clone(), epilogue, rows);
            let (pc, xc, oc, sc) = linear_program(&cpu, &w, bias, epilogue, rows);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            let on_device = n % 64 == 0;
            assert_eq!(pn.matrix(crate::stage::MatrixId(0)).on_device(), on_device);
            let args = StageArgs {
                rows,
                ..Default::default()
            };
            // Twice: the second call finds the activation image dirty from the first.
            for _ in 0..2 {
                npu.write(&mut wn, xn, 0, &x).unwrap();
                npu.write(&mut wn, on, 0, &start).unwrap();
                cpu.write(&mut wc, xc, 0, &x).unwrap();
                cpu.write(&mut wc, oc, 0, &start).unwrap();
                npu.run(&pn, sn, &args, &mut wn).unwrap();
                cpu.run(&pc, sc, &args, &mut wc).unwrap();
                let got = npu.read(&wn, on, 0..rows * n).unwrap();
                let want = cpu.read(&wc, oc, 0..rows * n).unwrap();
                let diff = got
                    .iter()
                    .zip(want)
                    .position(|(g, w)| g.to_bits() != w.to_bits());
                assert_eq!(diff, None, "n {n} k {k} rows {rows} {epilogue:?}");
            }
            assert_eq!(npu.submissions(&pn, sn), usize::from(on_device));
            submissions += 2 * u64::from(on_device);
            if on_device {
                assert_eq!(wn.scratch().dispatch_log().unwrap().total(), 2);
            }
        }
        assert_eq!(npu.stats().submissions, submissions);
        assert_eq!(emu.stats().submitted, submissions);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
        // Both mappings of each (K, N, epilogue) that ran, loaded once.
        let designs = npu.designs();
        assert!(designs.contains(&(384, 1536, true, true)), "{designs:?}");
        assert!(designs.contains(&(384, 1536, true, false)), "{designs:?}");
        assert!(designs.len() <= 2 * 6, "{designs:?}");
    }

    /// A layer-like stage: norm, q/k/v on our designs, a host op, out (AddInto), norm, two
    /// chunks of fc1 (GELU) and fc2 (AddInto) on the fixture programs, one more design linear.
    fn layer_program<B: Backend>(
        b: &B,
        ws: &[QuantMatrix],
        biases: &[Option<Vec<f32>>],
        max_rows: usize,
    ) -> (Program<B::Matrix>, [BufferId; 5], StageId) {
        let mut p = Program::new();
        let d = 512;
        let m: Vec<_> = ws
            .iter()
            .map(|w| p.add_matrix(b.matrix_q8(w.clone()).unwrap()))
            .collect();
        let bias: Vec<_> = biases
            .iter()
            .map(|v| v.clone().map(|v| p.add_vector(v)))
            .collect();
        let gamma = p.add_vector((0..d).map(|i| 1.0 + i as f32 / 1024.0).collect());
        let beta = p.add_vector((0..d).map(|i| i as f32 / 4096.0).collect());
        // One row more than the linears declare (a call with it reaches the device path).
        let buf = |p: &mut Program<B::Matrix>, name, width| {
            p.add_buffer(name, (max_rows + 1) * width, Residency::Resident)
        };
        let (x, h, q, k, v) = (
            buf(&mut p, "x", d),
            buf(&mut p, "h", d),
            buf(&mut p, "q", d),
            buf(&mut p, "k", d),
            buf(&mut p, "v", d),
        );
        let (a, hidden) = (buf(&mut p, "a", d), buf(&mut p, "hidden", 4 * d));
        let rows = Extent::rows(1);
        let st = At::start;
        let lin = |x, out, w: usize, epilogue| Op::Linear {
            x: st(x),
            out: st(out),
            rows,
            max_rows,
            w: m[w],
            bias: bias[w],
            epilogue,
        };
        let norm = |x, out| Op::LayerNorm {
            x: st(x),
            out: st(out),
            rows,
            gamma,
            beta,
            eps: 1e-5,
        };
        let ops = vec![
            norm(x, h),
            lin(h, q, 0, Epilogue::Store),
            lin(h, k, 1, Epilogue::Store),
            lin(h, v, 2, Epilogue::Store),
            norm(q, a),
            lin(a, x, 3, Epilogue::AddInto),
            norm(x, h),
            lin(h, hidden, 4, Epilogue::Gelu),
            lin(hidden, x, 5, Epilogue::AddInto),
            // A second MLP chunk: its fc1 joins the first fc1's group (h unchanged since), whose
            // results wait in C while the first fc2's group runs.
            lin(h, hidden, 4, Epilogue::Gelu),
            lin(hidden, x, 5, Epilogue::AddInto),
            lin(h, v, 2, Epilogue::Store),
        ];
        let s = p.add_stage("layer", ops);
        (p, [x, h, q, k, v], s)
    }

    #[test]
    fn a_stage_s_linears_share_submissions_and_equal_the_cpu_int8_path() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 2)
            .unwrap()
            .with_emulated_designs(emu.clone());
        let cpu = CpuInt8Backend::new(2);
        let mut rng = Rng::new(77);
        let d = 512;
        let shapes = [(d, d), (d, d), (d, d), (d, d), (4 * d, d), (d, 4 * d)];
        let ws: Vec<QuantMatrix> = shapes
            .iter()
            .map(|&(n, k)| QuantMatrix::quantize(&rng.vec(n * k, 0.1), n, k))
            .collect();
        let biases: Vec<Option<Vec<f32>>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n, _))| (i != 1).then(|| rng.vec(n, 0.3)))
            .collect();
        // Encoder-like rows (fixture: two tiles in one chain) and decoder-like rows.
        for max_rows in [200, 3] {
            let (pn, bn, sn) = layer_program(&npu, &ws, &biases, max_rows);
            let (pc, bc, sc) = layer_program(&cpu, &ws, &biases, max_rows);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            // The first norm with q, k, v (h is overwritten whole by the MLP's norm): one
            // chain; out; both chunks' fc1 and fc2, each fc2 reading its own fc1's result
            // through the device quantize (the second fc1 hoisted over the first fc2, its
            // result waiting in C), and the last linear (its input unchanged since the MLP's
            // host norm), all on our designs: one chain.
            assert_eq!(npu.submissions(&pn, sn), 3, "max_rows {max_rows}");
            let plan = npu.plan(&pn, sn);
            assert_eq!((plan.quantized[8], plan.quantized[10]), (Some(7), Some(9)));
            assert_eq!(plan.member[11].map(|m| m.0), plan.member[7].map(|m| m.0));
            // Both mappings of 512x512, of fc1's 512x2048 GELU and of fc2's 2048x512: a norm
            // writes fc1's input and fc1 writes fc2's, so both matrices also get design images
            // (the fixture programs stay loaded, unused).
            assert_eq!(
                npu.design_contexts(),
                vec![6],
                "all designs of the program in one context"
            );
            let x = rng.vec(max_rows * d, 1.0);
            let args = StageArgs {
                rows: max_rows,
                ..Default::default()
            };
            let before = (emu.stats().submitted, npu.stats());
            for _ in 0..2 {
                npu.write(&mut wn, bn[0], 0, &x).unwrap();
                cpu.write(&mut wc, bc[0], 0, &x).unwrap();
                npu.run(&pn, sn, &args, &mut wn).unwrap();
                cpu.run(&pc, sc, &args, &mut wc).unwrap();
                for (b, name) in [(0, "x"), (2, "q"), (3, "k"), (4, "v")] {
                    let got = npu.read(&wn, bn[b], 0..max_rows * d).unwrap();
                    let want = cpu.read(&wc, bc[b], 0..max_rows * d).unwrap();
                    let diff = got
                        .iter()
                        .zip(want)
                        .position(|(g, w)| g.to_bits() != w.to_bits());
                    assert_eq!(diff, None, "{name}, max_rows {max_rows}");
                }
            }
            assert_eq!(emu.stats().submitted - before.0, 2 * 3);
            let s = npu.stats();
            assert_eq!(s.submissions - before.1.submissions, 2 * 3);
            assert_eq!(s.device_linears - before.1.device_linears, 2 * 9);
            assert_eq!(wn.scratch().dispatch_log().unwrap().total(), 2 * 3);
            // Fewer rows than declared: the same groups, smaller regions.
            let args = StageArgs {
                rows: 1,
                ..Default::default()
            };
            npu.run(&pn, sn, &args, &mut wn).unwrap();
            cpu.run(&pc, sc, &args, &mut wc).unwrap();
            let got = npu.read(&wn, bn[0], 0..d).unwrap();
            let want = cpu.read(&wc, bc[0], 0..d).unwrap();
            assert!(got
                .iter()
                .zip(want)
                .all(|(g, w)| g.to_bits() == w.to_bits()));
            // More rows than declared: a typed error, not a panic.
            let args = StageArgs {
                rows: max_rows + 1,
                ..Default::default()
            };
            match npu.run(&pn, sn, &args, &mut wn) {
                Err(BackendError::Device { op: "chain", .. }) => {}
                other => panic!("expected a chain error, got {other:?}"),
            }
        }
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    /// Two encoder-like layers' worth of ops (d 512): norm, q/k/v, attention (overwrites h),
    /// out += into x, norm, fc1, fc2 += into x, the next norm, its q, its attention, and a last
    /// norm whose output the host reads (`out`).
    fn norm_layer_program<B: Backend>(
        b: &B,
        ws: &[QuantMatrix],
        biases: &[Option<Vec<f32>>],
        max_rows: usize,
    ) -> (Program<B::Matrix>, [BufferId; 5], StageId) {
        let mut p = Program::new();
        let d = 512;
        let m: Vec<_> = ws
            .iter()
            .map(|w| p.add_matrix(b.matrix_q8(w.clone()).unwrap()))
            .collect();
        let bias: Vec<_> = biases
            .iter()
            .map(|v| v.clone().map(|v| p.add_vector(v)))
            .collect();
        let norm_params = |p: &mut Program<B::Matrix>, k: f32| {
            (
                p.add_vector((0..d).map(|i| 1.0 + k * i as f32 / 1024.0).collect()),
                p.add_vector((0..d).map(|i| k * i as f32 / 4096.0).collect()),
            )
        };
        let lns: Vec<_> = (1..=4).map(|k| norm_params(&mut p, k as f32)).collect();
        let buf = |p: &mut Program<B::Matrix>, name, width| {
            p.add_buffer(name, max_rows * width, Residency::Resident)
        };
        let (x, h, q, k, v) = (
            buf(&mut p, "x", d),
            buf(&mut p, "h", d),
            buf(&mut p, "q", d),
            buf(&mut p, "k", d),
            buf(&mut p, "v", d),
        );
        let (hidden, out) = (buf(&mut p, "hidden", 4 * d), buf(&mut p, "out", d));
        let rows = Extent::rows(1);
        let st = At::start;
        let lin = |x, out, w: usize, epilogue| Op::Linear {
            x: st(x),
            out: st(out),
            rows,
            max_rows,
            w: m[w],
            bias: bias[w],
            epilogue,
        };
        let norm = |x, out, l: usize| Op::LayerNorm {
            x: st(x),
            out: st(out),
            rows,
            gamma: lns[l].0,
            beta: lns[l].1,
            eps: 1e-5,
        };
        let attention = Op::Attention {
            q: st(q),
            k: st(k),
            v: st(v),
            out: st(h),
            dims: crate::stage::AttentionDims {
                heads: 8,
                head_dim: 64,
                q_len: rows,
                kv_len: rows,
                causal_offset: None,
                max_q_len: max_rows,
                max_kv_len: max_rows,
            },
        };
        let ops = vec![
            norm(x, h, 0),
            lin(h, q, 0, Epilogue::Store),
            lin(h, k, 1, Epilogue::Store),
            lin(h, v, 2, Epilogue::Store),
            attention.clone(),
            lin(h, x, 3, Epilogue::AddInto),
            norm(x, h, 1),
            lin(h, hidden, 4, Epilogue::Gelu),
            lin(hidden, x, 5, Epilogue::AddInto),
            norm(x, h, 2),
            lin(h, q, 0, Epilogue::Store),
            attention,
            norm(x, out, 3),
        ];
        let s = p.add_stage("layer", ops);
        (p, [x, q, k, v, out], s)
    }

    /// Norms in the chains: a norm goes to the device with the linears that read its image
    /// (and the residual of the member adding into its input), fc2 with fc1 through the
    /// device quantize, the stage takes fewer submissions, and every buffer the host reads
    /// equals the CPU INT8 path's bit for bit; with the fixture programs, fc1 (fed by a device
    /// norm) and fc2 (fed by the device quantize) move to our design.
    #[test]
    fn norms_join_the_chains_and_the_stage_equals_the_cpu_int8_path() {
        let programs = fixture_programs();
        let cpu = CpuInt8Backend::new(2);
        let mut rng = Rng::new(5);
        let d = 512;
        let shapes = [(d, d), (d, d), (d, d), (d, d), (4 * d, d), (d, 4 * d)];
        let ws: Vec<QuantMatrix> = shapes
            .iter()
            .map(|&(n, k)| QuantMatrix::quantize(&rng.vec(n * k, 0.1), n, k))
            .collect();
        let biases: Vec<Option<Vec<f32>>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n, _))| (i != 1).then(|| rng.vec(n, 0.3)))
            .collect();
        // (fixture programs, submissions): [norm, q, k, v], [out, norm (its residual), fc1,
        // quantize, fc2, norm (x: the first norm's x_out; fc2's residual), q], with or without
        // the fixture programs.
        for (with_fixtures, want) in [(false, 2), (true, 2)] {
            let progs: &[GemmProgramFiles] = if with_fixtures { &programs } else { &[] };
            let (emu, device) = emulated_device(progs).unwrap();
            let npu = NpuBackend::new(device, progs, 2)
                .unwrap()
                .with_emulated_designs(emu.clone());
            // Encoder-like rows (the row mapping) and decoder-like rows (the decoder mapping).
            for max_rows in [200, 3] {
                let (pn, bn, sn) = norm_layer_program(&npu, &ws, &biases, max_rows);
                let (pc, bc, sc) = norm_layer_program(&cpu, &ws, &biases, max_rows);
                let mut wn = npu.workspace(&pn, 2).unwrap();
                let mut wc = cpu.workspace(&pc, 2).unwrap();
                assert_eq!(npu.submissions(&pn, sn), want, "fixtures {with_fixtures}");
                let plan = npu.plan(&pn, sn);
                let on_device: Vec<usize> = (0..13).filter(|&i| plan.norms[i].is_some()).collect();
                assert_eq!(
                    on_device,
                    [0, 6, 9],
                    "the last norm's output is read on the host"
                );
                let residual = |i: usize| plan.norms[i].and_then(|n| n.residual);
                assert_eq!(residual(6), Some(5));
                assert_eq!(residual(9), Some(8));
                assert_eq!(plan.norms[9].and_then(|n| n.x_from), Some(6));
                assert_eq!(
                    plan.quantized[8],
                    Some(7),
                    "fc2 reads fc1's result quantized"
                );
                assert_eq!(plan.member[8].map(|m| m.0), plan.member[7].map(|m| m.0));
                let before = emu.stats().submitted;
                // The third call writes the first call's x again: the device wrote x_out over
                // it in between, so the host must not keep a stale copy of those lines.
                let first = rng.vec(max_rows * d, 1.0);
                let calls = [
                    (max_rows, first.clone()),
                    (1, rng.vec(d, 1.0)),
                    (max_rows, first),
                ];
                for (rows, x) in calls {
                    let args = StageArgs {
                        rows,
                        ..Default::default()
                    };
                    npu.write(&mut wn, bn[0], 0, &x).unwrap();
                    cpu.write(&mut wc, bc[0], 0, &x).unwrap();
                    npu.run(&pn, sn, &args, &mut wn).unwrap();
                    cpu.run(&pc, sc, &args, &mut wc).unwrap();
                    for (b, name) in [(0, "x"), (1, "q"), (2, "k"), (3, "v"), (4, "out")] {
                        let got = npu.read(&wn, bn[b], 0..rows * d).unwrap();
                        let want = cpu.read(&wc, bc[b], 0..rows * d).unwrap();
                        let diff = got
                            .iter()
                            .zip(want)
                            .position(|(g, w)| g.to_bits() != w.to_bits());
                        assert_eq!(diff, None, "{name}, rows {rows}, fixtures {with_fixtures}");
                    }
                }
                assert_eq!(emu.stats().submitted - before, 3 * want as u64);
            }
            assert!(
                emu.command_errors().is_empty(),
                "{:?}",
                emu.command_errors()
            );
        }
    }

    /// The encoder's layer (d 512, `t` fixed rows): norm, q/k/v, attention (overwrites h),
    /// out += into x, the MLP norm, the MLP in `chunk`-row chunks (fc1 of h's rows into hidden,
    /// fc2 of hidden += into x's rows), the next layer's norm, its q, its attention, and a last
    /// norm whose output the host reads (`out`).
    fn chunked_layer_program<B: Backend>(
        b: &B,
        ws: &[QuantMatrix],
        biases: &[Option<Vec<f32>>],
        t: usize,
        chunk: usize,
    ) -> (Program<B::Matrix>, [BufferId; 5], StageId) {
        let mut p = Program::new();
        let d = 512;
        let m: Vec<_> = ws
            .iter()
            .map(|w| p.add_matrix(b.matrix_q8(w.clone()).unwrap()))
            .collect();
        let bias: Vec<_> = biases
            .iter()
            .map(|v| v.clone().map(|v| p.add_vector(v)))
            .collect();
        let lns: Vec<_> = (1..=4)
            .map(|k| {
                let k = k as f32;
                (
                    p.add_vector((0..d).map(|i| 1.0 + k * i as f32 / 1024.0).collect()),
                    p.add_vector((0..d).map(|i| k * i as f32 / 4096.0).collect()),
                )
            })
            .collect();
        let buf =
            |p: &mut Program<B::Matrix>, name, len| p.add_buffer(name, len, Residency::Resident);
        let (x, h, q, k, v) = (
            buf(&mut p, "x", t * d),
            buf(&mut p, "h", t * d),
            buf(&mut p, "q", t * d),
            buf(&mut p, "k", t * d),
            buf(&mut p, "v", t * d),
        );
        let (hidden, out) = (
            buf(&mut p, "hidden", chunk * 4 * d),
            buf(&mut p, "out", t * d),
        );
        let rows = Extent::fixed(t);
        let st = At::start;
        let lin = |x: At, out: At, rows: Extent, max_rows, w: usize, epilogue| Op::Linear {
            x,
            out,
            rows,
            max_rows,
            w: m[w],
            bias: bias[w],
            epilogue,
        };
        let norm = |x, out, l: usize| Op::LayerNorm {
            x: st(x),
            out: st(out),
            rows,
            gamma: lns[l].0,
            beta: lns[l].1,
            eps: 1e-5,
        };
        let attention = Op::Attention {
            q: st(q),
            k: st(k),
            v: st(v),
            out: st(h),
            dims: crate::stage::AttentionDims {
                heads: 8,
                head_dim: 64,
                q_len: rows,
                kv_len: rows,
                causal_offset: None,
                max_q_len: t,
                max_kv_len: t,
            },
        };
        let mut ops = vec![
            norm(x, h, 0),
            lin(st(h), st(q), rows, t, 0, Epilogue::Store),
            lin(st(h), st(k), rows, t, 1, Epilogue::Store),
            lin(st(h), st(v), rows, t, 2, Epilogue::Store),
            attention.clone(),
            lin(st(h), st(x), rows, t, 3, Epilogue::AddInto),
            norm(x, h, 1),
        ];
        for r0 in (0..t).step_by(chunk) {
            let part = chunk.min(t - r0);
            let at = |b| At::fixed(b, r0 * d);
            let rows = Extent::fixed(part);
            ops.push(lin(at(h), st(hidden), rows, part, 4, Epilogue::Gelu));
            ops.push(lin(st(hidden), at(x), rows, part, 5, Epilogue::AddInto));
        }
        ops.extend([
            norm(x, h, 2),
            lin(st(h), st(q), rows, t, 0, Epilogue::Store),
            attention,
            norm(x, out, 3),
        ]);
        let s = p.add_stage("layer", ops);
        (p, [x, q, k, v, out], s)
    }

    /// The encoder's MLP chunks: the fc2 results, each at its rows of one C region, are the
    /// next layer's norm's residual, so out → the MLP → the next norm and its q are one chain,
    /// and every buffer the host reads equals the CPU INT8 path's bit for bit (chunks whose
    /// rows are not whole rounds of the design: a chunk's padding rows land in the next
    /// chunk's rows before that chunk writes them).
    #[test]
    fn chunked_fc2_results_are_one_residual_and_the_stage_equals_the_cpu_int8_path() {
        let cpu = CpuInt8Backend::new(2);
        let mut rng = Rng::new(11);
        let d = 512;
        let shapes = [(d, d), (d, d), (d, d), (d, d), (4 * d, d), (d, 4 * d)];
        let ws: Vec<QuantMatrix> = shapes
            .iter()
            .map(|&(n, k)| QuantMatrix::quantize(&rng.vec(n * k, 0.1), n, k))
            .collect();
        let biases: Vec<Option<Vec<f32>>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n, _))| (i != 1).then(|| rng.vec(n, 0.3)))
            .collect();
        let (emu, device) = emulated_device(&[]).unwrap();
        let npu = NpuBackend::new(device, &[], 2)
            .unwrap()
            .with_emulated_designs(emu.clone());
        for (t, chunk) in [(200, 72), (96, 48)] {
            let (pn, bn, sn) = chunked_layer_program(&npu, &ws, &biases, t, chunk);
            let (pc, bc, sc) = chunked_layer_program(&cpu, &ws, &biases, t, chunk);
            let chunks = t.div_ceil(chunk);
            let mut wn = npu.workspace(&pn, 2).unwrap();
            let mut wc = cpu.workspace(&pc, 2).unwrap();
            // [norm, q, k, v], [out, norm (out's residual), (fc1, quantize, fc2) per chunk,
            // the next norm (x: the MLP norm's x_out; r: the fc2 results), its q].
            assert_eq!(npu.submissions(&pn, sn), 2, "t {t}, chunk {chunk}");
            let plan = npu.plan(&pn, sn);
            let next = 7 + 2 * chunks;
            let fc2s: Vec<usize> = (0..chunks).map(|c| 8 + 2 * c).collect();
            let n = plan.norms[next].unwrap();
            assert_eq!(
                (n.residual, n.residual_parts, n.x_from),
                (Some(8), chunks, Some(6))
            );
            for (c, &l) in fc2s.iter().enumerate() {
                assert_eq!(plan.residual_of[l], Some((next, c * chunk)));
            }
            assert_eq!(
                plan.member[next + 1].map(|m| m.0),
                plan.member[5].map(|m| m.0)
            );
            let before = emu.stats().submitted;
            for _ in 0..2 {
                let x = rng.vec(t * d, 1.0);
                npu.write(&mut wn, bn[0], 0, &x).unwrap();
                cpu.write(&mut wc, bc[0], 0, &x).unwrap();
                npu.run(&pn, sn, &StageArgs::default(), &mut wn).unwrap();
                cpu.run(&pc, sc, &StageArgs::default(), &mut wc).unwrap();
                for (b, name) in [(0, "x"), (1, "q"), (2, "k"), (3, "v"), (4, "out")] {
                    let got = npu.read(&wn, bn[b], 0..t * d).unwrap();
                    let want = cpu.read(&wc, bc[b], 0..t * d).unwrap();
                    let diff = got
                        .iter()
                        .zip(want)
                        .position(|(g, w)| g.to_bits() != w.to_bits());
                    assert_eq!(diff, None, "{name}, t {t}, chunk {chunk}");
                }
            }
            assert_eq!(emu.stats().submitted - before, 2 * 2);
        }
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    #[test]
    fn the_self_test_checks_c_equals_a_times_b() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        npu.self_test().unwrap();
        assert_eq!(emu.stats().submitted, 2);
        assert_eq!(npu.stats().submissions, 0, "not counted");
        // A device whose array computes something else fails it, naming the element.
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        for p in &programs {
            let x = Xclbin::parse(&p.xclbin).unwrap();
            let pdi = x
                .aie_partition()
                .unwrap()
                .pdi_for_kernel(dpu_kernel_id(&x))
                .unwrap()
                .to_vec();
            let model = Int8GemmModel::new(p.k, p.n, 4).unwrap();
            emu.register_kernel(&pdi, move |io| {
                model.run(io)?;
                // One wrong bit in the last word of column 0's output.
                let out = io.output(0, 0).ok_or("no output")?;
                let last = out.len() - 1;
                out[last] ^= 1;
                Ok(())
            });
        }
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        match npu.self_test() {
            Err(BackendError::Device { op, reason, .. }) => {
                assert_eq!(op, "self-test");
                assert!(reason.contains("on the device, A·B ="), "{reason}");
            }
            other => panic!("expected a failed self-test, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_command_is_a_device_error_not_a_result() {
        let programs = fixture_programs();
        let (emu, device) = emulated_device(&programs).unwrap();
        let npu = NpuBackend::new(device, &programs, 1).unwrap();
        let mut rng = Rng::new(3);
        let w = QuantMatrix::quantize(&rng.vec(2048 * 512, 0.2), 2048, 512);
        let (p, x, out, s) = linear_program(&npu, &w, None, Epilogue::Store, 300);
        let mut ws = npu.workspace(&p, 1).unwrap();
        npu.write(&mut ws, x, 0, &rng.vec(300 * 512, 1.0)).unwrap();
        let args = StageArgs {
            rows: 300,
            ..Default::default()
        };
        // The three 128-row tiles go as one chain: one submission, one command in flight.
        emu.set_latency(Duration::from_millis(20));
        npu.run(&p, s, &args, &mut ws).unwrap();
        assert_eq!(emu.stats().max_in_flight, 1);
        assert_eq!(emu.stats().submitted, 1);
        emu.set_latency(Duration::ZERO);
        let want = npu.read(&ws, out, 0..300 * 2048).unwrap().to_vec();
        // A chain ending in ERROR or ABORT (injected): a typed device error naming the chain.
        for state in [CmdState::Error, CmdState::Abort] {
            emu.fail_exec(1, state);
            match npu.run(&p, s, &args, &mut ws) {
                Err(BackendError::Device { op, reason, .. }) => {
                    assert_eq!(op, "wait for GEMM");
                    assert!(reason.contains(&format!("{state:?}")), "{reason}");
                    assert!(reason.contains("command chain"), "{reason}");
                }
                other => panic!("{state:?}: expected a device error, got {other:?}"),
            }
            // The stream recovers: the next call runs and gives the same result.
            npu.run(&p, s, &args, &mut ws).unwrap();
            assert!(npu.read(&ws, out, 0..300 * 2048).unwrap() == want);
        }
    }
}
