//! The audio encoder: conv stem, sinusoidal positions, pre-norm transformer blocks, final norm.
//! (openai/whisper `AudioEncoder`.)

use amanuensis_runtime::backend::{AttentionShape, Backend, Epilogue};

use crate::config::Dims;
use crate::layers::{AttentionWeights, LayerNorm, Linear, Mlp, MLP_CHUNK_ROWS};
use crate::names::{self, AttnKind, Stack};
use crate::weights::{LoadError, WeightsFile};
use amanuensis_runtime::resident::zeroed;

/// One encoder block: `x += Attn(LN(x)); x += MLP(LN(x))`.
pub struct EncoderBlock<B: Backend> {
    attn_ln: LayerNorm,
    attn: AttentionWeights<B>,
    mlp_ln: LayerNorm,
    mlp: Mlp<B>,
}

/// The whole encoder, weights only (immutable, shareable).
pub struct AudioEncoder<B: Backend> {
    dims: Dims,
    conv1: Linear<B>,
    conv2: Linear<B>,
    positions: Vec<f32>,
    blocks: Vec<EncoderBlock<B>>,
    ln_post: LayerNorm,
}

/// Buffers for one encoder pass, allocated once per session.
///
/// Buffers double up where lifetimes allow (it is resident memory): the conv stem's first
/// output (`[3000, d]`) lives in `qk`, the attention's Q and K halves later; the attention
/// output goes to `h`, whose normed input is dead by then.
pub struct EncoderScratch {
    mel_t: Vec<f32>,
    conv_scratch: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qk: Vec<f32>,
    v: Vec<f32>,
    hidden: Vec<f32>,
    attn_scratch: Vec<f32>,
}

impl EncoderScratch {
    /// Two `[n_audio_ctx, n_audio_state]` buffers that are free between encoder passes (the
    /// attention K and V): the decoder projects its cross K/V into them before preparing them.
    pub fn spare_pair(&mut self) -> (&mut [f32], &mut [f32]) {
        let half = self.v.len();
        (&mut self.qk[half..], &mut self.v)
    }
}

impl<B: Backend> AudioEncoder<B> {
    /// Loads the encoder weights named in `docs/model-format.md`.
    pub fn load(file: &WeightsFile, backend: &B, dims: &Dims) -> Result<Self, LoadError> {
        let d = dims.n_audio_state;
        let conv = |name: &str, c_in: usize| -> Result<Linear<B>, LoadError> {
            let w = file.tensor_f32(&names::weight(name), &[d, c_in, 3])?;
            let b = file.tensor_f32(&names::bias(name), &[d])?;
            Ok(Linear {
                w: backend.matrix(w, d, c_in * 3),
                b: Some(b),
                n_out: d,
                n_in: c_in * 3,
            })
        };
        let blocks = (0..dims.n_audio_layer)
            .map(|l| {
                Ok(EncoderBlock {
                    attn_ln: LayerNorm::load(
                        file,
                        &names::attn_ln(Stack::Encoder, l, AttnKind::SelfAttn),
                        d,
                    )?,
                    attn: AttentionWeights::load(
                        file,
                        backend,
                        Stack::Encoder,
                        l,
                        AttnKind::SelfAttn,
                        d,
                    )?,
                    mlp_ln: LayerNorm::load(file, &names::mlp_ln(Stack::Encoder, l), d)?,
                    mlp: Mlp::load(file, backend, Stack::Encoder, l, d)?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Self {
            dims: *dims,
            conv1: conv(names::CONV1, dims.n_mels)?,
            conv2: conv(names::CONV2, d)?,
            positions: file.tensor_f32(names::ENCODER_POSITIONS, &[dims.n_audio_ctx, d])?,
            blocks,
            ln_post: LayerNorm::load(file, names::ENCODER_LN_POST, d)?,
        })
    }

    /// Mel frames one window feeds the encoder (3000 for Whisper).
    pub fn n_frames(&self) -> usize {
        2 * self.dims.n_audio_ctx
    }

    /// Allocates the buffers of one encoder pass.
    pub fn scratch(&self, backend: &B) -> EncoderScratch {
        let (t, d, f) = (
            self.dims.n_audio_ctx,
            self.dims.n_audio_state,
            self.n_frames(),
        );
        let shape = self.attention_shape();
        backend.reserve_linear(f, &self.conv1.w);
        backend.reserve_linear(t, &self.conv2.w);
        for block in &self.blocks {
            let a = &block.attn;
            for w in [
                &a.query,
                &a.key,
                &a.value,
                &a.out,
                &block.mlp.fc1,
                &block.mlp.fc2,
            ] {
                backend.reserve_linear(t, &w.w);
            }
        }
        EncoderScratch {
            mel_t: zeroed(f * self.dims.n_mels),
            conv_scratch: Vec::new(),
            x: zeroed(t * d),
            h: zeroed(t * d),
            qk: zeroed((2 * t).max(f) * d),
            v: zeroed(t * d),
            hidden: zeroed(MLP_CHUNK_ROWS.min(t) * 4 * d),
            attn_scratch: zeroed(backend.attention_scratch_len(&shape)),
        }
    }

    fn attention_shape(&self) -> AttentionShape {
        let heads = self.dims.n_audio_head;
        AttentionShape {
            heads,
            head_dim: self.dims.n_audio_state / heads,
            q_len: self.dims.n_audio_ctx,
            kv_len: self.dims.n_audio_ctx,
            causal_offset: None,
        }
    }

    /// Encodes one window: `mel [n_mels, 3000]` (channel-major, as the frontend gives it) →
    /// `out [n_audio_ctx, n_audio_state]`.
    pub fn forward(&self, backend: &B, mel: &[f32], s: &mut EncoderScratch, out: &mut [f32]) {
        let (n_mels, f) = (self.dims.n_mels, self.n_frames());
        let (t, d) = (self.dims.n_audio_ctx, self.dims.n_audio_state);
        assert_eq!(mel.len(), n_mels * f, "encoder input must be [n_mels, {f}]");
        // Channel-major mel -> time-major rows for the conv stem.
        for (m, row) in mel.chunks_exact(f).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                s.mel_t[i * n_mels + m] = v;
            }
        }
        let conv1_b = self.conv1.b.as_deref().unwrap_or(&[]);
        backend.conv1d_k3(
            &s.mel_t,
            f,
            &self.conv1.w,
            conv1_b,
            1,
            Epilogue::Gelu,
            &mut s.conv_scratch,
            &mut s.qk[..f * d],
        );
        let conv2_b = self.conv2.b.as_deref().unwrap_or(&[]);
        backend.conv1d_k3(
            &s.qk[..f * d],
            f,
            &self.conv2.w,
            conv2_b,
            2,
            Epilogue::Gelu,
            &mut s.conv_scratch,
            &mut s.x,
        );
        for (x, p) in s.x.iter_mut().zip(&self.positions) {
            *x += p;
        }
        let shape = self.attention_shape();
        for block in &self.blocks {
            block.attn_ln.forward(backend, &s.x, t, &mut s.h);
            let (q, k) = s.qk[..2 * t * d].split_at_mut(t * d);
            block
                .attn
                .query
                .forward(backend, &s.h, t, Epilogue::Store, q);
            block.attn.key.forward(backend, &s.h, t, Epilogue::Store, k);
            block
                .attn
                .value
                .forward(backend, &s.h, t, Epilogue::Store, &mut s.v);
            // The attention output overwrites h (its normed input is no longer needed).
            backend.attention(&shape, q, k, &s.v, &mut s.attn_scratch, &mut s.h);
            block
                .attn
                .out
                .forward(backend, &s.h, t, Epilogue::AddInto, &mut s.x);
            block.mlp_ln.forward(backend, &s.x, t, &mut s.h);
            block
                .mlp
                .forward_residual(backend, &s.h, t, &mut s.hidden, &mut s.x);
        }
        self.ln_post.forward(backend, &s.x, t, &mut out[..t * d]);
    }
}
