//! Attention as a member of a chain ([`crate::chain_plan`]'s [`crate::chain_plan::Role::Attention`]):
//! the device programs that let an [`crate::stage::Op::Attention`] run between the linears of
//! one `ERT_CMD_CHAIN` on the designs' hardware context instead of on a context of its own.
//!
//! Two sub-commands per attention, both CUs of the NPU backend's design context
//! ([`crate::aie_gemm::AieContext`]):
//! 1. **the attention inputs** (`amanuensis_aie::program::attention_inputs`): from the f32 rows
//!    the q, k and v projections left in the chain's C regions, the attention design's Q image
//!    (codes and scales per row and head, the scales times `head_dim^-½`) and K/V image (codes,
//!    scales, bf16 values): the bits the host writes for [`crate::npu_attention`] (the CPU
//!    quantizer `q8::quant::quantize_row` per row and head, `bf16_round`). The Q regions' headers
//!    (the call's query and key counts) are the host's: 64 bytes per head, written and flushed
//!    before the chain is submitted. Over prepared keys/values ([`ChainKind::Prepared`]) only
//!    the Q image; over a device-resident K/V cache ([`ChainKind::Cached`],
//!    `amanuensis_aie::program::cache_inputs`) the Q image and the call's new K/V rows appended
//!    to the slot's image at the call's position (its destination addresses are the image plus
//!    64, 4 and 128 bytes per position: codes, scales, values), one stream per row count
//!    ([`cache_write_rows`]).
//! 2. **the attention** (`aie/kernels/attention.cc`'s design, the PDI
//!    [`crate::npu_attention::DeviceAttention`] registers) with its output written **row-major**
//!    (`amanuensis_aie::program::attention::attention_program_rows`: the S2MM BDs gather the
//!    heads into rows of `heads · 64` f32) into a C region, where the norm design's plain
//!    quantize reads them for the out-projection, as it reads fc1's output for fc2.
//!
//! So the device attention's arithmetic is unchanged (the same images, the same kernel model):
//! chained or not, its result is the same bits (tested in [`crate::npu_backend`]).
//!
//! One [`ChainAttention`] per attention shape (heads, query rows, keys) and kind; its streams
//! are made, validated against their buffers and uploaded when a workspace declares a member
//! attention of that shape: a self-attention of query and key counts fixed at load (the
//! encoder's; its streams move whole regions), an attention over prepared keys/values (the
//! decoder's cross-attention; query buckets 4, 8, …), a causal self-attention over a K/V
//! cache (the decoder's greedy steps and prompts; query buckets and per-row-count writes).
//! The first steps read the q, k, v results at their row stride in C (`strides`: a GEMM
//! mapping may return rows wider than the outputs, tiny.en's decoder 512 for 384), one stream
//! per stride.
//!
//! **Emulated only**: the attention-inputs and cache-inputs steps have Rust array models and
//! validated streams, no AIE C++ kernel and no xclbin; the attention design has no built
//! xclbin either.

use std::collections::BTreeMap;
use std::sync::Arc;

use amanuensis_aie::kernels::attention::Q_ROWS;
use amanuensis_aie::program::attention::{attention_program_rows, AttentionImages};
use amanuensis_aie::program::attention_inputs::{
    arg_lens, inputs_array, inputs_program, query_arg_lens, query_array, query_program, INPUT_ARGS,
};
use amanuensis_aie::program::cache_inputs::{
    cache_arg_lens, cache_inputs_array, cache_inputs_program, CACHE_INPUT_ARGS,
};
use amanuensis_aie::txn::Target;

use crate::npu::emu::EmuDriver;
use crate::npu::heap::{DevBo, Heap};
use crate::npu::program::RegmapLayout;
use crate::npu::txn::{self, ArrayIo, Limits};
use crate::npu::NpuError;

/// An uploaded instruction stream: `(device address, handle, words)`.
pub type Stream = (u64, u32, u32);

/// What a chain attention's first step writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    /// Q and K/V images from the q, k, v results (a self-attention of fixed rows).
    SelfAttention,
    /// The Q image only, over K/V images already on the device (prepared keys/values).
    Prepared,
    /// The Q image and the call's new K/V rows appended to a slot of a device-resident K/V
    /// cache at the call's position (a decoder's causal self-attention over its cache).
    Cached,
}

/// Rows a chained cache write moves for a call of `n` new rows: `n` up to 8, else `n` rounded
/// up to a multiple of 8 (one cache-inputs stream per count). The rows past `n` are the
/// source's padding rows; they land at positions past what the slot holds, which the next
/// call writes before any query reads them ([`crate::npu_attention::CACHE_SLACK`]).
pub fn cache_write_rows(n: usize) -> usize {
    if n <= 8 {
        n
    } else {
        n.next_multiple_of(8)
    }
}

/// One query bucket's streams: the first step's (none for [`ChainKind::Cached`]: its first
/// steps are per row count, [`CacheWrite`]) and the row-major attention's.
struct Bucket {
    im: AttentionImages,
    /// By source row stride.
    inputs: Vec<(usize, (DevBo, u32))>,
    attend: (DevBo, u32),
}

/// A [`ChainKind::Cached`] first step: the cache-inputs stream for calls of query bucket
/// `q_rows` writing `rows` new rows ([`cache_write_rows`]).
struct CacheWrite {
    q_rows: usize,
    rows: usize,
    stride: usize,
    stream: (DevBo, u32),
}

/// An attention shape's chain programs: per query bucket the first step's stream (the
/// attention inputs, or the queries alone) and the row-major attention stream.
pub struct ChainAttention {
    /// The largest bucket's images (heads, query rows, keys): the shape's identity.
    pub im: AttentionImages,
    /// What its first step writes.
    pub kind: ChainKind,
    /// The row strides (f32 values apart) of the q, k, v results its first steps read:
    /// `heads · 64`, or wider when a GEMM mapping returns wider rows.
    pub strides: Vec<usize>,
    pub(crate) inputs_layout: RegmapLayout,
    pub(crate) attend_layout: RegmapLayout,
    /// Ascending query rows.
    buckets: Vec<Bucket>,
    /// [`ChainKind::Cached`]: one first step per (query bucket, rows written).
    writes: Vec<CacheWrite>,
}

fn invalid(what: String) -> NpuError {
    NpuError::InvalidRequest { what }
}

/// Validates `words` against buffers of `lens` bytes (every task awaited) and uploads them.
fn upload(
    target: Target,
    heap: &Arc<Heap>,
    what: &str,
    words: &[u32],
    lens: &[usize],
) -> Result<(DevBo, u32), NpuError> {
    let lens: Vec<u64> = lens.iter().map(|&n| n as u64).collect();
    let plan = txn::validate(
        words,
        &Limits {
            arg_lens: &lens,
            partition_cols: Some(target.cols),
        },
    )?;
    if plan.summary.unawaited != 0 {
        return Err(invalid(format!(
            "{what}: {} tasks never awaited",
            plan.summary.unawaited
        )));
    }
    let mut bo = DevBo::create(heap, 4 * words.len())?;
    for (d, w) in bo.bytes_mut().chunks_exact_mut(4).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
    bo.flush(0..4 * words.len());
    Ok((bo, words.len() as u32))
}

impl ChainAttention {
    /// The streams of shape `im` on `target`, validated and uploaded: one bucket of `im`'s
    /// query rows for [`ChainKind::SelfAttention`], buckets of 4, 8, 16, … up to them for
    /// [`ChainKind::Prepared`] (a decoder step moves 4 rows, not the prompt's most); first
    /// steps for each source row stride of `strides`.
    pub fn new(
        target: Target,
        heap: &Arc<Heap>,
        im: AttentionImages,
        kind: ChainKind,
        strides: &[usize],
    ) -> Result<Self, NpuError> {
        let mut rows = match kind {
            ChainKind::SelfAttention => im.q_rows,
            ChainKind::Prepared | ChainKind::Cached => Q_ROWS,
        };
        let mut buckets = Vec::new();
        loop {
            let b = AttentionImages::new(im.heads, rows.min(im.q_rows), im.keys)
                .map_err(|e| invalid(format!("chain attention images: {e}")))?;
            let mut inputs = Vec::with_capacity(strides.len());
            for &stride in strides {
                let stream = match kind {
                    ChainKind::SelfAttention => {
                        let words = inputs_program(target, &b, stride)
                            .map_err(|e| invalid(format!("attention inputs stream: {e}")))?;
                        let lens = arg_lens(&b, stride);
                        upload(target, heap, "attention inputs stream", &words, &lens)?
                    }
                    ChainKind::Prepared => {
                        let words = query_program(target, &b, stride)
                            .map_err(|e| invalid(format!("attention query stream: {e}")))?;
                        let lens = query_arg_lens(&b, stride);
                        upload(target, heap, "attention query stream", &words, &lens)?
                    }
                    ChainKind::Cached => continue,
                };
                inputs.push((stride, stream));
            }
            let attend = attention_program_rows(target, &b)
                .map_err(|e| invalid(format!("row-major attention stream: {e}")))?;
            let lens = [b.q_image_len(), b.kv_image_len(), b.out_len()];
            let attend = upload(target, heap, "row-major attention stream", &attend, &lens)?;
            buckets.push(Bucket {
                im: b,
                inputs,
                attend,
            });
            if b.q_rows >= im.q_rows {
                break;
            }
            rows *= 2;
        }
        // The cache writes: for every call of 1 to `im.q_rows` new rows, its query bucket
        // and the rows it writes.
        let mut writes: Vec<CacheWrite> = Vec::new();
        if kind == ChainKind::Cached {
            for &stride in strides {
                for n in 1..=im.q_rows {
                    let b = buckets.iter().find(|b| b.im.q_rows >= n).map(|b| b.im);
                    let Some(b) = b else { break };
                    let rows = cache_write_rows(n).min(im.keys);
                    if writes
                        .iter()
                        .any(|w| (w.q_rows, w.rows, w.stride) == (b.q_rows, rows, stride))
                    {
                        continue;
                    }
                    let words = cache_inputs_program(target, &b, rows, stride)
                        .map_err(|e| invalid(format!("cache inputs stream: {e}")))?;
                    let lens = cache_arg_lens(&b, rows, stride);
                    let stream = upload(target, heap, "cache inputs stream", &words, &lens)?;
                    writes.push(CacheWrite {
                        q_rows: b.q_rows,
                        rows,
                        stride,
                        stream,
                    });
                }
            }
        }
        Ok(Self {
            im,
            kind,
            strides: strides.to_vec(),
            inputs_layout: RegmapLayout::mlir_aie(match kind {
                ChainKind::SelfAttention => INPUT_ARGS,
                ChainKind::Prepared => 2,
                ChainKind::Cached => CACHE_INPUT_ARGS,
            }),
            attend_layout: RegmapLayout::mlir_aie(3),
            buckets,
            writes,
        })
    }

    /// The images of the bucket for `n_q` queries and its first step's stream and its
    /// row-major attention stream, if any holds them for sources `stride` f32 apart
    /// ([`ChainKind::SelfAttention`], [`ChainKind::Prepared`]).
    pub fn bucket(&self, n_q: usize, stride: usize) -> Option<(AttentionImages, Stream, Stream)> {
        let b = self.buckets.iter().find(|b| b.im.q_rows >= n_q)?;
        let s = |(bo, words): &(DevBo, u32)| (bo.device_addr(), bo.handle(), *words);
        let inputs = b.inputs.iter().find(|i| i.0 == stride)?;
        Some((b.im, s(&inputs.1), s(&b.attend)))
    }

    /// For a [`ChainKind::Cached`] call of `n` new rows: the images of its query bucket, the
    /// cache-inputs stream, the row-major attention stream and the rows the write moves
    /// ([`cache_write_rows`]), if any holds them for sources `stride` f32 apart.
    pub fn cached(
        &self,
        n: usize,
        stride: usize,
    ) -> Option<(AttentionImages, Stream, Stream, usize)> {
        let b = self.buckets.iter().find(|b| b.im.q_rows >= n)?;
        let rows = cache_write_rows(n).min(self.im.keys);
        let w = self
            .writes
            .iter()
            .find(|w| (w.q_rows, w.rows, w.stride) == (b.im.q_rows, rows, stride))?;
        let s = |(bo, words): &(DevBo, u32)| (bo.device_addr(), bo.handle(), *words);
        Some((b.im, s(&w.stream), s(&b.attend), rows))
    }

    /// The most rows of a key or value source the first step reads: the keys of a
    /// [`ChainKind::SelfAttention`], the largest cache write of a [`ChainKind::Cached`], none
    /// over prepared keys/values.
    pub fn kv_rows_read(&self) -> usize {
        match self.kind {
            ChainKind::SelfAttention => self.im.keys,
            ChainKind::Prepared => 0,
            ChainKind::Cached => self.writes.iter().map(|w| w.rows).max().unwrap_or(0),
        }
    }
}

/// The PDI of the first step of a chain attention of shape `im` and `kind` on the emulated
/// device: a text naming it (no real PDI exists; a design is built per shape).
pub fn inputs_pdi(target: Target, im: &AttentionImages, kind: ChainKind) -> Vec<u8> {
    match kind {
        ChainKind::SelfAttention => format!(
            "amanuensis EMULATED AIE ATTENTION INPUTS (no real PDI): {:?} {}c heads {} q_rows {} keys {}",
            target.generation, target.cols, im.heads, im.q_rows, im.keys
        ),
        ChainKind::Prepared => format!(
            "amanuensis EMULATED AIE ATTENTION QUERIES (no real PDI): {:?} {}c heads {}",
            target.generation, target.cols, im.heads
        ),
        ChainKind::Cached => format!(
            "amanuensis EMULATED AIE ATTENTION CACHE INPUTS (no real PDI): {:?} {}c heads {}",
            target.generation, target.cols, im.heads
        ),
    }
    .into_bytes()
}

/// Makes `emu`'s firmware run the first-step PDI of shape `im` and `kind` with its array model.
pub fn register_inputs_model(
    emu: &EmuDriver,
    target: Target,
    im: AttentionImages,
    kind: ChainKind,
) {
    emu.register_kernel(&inputs_pdi(target, &im, kind), move |io: &mut ArrayIo| {
        let sent: BTreeMap<(u8, u8), Vec<u8>> = io
            .inputs()
            .map(|(ch, b)| ((ch.col, ch.channel), b.to_vec()))
            .collect();
        let produced = match kind {
            ChainKind::SelfAttention => inputs_array(&im, &sent)?,
            ChainKind::Prepared => query_array(im.heads, target.cols, &sent)?,
            ChainKind::Cached => cache_inputs_array(im.heads, target.cols, &sent)?,
        };
        for ((col, _, chan), bytes) in produced {
            io.send(col, chan, &bytes)?;
        }
        Ok(())
    });
}
#[cfg(test)]
mod tests {
    use crate::backend::{Backend, BackendError, Epilogue};
    use crate::cpu::testing::Rng;
    use crate::npu::device::Device;
    use crate::npu::emu::EmuDriver;
    use crate::npu::ert::CmdState;
    use crate::npu_backend::{emulated_config, NpuBackend, NpuMatrix};
    use crate::q8::QuantMatrix;
    use crate::stage::{At, AttentionDims, BufferId, Extent, Op, Program, Residency, StageArgs};
    use std::sync::Arc;

    const HEADS: usize = 3;
    const W: usize = HEADS * 64;
    const T: usize = 70;

    fn npu() -> (Arc<EmuDriver>, NpuBackend) {
        let emu = Arc::new(EmuDriver::new(emulated_config()));
        let device = Device::from_driver(emu.clone()).unwrap();
        let npu = NpuBackend::new(device, &[], 1)
            .unwrap()
            .with_emulated_designs(emu.clone())
            .with_emulated_attention()
            .unwrap();
        (emu, npu)
    }

    /// Buffers x, a, h (the first `len` values) of the chained workspace equal the unchained
    /// one's bit for bit.
    fn assert_same_bits(
        npu: &NpuBackend,
        chained: (&<NpuBackend as Backend>::Workspace, &[BufferId]),
        unchained: (&<NpuBackend as Backend>::Workspace, &[BufferId]),
        len: usize,
        label: &str,
    ) {
        for (i, name) in ["x", "a", "h"].iter().enumerate() {
            let got = npu.read(chained.0, chained.1[i], 0..len).unwrap();
            let want = npu.read(unchained.0, unchained.1[i], 0..len).unwrap();
            let diff = got
                .iter()
                .zip(want)
                .position(|(g, w)| g.to_bits() != w.to_bits());
            assert_eq!(diff, None, "{name}, {label}");
        }
    }

    /// A layer of `T` rows: norm x → h, q/k/v of h, attention into a (`q_len` queries), the
    /// out-projection of a added into x, the next norm x → h (on the host: nothing reads h on
    /// the device after it). Buffers: x, a, h.
    fn layer(b: &NpuBackend, seed: u64, q_len: Extent) -> (Program<NpuMatrix>, [BufferId; 3]) {
        let mut rng = Rng::new(seed);
        let mut p = Program::new();
        let m: Vec<_> = (0..4)
            .map(|_| {
                let w = QuantMatrix::quantize(&rng.vec(W * W, 0.1), W, W);
                p.add_matrix(b.matrix_q8(w).unwrap())
            })
            .collect();
        let bias: Vec<_> = (0..4).map(|_| p.add_vector(rng.vec(W, 0.3))).collect();
        let (gamma, beta) = (p.add_vector(rng.vec(W, 1.0)), p.add_vector(rng.vec(W, 0.2)));
        let buf = |p: &mut Program<NpuMatrix>, name, rows| {
            p.add_buffer(name, rows * W, Residency::Resident)
        };
        // q and k in one buffer, as the encoder has them.
        let (x, h, qk, v, a) = (
            buf(&mut p, "x", T),
            buf(&mut p, "h", T),
            buf(&mut p, "qk", 2 * T),
            buf(&mut p, "v", T),
            buf(&mut p, "a", T),
        );
        let (q, k) = (At::start(qk), At::fixed(qk, T * W));
        let rows = Extent::fixed(T);
        let lin = |x, out: At, w: usize, epilogue| Op::Linear {
            x: At::start(x),
            out,
            rows,
            max_rows: T,
            w: m[w],
            bias: Some(bias[w]),
            epilogue,
        };
        let norm = Op::LayerNorm {
            x: At::start(x),
            out: At::start(h),
            rows,
            gamma,
            beta,
            eps: 1e-5,
        };
        let ops = vec![
            norm.clone(),
            lin(h, q, 0, Epilogue::Store),
            lin(h, k, 1, Epilogue::Store),
            lin(h, At::start(v), 2, Epilogue::Store),
            Op::Attention {
                q,
                k,
                v: At::start(v),
                out: At::start(h),
                dims: AttentionDims {
                    heads: HEADS,
                    head_dim: 64,
                    q_len,
                    kv_len: rows,
                    causal_offset: None,
                    max_q_len: T,
                    max_kv_len: T,
                },
            },
            lin(h, At::start(x), 3, Epilogue::AddInto),
            norm,
        ];
        p.add_stage("layer", ops);
        (p, [x, a, h])
    }

    /// With the attention a chain member (query count fixed at load) the layer is one
    /// submission, and every buffer equals the layer with the attention on its own context
    /// (query count from the call: not a member; three submissions) bit for bit: the device
    /// writes the images the host wrote, the row-major output is the same rows.
    #[test]
    fn a_chained_attention_equals_the_attention_on_its_own_context() {
        let (emu, npu) = npu();
        let (pc, bc) = layer(&npu, 3, Extent::fixed(T));
        let (pu, bu) = layer(&npu, 3, Extent::rows(1));
        let stage = crate::stage::StageId(0);
        // (The weights go to the device when a workspace declares them.)
        let mut wc = npu.workspace(&pc, 1).unwrap();
        let mut wu = npu.workspace(&pu, 1).unwrap();
        assert_eq!(npu.submissions(&pc, stage), 1);
        assert_eq!(npu.submissions(&pu, stage), 3);
        let mut rng = Rng::new(9);
        let args = StageArgs {
            rows: T,
            ..Default::default()
        };
        for round in 0..2 {
            let x = rng.vec(T * W, 1.5);
            npu.write(&mut wc, bc[0], 0, &x).unwrap();
            npu.write(&mut wu, bu[0], 0, &x).unwrap();
            let before = emu.stats().submitted;
            npu.run(&pc, stage, &args, &mut wc).unwrap();
            assert_eq!(emu.stats().submitted - before, 1, "round {round}");
            let before = emu.stats().submitted;
            npu.run(&pu, stage, &args, &mut wu).unwrap();
            assert_eq!(emu.stats().submitted - before, 3, "round {round}");
            let label = format!("round {round}");
            assert_same_bits(&npu, (&wc, &bc[..3]), (&wu, &bu[..3]), T * W, &label);
        }
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    /// A chain whose attention inputs or attention sub-command fails is a device error naming
    /// the chain, and the next call recovers with the same result.
    #[test]
    fn a_failed_chain_with_an_attention_is_a_device_error_and_the_stream_recovers() {
        let (emu, npu) = npu();
        let (p, b) = layer(&npu, 4, Extent::fixed(T));
        let stage = crate::stage::StageId(0);
        let mut ws = npu.workspace(&p, 1).unwrap();
        let x = Rng::new(2).vec(T * W, 1.0);
        let args = StageArgs {
            rows: T,
            ..Default::default()
        };
        npu.write(&mut ws, b[0], 0, &x).unwrap();
        npu.run(&p, stage, &args, &mut ws).unwrap();
        let want = npu.read(&ws, b[1], 0..T * W).unwrap().to_vec();
        emu.fail_exec(1, CmdState::Error);
        npu.write(&mut ws, b[0], 0, &x).unwrap();
        match npu.run(&p, stage, &args, &mut ws) {
            Err(BackendError::Device { reason, .. }) => {
                assert!(reason.contains("Error"), "{reason}")
            }
            other => panic!("expected a device error, got {other:?}"),
        }
        npu.write(&mut ws, b[0], 0, &x).unwrap();
        npu.run(&p, stage, &args, &mut ws).unwrap();
        assert!(npu.read(&ws, b[1], 0..T * W).unwrap() == want);
    }

    /// A decoder-like cross-attention: prepared keys/values (stage 0, from host-written k, v),
    /// then per call (stage 1) norm x → h, q of h, attention over the prepared keys/values into
    /// a (`q_len` queries), the out-projection of a added into x, the next norm on the host.
    /// Buffers: x, a, h, k, v.
    fn cross(b: &NpuBackend, seed: u64, q_len: Extent) -> (Program<NpuMatrix>, [BufferId; 5]) {
        let mut rng = Rng::new(seed);
        let mut p = Program::new();
        let m: Vec<_> = (0..2)
            .map(|_| {
                let w = QuantMatrix::quantize(&rng.vec(CW * CW, 0.1), CW, CW);
                p.add_matrix(b.matrix_q8(w).unwrap())
            })
            .collect();
        let bias: Vec<_> = (0..2).map(|_| p.add_vector(rng.vec(CW, 0.3))).collect();
        let (gamma, beta) = (
            p.add_vector(rng.vec(CW, 1.0)),
            p.add_vector(rng.vec(CW, 0.2)),
        );
        let buf = |p: &mut Program<NpuMatrix>, name, rows| {
            p.add_buffer(name, rows * CW, Residency::Resident)
        };
        let (x, h, q, a, k, v) = (
            buf(&mut p, "x", MAX_Q),
            buf(&mut p, "h", MAX_Q),
            buf(&mut p, "q", MAX_Q),
            buf(&mut p, "a", MAX_Q),
            buf(&mut p, "k", T),
            buf(&mut p, "v", T),
        );
        let kv = p.add_key_values(crate::stage::KeyValuesSpec {
            heads: CHEADS,
            head_dim: 64,
            capacity: T,
        });
        let rows = Extent::rows(1);
        let lin = |x, out, w: usize, epilogue| Op::Linear {
            x: At::start(x),
            out: At::start(out),
            rows,
            max_rows: MAX_Q,
            w: m[w],
            bias: Some(bias[w]),
            epilogue,
        };
        let norm = Op::LayerNorm {
            x: At::start(x),
            out: At::start(h),
            rows,
            gamma,
            beta,
            eps: 1e-5,
        };
        p.add_stage(
            "prepare",
            vec![Op::PrepareKeyValues {
                k: At::start(k),
                v: At::start(v),
                rows: T,
                kv,
            }],
        );
        p.add_stage(
            "cross",
            vec![
                norm.clone(),
                lin(h, q, 0, Epilogue::Store),
                Op::AttentionPrepared {
                    q: At::start(q),
                    kv,
                    out: At::start(a),
                    dims: AttentionDims {
                        heads: CHEADS,
                        head_dim: 64,
                        q_len,
                        kv_len: Extent::fixed(T),
                        causal_offset: None,
                        max_q_len: MAX_Q,
                        max_kv_len: T,
                    },
                },
                lin(a, x, 1, Epilogue::AddInto),
                norm,
            ],
        );
        (p, [x, a, h, k, v])
    }

    const MAX_Q: usize = 9;
    /// Heads of the cross-attention test: rows of a width the decoder mapping's GEMM returns
    /// exactly (whole 256-column quads; 192 would come back 256 wide, read at that stride).
    const CHEADS: usize = 4;
    const CW: usize = CHEADS * 64;

    /// A cross-attention over prepared keys/values as a chain member (its q a member's result)
    /// is one submission with its norm, q and out-projection (a bucket of 4 or more queries),
    /// and equals the attention on its own context (q_len not the q linear's rows: not a
    /// member; three submissions) bit for bit.
    #[test]
    fn a_chained_cross_attention_equals_the_attention_on_its_own_context() {
        let (emu, npu) = npu();
        let (pc, bc) = cross(&npu, 6, Extent::rows(1));
        let (pu, bu) = cross(&npu, 6, Extent::pos_plus_rows(1));
        let mut wc = npu.workspace(&pc, 1).unwrap();
        let mut wu = npu.workspace(&pu, 1).unwrap();
        let (prep, step) = (crate::stage::StageId(0), crate::stage::StageId(1));
        assert_eq!(npu.submissions(&pc, step), 1);
        assert_eq!(npu.submissions(&pu, step), 3);
        let mut rng = Rng::new(17);
        let kv: Vec<Vec<f32>> = (0..2).map(|_| rng.vec(T * CW, 1.0)).collect();
        for (i, data) in kv.iter().enumerate() {
            npu.write(&mut wc, bc[3 + i], 0, data).unwrap();
            npu.write(&mut wu, bu[3 + i], 0, data).unwrap();
        }
        let args = |rows| StageArgs {
            rows,
            ..Default::default()
        };
        npu.run(&pc, prep, &args(T), &mut wc).unwrap();
        npu.run(&pu, prep, &args(T), &mut wu).unwrap();
        for rows in [1, 5, MAX_Q, 1] {
            let x = rng.vec(rows * CW, 1.5);
            npu.write(&mut wc, bc[0], 0, &x).unwrap();
            npu.write(&mut wu, bu[0], 0, &x).unwrap();
            let before = emu.stats().submitted;
            npu.run(&pc, step, &args(rows), &mut wc).unwrap();
            assert_eq!(emu.stats().submitted - before, 1, "{rows} rows");
            npu.run(&pu, step, &args(rows), &mut wu).unwrap();
            let label = format!("{rows} rows");
            assert_same_bits(&npu, (&wc, &bc[..3]), (&wu, &bu[..3]), rows * CW, &label);
        }
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }

    /// A decoder-like layer over a K/V cache (stages: a step of `rows` rows at `pos` in slot 0,
    /// a beam step with one row per slot, a slot fork): norm x → h, q of h, k and v of h into
    /// one buffer (v after k's rows), the causal self-attention over the cache into a
    /// (`q_len` queries), the out-projection of a added into x, the next norm on the host.
    /// Buffers: x, a, h.
    fn cached(
        b: &NpuBackend,
        seed: u64,
        heads: usize,
        q_len: Extent,
    ) -> (Program<NpuMatrix>, [BufferId; 3]) {
        let cw = heads * 64;
        let mut rng = Rng::new(seed);
        let mut p = Program::new();
        let m: Vec<_> = (0..4)
            .map(|_| {
                let w = QuantMatrix::quantize(&rng.vec(cw * cw, 0.1), cw, cw);
                p.add_matrix(b.matrix_q8(w).unwrap())
            })
            .collect();
        let bias: Vec<_> = (0..4).map(|_| p.add_vector(rng.vec(cw, 0.3))).collect();
        let (gamma, beta) = (
            p.add_vector(rng.vec(cw, 1.0)),
            p.add_vector(rng.vec(cw, 0.2)),
        );
        let buf = |p: &mut Program<NpuMatrix>, name, rows| {
            p.add_buffer(name, rows * cw, Residency::Resident)
        };
        let (x, h, q, a, kv) = (
            buf(&mut p, "x", POSITIONS),
            buf(&mut p, "h", POSITIONS),
            buf(&mut p, "q", POSITIONS),
            buf(&mut p, "a", POSITIONS),
            buf(&mut p, "k, v", 2 * POSITIONS),
        );
        let cache = p.add_key_value_cache(crate::stage::KeyValueCacheSpec {
            name: "test k/v",
            heads,
            head_dim: 64,
            slots: 3,
            positions: POSITIONS,
        });
        let rows = Extent::rows(1);
        let lin = |x, out, w: usize, epilogue| Op::Linear {
            x: At::start(x),
            out,
            rows,
            max_rows: POSITIONS,
            w: m[w],
            bias: Some(bias[w]),
            epilogue,
        };
        let norm = Op::LayerNorm {
            x: At::start(x),
            out: At::start(h),
            rows,
            gamma,
            beta,
            eps: 1e-5,
        };
        let v_new = At {
            buffer: kv,
            offset: Extent::rows(cw),
        };
        let dims = AttentionDims {
            heads,
            head_dim: 64,
            q_len,
            kv_len: Extent::pos_plus_rows(1),
            causal_offset: Some(Extent::pos(1)),
            max_q_len: POSITIONS,
            max_kv_len: POSITIONS,
        };
        let head = vec![
            norm.clone(),
            lin(h, At::start(q), 0, Epilogue::Store),
            lin(h, At::start(kv), 1, Epilogue::Store),
            lin(h, v_new, 2, Epilogue::Store),
        ];
        let mut step = head.clone();
        step.extend([
            Op::CachedSelfAttention {
                q: At::start(q),
                k_new: At::start(kv),
                v_new,
                cache,
                slot: 0,
                out: At::start(a),
                dims,
            },
            lin(a, At::start(x), 3, Epilogue::AddInto),
            norm.clone(),
        ]);
        let mut beam = head;
        beam.extend([
            Op::SlotSelfAttention {
                q: At::start(q),
                k_new: At::start(kv),
                v_new,
                cache,
                out: At::start(a),
                dims: AttentionDims {
                    q_len: Extent::fixed(1),
                    max_q_len: 1,
                    ..dims
                },
            },
            lin(a, At::start(x), 3, Epilogue::AddInto),
            norm,
        ]);
        p.add_stage("step", step);
        p.add_stage("beam", beam);
        p.add_stage(
            "fork",
            vec![Op::CopySlot {
                cache,
                len: Extent::pos(1),
            }],
        );
        (p, [x, a, h])
    }

    const POSITIONS: usize = 40;

    /// The causal self-attention over a device-resident K/V cache as a chain member (the
    /// device appends the new K/V rows at the call's position) is one submission with its
    /// norm, q/k/v and out-projection, and equals the attention on its own context (q_len not
    /// the linears' rows: not a member; three submissions) bit for bit, call after call:
    /// prompt-like and single rows, a write of more than 8 rows (a rounded write) ending at
    /// the cache's last position, a beam step and a slot fork reading the rows the device
    /// wrote, a restart at position 0.
    #[test]
    fn a_chained_cache_attention_equals_the_attention_on_its_own_context() {
        cache_attention_both_ways(CHEADS);
    }

    /// As above with 6 heads (tiny.en's): the decoder mapping returns the q, k, v rows 512
    /// wide (whole 256-column quads), which the first step reads 384 of at a 512-value stride.
    #[test]
    fn a_chained_cache_attention_over_padded_rows_equals_the_attention_on_its_own_context() {
        cache_attention_both_ways(6);
    }

    fn cache_attention_both_ways(heads: usize) {
        let cw = heads * 64;
        let (emu, npu) = npu();
        let (pc, bc) = cached(&npu, 8, heads, Extent::rows(1));
        let (pu, bu) = cached(&npu, 8, heads, Extent::pos_plus_rows(1));
        let mut wc = npu.workspace(&pc, 1).unwrap();
        let mut wu = npu.workspace(&pu, 1).unwrap();
        let (step, beam, fork) = (
            crate::stage::StageId(0),
            crate::stage::StageId(1),
            crate::stage::StageId(2),
        );
        assert_eq!(npu.submissions(&pc, step), 1);
        assert_eq!(npu.submissions(&pu, step), 3);
        let mut rng = Rng::new(23);
        // (stage, rows, pos, slots)
        let calls: &[(crate::stage::StageId, usize, usize, &[usize])] = &[
            (step, 3, 0, &[]),
            (step, 1, 3, &[]),
            (step, 1, 4, &[]),
            (step, 11, 5, &[]),
            (step, 1, 16, &[]),
            (step, 9, 17, &[]),
            // A beam row written by the host next to rows the device wrote.
            (beam, 1, 26, &[0]),
            (fork, 0, 27, &[0, 1]),
            (beam, 2, 27, &[0, 1]),
            (fork, 0, 28, &[1, 2]),
            (beam, 2, 28, &[2, 1]),
            (step, 12, 28, &[]),
            (step, 2, 0, &[]),
            (step, 1, 2, &[]),
        ];
        for (i, &(stage, rows, pos, slots)) in calls.iter().enumerate() {
            let x = rng.vec(rows.max(1) * cw, 1.5);
            let args = StageArgs {
                rows,
                pos,
                slots,
                ..Default::default()
            };
            if stage != fork {
                npu.write(&mut wc, bc[0], 0, &x).unwrap();
                npu.write(&mut wu, bu[0], 0, &x).unwrap();
            }
            let before = emu.stats().submitted;
            npu.run(&pc, stage, &args, &mut wc).unwrap();
            if stage == step {
                assert_eq!(emu.stats().submitted - before, 1, "call {i}");
            }
            npu.run(&pu, stage, &args, &mut wu).unwrap();
            let label = format!("call {i}: {rows} rows at {pos}");
            assert_same_bits(&npu, (&wc, &bc[..3]), (&wu, &bu[..3]), rows * cw, &label);
        }
        assert!(
            emu.command_errors().is_empty(),
            "{:?}",
            emu.command_errors()
        );
    }
}
