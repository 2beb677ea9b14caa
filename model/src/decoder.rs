//! The text decoder: token + learned position embeddings, pre-norm blocks with causal
//! self-attention and cross-attention over the encoder output, final norm, logits through the
//! tied token embedding. (openai/whisper `TextDecoder`.)

use amanuensis_runtime::backend::{AttentionShape, Backend, Epilogue};

use crate::config::Dims;
use crate::kv_cache::KvCache;
use crate::layers::{load_matrix, AttentionWeights, LayerNorm, Mlp};
use crate::names::{self, AttnKind, Stack};
use crate::weights::{LoadError, WeightsFile};

/// One decoder block.
pub struct DecoderBlock<B: Backend> {
    attn_ln: LayerNorm,
    attn: AttentionWeights<B>,
    cross_attn_ln: LayerNorm,
    cross_attn: AttentionWeights<B>,
    mlp_ln: LayerNorm,
    mlp: Mlp<B>,
}

/// The whole decoder, weights only (immutable, shareable).
pub struct TextDecoder<B: Backend> {
    dims: Dims,
    token_embedding: B::Matrix,
    positions: Vec<f32>,
    blocks: Vec<DecoderBlock<B>>,
    ln: LayerNorm,
}

/// Buffers for decoder passes of up to `n_text_ctx` tokens, allocated once per session.
pub struct DecoderScratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    a: Vec<f32>,
    hidden: Vec<f32>,
    attn_scratch: Vec<f32>,
    /// The final-norm hidden states of the last pass, `[rows, d]`.
    pub out: Vec<f32>,
}

impl<B: Backend> TextDecoder<B> {
    /// Loads the decoder weights named in `docs/model-format.md`.
    pub fn load(file: &WeightsFile, backend: &B, dims: &Dims) -> Result<Self, LoadError> {
        let d = dims.n_text_state;
        let blocks = (0..dims.n_text_layer)
            .map(|l| {
                Ok(DecoderBlock {
                    attn_ln: LayerNorm::load(
                        file,
                        &names::attn_ln(Stack::Decoder, l, AttnKind::SelfAttn),
                        d,
                    )?,
                    attn: AttentionWeights::load(
                        file,
                        backend,
                        Stack::Decoder,
                        l,
                        AttnKind::SelfAttn,
                        d,
                    )?,
                    cross_attn_ln: LayerNorm::load(
                        file,
                        &names::attn_ln(Stack::Decoder, l, AttnKind::Cross),
                        d,
                    )?,
                    cross_attn: AttentionWeights::load(
                        file,
                        backend,
                        Stack::Decoder,
                        l,
                        AttnKind::Cross,
                        d,
                    )?,
                    mlp_ln: LayerNorm::load(file, &names::mlp_ln(Stack::Decoder, l), d)?,
                    mlp: Mlp::load(file, backend, Stack::Decoder, l, d)?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let token_embedding = load_matrix(file, backend, names::TOKEN_EMBEDDING, dims.n_vocab, d)?;
        Ok(Self {
            dims: *dims,
            token_embedding,
            positions: file.tensor_f32(names::DECODER_POSITIONS, &[dims.n_text_ctx, d])?,
            blocks,
            ln: LayerNorm::load(file, names::DECODER_LN, d)?,
        })
    }

    fn self_shape(&self, q_len: usize, kv_len: usize, offset: usize) -> AttentionShape {
        let heads = self.dims.n_text_head;
        AttentionShape {
            heads,
            head_dim: self.dims.n_text_state / heads,
            q_len,
            kv_len,
            causal_offset: Some(offset),
        }
    }

    fn cross_shape(&self, q_len: usize) -> AttentionShape {
        let heads = self.dims.n_text_head;
        AttentionShape {
            heads,
            head_dim: self.dims.n_text_state / heads,
            q_len,
            kv_len: self.dims.n_audio_ctx,
            causal_offset: None,
        }
    }

    /// Allocates buffers for passes of up to `n_text_ctx` tokens.
    pub fn scratch(&self, backend: &B) -> DecoderScratch {
        let (rows, d) = (self.dims.n_text_ctx, self.dims.n_text_state);
        let max_kv = self.dims.n_text_ctx.max(self.dims.n_audio_ctx);
        let scratch_len = backend
            .attention_scratch_len(&self.self_shape(rows, max_kv, 0))
            .max(backend.attention_scratch_len(&self.cross_shape(rows)));
        backend.reserve_linear(1, &self.token_embedding);
        for block in &self.blocks {
            let (a, c) = (&block.attn, &block.cross_attn);
            for w in [&a.query, &a.key, &a.value, &a.out, &c.query, &c.out] {
                backend.reserve_linear(rows, &w.w);
            }
            for w in [&block.mlp.fc1, &block.mlp.fc2] {
                backend.reserve_linear(rows, &w.w);
            }
            for w in [&c.key, &c.value] {
                backend.reserve_linear(self.dims.n_audio_ctx, &w.w);
            }
        }
        // Plain (lazily mapped) buffers: a pass touches only the rows it uses, and most passes
        // are one token, so pre-faulting all n_text_ctx rows would only grow the resident set.
        DecoderScratch {
            x: vec![0.0; rows * d],
            h: vec![0.0; rows * d],
            q: vec![0.0; rows * d],
            a: vec![0.0; rows * d],
            hidden: vec![0.0; rows * 4 * d],
            attn_scratch: vec![0.0; scratch_len],
            out: vec![0.0; rows * d],
        }
    }

    /// Projects the encoder output `[n_audio_ctx, d]` into every layer's cross-attention K/V,
    /// through `proj_k`, `proj_v` (`[n_audio_ctx, d]` f32 working buffers, e.g.
    /// [`crate::encoder::EncoderScratch::spare_pair`]) into the backend's prepared form.
    ///
    /// # Panics
    /// If a working buffer is shorter than `n_audio_ctx · d`.
    pub fn compute_cross_kv(
        &self,
        backend: &B,
        encoder_out: &[f32],
        cache: &mut KvCache<B>,
        proj_k: &mut [f32],
        proj_v: &mut [f32],
    ) {
        let t = self.dims.n_audio_ctx;
        let len = t * self.dims.n_text_state;
        assert!(
            proj_k.len() >= len && proj_v.len() >= len,
            "compute_cross_kv: working buffers shorter than n_audio_ctx·d"
        );
        let (proj_k, proj_v) = (&mut proj_k[..len], &mut proj_v[..len]);
        for (block, kv) in self.blocks.iter().zip(cache.cross_attn.iter_mut()) {
            block
                .cross_attn
                .key
                .forward(backend, encoder_out, t, Epilogue::Store, proj_k);
            block
                .cross_attn
                .value
                .forward(backend, encoder_out, t, Epilogue::Store, proj_v);
            backend.prepare_key_values(proj_k, proj_v, kv);
        }
    }

    /// Runs `tokens` at positions `cache.len ..`, appending their self-attention K/V to the
    /// cache; leaves the final-norm hidden states in `s.out[..tokens.len() · d]`.
    ///
    /// The caller guarantees `cache.len + tokens.len() <= n_text_ctx` and ids `< n_vocab`.
    pub fn forward(
        &self,
        backend: &B,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        s: &mut DecoderScratch,
    ) {
        let (n, d, offset) = (tokens.len(), self.dims.n_text_state, cache.len);
        assert!(offset + n <= cache.capacity, "decoder context overflow");
        let x = &mut s.x[..n * d];
        backend.gather_rows(&self.token_embedding, tokens, x);
        for (x, p) in x
            .iter_mut()
            .zip(&self.positions[offset * d..(offset + n) * d])
        {
            *x += p;
        }
        let self_shape = self.self_shape(n, offset + n, offset);
        for (l, block) in self.blocks.iter().enumerate() {
            // Causal self-attention; this pass's K/V go straight into the cache.
            block.attn_ln.forward(backend, &s.x, n, &mut s.h);
            block
                .attn
                .query
                .forward(backend, &s.h, n, Epilogue::Store, &mut s.q);
            let kv = &mut cache.self_attn[l];
            block
                .attn
                .key
                .forward(backend, &s.h, n, Epilogue::Store, &mut kv.k[offset * d..]);
            block
                .attn
                .value
                .forward(backend, &s.h, n, Epilogue::Store, &mut kv.v[offset * d..]);
            let (k, v) = (&kv.k[..(offset + n) * d], &kv.v[..(offset + n) * d]);
            backend.attention(
                &self_shape,
                &s.q[..n * d],
                k,
                v,
                &mut s.attn_scratch,
                &mut s.a[..n * d],
            );
            block
                .attn
                .out
                .forward(backend, &s.a, n, Epilogue::AddInto, &mut s.x);
            self.cross_attention_and_mlp(backend, l, n, cache, s);
        }
        cache.len = offset + n;
        self.ln.forward(backend, &s.x, n, &mut s.out);
    }

    /// The second half of decoder block `l` on the `n` rows of `s.x`: cross-attention over
    /// the window's prepared encoder K/V, then the MLP, each added into `s.x`.
    fn cross_attention_and_mlp(
        &self,
        backend: &B,
        l: usize,
        n: usize,
        cache: &KvCache<B>,
        s: &mut DecoderScratch,
    ) {
        let (block, d) = (&self.blocks[l], self.dims.n_text_state);
        block.cross_attn_ln.forward(backend, &s.x, n, &mut s.h);
        block
            .cross_attn
            .query
            .forward(backend, &s.h, n, Epilogue::Store, &mut s.q);
        backend.attention_prepared(
            &self.cross_shape(n),
            &s.q[..n * d],
            &cache.cross_attn[l],
            &mut s.attn_scratch,
            &mut s.a[..n * d],
        );
        block
            .cross_attn
            .out
            .forward(backend, &s.a, n, Epilogue::AddInto, &mut s.x);
        block.mlp_ln.forward(backend, &s.x, n, &mut s.h);
        block
            .mlp
            .forward_residual(backend, &s.h, n, &mut s.hidden, &mut s.x);
    }

    /// One step of beam search: `tokens[b]` at position `cache.len` for beam `b`, whose
    /// self-attention history is in cache slot `slots[b]`; every beam's new K/V go to its slot,
    /// the projections, MLP and cross-attention run on all beams as one batch. Leaves the
    /// final-norm hidden states in `s.out[..tokens.len() · d]`.
    ///
    /// The caller guarantees `cache.len < n_text_ctx`, distinct slots that exist, ids
    /// `< n_vocab` and `tokens.len() <= n_text_ctx`.
    pub fn forward_beams(
        &self,
        backend: &B,
        tokens: &[u32],
        slots: &[usize],
        cache: &mut KvCache<B>,
        s: &mut DecoderScratch,
    ) {
        let (n, d, offset) = (tokens.len(), self.dims.n_text_state, cache.len);
        assert!(offset < cache.capacity, "decoder context overflow");
        assert_eq!(slots.len(), n, "one cache slot per beam");
        let x = &mut s.x[..n * d];
        backend.gather_rows(&self.token_embedding, tokens, x);
        let position = &self.positions[offset * d..(offset + 1) * d];
        for row in x.chunks_exact_mut(d) {
            row.iter_mut().zip(position).for_each(|(x, p)| *x += p);
        }
        let self_shape = self.self_shape(1, offset + 1, offset);
        for (l, block) in self.blocks.iter().enumerate() {
            block.attn_ln.forward(backend, &s.x, n, &mut s.h);
            block
                .attn
                .query
                .forward(backend, &s.h, n, Epilogue::Store, &mut s.q);
            // New keys/values of all beams into out/hidden scratch rows, then each into its slot.
            let (k_new, v_new) = s.hidden[..2 * n * d].split_at_mut(n * d);
            block
                .attn
                .key
                .forward(backend, &s.h, n, Epilogue::Store, k_new);
            block
                .attn
                .value
                .forward(backend, &s.h, n, Epilogue::Store, v_new);
            for (b, &slot) in slots.iter().enumerate() {
                let kv = cache.slot(slot, l);
                kv.k[offset * d..(offset + 1) * d].copy_from_slice(&k_new[b * d..(b + 1) * d]);
                kv.v[offset * d..(offset + 1) * d].copy_from_slice(&v_new[b * d..(b + 1) * d]);
                backend.attention(
                    &self_shape,
                    &s.q[b * d..(b + 1) * d],
                    &kv.k[..(offset + 1) * d],
                    &kv.v[..(offset + 1) * d],
                    &mut s.attn_scratch,
                    &mut s.a[b * d..(b + 1) * d],
                );
            }
            block
                .attn
                .out
                .forward(backend, &s.a, n, Epilogue::AddInto, &mut s.x);
            self.cross_attention_and_mlp(backend, l, n, cache, s);
        }
        cache.len = offset + 1;
        self.ln.forward(backend, &s.x, n, &mut s.out);
    }

    /// Logits `[rows, n_vocab]` of hidden rows `..rows` of the last pass, in one call (the
    /// vocabulary matrix is read once for all rows).
    pub fn logits_rows(&self, backend: &B, s: &DecoderScratch, rows: usize, out: &mut [f32]) {
        let d = self.dims.n_text_state;
        backend.linear(
            &s.out[..rows * d],
            rows,
            &self.token_embedding,
            None,
            Epilogue::Store,
            &mut out[..rows * self.dims.n_vocab],
        );
    }

    /// Logits `[n_vocab]` of hidden row `row` of the last pass (tied output projection).
    pub fn logits(&self, backend: &B, s: &DecoderScratch, row: usize, out: &mut [f32]) {
        let d = self.dims.n_text_state;
        backend.linear(
            &s.out[row * d..(row + 1) * d],
            1,
            &self.token_embedding,
            None,
            Epilogue::Store,
            out,
        );
    }
}
