//! Attention on the NPU: the AIE attention kernel (`aie/kernels/attention.cc`, its device
//! program `amanuensis_aie::program::attention`) for the attention ops a device can take
//! whole — [`Op::Attention`] without a causal mask (an encoder's self-attention),
//! [`Op::AttentionPrepared`] (a decoder's cross-attention over prepared keys/values), and
//! [`Op::CachedSelfAttention`] / [`Op::SlotSelfAttention`] (a decoder's causal self-attention
//! over its key/value cache, greedy rows in one slot or one beam row per slot) — when heads are
//! 64 wide and keys (cache positions) at most [`MAX_KEYS`].
//!
//! **Arithmetic** (the kernel's, by design not the CPU INT8 path's bf16 attention): Q and K
//! quantized per row and head to int8 (the CPU quantizer, `q8::quant::quantize_row`; Q's scale
//! times `head_dim^-½`), `Q·Kᵀ` in i32, scores and softmax in f32, probabilities narrowed to
//! bf16, V in bf16, `P·V` accumulated in f32. So the transcripts of `--device emu` with device
//! attention need not equal the CPU INT8 path's; [`NPU_ATTENTION_ENV`] selects it.
//!
//! **Where the quantization runs: on the host**, in the submitting thread, counted in
//! [`AttentionStats::host_quantized_rows`]: per call the query rows of every head; per
//! [`Op::Attention`] also its key rows and values (bf16); per [`Op::PrepareKeyValues`] (once
//! per window) the keys and values of the cross-attention, into a K/V image that then stays
//! resident in its own BO for every decoder step of the window; per cache op the new rows' keys
//! (and their values, bf16), written into the device's K/V cache image.
//!
//! **Self-attention K/V cache on the device**: each key/value cache the program declares has
//! one BO made with the workspace, every slot's K/V image (all `positions` keys, the layout of
//! the other K/V images) one after another. A call uploads only its new rows (per row and head
//! 64 codes, a scale, 64 bf16 values: 196 bytes, each range flushed; counted in
//! [`AttentionStats::cache_bytes_to_device`]); earlier positions stay resident. Greedy and
//! prompt rows ([`Op::CachedSelfAttention`]) attend through the slot's image (the K/V argument
//! is its address) with a causal header (query `i` over keys `..=pos + i`); beam rows
//! ([`Op::SlotSelfAttention`]) are one slot command: a unit per (slot, head) over that slot's
//! image, for slots `0..=max` of the call (slots without a row run no query). A beam fork
//! ([`Op::CopySlot`]) copies the first `len` positions of one slot's image into another on
//! the host side of the shared BO and flushes them (counted in
//! [`AttentionStats::slot_copies`], [`AttentionStats::slot_copy_bytes`]); on a real NPU this
//! is the same host write into host-visible memory, no submission. The host's own cache is
//! still written (the CPU kernels' `cache_write`) so that an op the device leaves to the host
//! (shapes past the buffers, two rows in one slot) finds the same history. Each command moves
//! the whole capacity of a slot's image (the BD lengths are fixed in the stream); the header
//! tells the cores how many keys to use.
//!
//! **Buffers** (per stream, made with the workspace; nothing is allocated per dispatch): one Q
//! image and one output BO sized for the largest call, one K/V image for the self-attention
//! calls, one K/V image per prepared key/value slot, one K/V cache image per key/value cache,
//! the instruction streams (one per query bucket: 4, 8, 16, … rows up to the most the program
//! declares, so a decoder step moves 4 rows, not the prompt's 448; for beam rows one per
//! number of slots), one command ring on the attention design's hardware context.
//!
//! **Submissions**: one command per attention op, all heads, on this design's own context —
//! except an [`Op::Attention`] whose query and key counts are fixed at load (the encoder's
//! self-attention): the chain plan makes it a member of its q/k/v's chain on the designs'
//! context ([`crate::npu_attention_chain`]: the device writes its images from the q/k/v
//! results, its row-major output goes through the device quantize to the out-projection), and
//! this session only forgets the op ([`AttentionSession::clear_pending`]). Same arithmetic,
//! same bits. So are the decoder's cross-attention over the prepared K/V and its greedy
//! self-attention over the cache ([`Op::CachedSelfAttention`]) when their inputs are member
//! linears' stored results: the chain's cache-inputs step appends the new rows to
//! the slot's image on the device at the call's position ([`AttentionSession::cache_image`]
//! gives the chain the image; each slot image holds [`CACHE_SLACK`] positions past the
//! cache's for a rounded write), and this session neither writes the rows nor submits. Beam
//! rows ([`Op::SlotSelfAttention`]) are still one submission each. Because the device writes
//! the cache image, every host write into it (a beam row, a fork's copy) invalidates the lines
//! it touches first.
//!
//! **No xclbin of the attention design has been built** (no mlir-aie / Peano here): like our
//! GEMM design ([`crate::aie_gemm`]) it runs only on the emulated device, whose firmware runs
//! the design's PDI with the array model (`amanuensis_aie::program::attention::attention_array`:
//! the kernels' Rust models, bit-exact with the C++ on the host build).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amanuensis_aie::kernels::attention::{HEAD_DIM, MAX_KEYS, Q_ROWS};
use amanuensis_aie::kernels::numerics::bf16_round;
use amanuensis_aie::program::attention::{
    attention_array, attention_program, slot_attention_program, AttentionImages,
};
use amanuensis_aie::txn::Target;

use crate::backend::BackendError;
use crate::dispatch::{DispatchLog, DispatchRecord};
use crate::npu::bo::MappedBo;
use crate::npu::device::Device;
use crate::npu::emu::EmuDriver;
use crate::npu::ert::{StartCu, MLIR_AIE_OPCODE_TXN};
use crate::npu::heap::{DevBo, Heap};
use crate::npu::hwctx::HwContext;
use crate::npu::program::RegmapLayout;
use crate::npu::ring::{CommandRing, Packet};
use crate::npu::txn::{self, ArrayIo, Limits};
use crate::npu::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use crate::npu::NpuError;
use crate::q8::quant::quantize_row;
use crate::stage::{At, AttentionDims, KeyValueCacheSpec, Op, Program, StageArgs, StageId};

/// `AMANUENSIS_NPU_ATTENTION=1`: run attention on the (emulated) device's attention design.
pub const NPU_ATTENTION_ENV: &str = "AMANUENSIS_NPU_ATTENTION";

/// Whether [`NPU_ATTENTION_ENV`] asks for device attention.
pub fn requested_by_env() -> bool {
    std::env::var(NPU_ATTENTION_ENV).is_ok_and(|v| v == "1")
}

/// The PDI of the attention design on the emulated device: a text naming it.
pub fn emulated_pdi(target: Target) -> Vec<u8> {
    format!(
        "amanuensis EMULATED AIE ATTENTION (no real PDI): {:?} {}c",
        target.generation, target.cols
    )
    .into_bytes()
}

/// `1 / √64`, exact in f32: folded into the query scales.
const QUERY_SCALE: f32 = 0.125;

fn err(op: &'static str) -> impl Fn(NpuError) -> BackendError {
    move |e| BackendError::Device {
        backend: "npu-int8",
        op,
        reason: e.to_string(),
    }
}

fn bad(reason: String) -> BackendError {
    BackendError::Device {
        backend: "npu-int8",
        op: "attention",
        reason,
    }
}

/// Totals of the device attention over every workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttentionStats {
    /// Attention commands submitted (one per attention op).
    pub submissions: u64,
    /// Rows (one head's 64 values) the host quantized to int8: queries every call, keys of
    /// self-attention every call, keys of prepared key/values once per preparation.
    pub host_quantized_rows: u64,
    /// Bytes the host wrote and flushed for the device (Q images, K/V images).
    pub bytes_to_device: u64,
    /// Bytes read back (outputs).
    pub bytes_from_device: u64,
    /// Host time in submit + wait (on the emulator: its execution), ns.
    pub device_ns: u64,
    /// Of `bytes_to_device`: the new rows written into the self-attention K/V cache images
    /// (each call's new keys and values, nothing else).
    pub cache_bytes_to_device: u64,
    /// Beam forks: self-attention K/V slots copied into another slot's image.
    pub slot_copies: u64,
    /// Of `bytes_to_device`: bytes those copies wrote.
    pub slot_copy_bytes: u64,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    host_quantized_rows: AtomicU64,
    bytes_to_device: AtomicU64,
    bytes_from_device: AtomicU64,
    device_ns: AtomicU64,
    cache_bytes_to_device: AtomicU64,
    slot_copies: AtomicU64,
    slot_copy_bytes: AtomicU64,
}

/// The attention design loaded on a device: its hardware context.
pub struct DeviceAttention {
    target: Target,
    ctx: Arc<HwContext>,
    layout: RegmapLayout,
    counters: Counters,
}

/// Whether the attention design takes an op of `dims` (64-wide heads, no mask, 1 to
/// [`MAX_KEYS`] keys).
pub fn takes(dims: &AttentionDims) -> bool {
    dims.head_dim == HEAD_DIM
        && dims.causal_offset.is_none()
        && dims.heads > 0
        && dims.max_q_len > 0
        && (1..=MAX_KEYS).contains(&dims.max_kv_len)
}

/// Whether the attention design takes causal self-attention of `dims` over a key/value cache
/// of `spec` (64-wide heads as the cache holds them, 1 position or more per slot, a slot image
/// of at most [`MAX_KEYS`] keys: [`cache_keys`]).
pub fn takes_cache(dims: &AttentionDims, spec: &KeyValueCacheSpec) -> bool {
    dims.head_dim == HEAD_DIM
        && (spec.heads, spec.head_dim) == (dims.heads, dims.head_dim)
        && dims.heads > 0
        && dims.max_q_len > 0
        && spec.slots > 0
        && spec.positions > 0
        && cache_keys(spec.positions) <= MAX_KEYS
}

/// Keys a slot's K/V image holds past the cache's positions: a chained cache write
/// ([`crate::npu_attention_chain::cache_write_rows`]) of a call of `n` rows at `pos`
/// (`pos + n <= positions`) moves up to 7 rows more than `n`, the source's padding rows, into
/// positions past what the slot then holds (nothing reads them before a later call writes
/// them); the slack keeps them inside the slot's regions.
pub const CACHE_SLACK: usize = 7;

/// Keys of a slot's K/V image for a cache of `positions` positions (the layout of every
/// command over it: its header's `keys`).
pub fn cache_keys(positions: usize) -> usize {
    positions + CACHE_SLACK
}

/// Whether op `op` of a program runs on the attention design: [`Op::Attention`] the design
/// takes, [`Op::AttentionPrepared`] over a slot whose capacity it takes,
/// [`Op::CachedSelfAttention`] and [`Op::SlotSelfAttention`] over a cache it takes.
pub fn on_device<M>(program: &Program<M>, op: &Op) -> bool {
    match op {
        Op::Attention { dims, .. } => takes(dims),
        Op::AttentionPrepared { kv, dims, .. } => {
            let spec = program.key_values()[kv.0 as usize];
            takes(dims) && spec.head_dim == HEAD_DIM && (1..=MAX_KEYS).contains(&spec.capacity)
        }
        Op::CachedSelfAttention { cache, dims, .. } | Op::SlotSelfAttention { cache, dims, .. } => {
            takes_cache(dims, &program.key_value_caches()[cache.0 as usize])
        }
        _ => false,
    }
}

/// Submissions of one call of `stage` on the attention design.
pub fn submissions<M>(program: &Program<M>, stage: StageId) -> usize {
    program
        .stage(stage)
        .ops
        .iter()
        .filter(|op| on_device(program, op))
        .count()
}

impl DeviceAttention {
    /// Registers the attention array model on `emu` (the firmware of `device`) and loads the
    /// design's emulated xclbin into a hardware context on `device`.
    pub fn load_emulated(
        device: &Device,
        heap: &Arc<Heap>,
        emu: &EmuDriver,
        target: Target,
    ) -> Result<Self, NpuError> {
        let pdi = emulated_pdi(target);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        emu.register_kernel(&pdi, move |io: &mut ArrayIo| run_array(io, threads));
        let bytes = XclbinBuilder::mlir_aie(&pdi, target.cols as u16, 3).build();
        let x = Xclbin::parse(&bytes)?;
        let id = x
            .kernels()?
            .into_iter()
            .find_map(|k| k.dpu_kernel_id)
            .unwrap_or(MLIR_AIE_DPU_KERNEL_ID);
        let ctx = HwContext::load(device, heap, &x, id)?;
        Ok(Self {
            target,
            ctx: Arc::new(ctx),
            layout: RegmapLayout::mlir_aie(3),
            counters: Counters::default(),
        })
    }

    /// Totals so far.
    pub fn stats(&self) -> AttentionStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AttentionStats {
            submissions: l(&c.submissions),
            host_quantized_rows: l(&c.host_quantized_rows),
            bytes_to_device: l(&c.bytes_to_device),
            bytes_from_device: l(&c.bytes_from_device),
            device_ns: l(&c.device_ns),
            cache_bytes_to_device: l(&c.cache_bytes_to_device),
            slot_copies: l(&c.slot_copies),
            slot_copy_bytes: l(&c.slot_copy_bytes),
        }
    }

    /// One stream's attention state for `program`, or `None` when no op of it runs on the
    /// design: every BO and instruction stream its calls need.
    pub fn session<M>(
        &self,
        device: &Device,
        heap: &Arc<Heap>,
        program: &Program<M>,
        timeout: Duration,
    ) -> Result<Option<AttentionSession>, BackendError> {
        let mut shapes: Vec<Streams> = Vec::new();
        let (mut q_len, mut out_len, mut kv_len) = (0usize, 0usize, 0usize);
        let mut prepared: Vec<Option<Prepared>> =
            (0..program.key_values().len()).map(|_| None).collect();
        let mut caches: Vec<Option<CacheImage>> = (0..program.key_value_caches().len())
            .map(|_| None)
            .collect();
        let mut slot_shapes: Vec<SlotStreams> = Vec::new();
        let mut most_slots = 0usize;
        let ops = program.stages().iter().flat_map(|s| &s.ops);
        for op in ops.filter(|op| on_device(program, op)) {
            if let Op::CachedSelfAttention { cache, .. } | Op::SlotSelfAttention { cache, .. } = op
            {
                let spec = program.key_value_caches()[cache.0 as usize];
                let c = &mut caches[cache.0 as usize];
                if c.is_none() {
                    let im = AttentionImages::new(spec.heads, Q_ROWS, cache_keys(spec.positions))
                        .map_err(|e| bad(format!("K/V cache {:?}: {e}", spec.name)))?;
                    let bo = MappedBo::share(device, spec.slots * im.kv_image_len())
                        .map_err(err("allocate K/V cache"))?;
                    *c = Some(CacheImage {
                        bo,
                        im,
                        slots: spec.slots,
                    });
                }
                most_slots = most_slots.max(spec.slots);
                if let Op::SlotSelfAttention { .. } = op {
                    let keys = cache_keys(spec.positions);
                    let i = match slot_shapes
                        .iter()
                        .position(|s| (s.heads, s.keys) == (spec.heads, keys))
                    {
                        Some(i) => i,
                        None => {
                            slot_shapes.push(SlotStreams {
                                heads: spec.heads,
                                keys,
                                buckets: Vec::new(),
                            });
                            slot_shapes.len() - 1
                        }
                    };
                    let streams = &mut slot_shapes[i];
                    streams
                        .ensure(self.target, heap, spec.slots)
                        .map_err(err("load slot attention stream"))?;
                    let units = streams.buckets.last().expect("ensure made one").0;
                    q_len = q_len.max(units.q_image_len());
                    out_len = out_len.max(units.out_len());
                    continue;
                }
            }
            let (dims, keys) = match op {
                Op::Attention { dims, .. } => (dims, dims.max_kv_len),
                Op::AttentionPrepared { kv, dims, .. } => {
                    let spec = program.key_values()[kv.0 as usize];
                    (dims, spec.capacity)
                }
                Op::CachedSelfAttention { cache, dims, .. } => (
                    dims,
                    cache_keys(program.key_value_caches()[cache.0 as usize].positions),
                ),
                _ => continue,
            };
            let streams = match shapes
                .iter()
                .position(|s| (s.heads, s.keys) == (dims.heads, keys))
            {
                Some(i) => &mut shapes[i],
                None => {
                    shapes.push(Streams {
                        heads: dims.heads,
                        keys,
                        buckets: Vec::new(),
                    });
                    shapes.last_mut().expect("just pushed")
                }
            };
            streams
                .ensure(self.target, heap, dims.max_q_len)
                .map_err(err("load attention stream"))?;
            let im = streams.largest();
            q_len = q_len.max(im.q_image_len());
            out_len = out_len.max(im.out_len());
            match op {
                Op::Attention { .. } => kv_len = kv_len.max(im.kv_image_len()),
                Op::AttentionPrepared { kv, .. } => {
                    let slot = &mut prepared[kv.0 as usize];
                    if slot.is_none() {
                        let bo = MappedBo::share(device, im.kv_image_len())
                            .map_err(err("allocate prepared K/V"))?;
                        *slot = Some(Prepared {
                            bo,
                            heads: dims.heads,
                            keys,
                            rows: 0,
                        });
                    }
                }
                _ => {}
            }
        }
        if shapes.is_empty() && slot_shapes.is_empty() {
            return Ok(None);
        }
        let share = |len: usize, what| MappedBo::share(device, len.max(64)).map_err(err(what));
        Ok(Some(AttentionSession {
            ring: CommandRing::new(device, self.ctx.clone(), 1, timeout)
                .map_err(err("create attention ring"))?,
            shapes,
            q: share(q_len, "allocate attention Q")?,
            kv: share(kv_len, "allocate attention K/V")?,
            out: share(out_len, "allocate attention output")?,
            prepared,
            caches,
            slot_shapes,
            slot_row: vec![NO_ROW; most_slots],
            row_slot: vec![0; most_slots],
            regmap: vec![0; self.layout.words()],
            pending: None,
            unrecorded_bytes: 0,
        }))
    }

    /// Called before op `op` of `stage` runs (see [`crate::backend::LayerKernels::begin_op`]):
    /// prepares a slot's K/V image, or runs an attention op on the device (its result waits
    /// in the session for [`AttentionSession::take_result`]). An op whose inputs do not fit
    /// its buffers is left to the host, which reports it. Each submission is recorded in
    /// `log` (the stream's dispatch log, shared with its linears), when there is one.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_op<'a, M>(
        &self,
        s: &mut AttentionSession,
        program: &Program<M>,
        stage: StageId,
        op: usize,
        args: &StageArgs,
        input: &dyn Fn(At, usize) -> Option<&'a [f32]>,
        log: Option<&mut DispatchLog>,
    ) -> Result<(), BackendError> {
        let t0 = Instant::now();
        s.pending = None;
        let op = &program.stage(stage).ops[op];
        match *op {
            Op::PrepareKeyValues { k, v, rows, kv } => {
                let Some(p) = s.prepared.get_mut(kv.0 as usize).and_then(Option::as_mut) else {
                    return Ok(());
                };
                let w = p.heads * HEAD_DIM;
                let (Some(ks), Some(vs)) = (input(k, rows * w), input(v, rows * w)) else {
                    return Ok(());
                };
                if rows == 0 || rows > p.keys {
                    p.rows = 0;
                    return Ok(());
                }
                let im = AttentionImages::new(p.heads, 4, p.keys)
                    .map_err(|e| bad(format!("prepared K/V: {e}")))?;
                let bytes = write_kv(&mut p.bo, &im, rows, ks, vs);
                p.rows = rows;
                s.unrecorded_bytes += bytes;
                self.count_host(bytes, p.heads * rows);
                Ok(())
            }
            Op::Attention { q, k, v, dims, .. } if on_device(program, op) => {
                let shape = dims.shape(args);
                let w = dims.width();
                let (n_q, n_keys) = (shape.q_len, shape.kv_len);
                if n_q == 0 || n_q > dims.max_q_len || n_keys == 0 || n_keys > dims.max_kv_len {
                    return Ok(());
                }
                let (Some(qs), Some(ks), Some(vs)) = (
                    input(q, n_q * w),
                    input(k, n_keys * w),
                    input(v, n_keys * w),
                ) else {
                    return Ok(());
                };
                let (im, instr) = s.stream(dims.heads, dims.max_kv_len, n_q)?;
                let mut bytes = write_q(&mut s.q, &im, n_q, n_keys, None, qs);
                bytes += write_kv(&mut s.kv, &im, n_keys, ks, vs);
                self.count_host(bytes, dims.heads * (n_q + n_keys));
                self.submit(s, im, instr, KvArg::Own, (n_q, n_keys, bytes), (t0, log))
            }
            Op::AttentionPrepared { q, kv, dims, .. } if on_device(program, op) => {
                let Some(p) = s.prepared.get(kv.0 as usize).and_then(Option::as_ref) else {
                    return Ok(());
                };
                let (n_keys, keys) = (p.rows, p.keys);
                let n_q = dims.q_len.at(args);
                if n_keys == 0 || n_q == 0 || n_q > dims.max_q_len {
                    return Ok(());
                }
                let Some(qs) = input(q, n_q * dims.width()) else {
                    return Ok(());
                };
                let (im, instr) = s.stream(dims.heads, keys, n_q)?;
                let bytes = write_q(&mut s.q, &im, n_q, n_keys, None, qs);
                self.count_host(bytes, dims.heads * n_q);
                self.submit(
                    s,
                    im,
                    instr,
                    KvArg::Prepared(kv.0 as usize),
                    (n_q, n_keys, bytes),
                    (t0, log),
                )
            }
            Op::CachedSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                slot,
                dims,
                ..
            } if on_device(program, op) => {
                let (rows, pos, w) = (args.rows, args.pos, dims.width());
                let Some(c) = s.caches.get_mut(cache.0 as usize).and_then(Option::as_mut) else {
                    return Ok(());
                };
                let keys = c.im.keys;
                if rows == 0 || rows > dims.max_q_len || slot >= c.slots || pos + rows > keys {
                    return Ok(());
                }
                let (Some(qs), Some(ks), Some(vs)) = (
                    input(q, rows * w),
                    input(k_new, rows * w),
                    input(v_new, rows * w),
                ) else {
                    return Ok(());
                };
                // Only the new rows go to the device; the slot's earlier rows stay resident.
                let mut cache_bytes = 0;
                for r in 0..rows {
                    let row = r * w..(r + 1) * w;
                    cache_bytes += c.write_row(slot, pos + r, &ks[row.clone()], &vs[row]);
                }
                let offset = slot * c.im.kv_image_len();
                let n_keys = pos + rows;
                let (im, instr) = s.stream(dims.heads, keys, rows)?;
                let bytes = cache_bytes + write_q(&mut s.q, &im, rows, n_keys, Some(pos), qs);
                self.count_host(bytes, 2 * dims.heads * rows);
                self.count_cache(cache_bytes);
                let kv = KvArg::Cache(cache.0 as usize, offset);
                self.submit(s, im, instr, kv, (rows, n_keys, bytes), (t0, log))
            }
            Op::SlotSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                dims,
                ..
            } if on_device(program, op) => {
                let (rows, pos, w) = (args.rows, args.pos, dims.width());
                let Some(slots) = args.slots.get(..rows) else {
                    return Ok(());
                };
                let Some(c) = s.caches.get_mut(cache.0 as usize).and_then(Option::as_mut) else {
                    return Ok(());
                };
                let keys = c.im.keys;
                if rows == 0 || pos >= keys || slots.iter().any(|&x| x >= c.slots) {
                    return Ok(());
                }
                let (Some(qs), Some(ks), Some(vs)) = (
                    input(q, rows * w),
                    input(k_new, rows * w),
                    input(v_new, rows * w),
                ) else {
                    return Ok(());
                };
                let mut cache_bytes = 0;
                for (r, &slot) in slots.iter().enumerate() {
                    let row = r * w..(r + 1) * w;
                    cache_bytes += c.write_row(slot, pos, &ks[row.clone()], &vs[row]);
                }
                self.count_host(cache_bytes, dims.heads * rows);
                self.count_cache(cache_bytes);
                // One query per slot: two rows in one slot attend one after the other (each
                // over its own row), which the host does.
                s.slot_row.fill(NO_ROW);
                for (r, &slot) in slots.iter().enumerate() {
                    if s.slot_row[slot] != NO_ROW {
                        s.unrecorded_bytes += cache_bytes;
                        return Ok(());
                    }
                    s.slot_row[slot] = r;
                    s.row_slot[r] = slot;
                }
                let n_slots = slots.iter().max().map_or(0, |&m| m + 1);
                let (units, instr) = s.slot_stream(dims.heads, keys, n_slots)?;
                let q_bytes = write_slot_queries(s, &units, dims.heads, pos, qs);
                self.count_host(q_bytes, dims.heads * rows);
                let bytes = cache_bytes + q_bytes;
                let kv = KvArg::Cache(cache.0 as usize, 0);
                self.submit(s, units, instr, kv, (1, pos + 1, bytes), (t0, log))?;
                s.pending = Some(Pending::Slots {
                    im: units,
                    heads: dims.heads,
                    rows,
                    next: 0,
                });
                Ok(())
            }
            Op::CopySlot { cache, len } => {
                let Some(c) = s.caches.get_mut(cache.0 as usize).and_then(Option::as_mut) else {
                    return Ok(());
                };
                let &[from, to] = args.slots else {
                    return Ok(());
                };
                let len = len.at(args);
                if from >= c.slots || to >= c.slots || from == to || len > c.im.keys {
                    return Ok(());
                }
                let bytes = c.copy_slot(from, to, len);
                s.unrecorded_bytes += bytes;
                let k = &self.counters;
                k.bytes_to_device.fetch_add(bytes as u64, Ordering::Relaxed);
                k.slot_copies.fetch_add(1, Ordering::Relaxed);
                k.slot_copy_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn count_cache(&self, bytes: usize) {
        self.counters
            .cache_bytes_to_device
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn count_host(&self, bytes: usize, rows: usize) {
        let c = &self.counters;
        c.bytes_to_device.fetch_add(bytes as u64, Ordering::Relaxed);
        c.host_quantized_rows
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// One command over the session's Q image, the K/V image (`kv`) and the output; waited for, the output invalidated. `(n_q, n_keys,
    /// flushed)`: the call's queries, keys and the bytes the host wrote since `t0`.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        s: &mut AttentionSession,
        im: AttentionImages,
        (instr_addr, instr_handle, instr_words): (u64, u32, u32),
        kv: KvArg,
        (n_q, n_keys, flushed): (usize, usize, usize),
        (t0, log): (Instant, Option<&mut DispatchLog>),
    ) -> Result<(), BackendError> {
        let t1 = Instant::now();
        let (kv_addr, kv_handle) = match kv {
            KvArg::Own => (s.kv.device_addr(), s.kv.handle()),
            KvArg::Prepared(i) => match s.prepared.get(i).and_then(Option::as_ref) {
                Some(p) => (p.bo.device_addr(), p.bo.handle()),
                None => return Err(bad(format!("prepared slot {i} has no device image"))),
            },
            KvArg::Cache(i, offset) => match s.caches.get(i).and_then(Option::as_ref) {
                Some(c) => (c.bo.device_addr() + offset as u64, c.bo.handle()),
                None => return Err(bad(format!("K/V cache {i} has no device image"))),
            },
        };
        self.layout
            .write(
                MLIR_AIE_OPCODE_TXN,
                instr_addr,
                instr_words,
                &[s.q.device_addr(), kv_addr, s.out.device_addr()],
                &mut s.regmap,
            )
            .map_err(|e| bad(format!("command: {e}")))?;
        let handles = [instr_handle, s.q.handle(), kv_handle, s.out.handle()];
        let ticket = s
            .ring
            .submit(
                &Packet::StartCu(StartCu {
                    cu_mask: 1,
                    regmap: &s.regmap,
                }),
                &handles,
            )
            .map_err(err("submit attention"))?;
        let t2 = Instant::now();
        if let Err(e) = s.ring.wait(ticket) {
            let _ = s.ring.drain();
            return Err(err("wait for attention")(e));
        }
        let t3 = Instant::now();
        s.out.flush(0..im.out_len());
        let t4 = Instant::now();
        let out_bytes = (im.heads * n_q * HEAD_DIM * 4) as u64;
        let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
        if let Some(log) = log {
            // MACs the cores compute: Q·Kᵀ (int8) and P·V (bf16) over whole query groups and
            // key chunks, padding included.
            let groups = n_q.div_ceil(amanuensis_aie::kernels::attention::Q_ROWS);
            let keys = n_keys.next_multiple_of(amanuensis_aie::kernels::attention::KEY_CHUNK);
            let macs = 2
                * im.heads
                * groups
                * amanuensis_aie::kernels::attention::Q_ROWS
                * keys
                * HEAD_DIM;
            let flushed = flushed + std::mem::take(&mut s.unrecorded_bytes);
            log.record(DispatchRecord {
                bytes: flushed as u64 + out_bytes,
                bytes_out: out_bytes,
                flush_ns: ns(t0, t1),
                submit_ns: ns(t1, t2),
                wait_ns: ns(t2, t3),
                invalidate_ns: ns(t3, t4),
                macs: macs as u64,
            });
        }
        let c = &self.counters;
        c.submissions.fetch_add(1, Ordering::Relaxed);
        c.bytes_from_device.fetch_add(out_bytes, Ordering::Relaxed);
        c.device_ns.fetch_add(ns(t1, t3), Ordering::Relaxed);
        s.pending = Some(Pending::Rows { im, n_q });
        Ok(())
    }
}

/// The K/V argument of a command.
#[derive(Clone, Copy)]
enum KvArg {
    /// The session's own K/V image (self-attention of the call's rows).
    Own,
    /// A prepared key/value slot's image.
    Prepared(usize),
    /// Cache `.0`'s image from byte `.1` (a slot's image, or all slots from 0).
    Cache(usize, usize),
}

/// The instruction streams of one shape (heads, keys): one per query bucket.
struct Streams {
    heads: usize,
    keys: usize,
    /// Ascending query rows.
    buckets: Vec<(AttentionImages, DevBo, u32)>,
}

impl Streams {
    /// Streams for every bucket up to `max_q` query rows: 4, 8, 16, … and `max_q` itself
    /// (rounded up to whole query groups).
    fn ensure(&mut self, target: Target, heap: &Arc<Heap>, max_q: usize) -> Result<(), NpuError> {
        let top = max_q.next_multiple_of(amanuensis_aie::kernels::attention::Q_ROWS);
        let mut rows = amanuensis_aie::kernels::attention::Q_ROWS;
        loop {
            let r = rows.min(top);
            if !self.buckets.iter().any(|b| b.0.q_rows == r) {
                let im = AttentionImages::new(self.heads, r, self.keys).map_err(|e| {
                    NpuError::InvalidRequest {
                        what: format!("attention images: {e}"),
                    }
                })?;
                let words =
                    attention_program(target, &im).map_err(|e| NpuError::InvalidRequest {
                        what: format!("attention stream: {e}"),
                    })?;
                let lens = [im.q_image_len(), im.kv_image_len(), im.out_len()];
                let (bo, n) = load_stream(target, heap, &words, lens)?;
                self.buckets.push((im, bo, n));
                self.buckets.sort_by_key(|b| b.0.q_rows);
            }
            if r == top {
                return Ok(());
            }
            rows *= 2;
        }
    }

    fn largest(&self) -> AttentionImages {
        self.buckets.last().expect("ensure made one").0
    }
}

/// Validates `words` (an attention stream over buffers of `lens` bytes) and loads it into a
/// device BO: (BO, words).
fn load_stream(
    target: Target,
    heap: &Arc<Heap>,
    words: &[u32],
    lens: [usize; 3],
) -> Result<(DevBo, u32), NpuError> {
    let lens = lens.map(|n| n as u64);
    let plan = txn::validate(
        words,
        &Limits {
            arg_lens: &lens,
            partition_cols: Some(target.cols),
        },
    )?;
    if plan.summary.unawaited != 0 {
        return Err(NpuError::InvalidRequest {
            what: format!(
                "attention stream: {} tasks never awaited",
                plan.summary.unawaited
            ),
        });
    }
    let mut bo = DevBo::create(heap, 4 * words.len())?;
    for (d, w) in bo.bytes_mut().chunks_exact_mut(4).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    bo.flush(0..4 * words.len());
    Ok((bo, words.len() as u32))
}

/// The slot commands of one cache shape (heads, keys = positions per slot): one stream per
/// number of slots `n` (index `n − 1`), over `n · heads` units of one query each.
struct SlotStreams {
    heads: usize,
    keys: usize,
    /// By slots − 1: the images of the units (Q regions and outputs: `n · heads` heads of
    /// [`Q_ROWS`] rows), the stream, its words.
    buckets: Vec<(AttentionImages, DevBo, u32)>,
}

impl SlotStreams {
    /// Streams for 1 to `slots` slots.
    fn ensure(&mut self, target: Target, heap: &Arc<Heap>, slots: usize) -> Result<(), NpuError> {
        let shape = |e: amanuensis_aie::AieError| NpuError::InvalidRequest {
            what: format!("slot attention: {e}"),
        };
        let per_slot = AttentionImages::new(self.heads, Q_ROWS, self.keys).map_err(shape)?;
        for n in self.buckets.len() + 1..=slots {
            let units = AttentionImages::new(n * self.heads, Q_ROWS, self.keys).map_err(shape)?;
            let words = slot_attention_program(target, &per_slot, n).map_err(shape)?;
            let lens = [
                units.q_image_len(),
                n * per_slot.kv_image_len(),
                units.out_len(),
            ];
            let (bo, w) = load_stream(target, heap, &words, lens)?;
            self.buckets.push((units, bo, w));
        }
        Ok(())
    }
}

/// A self-attention key/value cache's device image: each slot's K/V image
/// ([`AttentionImages::kv_image_len`] bytes, `keys` = the cache's positions), slot after slot.
struct CacheImage {
    bo: MappedBo,
    /// One slot's images (`heads` of the cache, `keys` its positions).
    im: AttentionImages,
    slots: usize,
}

impl CacheImage {
    /// Row `k`, `v` (`heads · 64` each) at position `pos` of slot `slot`: key codes and scale
    /// (the CPU quantizer), bf16 values, every head, each range flushed. Returns the bytes.
    fn write_row(&mut self, slot: usize, pos: usize, k: &[f32], v: &[f32]) -> usize {
        let (im, base) = (self.im, slot * self.im.kv_image_len());
        // The device writes this image too (a chained cache write): the lines the row
        // shares with other positions are invalidated first, so that the flush after the
        // host's write carries the device's bytes of those positions, not stale ones.
        for h in 0..im.heads {
            for (at, n) in row_ranges(&im, h, pos, 1) {
                self.bo.flush(base + at..base + at + n);
            }
        }
        put_key_value_row(self.bo.bytes_mut(), &im, base, pos, k, v);
        for h in 0..im.heads {
            for (at, n) in row_ranges(&im, h, pos, 1) {
                self.bo.flush(base + at..base + at + n);
            }
        }
        im.heads * ROW_BYTES
    }

    /// Copies the first `len` positions of slot `from` into slot `to`; returns the bytes.
    fn copy_slot(&mut self, from: usize, to: usize, len: usize) -> usize {
        let (im, stride) = (self.im, self.im.kv_image_len());
        // The device may have written either slot (a chained cache write): both ranges
        // invalidated before the host reads the one and writes the other.
        for h in 0..im.heads {
            for (at, n) in row_ranges(&im, h, 0, len) {
                self.bo.flush(from * stride + at..from * stride + at + n);
                self.bo.flush(to * stride + at..to * stride + at + n);
            }
        }
        let bytes = self.bo.bytes_mut();
        for h in 0..im.heads {
            for (at, n) in row_ranges(&im, h, 0, len) {
                bytes.copy_within(from * stride + at..from * stride + at + n, to * stride + at);
            }
        }
        for h in 0..im.heads {
            for (at, n) in row_ranges(&im, h, 0, len) {
                self.bo.flush(to * stride + at..to * stride + at + n);
            }
        }
        im.heads * len * ROW_BYTES
    }
}

/// Bytes of one key/value row of one head in a K/V image: 64 codes, an f32 scale, 64 bf16.
const ROW_BYTES: usize = HEAD_DIM + 4 + 2 * HEAD_DIM;

/// (offset, bytes) of rows `pos..pos + n` of head `h` in a K/V image `im`: codes, scales, values.
fn row_ranges(im: &AttentionImages, h: usize, pos: usize, n: usize) -> [(usize, usize); 3] {
    [
        (im.k_codes(h) + pos * HEAD_DIM, n * HEAD_DIM),
        (im.k_scales(h) + 4 * pos, 4 * n),
        (im.values(h) + 2 * pos * HEAD_DIM, 2 * n * HEAD_DIM),
    ]
}

/// A prepared key/value slot's device image.
struct Prepared {
    bo: MappedBo,
    heads: usize,
    /// Capacity (keys the image holds).
    keys: usize,
    /// Rows prepared (0: none yet).
    rows: usize,
}

/// One stream's attention state (see [`DeviceAttention::session`]).
pub struct AttentionSession {
    ring: CommandRing,
    shapes: Vec<Streams>,
    q: MappedBo,
    kv: MappedBo,
    out: MappedBo,
    /// By key/value slot.
    prepared: Vec<Option<Prepared>>,
    /// By key/value cache: its device image (caches the design attends over).
    caches: Vec<Option<CacheImage>>,
    slot_shapes: Vec<SlotStreams>,
    /// Per cache slot, the row of the current slot call in it ([`NO_ROW`]: none).
    slot_row: Vec<usize>,
    /// Per row of the current slot call, its slot.
    row_slot: Vec<usize>,
    regmap: Vec<u32>,
    /// The result of the op the last `begin_op` ran.
    pending: Option<Pending>,
    /// Bytes written for the device (prepared K/V images) that no dispatch record holds yet:
    /// the next submission's record takes them.
    unrecorded_bytes: usize,
}

/// No row of the slot call in this slot.
const NO_ROW: usize = usize::MAX;

/// Where the result of the last submitted op waits in the output BO.
#[derive(Clone, Copy)]
enum Pending {
    /// `n_q` rows of every head: head `h` in output region `h`.
    Rows { im: AttentionImages, n_q: usize },
    /// One row per slot: row `r`'s head `h` in output region `row_slot[r] · heads + h`;
    /// `next` the row the next [`AttentionSession::take_result`] writes (the host attends the
    /// rows of a slot call one at a time).
    Slots {
        im: AttentionImages,
        heads: usize,
        rows: usize,
        next: usize,
    },
}

impl AttentionSession {
    /// The unit images and stream (address, handle, words) of a slot call over `n_slots`
    /// slots of a cache of (`heads`, `keys`).
    fn slot_stream(
        &self,
        heads: usize,
        keys: usize,
        n_slots: usize,
    ) -> Result<(AttentionImages, (u64, u32, u32)), BackendError> {
        self.slot_shapes
            .iter()
            .find(|s| (s.heads, s.keys) == (heads, keys))
            .and_then(|s| s.buckets.get(n_slots.checked_sub(1)?))
            .map(|(im, bo, words)| (*im, (bo.device_addr(), bo.handle(), *words)))
            .ok_or_else(|| {
                bad(format!(
                    "no slot stream for {heads} heads, {keys} positions, {n_slots} slots"
                ))
            })
    }

    /// The images and stream (address, handle, words) for `n_q` queries of shape
    /// (`heads`, `keys`).
    fn stream(
        &self,
        heads: usize,
        keys: usize,
        n_q: usize,
    ) -> Result<(AttentionImages, (u64, u32, u32)), BackendError> {
        self.shapes
            .iter()
            .find(|s| (s.heads, s.keys) == (heads, keys))
            .and_then(|s| s.buckets.iter().find(|b| b.0.q_rows >= n_q))
            .map(|(im, bo, words)| (*im, (bo.device_addr(), bo.handle(), *words)))
            .ok_or_else(|| {
                bad(format!(
                    "no stream for {heads} heads, {keys} keys, {n_q} queries"
                ))
            })
    }

    /// The device image of prepared key/value slot `kv`: `(device address, handle, rows)`,
    /// when it holds rows (prepared this window).
    pub fn prepared_image(&self, kv: usize) -> Option<(u64, u32, usize)> {
        let p = self.prepared.get(kv)?.as_ref()?;
        (p.rows > 0).then(|| (p.bo.device_addr(), p.bo.handle(), p.rows))
    }

    /// The device image of key/value cache `cache`: `(device address, handle, bytes per
    /// slot, slots, positions per slot image)` ([`cache_keys`] of the cache's positions), when
    /// the design attends over it.
    pub fn cache_image(&self, cache: usize) -> Option<(u64, u32, usize, usize, usize)> {
        let c = self.caches.get(cache)?.as_ref()?;
        Some((
            c.bo.device_addr(),
            c.bo.handle(),
            c.im.kv_image_len(),
            c.slots,
            c.im.keys,
        ))
    }

    /// Forgets the result of the op before: the current op runs elsewhere (a chain member).
    pub fn clear_pending(&mut self) {
        self.pending = None;
    }

    /// Writes the result of the attention op the last `begin_op` ran into `out`
    /// (`[n_q, heads·64]`; of a slot call, the next row, one call per row); false when it ran
    /// none (the op is the host's).
    pub fn take_result(&mut self, out: &mut [f32]) -> bool {
        let (im, n_q) = match self.pending.take() {
            None => return false,
            Some(Pending::Rows { im, n_q }) => (im, n_q),
            Some(Pending::Slots {
                im,
                heads,
                rows,
                next,
            }) => {
                let o: &[f32] = bytemuck::cast_slice(&self.out.bytes()[..im.out_len()]);
                let unit = self.row_slot[next] * heads;
                for (h, dst) in out[..heads * HEAD_DIM]
                    .chunks_exact_mut(HEAD_DIM)
                    .enumerate()
                {
                    dst.copy_from_slice(&o[im.out(unit + h) / 4..][..HEAD_DIM]);
                }
                if next + 1 < rows {
                    self.pending = Some(Pending::Slots {
                        im,
                        heads,
                        rows,
                        next: next + 1,
                    });
                }
                return true;
            }
        };
        let w = im.heads * HEAD_DIM;
        let o: &[f32] = bytemuck::cast_slice(&self.out.bytes()[..im.out_len()]);
        for h in 0..im.heads {
            let head = &o[im.out(h) / 4..][..n_q * HEAD_DIM];
            for (dst, src) in out[..n_q * w]
                .chunks_exact_mut(w)
                .zip(head.chunks_exact(HEAD_DIM))
            {
                dst[h * HEAD_DIM..(h + 1) * HEAD_DIM].copy_from_slice(src);
            }
        }
        true
    }
}

/// Headers, query codes and scales of every head into the Q image (`causal: Some(pos)`: query
/// `r` sees keys `..=pos + r`); returns the bytes flushed.
fn write_q(
    bo: &mut MappedBo,
    im: &AttentionImages,
    n_q: usize,
    n_keys: usize,
    causal: Option<usize>,
    x: &[f32],
) -> usize {
    let w = im.heads * HEAD_DIM;
    let header = im.header(n_q, n_keys, causal);
    let bytes = bo.bytes_mut();
    for h in 0..im.heads {
        bytes[im.q_header(h)..im.q_codes(h)].copy_from_slice(&header);
        for r in 0..n_q {
            put_query(bytes, im, h, r, &x[r * w + h * HEAD_DIM..][..HEAD_DIM]);
        }
    }
    bo.flush(0..im.q_image_len());
    im.q_image_len()
}

/// Query row `r` of unit `u` (64 values): codes and scale (times `head_dim^-½`).
fn put_query(bytes: &mut [u8], im: &AttentionImages, u: usize, r: usize, x: &[f32]) {
    let codes: &mut [i8] =
        bytemuck::cast_slice_mut(&mut bytes[im.q_codes(u) + r * HEAD_DIM..][..HEAD_DIM]);
    let s = quantize_row(x, codes) * QUERY_SCALE;
    bytes[im.q_scales(u) + 4 * r..][..4].copy_from_slice(&s.to_le_bytes());
}

/// The Q image of a slot call (`units`: `n_slots · heads` units): unit `slot · heads + h` holds
/// head `h` of the row in `slot` (one query over keys `..=pos`), or no query; returns the bytes
/// flushed.
fn write_slot_queries(
    s: &mut AttentionSession,
    units: &AttentionImages,
    heads: usize,
    pos: usize,
    x: &[f32],
) -> usize {
    let w = heads * HEAD_DIM;
    let (one, none) = (units.header(1, pos + 1, None), units.header(0, 1, None));
    let bytes = s.q.bytes_mut();
    for u in 0..units.heads {
        let row = s.slot_row[u / heads];
        let h = u % heads;
        let header = if row == NO_ROW { &none } else { &one };
        bytes[units.q_header(u)..units.q_codes(u)].copy_from_slice(header);
        if row != NO_ROW {
            put_query(bytes, units, u, 0, &x[row * w + h * HEAD_DIM..][..HEAD_DIM]);
        }
    }
    s.q.flush(0..units.q_image_len());
    units.q_image_len()
}

/// Key row `k` and value row `v` (`heads · 64` each) at position `pos` of the K/V image `im`
/// starting at byte `base`: per head the codes and scale (the CPU quantizer) and bf16 values.
fn put_key_value_row(
    bytes: &mut [u8],
    im: &AttentionImages,
    base: usize,
    pos: usize,
    k: &[f32],
    v: &[f32],
) {
    for h in 0..im.heads {
        let [(codes_at, _), (scale_at, _), (values_at, _)] = row_ranges(im, h, pos, 1);
        let codes: &mut [i8] = bytemuck::cast_slice_mut(&mut bytes[base + codes_at..][..HEAD_DIM]);
        let s = quantize_row(&k[h * HEAD_DIM..][..HEAD_DIM], codes);
        bytes[base + scale_at..][..4].copy_from_slice(&s.to_le_bytes());
        let dst = &mut bytes[base + values_at..][..2 * HEAD_DIM];
        for (d, &x) in dst.chunks_exact_mut(2).zip(&v[h * HEAD_DIM..][..HEAD_DIM]) {
            d.copy_from_slice(&bf16_round(x).to_le_bytes());
        }
    }
}

/// Key codes, scales and bf16 values of every head into a K/V image; returns the bytes
/// flushed.
fn write_kv(bo: &mut MappedBo, im: &AttentionImages, n_keys: usize, k: &[f32], v: &[f32]) -> usize {
    let w = im.heads * HEAD_DIM;
    let bytes = bo.bytes_mut();
    for r in 0..n_keys {
        let row = r * w..(r + 1) * w;
        put_key_value_row(bytes, im, 0, r, &k[row.clone()], &v[row]);
    }
    bo.flush(0..im.kv_image_len());
    im.kv_image_len()
}

/// The emulated firmware's array: the attention model on the delivered streams.
fn run_array(io: &mut ArrayIo, threads: usize) -> Result<(), String> {
    let inputs: BTreeMap<(u8, u8), Vec<u8>> = io
        .inputs()
        .map(|(ch, b)| ((ch.col, ch.channel), b.to_vec()))
        .collect();
    for (col, bytes) in attention_array(&inputs, threads)? {
        io.send(col, 0, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::cpu_int8_backend::CpuInt8Backend;
    use crate::npu_backend::{emulated_config, NpuBackend};
    use crate::stage::{BufferId, Extent, KeyValueCacheSpec, KeyValuesSpec, Residency};
    use amanuensis_aie::kernels::attention::{attend, quantize_rows};

    const HEADS: usize = 3;
    const W: usize = HEADS * HEAD_DIM;
    const T: usize = 70;
    const MAX_Q: usize = 9;

    fn dims(q_len: Extent, max_q_len: usize) -> AttentionDims {
        AttentionDims {
            heads: HEADS,
            head_dim: HEAD_DIM,
            q_len,
            kv_len: Extent::fixed(T),
            causal_offset: None,
            max_q_len,
            max_kv_len: T,
        }
    }

    /// Self-attention of `T` rows (stage 0), then prepared keys/values (stage 1) and
    /// attention of `rows` queries over them (stage 2). Buffers: x (queries), k, v, out.
    fn program<B: Backend>() -> (Program<B::Matrix>, [BufferId; 4]) {
        let mut p = Program::new();
        let b = [
            p.add_buffer("x", T * W, Residency::Resident),
            p.add_buffer("k", T * W, Residency::Resident),
            p.add_buffer("v", T * W, Residency::Resident),
            p.add_buffer("out", T * W, Residency::Resident),
        ];
        let kv = p.add_key_values(KeyValuesSpec {
            heads: HEADS,
            head_dim: HEAD_DIM,
            capacity: T,
        });
        p.add_stage(
            "self",
            vec![Op::Attention {
                q: At::start(b[0]),
                k: At::start(b[1]),
                v: At::start(b[2]),
                out: At::start(b[3]),
                dims: dims(Extent::fixed(T), T),
            }],
        );
        p.add_stage(
            "prepare",
            vec![Op::PrepareKeyValues {
                k: At::start(b[1]),
                v: At::start(b[2]),
                rows: T,
                kv,
            }],
        );
        p.add_stage(
            "cross",
            vec![Op::AttentionPrepared {
                q: At::start(b[0]),
                kv,
                out: At::start(b[3]),
                dims: dims(Extent::rows(1), MAX_Q),
            }],
        );
        (p, b)
    }

    /// What the kernel computes for `n_q` rows of `x` over `k`, `v`: per head, the codes the
    /// CPU quantizer makes, through the kernel model.
    fn kernel_model(x: &[f32], k: &[f32], v: &[f32], n_q: usize) -> Vec<f32> {
        let head = |m: &[f32], rows: usize, h: usize| -> Vec<f32> {
            (0..rows)
                .flat_map(|r| m[r * W + h * HEAD_DIM..][..HEAD_DIM].to_vec())
                .collect()
        };
        let mut out = vec![0.0; n_q * W];
        for h in 0..HEADS {
            let (qc, mut qs) = quantize_rows(&head(x, n_q, h));
            qs.iter_mut().for_each(|s| *s *= QUERY_SCALE);
            let (kc, ks) = quantize_rows(&head(k, T, h));
            let vb: Vec<u16> = head(v, T, h).into_iter().map(bf16_round).collect();
            let o = attend(&qc, &qs, &kc, &ks, &vb, &vec![T as u32; n_q]);
            for r in 0..n_q {
                out[r * W + h * HEAD_DIM..][..HEAD_DIM]
                    .copy_from_slice(&o[r * HEAD_DIM..][..HEAD_DIM]);
            }
        }
        out
    }

    fn run<B: Backend>(b: &B, inputs: &[Vec<f32>; 3], rows: &[usize]) -> Vec<Vec<f32>> {
        let (p, buf) = program::<B>();
        let mut ws = b.workspace(&p, 1).unwrap();
        for (i, x) in inputs.iter().enumerate() {
            b.write(&mut ws, buf[i], 0, x).unwrap();
        }
        let mut outs = Vec::new();
        let args = |rows| StageArgs {
            rows,
            ..Default::default()
        };
        b.run(&p, StageId(0), &args(T), &mut ws).unwrap();
        outs.push(b.read(&ws, buf[3], 0..T * W).unwrap().to_vec());
        b.run(&p, StageId(1), &args(T), &mut ws).unwrap();
        for &r in rows {
            b.run(&p, StageId(2), &args(r), &mut ws).unwrap();
            outs.push(b.read(&ws, buf[3], 0..r * W).unwrap().to_vec());
        }
        outs
    }

    #[test]
    fn device_attention_is_the_kernel_model_and_close_to_the_cpu_int8_path() {
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &[], 1)
            .unwrap()
            .with_emulated_designs(emu.clone())
            .with_emulated_attention()
            .unwrap();
        let mut rng = crate::cpu::testing::Rng::new(11);
        let inputs: [Vec<f32>; 3] = std::array::from_fn(|i| rng.vec(T * W, 2.0 - i as f32 * 0.5));
        let rows = [1, 5, MAX_Q];
        let got = run(&npu, &inputs, &rows);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
        // One command per attention call (the preparation is host work), none on the host.
        let (p, _) = program::<NpuBackend>();
        assert_eq!(
            (0..3)
                .map(|s| npu.submissions(&p, StageId(s)))
                .collect::<Vec<_>>(),
            vec![1, 0, 1]
        );
        let stats = npu.attention_stats().unwrap();
        assert_eq!(stats.submissions, 1 + rows.len() as u64);
        let q_rows: usize = T + rows.iter().sum::<usize>();
        assert_eq!(stats.host_quantized_rows as usize, HEADS * (q_rows + 2 * T));
        // Bit for bit what the kernel model computes from the CPU quantizer's codes.
        let [x, k, v] = &inputs;
        assert_eq!(got[0], kernel_model(x, k, v, T));
        for (g, &r) in got[1..].iter().zip(&rows) {
            assert_eq!(*g, kernel_model(x, k, v, r), "{r} rows over prepared K/V");
        }
        // And within the kernel's error bound of the CPU INT8 path (bf16 attention): int8
        // Q/K give a score error ≲ 0.02·|s|, bf16 P and V 2^-9 each; both paths stay within
        // 2e-2·max|V| of f64 attention (aie kernels::attention, docs/int8-layout.md §5).
        let want = run(&CpuInt8Backend::new(1), &inputs, &rows);
        let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (g, w) in got.iter().zip(&want) {
            let err = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 4e-2 * vmax, "max error {err} vs max|V| {vmax}");
        }
    }

    #[test]
    fn a_failed_attention_command_is_a_device_error_and_the_stream_recovers() {
        use crate::npu::ert::CmdState;
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &[], 1)
            .unwrap()
            .with_emulated_designs(emu.clone())
            .with_emulated_attention()
            .unwrap();
        let (p, buf) = program::<NpuBackend>();
        let mut ws = npu.workspace(&p, 1).unwrap();
        let mut rng = crate::cpu::testing::Rng::new(5);
        for &b in &buf[..3] {
            npu.write(&mut ws, b, 0, &rng.vec(T * W, 1.0)).unwrap();
        }
        let args = StageArgs {
            rows: T,
            ..Default::default()
        };
        npu.run(&p, StageId(0), &args, &mut ws).unwrap();
        let want = npu.read(&ws, buf[3], 0..T * W).unwrap().to_vec();
        for state in [CmdState::Error, CmdState::Abort] {
            emu.fail_exec(1, state);
            match npu.run(&p, StageId(0), &args, &mut ws) {
                Err(BackendError::Device { op, reason, .. }) => {
                    assert_eq!(op, "wait for attention");
                    assert!(reason.contains(&format!("{state:?}")), "{reason}");
                }
                other => panic!("{state:?}: expected a device error, got {other:?}"),
            }
            npu.run(&p, StageId(0), &args, &mut ws).unwrap();
            assert!(npu.read(&ws, buf[3], 0..T * W).unwrap() == want);
        }
    }

    const POSITIONS: usize = 40;
    const SLOTS: usize = 4;

    /// The decoder's self-attention over a K/V cache of [`SLOTS`] × [`POSITIONS`]: rows at
    /// positions `pos..` of slot 0 (stage 0), one row per slot (stage 1), a slot copy (stage
    /// 2). Buffers: x (queries), k, v (the new rows), out.
    fn cache_program<B: Backend>() -> (Program<B::Matrix>, [BufferId; 4]) {
        let mut p = Program::new();
        let b = [
            p.add_buffer("x", POSITIONS * W, Residency::Resident),
            p.add_buffer("k", POSITIONS * W, Residency::Resident),
            p.add_buffer("v", POSITIONS * W, Residency::Resident),
            p.add_buffer("out", POSITIONS * W, Residency::Resident),
        ];
        let cache = p.add_key_value_cache(KeyValueCacheSpec {
            name: "self k/v",
            heads: HEADS,
            head_dim: HEAD_DIM,
            slots: SLOTS,
            positions: POSITIONS,
        });
        let dims = AttentionDims {
            heads: HEADS,
            head_dim: HEAD_DIM,
            q_len: Extent::rows(1),
            kv_len: Extent::pos_plus_rows(1),
            causal_offset: Some(Extent::pos(1)),
            max_q_len: POSITIONS,
            max_kv_len: POSITIONS,
        };
        let (q, k_new, v_new, out) = (
            At::start(b[0]),
            At::start(b[1]),
            At::start(b[2]),
            At::start(b[3]),
        );
        p.add_stage(
            "cached",
            vec![Op::CachedSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                slot: 0,
                out,
                dims,
            }],
        );
        p.add_stage(
            "slots",
            vec![Op::SlotSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                out,
                dims: AttentionDims {
                    q_len: Extent::fixed(1),
                    max_q_len: 1,
                    ..dims
                },
            }],
        );
        p.add_stage(
            "fork",
            vec![Op::CopySlot {
                cache,
                len: Extent::pos(1),
            }],
        );
        (p, b)
    }

    /// The kernel model of `n_q` rows of `x` over `n_keys` rows of `k`, `v` (each `W` wide),
    /// query `i` over keys `..limits[i]`.
    fn model(x: &[f32], k: &[f32], v: &[f32], n_keys: usize, limits: &[u32]) -> Vec<f32> {
        let n_q = limits.len();
        let head = |m: &[f32], rows: usize, h: usize| -> Vec<f32> {
            (0..rows)
                .flat_map(|r| m[r * W + h * HEAD_DIM..][..HEAD_DIM].to_vec())
                .collect()
        };
        let mut out = vec![0.0; n_q * W];
        for h in 0..HEADS {
            let (qc, mut qs) = quantize_rows(&head(x, n_q, h));
            qs.iter_mut().for_each(|s| *s *= QUERY_SCALE);
            let (kc, ks) = quantize_rows(&head(k, n_keys, h));
            let vb: Vec<u16> = head(v, n_keys, h).into_iter().map(bf16_round).collect();
            let o = attend(&qc, &qs, &kc, &ks, &vb, limits);
            for r in 0..n_q {
                out[r * W + h * HEAD_DIM..][..HEAD_DIM]
                    .copy_from_slice(&o[r * HEAD_DIM..][..HEAD_DIM]);
            }
        }
        out
    }

    /// One call of the cache program.
    enum Call {
        /// `rows` rows at position `pos` of slot 0.
        Cached { rows: usize, pos: usize },
        /// One row per slot of `slots`, at position `pos`.
        Slots { slots: &'static [usize], pos: usize },
        /// `len` positions of slot `from` into slot `to`.
        Fork { from: usize, to: usize, len: usize },
    }

    const CALLS: [Call; 6] = [
        Call::Cached { rows: 6, pos: 0 },
        Call::Cached { rows: 1, pos: 6 },
        Call::Fork {
            from: 0,
            to: 2,
            len: 7,
        },
        Call::Fork {
            from: 0,
            to: 1,
            len: 7,
        },
        Call::Slots {
            slots: &[2, 0, 1],
            pos: 7,
        },
        Call::Slots {
            slots: &[1, 2],
            pos: 8,
        },
    ];

    /// Runs [`CALLS`] on `b` with fresh inputs per call: the outputs of the attention calls,
    /// and what the kernel model computes for them (every slot's history tracked here).
    fn run_cache<B: Backend>(b: &B) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (p, buf) = cache_program::<B>();
        let mut ws = b.workspace(&p, 1).unwrap();
        let mut rng = crate::cpu::testing::Rng::new(23);
        let mut history: Vec<(Vec<f32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); SLOTS];
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for call in &CALLS {
            let inputs: [Vec<f32>; 3] =
                std::array::from_fn(|i| rng.vec(POSITIONS * W, 2.0 - i as f32 * 0.5));
            for (i, x) in inputs.iter().enumerate() {
                b.write(&mut ws, buf[i], 0, x).unwrap();
            }
            let [x, k, v] = &inputs;
            match *call {
                Call::Cached { rows, pos } => {
                    let args = StageArgs {
                        rows,
                        pos,
                        ..Default::default()
                    };
                    b.run(&p, StageId(0), &args, &mut ws).unwrap();
                    got.push(b.read(&ws, buf[3], 0..rows * W).unwrap().to_vec());
                    let (hk, hv) = &mut history[0];
                    hk.truncate(pos * W);
                    hv.truncate(pos * W);
                    hk.extend_from_slice(&k[..rows * W]);
                    hv.extend_from_slice(&v[..rows * W]);
                    let limits: Vec<u32> = (0..rows).map(|r| (pos + r + 1) as u32).collect();
                    want.push(model(x, hk, hv, pos + rows, &limits));
                }
                Call::Slots { slots, pos } => {
                    let args = StageArgs {
                        rows: slots.len(),
                        pos,
                        slots,
                        ..Default::default()
                    };
                    b.run(&p, StageId(1), &args, &mut ws).unwrap();
                    got.push(b.read(&ws, buf[3], 0..slots.len() * W).unwrap().to_vec());
                    let mut rows = Vec::new();
                    for (r, &s) in slots.iter().enumerate() {
                        let (hk, hv) = &mut history[s];
                        hk.truncate(pos * W);
                        hv.truncate(pos * W);
                        hk.extend_from_slice(&k[r * W..(r + 1) * W]);
                        hv.extend_from_slice(&v[r * W..(r + 1) * W]);
                        let q = &x[r * W..(r + 1) * W];
                        rows.extend(model(q, hk, hv, pos + 1, &[(pos + 1) as u32]));
                    }
                    want.push(rows);
                }
                Call::Fork { from, to, len } => {
                    let args = StageArgs {
                        pos: len,
                        slots: &[from, to],
                        ..Default::default()
                    };
                    b.run(&p, StageId(2), &args, &mut ws).unwrap();
                    let (k, v) = history[from].clone();
                    history[to] = (k[..len * W].to_vec(), v[..len * W].to_vec());
                }
            }
        }
        (got, want)
    }

    fn emulated_npu() -> (Arc<EmuDriver>, NpuBackend) {
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &[], 1)
            .unwrap()
            .with_emulated_designs(emu.clone())
            .with_emulated_attention()
            .unwrap();
        (emu, npu)
    }

    #[test]
    fn cached_self_attention_is_the_kernel_model_and_close_to_the_cpu_int8_path() {
        let (emu, npu) = emulated_npu();
        let (got, want) = run_cache(&npu);
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
        // Bit for bit the kernel model over each slot's history (causal rows, forks, beams
        // in permuted slots).
        assert_eq!(got.len(), 4);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "call {i}");
        }
        // One command per attention call; the slot copies are host writes into the cache image.
        let (p, _) = cache_program::<NpuBackend>();
        assert_eq!(
            (0..3)
                .map(|s| npu.submissions(&p, StageId(s)))
                .collect::<Vec<_>>(),
            vec![1, 1, 0]
        );
        let stats = npu.attention_stats().unwrap();
        assert_eq!(stats.submissions, 4);
        // Only the new rows are written into the cache: 6 + 1 + 3 + 2 rows.
        let row = HEADS * (64 + 4 + 128);
        assert_eq!(stats.cache_bytes_to_device as usize, 12 * row);
        assert_eq!(stats.slot_copies, 2);
        assert_eq!(stats.slot_copy_bytes as usize, 2 * 7 * row);
        // Within the kernel's bound of the CPU INT8 path (bf16 K/V cache, bf16 attention): as
        // for the other attention ops, 4e-2·max|V| (inputs here have max|V| ≤ 1).
        let (cpu, _) = run_cache(&CpuInt8Backend::new(1));
        for (i, (g, c)) in got.iter().zip(&cpu).enumerate() {
            let err = g
                .iter()
                .zip(c)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 4e-2, "call {i}: max error {err}");
        }
    }

    #[test]
    fn a_failed_cached_attention_command_is_a_device_error_and_the_stream_recovers() {
        use crate::npu::ert::CmdState;
        let (emu, npu) = emulated_npu();
        let (p, buf) = cache_program::<NpuBackend>();
        let mut ws = npu.workspace(&p, 1).unwrap();
        let mut rng = crate::cpu::testing::Rng::new(5);
        for &b in &buf[..3] {
            npu.write(&mut ws, b, 0, &rng.vec(POSITIONS * W, 1.0))
                .unwrap();
        }
        let args = StageArgs {
            rows: 3,
            ..Default::default()
        };
        npu.run(&p, StageId(0), &args, &mut ws).unwrap();
        let want = npu.read(&ws, buf[3], 0..3 * W).unwrap().to_vec();
        let slots = [0, 1];
        let beams = StageArgs {
            rows: 2,
            pos: 3,
            slots: &slots,
            ..Default::default()
        };
        for (stage, args) in [(0, args), (1, beams)] {
            emu.fail_exec(1, CmdState::Error);
            match npu.run(&p, StageId(stage), &args, &mut ws) {
                Err(BackendError::Device { op, reason, .. }) => {
                    assert_eq!(op, "wait for attention");
                    assert!(reason.contains("Error"), "{reason}");
                }
                other => panic!("stage {stage}: expected a device error, got {other:?}"),
            }
        }
        npu.run(&p, StageId(0), &args, &mut ws).unwrap();
        assert!(npu.read(&ws, buf[3], 0..3 * W).unwrap() == want);
    }

    #[test]
    fn without_the_emulated_designs_there_is_no_device_attention() {
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        let device = Device::from_driver(emu).unwrap();
        let npu = NpuBackend::new(device, &[], 1).unwrap();
        assert!(matches!(
            npu.with_emulated_attention(),
            Err(NpuError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn masked_wide_or_long_attention_stays_on_the_host() {
        let mut d = dims(Extent::fixed(4), 4);
        assert!(takes(&d));
        d.causal_offset = Some(Extent::pos(1));
        assert!(!takes(&d));
        let mut d = dims(Extent::fixed(4), 4);
        d.max_kv_len = MAX_KEYS + 1;
        assert!(!takes(&d));
        let mut d = dims(Extent::fixed(4), 4);
        d.head_dim = 80;
        assert!(!takes(&d));
    }
}
