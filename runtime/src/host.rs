//! Stages on the host, op by op: the [`crate::backend::Backend`] seam for any
//! [`LayerKernels`] (the CPU backends).
//!
//! A [`HostWorkspace`] owns one stream's buffers (plain `Vec<f32>`s), prepared keys/values and
//! kernel state (thread pool, GEMM and attention scratch), all sized at creation from the
//! program's ops, so running a stage allocates nothing. Every op's ranges are checked against
//! its buffers before it runs: a call that does not fit is a [`BackendError::BadCall`], not a
//! panic.

use std::ops::Range;

use crate::backend::{BackendError, LayerKernels};
use crate::cpu::{conv1d_k3_out_len, AttentionShape};
use crate::resident::zeroed;
use crate::stage::{At, BufferId, Op, Program, Residency, StageArgs, StageId};

/// One stream's state on a host backend.
pub struct HostWorkspace<K: LayerKernels> {
    buffers: Vec<Vec<f32>>,
    names: Vec<&'static str>,
    key_values: Vec<K::KeyValues>,
    scratch: K::Scratch,
    attention_scratch: Vec<f32>,
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
                Op::Attention { dims, .. }
                | Op::AttentionPrepared { dims, .. }
                | Op::SlotSelfAttention { dims, .. } => {
                    let len = kernels.reserve_attention(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                _ => {}
            }
        }
        let buffers = program
            .buffers()
            .iter()
            .map(|b| match b.residency {
                Residency::Resident => zeroed(b.len),
                Residency::Lazy => vec![0.0; b.len],
            })
            .collect();
        Self {
            buffers,
            names: program.buffers().iter().map(|b| b.name).collect(),
            key_values: program
                .key_values()
                .iter()
                .map(|s| kernels.key_values(s.heads, s.head_dim, s.capacity))
                .collect(),
            scratch,
            attention_scratch: zeroed(attention_len),
        }
    }

    /// The kernel state (thread pool, scratch).
    pub fn scratch(&self) -> &K::Scratch {
        &self.scratch
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
            self.run_op(kernels, program, op, args)
                .map_err(|reason| BackendError::BadCall {
                    backend: kernels.name(),
                    stage: st.name,
                    op: i,
                    reason,
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
                k.linear(
                    &mut self.scratch,
                    &self.buffers[x.buffer.0 as usize][xr],
                    rows,
                    w,
                    bias,
                    epilogue,
                    &mut o[or],
                );
                self.put(out.buffer, o);
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
                let table = program.vector(table);
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
                    let t = &table[(first + r * step) * width..][..width];
                    row.iter_mut().zip(t).for_each(|(x, p)| *x += p);
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
            Op::SlotSelfAttention {
                q,
                k_new,
                v_new,
                cache_k,
                cache_v,
                slot_len,
                out,
                dims,
            } => {
                let (rows, pos, w) = (args.rows, args.pos, dims.width());
                let slots = args.slots.get(..rows).ok_or("fewer slots than rows")?;
                let (qr, kr, vr, or) = (
                    self.range(q, rows * w, args)?,
                    self.range(k_new, rows * w, args)?,
                    self.range(v_new, rows * w, args)?,
                    self.range(out, rows * w, args)?,
                );
                if (pos + 1) * w > slot_len {
                    return Err(format!("position {pos} past the slot"));
                }
                for &s in slots {
                    self.range(At::fixed(cache_k, s * slot_len), slot_len, args)?;
                    self.range(At::fixed(cache_v, s * slot_len), slot_len, args)?;
                }
                let shape = AttentionShape {
                    heads: dims.heads,
                    head_dim: dims.head_dim,
                    q_len: 1,
                    kv_len: pos + 1,
                    causal_offset: Some(pos),
                };
                disjoint(
                    &[q.buffer, k_new.buffer, v_new.buffer],
                    &[cache_k, cache_v, out.buffer],
                )?;
                if cache_k == cache_v || cache_k == out.buffer || cache_v == out.buffer {
                    return Err("outputs share a buffer".into());
                }
                let (mut ck, mut cv, mut ob) = (
                    self.take(cache_k),
                    self.take(cache_v),
                    self.take(out.buffer),
                );
                let b = &self.buffers;
                let (qs, ks, vs) = (
                    &b[q.buffer.0 as usize][qr],
                    &b[k_new.buffer.0 as usize][kr],
                    &b[v_new.buffer.0 as usize][vr],
                );
                let o = &mut ob[or];
                for (r, &s) in slots.iter().enumerate() {
                    let base = s * slot_len;
                    let at = base + pos * w;
                    ck[at..at + w].copy_from_slice(&ks[r * w..(r + 1) * w]);
                    cv[at..at + w].copy_from_slice(&vs[r * w..(r + 1) * w]);
                    k.attention(
                        &mut self.scratch,
                        &shape,
                        &qs[r * w..(r + 1) * w],
                        &ck[base..at + w],
                        &cv[base..at + w],
                        &mut self.attention_scratch,
                        &mut o[r * w..(r + 1) * w],
                    );
                }
                self.put(out.buffer, ob);
                self.put(cache_k, ck);
                self.put(cache_v, cv);
            }
            Op::CopySlot {
                buffer,
                slot_len,
                len,
            } => {
                let [from, to] = *args.slots else {
                    return Err("CopySlot takes two slots".into());
                };
                let len = len.at(args);
                if len > slot_len {
                    return Err(format!("{len} values of a {slot_len}-value slot"));
                }
                let fr = self.range(At::fixed(buffer, from * slot_len), len, args)?;
                let tr = self.range(At::fixed(buffer, to * slot_len), len, args)?;
                if from != to {
                    self.buffers[buffer.0 as usize].copy_within(fr, tr.start);
                }
            }
        }
        Ok(())
    }

    /// Moves a buffer out (no allocation) so it can be written while others are read.
    fn take(&mut self, b: BufferId) -> Vec<f32> {
        std::mem::take(&mut self.buffers[b.0 as usize])
    }

    fn put(&mut self, b: BufferId, v: Vec<f32>) {
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
