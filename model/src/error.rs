//! The model crate's error type.

use crate::audio::AudioError;
use crate::mel::MelError;
use crate::tokenizer::TokenizerError;
use crate::weights::LoadError;

/// Anything that can go wrong between a model file, an audio file and a transcript.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Mel(#[from] MelError),
    #[error("the model file {path} is inconsistent: {reason}")]
    BadModel { path: String, reason: String },
    #[error("unknown language code {0:?} (this model's languages are listed in its metadata)")]
    UnknownLanguage(String),
    #[error("{0} needs a multilingual model; this one is English-only (.en)")]
    EnglishOnly(String),
    #[error("a decoder prompt of {len} tokens with SOT at {sot_index} (at most {max} tokens, SOT inside)")]
    BadPrompt {
        len: usize,
        max: usize,
        sot_index: usize,
    },
    #[error("beam size {0} is not supported (1 = greedy, up to {max})", max = crate::session::MAX_BEAMS)]
    BadBeamSize(usize),
    #[error(
        "beam search patience {patience} and length penalty {length_penalty}: patience must be \
         a positive number that keeps at least one hypothesis (beam size × patience ≥ 0.5), \
         the length penalty a finite number"
    )]
    BadBeamOptions { patience: f32, length_penalty: f32 },
    #[error("prompt token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error(transparent)]
    Backend(#[from] amanuensis_runtime::backend::BackendError),
    #[error("an encoder window of {len} mel values (the encoder takes {want})")]
    BadWindow { len: usize, want: usize },
    #[error("decoder pass of {tokens} tokens at position {pos} overflows the text context ({n_text_ctx})")]
    ContextOverflow {
        tokens: usize,
        pos: usize,
        n_text_ctx: usize,
    },
    #[error(
        "this model has no alignment heads in its metadata (needed for cross-attention weights)"
    )]
    NoAlignmentHeads,
    #[error("transcription aborted by the caller")]
    Aborted,
    #[error(transparent)]
    Clips(#[from] crate::clips::ClipError),
}
