//! Which device linears of a stage go into one submission: a device backend's plan, made once
//! per stage at workspace creation, for [`crate::npu::ert::CmdChain`] submissions.
//!
//! A group starts at the first device linear not yet in a group and takes every later device
//! linear of the same hardware context whose input buffer no op in between writes (host ops,
//! other groups' members, the group's own earlier members: their results land in the stage's
//! buffers at their own positions), up to the chain's limits. The whole group is submitted at
//! the position of its first member, its sub-commands in program order; each member's result
//! is written back at the member's own position. So every op sees the buffers exactly as when
//! the stage runs op by op: a member's input is final when the group starts (nothing between
//! writes it), and results are written in program order. Buffers are compared whole
//! (conservative): a member is never hoisted over a write to any part of its input buffer.
//!
//! **Device norms.** A `LayerNorm` the device can compute (norm + per-row quantization into the
//! activation image a GEMM design reads, `crate::npu_norm`) may be a member too, when its f32
//! result is never needed on the host: every op that reads its output buffer before the buffer
//! is next overwritten whole (by a norm or an attention writing the same rows) is a device
//! linear that can read the image (`reads_image`, same context, same width, rows inside the
//! norm's), and all of them join the group with it; a norm whose output is still unwritten at
//! the stage's end (unless its buffer is a stage's scratch, which nothing reads after the
//! stage: [`ChainPlan::with_stage_local`]), or read by any other op, stays on the host. Its input must be final at the
//! group's start as a linear's, except for the **residual**: when the ops between that write
//! the norm's input are all member linears with the `AddInto` epilogue whose device results
//! are f32 rows of the norm's width ([`Role::Linear`]'s `residual_width`), and they add into
//! consecutive rows that cover the norm's rows exactly, each row once, in ascending order,
//! the norm takes their results as its residual `r` (`x + r` on the device) and x as it was at
//! the group's start. They are its **residual parts** ([`ChainPlan::residual_of`]): one linear
//! adding into exactly the norm's rows (any row count: the decoder, the out-projections), or
//! several at fixed offsets and row counts (the encoder's fc2 of the four 384-row MLP
//! chunks); the device holds their results at their row offsets of one region, which is `r`.
//! Each row of x gets exactly one add, so `x + r` is, row by row, the single f32 add the host
//! still does at the part's own position (the CPU's order of adds is kept, bit for bit). A
//! chunk missing, chunks overlapping or out of order, a part that stores instead of adding or
//! whose rows are not exact, or any other op (a host op, another group's member) writing x in
//! between: the norm does not join. A group may start at a norm. A norm whose input was added
//! into before an earlier member norm of the same rows (since the group's start) joins too when
//! that norm's x holds every one of those adds (its residual, or its own such chain) and the
//! adds after it are its residual parts as above: it takes that norm's x region, where the
//! device left x_out (`x + r` in the host's order of adds), as its x
//! ([`NormMember::x_from`]). This is a layer's MLP norm → fc2 (one linear in the decoder, the
//! four chunks in the encoder) → the next layer's attention norm.
//!
//! **Device quantize.** A linear whose input buffer was written since the group's start may
//! still join when the last op that wrote it is a member linear that stored (`Store` or
//! `Gelu`, not `AddInto`) exactly the rows it reads and whose device result is f32 rows of its
//! depth ([`Role::Linear`]'s `residual_width`), and it can read a quantized image
//! (`quantized_input`): a device quantize (one more sub-command) turns that member's result
//! into its activation image ([`ChainPlan::quantized`]). Its input at its own position is that
//! result (nothing after the source wrote the buffer), so the CPU's order is kept. This is
//! fc1 → fc2: fc2 reads fc1's GELU output.
//!
//! **Device attention.** An [`Op::Attention`], an [`Op::AttentionPrepared`] (its keys/values
//! already on the device) or an [`Op::CachedSelfAttention`] (its new k and v rows appended to
//! a device-resident cache) the device can compute ([`Role::Attention`]) may join a group
//! (never start one) when each of its q, k and v (its q) is exactly the stored (`Store`) result of a
//! member linear, f32 rows of the attention's width (`residual_width`), that
//! nothing wrote over since ([`ChainPlan::attention`]; q and k may share a buffer when the
//! writes in between are provably other rows): the device writes the attention's images from
//! those results (one more sub-command) and runs it; its result is f32 rows of its width,
//! which a linear reading exactly them takes through a device quantize as it takes a stored
//! linear's (the out-projection). Its result is still written back at its own position. So a
//! layer's `[norm, q, k, v, attention, out, …]` is one chain.
//!
//! **Limits.** A group is bounded by its sub-commands, by the bytes of its members' regions
//! and by the driver's 4 KiB chain buffer: each sub-command takes a slot of 8 bytes plus its
//! regmap there ([`DeviceLinear::slot_bytes`]; a device quantize one of
//! [`Limits::quantize_slot_bytes`]).
//!
//! Nothing here knows which network or device it plans for: the backend says which ops are
//! device ops, of which context, at what cost.

use crate::cpu::Epilogue;
use crate::stage::{At, BufferId, Extent, Op};

/// What a device op can do besides its arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A linear.
    Linear {
        /// It can read a member norm's activation image instead of quantizing its f32 input.
        reads_image: bool,
        /// Its device result is f32 rows of exactly this width (a norm can add them as `r`, a
        /// device quantize can read them).
        residual_width: Option<usize>,
        /// A device quantize of its input width exists: it can read the quantized image of a
        /// member linear's f32 result.
        quantized_input: bool,
        /// Its device result is f32 rows holding its outputs first, rows this many values
        /// apart (each row width a call can have; wider than its outputs when the device
        /// pads them): a member attention's first step can read them as its q, k or v.
        row_widths: Option<[usize; 2]>,
        /// Its outputs per row: the values it writes into each row of its output buffer.
        outputs: usize,
    },
    /// A norm.
    Norm {
        /// Its design with a residual input exists.
        residual: bool,
    },
    /// An attention ([`Op::Attention`], [`Op::AttentionPrepared`]) whose device result is f32
    /// rows of its width (a device quantize can read them).
    Attention,
}

/// What a device op (a linear, a norm or an attention) costs a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLinear {
    /// The hardware context it runs on (a chain's sub-commands share one).
    pub context: usize,
    /// Sub-commands it needs at its most rows.
    pub commands: usize,
    /// Device bytes of its inputs and outputs at its most rows (the group's buffers hold the
    /// sum over its members).
    pub bytes: usize,
    /// Bytes its sub-commands take in the driver's chain buffer (per sub-command 8 plus 4 per
    /// regmap word).
    pub slot_bytes: usize,
    /// Values per input row (a linear's depth, a norm's width, an attention's `heads ·
    /// head_dim`).
    pub width: usize,
    /// Linear, norm or attention.
    pub role: Role,
}

/// Limits of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most sub-commands in one submission.
    pub commands: usize,
    /// Most device bytes of one group's members together.
    pub bytes: usize,
    /// Most chain-buffer bytes of one group's sub-commands ([`DeviceLinear::slot_bytes`]).
    pub slot_bytes: usize,
    /// Chain-buffer bytes of one device quantize sub-command.
    pub quantize_slot_bytes: usize,
}

/// One submission: ops of a stage, in program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The context all members run on.
    pub context: usize,
    /// Op indices of the members, ascending.
    pub members: Vec<usize>,
    /// Sub-commands at the members' most rows.
    pub commands: usize,
    /// Device bytes at the members' most rows.
    pub bytes: usize,
    /// Chain-buffer bytes of its sub-commands at the members' most rows.
    pub slot_bytes: usize,
}

/// A member norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormMember {
    /// The member linear whose device result is (the first rows of) its residual `r`, if
    /// any: the first of its residual parts ([`ChainPlan::residual_of`]).
    pub residual: Option<usize>,
    /// Member linears whose results are its `r`, each its own consecutive rows of the norm's
    /// rows (0 without a residual; 1 when one linear adds into all of them; the encoder's MLP
    /// chunks: one per chunk).
    pub residual_parts: usize,
    /// Most rows its readers need of its image (their row offset plus most rows).
    pub max_rows: usize,
    /// The earlier member norm of the same rows whose x region (its x_out: x with every
    /// residual before it added) holds this norm's x, when x was added into more than once
    /// since the group's start; `None`: x as it was at the group's start.
    pub x_from: Option<usize>,
    /// Writes to x's buffer since the group's start that this norm's x includes.
    pub x_writes: usize,
}

/// The groups of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainPlan {
    /// In order of their first member.
    pub groups: Vec<Group>,
    /// Per op: the group that starts (is submitted) at it.
    pub starts: Vec<Option<u32>>,
    /// Per op: its (group, member index) when it is a member.
    pub member: Vec<Option<(u32, u32)>>,
    /// Per op: what a member norm needs.
    pub norms: Vec<Option<NormMember>>,
    /// Per op: for a member linear reading a member norm's image, `(norm op, first row)`.
    pub image_of: Vec<Option<(usize, usize)>>,
    /// Per op: for a member linear reading the device quantize of member linear `l`'s result
    /// (its input is exactly `l`'s output), `l`. The quantize is one more sub-command.
    pub quantized: Vec<Option<usize>>,
    /// Per op: for a member linear whose device result is a part of a member norm's residual
    /// `r`, `(norm op, first row)`: its rows are the norm's rows from `first` on, so the parts'
    /// results, each at its row offset of one region, are the norm's `r`.
    pub residual_of: Vec<Option<(usize, usize)>>,
    /// Per op: for a member attention, the member linears whose stored results are its
    /// inputs (the device writes the attention's images from them: one more sub-command).
    pub attention: Vec<Option<AttentionInputs>>,
}

/// The member linears whose stored results a member attention reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionInputs {
    /// Its queries.
    pub q: usize,
    /// Its keys and values; `None` for an attention over prepared keys/values
    /// ([`Op::AttentionPrepared`]), which the device already holds.
    pub kv: Option<(usize, usize)>,
}

impl AttentionInputs {
    /// Whether op `l` is one of them.
    pub fn contains(&self, l: usize) -> bool {
        self.q == l || self.kv.is_some_and(|(k, v)| k == l || v == l)
    }
}

/// A fixed offset, if `e` is one.
fn fixed(e: Extent) -> Option<usize> {
    (e.per_row == 0 && e.per_pos == 0).then_some(e.constant)
}

/// The first row of `norm_out`'s rows that `x` (a reader's input, `rows` rows, `width` wide)
/// starts at, when those rows lie inside the norm's `norm_rows` rows.
fn rows_inside(
    norm_out: At,
    norm_rows: Extent,
    x: At,
    rows: Extent,
    width: usize,
) -> Option<usize> {
    let (o, xo) = (fixed(norm_out.offset)?, fixed(x.offset)?);
    let rel = xo.checked_sub(o)?;
    if width == 0 || rel % width != 0 {
        return None;
    }
    let first = rel / width;
    if rows == norm_rows && first == 0 {
        return Some(0);
    }
    (first + fixed(rows)? <= fixed(norm_rows)?).then_some(first)
}

impl ChainPlan {
    /// Plans `ops`: `device(i, op)` says whether op `i` is a device op and what it costs
    /// (only [`Op::Linear`], [`Op::LayerNorm`], [`Op::Attention`] and
    /// [`Op::AttentionPrepared`] ops are asked). No buffer is a stage's scratch.
    pub fn new(
        ops: &[Op],
        device: impl Fn(usize, &Op) -> Option<DeviceLinear>,
        limits: Limits,
    ) -> Self {
        Self::with_stage_local(ops, device, limits, |_| false)
    }

    /// [`ChainPlan::new`] where `stage_local(b)` says that buffer `b` is a stage's scratch
    /// (nothing reads it after the stage before a stage writes it whole): a norm whose output
    /// is such a buffer may join though its output is not overwritten before the stage ends.
    pub fn with_stage_local(
        ops: &[Op],
        device: impl Fn(usize, &Op) -> Option<DeviceLinear>,
        limits: Limits,
        stage_local: impl Fn(BufferId) -> bool,
    ) -> Self {
        let n = ops.len();
        let dev: Vec<Option<DeviceLinear>> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Linear { .. }
                | Op::LayerNorm { .. }
                | Op::Attention { .. }
                | Op::AttentionPrepared { .. }
                | Op::CachedSelfAttention { .. } => device(i, op),
                _ => None,
            })
            .collect();
        let mut plan = ChainPlan {
            groups: Vec::new(),
            starts: vec![None; n],
            member: vec![None; n],
            norms: vec![None; n],
            image_of: vec![None; n],
            quantized: vec![None; n],
            residual_of: vec![None; n],
            attention: vec![None; n],
        };
        // Buffers written since the group's start, each with its writers in program order.
        let mut written: Vec<Written> = Vec::new();
        let note = |written: &mut Vec<Written>, j: usize| {
            for b in ops[j].writes() {
                match written.iter_mut().find(|w| w.buffer == b) {
                    Some(w) => w.writers.push(j),
                    None => written.push(Written {
                        buffer: b,
                        writers: vec![j],
                    }),
                }
            }
        };
        for i in 0..n {
            let Some(d) = dev[i] else { continue };
            if plan.member[i].is_some() {
                continue;
            }
            let g = plan.groups.len() as u32;
            let mut group = Group {
                context: d.context,
                members: Vec::new(),
                commands: 0,
                bytes: 0,
                slot_bytes: 0,
            };
            written.clear();
            // Readers of a member norm's image not reached yet (their cost is in the group).
            let mut pending: Vec<usize> = Vec::new();
            for j in i..n {
                let joined = match (dev[j], &ops[j]) {
                    _ if plan.member[j].is_some() => false,
                    (Some(_), _) if pending.contains(&j) => {
                        pending.retain(|&p| p != j);
                        true
                    }
                    (Some(dj), Op::Linear { x, .. }) if dj.context == d.context => {
                        // Its input final at the group's start, or exactly a member linear's
                        // result, which a device quantize (one more sub-command) reads.
                        let input = match written.iter().find(|w| w.buffer == x.buffer) {
                            None => Some(None),
                            Some(w) => {
                                let last = w.writers[w.writers.len() - 1];
                                quantize_source(ops, &dev, &group, last, j, dj).map(Some)
                            }
                        };
                        let quantize = usize::from(matches!(input, Some(Some(_))));
                        let commands = dj.commands + quantize;
                        let slots = dj.slot_bytes + quantize * limits.quantize_slot_bytes;
                        let fits = group.commands + commands <= limits.commands
                            && group.slot_bytes + slots <= limits.slot_bytes
                            && group.bytes + dj.bytes <= limits.bytes;
                        // The first member starts the group whatever it costs.
                        let ok = (fits || j == i) && input.is_some();
                        if ok {
                            group.commands += commands;
                            group.slot_bytes += slots;
                            group.bytes += dj.bytes;
                            plan.quantized[j] = input.flatten();
                        }
                        ok
                    }
                    (
                        Some(dj),
                        Op::Attention { .. }
                        | Op::AttentionPrepared { .. }
                        | Op::CachedSelfAttention { .. },
                    ) if dj.context == d.context && dj.role == Role::Attention && j != i => {
                        // Each input exactly a member linear's stored result, unwritten since:
                        // the device writes the attention's images from those results.
                        let source = |a: At, rows: Extent, width: usize| {
                            let w = written.iter().find(|w| w.buffer == a.buffer)?;
                            let l = last_writer(ops, &dev, &w.writers, a, rows, width)?;
                            attention_source(ops, &dev, &group, l, a, rows, width, dj)
                        };
                        let inputs = match ops[j] {
                            Op::Attention { q, k, v, dims, .. } => {
                                let w = dims.width();
                                match (
                                    source(q, dims.q_len, w),
                                    source(k, dims.kv_len, w),
                                    source(v, dims.kv_len, w),
                                ) {
                                    (Some(q), Some(k), Some(v)) => Some(AttentionInputs {
                                        q,
                                        kv: Some((k, v)),
                                    }),
                                    _ => None,
                                }
                            }
                            Op::AttentionPrepared { q, dims, .. } => {
                                source(q, dims.q_len, dims.width())
                                    .map(|q| AttentionInputs { q, kv: None })
                            }
                            // The new rows: `q_len` of each (the device appends k and v to
                            // the cache at the call's position).
                            Op::CachedSelfAttention {
                                q,
                                k_new,
                                v_new,
                                dims,
                                ..
                            } => {
                                let (w, rows) = (dims.width(), dims.q_len);
                                match (
                                    source(q, rows, w),
                                    source(k_new, rows, w),
                                    source(v_new, rows, w),
                                ) {
                                    (Some(q), Some(k), Some(v)) => Some(AttentionInputs {
                                        q,
                                        kv: Some((k, v)),
                                    }),
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        let fits = group.commands + dj.commands <= limits.commands
                            && group.slot_bytes + dj.slot_bytes <= limits.slot_bytes
                            && group.bytes + dj.bytes <= limits.bytes;
                        match inputs {
                            Some(inputs) if fits => {
                                plan.attention[j] = Some(inputs);
                                group.commands += dj.commands;
                                group.slot_bytes += dj.slot_bytes;
                                group.bytes += dj.bytes;
                                true
                            }
                            _ => false,
                        }
                    }
                    (Some(dj), Op::LayerNorm { .. }) if dj.context == d.context => {
                        let join = norm_join(
                            ops,
                            &dev,
                            &plan,
                            &group,
                            &written,
                            (j, dj),
                            limits,
                            &stage_local,
                        );
                        match join {
                            Some(join) => {
                                plan.norms[j] = Some(join.member);
                                for &(l, first) in &join.parts {
                                    plan.residual_of[l] = Some((j, first));
                                }
                                for &(r, first) in &join.readers {
                                    plan.image_of[r] = Some((j, first));
                                    pending.push(r);
                                }
                                group.commands += join.commands;
                                group.slot_bytes += join.slot_bytes;
                                group.bytes += join.bytes;
                                true
                            }
                            None => false,
                        }
                    }
                    _ => false,
                };
                if joined {
                    plan.member[j] = Some((g, group.members.len() as u32));
                    group.members.push(j);
                    // A member norm's output is the image its readers take, never a host
                    // write; everything else lands in the stage's buffers at its position.
                    if !matches!(ops[j], Op::LayerNorm { .. }) {
                        note(&mut written, j);
                    }
                } else if j == i {
                    break;
                } else {
                    note(&mut written, j);
                }
            }
            debug_assert!(pending.is_empty(), "readers of a member norm left out");
            if group.members.is_empty() {
                continue;
            }
            plan.starts[group.members[0]] = Some(g);
            plan.groups.push(group);
        }
        plan
    }
}

/// A buffer written since a group's start: the ops that wrote it, in program order (host
/// ops, other groups' members, the group's own member linears; a member norm writes only its
/// image, never the buffer).
struct Written {
    buffer: BufferId,
    writers: Vec<usize>,
}

/// Whether linear `j` (device op `dj`) can read the device quantize of the result of `l`, the
/// last op that wrote its input buffer since the group's start: `l` a member whose device
/// result is f32 rows of `j`'s depth stored into exactly `j`'s input rows — a linear (`Store`
/// or `Gelu`, not added; [`Role::Linear`]'s `residual_width`) or an attention
/// ([`Role::Attention`], its rows `heads · head_dim` wide) — and `j` able to read a quantized
/// image. Then `j`'s input at its position is `l`'s result (nothing after `l` wrote the
/// buffer), which the device already holds.
fn quantize_source(
    ops: &[Op],
    dev: &[Option<DeviceLinear>],
    group: &Group,
    l: usize,
    j: usize,
    dj: DeviceLinear,
) -> Option<usize> {
    let Op::Linear { x, rows, .. } = &ops[j] else {
        return None;
    };
    let Role::Linear {
        reads_image: true,
        quantized_input: true,
        ..
    } = dj.role
    else {
        return None;
    };
    let dl = dev[l]?;
    let source = match (&ops[l], dl.role) {
        (
            Op::Linear {
                out,
                rows: l_rows,
                epilogue: Epilogue::Store | Epilogue::Gelu,
                ..
            },
            Role::Linear {
                residual_width: Some(w),
                ..
            },
        ) => out == x && l_rows == rows && w == dj.width,
        (
            Op::Attention { out, dims, .. }
            | Op::AttentionPrepared { out, dims, .. }
            | Op::CachedSelfAttention { out, dims, .. },
            Role::Attention,
        ) => out == x && dims.q_len == *rows && dims.width() == dj.width,
        _ => false,
    };
    (source && group.members.contains(&l) && dl.context == dj.context).then_some(l)
}

/// The last of `writers` (ops that wrote `a`'s buffer since the group's start, in program
/// order) that wrote `a` itself: a linear whose output is exactly `a`; every later writer must
/// be a device linear whose rows (its rows of its `outputs`) are disjoint from `a`'s
/// `rows` rows of `width` for every call (q and k in one buffer, the encoder's; k and v in
/// one, v after k's rows, the decoder's). `None` when that cannot be shown.
fn last_writer(
    ops: &[Op],
    dev: &[Option<DeviceLinear>],
    writers: &[usize],
    a: At,
    rows: Extent,
    width: usize,
) -> Option<usize> {
    // Start and end of `rows` rows of `width` at `offset`, as extents of the call's rows and
    // position.
    let span = |offset: Extent, rows: Extent, width: usize| {
        let end = Extent {
            constant: offset.constant + rows.constant * width,
            per_row: offset.per_row + rows.per_row * width,
            per_pos: offset.per_pos + rows.per_pos * width,
        };
        (offset, end)
    };
    // `end <= start` for every rows and position (both non-negative).
    let before = |end: Extent, start: Extent| {
        end.constant <= start.constant
            && end.per_row <= start.per_row
            && end.per_pos <= start.per_pos
    };
    for &l in writers.iter().rev() {
        let Op::Linear {
            out, rows: l_rows, ..
        } = ops[l]
        else {
            return None;
        };
        if out == a {
            return Some(l);
        }
        let Some(DeviceLinear {
            role: Role::Linear { outputs: lw, .. },
            ..
        }) = dev[l]
        else {
            return None;
        };
        let (theirs, ours) = (span(out.offset, l_rows, lw), span(a.offset, rows, width));
        if !before(theirs.1, ours.0) && !before(ours.1, theirs.0) {
            return None;
        }
    }
    None
}

/// Whether member linear `l`, the last op that wrote `a` since the group's start, stored
/// (`Store`) exactly `rows` rows of its device result, `width` f32 outputs a row (in device
/// rows of that width or wider), at `a`: then attention `da` can take them as its q, k or v.
#[allow(clippy::too_many_arguments)]
fn attention_source(
    ops: &[Op],
    dev: &[Option<DeviceLinear>],
    group: &Group,
    l: usize,
    a: At,
    rows: Extent,
    width: usize,
    da: DeviceLinear,
) -> Option<usize> {
    let Op::Linear {
        out,
        rows: l_rows,
        epilogue: Epilogue::Store,
        ..
    } = ops[l]
    else {
        return None;
    };
    let DeviceLinear {
        role:
            Role::Linear {
                residual_width,
                row_widths,
                ..
            },
        context,
        ..
    } = dev[l]?
    else {
        return None;
    };
    // Its outputs exactly `width` values a row, in rows of exactly that width or wider.
    let rows_of_width = residual_width == Some(width)
        || row_widths.is_some_and(|ws| ws.iter().all(|&rw| rw >= width));
    (group.members.contains(&l)
        && context == da.context
        && out == a
        && l_rows == rows
        && rows_of_width)
        .then_some(l)
}

/// The residual parts of a norm with input `x` (`rows` rows, `width` wide): the writes to x's
/// buffer `tail` (in program order) must be member linears adding (`AddInto`) their device
/// result, f32 rows of `width` ([`Role::Linear`]'s `residual_width`), into consecutive rows
/// that cover the norm's rows exactly, each row once, in ascending order: one linear into
/// exactly the norm's rows (any row count), or several at fixed offsets and row counts (the
/// encoder's MLP chunks). Then `x + r` (`r` the parts' results at their row offsets) is, row by
/// row, the single f32 add the host does at the part's position. Ascending order also keeps
/// the device's layout safe: a part's whole rounds past its rows land in the next part's rows
/// before that part writes them. Returns `(op, first row)` per part.
fn residual_parts(
    ops: &[Op],
    dev: &[Option<DeviceLinear>],
    group: &Group,
    tail: &[usize],
    x: At,
    rows: Extent,
    width: usize,
) -> Option<Vec<(usize, usize)>> {
    let part = |l: usize| -> Option<(At, Extent)> {
        let Op::Linear {
            out,
            rows: l_rows,
            epilogue: Epilogue::AddInto,
            ..
        } = ops[l]
        else {
            return None;
        };
        let Some(DeviceLinear {
            role:
                Role::Linear {
                    residual_width: Some(w),
                    ..
                },
            ..
        }) = dev[l]
        else {
            return None;
        };
        (group.members.contains(&l) && out.buffer == x.buffer && w == width)
            .then_some((out, l_rows))
    };
    if let &[l] = tail {
        let (out, l_rows) = part(l)?;
        if out == x && l_rows == rows {
            return Some(vec![(l, 0)]);
        }
    }
    // Parts at fixed offsets: each starts where the one before it ended.
    let (start, total) = (fixed(x.offset)?, fixed(rows)?);
    let mut next = 0;
    let mut parts = Vec::with_capacity(tail.len());
    for &l in tail {
        let (out, l_rows) = part(l)?;
        let m = fixed(l_rows)?;
        if m == 0 || fixed(out.offset)? != start + next * width {
            return None;
        }
        parts.push((l, next));
        next += m;
    }
    (next == total).then_some(parts)
}

/// A norm joining a group: the member, its readers `(op, first row)`, its residual parts
/// `(op, first row)`, the readers' cost with it.
struct NormJoin {
    member: NormMember,
    readers: Vec<(usize, usize)>,
    parts: Vec<(usize, usize)>,
    commands: usize,
    slot_bytes: usize,
    bytes: usize,
}

/// Whether norm `j` (device op `dj`) can join `group`: its input final at the group's start
/// (or the residual case), every reader of its output a device linear of the context that
/// reads the image, its output overwritten whole before the stage ends (or a stage's scratch,
/// `stage_local`), and the norm and its readers within the limits.
#[allow(clippy::too_many_arguments)]
fn norm_join(
    ops: &[Op],
    dev: &[Option<DeviceLinear>],
    plan: &ChainPlan,
    group: &Group,
    written: &[Written],
    (j, dj): (usize, DeviceLinear),
    limits: Limits,
    stage_local: &dyn Fn(BufferId) -> bool,
) -> Option<NormJoin> {
    let Op::LayerNorm { x, out, rows, .. } = ops[j] else {
        return None;
    };
    let Role::Norm {
        residual: has_residual,
    } = dj.role
    else {
        return None;
    };
    let width = dj.width;
    // The input: final, or written since the start only by member linears adding into it.
    // The writes before the latest member norm of the same rows are in that norm's x_out (its
    // x region: every write before it added in the host's order), which this norm then reads
    // as its x; the writes after it are this norm's residual parts.
    let writers: &[usize] = written
        .iter()
        .find(|w| w.buffer == x.buffer)
        .map_or(&[], |w| &w.writers);
    let earlier = group.members.iter().rev().copied().find(
        |&m| matches!(ops[m], Op::LayerNorm { x: mx, rows: mr, .. } if mx == x && mr == rows),
    );
    let before = earlier.map_or(0, |n| writers.iter().filter(|&&k| k < n).count());
    let x_from = match earlier {
        Some(n) if before > 0 => {
            // That norm's x already holds every write before it (it joined only so).
            (plan.norms[n]?.x_writes == before).then_some(Some(n))?
        }
        _ => None,
    };
    let tail = &writers[before..];
    if x_from.is_some() && tail.is_empty() {
        // x is that norm's x_out with no residual: no design reads it so.
        return None;
    }
    let parts = if tail.is_empty() {
        Vec::new()
    } else if has_residual {
        residual_parts(ops, dev, group, tail, x, rows, width)?
    } else {
        return None;
    };
    let residual = parts.first().map(|p| p.0);
    let x_writes = writers.len();
    let (mut commands, mut slot_bytes, mut bytes) = (dj.commands, dj.slot_bytes, dj.bytes);
    let mut readers = Vec::new();
    let mut max_rows = 0;
    let mut covered = false;
    for (k, op) in ops.iter().enumerate().skip(j + 1) {
        if op.reads().any(|b| b == out.buffer) {
            let (
                Op::Linear {
                    x: rx,
                    rows: rr,
                    max_rows: rmax,
                    ..
                },
                Some(dk),
            ) = (op, dev[k])
            else {
                return None;
            };
            let reads_image = matches!(
                dk.role,
                Role::Linear {
                    reads_image: true,
                    ..
                }
            );
            if !reads_image
                || dk.context != group.context
                || dk.width != width
                || rx.buffer != out.buffer
                || plan.member[k].is_some()
            {
                return None;
            }
            let first = rows_inside(out, rows, *rx, *rr, width)?;
            readers.push((k, first));
            max_rows = max_rows.max(first + rmax);
            commands += dk.commands;
            slot_bytes += dk.slot_bytes;
            bytes += dk.bytes;
        }
        if op.writes().any(|b| b == out.buffer) {
            let whole = match *op {
                Op::LayerNorm {
                    out: o, rows: r, ..
                } => o == out && r == rows && dev[k].is_some_and(|d| d.width == width),
                Op::Attention { out: o, dims, .. } => {
                    o == out && dims.q_len == rows && dims.width() == width
                }
                _ => false,
            };
            if !whole {
                return None;
            }
            covered = true;
            break;
        }
    }
    // Not overwritten before the stage ends: the host may read it after, unless it is a
    // stage's scratch.
    let covered = covered || stage_local(out.buffer);
    if !covered
        || readers.is_empty()
        || group.commands + commands > limits.commands
        || group.slot_bytes + slot_bytes > limits.slot_bytes
        || group.bytes + bytes > limits.bytes
    {
        return None;
    }
    Some(NormJoin {
        member: NormMember {
            residual,
            residual_parts: parts.len(),
            max_rows,
            x_from,
            x_writes,
        },
        readers,
        parts,
        commands,
        slot_bytes,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Epilogue;
    use crate::stage::{At, Extent, MatrixId};

    fn linear(x: u16, out: u16, w: u16) -> Op {
        Op::Linear {
            x: At::start(BufferId(x)),
            out: At::start(BufferId(out)),
            rows: Extent::rows(1),
            max_rows: 8,
            w: MatrixId(w),
            bias: None,
            epilogue: Epilogue::Store,
        }
    }

    fn norm(x: u16, out: u16) -> Op {
        Op::LayerNorm {
            x: At::start(BufferId(x)),
            out: At::start(BufferId(out)),
            rows: Extent::rows(1),
            gamma: crate::stage::VectorId(0),
            beta: crate::stage::VectorId(0),
            eps: 1e-5,
        }
    }

    fn lin_at(x: At, out: At, rows: Extent, w: u16, epilogue: Epilogue) -> Op {
        Op::Linear {
            x,
            out,
            rows,
            max_rows: 8,
            w: MatrixId(w),
            bias: None,
            epilogue,
        }
    }

    fn norm_at(x: At, out: At, rows: Extent) -> Op {
        Op::LayerNorm {
            x,
            out,
            rows,
            gamma: crate::stage::VectorId(0),
            beta: crate::stage::VectorId(0),
            eps: 1e-5,
        }
    }

    /// Attention of q, k, v (one head of width 8) into `out`: overwrites `out`'s rows whole.
    fn attention(q: u16, k: u16, v: u16, out: u16) -> Op {
        let st = |b| At::start(BufferId(b));
        Op::Attention {
            q: st(q),
            k: st(k),
            v: st(v),
            out: st(out),
            dims: crate::stage::AttentionDims {
                heads: 1,
                head_dim: 8,
                q_len: Extent::rows(1),
                kv_len: Extent::rows(1),
                causal_offset: None,
                max_q_len: 8,
                max_kv_len: 8,
            },
        }
    }

    const LIMITS: Limits = Limits {
        commands: 78,
        bytes: usize::MAX,
        slot_bytes: usize::MAX,
        quantize_slot_bytes: 60,
    };

    /// Every linear on context 0 (matrix 7: context 1; matrix 9: on the host; matrix 8 cannot
    /// read an image; matrices 6 and 11 give results that are not rows a norm can add;
    /// matrices 10 and up can read a device quantize of their input), every norm on context
    /// 0, one command, 100 bytes, width 8.
    fn device(_: usize, op: &Op) -> Option<DeviceLinear> {
        let role = match op {
            Op::Linear { w, .. } if w.0 == 9 => return None,
            Op::Attention { .. } | Op::AttentionPrepared { .. } => return None,
            Op::Linear { w, .. } => Role::Linear {
                reads_image: w.0 != 8,
                residual_width: (w.0 != 6 && w.0 != 11).then_some(8),
                quantized_input: w.0 >= 10,
                // Matrix 11's rows come back wider than its outputs (an attention may read them).
                row_widths: (w.0 == 11).then_some([8, 16]),
                outputs: 8,
            },
            _ => Role::Norm { residual: true },
        };
        let context = match op {
            Op::Linear { w, .. } => usize::from(w.0 == 7),
            _ => 0,
        };
        Some(DeviceLinear {
            context,
            commands: 1,
            bytes: 100,
            slot_bytes: 52,
            width: 8,
            role,
        })
    }

    fn plan(ops: &[Op], limits: Limits) -> Vec<Vec<usize>> {
        let p = ChainPlan::new(ops, device, limits);
        for (g, group) in p.groups.iter().enumerate() {
            assert_eq!(p.starts[group.members[0]], Some(g as u32));
            for (m, &op) in group.members.iter().enumerate() {
                assert_eq!(p.member[op], Some((g as u32, m as u32)));
            }
        }
        p.groups.into_iter().map(|g| g.members).collect()
    }

    #[test]
    fn projections_of_one_input_share_a_submission() {
        // norm h; q, k, v of h; attention-like host op writes a; out of a.
        let ops = [
            norm(0, 1),
            linear(1, 2, 0),
            linear(1, 3, 1),
            linear(1, 4, 2),
            norm(2, 5),
            linear(5, 0, 3),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![1, 2, 3], vec![5]]);
    }

    #[test]
    fn a_member_never_reads_what_an_earlier_op_of_its_group_span_writes() {
        // fc1 chunks read h, write hidden; fc2 chunks read hidden: every fc1 hoists into the
        // first group, each fc2 waits for its fc1's result.
        let ops = [
            linear(1, 2, 0),
            linear(2, 0, 1),
            linear(1, 2, 0),
            linear(2, 0, 1),
            linear(1, 2, 0),
            linear(2, 0, 1),
        ];
        assert_eq!(
            plan(&ops, LIMITS),
            vec![vec![0, 2, 4], vec![1], vec![3], vec![5]]
        );
        // Across host ops that do not touch the input: cross-attention K/V of every layer.
        let ops = [
            linear(1, 2, 0),
            linear(1, 3, 1),
            norm(2, 4),
            linear(1, 2, 2),
            linear(1, 3, 3),
            norm(2, 4),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 1, 3, 4]]);
        // A host op writing the input stops the hoisting.
        let ops = [linear(1, 2, 0), norm(3, 1), linear(1, 4, 1)];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0], vec![2]]);
    }

    #[test]
    fn contexts_host_linears_and_limits_split_groups() {
        // Matrix 7 runs on another context, matrix 9 on the host (writes buffer 1).
        let ops = [
            linear(0, 2, 0),
            linear(0, 3, 7),
            linear(0, 4, 1),
            linear(0, 1, 9),
            linear(1, 5, 2),
            linear(0, 6, 7),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 2], vec![1, 5], vec![4]]);
        let ops: Vec<Op> = (0..5).map(|i| linear(0, 1 + i, i)).collect();
        let two = Limits {
            commands: 2,
            bytes: usize::MAX,
            slot_bytes: usize::MAX,
            quantize_slot_bytes: 60,
        };
        assert_eq!(plan(&ops, two), vec![vec![0, 1], vec![2, 3], vec![4]]);
        let bytes = Limits {
            commands: 78,
            bytes: 300,
            slot_bytes: usize::MAX,
            quantize_slot_bytes: 60,
        };
        assert_eq!(plan(&ops, bytes), vec![vec![0, 1, 2], vec![3, 4]]);
    }

    fn full_plan(ops: &[Op], limits: Limits) -> ChainPlan {
        let p = ChainPlan::new(ops, device, limits);
        // Every reader of a member norm's image is a member of the norm's group.
        for (r, img) in p.image_of.iter().enumerate() {
            if let Some((norm, _)) = img {
                assert!(p.norms[*norm].is_some());
                assert_eq!(p.member[r].map(|m| m.0), p.member[*norm].map(|m| m.0));
            }
        }
        p
    }

    #[test]
    fn a_norm_joins_the_linears_that_read_it_and_takes_a_member_s_residual() {
        let st = |b| At::start(BufferId(b));
        let rows = Extent::rows(1);
        // A layer: norm, q/k/v, attention (overwrites h), out += into x, norm with the
        // residual, fc1, fc2 += into x, the next layer's norm with fc2's residual, its q, its
        // attention (overwrites h).
        let ops = [
            norm(0, 1),
            linear(1, 2, 0),
            linear(1, 3, 1),
            linear(1, 4, 2),
            attention(2, 3, 4, 1),
            lin_at(st(1), st(0), rows, 3, Epilogue::AddInto),
            norm(0, 1),
            lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
            lin_at(st(5), st(0), rows, 5, Epilogue::AddInto),
            norm(0, 1),
            linear(1, 2, 0),
            attention(2, 3, 4, 1),
        ];
        let p = full_plan(&ops, LIMITS);
        let groups: Vec<_> = p.groups.iter().map(|g| g.members.clone()).collect();
        assert_eq!(
            groups,
            vec![vec![0, 1, 2, 3], vec![5, 6, 7], vec![8, 9, 10]]
        );
        assert_eq!(p.starts[0], Some(0), "a group may start at a norm");
        let residual = |i: usize| p.norms[i].map(|n| n.residual);
        assert_eq!(residual(0), Some(None));
        assert_eq!(residual(6), Some(Some(5)));
        assert_eq!(residual(9), Some(Some(8)));
        assert_eq!(p.image_of[7], Some((6, 0)));
        assert_eq!(p.image_of[8], None, "fc2 reads fc1's f32 output");
        assert_eq!(p.groups[1].commands, 3);
    }

    #[test]
    fn a_norm_whose_f32_output_the_host_may_read_stays_on_the_host() {
        let st = |b| At::start(BufferId(b));
        let host_read = Op::Transpose {
            x: st(1),
            out: st(6),
            rows: 1,
            cols: 8,
        };
        // Read by a host op.
        let ops = [
            norm(0, 1),
            linear(1, 2, 0),
            host_read.clone(),
            attention(2, 3, 4, 1),
        ];
        let p = full_plan(&ops, LIMITS);
        assert_eq!(p.norms[0], None);
        assert_eq!(plan(&ops, LIMITS), vec![vec![1]]);
        // Not overwritten before the stage ends (the host may read it after).
        let ops = [norm(0, 1), linear(1, 2, 0)];
        assert_eq!(plan(&ops, LIMITS), vec![vec![1]]);
        // Unless its buffer is a stage's scratch (nothing reads it after the stage); another
        // buffer's being one changes nothing, and a host op reading it still keeps it out.
        let scratch = |b: u16| move |x: BufferId| x == BufferId(b);
        let p = ChainPlan::with_stage_local(&ops, device, LIMITS, scratch(1));
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].members, vec![0, 1]);
        assert_eq!(p.image_of[1], Some((0, 0)));
        let p = ChainPlan::with_stage_local(&ops, device, LIMITS, scratch(2));
        assert_eq!(p.norms[0], None);
        let read = [norm(0, 1), linear(1, 2, 0), host_read.clone()];
        let p = ChainPlan::with_stage_local(&read, device, LIMITS, scratch(1));
        assert_eq!(p.norms[0], None);
        // Read by a linear that cannot read an image (matrix 8), or by one on another context.
        for w in [8, 7] {
            let ops = [
                norm(0, 1),
                linear(1, 2, 0),
                linear(1, 3, w),
                attention(2, 3, 4, 1),
            ];
            assert_eq!(full_plan(&ops, LIMITS).norms[0], None, "matrix {w}");
        }
        // Overwritten only in part (a linear's output is not known to cover the rows).
        let ops = [norm(0, 1), linear(1, 2, 0), linear(2, 1, 1)];
        assert_eq!(full_plan(&ops, LIMITS).norms[0], None);
        // The norm and its readers over the group's sub-command limit.
        let three = Limits {
            commands: 3,
            bytes: usize::MAX,
            slot_bytes: usize::MAX,
            quantize_slot_bytes: 60,
        };
        let ops = [
            norm(0, 1),
            linear(1, 2, 0),
            linear(1, 3, 1),
            linear(1, 4, 2),
            attention(2, 3, 4, 1),
        ];
        assert_eq!(full_plan(&ops, three).norms[0], None);
        assert_eq!(plan(&ops, three), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn a_norm_s_input_must_be_final_or_one_member_s_residual() {
        let st = |b| At::start(BufferId(b));
        let rows = Extent::rows(1);
        // x written by a host op after the group's start: the norm starts its own group.
        let ops = [
            linear(5, 2, 0),
            Op::Transpose {
                x: st(6),
                out: st(0),
                rows: 1,
                cols: 8,
            },
            norm(0, 1),
            linear(1, 3, 1),
            attention(2, 3, 4, 1),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0], vec![2, 3]]);
        // A member adds into x, but its result is not rows the norm can add (matrix 6).
        let ops = [
            lin_at(st(5), st(0), rows, 6, Epilogue::AddInto),
            norm(0, 1),
            linear(1, 3, 1),
            attention(2, 3, 4, 1),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0], vec![1, 2]]);
        // A member stores (not adds) into x: the norm would need its result as x itself.
        let ops = [
            lin_at(st(5), st(0), rows, 0, Epilogue::Store),
            norm(0, 1),
            linear(1, 3, 1),
            attention(2, 3, 4, 1),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0], vec![1, 2]]);
        // Two members add into x: not one residual.
        let ops = [
            lin_at(st(5), st(0), rows, 0, Epilogue::AddInto),
            lin_at(st(5), st(0), rows, 1, Epilogue::AddInto),
            norm(0, 1),
            linear(1, 3, 1),
            attention(2, 3, 4, 1),
        ];
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_linear_reads_the_device_quantize_of_a_member_s_result() {
        let st = |b| At::start(BufferId(b));
        let rows = Extent::rows(1);
        // The MLP: out += into x, the norm with its residual, fc1 (GELU) into hidden, fc2
        // reading hidden through the quantize, adding into x; the next layer's norm (x written
        // twice since the group's start: it reads the first norm's x_out and takes fc2's
        // result as its residual) and its q.
        let ops = [
            lin_at(st(6), st(0), rows, 3, Epilogue::AddInto),
            norm(0, 1),
            lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
            lin_at(st(5), st(0), rows, 10, Epilogue::AddInto),
            norm(0, 1),
            linear(1, 2, 0),
            attention(2, 3, 4, 1),
        ];
        let p = full_plan(&ops, LIMITS);
        let groups: Vec<_> = p.groups.iter().map(|g| g.members.clone()).collect();
        assert_eq!(groups, vec![vec![0, 1, 2, 3, 4, 5]]);
        assert_eq!(p.quantized[3], Some(2));
        assert_eq!(p.quantized.iter().flatten().count(), 1);
        let chain = |i: usize| p.norms[i].map(|n| (n.residual, n.x_from, n.x_writes));
        assert_eq!(chain(1), Some((Some(0), None, 1)));
        assert_eq!(chain(4), Some((Some(3), Some(1), 2)));
        // Six members and the quantize.
        assert_eq!(p.groups[0].commands, 7);
        // A host op adding into x between the norms: the second norm starts its own group.
        let mut host = ops.to_vec();
        host.insert(
            4,
            Op::Transpose {
                x: st(7),
                out: st(0),
                rows: 1,
                cols: 8,
            },
        );
        let p = full_plan(&host, LIMITS);
        assert_eq!(p.norms[5].map(|n| n.x_from), Some(None));
        assert_ne!(p.member[5].map(|m| m.0), p.member[0].map(|m| m.0));
        // Chunks: each fc2 reads the hidden rows its own fc1 wrote last.
        let at = |b, row: usize| At::fixed(BufferId(b), row * 8);
        let half = Extent::fixed(4);
        let ops = [
            lin_at(at(1, 0), at(5, 0), half, 4, Epilogue::Gelu),
            lin_at(at(5, 0), at(0, 0), half, 10, Epilogue::AddInto),
            lin_at(at(1, 4), at(5, 0), half, 4, Epilogue::Gelu),
            lin_at(at(5, 0), at(0, 4), half, 10, Epilogue::AddInto),
        ];
        let p = full_plan(&ops, LIMITS);
        assert_eq!(plan(&ops, LIMITS), vec![vec![0, 1, 2, 3]]);
        assert_eq!((p.quantized[1], p.quantized[3]), (Some(0), Some(2)));
        // Not when the source adds into the buffer (its device result is not the buffer's
        // rows), writes other rows, cannot give exact rows (matrix 6), is on the host
        // (matrix 9), or the reader cannot read a quantize (matrix 5); nor when a host op
        // writes the buffer after the source.
        let host_write = Op::Transpose {
            x: st(7),
            out: st(5),
            rows: 1,
            cols: 8,
        };
        for (source, reader, between) in [
            (lin_at(st(1), st(5), rows, 4, Epilogue::AddInto), 10, None),
            (lin_at(st(1), at(5, 1), rows, 4, Epilogue::Gelu), 10, None),
            (lin_at(st(1), st(5), rows, 6, Epilogue::Gelu), 10, None),
            (lin_at(st(1), st(5), rows, 9, Epilogue::Gelu), 10, None),
            (lin_at(st(1), st(5), rows, 4, Epilogue::Gelu), 5, None),
            (
                lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
                10,
                Some(host_write.clone()),
            ),
        ] {
            let mut ops = vec![linear(1, 2, 0), source];
            ops.extend(between);
            ops.push(lin_at(st(5), st(0), rows, reader, Epilogue::AddInto));
            let p = full_plan(&ops, LIMITS);
            assert!(p.quantized.iter().all(Option::is_none), "{ops:?}");
            let last = ops.len() - 1;
            assert_ne!(p.member[last].map(|m| m.0), p.member[0].map(|m| m.0));
        }
        // The quantize counts against the sub-command limit.
        let two = Limits {
            commands: 2,
            bytes: usize::MAX,
            slot_bytes: usize::MAX,
            quantize_slot_bytes: 60,
        };
        let ops = [
            lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
            lin_at(st(5), st(0), rows, 10, Epilogue::AddInto),
        ];
        assert_eq!(plan(&ops, two), vec![vec![0], vec![1]]);
    }

    #[test]
    fn chunked_readers_take_their_rows_of_the_image() {
        // The encoder's MLP: 8 rows normed once, fc1 / fc2 in two chunks of 4 rows.
        let at = |b, row: usize| At::fixed(BufferId(b), row * 8);
        let (all, half) = (Extent::fixed(8), Extent::fixed(4));
        let ops = [
            lin_at(at(6, 0), at(0, 0), all, 3, Epilogue::AddInto),
            norm_at(at(0, 0), at(1, 0), all),
            lin_at(at(1, 0), at(5, 0), half, 4, Epilogue::Gelu),
            lin_at(at(5, 0), at(0, 0), half, 5, Epilogue::AddInto),
            lin_at(at(1, 4), at(5, 0), half, 4, Epilogue::Gelu),
            lin_at(at(5, 0), at(0, 4), half, 5, Epilogue::AddInto),
            // Its input was added into in part by the last fc2: not a residual it can take.
            norm_at(at(0, 0), at(1, 0), all),
            lin_at(at(1, 0), at(2, 0), all, 0, Epilogue::Store),
            norm_at(at(0, 0), at(1, 0), all),
        ];
        let p = full_plan(&ops, LIMITS);
        let groups: Vec<_> = p.groups.iter().map(|g| g.members.clone()).collect();
        assert_eq!(groups, vec![vec![0, 1, 2, 4], vec![3], vec![5], vec![6, 7]]);
        assert_eq!(p.image_of[2], Some((1, 0)));
        assert_eq!(p.image_of[4], Some((1, 4)));
        assert_eq!(
            p.norms[1].map(|n| (n.residual, n.max_rows)),
            Some((Some(0), 12))
        );
        assert_eq!(p.norms[6].map(|n| n.residual), Some(None));
        // A reader past the norm's rows: the norm stays on the host.
        let ops = [
            norm_at(at(0, 0), at(1, 0), half),
            lin_at(at(1, 2), at(5, 0), half, 4, Epilogue::Gelu),
            norm_at(at(0, 0), at(1, 0), half),
        ];
        assert_eq!(full_plan(&ops, LIMITS).norms[0], None);
    }

    /// The encoder's layer with its MLP in chunks of the given `(first row, rows)` (8 rows,
    /// width 8): out += into x, the MLP norm (out's residual), per chunk fc1 (GELU) into
    /// hidden and fc2 (matrix `fc2`, reading hidden through the quantize) += into x at its
    /// rows, `between` (if any), the next layer's norm, its q, and a norm overwriting its
    /// output (the next attention's place).
    fn chunked_layer(chunks: &[(usize, usize)], fc2: u16, between: Option<Op>) -> Vec<Op> {
        let at = |b, row: usize| At::fixed(BufferId(b), row * 8);
        let all = Extent::fixed(8);
        let mut ops = vec![
            lin_at(at(6, 0), at(0, 0), all, 3, Epilogue::AddInto),
            norm_at(at(0, 0), at(1, 0), all),
        ];
        for &(r0, m) in chunks {
            let rows = Extent::fixed(m);
            ops.push(lin_at(at(1, r0), at(5, 0), rows, 4, Epilogue::Gelu));
            ops.push(lin_at(at(5, 0), at(0, r0), rows, fc2, Epilogue::AddInto));
        }
        ops.extend(between);
        ops.extend([
            norm_at(at(0, 0), at(1, 0), all),
            lin_at(at(1, 0), at(2, 0), all, 0, Epilogue::Store),
            norm_at(at(0, 0), at(1, 0), all),
        ]);
        ops
    }

    #[test]
    fn chunk_results_at_their_rows_are_the_next_norm_s_residual() {
        // Two chunks of 4 rows, and three uneven ones: one group, out → the MLP → the next
        // layer's norm (x: the MLP norm's x_out; r: every fc2's result at its rows) → its q.
        for chunks in [vec![(0, 4), (4, 4)], vec![(0, 3), (3, 3), (6, 2)]] {
            let ops = chunked_layer(&chunks, 10, None);
            let next = 2 + 2 * chunks.len();
            let p = full_plan(&ops, LIMITS);
            let groups: Vec<_> = p.groups.iter().map(|g| g.members.clone()).collect();
            assert_eq!(
                groups,
                vec![(0..next + 2).collect::<Vec<_>>()],
                "{chunks:?}"
            );
            let fc2s: Vec<usize> = (0..chunks.len()).map(|c| 3 + 2 * c).collect();
            let member =
                |i: usize| p.norms[i].map(|n| (n.residual, n.residual_parts, n.x_from, n.x_writes));
            assert_eq!(member(1), Some((Some(0), 1, None, 1)));
            assert_eq!(
                member(next),
                Some((Some(3), chunks.len(), Some(1), 1 + chunks.len()))
            );
            assert_eq!(p.residual_of[0], Some((1, 0)));
            for (&l, &(r0, _)) in fc2s.iter().zip(&chunks) {
                assert_eq!(p.residual_of[l], Some((next, r0)), "{chunks:?}");
                assert_eq!(p.quantized[l], Some(l - 1));
            }
            assert_eq!(p.residual_of.iter().flatten().count(), 1 + chunks.len());
            // Every member and one quantize per chunk.
            assert_eq!(p.groups[0].commands, next + 2 + chunks.len());
        }
    }

    #[test]
    fn chunks_that_do_not_cover_the_norm_s_rows_once_in_order_are_no_residual() {
        let at = |b, row: usize| At::fixed(BufferId(b), row * 8);
        let host_write = |row| Op::Transpose {
            x: At::start(BufferId(7)),
            out: at(0, row),
            rows: 1,
            cols: 8,
        };
        let not_joined = |ops: &[Op], why: &str| {
            let p = full_plan(ops, LIMITS);
            let next = ops.len() - 3;
            assert!(matches!(ops[next], Op::LayerNorm { .. }), "{why}");
            assert_ne!(
                p.member[next].map(|m| m.0),
                p.member[0].map(|m| m.0),
                "{why}: {:?}",
                p.groups
            );
            assert!(
                p.residual_of.iter().flatten().all(|&(n, _)| n != next),
                "{why}"
            );
            // What did join keeps its own residual.
            assert_eq!(p.norms[1].map(|n| n.residual), Some(Some(0)), "{why}");
        };
        for (chunks, why) in [
            (vec![(0, 4)], "the last chunk missing"),
            (vec![(4, 4)], "the first chunk missing"),
            (vec![(0, 4), (2, 4)], "overlapping chunks"),
            (vec![(0, 4), (4, 4), (4, 4)], "a chunk twice"),
            (vec![(4, 4), (0, 4)], "chunks out of order"),
            (vec![(0, 4), (5, 3)], "a gap"),
            (vec![(0, 4), (4, 2)], "short"),
        ] {
            not_joined(&chunked_layer(&chunks, 10, None), why);
        }
        // A host op writing x (any of its rows) between the chunks and the norm.
        for row in [0, 7] {
            let ops = chunked_layer(&[(0, 4), (4, 4)], 10, Some(host_write(row)));
            not_joined(&ops, "a host op writes x");
        }
        // A chunk whose result is not rows the norm can add (matrix 11).
        let mut ops = chunked_layer(&[(0, 4), (4, 4)], 10, None);
        ops[5] = lin_at(at(5, 0), at(0, 4), Extent::fixed(4), 11, Epilogue::AddInto);
        not_joined(&ops, "a part's result is not exact rows");
        // A chunk storing into x instead of adding.
        let mut ops = chunked_layer(&[(0, 4), (4, 4)], 10, None);
        ops[5] = lin_at(at(5, 0), at(0, 4), Extent::fixed(4), 10, Epilogue::Store);
        not_joined(&ops, "a part stores");
        // A chunk on the host (matrix 9): not a member.
        let mut ops = chunked_layer(&[(0, 4), (4, 4)], 10, None);
        ops[5] = lin_at(at(5, 0), at(0, 4), Extent::fixed(4), 9, Epilogue::AddInto);
        not_joined(&ops, "a part on the host");
        // Chunks of rows that depend on the call (not fixed): only one part can cover them.
        let rows = Extent::rows(1);
        let st = |b| At::start(BufferId(b));
        let ops = [
            lin_at(st(6), st(0), rows, 3, Epilogue::AddInto),
            norm(0, 1),
            lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
            lin_at(st(5), st(0), rows, 10, Epilogue::AddInto),
            lin_at(st(1), st(5), rows, 4, Epilogue::Gelu),
            lin_at(st(5), st(0), rows, 10, Epilogue::AddInto),
            norm(0, 1),
            linear(1, 2, 0),
            attention(2, 3, 4, 1),
        ];
        not_joined(&ops, "two parts of call-dependent rows");
    }

    /// An attention joins its q/k/v's group when each input is exactly a member linear's
    /// stored result (q and k may share a buffer), and the linear reading its output takes it
    /// through a device quantize; anything in between writing an input's rows, an input not
    /// a member's, or no room for its sub-commands keeps it out (it never starts a group).
    #[test]
    fn an_attention_joins_when_its_inputs_are_member_results() {
        let with_attention = |_: usize, op: &Op| match op {
            Op::Attention { .. } => Some(DeviceLinear {
                context: 0,
                commands: 2,
                bytes: 100,
                slot_bytes: 120,
                width: 8,
                role: Role::Attention,
            }),
            _ => device(0, op),
        };
        let st = |b, off| At::fixed(BufferId(b), off);
        let rows = Extent::fixed(4);
        let att = |q: At, k: At, v: At| Op::Attention {
            q,
            k,
            v,
            out: st(1, 0),
            dims: crate::stage::AttentionDims {
                heads: 1,
                head_dim: 8,
                q_len: rows,
                kv_len: rows,
                causal_offset: None,
                max_q_len: 4,
                max_kv_len: 4,
            },
        };
        // norm x → h; q and k of h into one buffer (2), v into 3; attention into h (as the
        // encoder's); out of h (reads a quantized image) added into x.
        let layer = |between: Option<Op>| {
            let mut ops = vec![
                norm_at(st(0, 0), st(1, 0), rows),
                lin_at(st(1, 0), st(2, 0), rows, 0, Epilogue::Store),
                lin_at(st(1, 0), st(2, 32), rows, 1, Epilogue::Store),
                lin_at(st(1, 0), st(3, 0), rows, 2, Epilogue::Store),
            ];
            ops.extend(between);
            ops.push(att(st(2, 0), st(2, 32), st(3, 0)));
            ops.push(lin_at(st(1, 0), st(0, 0), rows, 10, Epilogue::AddInto));
            ops
        };
        let ops = layer(None);
        let p = ChainPlan::new(&ops, with_attention, LIMITS);
        assert_eq!(p.groups.len(), 1, "{:?}", p.groups);
        assert_eq!(p.groups[0].members, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            p.attention[4],
            Some(AttentionInputs {
                q: 1,
                kv: Some((2, 3))
            })
        );
        assert_eq!(p.quantized[5], Some(4));
        // 1 norm + 3 linears + 2 + quantize + out.
        assert_eq!(p.groups[0].commands, 8);
        assert_eq!(p.groups[0].slot_bytes, 5 * 52 + 120 + 60);
        // Host attention: the out-projection starts a group of its own.
        assert_eq!(ChainPlan::new(&ops, device, LIMITS).groups.len(), 2);
        // A write into k's rows in between (a host op), or one overlapping them.
        for w in [9, 0] {
            let ops = layer(Some(lin_at(st(1, 0), st(2, 28), rows, w, Epilogue::Store)));
            let p = ChainPlan::new(&ops, with_attention, LIMITS);
            assert_eq!(p.attention[5], None, "matrix {w}");
        }
        // A write into other rows of the buffer in between: still a member.
        let ops = layer(Some(lin_at(st(1, 0), st(2, 64), rows, 0, Epilogue::Store)));
        assert!(ChainPlan::new(&ops, with_attention, LIMITS).attention[5].is_some());
        // No room in the chain buffer for its sub-commands.
        let tight = Limits {
            slot_bytes: 4 * 52 + 100,
            ..LIMITS
        };
        let p = ChainPlan::new(&layer(None), with_attention, tight);
        assert_eq!(p.attention[4], None);
        assert_eq!(p.groups[0].members, [0, 1, 2, 3]);
        // An attention never starts a group: alone it stays on the host.
        let ops = [att(st(2, 0), st(2, 32), st(3, 0))];
        assert!(ChainPlan::new(&ops, with_attention, LIMITS)
            .groups
            .is_empty());
    }

    /// A causal self-attention over a K/V cache joins when q, k and v are member results; k
    /// and v in one buffer, v after k's rows (offset `rows · 8`, the decoder's), are rows
    /// disjoint for every call; a linear in between writing rows that overlap k's for some
    /// call keeps it out; a source's rows may be wider than its outputs.
    #[test]
    fn a_cache_attention_joins_with_k_and_v_in_one_buffer() {
        let with_attention = |_: usize, op: &Op| match op {
            Op::CachedSelfAttention { .. } => Some(DeviceLinear {
                context: 0,
                commands: 2,
                bytes: 100,
                slot_bytes: 120,
                width: 8,
                role: Role::Attention,
            }),
            _ => device(0, op),
        };
        let rows = Extent::rows(1);
        let st = |b| At::start(BufferId(b));
        let at = |b, offset| At {
            buffer: BufferId(b),
            offset,
        };
        let v_new = at(3, Extent::rows(8));
        let attention = Op::CachedSelfAttention {
            q: st(2),
            k_new: st(3),
            v_new,
            cache: crate::stage::KeyValueCacheId(0),
            slot: 0,
            out: st(4),
            dims: crate::stage::AttentionDims {
                heads: 1,
                head_dim: 8,
                q_len: rows,
                kv_len: Extent::pos_plus_rows(1),
                causal_offset: Some(Extent::pos(1)),
                max_q_len: 8,
                max_kv_len: 8,
            },
        };
        // norm x → h; q of h (2), k of h (3), v of h (3 after k's rows); the attention into
        // a (4); the out-projection of a added into x.
        let layer_with = |v_out: At, v_matrix: u16| {
            vec![
                norm_at(st(0), st(1), rows),
                lin_at(st(1), st(2), rows, 0, Epilogue::Store),
                lin_at(st(1), st(3), rows, 1, Epilogue::Store),
                lin_at(st(1), v_out, rows, v_matrix, Epilogue::Store),
                attention.clone(),
                lin_at(st(4), st(0), rows, 10, Epilogue::AddInto),
            ]
        };
        let layer = |v_out: At| layer_with(v_out, 2);
        let p = ChainPlan::new(&layer(v_new), with_attention, LIMITS);
        assert_eq!(p.groups.len(), 1, "{:?}", p.groups);
        // (The norm stays on the host: nothing overwrites h before the stage ends.)
        assert_eq!(p.groups[0].members, [1, 2, 3, 4, 5]);
        assert_eq!(
            p.attention[4],
            Some(AttentionInputs {
                q: 1,
                kv: Some((2, 3))
            })
        );
        assert_eq!(p.quantized[5], Some(4));
        // v written at a fixed offset inside k's rows of a call of more than 2 rows, or at
        // half a row per row: k's rows are not provably untouched, and v is not at v_new.
        for offset in [Extent::fixed(16), Extent::rows(4)] {
            let p = ChainPlan::new(&layer(at(3, offset)), with_attention, LIMITS);
            assert_eq!(p.attention[4], None, "{offset:?}");
        }
        // v's device rows wider than its outputs (matrix 11): still a source; rows that are
        // not rows of its outputs (matrix 6): not.
        let p = ChainPlan::new(&layer_with(v_new, 11), with_attention, LIMITS);
        assert!(p.attention[4].is_some());
        let p = ChainPlan::new(&layer_with(v_new, 6), with_attention, LIMITS);
        assert_eq!(p.attention[4], None);
    }
}
