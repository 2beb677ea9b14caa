//! The Whisper tokenizer: the Hugging Face byte-level BPE embedded in the model file, plus the
//! special and timestamp tokens, whose ids come from the model's config (never hard-coded).

use crate::config::SpecialTokens;

/// Errors from building or using the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the model's embedded tokenizer JSON does not parse: {0}")]
    Parse(String),
    #[error("tokenizer {op} failed: {reason}")]
    Op { op: &'static str, reason: String },
}

/// Text <-> token ids for one Whisper model.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer_json` metadata and the model's special tokens.
    pub fn from_json(json: &str, special: SpecialTokens) -> Result<Self, TokenizerError> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| TokenizerError::Parse(e.to_string()))?;
        Ok(Self { inner, special })
    }

    /// The special token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// True for `<|0.00|>` .. `<|30.00|>`.
    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.special.timestamp_begin
    }

    /// Text of the text tokens among `ids` (ids ≥ EOT — specials and timestamps — are skipped),
    /// as faster-whisper's `Tokenizer.decode`.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text_ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&t| t < self.special.eot)
            .collect();
        self.inner
            .decode(&text_ids, true)
            .map_err(|e| TokenizerError::Op {
                op: "decode",
                reason: e.to_string(),
            })
    }

    /// Token ids of `text` without special tokens (as faster-whisper encodes prompts).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Op {
                op: "encode",
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The token's string form (timestamps as `<|1.23|>`), for debugging output.
    pub fn token_str(&self, id: u32) -> String {
        if self.is_timestamp(id) {
            let t = (id - self.special.timestamp_begin) as f64 * 0.02;
            return format!("<|{t:.2}|>");
        }
        self.inner
            .id_to_token(id)
            .unwrap_or_else(|| format!("<|{id}|>"))
    }
}
