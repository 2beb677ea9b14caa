//! The two parameterised building blocks of Whisper, linear layers and layer norms, loaded by
//! name from the model file into a backend [`Program`], and the ops that run them.

use amanuensis_runtime::backend::{Backend, Epilogue};
use amanuensis_runtime::stage::{At, BufferId, Extent, MatrixId, Op, Program, VectorId};

use crate::error::WhisperError;
use crate::names;
use crate::weights::{Quantization, WeightsFile};

/// Whisper's LayerNorm epsilon.
pub const LN_EPS: f32 = 1e-5;

/// Rows of 4d-wide MLP activations the encoder keeps at once (of 1500): about a quarter of the
/// buffer, each chunk still a GEMM large enough for every thread, and a multiple of the NPU
/// GEMM programs' 128-row tile (3 submissions per chunk, 4 chunks = 12 per linear per window;
/// 300 rows cost 3 per chunk too, 15 per linear).
pub const MLP_CHUNK_ROWS: usize = 384;

/// Loads weight matrix `name` (`[n_out, n_in]`) for `backend` into `program`: f16 widened to
/// f32, or INT8 tiles when the file is quantized.
pub fn load_matrix<B: Backend>(
    file: &WeightsFile,
    backend: &B,
    program: &mut Program<B::Matrix>,
    name: &str,
    n_out: usize,
    n_in: usize,
) -> Result<MatrixId, WhisperError> {
    let m = match file.quantization() {
        Quantization::Int8 => backend.matrix_q8(file.tensor_q8(name, n_out, n_in)?)?,
        Quantization::None => {
            backend.matrix(file.tensor_f32(name, &[n_out, n_in])?, n_out, n_in)?
        }
    };
    Ok(program.add_matrix(m))
}

/// `y = x · Wᵀ + b` with `W [n_out, n_in]` in a program.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub w: MatrixId,
    pub b: Option<VectorId>,
    pub n_out: usize,
    pub n_in: usize,
}

impl Linear {
    /// Loads `{module}.weight` `[n_out, n_in]` and, if `has_bias`, `{module}.bias` `[n_out]`.
    pub fn load<B: Backend>(
        file: &WeightsFile,
        backend: &B,
        program: &mut Program<B::Matrix>,
        module: &str,
        n_out: usize,
        n_in: usize,
        has_bias: bool,
    ) -> Result<Self, WhisperError> {
        let w = load_matrix(file, backend, program, &names::weight(module), n_out, n_in)?;
        let b = if has_bias {
            Some(program.add_vector(file.tensor_f32(&names::bias(module), &[n_out])?))
        } else {
            None
        };
        Ok(Self { w, b, n_out, n_in })
    }

    /// `out[rows, n_out] = epilogue(x[rows, n_in] · Wᵀ + b)`, for calls of up to `max_rows`.
    pub fn op(&self, x: At, out: At, rows: Extent, max_rows: usize, epilogue: Epilogue) -> Op {
        Op::Linear {
            x,
            out,
            rows,
            max_rows,
            w: self.w,
            bias: self.b,
            epilogue,
        }
    }
}

/// Pre-norm LayerNorm parameters (`{module}.weight`, `{module}.bias`).
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    pub gamma: VectorId,
    pub beta: VectorId,
}

impl LayerNorm {
    /// Loads the pair for a `dim`-wide norm.
    pub fn load<M>(
        file: &WeightsFile,
        program: &mut Program<M>,
        module: &str,
        dim: usize,
    ) -> Result<Self, WhisperError> {
        Ok(Self {
            gamma: program.add_vector(file.tensor_f32(&names::weight(module), &[dim])?),
            beta: program.add_vector(file.tensor_f32(&names::bias(module), &[dim])?),
        })
    }

    /// Normalises `rows` rows of `x` into `out`.
    pub fn op(&self, x: BufferId, out: BufferId, rows: Extent) -> Op {
        Op::LayerNorm {
            x: At::start(x),
            out: At::start(out),
            rows,
            gamma: self.gamma,
            beta: self.beta,
            eps: LN_EPS,
        }
    }
}

/// The four projections of one attention module.
#[derive(Clone, Copy, Debug)]
pub struct AttentionWeights {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
}

impl AttentionWeights {
    /// Loads `{prefix}.{query,key,value,out}` for a `d`-wide model (key without bias).
    pub fn load<B: Backend>(
        file: &WeightsFile,
        backend: &B,
        program: &mut Program<B::Matrix>,
        stack: names::Stack,
        layer: usize,
        kind: names::AttnKind,
        d: usize,
    ) -> Result<Self, WhisperError> {
        let mut lin = |p: names::Proj| {
            Linear::load(
                file,
                backend,
                program,
                &names::attn_proj(stack, layer, kind, p),
                d,
                d,
                p.has_bias(),
            )
        };
        Ok(Self {
            query: lin(names::Proj::Query)?,
            key: lin(names::Proj::Key)?,
            value: lin(names::Proj::Value)?,
            out: lin(names::Proj::Out)?,
        })
    }
}

/// The feed-forward block: `mlp.0` (d → 4d, GELU) then `mlp.2` (4d → d).
#[derive(Clone, Copy, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    /// Loads the two layers of block `layer`.
    pub fn load<B: Backend>(
        file: &WeightsFile,
        backend: &B,
        program: &mut Program<B::Matrix>,
        stack: names::Stack,
        layer: usize,
        d: usize,
    ) -> Result<Self, WhisperError> {
        let n_mlp = 4 * d;
        Ok(Self {
            fc1: Linear::load(
                file,
                backend,
                program,
                &names::mlp(stack, layer, false),
                n_mlp,
                d,
                true,
            )?,
            fc2: Linear::load(
                file,
                backend,
                program,
                &names::mlp(stack, layer, true),
                d,
                n_mlp,
                true,
            )?,
        })
    }

    /// Ops of `x += fc2(gelu(fc1(h)))` for a fixed number of `rows`, in chunks of `chunk` rows
    /// through `hidden` (`chunk` 4d-wide rows): the encoder keeps [`MLP_CHUNK_ROWS`] of them,
    /// not 1500; each row's result is the same either way.
    pub fn chunked_ops(
        &self,
        h: BufferId,
        x: BufferId,
        hidden: BufferId,
        rows: usize,
        chunk: usize,
        ops: &mut Vec<Op>,
    ) {
        let d = self.fc1.n_in;
        for r0 in (0..rows).step_by(chunk.max(1)) {
            let m = chunk.min(rows - r0);
            let at = |b| At::fixed(b, r0 * d);
            ops.push(self.fc1.op(
                at(h),
                At::start(hidden),
                Extent::fixed(m),
                m,
                Epilogue::Gelu,
            ));
            ops.push(self.fc2.op(
                At::start(hidden),
                at(x),
                Extent::fixed(m),
                m,
                Epilogue::AddInto,
            ));
        }
    }

    /// Ops of `x += fc2(gelu(fc1(h)))` for the call's rows (at most `max_rows`, which `hidden`
    /// holds).
    pub fn ops(&self, h: BufferId, x: BufferId, hidden: BufferId, max_rows: usize) -> [Op; 2] {
        let rows = Extent::rows(1);
        [
            self.fc1.op(
                At::start(h),
                At::start(hidden),
                rows,
                max_rows,
                Epilogue::Gelu,
            ),
            self.fc2.op(
                At::start(hidden),
                At::start(x),
                rows,
                max_rows,
                Epilogue::AddInto,
            ),
        ]
    }
}
