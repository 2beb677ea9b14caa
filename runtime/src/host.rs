//! Stages on the host, op by op: the [`crate::backend::Backend`] seam for any
//! [`LayerKernels`] (the CPU backends).
//!
//! A [`HostWorkspace`] owns one stream's buffers ([`Buffer`]s: the large resident ones in huge
//! pages), prepared keys/values, key/value caches (with the positions each slot holds) and
//! kernel state (thread pool, GEMM and attention scratch), all
//! sized at creation from the program's ops, so running a stage allocates nothing. Every op's
//! ranges are checked against its buffers before it runs: a call that does not fit is a
//! [`BackendError::BadCall`], not a panic.

use std::ops::Range;

use crate::backend::{BackendError, LayerKernels};
use crate::cpu::{conv1d_k3_out_len, AttentionShape};
use crate::resident::Buffer;
use crate::stage::{
    At, AttentionDims, BufferId, KeyValueCacheId, Op, Program, Residency, StageArgs, StageId,
};

/// The buffers `specs` declare, in order: the resident ones populated on every thread of
/// `pool` at once (each buffer by the thread that claims it: the pages' zeroing is most of a
/// session's creation, and the kernel does it in parallel), else on the calling thread.
fn allocate(pool: Option<&crate::cpu::CpuPool>, specs: &[crate::stage::BufferSpec]) -> Vec<Buffer> {
    let make = |b: &crate::stage::BufferSpec| match b.residency {
        Residency::Resident => Buffer::resident(b.len),
        Residency::Lazy => Buffer::lazy(b.len),
    };
    let Some(pool) = pool.filter(|p| p.threads() > 1) else {
        return specs.iter().map(make).collect();
    };
    let made: Vec<std::sync::Mutex<Option<Buffer>>> =
        specs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    pool.run(specs.len(), |i| {
        let b = make(&specs[i]);
        *made[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
    });
    made.into_iter()
        .zip(specs)
        .map(|(m, spec)| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| make(spec))
        })
        .collect()
}

/// One stream's state on a host backend.
pub struct HostWorkspace<K: LayerKernels> {
    buffers: Vec<Buffer>,
    names: Vec<&'static str>,
    key_values: Vec<K::KeyValues>,
    caches: Vec<K::KeyValueCache>,
    /// Per cache, per slot: positions held.
    cache_lens: Vec<Vec<usize>>,
    scratch: K::Scratch,
    attention_scratch: Buffer,
    /// A kernel's own failure (device), reported by [`HostWorkspace::run`] as it is.
    failure: Option<BackendError>,
}

impl<K: LayerKernels> HostWorkspace<K> {
    /// Allocates every buffer of `program` and reserves the kernel scratch its ops need.
    pub fn new(kernels: &K, program: &Program<K::Matrix>, threads: usize) -> Self {
        let mut scratch = kernels.scratch(threads.max(1));
        let mut attention_len = 0;
        for op in program.stages().iter().flat_map(|s| &s.ops) {
            match op {
                Op::Linear { max_rows, w, .. } => {
                    kernels.reserve_linear(&mut scratch, *max_rows, program.matrix(*w))
                }
                Op::Conv1dK3 {
                    t_in, w, stride, ..
                } => kernels.reserve_linear(
                    &mut scratch,
                    conv1d_k3_out_len(*t_in, *stride),
                    program.matrix(*w),
                ),
                Op::Attention { dims, .. } => {
                    let len = kernels.reserve_attention(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                Op::CachedSelfAttention { dims, .. } | Op::SlotSelfAttention { dims, .. } => {
                    let len = kernels.reserve_cache_attention(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                Op::AttentionPrepared { dims, .. } => {
                    let len = kernels.reserve_attention_prepared(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                _ => {}
            }
        }
        let buffers = allocate(kernels.scratch_pool(&scratch), program.buffers());
        Self {
            buffers,
            names: program.buffers().iter().map(|b| b.name).collect(),
            key_values: program
                .key_values()
                .iter()
                .map(|s| kernels.key_values(s.heads, s.head_dim, s.capacity))
                .collect(),
            caches: program
                .key_value_caches()
                .iter()
                .map(|c| kernels.key_value_cache(c))
                .collect(),
            cache_lens: program
                .key_value_caches()
                .iter()
                .map(|c| vec![0; c.slots])
                .collect(),
            scratch,
            attention_scratch: Buffer::resident(attention_len),
            failure: None,
        }
    }

    /// The kernel state (thread pool, scratch).
    pub fn scratch(&self) -> &K::Scratch {
        &self.scratch
    }

    /// The kernel state, writable (a device backend attaches its per-stream device state).
    pub fn scratch_mut(&mut self) -> &mut K::Scratch {
        &mut self.scratch
    }

    /// Values `range` of `buffer`.
    pub fn read(
        &self,
        backend: &'static str,
        buffer: BufferId,
        range: Range<usize>,
    ) -> Result<&[f32], BackendError> {
        let b = &self.buffers[buffer.0 as usize];
        if range.start > range.end || range.end > b.len() {
            return Err(BackendError::OutOfBounds {
                backend,
                buffer: self.names[buffer.0 as usize],
                len: b.len(),
                start: range.start,
                end: range.end,
            });
        }
        Ok(&b[range])
    }

    /// Writes `data` into `buffer` from `offset`.
    pub fn write(
        &mut self,
        backend: &'static str,
        buffer: BufferId,
        offset: usize,
        data: &[f32],
    ) -> Result<(), BackendError> {
        let b = &mut self.buffers[buffer.0 as usize];
        let end = offset.saturating_add(data.len());
        if end > b.len() {
            return Err(BackendError::OutOfBounds {
                backend,
                buffer: self.names[buffer.0 as usize],
                len: b.len(),
                start: offset,
                end,
            });
        }
        b[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// Runs stage `stage` of `program` op by op.
    pub fn run(
        &mut self,
        kernels: &K,
        program: &Program<K::Matrix>,
        stage: StageId,
        args: &StageArgs,
    ) -> Result<(), BackendError> {
        let st = program.stage(stage);
        for (i, op) in st.ops.iter().enumerate() {
            let buffers = &self.buffers;
            let input = |at: At, len: usize| -> Option<&[f32]> {
                let start = at.offset.at(args);
                buffers[at.buffer.0 as usize].get(start..start.checked_add(len)?)
            };
            kernels.begin_op(&mut self.scratch, program, stage, i, args, &input)?;
            self.run_op(kernels, program, op, args).map_err(|reason| {
                self.failure.take().unwrap_or(BackendError::BadCall {
                    backend: kernels.name(),
                    stage: st.name,
                    op: i,
                    reason,
                })
            })?;
        }
        Ok(())
    }

    /// The range `len` values from `at`, checked against its buffer.
    fn range(&self, at: At, len: usize, args: &StageArgs) -> Result<Range<usize>, String> {
        let start = at.offset.at(args);
        let have = self.buffers[at.buffer.0 as usize].len();
        match start.checked_add(len) {
            Some(end) if end <= have => Ok(start..end),
            _ => Err(format!(
                "{} values from {start} of buffer {:?} ({have} values)",
                len, self.names[at.buffer.0 as usize]
            )),
        }
    }

    fn run_op(
        &mut self,
        k: &K,
        program: &Program<K::Matrix>,
        op: &Op,
        args: &StageArgs,
    ) -> Result<(), String> {
        match *op {
            Op::LayerNorm {
                x,
                out,
                rows,
                gamma,
                beta,
                eps,
            } => {
                let (gamma, beta) = (program.vector(gamma), program.vector(beta));
                let rows = rows.at(args);
                let len = rows * gamma.len();
                let (xr, or) = (self.range(x, len, args)?, self.range(out, len, args)?);
                disjoint(&[x.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                k.layer_norm(
                    &mut self.scratch,
                    &self.buffers[x.buffer.0 as usize][xr],
                    rows,
                    gamma,
                    beta,
                    eps,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::Linear {
                x,
                out,
                rows,
                w,
                bias,
                epilogue,
                ..
            } => {
                let w = program.matrix(w);
                let (n, kk) = k.matrix_shape(w);
                let rows = rows.at(args);
                let (xr, or) = (
                    self.range(x, rows * kk, args)?,
                    self.range(out, rows * n, args)?,
                );
                let bias = bias.map(|b| program.vector(b));
                disjoint(&[x.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                let r = k.try_linear(
                    &mut self.scratch,
                    &self.buffers[x.buffer.0 as usize][xr],
                    rows,
                    w,
                    bias,
                    epilogue,
                    &mut o[or],
                );
                self.put(out.buffer, o);
                if let Err(e) = r {
                    let reason = e.to_string();
                    self.failure = Some(e);
                    return Err(reason);
                }
            }
            Op::Conv1dK3 {
                x,
                out,
                t_in,
                w,
                bias,
                stride,
                epilogue,
            } => {
                let w = program.matrix(w);
                let (n, kk) = k.matrix_shape(w);
                let t_out = conv1d_k3_out_len(t_in, stride);
                let (xr, or) = (
                    self.range(x, t_in * (kk / 3), args)?,
                    self.range(out, t_out * n, args)?,
                );
                disjoint(&[x.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                k.conv1d_k3(
                    &mut self.scratch,
                    &self.buffers[x.buffer.0 as usize][xr],
                    t_in,
                    w,
                    program.vector(bias),
                    stride,
                    epilogue,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::Transpose { x, out, rows, cols } => {
                let (xr, or) = (
                    self.range(x, rows * cols, args)?,
                    self.range(out, rows * cols, args)?,
                );
                disjoint(&[x.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                let (src, dst) = (&self.buffers[x.buffer.0 as usize][xr], &mut o[or]);
                for (r, row) in src.chunks_exact(cols).enumerate() {
                    for (c, &v) in row.iter().enumerate() {
                        dst[c * rows + r] = v;
                    }
                }
                self.put(out.buffer, o);
            }
            Op::AddTableRows {
                x,
                rows,
                width,
                table,
                first,
                step,
            } => {
                let (rows, first) = (rows.at(args), first.at(args));
                let table = program.table(table);
                let last = first + rows.saturating_sub(1) * step;
                if rows > 0 && (last + 1) * width > table.len() {
                    return Err(format!(
                        "table row {last} past the table ({} rows)",
                        table.len() / width.max(1)
                    ));
                }
                let xr = self.range(x, rows * width, args)?;
                let xs = &mut self.buffers[x.buffer.0 as usize][xr];
                for (r, row) in xs.chunks_exact_mut(width).enumerate() {
                    table.add_to((first + r * step) * width, row);
                }
            }
            Op::Attention {
                q,
                k: kb,
                v,
                out,
                dims,
            } => {
                let shape = dims.shape(args);
                check_shape(&shape, &dims.max_shape())?;
                let w = dims.width();
                let (qr, kr, vr, or) = (
                    self.range(q, shape.q_len * w, args)?,
                    self.range(kb, shape.kv_len * w, args)?,
                    self.range(v, shape.kv_len * w, args)?,
                    self.range(out, shape.q_len * w, args)?,
                );
                disjoint(&[q.buffer, kb.buffer, v.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                let b = &self.buffers;
                k.attention(
                    &mut self.scratch,
                    &shape,
                    &b[q.buffer.0 as usize][qr],
                    &b[kb.buffer.0 as usize][kr],
                    &b[v.buffer.0 as usize][vr],
                    &mut self.attention_scratch,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::PrepareKeyValues { k: kb, v, rows, kv } => {
                let spec = program.key_values()[kv.0 as usize];
                let w = spec.heads * spec.head_dim;
                if rows > spec.capacity {
                    return Err(format!("{rows} rows for {} prepared", spec.capacity));
                }
                let (kr, vr) = (
                    self.range(kb, rows * w, args)?,
                    self.range(v, rows * w, args)?,
                );
                k.prepare_key_values(
                    &mut self.scratch,
                    &self.buffers[kb.buffer.0 as usize][kr],
                    &self.buffers[v.buffer.0 as usize][vr],
                    &mut self.key_values[kv.0 as usize],
                );
            }
            Op::AttentionPrepared { q, kv, out, dims } => {
                let kvs = &self.key_values[kv.0 as usize];
                let shape = AttentionShape {
                    kv_len: k.key_values_len(kvs),
                    ..dims.shape(args)
                };
                check_shape(&shape, &dims.max_shape())?;
                if shape.kv_len == 0 {
                    return Err("attention over keys/values never prepared".into());
                }
                let w = dims.width();
                let (qr, or) = (
                    self.range(q, shape.q_len * w, args)?,
                    self.range(out, shape.q_len * w, args)?,
                );
                disjoint(&[q.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                k.attention_prepared(
                    &mut self.scratch,
                    &shape,
                    &self.buffers[q.buffer.0 as usize][qr],
                    &self.key_values[kv.0 as usize],
                    &mut self.attention_scratch,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::AttentionWeights {
                q,
                kv,
                head,
                out,
                dims,
            } => {
                let kvs = &self.key_values[kv.0 as usize];
                let shape = AttentionShape {
                    kv_len: k.key_values_len(kvs),
                    ..dims.shape(args)
                };
                if head >= shape.heads || shape.kv_len == 0 {
                    return Err(format!("head {head} of {} / no keys", shape.heads));
                }
                let (qr, or) = (
                    self.range(q, shape.q_len * dims.width(), args)?,
                    self.range(out, shape.q_len * shape.kv_len, args)?,
                );
                disjoint(&[q.buffer], &[out.buffer])?;
                let mut o = self.take(out.buffer);
                k.attention_weights(
                    &shape,
                    &self.buffers[q.buffer.0 as usize][qr],
                    &self.key_values[kv.0 as usize],
                    head,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::GatherRows { table, out } => {
                let table = program.matrix(table);
                let (n, cols) = k.matrix_shape(table);
                let ids = args.ids.get(..args.rows).ok_or("fewer ids than rows")?;
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n) {
                    return Err(format!("id {bad} past the table's {n} rows"));
                }
                let or = self.range(out, ids.len() * cols, args)?;
                k.gather_rows(table, ids, &mut self.buffers[out.buffer.0 as usize][or]);
            }
            Op::CachedSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                slot,
                out,
                dims,
            } => {
                let (rows, pos, w) = (args.rows, args.pos, dims.width());
                self.check_cache_write(program, cache, &dims, slot, pos, rows)?;
                let (qr, kr, vr, or) = (
                    self.range(q, rows * w, args)?,
                    self.range(k_new, rows * w, args)?,
                    self.range(v_new, rows * w, args)?,
                    self.range(out, rows * w, args)?,
                );
                let shape = AttentionShape {
                    heads: dims.heads,
                    head_dim: dims.head_dim,
                    q_len: rows,
                    kv_len: pos + rows,
                    causal_offset: Some(pos),
                };
                check_shape(&shape, &dims.max_shape())?;
                disjoint(&[q.buffer, k_new.buffer, v_new.buffer], &[out.buffer])?;
                if rows == 0 {
                    return Ok(());
                }
                let c = &mut self.caches[cache.0 as usize];
                let b = &self.buffers;
                k.cache_write(
                    c,
                    slot,
                    pos,
                    &b[k_new.buffer.0 as usize][kr],
                    &b[v_new.buffer.0 as usize][vr],
                );
                self.cache_lens[cache.0 as usize][slot] = pos + rows;
                let mut o = self.take(out.buffer);
                k.cache_attention(
                    &mut self.scratch,
                    &shape,
                    &self.buffers[q.buffer.0 as usize][qr],
                    &self.caches[cache.0 as usize],
                    slot,
                    &mut self.attention_scratch,
                    &mut o[or],
                );
                self.put(out.buffer, o);
            }
            Op::SlotSelfAttention {
                q,
                k_new,
                v_new,
                cache,
                out,
                dims,
            } => {
                let (rows, pos, w) = (args.rows, args.pos, dims.width());
                let slots = args.slots.get(..rows).ok_or("fewer slots than rows")?;
                for &s in slots {
                    self.check_cache_write(program, cache, &dims, s, pos, 1)?;
                }
                let (qr, kr, vr, or) = (
                    self.range(q, rows * w, args)?,
                    self.range(k_new, rows * w, args)?,
                    self.range(v_new, rows * w, args)?,
                    self.range(out, rows * w, args)?,
                );
                let shape = AttentionShape {
                    heads: dims.heads,
                    head_dim: dims.head_dim,
                    q_len: 1,
                    kv_len: pos + 1,
                    causal_offset: Some(pos),
                };
                check_shape(&shape, &dims.max_shape())?;
                disjoint(&[q.buffer, k_new.buffer, v_new.buffer], &[out.buffer])?;
                let mut ob = self.take(out.buffer);
                let b = &self.buffers;
                let (qs, ks, vs) = (
                    &b[q.buffer.0 as usize][qr],
                    &b[k_new.buffer.0 as usize][kr],
                    &b[v_new.buffer.0 as usize][vr],
                );
                let o = &mut ob[or];
                let c = &mut self.caches[cache.0 as usize];
                for (r, &s) in slots.iter().enumerate() {
                    let row = r * w..(r + 1) * w;
                    k.cache_write(c, s, pos, &ks[row.clone()], &vs[row.clone()]);
                    self.cache_lens[cache.0 as usize][s] = pos + 1;
                    k.cache_attention(
                        &mut self.scratch,
                        &shape,
                        &qs[row.clone()],
                        c,
                        s,
                        &mut self.attention_scratch,
                        &mut o[row],
                    );
                }
                self.put(out.buffer, ob);
            }
            Op::CopySlot { cache, len } => {
                let [from, to] = *args.slots else {
                    return Err("CopySlot takes two slots".into());
                };
                let len = len.at(args);
                let spec = &program.key_value_caches()[cache.0 as usize];
                let lens = &mut self.cache_lens[cache.0 as usize];
                if from >= spec.slots || to >= spec.slots {
                    return Err(format!(
                        "slots {from} -> {to} of cache {:?} ({} slots)",
                        spec.name, spec.slots
                    ));
                }
                if len > lens[from] {
                    return Err(format!(
                        "{len} positions of slot {from} of cache {:?}, which holds {}",
                        spec.name, lens[from]
                    ));
                }
                k.cache_copy_slot(&mut self.caches[cache.0 as usize], from, to, len);
                lens[to] = len;
            }
        }
        Ok(())
    }

    /// Checks a write of `rows` positions from `pos` into slot `slot` of `cache` by an op with
    /// `dims`: the cache's shape, the slot, room for the rows, and no gap after what the slot
    /// holds.
    fn check_cache_write(
        &self,
        program: &Program<K::Matrix>,
        cache: KeyValueCacheId,
        dims: &AttentionDims,
        slot: usize,
        pos: usize,
        rows: usize,
    ) -> Result<(), String> {
        let spec = &program.key_value_caches()[cache.0 as usize];
        if (spec.heads, spec.head_dim) != (dims.heads, dims.head_dim) {
            return Err(format!(
                "cache {:?} holds {}x{} heads, the op attends {}x{}",
                spec.name, spec.heads, spec.head_dim, dims.heads, dims.head_dim
            ));
        }
        if slot >= spec.slots {
            return Err(format!(
                "slot {slot} of cache {:?} ({} slots)",
                spec.name, spec.slots
            ));
        }
        if pos + rows > spec.positions {
            return Err(format!(
                "positions {pos}..{} past cache {:?} ({} positions)",
                pos + rows,
                spec.name,
                spec.positions
            ));
        }
        let held = self.cache_lens[cache.0 as usize][slot];
        if pos > held {
            return Err(format!(
                "position {pos} past the {held} positions slot {slot} of cache {:?} holds",
                spec.name
            ));
        }
        Ok(())
    }

    /// Moves a buffer out (no allocation) so it can be written while others are read.
    fn take(&mut self, b: BufferId) -> Buffer {
        std::mem::take(&mut self.buffers[b.0 as usize])
    }

    fn put(&mut self, b: BufferId, v: Buffer) {
        self.buffers[b.0 as usize] = v;
    }
}

/// Inputs and outputs of one op must be different buffers (an output is moved out while it is
/// written).
fn disjoint(inputs: &[BufferId], outputs: &[BufferId]) -> Result<(), String> {
    if inputs.iter().any(|i| outputs.contains(i)) {
        return Err("an input is also an output".into());
    }
    Ok(())
}

fn check_shape(shape: &AttentionShape, max: &AttentionShape) -> Result<(), String> {
    if shape.q_len > max.q_len || shape.kv_len > max.kv_len {
        return Err(format!(
            "attention {}x{} past the declared {}x{}",
            shape.q_len, shape.kv_len, max.q_len, max.kv_len
        ));
    }
    if let Some(off) = shape.causal_offset {
        if off + shape.q_len > shape.kv_len {
            return Err(format!(
                "causal offset {off} + {} queries past {} keys",
                shape.q_len, shape.kv_len
            ));
        }
    }
    Ok(())
}

/// Implements [`crate::backend::Backend`] for a [`LayerKernels`] type through
/// [`HostWorkspace`] (stages op by op, never failing on a well-formed call).
#[macro_export]
macro_rules! host_backend {
    ($t:ty) => {
        impl $crate::backend::Backend for $t {
            type Matrix = <$t as $crate::backend::LayerKernels>::Matrix;
            type Workspace = $crate::host::HostWorkspace<$t>;

            fn name(&self) -> &'static str {
                $crate::backend::LayerKernels::name(self)
            }

            fn default_threads(&self) -> usize {
                $crate::backend::LayerKernels::default_threads(self)
            }

            fn matrix(
                &self,
                data: Vec<f32>,
                rows: usize,
                cols: usize,
            ) -> Result<Self::Matrix, $crate::backend::BackendError> {
                if data.len() != rows * cols {
                    return Err($crate::backend::BackendError::Unsupported {
                        backend: $crate::backend::LayerKernels::name(self),
                        reason: format!("{} values for a {rows}x{cols} matrix", data.len()),
                    });
                }
                Ok($crate::backend::LayerKernels::matrix(
                    self, data, rows, cols,
                ))
            }

            fn matrix_q8(
                &self,
                q: $crate::q8::QuantMatrix,
            ) -> Result<Self::Matrix, $crate::backend::BackendError> {
                Ok($crate::backend::LayerKernels::matrix_q8(self, q))
            }

            fn matrix_f16(
                &self,
                data: &[half::f16],
                rows: usize,
                cols: usize,
            ) -> Result<Self::Matrix, $crate::backend::BackendError> {
                if data.len() != rows * cols {
                    return Err($crate::backend::BackendError::Unsupported {
                        backend: $crate::backend::LayerKernels::name(self),
                        reason: format!("{} values for a {rows}x{cols} matrix", data.len()),
                    });
                }
                Ok($crate::backend::LayerKernels::matrix_f16(
                    self, data, rows, cols,
                ))
            }

            fn prepare_matrix(&self, w: &Self::Matrix) {
                $crate::backend::LayerKernels::prepare_matrix(self, w)
            }

            fn workspace(
                &self,
                program: &$crate::stage::Program<Self::Matrix>,
                threads: usize,
            ) -> Result<Self::Workspace, $crate::backend::BackendError> {
                Ok($crate::host::HostWorkspace::new(self, program, threads))
            }

            fn run(
                &self,
                program: &$crate::stage::Program<Self::Matrix>,
                stage: $crate::stage::StageId,
                args: &$crate::stage::StageArgs,
                ws: &mut Self::Workspace,
            ) -> Result<(), $crate::backend::BackendError> {
                ws.run(self, program, stage, args)
            }

            fn read<'a>(
                &self,
                ws: &'a Self::Workspace,
                buffer: $crate::stage::BufferId,
                range: std::ops::Range<usize>,
            ) -> Result<&'a [f32], $crate::backend::BackendError> {
                ws.read($crate::backend::LayerKernels::name(self), buffer, range)
            }

            fn write(
                &self,
                ws: &mut Self::Workspace,
                buffer: $crate::stage::BufferId,
                offset: usize,
                data: &[f32],
            ) -> Result<(), $crate::backend::BackendError> {
                ws.write(
                    $crate::backend::LayerKernels::name(self),
                    buffer,
                    offset,
                    data,
                )
            }

            fn submissions(
                &self,
                program: &$crate::stage::Program<Self::Matrix>,
                stage: $crate::stage::StageId,
            ) -> usize {
                program.stage(stage).ops.len()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, BackendError, Epilogue};
    use crate::cpu::testing::Rng;
    use crate::cpu_backend::CpuBackend;
    use crate::cpu_int8_backend::CpuInt8Backend;
    use crate::stage::*;

    /// Buffers populated on a pool's threads are the ones the calling thread alone would make:
    /// same order, lengths and kind, all zero, each page resident (writable without a fault is
    /// not observable here; the values are).
    #[test]
    fn buffers_populated_on_the_pool_equal_serial_ones() {
        let spec = |name, len, residency| BufferSpec {
            name,
            len,
            residency,
            stage_local: false,
        };
        let specs = [
            spec("small", 1000, Residency::Resident),
            spec("huge", 700_000, Residency::Resident),
            spec("lazy", 600_000, Residency::Lazy),
            spec("empty", 0, Residency::Resident),
            spec("half", 300_000, Residency::Resident),
            spec("odd", 4097, Residency::Resident),
        ];
        let pool = crate::cpu::CpuPool::new(2);
        let serial = super::allocate(None, &specs);
        let parallel = super::allocate(Some(&pool), &specs);
        assert_eq!(parallel.len(), specs.len());
        for ((a, b), s) in serial.iter().zip(&parallel).zip(&specs) {
            assert_eq!((a.len(), b.len()), (s.len, s.len), "{}", s.name);
            assert_eq!(a.is_huge(), b.is_huge(), "{}", s.name);
            assert!(b.iter().all(|&x| x == 0.0), "{}", s.name);
        }
    }

    fn dims(heads: usize, head_dim: usize, q_len: usize, kv_len: usize) -> AttentionDims {
        AttentionDims {
            heads,
            head_dim,
            q_len: Extent::rows(1),
            kv_len: Extent::fixed(kv_len),
            causal_offset: None,
            max_q_len: q_len,
            max_kv_len: kv_len,
        }
    }

    /// Attention weights of each head, applied to V, give that head's attention output.
    fn weights_reproduce_attention<B: Backend>(backend: &B, tol: f32) {
        let (heads, hd, q_len, kv_len) = (2, 64, 3, 70);
        let w = heads * hd;
        let mut rng = Rng::new(5);
        let mut p: Program<B::Matrix> = Program::new();
        let (q, k, v) = (
            p.add_buffer("q", q_len * w, Residency::Resident),
            p.add_buffer("k", kv_len * w, Residency::Resident),
            p.add_buffer("v", kv_len * w, Residency::Resident),
        );
        let out = p.add_buffer("out", q_len * w, Residency::Resident);
        let probs = p.add_buffer("weights", heads * q_len * kv_len, Residency::Lazy);
        let kv = p.add_key_values(KeyValuesSpec {
            heads,
            head_dim: hd,
            capacity: kv_len,
        });
        let d = dims(heads, hd, q_len, kv_len);
        let mut ops = vec![
            Op::PrepareKeyValues {
                k: At::start(k),
                v: At::start(v),
                rows: kv_len,
                kv,
            },
            Op::AttentionPrepared {
                q: At::start(q),
                kv,
                out: At::start(out),
                dims: d,
            },
        ];
        for head in 0..heads {
            ops.push(Op::AttentionWeights {
                q: At::start(q),
                kv,
                head,
                out: At::fixed(probs, head * q_len * kv_len),
                dims: d,
            });
        }
        let stage = p.add_stage("test", ops);
        let mut ws = backend.workspace(&p, 2).unwrap();
        let (qv, kvv, vv) = (
            rng.vec(q_len * w, 1.0),
            rng.vec(kv_len * w, 1.0),
            rng.vec(kv_len * w, 1.0),
        );
        backend.write(&mut ws, q, 0, &qv).unwrap();
        backend.write(&mut ws, k, 0, &kvv).unwrap();
        backend.write(&mut ws, v, 0, &vv).unwrap();
        let args = StageArgs {
            rows: q_len,
            ..Default::default()
        };
        backend.run(&p, stage, &args, &mut ws).unwrap();
        assert_eq!(backend.submissions(&p, stage), 2 + heads);
        let o = backend.read(&ws, out, 0..q_len * w).unwrap();
        let pw = backend.read(&ws, probs, 0..heads * q_len * kv_len).unwrap();
        for h in 0..heads {
            for r in 0..q_len {
                let row = &pw[(h * q_len + r) * kv_len..][..kv_len];
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "head {h} row {r}: sum {sum}");
                for c in 0..hd {
                    let want: f32 = (0..kv_len).map(|j| row[j] * vv[j * w + h * hd + c]).sum();
                    let got = o[r * w + h * hd + c];
                    assert!(
                        (got - want).abs() <= tol,
                        "{}: {got} vs {want}",
                        backend.name()
                    );
                }
            }
        }
    }

    #[test]
    fn attention_weights_reproduce_the_prepared_attention() {
        weights_reproduce_attention(&CpuBackend::new(2), 1e-5);
        // bf16 keys, values and probabilities in the attention kernel; f32 weights from the
        // same bf16 keys: they agree within bf16 rounding of V and P (|v| ≤ 1).
        weights_reproduce_attention(&CpuInt8Backend::new(2), 2e-2);
    }

    /// A prompt into slot 0, forks, beam steps into slots 2 and 1: every output is plain
    /// attention over the rows each slot was given (the f32 backend exactly; the INT8 one,
    /// whose caches are bf16, within `tol`); calls that do not fit the cache are errors.
    fn check_cached_attention<B: Backend>(backend: &B, tol: f32) {
        let (heads, hd, cap, slots) = (2, 64, 8, 3);
        let w = heads * hd;
        let mut p: Program<B::Matrix> = Program::new();
        let q = p.add_buffer("q", cap * w, Residency::Resident);
        let kn = p.add_buffer("k new", cap * w, Residency::Resident);
        let vn = p.add_buffer("v new", cap * w, Residency::Resident);
        let out = p.add_buffer("out", cap * w, Residency::Resident);
        let cache = p.add_key_value_cache(KeyValueCacheSpec {
            name: "cache",
            heads,
            head_dim: hd,
            slots,
            positions: cap,
        });
        let d = AttentionDims {
            kv_len: Extent::pos_plus_rows(1),
            causal_offset: Some(Extent::pos(1)),
            ..dims(heads, hd, cap, cap)
        };
        let prompt = p.add_stage(
            "prompt",
            vec![Op::CachedSelfAttention {
                q: At::start(q),
                k_new: At::start(kn),
                v_new: At::start(vn),
                cache,
                slot: 0,
                out: At::start(out),
                dims: d,
            }],
        );
        let beams = p.add_stage(
            "beams",
            vec![Op::SlotSelfAttention {
                q: At::start(q),
                k_new: At::start(kn),
                v_new: At::start(vn),
                cache,
                out: At::start(out),
                dims: AttentionDims {
                    q_len: Extent::fixed(1),
                    max_q_len: 1,
                    ..d
                },
            }],
        );
        let fork = p.add_stage(
            "fork",
            vec![Op::CopySlot {
                cache,
                len: Extent::pos(1),
            }],
        );
        let mut ws = backend.workspace(&p, 2).unwrap();
        let mut rng = Rng::new(9);
        let pool = crate::cpu::CpuPool::new(1);
        let mut history: Vec<(Vec<f32>, Vec<f32>)> = vec![Default::default(); slots];
        let check = |ws: &B::Workspace, qv: &[f32], r: usize, (k, v): &(Vec<f32>, Vec<f32>)| {
            let kv_len = k.len() / w;
            let shape = crate::cpu::AttentionShape {
                heads,
                head_dim: hd,
                q_len: qv.len() / w,
                kv_len,
                causal_offset: Some(kv_len - qv.len() / w),
            };
            let mut scratch = vec![0.0; crate::cpu::attention_scratch_len(&pool, &shape)];
            let mut want = vec![0.0; qv.len()];
            crate::cpu::attention(&pool, &shape, qv, k, v, &mut scratch, &mut want);
            let got = backend.read(ws, out, r * w..r * w + qv.len()).unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= tol, "{}: {shape:?}: {worst}", backend.name());
        };
        // A 3-row prompt at position 0 of slot 0.
        let rows3 = [
            rng.vec(3 * w, 1.0),
            rng.vec(3 * w, 1.0),
            rng.vec(3 * w, 1.0),
        ];
        for (b, data) in [q, kn, vn].iter().zip(&rows3) {
            backend.write(&mut ws, *b, 0, data).unwrap();
        }
        fn args(rows: usize, pos: usize, slots: &[usize]) -> StageArgs<'_> {
            StageArgs {
                rows,
                pos,
                ids: &[],
                slots,
            }
        }
        backend.run(&p, prompt, &args(3, 0, &[]), &mut ws).unwrap();
        history[0] = (rows3[1].clone(), rows3[2].clone());
        check(&ws, &rows3[0], 0, &history[0]);
        // Slot 0 forks into 2 and 1; then each beam step writes row 0 to slot 2, row 1 to 1.
        for to in [2, 1] {
            backend
                .run(&p, fork, &args(0, 3, &[0, to]), &mut ws)
                .unwrap();
            history[to] = history[0].clone();
        }
        for pos in 3..cap {
            let (qv, kv, vv) = (
                rng.vec(2 * w, 1.0),
                rng.vec(2 * w, 1.0),
                rng.vec(2 * w, 1.0),
            );
            for (b, data) in [q, kn, vn].iter().zip([&qv, &kv, &vv]) {
                backend.write(&mut ws, *b, 0, data).unwrap();
            }
            backend
                .run(&p, beams, &args(2, pos, &[2, 1]), &mut ws)
                .unwrap();
            for (r, slot) in [2, 1].into_iter().enumerate() {
                history[slot].0.extend_from_slice(&kv[r * w..(r + 1) * w]);
                history[slot].1.extend_from_slice(&vv[r * w..(r + 1) * w]);
                check(&ws, &qv[r * w..(r + 1) * w], r, &history[slot]);
            }
        }
        // Calls that do not fit: past the cache, a gap after what a slot holds, a slot past the
        // cache, a copy of positions never written.
        let bad = [
            (beams, args(1, cap, &[2])),
            (beams, args(1, 5, &[0])),
            (beams, args(1, 3, &[3])),
            (prompt, args(2, cap - 1, &[])),
            (fork, args(0, 4, &[0, 1])),
            (fork, args(0, 1, &[0, 3])),
            (fork, args(0, 1, &[0])),
        ];
        for (stage, a) in bad {
            match backend.run(&p, stage, &a, &mut ws) {
                Err(BackendError::BadCall { .. }) => {}
                other => panic!("expected BadCall for {a:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn cached_attention_and_copies_match_plain_attention() {
        check_cached_attention(&CpuBackend::new(2), 0.0);
        // bf16 caches: with |q|, |k|, |v| ≤ 1 and 64-wide heads a score moves by at most
        // δ = 64 · (2⁻⁸ + 2⁻¹⁸) / 8 ≈ 0.031, a weight by e^{2δ} · (1 + 4.2e-3) - 1 ≈ 0.069
        // relatively, an output by that plus 2⁻⁹ (see cpu::kv_cache's tests for the terms).
        let bf16 = CpuInt8Backend::new(2).with_bf16_self_key_values(true);
        check_cached_attention(&bf16, 7.2e-2);
        // bf16 caches attended in f32: only k and v rounded (2⁻⁹ each), so δ = 64 · 2⁻⁹ / 8
        // ≈ 0.016 and an output moves by at most 2⁻⁹ · max|v| + (e^{2δ} - 1) · (max v - min v)/2
        // ≈ 0.002 + 0.032 (see cpu::attention_bf16_kv).
        let f32_math = CpuInt8Backend::new(2).with_bf16_self_key_values_f32_arithmetic(true);
        check_cached_attention(&f32_math, 3.4e-2);
        // Without bf16 caches the INT8 backend attends f32 caches with the f32 kernel: exact.
        let f32_caches = CpuInt8Backend::new(2).with_bf16_self_key_values(false);
        check_cached_attention(&f32_caches, 0.0);
    }

    #[test]
    fn calls_that_do_not_fit_are_errors_not_panics() {
        let backend = CpuBackend::new(1);
        let mut p: Program<_> = Program::new();
        let table = p.add_matrix(crate::backend::LayerKernels::matrix(
            &backend,
            vec![1.0; 4 * 3],
            4,
            3,
        ));
        let x = p.add_buffer("x", 2 * 3, Residency::Resident);
        let y = p.add_buffer("y", 2 * 4, Residency::Resident);
        let gather = p.add_stage(
            "gather",
            vec![Op::GatherRows {
                table,
                out: At::start(x),
            }],
        );
        let linear = p.add_stage(
            "linear",
            vec![Op::Linear {
                x: At::start(x),
                out: At::start(y),
                rows: Extent::rows(1),
                max_rows: 2,
                w: table,
                bias: None,
                epilogue: Epilogue::Store,
            }],
        );
        let aliased = p.add_stage(
            "aliased",
            vec![Op::Transpose {
                x: At::start(x),
                out: At::start(x),
                rows: 2,
                cols: 3,
            }],
        );
        let mut ws = backend.workspace(&p, 1).unwrap();
        let ok = StageArgs {
            rows: 2,
            ids: &[3, 0],
            ..Default::default()
        };
        backend.run(&p, gather, &ok, &mut ws).unwrap();
        backend.run(&p, linear, &ok, &mut ws).unwrap();
        let bad_id = StageArgs { ids: &[4, 0], ..ok };
        let too_many_rows = StageArgs { rows: 3, ..ok };
        let few_ids = StageArgs { ids: &[1], ..ok };
        for (stage, args) in [
            (gather, bad_id),
            (linear, too_many_rows),
            (gather, few_ids),
            (aliased, ok),
        ] {
            match backend.run(&p, stage, &args, &mut ws) {
                Err(BackendError::BadCall { backend, .. }) => assert_eq!(backend, "cpu-f32"),
                other => panic!("expected BadCall, got {other:?}"),
            }
        }
        assert!(matches!(
            backend.read(&ws, y, 0..9),
            Err(BackendError::OutOfBounds { len: 8, .. })
        ));
        assert!(backend.write(&mut ws, x, 5, &[0.0; 2]).is_err());
        assert!(matches!(
            backend.matrix(vec![0.0; 5], 2, 3),
            Err(BackendError::Unsupported { .. })
        ));
    }
}
