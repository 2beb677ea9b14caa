//! The stable tensor names of an Amanuensis model file (`docs/model-format.md`).
//!
//! Names follow openai/whisper's module names. Every name used by the converter and the loader
//! is built here, so a rename happens in one place.

/// The mel filterbank tensor, `[n_mels, n_fft / 2 + 1]`, f32.
pub const MEL_FILTERS: &str = "mel_filters";

/// The Hugging Face `tokenizer.json`, verbatim UTF-8, u8 `[len]` (format_version 3).
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// The decoding table's token bytes, every id's concatenated, u8 `[len]` (format_version 3).
pub const DECODE_BYTES: &str = "tokenizer.decode_bytes";
/// The decoding table's end offsets into [`DECODE_BYTES`], one per id, u32 `[ids]`
/// (format_version 3).
pub const DECODE_ENDS: &str = "tokenizer.decode_ends";

/// Which half of the network a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Encoder,
    Decoder,
}

impl Stack {
    pub fn prefix(self) -> &'static str {
        match self {
            Stack::Encoder => "encoder",
            Stack::Decoder => "decoder",
        }
    }
}

/// An attention module inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKind {
    /// `attn`: self-attention (causal in the decoder).
    SelfAttn,
    /// `cross_attn`: decoder attention over the encoder output.
    Cross,
}

impl AttnKind {
    pub fn module(self) -> &'static str {
        match self {
            AttnKind::SelfAttn => "attn",
            AttnKind::Cross => "cross_attn",
        }
    }
    pub fn layer_norm(self) -> &'static str {
        match self {
            AttnKind::SelfAttn => "attn_ln",
            AttnKind::Cross => "cross_attn_ln",
        }
    }
}

/// The four projections of an attention module. `Key` has no bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Query,
    Key,
    Value,
    Out,
}

impl Proj {
    pub const ALL: [Proj; 4] = [Proj::Query, Proj::Key, Proj::Value, Proj::Out];
    pub fn name(self) -> &'static str {
        match self {
            Proj::Query => "query",
            Proj::Key => "key",
            Proj::Value => "value",
            Proj::Out => "out",
        }
    }
    pub fn has_bias(self) -> bool {
        self != Proj::Key
    }
}

pub const CONV1: &str = "encoder.conv1";
pub const CONV2: &str = "encoder.conv2";
pub const ENCODER_POSITIONS: &str = "encoder.positional_embedding";
pub const ENCODER_LN_POST: &str = "encoder.ln_post";
pub const TOKEN_EMBEDDING: &str = "decoder.token_embedding.weight";
pub const DECODER_POSITIONS: &str = "decoder.positional_embedding";
pub const DECODER_LN: &str = "decoder.ln";

/// `{stack}.blocks.{layer}`
pub fn block(stack: Stack, layer: usize) -> String {
    format!("{}.blocks.{layer}", stack.prefix())
}

/// `{block}.{attn|cross_attn}.{query|key|value|out}` (append `.weight` / `.bias`).
pub fn attn_proj(stack: Stack, layer: usize, kind: AttnKind, proj: Proj) -> String {
    format!("{}.{}.{}", block(stack, layer), kind.module(), proj.name())
}

/// `{block}.{attn_ln|cross_attn_ln}` (append `.weight` / `.bias`).
pub fn attn_ln(stack: Stack, layer: usize, kind: AttnKind) -> String {
    format!("{}.{}", block(stack, layer), kind.layer_norm())
}

/// `{block}.mlp_ln` (append `.weight` / `.bias`).
pub fn mlp_ln(stack: Stack, layer: usize) -> String {
    format!("{}.mlp_ln", block(stack, layer))
}

/// `{block}.mlp.0` (d → 4d) or `{block}.mlp.2` (4d → d) (append `.weight` / `.bias`).
pub fn mlp(stack: Stack, layer: usize, second: bool) -> String {
    format!("{}.mlp.{}", block(stack, layer), if second { 2 } else { 0 })
}

/// The per-output-channel scales of an INT8 weight tensor: `{weight name}_scale`.
pub fn weight_scale(weight_name: &str) -> String {
    format!("{weight_name}_scale")
}

pub fn weight(module: &str) -> String {
    format!("{module}.weight")
}

pub fn bias(module: &str) -> String {
    format!("{module}.bias")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_format_doc() {
        assert_eq!(
            weight(&attn_proj(Stack::Decoder, 3, AttnKind::Cross, Proj::Key)),
            "decoder.blocks.3.cross_attn.key.weight"
        );
        assert_eq!(
            bias(&mlp(Stack::Encoder, 0, true)),
            "encoder.blocks.0.mlp.2.bias"
        );
        assert_eq!(
            weight(&attn_ln(Stack::Encoder, 1, AttnKind::SelfAttn)),
            "encoder.blocks.1.attn_ln.weight"
        );
        assert!(!Proj::Key.has_bias());
    }
}
