//! The dispatch budget of Whisper through these designs: per 30 s window and per decoded
//! token, the submissions, the bytes the host writes to and reads from device buffers, the
//! bytes the shim DMAs move, and a **projected** time on Phoenix and Strix.
//!
//! The projection is arithmetic on published peaks (`../shared/docs/npu-hardware.md`) and the
//! assumptions in [`Assumptions`] — nothing here has run on an NPU. Per device op it takes
//! `max(compute, shim DMA) / efficiency`; per submission (an `ERT_CMD_CHAIN` of several ops is
//! one, grouped as [`Chaining`] says) the host overhead once, plus an assumed cost per further
//! sub-command and per switch of design (neither is stated in `../shared/docs`). Compute counts every MAC the
//! design performs (padding rows and idle columns included) at the per-core peak, the
//! epilogue at the cycles per element assumed, and the softmax and LayerNorm + quantize at
//! cycles per score / element derived from the kernels' vector operations ([`VectorOps`]). Under
//! [`Chaining::PerLayer`] the layer norms, residual adds and activation quantization are device
//! ops ([`norm_quant`], the `aie/designs/norm_quant.py` design) with their device time counted;
//! under the other shapes they are CPU work, not included. Never included (CPU work): mel, the
//! conv stem, the decoder's final LayerNorm, the logits GEMV and the search.

use crate::design::{GemmDesign, Mapping, NormQuantDesign, WhisperDims, CORE_ROWS, ENCODER_ROWS};
use crate::kernels::attention::{HEAD_DIM, KEY_CHUNK, Q_ROWS};
use crate::kernels::layout::{TILE_K, TILE_M, TILE_N};
use crate::kernels::norm_quant::NQ_ROWS;
use crate::program::images::{activation_image_len, output_len, weight_image_len};
use crate::txn::Target;

/// Published peaks of one NPU (`npu-hardware.md` §2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Platform {
    /// Name.
    pub name: &'static str,
    /// Device model the streams are generated for.
    pub target: Target,
    /// Compute tiles.
    pub cores: usize,
    /// int8 MACs per cycle per core.
    pub int8_macs: f64,
    /// bf16 MACs per cycle per core.
    pub bf16_macs: f64,
    /// Array clock, Hz.
    pub clock_hz: f64,
    /// DDR ↔ array bandwidth ceiling, bytes/s (shim or DRAM, the lower).
    pub dma_bytes_per_s: f64,
}

/// Phoenix / Hawk Point (npu1, 4 usable columns): 16 cores × 256 int8 MACs at 1.024 GHz
/// (8.4 TOPS), shim ceiling 4 × 8 B/cycle = 32 GB/s.
pub const PHOENIX: Platform = Platform {
    name: "Phoenix (npu1, 4 columns)",
    target: Target::NPU1,
    cores: 16,
    int8_macs: 256.0,
    bf16_macs: 128.0,
    clock_hz: 1.024e9,
    dma_bytes_per_s: 32e9,
};

/// Strix (npu2, 8 columns): 32 cores × 512 int8 MACs at 1.8 GHz (59 TOPS), LPDDR5X 120 GB/s.
pub const STRIX: Platform = Platform {
    name: "Strix (npu2, 8 columns)",
    target: Target::NPU2,
    cores: 32,
    int8_macs: 512.0,
    bf16_macs: 256.0,
    clock_hz: 1.8e9,
    dma_bytes_per_s: 120e9,
};

/// Issues of one 16-lane f32 multiply on AIE2. AIE2 has no f32 multiplier: the AIE API
/// emulates it on the bf16 multipliers, `--aie.float-accuracy fast` (the default) with 6
/// bf16 `VMUL.f` / `VMAC.f` instructions, `safe` (0 ulp, what the host build's IEEE products
/// model) with 9, `low` with 3 (UG1603 "Floating-Point Accuracy",
/// docs.amd.com/r/en-US/ug1603-ai-engine-ml-kernel-graph/Floating-Point-Accuracy). Not in
/// `npu-hardware.md`, which gives the 128 bf16 MACs per cycle (16 lanes × 8) these run on.
pub const F32_MUL_ISSUES: f64 = 6.0;

/// Vector operations per 16 lanes of a kernel's loops: emulated f32 multiplies and all
/// others. The cycle model:
///
/// - **one vector instruction per cycle**, fixed- or floating-point (UG1603 "Floating-Point
///   Operations": "only one vector instruction per cycle can be performed"); an f32 multiply
///   is [`F32_MUL_ISSUES`] of them;
/// - **assumed 1 cycle** for every other vector operation: an f32 add / sub (AIE2's f32
///   adder after the bf16 multipliers, UG1603; AM020 "Floating-Point Vector Unit": FP32 add,
///   subtract and negate of accumulator registers), a compare, min / max, abs, select
///   (AM020: element-wise compare / min / max in the vector add/compare unit), an int32 add,
///   sub, shift or xor, the srs narrowing, the accfloat → bf16 conversion; and **2** for the
///   int32 → f32 conversion (UG1529 lists it as emulated on AIE2; 2 is the cost of the
///   `1.5·2^23` construction the kernels use instead of conversions elsewhere). No document
///   states these counts;
/// - **free**: loads, stores, moves, bit casts and concatenations of 256-bit halves, in the
///   other VLIW slots (AM020: two 256-bit load units and one 256-bit store unit), except
///   where a loop has fewer vector operations than 256-bit transfers (the norm's residual
///   add, counted at its 2 store cycles per 16 lanes).
///
/// Loop overheads and software pipelining are not modelled (the loops are counted as if
/// fully pipelined); per-row scalar work is in [`Assumptions::softmax_cycles_per_row`] and
/// [`Assumptions::norm_cycles_per_row`]. Strix (AIE2P) is given the same cycle counts at its
/// own clock: its f32 emulation and its wider bf16 unit are not modelled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorOps {
    /// Emulated f32 multiplies per 16 lanes.
    pub f32_muls: f64,
    /// Other vector operations (cycles) per 16 lanes.
    pub other: f64,
}

impl VectorOps {
    /// Cycles per lane with an f32 multiply costing `mul_issues` instructions.
    pub fn cycles_per_lane(self, mul_issues: f64) -> f64 {
        (self.f32_muls * mul_issues + self.other) / 16.0
    }
}

/// The attention kernel's softmax per 16 scores (`aie/kernels/attention.cc`,
/// `aie_vector_numerics.h` `exp2_nonpos_v`):
/// - pass 1's scaling of the i32 sums: int32 → f32 (2), `× qs·log2 e`, `× ks`: 2 multiplies;
/// - the row maximum: 1 max;
/// - `t = s − max`, `2^t` (`t + M`, `− M`, `t −` that, 4 Horner steps of a multiply and an
///   add, a shift and an int32 add into the exponent, the floor compare and select), the
///   lane sum: 4 multiplies, 13 others;
/// - `× 1/sum`, the bf16 narrowing: 1 multiply, 1 other.
///
/// 7 multiplies and 17 others: 59 cycles per 16 scores at 6 issues a multiply.
pub const SOFTMAX_OPS: VectorOps = VectorOps {
    f32_muls: 7.0,
    other: 17.0,
};

/// The norm kernel per 16 elements of a row (`aie/kernels/norm_quant.cc`, with the residual
/// add):
/// - `x + r`: 2 (its 2 × 256-bit stores per 16 lanes, not its 1 add);
/// - the sum: 2 adds (the CPU's 8 lanes take a 16-lane vector as two halves);
/// - the variance: `v − mean`, its square, 2 adds: 1 multiply, 3 others;
/// - the max: `(v − mean)·inv·γ + β`, abs, max: 2 multiplies, 4 others;
/// - the codes: the same normalisation, `× 127/max`, `quant_codes_v` (2 compares, 2
///   selects, abs, min, 3 f32 add/sub, 5 int32 ops), half an srs narrowing (32 codes at
///   once): 3 multiplies, 16.5 others.
///
/// 6 multiplies and 27.5 others: 63.5 cycles per 16 elements at 6 issues a multiply (2 fewer
/// without a residual, not distinguished).
pub const NORM_OPS: VectorOps = VectorOps {
    f32_muls: 6.0,
    other: 27.5,
};

/// What the projection assumes where nothing was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assumptions {
    /// Host time per submission (flush, EXEC_CMD, wait, invalidate), seconds. Default 45 µs:
    /// an empty XRT kernel call (`npu-hardware.md` §3b); not measured by this project.
    pub host_overhead_s: f64,
    /// Fraction of the MAC and DMA peaks reached (1.0 = peak; §3a measured 0.2-0.5).
    pub efficiency: f64,
    /// Core cycles per output element of the dequantize/bias epilogue (8-lane emulated f32;
    /// GELU adds [`Self::gelu_cycles_per_element`]).
    pub epilogue_cycles_per_element: f64,
    /// Extra cycles per element for the GELU rational (≈ 30 f32 operations incl. a divide).
    pub gelu_cycles_per_element: f64,
    /// Core cycles per score of the softmax, pass 1's f32 scaling of the i32 sums included:
    /// [`SOFTMAX_OPS`] at [`F32_MUL_ISSUES`] (derived from the kernel's vector operations, see
    /// [`VectorOps`]): 59 / 16 ≈ 3.69. The scalar softmax before it was assumed at 40 (pass 1's
    /// scaling not counted).
    pub softmax_cycles_per_score: f64,
    /// Core cycles per query row of the softmax besides its scores: the −∞ tail of the last
    /// vector, two lane reductions and the reciprocal of the sum, scalar f32 that AIE2 runs
    /// emulated on the vector unit. **Assumed** 100 (not derived).
    pub softmax_cycles_per_row: f64,
    /// Core cycles per element of the LayerNorm + quantize kernel (`norm_quant.cc`, residual
    /// add included): [`NORM_OPS`] at [`F32_MUL_ISSUES`] (derived, see [`VectorOps`]):
    /// 63.5 / 16 ≈ 3.97. Assumed at 12 before the rounding and the byte scatter of the codes
    /// were vectorised.
    pub norm_cycles_per_element: f64,
    /// Core cycles per row of the norm kernel besides its elements: two 8-lane totals, the
    /// mean's and the variance's divides, `1 / sqrt`, the 16-lane max, `max / 127` and
    /// `127 / max`, scalar f32 (emulated). **Assumed** 200 (not derived).
    pub norm_cycles_per_row: f64,
    /// Tokens decoded per 30 s window (≈ 75 words of speech + timestamps and specials).
    pub tokens_per_window: usize,
    /// Decoder rows per step: 1 = greedy, 5 = beam 5.
    pub beams: usize,
    /// Mean self-attention keys per step (prompt + half the window's tokens).
    pub mean_self_keys: usize,
    /// How the ops of a stage are grouped into submissions.
    pub chaining: Chaining,
    /// Firmware time per sub-command of an `ERT_CMD_CHAIN` after its first (reading the slot,
    /// starting its instruction stream), seconds. **Assumed**: `npu-hardware.md` and
    /// `npu-driver.md` state no figure; default 5 µs. A plain submission's one command is in
    /// [`Self::host_overhead_s`].
    pub subcommand_s: f64,
    /// Array reconfiguration each time the sub-command stream switches design (CU / PDI: one
    /// xclbin per GEMM (K, N, GELU, mapping), one for attention), seconds. **Assumed**: no
    /// figure is stated in `npu-hardware.md` or `npu-driver.md`; default 0 (every design a CU
    /// of one loaded multi-kernel context, which has not been built); see the example's
    /// sensitivity rows.
    pub reconfiguration_s: f64,
    /// Whether the decoder's (causal, cached) self-attention runs on the attention design too
    /// when attention is on the device. Default `true` (every attention on the device), what
    /// the runtime runs with `AMANUENSIS_NPU_ATTENTION=1` (`runtime/src/npu_attention.rs`);
    /// `false`: the earlier split, the encoder's self-attention and the cross-attention on the
    /// device and the decoder's self-attention on the host.
    pub self_attention_on_device: bool,
}

/// How a stage's device ops are grouped into submissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chaining {
    /// One submission per op, the MLP unchunked (the budget before command chains).
    PerOp,
    /// The runtime's chain plan (`runtime/src/chain_plan.rs`) as it was before the device
    /// norms (encoder MLP in [`MLP_CHUNK_ROWS`]-row chunks; LayerNorms on the host): a group
    /// takes every later device op whose input no op in between writes. With attention on the
    /// device too. **Out of date**: the runtime's plan has since taken device norms with their
    /// residuals, the device quantize before fc2, the encoder's self-attention as a chain
    /// member (with the device attention on) and the 4 KiB chain-buffer limit; with them it
    /// measures base 7 submissions per window and 13 per token (attention on the host), 2 and
    /// 25 with device attention (`amanuensis bench --device emu`; README). This model still
    /// gives 42 / 36 and 48 / 48.
    AsBuilt,
    /// The issue's target: norms, residual adds and quantization on the device ([`norm_quant`]
    /// sub-commands, device time counted), so one chain per encoder layer, one for the final
    /// encoder norm and the cross K/V, one per decoder step (MLP unchunked).
    PerLayer,
}

/// Rows of one encoder MLP chunk (`model/src/layers.rs` `MLP_CHUNK_ROWS`; the top-level
/// crate's tests check they agree).
pub const MLP_CHUNK_ROWS: usize = 384;

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            host_overhead_s: 45e-6,
            efficiency: 1.0,
            epilogue_cycles_per_element: 1.0,
            gelu_cycles_per_element: 8.0,
            softmax_cycles_per_score: SOFTMAX_OPS.cycles_per_lane(F32_MUL_ISSUES),
            softmax_cycles_per_row: 100.0,
            norm_cycles_per_element: NORM_OPS.cycles_per_lane(F32_MUL_ISSUES),
            norm_cycles_per_row: 200.0,
            tokens_per_window: 120,
            beams: 1,
            mean_self_keys: 64,
            chaining: Chaining::AsBuilt,
            subcommand_s: 5e-6,
            reconfiguration_s: 0.0,
            self_attention_on_device: true,
        }
    }
}

/// Totals of a set of submissions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Submissions (ERT commands: a chain is one).
    pub submissions: usize,
    /// Sub-commands (device ops; a plain submission is one).
    pub subcommands: usize,
    /// Design switches between consecutive sub-commands.
    pub reconfigurations: usize,
    /// Bytes the host writes into device-read buffers (activation images, Q/K/V images).
    pub bytes_to_device: usize,
    /// Bytes the host reads back (outputs).
    pub bytes_from_device: usize,
    /// Bytes the shim DMAs move (DDR reads + writes), resident weights included.
    pub dma_bytes: usize,
    /// Projected seconds (device + host overhead). A projection, not a measurement.
    pub projected_s: f64,
    /// Of which host overhead.
    pub overhead_s: f64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.submissions += o.submissions;
        self.subcommands += o.subcommands;
        self.reconfigurations += o.reconfigurations;
        self.bytes_to_device += o.bytes_to_device;
        self.bytes_from_device += o.bytes_from_device;
        self.dma_bytes += o.dma_bytes;
        self.projected_s += o.projected_s;
        self.overhead_s += o.overhead_s;
    }
}

impl std::ops::Mul<usize> for Totals {
    type Output = Totals;
    fn mul(self, n: usize) -> Totals {
        Totals {
            submissions: self.submissions * n,
            subcommands: self.subcommands * n,
            reconfigurations: self.reconfigurations * n,
            bytes_to_device: self.bytes_to_device * n,
            bytes_from_device: self.bytes_from_device * n,
            dma_bytes: self.dma_bytes * n,
            projected_s: self.projected_s * n as f64,
            overhead_s: self.overhead_s * n as f64,
        }
    }
}

fn finish(
    p: &Platform,
    a: &Assumptions,
    to: usize,
    from: usize,
    dma: usize,
    cycles: f64,
) -> Totals {
    let compute = cycles / p.clock_hz;
    let transfer = dma as f64 / p.dma_bytes_per_s;
    let device = compute.max(transfer) / a.efficiency;
    Totals {
        submissions: 1,
        subcommands: 1,
        reconfigurations: 0,
        bytes_to_device: to,
        bytes_from_device: from,
        dma_bytes: dma,
        projected_s: device + a.host_overhead_s,
        overhead_s: a.host_overhead_s,
    }
}

/// One GEMM submission: `m` rows through the `k × n` design (`gelu` epilogue or not).
pub fn gemm(p: &Platform, a: &Assumptions, m: usize, k: usize, n: usize, gelu: bool) -> Totals {
    let d = GemmDesign::new(p.target, k, n).expect("Whisper GEMM shapes fit the design");
    gemm_on(p, a, &d, m, gelu)
}

/// One GEMM submission through the decoder mapping (`Mapping::ChannelSpread`, M of 1-5).
pub fn decoder_gemm(
    p: &Platform,
    a: &Assumptions,
    m: usize,
    k: usize,
    n: usize,
    gelu: bool,
) -> Totals {
    let d = GemmDesign::decoder(p.target, k, n).expect("Whisper GEMM shapes fit the design");
    gemm_on(p, a, &d, m, gelu)
}

/// One GEMM submission on design `d`.
pub fn gemm_on(p: &Platform, a: &Assumptions, d: &GemmDesign, m: usize, gelu: bool) -> Totals {
    let blocks = d.row_blocks(m);
    let groups = d.channel_groups();
    // Row streams: RowBlocks sends each core row's rows once per group (4 streams);
    // ChannelSpread sends the rows to every column once per quad of that column.
    let row_objects = match d.mapping {
        Mapping::RowBlocks => CORE_ROWS * groups,
        Mapping::ChannelSpread => (0..d.cols()).map(|c| d.groups_of(c)).sum(),
    };
    let a_reads = blocks * row_objects * TILE_M * d.activation_row_bytes();
    let w_reads = blocks * d.image_tiles() * d.weight_block_bytes();
    let c_writes = output_len(d, m);
    // Cores work in parallel: per super-block each core runs `groups` tiles of k/64 steps.
    let mac_cycles = (TILE_M * TILE_K * TILE_N) as f64 / p.int8_macs;
    let epi = (TILE_M * TILE_N) as f64
        * (a.epilogue_cycles_per_element + if gelu { a.gelu_cycles_per_element } else { 0.0 });
    let cycles = (blocks * groups) as f64 * (d.k_tiles() as f64 * mac_cycles + epi);
    // The host writes and reads back only its `m` rows; the DMAs move whole super-blocks.
    let to = m * d.activation_row_bytes();
    let from = m * d.n * 4;
    debug_assert!(to <= activation_image_len(d, m));
    finish(p, a, to, from, a_reads + w_reads + c_writes, cycles)
}

/// One LayerNorm + quantize submission (`aie/designs/norm_quant.py`): `m` rows of width `d`,
/// `x += r` first when `residual`. The shim moves x (and r, and x back) as f32 and writes the
/// GEMM's activation image (`d + 64` bytes a row), whole rounds of
/// [`NormQuantDesign::rows_per_round`] rows, plus the parameter object once per core. The host
/// writes x only for a stack's first norm (`residual` false: the conv stem's or the token
/// embedding's rows); everything else stays in device buffers.
pub fn norm_quant(p: &Platform, a: &Assumptions, m: usize, d: usize, residual: bool) -> Totals {
    let nd = NormQuantDesign::new(p.target, d, residual).expect("tiny/base widths fit the design");
    let rounds = m.div_ceil(nd.rows_per_round());
    let rows = rounds * nd.rows_per_round();
    let f32_streams = if residual { 3 } else { 1 };
    let dma = rows * (f32_streams * d * 4 + d + TILE_K) + nd.cores() * nd.row_object_bytes();
    // Each core runs one 4-row group per round.
    let per_row = d as f64 * a.norm_cycles_per_element + a.norm_cycles_per_row;
    let cycles = (rounds * NQ_ROWS) as f64 * per_row;
    let to = if residual { 0 } else { m * d * 4 };
    finish(p, a, to, 0, dma, cycles)
}

/// One attention submission: `heads` heads, `n_q` queries each, `n_keys` keys; `kv_fresh`
/// says whether the K/V images are written by the host for this submission (self-attention
/// appends, the encoder's K/V) or resident (cross-attention K/V after the window's first).
pub fn attention(
    p: &Platform,
    a: &Assumptions,
    heads: usize,
    n_q: usize,
    n_keys: usize,
    kv_to_device: usize,
) -> Totals {
    let groups = n_q.div_ceil(Q_ROWS);
    let chunks = n_keys.div_ceil(KEY_CHUNK);
    let q_bytes = heads * groups * (Q_ROWS * HEAD_DIM + 8 * Q_ROWS);
    let kv_bytes = heads * chunks * KEY_CHUNK * (HEAD_DIM + 4 + 2 * HEAD_DIM);
    let out = heads * groups * Q_ROWS * HEAD_DIM * 4;
    let rows = n_q.min(Q_ROWS);
    // Work: `heads · groups` query groups spread over the cores.
    let per_group = {
        let scores = (Q_ROWS * chunks * KEY_CHUNK * HEAD_DIM) as f64 / p.int8_macs;
        let pv = (Q_ROWS * chunks * KEY_CHUNK * HEAD_DIM) as f64 / p.bf16_macs;
        // Padding rows (limit 0) skip the softmax.
        let softmax =
            rows as f64 * (n_keys as f64 * a.softmax_cycles_per_score + a.softmax_cycles_per_row);
        scores + pv + softmax
    };
    let rounds = (heads * groups).div_ceil(p.cores);
    let cycles = rounds as f64 * per_group;
    let read_back = heads * n_q * HEAD_DIM * 4;
    finish(
        p,
        a,
        q_bytes + kv_to_device,
        read_back,
        q_bytes + kv_bytes + out,
        cycles,
    )
}

/// K/V image bytes for `keys` keys of all heads.
fn kv_image(heads: usize, keys: usize) -> usize {
    heads * keys * (HEAD_DIM + 4 + 2 * HEAD_DIM)
}

/// The design (CU) a device op runs: one xclbin per GEMM shape and mapping, one for attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// A GEMM design: `k`, `n`, GELU epilogue, decoder mapping.
    Gemm(usize, usize, bool, bool),
    /// The attention design.
    Attention,
    /// The LayerNorm + quantize design: `d`, residual add.
    NormQuant(usize, bool),
}

/// A buffer of a stage, as the chain plan compares them (whole).
pub type Buffer = u8;
const X: Buffer = 0;
const H: Buffer = 1;
const Q: Buffer = 2;
const A: Buffer = 3;
const HIDDEN: Buffer = 4;
const ENC: Buffer = 5;
/// A GEMM's output that a device norm adds into the residual stream.
const R: Buffer = 6;

/// One op of a stage as a chain plan sees it: its work when it runs on the device (`None`: a
/// host op), the buffer it reads and the one it writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageOp {
    /// Device work (one submission's [`Totals`]) and design, or `None` for a host op.
    pub device: Option<(Totals, Design)>,
    /// Input buffer.
    pub input: Buffer,
    /// Output buffer.
    pub output: Buffer,
}

impl StageOp {
    fn host(input: Buffer, output: Buffer) -> Self {
        StageOp {
            device: None,
            input,
            output,
        }
    }

    fn dev(t: Totals, d: Design, input: Buffer, output: Buffer) -> Self {
        StageOp {
            device: Some((t, d)),
            input,
            output,
        }
    }
}

/// The runtime's grouping rule (`runtime/src/chain_plan.rs`, without its size limits): a
/// group starts at the first device op not yet in a group and takes every later device op
/// whose input buffer no op since the group's start (its own members included) writes.
/// Returns the groups' op indices in submission order.
pub fn chain_groups(ops: &[StageOp]) -> Vec<Vec<usize>> {
    let mut taken = vec![false; ops.len()];
    let mut groups = Vec::new();
    for i in 0..ops.len() {
        if ops[i].device.is_none() || taken[i] {
            continue;
        }
        taken[i] = true;
        let mut group = vec![i];
        let mut written = vec![ops[i].output];
        for j in i + 1..ops.len() {
            if ops[j].device.is_some() && !taken[j] && !written.contains(&ops[j].input) {
                taken[j] = true;
                group.push(j);
            }
            written.push(ops[j].output);
        }
        groups.push(group);
    }
    groups
}

/// The totals of `ops` submitted as `groups`: each group one submission paying
/// [`Assumptions::host_overhead_s`] once, [`Assumptions::subcommand_s`] per member after its
/// first, and [`Assumptions::reconfiguration_s`] per switch of design between consecutive
/// sub-commands (the stage taken as repeating: its first op follows its last).
pub fn submit(a: &Assumptions, ops: &[StageOp], groups: &[Vec<usize>]) -> Totals {
    let design = |i: usize| ops[i].device.expect("groups hold device ops").1;
    let mut prev = groups.last().and_then(|g| g.last()).map(|&i| design(i));
    let mut t = Totals::default();
    for g in groups {
        let mut s = Totals {
            submissions: 1,
            ..Totals::default()
        };
        for &i in g {
            let (w, d) = ops[i].device.expect("groups hold device ops");
            s.subcommands += 1;
            s.bytes_to_device += w.bytes_to_device;
            s.bytes_from_device += w.bytes_from_device;
            s.dma_bytes += w.dma_bytes;
            s.projected_s += w.projected_s - w.overhead_s;
            if prev != Some(d) {
                s.reconfigurations += 1;
            }
            prev = Some(d);
        }
        s.overhead_s = a.host_overhead_s
            + (s.subcommands - 1) as f64 * a.subcommand_s
            + s.reconfigurations as f64 * a.reconfiguration_s;
        s.projected_s += s.overhead_s;
        t += s;
    }
    t
}

/// `ops` grouped as `a.chaining` says: per op, the chain plan's rule, or `per_layer` ops at a
/// time (one chain each).
fn staged(a: &Assumptions, ops: &[StageOp], per_layer: usize) -> Totals {
    let dev: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].device.is_some())
        .collect();
    let groups = match a.chaining {
        Chaining::PerOp => dev.iter().map(|&i| vec![i]).collect(),
        Chaining::AsBuilt => chain_groups(ops),
        Chaining::PerLayer => dev
            .chunks(per_layer.max(1))
            .map(<[usize]>::to_vec)
            .collect(),
    };
    submit(a, ops, &groups)
}

/// The encoder's ops of one window, in program order: per layer LayerNorm, fused QKV,
/// attention (a host op unless `attention_on_device`), output projection (adds into the
/// residual), LayerNorm, fc1 (GELU) and fc2 (adds into the residual) — per
/// [`MLP_CHUNK_ROWS`]-row chunk under [`Chaining::AsBuilt`], whole otherwise. Returns the ops
/// and the device ops per layer.
pub fn encoder_ops(
    p: &Platform,
    a: &Assumptions,
    w: &WhisperDims,
    attention_on_device: bool,
) -> (Vec<StageOp>, usize) {
    let m = ENCODER_ROWS;
    let g = |k: usize, n: usize, gelu: bool| Design::Gemm(k, n, gelu, false);
    let chunks: Vec<usize> = match a.chaining {
        Chaining::AsBuilt => (0..m)
            .step_by(MLP_CHUNK_ROWS)
            .map(|r| MLP_CHUNK_ROWS.min(m - r))
            .collect(),
        _ => vec![m],
    };
    if a.chaining == Chaining::PerLayer {
        let ops = per_layer_encoder_ops(p, a, w, attention_on_device);
        let per_layer = ops.iter().filter(|o| o.device.is_some()).count() / w.encoder_layers;
        return (ops, per_layer);
    }
    let mut layer = vec![
        StageOp::host(X, H),
        StageOp::dev(
            gemm(p, a, m, w.d, 3 * w.d, false),
            g(w.d, 3 * w.d, false),
            H,
            Q,
        ),
        if attention_on_device {
            let t = attention(p, a, w.heads, m, m, kv_image(w.heads, m));
            StageOp::dev(t, Design::Attention, Q, A)
        } else {
            StageOp::host(Q, A)
        },
        StageOp::dev(gemm(p, a, m, w.d, w.d, false), g(w.d, w.d, false), A, X),
        StageOp::host(X, H),
    ];
    for &c in &chunks {
        let fc1 = gemm(p, a, c, w.d, w.mlp, true);
        layer.push(StageOp::dev(fc1, g(w.d, w.mlp, true), H, HIDDEN));
        let fc2 = gemm(p, a, c, w.mlp, w.d, false);
        layer.push(StageOp::dev(fc2, g(w.mlp, w.d, false), HIDDEN, X));
    }
    let per_layer = layer.iter().filter(|o| o.device.is_some()).count();
    (layer.repeat(w.encoder_layers), per_layer)
}

/// A device norm op: `m` rows of width `d`, `x += r` first unless it starts the stack.
fn norm_op(p: &Platform, a: &Assumptions, m: usize, d: usize, first: bool, o: Buffer) -> StageOp {
    let residual = !first;
    let t = norm_quant(p, a, m, d, residual);
    let input = if residual { R } else { X };
    StageOp::dev(t, Design::NormQuant(d, residual), input, o)
}

/// The encoder under [`Chaining::PerLayer`]: per layer the norm (with the residual add of the
/// previous layer's fc2 after the first), fused QKV, attention, output projection, the norm
/// with its residual add, fc1, fc2 — 7 device ops a layer (attention on the device).
fn per_layer_encoder_ops(
    p: &Platform,
    a: &Assumptions,
    w: &WhisperDims,
    attention_on_device: bool,
) -> Vec<StageOp> {
    let m = ENCODER_ROWS;
    let g = |k: usize, n: usize, gelu: bool| Design::Gemm(k, n, gelu, false);
    let lin = |k: usize, n: usize, gelu: bool, i: Buffer, o: Buffer| {
        StageOp::dev(gemm(p, a, m, k, n, gelu), g(k, n, gelu), i, o)
    };
    let mut ops = Vec::new();
    for l in 0..w.encoder_layers {
        ops.push(norm_op(p, a, m, w.d, l == 0, H));
        ops.push(lin(w.d, 3 * w.d, false, H, Q));
        ops.push(if attention_on_device {
            let t = attention(p, a, w.heads, m, m, kv_image(w.heads, m));
            StageOp::dev(t, Design::Attention, Q, A)
        } else {
            StageOp::host(Q, A)
        });
        ops.push(lin(w.d, w.d, false, A, R));
        ops.push(norm_op(p, a, m, w.d, false, H));
        ops.push(lin(w.d, w.mlp, true, H, HIDDEN));
        ops.push(lin(w.mlp, w.d, false, HIDDEN, R));
    }
    ops
}

/// The decoder's ops of one step: per layer LayerNorm, self QKV, self-attention, self output,
/// LayerNorm, cross query, cross-attention (resident K/V), cross output, LayerNorm, fc1, fc2 —
/// the GEMMs through the decoder mapping; attention a host op unless `attention_on_device`.
/// Returns the ops and the device ops per step.
pub fn decoder_ops(
    p: &Platform,
    a: &Assumptions,
    w: &WhisperDims,
    attention_on_device: bool,
) -> (Vec<StageOp>, usize) {
    let m = a.beams;
    let g = |k: usize, n: usize, gelu: bool| Design::Gemm(k, n, gelu, true);
    let lin = |k: usize, n: usize, gelu: bool, i: Buffer, o: Buffer| {
        StageOp::dev(decoder_gemm(p, a, m, k, n, gelu), g(k, n, gelu), i, o)
    };
    let attn = |keys: usize, kv: usize, self_attention: bool| {
        if attention_on_device && (a.self_attention_on_device || !self_attention) {
            StageOp::dev(
                attention(p, a, w.heads, m, keys, kv),
                Design::Attention,
                Q,
                A,
            )
        } else {
            StageOp::host(Q, A)
        }
    };
    if a.chaining == Chaining::PerLayer {
        // Norms on the device, each adding the residual of the GEMM before it (the first of
        // the stack: the embedded tokens). The final norm before the logits stays on the host
        // with the logits.
        let mut ops = Vec::new();
        for l in 0..w.decoder_layers {
            ops.push(norm_op(p, a, m, w.d, l == 0, H));
            ops.push(lin(w.d, 3 * w.d, false, H, Q));
            ops.push(attn(a.mean_self_keys, kv_image(w.heads, m), true));
            ops.push(lin(w.d, w.d, false, A, R));
            ops.push(norm_op(p, a, m, w.d, false, H));
            ops.push(lin(w.d, w.d, false, H, Q));
            ops.push(attn(ENCODER_ROWS, 0, false));
            ops.push(lin(w.d, w.d, false, A, R));
            ops.push(norm_op(p, a, m, w.d, false, H));
            ops.push(lin(w.d, w.mlp, true, H, HIDDEN));
            ops.push(lin(w.mlp, w.d, false, HIDDEN, R));
        }
        let per_step = ops.iter().filter(|o| o.device.is_some()).count();
        return (ops, per_step);
    }
    let layer = [
        StageOp::host(X, H),
        lin(w.d, 3 * w.d, false, H, Q),
        // The step appends one K/V row per beam and head.
        attn(a.mean_self_keys, kv_image(w.heads, m), true),
        lin(w.d, w.d, false, A, X),
        StageOp::host(X, H),
        lin(w.d, w.d, false, H, Q),
        attn(ENCODER_ROWS, 0, false),
        lin(w.d, w.d, false, A, X),
        StageOp::host(X, H),
        lin(w.d, w.mlp, true, H, HIDDEN),
        lin(w.mlp, w.d, false, HIDDEN, X),
    ];
    let ops = layer.repeat(w.decoder_layers);
    let per_step = ops.iter().filter(|o| o.device.is_some()).count();
    (ops, per_step)
}

/// The cross-attention K/V ops of one window: one fused K/V GEMM per decoder layer, each
/// reading the encoder output (the K/V then stay on the device for every token). Under
/// [`Chaining::PerLayer`] the encoder's final LayerNorm (with the last fc2's residual add) is
/// the chain's first sub-command: it writes the activation image the K/V GEMMs read.
pub fn cross_kv_ops(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Vec<StageOp> {
    let t = gemm(p, a, ENCODER_ROWS, w.d, 2 * w.d, false);
    let d = Design::Gemm(w.d, 2 * w.d, false, false);
    let mut ops = Vec::new();
    if a.chaining == Chaining::PerLayer {
        ops.push(norm_op(p, a, ENCODER_ROWS, w.d, false, ENC));
    }
    ops.extend(vec![StageOp::dev(t, d, ENC, Q); w.decoder_layers]);
    ops
}

/// The encoder of one window, every linear and attention on the device, grouped as
/// `a.chaining` says.
pub fn encoder(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let (ops, per_layer) = encoder_ops(p, a, w, true);
    staged(a, &ops, per_layer)
}

/// The cross-attention K/V of one window.
pub fn cross_kv(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let ops = cross_kv_ops(p, a, w);
    staged(a, &ops, ops.len())
}

/// One decoder step, every linear and attention on the device, grouped as `a.chaining` says.
pub fn decoder_step(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let (ops, per_step) = decoder_ops(p, a, w, true);
    staged(a, &ops, per_step)
}

/// A 30 s window: encoder + cross K/V + `tokens_per_window` decoder steps.
pub fn window(p: &Platform, a: &Assumptions, w: &WhisperDims) -> Totals {
    let mut t = encoder(p, a, w);
    t += cross_kv(p, a, w);
    t += decoder_step(p, a, w) * a.tokens_per_window;
    t
}

/// Weight image bytes uploaded once at load: per encoder layer fused QKV, output, fc1, fc2
/// (row mapping); per decoder layer self QKV, self output, cross query, cross output, fc1, fc2
/// (decoder mapping, padded to whole quads) and the fused cross K/V (row mapping).
pub fn resident_weight_bytes(w: &WhisperDims) -> usize {
    let t = Target::NPU1;
    let img = |k: usize, n: usize| weight_image_len(&GemmDesign::new(t, k, n).expect("fits"));
    let quads = |k: usize, n: usize| weight_image_len(&GemmDesign::decoder(t, k, n).expect("fits"));
    let enc = img(w.d, 3 * w.d) + img(w.d, w.d) + img(w.d, w.mlp) + img(w.mlp, w.d);
    let dec = quads(w.d, 3 * w.d)
        + 3 * quads(w.d, w.d)
        + quads(w.d, w.mlp)
        + quads(w.mlp, w.d)
        + img(w.d, 2 * w.d);
    enc * w.encoder_layers + dec * w.decoder_layers
}

/// The table `examples/dispatch_budget.rs` prints and `aie/README.md` quotes.
pub fn report(models: &[WhisperDims], platforms: &[Platform], a: &Assumptions) -> String {
    let mb = |b: usize| b as f64 / 1e6;
    let mut s = format!(
        "PROJECTION (not measured; no NPU): {:?} chaining, host overhead {:.0} µs/submission, \
         {:.0} µs/sub-command after a chain's first (assumed), {:.0} µs/design switch (assumed), \
         efficiency {:.0} %, softmax {:.2} cycles/score + {:.0}/row, norm {:.2} cycles/element + \
         {:.0}/row (PerLayer only) (per score / element: derived from the kernels' vector \
         operations; per row: assumed), {} tokens/window, {} beam(s)\n",
        a.chaining,
        a.host_overhead_s * 1e6,
        a.subcommand_s * 1e6,
        a.reconfiguration_s * 1e6,
        a.efficiency * 100.0,
        a.softmax_cycles_per_score,
        a.softmax_cycles_per_row,
        a.norm_cycles_per_element,
        a.norm_cycles_per_row,
        a.tokens_per_window,
        a.beams
    );
    s += "model | platform | per window: submissions (sub-commands), MB to / from device, MB shim DMA, projected s (of which overhead), x realtime | per token: submissions, KB to / from, projected ms\n";
    for w in models {
        for p in platforms {
            let win = window(p, a, w);
            let tok = decoder_step(p, a, w);
            s += &format!(
                "{} | {} | {} ({}), {:.1} / {:.1}, {:.0}, {:.3} ({:.3}), {:.0}x | {}, {:.1} / {:.1}, {:.3}\n",
                w.name,
                p.name,
                win.submissions,
                win.subcommands,
                mb(win.bytes_to_device),
                mb(win.bytes_from_device),
                mb(win.dma_bytes),
                win.projected_s,
                win.overhead_s,
                30.0 / win.projected_s,
                tok.submissions,
                tok.bytes_to_device as f64 / 1e3,
                tok.bytes_from_device as f64 / 1e3,
                tok.projected_s * 1e3,
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::{BASE, BLOCK_ROWS, TINY};

    #[test]
    fn submission_counts_follow_the_designs() {
        let a = Assumptions {
            chaining: Chaining::PerOp,
            ..Assumptions::default()
        };
        for w in [TINY, BASE] {
            let win = window(&PHOENIX, &a, &w);
            let want = 5 * w.encoder_layers + w.decoder_layers + 120 * 8 * w.decoder_layers;
            assert_eq!(win.submissions, want);
            assert_eq!(
                decoder_step(&STRIX, &a, &w).submissions,
                8 * w.decoder_layers
            );
            assert!((win.overhead_s - want as f64 * 45e-6).abs() < 1e-9);
        }
    }

    #[test]
    fn gemm_bytes_are_the_buffers_the_program_moves() {
        let a = Assumptions::default();
        let t = gemm(&PHOENIX, &a, 1500, 512, 2048, true);
        // The host writes 1500 activation rows of 512 + 64 bytes and reads 1500 × 2048 f32.
        assert_eq!(t.bytes_to_device, 1500 * 576);
        assert_eq!(t.bytes_from_device, 1500 * 2048 * 4);
        // Shim: A once per channel group (8), the weight image once per super-block (12).
        let w_img = 32 * 9 * 4096;
        assert_eq!(
            t.dma_bytes,
            12 * 8 * 128 * 576 + 12 * w_img + 1536 * 2048 * 4
        );
        // fc1 of base: 1536·512·2048 MACs at 16 × 256 / cycle = 384 µs at 1.024 GHz, plus the
        // GELU epilogue (9 cycles × 2048 elements per tile, 96 tiles per core) and 45 µs of
        // overhead; compute-bound (the 34 MB of DMA take 1.06 ms at 32 GB/s).
        let macs = 1536.0 * 512.0 * 2048.0 / (16.0 * 256.0) / 1.024e9;
        let epi = 12.0 * 8.0 * 2048.0 * 9.0 / 1.024e9;
        let want = macs + epi + 45e-6;
        assert!(
            (t.projected_s - want).abs() < 1e-9,
            "{} vs {want}",
            t.projected_s
        );
    }

    #[test]
    fn projections_order_platforms_and_assumptions_sensibly() {
        let a = Assumptions::default();
        for w in [TINY, BASE] {
            let (ph, sx) = (window(&PHOENIX, &a, &w), window(&STRIX, &a, &w));
            assert!(sx.projected_s < ph.projected_s);
            let slow = Assumptions {
                efficiency: 0.3,
                ..a
            };
            assert!(window(&PHOENIX, &slow, &w).projected_s > ph.projected_s);
            let fast_softmax = Assumptions {
                softmax_cycles_per_score: 1.0,
                ..a
            };
            assert!(
                encoder(&PHOENIX, &fast_softmax, &w).projected_s
                    < encoder(&PHOENIX, &a, &w).projected_s
            );
        }
        let r = report(&[BASE], &[PHOENIX], &a);
        assert!(r.starts_with("PROJECTION (not measured; no NPU)"));
        assert_eq!(CORE_ROWS * TILE_M, BLOCK_ROWS);
        assert!(resident_weight_bytes(&BASE) > 6 * 12 * 512 * 512);
    }

    fn with(chaining: Chaining) -> Assumptions {
        Assumptions {
            chaining,
            ..Assumptions::default()
        }
    }

    fn groups(ops: &(Vec<StageOp>, usize)) -> usize {
        chain_groups(&ops.0).len()
    }

    #[test]
    fn the_chain_rule_gives_the_runtimes_counts_for_linears_only() {
        // Attention on the host as today: base 42 per window (7 a layer: q/k/v, out, the fc1
        // of all 4 chunks, each chunk's fc2), 1 cross K/V chain, 36 per step (6 a layer);
        // tiny 28 and 24 — the counts `amanuensis bench --device emu` measured (README).
        let a = with(Chaining::AsBuilt);
        for (w, win, step) in [(BASE, 42, 36), (TINY, 28, 24)] {
            assert_eq!(groups(&encoder_ops(&PHOENIX, &a, &w, false)), win);
            assert_eq!(groups(&decoder_ops(&PHOENIX, &a, &w, false)), step);
            assert_eq!(chain_groups(&cross_kv_ops(&PHOENIX, &a, &w)).len(), 1);
        }
        // With attention on the device it is one more submission per attention: nothing
        // downstream of it can join a group that starts before it.
        let b = window(&PHOENIX, &a, &BASE);
        assert_eq!(b.submissions, 48 + 1 + 120 * 48);
        assert_eq!(encoder(&PHOENIX, &a, &BASE).subcommands, 6 * (3 + 8));
        // The earlier split (the encoder's and the cross-attention on the device, the decoder's
        // self-attention on the host): base 48 per window and 42 per step, tiny 32 and 28. With
        // the decoder's self-attention on the device too (AMANUENSIS_NPU_ATTENTION=1 today) a
        // step has one more per layer: base 48, tiny 32.
        let earlier = Assumptions {
            self_attention_on_device: false,
            ..a
        };
        for (w, win, step, all) in [(BASE, 48, 42, 48), (TINY, 32, 28, 32)] {
            assert_eq!(encoder(&PHOENIX, &earlier, &w).submissions, win);
            assert_eq!(decoder_step(&PHOENIX, &earlier, &w).submissions, step);
            assert_eq!(decoder_step(&PHOENIX, &a, &w).submissions, all);
        }
    }

    #[test]
    fn per_layer_chains_are_one_submission_per_layer_and_step() {
        let a = with(Chaining::PerLayer);
        for w in [TINY, BASE] {
            let e = encoder(&STRIX, &a, &w);
            assert_eq!(e.submissions, w.encoder_layers);
            // 4 GEMMs, attention and 2 norms a layer.
            assert_eq!(e.subcommands, 7 * w.encoder_layers);
            let x = cross_kv(&STRIX, &a, &w);
            assert_eq!((x.submissions, x.subcommands), (1, 1 + w.decoder_layers));
            let d = decoder_step(&STRIX, &a, &w);
            assert_eq!((d.submissions, d.subcommands), (1, 11 * w.decoder_layers));
            assert!(
                d.submissions <= 6 && e.submissions <= 6,
                "issue 14's targets"
            );
        }
    }

    #[test]
    fn a_chain_pays_the_submission_overhead_once() {
        let a = Assumptions {
            host_overhead_s: 40e-6,
            subcommand_s: 3e-6,
            reconfiguration_s: 7e-6,
            ..Assumptions::default()
        };
        let g = gemm(&PHOENIX, &a, 128, 512, 512, false);
        let att = attention(&PHOENIX, &a, 8, 128, 128, 0);
        let d = Design::Gemm(512, 512, false, false);
        let n = 5;
        // n GEMMs of one design, then an attention: 1 submission, 6 sub-commands, a switch to
        // attention and one back (the stage repeats).
        let mut ops = vec![StageOp::dev(g, d, H, Q); n];
        ops.push(StageOp::dev(att, Design::Attention, H, A));
        let t = submit(&a, &ops, &[(0..=n).collect()]);
        assert_eq!(
            (t.submissions, t.subcommands, t.reconfigurations),
            (1, 6, 2)
        );
        let want_overhead = 40e-6 + 5.0 * 3e-6 + 2.0 * 7e-6;
        assert!((t.overhead_s - want_overhead).abs() < 1e-12);
        let device = n as f64 * (g.projected_s - g.overhead_s) + att.projected_s - att.overhead_s;
        assert!((t.projected_s - device - want_overhead).abs() < 1e-12);
        // Submitted one by one: 6 host overheads, the same switches, no sub-command cost.
        let single: Vec<Vec<usize>> = (0..=n).map(|i| vec![i]).collect();
        let u = submit(&a, &ops, &single);
        assert_eq!(
            (u.submissions, u.subcommands, u.reconfigurations),
            (6, 6, 2)
        );
        assert!((u.overhead_s - (6.0 * 40e-6 + 2.0 * 7e-6)).abs() < 1e-12);
        assert_eq!(u.dma_bytes, t.dma_bytes);
    }

    #[test]
    fn chaining_and_chain_costs_move_the_projection_monotonically() {
        for p in [PHOENIX, STRIX] {
            for w in [TINY, BASE] {
                let (per_op, built, layer) = (
                    window(&p, &with(Chaining::PerOp), &w),
                    window(&p, &with(Chaining::AsBuilt), &w),
                    window(&p, &with(Chaining::PerLayer), &w),
                );
                assert!(layer.submissions < built.submissions);
                assert!(layer.projected_s < built.projected_s);
                assert!(layer.projected_s < per_op.projected_s);
                for chaining in [Chaining::AsBuilt, Chaining::PerLayer] {
                    let mut last = None;
                    for us in [0.0, 5.0, 50.0] {
                        let a = Assumptions {
                            reconfiguration_s: us * 1e-6,
                            subcommand_s: us * 1e-6,
                            chaining,
                            ..Assumptions::default()
                        };
                        let t = window(&p, &a, &w).projected_s;
                        assert!(last.is_none_or(|l| t > l), "{chaining:?} {us} µs");
                        last = Some(t);
                    }
                }
            }
        }
    }

    #[test]
    fn kernel_cycles_follow_from_the_vector_operation_counts() {
        let a = Assumptions::default();
        // 7 multiplies × 6 issues + 17 = 59 cycles per 16 scores; 6 × 6 + 27.5 per 16 elements.
        assert_eq!(a.softmax_cycles_per_score, 59.0 / 16.0);
        assert_eq!(a.norm_cycles_per_element, 63.5 / 16.0);
        // The 'safe' (0 ulp) multiply: 9 issues.
        assert_eq!(SOFTMAX_OPS.cycles_per_lane(9.0), 80.0 / 16.0);
        assert_eq!(NORM_OPS.cycles_per_lane(9.0), 81.5 / 16.0);
        // One encoder attention group on Phoenix: 4 rows × 1500 keys of softmax, 47 chunks of
        // Q·Kᵀ (int8) and P·V (bf16) MACs.
        let t = attention(&PHOENIX, &a, 1, 4, 1500, 0);
        let macs = 4.0 * 47.0 * 32.0 * 64.0 * (1.0 / 256.0 + 1.0 / 128.0);
        let softmax = 4.0 * (1500.0 * 59.0 / 16.0 + 100.0);
        assert!((t.projected_s - t.overhead_s - (macs + softmax) / 1.024e9).abs() < 1e-12);
    }

    #[test]
    fn norm_quant_moves_the_rows_and_costs_its_cycles() {
        let a = Assumptions::default();
        // base, 1500 rows with a residual on Phoenix: 8 cores (2 a column), 32 rows a round,
        // 47 rounds = 1504 rows; x, r and x back as f32, the 576-byte image rows, and the
        // 8 KB parameter object per core.
        let t = norm_quant(&PHOENIX, &a, 1500, 512, true);
        assert_eq!(t.dma_bytes, 1504 * (3 * 2048 + 576) + 8 * 8192);
        assert_eq!((t.bytes_to_device, t.bytes_from_device), (0, 0));
        let compute =
            47.0 * 4.0 * (512.0 * a.norm_cycles_per_element + a.norm_cycles_per_row) / 1.024e9;
        let dma = t.dma_bytes as f64 / 32e9;
        assert!(compute > dma, "compute-bound at the assumed cycles");
        assert!((t.projected_s - compute - 45e-6).abs() < 1e-12);
        // Without a residual: 4 cores a column, the host writes the f32 rows.
        let t = norm_quant(&PHOENIX, &a, 5, 384, false);
        assert_eq!(t.bytes_to_device, 5 * 384 * 4);
        assert_eq!(t.dma_bytes, 64 * (1536 + 448) + 16 * 6144);
    }

    #[test]
    fn per_layer_chains_count_the_norms_device_time() {
        let a = with(Chaining::PerLayer);
        for p in [PHOENIX, STRIX] {
            for w in [TINY, BASE] {
                // The encoder's device time is its GEMMs', attentions' and norms'.
                let (ops, _) = encoder_ops(&p, &a, &w, true);
                let dev = |keep: &dyn Fn(Design) -> bool| -> f64 {
                    ops.iter()
                        .filter_map(|o| o.device)
                        .filter(|&(_, d)| keep(d))
                        .map(|(t, _)| t.projected_s - t.overhead_s)
                        .sum()
                };
                let norms = dev(&|d| matches!(d, Design::NormQuant(..)));
                let all = dev(&|_| true);
                let e = encoder(&p, &a, &w);
                assert!(norms > 0.0);
                assert!((e.projected_s - e.overhead_s - all).abs() < 1e-12);
                // 2 norms a layer, one of them without a residual (layer 0's first).
                let n = ops
                    .iter()
                    .filter(|o| matches!(o.device, Some((_, Design::NormQuant(..)))))
                    .count();
                assert_eq!(n, 2 * w.encoder_layers);
            }
        }
    }
}
