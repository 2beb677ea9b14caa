//! The text decoder: token + learned position embeddings, pre-norm blocks with causal
//! self-attention and cross-attention over the encoder output, final norm, logits through the
//! tied token embedding (openai/whisper `TextDecoder`), described once at load as backend
//! stages:
//!
//! - `cross kv`: project one window's encoder output into every layer's cross-attention keys
//!   and values, prepared in the backend's form (once per window);
//! - `step`: all blocks + final norm for `rows` tokens at positions `pos..`, appending their
//!   self-attention keys/values to cache slot 0 (the prompt, then one token per greedy step);
//!   `step with alignment` is the same plus the cross-attention weights of the alignment heads;
//! - `token step`: `step` then the logits of its rows, in one stage: one decoded token is one
//!   submission;
//! - `beam step`: all blocks and the logits for `rows` beams at position `pos`, beam `r` reading
//!   and extending its own cache slot;
//! - `fork slot`: copy a beam's self-attention history to another slot;
//! - `logits`: `rows` hidden rows from row `pos` through the tied embedding.
//!
//! The self-attention keys/values of each layer are one key/value cache the program declares:
//! [`MAX_SLOTS`] slots × `n_text_ctx` positions, slot 0 for greedy decoding and prompts, one
//! slot per beam. The K and V projections of a pass write their rows to a scratch buffer and the
//! attention op appends them to the cache; how the cache stores them (f32, bf16) is the
//! backend's choice.

use amanuensis_runtime::backend::{Backend, Epilogue};
use amanuensis_runtime::stage::{
    At, AttentionDims, BufferId, Extent, KeyValueCacheSpec, KeyValuesSpec, Op, Program, Residency,
    StageArgs, StageId,
};

use crate::config::Dims;
use crate::error::WhisperError;
use crate::layers::{load_matrix, AttentionWeights, LayerNorm, Mlp};
use crate::names::{self, AttnKind, Stack};
use crate::weights::WeightsFile;

/// Self-attention cache slots per layer (the most beams a session searches with).
pub const MAX_SLOTS: usize = 16;

/// Rows the logits stage takes per call (beams).
pub const MAX_LOGIT_ROWS: usize = MAX_SLOTS;

/// The stages of the decoder program.
#[derive(Clone, Copy, Debug)]
struct Stages {
    cross_kv: StageId,
    step: StageId,
    token_step: StageId,
    step_aligned: Option<StageId>,
    beam_step: StageId,
    fork: StageId,
    logits: StageId,
}

/// The whole decoder: weights and stages (immutable, shareable).
pub struct TextDecoder<B: Backend> {
    dims: Dims,
    program: Program<B::Matrix>,
    stages: Stages,
    audio: BufferId,
    logits: BufferId,
    alignment: BufferId,
    n_alignment_heads: usize,
}

impl<B: Backend> TextDecoder<B> {
    /// Loads the decoder weights named in `docs/model-format.md` and describes its stages;
    /// `alignment_heads` (`(layer, head)`, from the model's metadata) are the heads whose
    /// cross-attention weights `step with alignment` hands back.
    pub fn load(
        file: &WeightsFile,
        backend: &B,
        dims: &Dims,
        alignment_heads: &[(usize, usize)],
    ) -> Result<Self, WhisperError> {
        let (d, ctx, t) = (dims.n_text_state, dims.n_text_ctx, dims.n_audio_ctx);
        let heads = dims.n_text_head;
        let mut p = Program::new();
        let token_embedding = load_matrix(
            file,
            backend,
            &mut p,
            names::TOKEN_EMBEDDING,
            dims.n_vocab,
            d,
        )?;
        let positions = p.add_table(file.tensor_table(names::DECODER_POSITIONS, &[ctx, d])?);

        // The encoder output and the V projection are filled every window: resident. The
        // per-token buffers are lazily mapped: a pass touches only the rows it uses, and most
        // passes are one token. The cross K projection shares `hidden` (4·ctx ≥ t rows).
        let audio = p.add_buffer("audio", t * d, Residency::Resident);
        let proj_v = p.add_buffer("cross v", t * d, Residency::Resident);
        let lazy = |p: &mut Program<B::Matrix>, name, len| p.add_buffer(name, len, Residency::Lazy);
        let x = lazy(&mut p, "x", ctx * d);
        let h = lazy(&mut p, "h", ctx * d);
        // The normed rows: every stage writes them (a layer's first norm) before reading them,
        // and nothing reads them after a stage, so a device backend may keep the last MLP
        // norm's output on the device.
        p.mark_stage_local(h);
        let q = lazy(&mut p, "q", ctx * d);
        let a = lazy(&mut p, "a", ctx * d);
        let hidden = lazy(&mut p, "hidden", (ctx * 4 * d).max(t * d));
        let out = lazy(&mut p, "out", ctx * d);
        let logits = lazy(&mut p, "logits", MAX_LOGIT_ROWS * dims.n_vocab);
        let alignment = lazy(&mut p, "alignment", alignment_heads.len().max(1) * ctx * t);

        let rows = Extent::rows(1);
        let head_dim = d / heads;
        let self_dims = AttentionDims {
            heads,
            head_dim,
            q_len: rows,
            kv_len: Extent::pos_plus_rows(1),
            causal_offset: Some(Extent::pos(1)),
            max_q_len: ctx,
            max_kv_len: ctx,
        };
        let cross_dims = AttentionDims {
            kv_len: Extent::fixed(t),
            causal_offset: None,
            max_kv_len: t,
            ..self_dims
        };
        let slot_dims = AttentionDims {
            q_len: Extent::fixed(1),
            max_q_len: 1,
            ..self_dims
        };

        // Stage prologues: embeddings + positions.
        let gather = Op::GatherRows {
            table: token_embedding,
            out: At::start(x),
        };
        let positions_op = |step| Op::AddTableRows {
            x: At::start(x),
            rows,
            width: d,
            table: positions,
            first: Extent::pos(1),
            step,
        };
        let (mut cross_kv, mut fork) = (Vec::new(), Vec::new());
        let mut step = vec![gather.clone(), positions_op(1)];
        let mut aligned = step.clone();
        let mut beam = vec![gather, positions_op(0)];
        for l in 0..dims.n_text_layer {
            let ln = |p: &mut Program<B::Matrix>, module: &str| LayerNorm::load(file, p, module, d);
            let attn_ln = ln(
                &mut p,
                &names::attn_ln(Stack::Decoder, l, AttnKind::SelfAttn),
            )?;
            let attn = AttentionWeights::load(
                file,
                backend,
                &mut p,
                Stack::Decoder,
                l,
                AttnKind::SelfAttn,
                d,
            )?;
            let cross_ln = ln(&mut p, &names::attn_ln(Stack::Decoder, l, AttnKind::Cross))?;
            let cross = AttentionWeights::load(
                file,
                backend,
                &mut p,
                Stack::Decoder,
                l,
                AttnKind::Cross,
                d,
            )?;
            let mlp_ln = ln(&mut p, &names::mlp_ln(Stack::Decoder, l))?;
            let mlp = Mlp::load(file, backend, &mut p, Stack::Decoder, l, d)?;
            let cache = p.add_key_value_cache(KeyValueCacheSpec {
                name: "self k/v",
                heads,
                head_dim,
                slots: MAX_SLOTS,
                positions: ctx,
            });
            let kv = p.add_key_values(KeyValuesSpec {
                heads,
                head_dim,
                capacity: t,
            });

            let full = Extent::fixed(t);
            cross_kv.push(cross.key.op(
                At::start(audio),
                At::start(hidden),
                full,
                t,
                Epilogue::Store,
            ));
            cross_kv.push(cross.value.op(
                At::start(audio),
                At::start(proj_v),
                full,
                t,
                Epilogue::Store,
            ));
            cross_kv.push(Op::PrepareKeyValues {
                k: At::start(hidden),
                v: At::start(proj_v),
                rows: t,
                kv,
            });
            fork.push(Op::CopySlot {
                cache,
                len: Extent::pos(1),
            });

            let st = |b| At::start(b);
            // This pass's K/V rows into hidden (K, then V), appended to the cache by the
            // attention op.
            let v_new = At {
                buffer: hidden,
                offset: Extent::rows(d),
            };
            // Causal self-attention, greedy: the rows at positions pos.. of slot 0.
            let self_attn = [
                attn_ln.op(x, h, rows),
                attn.query.op(st(h), st(q), rows, ctx, Epilogue::Store),
                attn.key.op(st(h), st(hidden), rows, ctx, Epilogue::Store),
                attn.value.op(st(h), v_new, rows, ctx, Epilogue::Store),
                Op::CachedSelfAttention {
                    q: st(q),
                    k_new: st(hidden),
                    v_new,
                    cache,
                    slot: 0,
                    out: st(a),
                    dims: self_dims,
                },
                attn.out.op(st(a), st(x), rows, ctx, Epilogue::AddInto),
            ];
            // Beams: row r at position pos of its beam's slot.
            let beam_self_attn = [
                attn_ln.op(x, h, rows),
                attn.query.op(st(h), st(q), rows, ctx, Epilogue::Store),
                attn.key.op(st(h), st(hidden), rows, ctx, Epilogue::Store),
                attn.value.op(st(h), v_new, rows, ctx, Epilogue::Store),
                Op::SlotSelfAttention {
                    q: st(q),
                    k_new: st(hidden),
                    v_new,
                    cache,
                    out: st(a),
                    dims: slot_dims,
                },
                attn.out.op(st(a), st(x), rows, ctx, Epilogue::AddInto),
            ];
            // Cross-attention over the window's prepared K/V, then the MLP.
            let cross_head = [
                cross_ln.op(x, h, rows),
                cross.query.op(st(h), st(q), rows, ctx, Epilogue::Store),
                Op::AttentionPrepared {
                    q: st(q),
                    kv,
                    out: st(a),
                    dims: cross_dims,
                },
            ];
            let [fc1, fc2] = mlp.ops(h, x, hidden, ctx);
            let cross_tail = [
                cross.out.op(st(a), st(x), rows, ctx, Epilogue::AddInto),
                mlp_ln.op(x, h, rows),
                fc1,
                fc2,
            ];
            let weights = alignment_heads
                .iter()
                .enumerate()
                .filter(|(_, &(layer, _))| layer == l)
                .map(|(i, &(_, head))| Op::AttentionWeights {
                    q: st(q),
                    kv,
                    head,
                    out: At::fixed(alignment, i * ctx * t),
                    dims: cross_dims,
                });
            step.extend(
                self_attn
                    .iter()
                    .chain(&cross_head)
                    .chain(&cross_tail)
                    .cloned(),
            );
            aligned.extend(self_attn.into_iter().chain(cross_head.clone()));
            aligned.extend(weights);
            aligned.extend(cross_tail.iter().cloned());
            beam.extend(
                beam_self_attn
                    .into_iter()
                    .chain(cross_head)
                    .chain(cross_tail),
            );
        }
        let ln = LayerNorm::load(file, &mut p, names::DECODER_LN, d)?;
        for ops in [&mut step, &mut aligned, &mut beam] {
            ops.push(ln.op(x, out, rows));
        }
        let logits_op = Op::Linear {
            x: At {
                buffer: out,
                offset: Extent::pos(d),
            },
            out: At::start(logits),
            rows,
            max_rows: MAX_LOGIT_ROWS,
            w: token_embedding,
            bias: None,
            epilogue: Epilogue::Store,
        };
        // One decoded token (or one token per beam) in one stage: all blocks, then the logits of
        // every row of the pass.
        let all_rows_logits = Op::Linear {
            x: At::start(out),
            out: At::start(logits),
            rows,
            max_rows: MAX_LOGIT_ROWS,
            w: token_embedding,
            bias: None,
            epilogue: Epilogue::Store,
        };
        let mut token_step = step.clone();
        token_step.push(all_rows_logits.clone());
        beam.push(all_rows_logits);
        let stages = Stages {
            cross_kv: p.add_stage("cross kv", cross_kv),
            token_step: p.add_stage("token step", token_step),
            step: p.add_stage("step", step),
            step_aligned: (!alignment_heads.is_empty())
                .then(|| p.add_stage("step with alignment", aligned)),
            beam_step: p.add_stage("beam step", beam),
            fork: p.add_stage("fork slot", fork),
            logits: p.add_stage("logits", vec![logits_op]),
        };
        Ok(Self {
            dims: *dims,
            program: p,
            stages,
            audio,
            logits,
            alignment,
            n_alignment_heads: alignment_heads.len(),
        })
    }

    /// The program (weights, buffers, stages).
    pub fn program(&self) -> &Program<B::Matrix> {
        &self.program
    }

    /// Allocates one stream's decoder workspace on `threads` threads.
    pub fn workspace(&self, backend: &B, threads: usize) -> Result<B::Workspace, WhisperError> {
        Ok(backend.workspace(&self.program, threads)?)
    }

    /// Device submissions on `backend` of: the per-window cross K/V stage, and one decoded
    /// token (all blocks + final norm + logits).
    pub fn submissions(&self, backend: &B) -> (usize, usize) {
        let s = &self.stages;
        (
            backend.submissions(&self.program, s.cross_kv),
            backend.submissions(&self.program, s.token_step),
        )
    }

    /// Projects the encoder output `[n_audio_ctx, d]` into every layer's cross-attention K/V.
    pub fn set_audio(
        &self,
        backend: &B,
        ws: &mut B::Workspace,
        encoder_out: &[f32],
    ) -> Result<(), WhisperError> {
        backend.write(ws, self.audio, 0, encoder_out)?;
        backend.run(
            &self.program,
            self.stages.cross_kv,
            &StageArgs::default(),
            ws,
        )?;
        Ok(())
    }

    fn check_room(&self, tokens: usize, pos: usize) -> Result<(), WhisperError> {
        if pos + tokens > self.dims.n_text_ctx {
            return Err(WhisperError::ContextOverflow {
                tokens,
                pos,
                n_text_ctx: self.dims.n_text_ctx,
            });
        }
        Ok(())
    }

    /// Runs `tokens` at positions `pos..`, appending their self-attention K/V to cache slot 0;
    /// leaves the final-norm hidden states for [`TextDecoder::logits`]. With `alignment`, also
    /// leaves the alignment heads' cross-attention weights for
    /// [`TextDecoder::alignment_weights`].
    pub fn forward(
        &self,
        backend: &B,
        ws: &mut B::Workspace,
        tokens: &[u32],
        pos: usize,
        alignment: bool,
    ) -> Result<(), WhisperError> {
        self.check_room(tokens.len(), pos)?;
        let stage = if alignment {
            self.stages
                .step_aligned
                .ok_or(WhisperError::NoAlignmentHeads)?
        } else {
            self.stages.step
        };
        let args = StageArgs {
            rows: tokens.len(),
            pos,
            ids: tokens,
            slots: &[],
        };
        backend.run(&self.program, stage, &args, ws)?;
        Ok(())
    }

    /// One decoded token at position `pos` (slot 0), in one stage: returns its logits.
    pub fn forward_token<'w>(
        &self,
        backend: &B,
        ws: &'w mut B::Workspace,
        token: u32,
        pos: usize,
    ) -> Result<&'w [f32], WhisperError> {
        self.check_room(1, pos)?;
        let args = StageArgs {
            rows: 1,
            pos,
            ids: &[token],
            slots: &[],
        };
        backend.run(&self.program, self.stages.token_step, &args, ws)?;
        Ok(backend.read(ws, self.logits, 0..self.dims.n_vocab)?)
    }

    /// One step of beam search: `tokens[b]` at position `pos` for beam `b`, whose
    /// self-attention history is in cache slot `slots[b]` (distinct, `< MAX_SLOTS`); all
    /// blocks and the logits in one stage. Returns the logits `[beams, n_vocab]`.
    pub fn forward_beams<'w>(
        &self,
        backend: &B,
        ws: &'w mut B::Workspace,
        tokens: &[u32],
        slots: &[usize],
        pos: usize,
    ) -> Result<&'w [f32], WhisperError> {
        self.check_room(1, pos)?;
        let args = StageArgs {
            rows: tokens.len(),
            pos,
            ids: tokens,
            slots,
        };
        backend.run(&self.program, self.stages.beam_step, &args, ws)?;
        Ok(backend.read(ws, self.logits, 0..tokens.len() * self.dims.n_vocab)?)
    }

    /// Copies positions `..len` of cache slot `from` to slot `to` in every layer.
    pub fn copy_slot(
        &self,
        backend: &B,
        ws: &mut B::Workspace,
        from: usize,
        to: usize,
        len: usize,
    ) -> Result<(), WhisperError> {
        let args = StageArgs {
            rows: 0,
            pos: len,
            ids: &[],
            slots: &[from, to],
        };
        backend.run(&self.program, self.stages.fork, &args, ws)?;
        Ok(())
    }

    /// Logits `[rows, n_vocab]` of hidden rows `first..first + rows` of the last pass (the
    /// vocabulary matrix read once for all rows).
    pub fn logits<'w>(
        &self,
        backend: &B,
        ws: &'w mut B::Workspace,
        first: usize,
        rows: usize,
    ) -> Result<&'w [f32], WhisperError> {
        let args = StageArgs {
            rows,
            pos: first,
            ids: &[],
            slots: &[],
        };
        backend.run(&self.program, self.stages.logits, &args, ws)?;
        Ok(backend.read(ws, self.logits, 0..rows * self.dims.n_vocab)?)
    }

    /// Cross-attention weights of alignment head `i` (in the metadata's order) from the last
    /// pass with alignment: `[rows, n_audio_ctx]`, row `r` the weights of the pass's token `r`.
    pub fn alignment_weights<'w>(
        &self,
        backend: &B,
        ws: &'w B::Workspace,
        i: usize,
        rows: usize,
    ) -> Result<&'w [f32], WhisperError> {
        let (ctx, t) = (self.dims.n_text_ctx, self.dims.n_audio_ctx);
        if i >= self.n_alignment_heads {
            return Err(WhisperError::NoAlignmentHeads);
        }
        let start = i * ctx * t;
        Ok(backend.read(ws, self.alignment, start..start + rows * t)?)
    }

    /// Alignment heads the model has.
    pub fn n_alignment_heads(&self) -> usize {
        self.n_alignment_heads
    }
}
