//! Stages on the host, op by op: the [`crate::backend::Backend`] seam for any
//! [`LayerKernels`] (the CPU backends).
//!
//! A [`HostWorkspace`] owns one stream's buffers ([`Buffer`]s: the large resident ones in huge
//! pages), prepared keys/values and kernel state (thread pool, GEMM and attention scratch), all
//! sized at creation from the program's ops, so running a stage allocates nothing. Every op's
//! ranges are checked against its buffers before it runs: a call that does not fit is a
//! [`BackendError::BadCall`], not a panic.

use std::ops::Range;

use crate::backend::{BackendError, LayerKernels};
use crate::cpu::{conv1d_k3_out_len, AttentionShape};
use crate::resident::Buffer;
use crate::stage::{At, BufferId, Op, Program, Residency, StageArgs, StageId};

/// One stream's state on a host backend.
pub struct HostWorkspace<K: LayerKernels> {
    buffers: Vec<Buffer>,
    names: Vec<&'static str>,
    key_values: Vec<K::KeyValues>,
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
                Op::Attention { dims, .. } | Op::SlotSelfAttention { dims, .. } => {
                    let len = kernels.reserve_attention(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                Op::AttentionPrepared { dims, .. } => {
                    let len = kernels.reserve_attention_prepared(&mut scratch, &dims.max_shape());
                    attention_len = attention_len.max(len);
                }
                _ => {}
            }
        }
        let buffers = program
            .buffers()
            .iter()
            .map(|b| match b.residency {
                Residency::Resident => Buffer::resident(b.len),
                Residency::Lazy => Buffer::lazy(b.len),
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

    #[test]
    fn slot_attention_and_copies_match_plain_attention() {
        let backend = CpuBackend::new(2);
        let (heads, hd, cap, slots) = (2, 32, 8, 3);
        let w = heads * hd;
        let slot_len = cap * w;
        let mut p: Program<_> = Program::new();
        let q = p.add_buffer("q", slots * w, Residency::Resident);
        let kn = p.add_buffer("k new", slots * w, Residency::Resident);
        let vn = p.add_buffer("v new", slots * w, Residency::Resident);
        let ck = p.add_buffer("cache k", slots * slot_len, Residency::Lazy);
        let cv = p.add_buffer("cache v", slots * slot_len, Residency::Lazy);
        let out = p.add_buffer("out", slots * w, Residency::Resident);
        let d = AttentionDims {
            q_len: Extent::fixed(1),
            max_q_len: 1,
            ..dims(heads, hd, 1, cap)
        };
        let step = p.add_stage(
            "beams",
            vec![Op::SlotSelfAttention {
                q: At::start(q),
                k_new: At::start(kn),
                v_new: At::start(vn),
                cache_k: ck,
                cache_v: cv,
                slot_len,
                out: At::start(out),
                dims: d,
            }],
        );
        let fork = p.add_stage(
            "fork",
            [ck, cv]
                .map(|buffer| Op::CopySlot {
                    buffer,
                    slot_len,
                    len: Extent::pos(w),
                })
                .to_vec(),
        );
        let mut ws = backend.workspace(&p, 1).unwrap();
        let mut rng = Rng::new(9);
        // Three positions in slots 2 and 0; then slot 1 forks from slot 2.
        for pos in 0..3 {
            for b in [q, kn, vn] {
                backend.write(&mut ws, b, 0, &rng.vec(2 * w, 1.0)).unwrap();
            }
            let args = StageArgs {
                rows: 2,
                pos,
                ids: &[],
                slots: &[2, 0],
            };
            backend.run(&p, step, &args, &mut ws).unwrap();
        }
        let fork_args = StageArgs {
            pos: 3,
            slots: &[2, 1],
            ..Default::default()
        };
        backend.run(&p, fork, &fork_args, &mut ws).unwrap();
        let cache = backend.read(&ws, ck, 0..slots * slot_len).unwrap();
        assert_eq!(
            &cache[slot_len..slot_len + 3 * w],
            &cache[2 * slot_len..2 * slot_len + 3 * w]
        );
        // The last step's row 0 (slot 2, position 2) is attention over slot 2's three rows.
        let cache_v = backend.read(&ws, cv, 0..slots * slot_len).unwrap().to_vec();
        let qv = backend.read(&ws, q, 0..w).unwrap().to_vec();
        let got = backend.read(&ws, out, 0..w).unwrap().to_vec();
        let shape = crate::cpu::AttentionShape {
            heads,
            head_dim: hd,
            q_len: 1,
            kv_len: 3,
            causal_offset: Some(2),
        };
        let pool = crate::cpu::CpuPool::new(1);
        let mut scratch = vec![0.0; crate::cpu::attention_scratch_len(&pool, &shape)];
        let mut want = vec![0.0; w];
        crate::cpu::attention(
            &pool,
            &shape,
            &qv,
            &cache[2 * slot_len..2 * slot_len + 3 * w],
            &cache_v[2 * slot_len..2 * slot_len + 3 * w],
            &mut scratch,
            &mut want,
        );
        assert_eq!(got, want);
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
