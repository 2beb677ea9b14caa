//! Decoding rules applied to the logits of each step, the greedy sampler and beam search.
//!
//! Every rule is a [`LogitFilter`] that edits the logits in place; the order of application is
//! faster-whisper's (CTranslate2's): suppress tokens, suppress blank, timestamp rules.

mod beam;
mod compression;
pub mod fallback;
mod greedy;
pub mod guards;
mod sampler;
mod suppress;
mod timestamp_rules;

pub use beam::{BeamOptions, BeamSearch, Candidate, Continuation};
pub use compression::{compression_ratio, zlib_len};
pub use greedy::{argmax, log_sum_exp, GreedyPick};
pub use sampler::{sample, Rng, SampledToken};
pub use suppress::{SuppressBlank, SuppressTokens};
pub use timestamp_rules::TimestampRules;

/// A rule that disables tokens by setting their logits to `f32::NEG_INFINITY`.
pub trait LogitFilter {
    /// Edits `logits` for the next step, given the tokens sampled so far in this window
    /// (the prompt excluded).
    fn apply(&self, logits: &mut [f32], sampled: &[u32]);
}
