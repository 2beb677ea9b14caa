//! What a model file says about the network and its vocabulary (`docs/model-format.md`,
//! "Metadata"): dimensions, special token ids, languages, suppress lists, alignment heads.
//!
//! [`ModelConfig::to_metadata`] and [`ModelConfig::from_metadata`] are the single definition of
//! the metadata keys; the converter writes with one and the loader reads with the other.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// `format` metadata value of every Amanuensis model file.
pub const FORMAT: &str = "amanuensis-whisper";
/// The `format_version` this code writes: 3 = version 2 with the tokenizer moved out of the
/// header's metadata into byte tensors, beside the id → bytes decoding table
/// (`docs/model-format.md`, "Tokenizer"), so a load reads the table in place and parses no JSON.
pub const FORMAT_VERSION: &str = "3";
/// Version 2: the tokenizer JSON in the `tokenizer_json` metadata entry (no decoding table: it
/// is built from the JSON at load), plus the checksums `tensor_crc32` and `metadata_crc32`
/// (`docs/model-format.md`, "Checksums"). Still read.
pub const FORMAT_VERSION_TOKENIZER_IN_METADATA: &str = "2";
/// The first format: as 2 without checksums. Still read; `--verify-model` says it cannot check it.
pub const FORMAT_VERSION_NO_CHECKSUMS: &str = "1";
/// The `format_version` values this code reads (for messages).
pub const SUPPORTED_FORMAT_VERSIONS: &str = "1, 2 and 3";

/// Metadata keys (`__metadata__` of the safetensors header).
pub mod keys {
    pub const FORMAT: &str = "format";
    pub const FORMAT_VERSION: &str = "format_version";
    pub const SOURCE: &str = "source";
    pub const DIMS: &str = "dims";
    pub const SPECIAL_TOKENS: &str = "special_tokens";
    pub const LANGUAGES: &str = "languages";
    pub const MULTILINGUAL: &str = "multilingual";
    pub const SUPPRESS_IDS: &str = "suppress_ids";
    pub const SUPPRESS_IDS_BEGIN: &str = "suppress_ids_begin";
    pub const ALIGNMENT_HEADS: &str = "alignment_heads";
    /// The tokenizer JSON (format_version 1 and 2; version 3 stores it in a tensor).
    pub const TOKENIZER_JSON: &str = "tokenizer_json";
    /// `int8` when the weight matrices are stored quantized (absent: f16).
    pub const QUANTIZATION: &str = "quantization";
    /// JSON object: tensor name → CRC-32 of its data bytes (format_version 2).
    pub const TENSOR_CRC32: &str = "tensor_crc32";
    /// CRC-32 of every other metadata entry (format_version 2; see `checksum::metadata_crc32`).
    pub const METADATA_CRC32: &str = "metadata_crc32";
}

/// Number of timestamp tokens `<|0.00|>` .. `<|30.00|>` (0.02 s steps) from `timestamp_begin`.
pub const N_TIMESTAMPS: u32 = 1501;

/// The smallest vocabulary of a multilingual checkpoint (`multilingual` = `n_vocab >= 51865`).
pub const MULTILINGUAL_MIN_VOCAB: usize = 51865;

/// The network's sizes, named as in openai/whisper's `ModelDimensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dims {
    /// Mel bins of the input (80; 128 for large-v3).
    pub n_mels: usize,
    /// Encoder positions (1500 = 3000 mel frames after the stride-2 conv).
    pub n_audio_ctx: usize,
    /// Encoder width d.
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder blocks.
    pub n_audio_layer: usize,
    /// Vocabulary size, timestamps included (rows of the token embedding).
    pub n_vocab: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder blocks.
    pub n_text_layer: usize,
}

impl Dims {
    /// Checks the sizes describe a network this code can run: all non-zero, heads divide the
    /// widths, and encoder and decoder widths equal (cross-attention K/V are `[d, d]`).
    pub fn validate(&self) -> Result<(), String> {
        // Upper bounds far above any Whisper (large-v3: 128 mels, d 1280, 20 heads, 32 layers,
        // 51866 tokens) that keep a hostile file from making the loader build a huge tensor
        // table or overflow a size product.
        let fields = [
            ("n_mels", self.n_mels, 1 << 10),
            ("n_audio_ctx", self.n_audio_ctx, 1 << 16),
            ("n_audio_state", self.n_audio_state, 1 << 14),
            ("n_audio_head", self.n_audio_head, 1 << 10),
            ("n_audio_layer", self.n_audio_layer, 1 << 8),
            ("n_vocab", self.n_vocab, 1 << 21),
            ("n_text_ctx", self.n_text_ctx, 1 << 16),
            ("n_text_state", self.n_text_state, 1 << 14),
            ("n_text_head", self.n_text_head, 1 << 10),
            ("n_text_layer", self.n_text_layer, 1 << 8),
        ];
        for (name, value, max) in fields {
            if value == 0 {
                return Err(format!("{name} is 0"));
            }
            if value > max {
                return Err(format!("{name} = {value} exceeds the limit {max}"));
            }
        }
        if !self.n_audio_state.is_multiple_of(self.n_audio_head) {
            return Err(format!(
                "n_audio_head {} does not divide n_audio_state {}",
                self.n_audio_head, self.n_audio_state
            ));
        }
        if !self.n_text_state.is_multiple_of(self.n_text_head) {
            return Err(format!(
                "n_text_head {} does not divide n_text_state {}",
                self.n_text_head, self.n_text_state
            ));
        }
        if self.n_audio_state != self.n_text_state {
            return Err(format!(
                "n_audio_state {} != n_text_state {}",
                self.n_audio_state, self.n_text_state
            ));
        }
        Ok(())
    }

    /// Encoder head width.
    pub fn audio_head_dim(&self) -> usize {
        self.n_audio_state / self.n_audio_head
    }

    /// Decoder head width.
    pub fn text_head_dim(&self) -> usize {
        self.n_text_state / self.n_text_head
    }
}

/// Special token ids, derived by name from the tokenizer when the file was converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialTokens {
    /// `<|endoftext|>`
    pub eot: u32,
    /// `<|startoftranscript|>`
    pub sot: u32,
    /// `<|translate|>`
    pub translate: u32,
    /// `<|transcribe|>`
    pub transcribe: u32,
    /// `<|startoflm|>`
    pub startoflm: u32,
    /// `<|startofprev|>`
    pub startofprev: u32,
    /// `<|nospeech|>`, or `<|nocaptions|>` in older tokenizers.
    pub no_speech: u32,
    /// `<|notimestamps|>`
    pub no_timestamps: u32,
    /// `<|0.00|>` = `no_timestamps + 1`; the timestamps run to `timestamp_begin + 1500`.
    pub timestamp_begin: u32,
}

/// Everything a model file says besides its weights and tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub dims: Dims,
    pub special: SpecialTokens,
    /// `(code, token id)` of every `<|xx|>` language token, in id order.
    pub languages: Vec<(String, u32)>,
    /// `n_vocab >= 51865`.
    pub multilingual: bool,
    /// Suppressed at every step (CTranslate2 config.json `suppress_ids`).
    pub suppress_ids: Vec<u32>,
    /// Suppressed at the first sampled step (`suppress_ids_begin`).
    pub suppress_ids_begin: Vec<u32>,
    /// `(decoder layer, head)` pairs for word timestamps.
    pub alignment_heads: Vec<(usize, usize)>,
}

/// A metadata value that is missing or wrong: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata `{key}`: {reason}")]
pub struct MetadataError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl ModelConfig {
    /// Checks the config is self-consistent: valid dims, special tokens and timestamps inside the
    /// vocabulary, `timestamp_begin = no_timestamps + 1`, ids and heads in range.
    pub fn validate(&self) -> Result<(), MetadataError> {
        self.dims.validate().map_err(|r| bad(keys::DIMS, r))?;
        let n_vocab = self.dims.n_vocab as u64;
        let s = &self.special;
        let named = [
            ("eot", s.eot),
            ("sot", s.sot),
            ("translate", s.translate),
            ("transcribe", s.transcribe),
            ("startoflm", s.startoflm),
            ("startofprev", s.startofprev),
            ("no_speech", s.no_speech),
            ("no_timestamps", s.no_timestamps),
            ("timestamp_begin", s.timestamp_begin),
        ];
        for (name, id) in named {
            if u64::from(id) >= n_vocab {
                return Err(bad(
                    keys::SPECIAL_TOKENS,
                    format!("{name} {id} outside the vocabulary (n_vocab {n_vocab})"),
                ));
            }
        }
        if u64::from(s.timestamp_begin) != u64::from(s.no_timestamps) + 1 {
            return Err(bad(
                keys::SPECIAL_TOKENS,
                format!(
                    "timestamp_begin {} != no_timestamps {} + 1",
                    s.timestamp_begin, s.no_timestamps
                ),
            ));
        }
        if u64::from(s.timestamp_begin) + u64::from(N_TIMESTAMPS) > n_vocab {
            return Err(bad(
                keys::SPECIAL_TOKENS,
                format!(
                    "the {N_TIMESTAMPS} timestamps from {} do not fit in n_vocab {n_vocab}",
                    s.timestamp_begin
                ),
            ));
        }
        let multilingual = self.dims.n_vocab >= MULTILINGUAL_MIN_VOCAB;
        if self.multilingual != multilingual {
            return Err(bad(
                keys::MULTILINGUAL,
                format!("{} but n_vocab is {n_vocab}", self.multilingual),
            ));
        }
        for (code, id) in &self.languages {
            if u64::from(*id) >= n_vocab || code.is_empty() {
                return Err(bad(
                    keys::LANGUAGES,
                    format!("language {code:?} id {id} invalid (n_vocab {n_vocab})"),
                ));
            }
        }
        for (key, ids) in [
            (keys::SUPPRESS_IDS, &self.suppress_ids),
            (keys::SUPPRESS_IDS_BEGIN, &self.suppress_ids_begin),
        ] {
            if let Some(id) = ids.iter().find(|&&id| u64::from(id) >= n_vocab) {
                return Err(bad(
                    key,
                    format!("id {id} outside the vocabulary (n_vocab {n_vocab})"),
                ));
            }
        }
        for &(layer, head) in &self.alignment_heads {
            if layer >= self.dims.n_text_layer || head >= self.dims.n_text_head {
                return Err(bad(
                    keys::ALIGNMENT_HEADS,
                    format!(
                        "[{layer}, {head}] outside {} decoder layers x {} heads",
                        self.dims.n_text_layer, self.dims.n_text_head
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The metadata entries of this config (all keys but `format`, `format_version`, `source`
    /// and `tokenizer_json`), values as `docs/model-format.md` spells them.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        fn json<T: Serialize>(value: &T) -> String {
            // Serialising plain structs, vectors, strings and integers cannot fail.
            serde_json::to_string(value).expect("config values serialise to JSON")
        }
        HashMap::from([
            (keys::DIMS.to_string(), json(&self.dims)),
            (keys::SPECIAL_TOKENS.to_string(), json(&self.special)),
            (keys::LANGUAGES.to_string(), json(&self.languages)),
            (keys::MULTILINGUAL.to_string(), json(&self.multilingual)),
            (keys::SUPPRESS_IDS.to_string(), json(&self.suppress_ids)),
            (
                keys::SUPPRESS_IDS_BEGIN.to_string(),
                json(&self.suppress_ids_begin),
            ),
            (
                keys::ALIGNMENT_HEADS.to_string(),
                json(&self.alignment_heads),
            ),
        ])
    }

    /// Parses and validates the config entries of a model file's metadata.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<ModelConfig, MetadataError> {
        fn get<T: for<'de> Deserialize<'de>>(
            meta: &HashMap<String, String>,
            key: &str,
        ) -> Result<T, MetadataError> {
            let text = meta.get(key).ok_or_else(|| bad(key, "missing"))?;
            serde_json::from_str(text).map_err(|e| bad(key, format!("invalid JSON value: {e}")))
        }
        let config = ModelConfig {
            dims: get(meta, keys::DIMS)?,
            special: get(meta, keys::SPECIAL_TOKENS)?,
            languages: get(meta, keys::LANGUAGES)?,
            multilingual: get(meta, keys::MULTILINGUAL)?,
            suppress_ids: get(meta, keys::SUPPRESS_IDS)?,
            suppress_ids_begin: get(meta, keys::SUPPRESS_IDS_BEGIN)?,
            alignment_heads: get(meta, keys::ALIGNMENT_HEADS)?,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// tiny.en's values (docs/whisper.md), written out independently of any converter.
    pub(crate) fn tiny_en() -> ModelConfig {
        ModelConfig {
            dims: Dims {
                n_mels: 80,
                n_audio_ctx: 1500,
                n_audio_state: 384,
                n_audio_head: 6,
                n_audio_layer: 4,
                n_vocab: 51864,
                n_text_ctx: 448,
                n_text_state: 384,
                n_text_head: 6,
                n_text_layer: 4,
            },
            special: SpecialTokens {
                eot: 50256,
                sot: 50257,
                translate: 50357,
                transcribe: 50358,
                startoflm: 50359,
                startofprev: 50360,
                no_speech: 50361,
                no_timestamps: 50362,
                timestamp_begin: 50363,
            },
            languages: vec![("en".into(), 50258), ("zh".into(), 50259)],
            multilingual: false,
            suppress_ids: vec![1, 2, 50357],
            suppress_ids_begin: vec![220, 50256],
            alignment_heads: vec![(1, 0), (3, 4)],
        }
    }

    #[test]
    fn metadata_round_trips_and_uses_the_documented_spelling() {
        let c = tiny_en();
        let meta = c.to_metadata();
        assert_eq!(meta[keys::LANGUAGES], r#"[["en",50258],["zh",50259]]"#);
        assert_eq!(meta[keys::ALIGNMENT_HEADS], "[[1,0],[3,4]]");
        assert_eq!(meta[keys::MULTILINGUAL], "false");
        assert!(meta[keys::DIMS].contains(r#""n_audio_state":384"#));
        assert_eq!(ModelConfig::from_metadata(&meta).unwrap(), c);
    }

    #[test]
    fn inconsistent_configs_name_the_key() {
        let check = |edit: &dyn Fn(&mut ModelConfig), key: &str| {
            let mut c = tiny_en();
            edit(&mut c);
            let err = ModelConfig::from_metadata(&c.to_metadata()).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        };
        check(&|c| c.dims.n_audio_head = 5, keys::DIMS);
        check(&|c| c.dims.n_text_state = 512, keys::DIMS);
        check(&|c| c.dims.n_mels = 0, keys::DIMS);
        check(&|c| c.dims.n_text_layer = 100_000, keys::DIMS);
        check(&|c| c.special.timestamp_begin = 50364, keys::SPECIAL_TOKENS);
        check(&|c| c.special.eot = 60000, keys::SPECIAL_TOKENS);
        check(&|c| c.multilingual = true, keys::MULTILINGUAL);
        check(&|c| c.suppress_ids.push(51864), keys::SUPPRESS_IDS);
        check(&|c| c.alignment_heads.push((4, 0)), keys::ALIGNMENT_HEADS);
        check(&|c| c.languages.push((String::new(), 1)), keys::LANGUAGES);
    }

    #[test]
    fn missing_and_malformed_values_name_the_key() {
        let mut meta = tiny_en().to_metadata();
        meta.remove(keys::SUPPRESS_IDS_BEGIN);
        assert_eq!(
            ModelConfig::from_metadata(&meta).unwrap_err(),
            bad(keys::SUPPRESS_IDS_BEGIN, "missing")
        );
        let mut meta = tiny_en().to_metadata();
        meta.insert(keys::DIMS.into(), r#"{"n_mels": 80}"#.into());
        assert_eq!(
            ModelConfig::from_metadata(&meta).unwrap_err().key,
            keys::DIMS
        );
        let mut meta = tiny_en().to_metadata();
        meta.insert(keys::ALIGNMENT_HEADS.into(), "[[1,-1]]".into());
        assert_eq!(
            ModelConfig::from_metadata(&meta).unwrap_err().key,
            keys::ALIGNMENT_HEADS
        );
    }
}
