//! Stages: a whole pass of a network (one encoder window, one decoder step) described once, at
//! load, as a static list of layer operations over buffers that each stream's workspace owns.
//!
//! A [`Program`] holds the weights ([`MatrixId`], [`VectorId`]), declares the buffers
//! ([`BufferId`]), prepared key/value slots ([`KeyValuesId`]) and key/value caches
//! ([`KeyValueCacheId`]) a workspace allocates, and lists its [`Stage`]s. Buffers are f32 on
//! every backend; prepared keys/values and caches are in whatever form (precision, layout) the
//! backend's kernels read fastest, so the program says only what they hold. A stage is a `Vec<`[`Op`]`>`; an op names its operands by id and its row
//! counts and offsets as [`Extent`]s, linear in the two values a call supplies
//! ([`StageArgs::rows`], [`StageArgs::pos`]), so one description serves every call. A CPU
//! backend runs the ops one by one ([`crate::host`]); a device backend may compile a stage into
//! one submission. Nothing here knows which network it describes.

use crate::cpu::{AttentionShape, Epilogue};
use crate::table::Table;

/// A buffer of f32 values in a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferId(pub u16);

/// A weight matrix of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixId(pub u16);

/// A weight vector (bias, norm parameters) of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorId(pub u16);

/// A row table (position embeddings) of a [`Program`], read by [`Op::AddTableRows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableId(pub u16);

/// Prepared keys/values in a workspace (see [`Op::PrepareKeyValues`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValuesId(pub u16);

/// A key/value cache in a workspace: per slot, the keys and values of every position written
/// so far (see [`Op::CachedSelfAttention`], [`Op::SlotSelfAttention`], [`Op::CopySlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValueCacheId(pub u16);

/// A stage of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageId(pub u16);

/// A count or offset: `constant + per_row · rows + per_pos · pos` for the call's
/// [`StageArgs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Extent {
    /// The fixed part.
    pub constant: usize,
    /// Multiplier of [`StageArgs::rows`].
    pub per_row: usize,
    /// Multiplier of [`StageArgs::pos`].
    pub per_pos: usize,
}

impl Extent {
    /// A value fixed at load.
    pub const fn fixed(n: usize) -> Extent {
        Extent {
            constant: n,
            per_row: 0,
            per_pos: 0,
        }
    }

    /// `k · rows`.
    pub const fn rows(k: usize) -> Extent {
        Extent {
            constant: 0,
            per_row: k,
            per_pos: 0,
        }
    }

    /// `k · pos`.
    pub const fn pos(k: usize) -> Extent {
        Extent {
            constant: 0,
            per_row: 0,
            per_pos: k,
        }
    }

    /// `k · (pos + rows)`.
    pub const fn pos_plus_rows(k: usize) -> Extent {
        Extent {
            constant: 0,
            per_row: k,
            per_pos: k,
        }
    }

    /// The value for `args`.
    pub fn at(&self, args: &StageArgs) -> usize {
        self.constant + self.per_row * args.rows + self.per_pos * args.pos
    }
}

/// An offset into a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// The buffer.
    pub buffer: BufferId,
    /// Offset in f32 values.
    pub offset: Extent,
}

impl At {
    /// The start of `buffer`.
    pub const fn start(buffer: BufferId) -> At {
        At {
            buffer,
            offset: Extent::fixed(0),
        }
    }

    /// `buffer` from a fixed offset.
    pub const fn fixed(buffer: BufferId, offset: usize) -> At {
        At {
            buffer,
            offset: Extent::fixed(offset),
        }
    }
}

/// Attention dimensions of an op (see [`AttentionShape`]), with bounds for the scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Query rows.
    pub q_len: Extent,
    /// Key/value rows (ignored by ops on prepared keys/values, which know theirs).
    pub kv_len: Extent,
    /// Causal mask offset, if any.
    pub causal_offset: Option<Extent>,
    /// Most query rows any call has.
    pub max_q_len: usize,
    /// Most key rows any call has.
    pub max_kv_len: usize,
}

impl AttentionDims {
    /// The shape of the call with `args`.
    pub fn shape(&self, args: &StageArgs) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            head_dim: self.head_dim,
            q_len: self.q_len.at(args),
            kv_len: self.kv_len.at(args),
            causal_offset: self.causal_offset.map(|o| o.at(args)),
        }
    }

    /// The largest shape of any call (what scratch is sized for).
    pub fn max_shape(&self) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            head_dim: self.head_dim,
            q_len: self.max_q_len,
            kv_len: self.max_kv_len,
            causal_offset: self.causal_offset.map(|_| 0),
        }
    }

    /// Row width, `heads · head_dim`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// One layer operation. Inputs and outputs of one op never share a buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `out[rows, d] = layer_norm(x[rows, d])` with `d = gamma.len()`.
    LayerNorm {
        x: At,
        out: At,
        rows: Extent,
        gamma: VectorId,
        beta: VectorId,
        eps: f32,
    },
    /// `out[rows, w.rows] = epilogue(x[rows, w.cols] · wᵀ + bias)`.
    Linear {
        x: At,
        out: At,
        rows: Extent,
        /// Most rows of any call (scratch is reserved for it).
        max_rows: usize,
        w: MatrixId,
        bias: Option<VectorId>,
        epilogue: Epilogue,
    },
    /// Kernel-3, padding-1 time-major convolution `x [t_in, c_in]` → `out [t_out, w.rows]`.
    Conv1dK3 {
        x: At,
        out: At,
        t_in: usize,
        w: MatrixId,
        bias: VectorId,
        stride: usize,
        epilogue: Epilogue,
    },
    /// `out [cols, rows] = xᵀ` for `x [rows, cols]`.
    Transpose {
        x: At,
        out: At,
        rows: usize,
        cols: usize,
    },
    /// Row `r < rows` of `x` (`width` wide) `+= table` row `first + r · step`.
    AddTableRows {
        x: At,
        rows: Extent,
        width: usize,
        table: TableId,
        first: Extent,
        step: usize,
    },
    /// Multi-head attention of `q` over `k`, `v` into `out`.
    Attention {
        q: At,
        k: At,
        v: At,
        out: At,
        dims: AttentionDims,
    },
    /// Prepares `k`, `v` (`[rows, width]` each) into `kv`.
    PrepareKeyValues {
        k: At,
        v: At,
        rows: usize,
        kv: KeyValuesId,
    },
    /// Attention of `q` over prepared `kv`.
    AttentionPrepared {
        q: At,
        kv: KeyValuesId,
        out: At,
        dims: AttentionDims,
    },
    /// The attention probabilities of head `head` of `q` over prepared `kv`:
    /// `out[r, kv_len] = softmax(q_head[r] · k_headᵀ / √head_dim)` for `dims.q_len` rows.
    AttentionWeights {
        q: At,
        kv: KeyValuesId,
        head: usize,
        out: At,
        dims: AttentionDims,
    },
    /// `out[r] = table row args.ids[r]` for `r < rows`.
    GatherRows { table: MatrixId, out: At },
    /// Causal self-attention of `rows` new rows at positions `pos..pos + rows` of slot `slot` of
    /// `cache`: writes rows `k_new`, `v_new` there (the slot then holds positions
    /// `..pos + rows`; `pos` must not be past what it held), then attends `q` row `r` over
    /// positions `..=pos + r`.
    CachedSelfAttention {
        q: At,
        k_new: At,
        v_new: At,
        cache: KeyValueCacheId,
        slot: usize,
        out: At,
        dims: AttentionDims,
    },
    /// Self-attention of `rows` rows, row `r` in its own slot `args.slots[r]` of `cache`: writes
    /// row `r` of `k_new`, `v_new` at position `pos` of its slot, then attends `q[r]` over
    /// positions `..=pos` of it.
    SlotSelfAttention {
        q: At,
        k_new: At,
        v_new: At,
        cache: KeyValueCacheId,
        out: At,
        dims: AttentionDims,
    },
    /// Copies the first `len` positions of slot `args.slots[0]` of `cache` to slot
    /// `args.slots[1]` (which then holds those positions).
    CopySlot { cache: KeyValueCacheId, len: Extent },
}

impl Op {
    /// The buffers this op writes (prepared key/values and key/value caches are not buffers):
    /// at most one.
    pub fn writes(&self) -> impl Iterator<Item = BufferId> {
        let written = match *self {
            Op::LayerNorm { out, .. }
            | Op::Linear { out, .. }
            | Op::Conv1dK3 { out, .. }
            | Op::Transpose { out, .. }
            | Op::Attention { out, .. }
            | Op::AttentionPrepared { out, .. }
            | Op::AttentionWeights { out, .. }
            | Op::GatherRows { out, .. }
            | Op::CachedSelfAttention { out, .. }
            | Op::SlotSelfAttention { out, .. } => Some(out.buffer),
            Op::AddTableRows { x, .. } => Some(x.buffer),
            Op::PrepareKeyValues { .. } | Op::CopySlot { .. } => None,
        };
        written.into_iter()
    }

    /// The buffers this op reads (an `AddInto` linear also reads its output; an op whose
    /// output rows are row-for-row overwritten does not).
    pub fn reads(&self) -> impl Iterator<Item = BufferId> {
        let mut read = [None; 3];
        match *self {
            Op::LayerNorm { x, .. }
            | Op::Conv1dK3 { x, .. }
            | Op::Transpose { x, .. }
            | Op::AddTableRows { x, .. } => read[0] = Some(x.buffer),
            Op::Linear {
                x, out, epilogue, ..
            } => {
                read[0] = Some(x.buffer);
                if epilogue == Epilogue::AddInto {
                    read[1] = Some(out.buffer);
                }
            }
            Op::Attention { q, k, v, .. } => {
                read = [Some(q.buffer), Some(k.buffer), Some(v.buffer)];
            }
            Op::PrepareKeyValues { k, v, .. } => {
                read[..2].copy_from_slice(&[Some(k.buffer), Some(v.buffer)])
            }
            Op::AttentionPrepared { q, .. } | Op::AttentionWeights { q, .. } => {
                read[0] = Some(q.buffer)
            }
            Op::CachedSelfAttention {
                q, k_new, v_new, ..
            }
            | Op::SlotSelfAttention {
                q, k_new, v_new, ..
            } => read = [Some(q.buffer), Some(k_new.buffer), Some(v_new.buffer)],
            Op::GatherRows { .. } | Op::CopySlot { .. } => {}
        }
        read.into_iter().flatten()
    }
}

/// A named list of ops.
#[derive(Debug, Clone)]
pub struct Stage {
    /// For reports.
    pub name: &'static str,
    /// In execution order.
    pub ops: Vec<Op>,
}

/// How a workspace allocates a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Every page touched at allocation (buffers every call fills).
    Resident,
    /// Mapped on first write (caches a call fills a little at a time).
    Lazy,
}

/// A buffer declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSpec {
    /// For reports and errors.
    pub name: &'static str,
    /// Length in f32 values.
    pub len: usize,
    /// How it is allocated.
    pub residency: Residency,
    /// A stage's scratch ([`Program::mark_stage_local`]): every stage that reads it writes
    /// what it reads first, and nothing reads it between stages, so its contents after a stage
    /// are unspecified (a device backend may leave a value that only its device ops read
    /// uncomputed on the host).
    pub stage_local: bool,
}

/// A prepared key/value slot declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValuesSpec {
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Most rows.
    pub capacity: usize,
}

/// A key/value cache declaration: `slots` independent histories (beams) of up to `positions`
/// rows of `heads × head_dim` keys and values each. How they are stored is the backend's choice
/// (the f32 reference keeps f32; the INT8 CPU backend bf16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValueCacheSpec {
    /// For reports and errors.
    pub name: &'static str,
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Slots.
    pub slots: usize,
    /// Positions per slot.
    pub positions: usize,
}

/// The values one stage call supplies.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageArgs<'a> {
    /// Rows of this call (tokens, beams).
    pub rows: usize,
    /// A position (the decoder's cache length, a first row).
    pub pos: usize,
    /// Ids for [`Op::GatherRows`] (`rows` of them).
    pub ids: &'a [u32],
    /// Cache slots for [`Op::SlotSelfAttention`] (one per row) and [`Op::CopySlot`] (from, to).
    pub slots: &'a [usize],
}

/// Weights, buffer declarations and stages of one network part on one backend.
pub struct Program<M> {
    matrices: Vec<M>,
    vectors: Vec<Vec<f32>>,
    tables: Vec<Table>,
    buffers: Vec<BufferSpec>,
    key_values: Vec<KeyValuesSpec>,
    caches: Vec<KeyValueCacheSpec>,
    stages: Vec<Stage>,
}

impl<M> Default for Program<M> {
    fn default() -> Self {
        Self {
            matrices: Vec::new(),
            vectors: Vec::new(),
            tables: Vec::new(),
            buffers: Vec::new(),
            key_values: Vec::new(),
            caches: Vec::new(),
            stages: Vec::new(),
        }
    }
}

fn id(len: usize) -> u16 {
    u16::try_from(len).expect("more than 65535 items in one program")
}

impl<M> Program<M> {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a weight matrix.
    pub fn add_matrix(&mut self, m: M) -> MatrixId {
        self.matrices.push(m);
        MatrixId(id(self.matrices.len() - 1))
    }

    /// Adds a weight vector.
    pub fn add_vector(&mut self, v: Vec<f32>) -> VectorId {
        self.vectors.push(v);
        VectorId(id(self.vectors.len() - 1))
    }

    /// Adds a row table (f32 owned, or f16 read in place).
    pub fn add_table(&mut self, t: Table) -> TableId {
        self.tables.push(t);
        TableId(id(self.tables.len() - 1))
    }

    /// Declares a buffer.
    pub fn add_buffer(&mut self, name: &'static str, len: usize, residency: Residency) -> BufferId {
        self.buffers.push(BufferSpec {
            name,
            len,
            residency,
            stage_local: false,
        });
        BufferId(id(self.buffers.len() - 1))
    }

    /// Declares buffer `b` a stage's scratch: every stage that reads it writes what it reads
    /// first, and the caller never reads it between stages ([`BufferSpec::stage_local`]).
    ///
    /// # Panics
    /// If `b` is not a buffer of this program.
    pub fn mark_stage_local(&mut self, b: BufferId) {
        self.buffers[b.0 as usize].stage_local = true;
    }

    /// Declares prepared keys/values.
    pub fn add_key_values(&mut self, spec: KeyValuesSpec) -> KeyValuesId {
        self.key_values.push(spec);
        KeyValuesId(id(self.key_values.len() - 1))
    }

    /// Declares a key/value cache.
    pub fn add_key_value_cache(&mut self, spec: KeyValueCacheSpec) -> KeyValueCacheId {
        self.caches.push(spec);
        KeyValueCacheId(id(self.caches.len() - 1))
    }

    /// Adds a stage.
    pub fn add_stage(&mut self, name: &'static str, ops: Vec<Op>) -> StageId {
        self.stages.push(Stage { name, ops });
        StageId(id(self.stages.len() - 1))
    }

    /// A matrix.
    pub fn matrix(&self, m: MatrixId) -> &M {
        &self.matrices[m.0 as usize]
    }

    /// All matrices.
    pub fn matrices(&self) -> &[M] {
        &self.matrices
    }

    /// A vector.
    pub fn vector(&self, v: VectorId) -> &[f32] {
        &self.vectors[v.0 as usize]
    }

    /// A row table.
    pub fn table(&self, t: TableId) -> &Table {
        &self.tables[t.0 as usize]
    }

    /// Buffer declarations, by [`BufferId`].
    pub fn buffers(&self) -> &[BufferSpec] {
        &self.buffers
    }

    /// Prepared key/value declarations, by [`KeyValuesId`].
    pub fn key_values(&self) -> &[KeyValuesSpec] {
        &self.key_values
    }

    /// Key/value cache declarations, by [`KeyValueCacheId`].
    pub fn key_value_caches(&self) -> &[KeyValueCacheSpec] {
        &self.caches
    }

    /// A stage.
    pub fn stage(&self, s: StageId) -> &Stage {
        &self.stages[s.0 as usize]
    }

    /// All stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
}
