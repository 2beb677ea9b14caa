//! The two parameterised building blocks of Whisper: linear layers and layer norms, loaded by
//! name from the model file and prepared for a backend.

use amanuensis_runtime::backend::{Backend, Epilogue};

use crate::names;
use crate::weights::{LoadError, Quantization, WeightsFile};

/// Whisper's LayerNorm epsilon.
pub const LN_EPS: f32 = 1e-5;

/// Loads weight matrix `name` (`[n_out, n_in]`) for `backend`: f16 widened to f32, or INT8
/// tiles when the file is quantized.
pub fn load_matrix<B: Backend>(
    file: &WeightsFile,
    backend: &B,
    name: &str,
    n_out: usize,
    n_in: usize,
) -> Result<B::Matrix, LoadError> {
    Ok(match file.quantization() {
        Quantization::Int8 => backend.matrix_q8(file.tensor_q8(name, n_out, n_in)?),
        Quantization::None => backend.matrix(file.tensor_f32(name, &[n_out, n_in])?, n_out, n_in),
    })
}

/// `y = x · Wᵀ + b` with `W [n_out, n_in]` prepared for backend `B`.
pub struct Linear<B: Backend> {
    pub w: B::Matrix,
    pub b: Option<Vec<f32>>,
    pub n_out: usize,
    pub n_in: usize,
}

impl<B: Backend> Linear<B> {
    /// Loads `{module}.weight` `[n_out, n_in]` and, if `has_bias`, `{module}.bias` `[n_out]`.
    pub fn load(
        file: &WeightsFile,
        backend: &B,
        module: &str,
        n_out: usize,
        n_in: usize,
        has_bias: bool,
    ) -> Result<Self, LoadError> {
        let w = load_matrix(file, backend, &names::weight(module), n_out, n_in)?;
        let b = if has_bias {
            Some(file.tensor_f32(&names::bias(module), &[n_out])?)
        } else {
            None
        };
        Ok(Self { w, b, n_out, n_in })
    }

    /// `out[rows, n_out] = epilogue(x[rows, n_in] · Wᵀ + b)`.
    pub fn forward(
        &self,
        backend: &B,
        x: &[f32],
        rows: usize,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        backend.linear(
            &x[..rows * self.n_in],
            rows,
            &self.w,
            self.b.as_deref(),
            epilogue,
            &mut out[..rows * self.n_out],
        );
    }
}

/// Pre-norm LayerNorm parameters (`{module}.weight`, `{module}.bias`).
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl LayerNorm {
    /// Loads the pair for a `dim`-wide norm.
    pub fn load(file: &WeightsFile, module: &str, dim: usize) -> Result<Self, LoadError> {
        Ok(Self {
            gamma: file.tensor_f32(&names::weight(module), &[dim])?,
            beta: file.tensor_f32(&names::bias(module), &[dim])?,
        })
    }

    /// Normalises `rows` rows of `x` into `out`.
    pub fn forward<B: Backend>(&self, backend: &B, x: &[f32], rows: usize, out: &mut [f32]) {
        let d = self.gamma.len();
        backend.layer_norm(
            &x[..rows * d],
            rows,
            &self.gamma,
            &self.beta,
            LN_EPS,
            &mut out[..rows * d],
        );
    }
}

/// The four projections of one attention module.
pub struct AttentionWeights<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> AttentionWeights<B> {
    /// Loads `{prefix}.{query,key,value,out}` for a `d`-wide model (key without bias).
    pub fn load(
        file: &WeightsFile,
        backend: &B,
        stack: names::Stack,
        layer: usize,
        kind: names::AttnKind,
        d: usize,
    ) -> Result<Self, LoadError> {
        let lin = |p: names::Proj| {
            Linear::load(
                file,
                backend,
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
/// Rows of 4d-wide MLP activations the encoder keeps at once (of 1500): a fifth of the
/// buffer, and each chunk is still a GEMM large enough for every thread.
pub const MLP_CHUNK_ROWS: usize = 300;

pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Loads the two layers of block `layer`.
    pub fn load(
        file: &WeightsFile,
        backend: &B,
        stack: names::Stack,
        layer: usize,
        d: usize,
    ) -> Result<Self, LoadError> {
        let n_mlp = 4 * d;
        Ok(Self {
            fc1: Linear::load(
                file,
                backend,
                &names::mlp(stack, layer, false),
                n_mlp,
                d,
                true,
            )?,
            fc2: Linear::load(
                file,
                backend,
                &names::mlp(stack, layer, true),
                d,
                n_mlp,
                true,
            )?,
        })
    }

    /// `x += fc2(gelu(fc1(h)))` for `rows` rows, in chunks of as many rows as `hidden` holds
    /// 4d-wide activations for (so the encoder keeps [`MLP_CHUNK_ROWS`] of them, not 1500; each
    /// row's result is the same either way).
    ///
    /// # Panics
    /// If `hidden` holds less than one row.
    pub fn forward_residual(
        &self,
        backend: &B,
        h: &[f32],
        rows: usize,
        hidden: &mut [f32],
        x: &mut [f32],
    ) {
        let (d, n_mlp) = (self.fc1.n_in, self.fc1.n_out);
        let chunk = hidden.len() / n_mlp;
        assert!(chunk > 0, "Mlp: hidden holds less than one row");
        for r0 in (0..rows).step_by(chunk) {
            let m = chunk.min(rows - r0);
            self.fc1
                .forward(backend, &h[r0 * d..], m, Epilogue::Gelu, hidden);
            self.fc2
                .forward(backend, hidden, m, Epilogue::AddInto, &mut x[r0 * d..]);
        }
    }
}
