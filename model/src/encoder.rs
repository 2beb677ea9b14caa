//! The audio encoder: conv stem, sinusoidal positions, pre-norm transformer blocks, final norm
//! (openai/whisper `AudioEncoder`), described once at load as one backend stage.

use amanuensis_runtime::backend::{Backend, Epilogue};
use amanuensis_runtime::stage::{
    At, AttentionDims, BufferId, Extent, Op, Program, Residency, StageArgs, StageId,
};

use crate::config::Dims;
use crate::error::WhisperError;
use crate::layers::{AttentionWeights, LayerNorm, Linear, Mlp, MLP_CHUNK_ROWS};
use crate::names::{self, AttnKind, Stack};
use crate::weights::WeightsFile;

/// The whole encoder: weights and the one stage that runs a window (immutable, shareable).
///
/// Workspace buffers double up where lifetimes allow (it is resident memory): the conv stem's
/// first output (`[3000, d]`) lives in `qk`, the attention's Q and K halves later; the
/// attention output and the final norm's output go to `h`, whose normed input is dead by then.
pub struct AudioEncoder<B: Backend> {
    dims: Dims,
    program: Program<B::Matrix>,
    window: StageId,
    mel: BufferId,
    out: BufferId,
}

impl<B: Backend> AudioEncoder<B> {
    /// Loads the encoder weights named in `docs/model-format.md` and describes its stage.
    pub fn load(file: &WeightsFile, backend: &B, dims: &Dims) -> Result<Self, WhisperError> {
        let (d, t, n_mels) = (dims.n_audio_state, dims.n_audio_ctx, dims.n_mels);
        let f = 2 * t;
        let mut p = Program::new();
        let conv = |p: &mut Program<B::Matrix>, name: &str, c_in: usize| {
            // f16 weights go to the backend as they are in the file (the INT8 backend quantizes
            // them without a widened copy); f32 ones are copied out.
            let (w_name, shape) = (names::weight(name), [d, c_in, 3]);
            let w = match file.tensor_f16_if_stored(&w_name, &shape)? {
                Some(halves) => {
                    let w = backend.matrix_f16(halves, d, c_in * 3)?;
                    file.done_reading(&w_name)?;
                    w
                }
                None => backend.matrix(file.tensor_f32(&w_name, &shape)?, d, c_in * 3)?,
            };
            let b = file.tensor_f32(&names::bias(name), &[d])?;
            Ok::<_, WhisperError>(Linear {
                w: p.add_matrix(w),
                b: Some(p.add_vector(b)),
                n_out: d,
                n_in: c_in * 3,
            })
        };
        let conv1 = conv(&mut p, names::CONV1, n_mels)?;
        let conv2 = conv(&mut p, names::CONV2, d)?;
        let positions = p.add_table(file.tensor_table(names::ENCODER_POSITIONS, &[t, d])?);

        let buf =
            |p: &mut Program<B::Matrix>, name, len| p.add_buffer(name, len, Residency::Resident);
        let mel = buf(&mut p, "mel", n_mels * f);
        let mel_t = buf(&mut p, "mel_t", f * n_mels);
        let x = buf(&mut p, "x", t * d);
        let h = buf(&mut p, "h", t * d);
        let qk = buf(&mut p, "qk", (2 * t).max(f) * d);
        let v = buf(&mut p, "v", t * d);
        let chunk = MLP_CHUNK_ROWS.min(t);
        let hidden = buf(&mut p, "hidden", chunk * 4 * d);
        // A window's scratch: written before it is read, never read after the window, so a
        // device backend may leave what only the device reads there on the device.
        for b in [mel_t, qk, v, hidden] {
            p.mark_stage_local(b);
        }

        let fixed = Extent::fixed;
        let mut ops = vec![
            // Channel-major mel -> time-major rows for the conv stem.
            Op::Transpose {
                x: At::start(mel),
                out: At::start(mel_t),
                rows: n_mels,
                cols: f,
            },
            Op::Conv1dK3 {
                x: At::start(mel_t),
                out: At::start(qk),
                t_in: f,
                w: conv1.w,
                bias: conv1.b.expect("conv bias"),
                stride: 1,
                epilogue: Epilogue::Gelu,
            },
            Op::Conv1dK3 {
                x: At::start(qk),
                out: At::start(x),
                t_in: f,
                w: conv2.w,
                bias: conv2.b.expect("conv bias"),
                stride: 2,
                epilogue: Epilogue::Gelu,
            },
            Op::AddTableRows {
                x: At::start(x),
                rows: fixed(t),
                width: d,
                table: positions,
                first: fixed(0),
                step: 1,
            },
        ];
        let heads = dims.n_audio_head;
        let dims_attn = AttentionDims {
            heads,
            head_dim: d / heads,
            q_len: fixed(t),
            kv_len: fixed(t),
            causal_offset: None,
            max_q_len: t,
            max_kv_len: t,
        };
        for l in 0..dims.n_audio_layer {
            let ln = |p: &mut Program<B::Matrix>, module: &str| LayerNorm::load(file, p, module, d);
            let attn_ln = ln(
                &mut p,
                &names::attn_ln(Stack::Encoder, l, AttnKind::SelfAttn),
            )?;
            let attn = AttentionWeights::load(
                file,
                backend,
                &mut p,
                Stack::Encoder,
                l,
                AttnKind::SelfAttn,
                d,
            )?;
            let mlp_ln = ln(&mut p, &names::mlp_ln(Stack::Encoder, l))?;
            let mlp = Mlp::load(file, backend, &mut p, Stack::Encoder, l, d)?;
            let rows = fixed(t);
            ops.push(attn_ln.op(x, h, rows));
            ops.push(
                attn.query
                    .op(At::start(h), At::start(qk), rows, t, Epilogue::Store),
            );
            ops.push(
                attn.key
                    .op(At::start(h), At::fixed(qk, t * d), rows, t, Epilogue::Store),
            );
            ops.push(
                attn.value
                    .op(At::start(h), At::start(v), rows, t, Epilogue::Store),
            );
            // The attention output overwrites h (its normed input is no longer needed).
            ops.push(Op::Attention {
                q: At::start(qk),
                k: At::fixed(qk, t * d),
                v: At::start(v),
                out: At::start(h),
                dims: dims_attn,
            });
            ops.push(
                attn.out
                    .op(At::start(h), At::start(x), rows, t, Epilogue::AddInto),
            );
            ops.push(mlp_ln.op(x, h, rows));
            mlp.chunked_ops(h, x, hidden, t, chunk, &mut ops);
        }
        let ln_post = LayerNorm::load(file, &mut p, names::ENCODER_LN_POST, d)?;
        ops.push(ln_post.op(x, h, fixed(t)));
        let window = p.add_stage("encoder window", ops);
        Ok(Self {
            dims: *dims,
            program: p,
            window,
            mel,
            out: h,
        })
    }

    /// Mel frames one window feeds the encoder (3000 for Whisper).
    pub fn n_frames(&self) -> usize {
        2 * self.dims.n_audio_ctx
    }

    /// The program (weights, buffers, the window stage).
    pub fn program(&self) -> &Program<B::Matrix> {
        &self.program
    }

    /// Allocates one stream's encoder workspace on `threads` threads.
    pub fn workspace(&self, backend: &B, threads: usize) -> Result<B::Workspace, WhisperError> {
        Ok(backend.workspace(&self.program, threads)?)
    }

    /// Device submissions per encoder window on `backend`.
    pub fn submissions_per_window(&self, backend: &B) -> usize {
        backend.submissions(&self.program, self.window)
    }

    /// Encodes one window: `mel [n_mels, 3000]` (channel-major, as the frontend gives it) →
    /// the encoder output `[n_audio_ctx, n_audio_state]`, borrowed from `ws`.
    pub fn forward<'w>(
        &self,
        backend: &B,
        ws: &'w mut B::Workspace,
        mel: &[f32],
    ) -> Result<&'w [f32], WhisperError> {
        let (n_mels, f) = (self.dims.n_mels, self.n_frames());
        if mel.len() != n_mels * f {
            return Err(WhisperError::BadWindow {
                len: mel.len(),
                want: n_mels * f,
            });
        }
        backend.write(ws, self.mel, 0, mel)?;
        backend.run(&self.program, self.window, &StageArgs::default(), ws)?;
        self.output(backend, ws)
    }

    /// The output `[n_audio_ctx, n_audio_state]` of the last window encoded in `ws`.
    pub fn output<'w>(&self, backend: &B, ws: &'w B::Workspace) -> Result<&'w [f32], WhisperError> {
        let len = self.dims.n_audio_ctx * self.dims.n_audio_state;
        Ok(backend.read(ws, self.out, 0..len)?)
    }
}
