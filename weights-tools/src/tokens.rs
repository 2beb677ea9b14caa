//! Special token ids and languages, derived by name from a Hugging Face `tokenizer.json`
//! (and cross-checked against CTranslate2's `vocabulary.txt` when there is one).

use std::collections::HashMap;
use std::path::Path;

use amanuensis_model::config::{SpecialTokens, N_TIMESTAMPS};
use serde_json::Value;

use crate::error::ConvertError;

/// Token text ↔ id maps of a tokenizer.json: `added_tokens` first, then `model.vocab`.
pub struct TokenTable {
    by_text: HashMap<String, u32>,
    by_id: HashMap<u32, String>,
}

impl TokenTable {
    /// Reads the token maps of a tokenizer.json.
    pub fn parse(path: &Path, json: &str) -> Result<TokenTable, ConvertError> {
        let bad = |key: &str, reason: String| ConvertError::Json {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let root: Value = serde_json::from_str(json).map_err(|e| bad("", e.to_string()))?;
        let mut by_text = HashMap::new();
        let mut by_id = HashMap::new();
        let added = root
            .get("added_tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("added_tokens", "missing or not an array".into()))?;
        for (i, t) in added.iter().enumerate() {
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok());
            let content = t.get("content").and_then(Value::as_str);
            let (Some(id), Some(content)) = (id, content) else {
                return Err(bad(
                    "added_tokens",
                    format!("entry {i} lacks an id or content"),
                ));
            };
            by_text.insert(content.to_string(), id);
            by_id.insert(id, content.to_string());
        }
        if let Some(vocab) = root.pointer("/model/vocab").and_then(Value::as_object) {
            for (text, id) in vocab {
                let Some(id) = id.as_u64().and_then(|v| u32::try_from(v).ok()) else {
                    return Err(bad("model.vocab", format!("{text:?} has no integer id")));
                };
                by_text.entry(text.clone()).or_insert(id);
                by_id.entry(id).or_insert_with(|| text.clone());
            }
        }
        Ok(TokenTable { by_text, by_id })
    }

    /// The id of a token text.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The text of a token id.
    pub fn text(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }
}

/// Special tokens by name (`docs/model-format.md`), and the `<|xx|>` languages between
/// `<|startoftranscript|>` and `<|translate|>`.
pub fn special_tokens(
    path: &Path,
    table: &TokenTable,
) -> Result<(SpecialTokens, Vec<(String, u32)>), ConvertError> {
    let need = |text: &str| {
        table.id(text).ok_or_else(|| ConvertError::Vocabulary {
            path: path.to_path_buf(),
            reason: format!("no token {text}"),
        })
    };
    let no_timestamps = need("<|notimestamps|>")?;
    let no_speech = match table.id("<|nospeech|>") {
        Some(id) => id,
        None => need("<|nocaptions|>")?,
    };
    let special = SpecialTokens {
        eot: need("<|endoftext|>")?,
        sot: need("<|startoftranscript|>")?,
        translate: need("<|translate|>")?,
        transcribe: need("<|transcribe|>")?,
        startoflm: need("<|startoflm|>")?,
        startofprev: need("<|startofprev|>")?,
        no_speech,
        no_timestamps,
        timestamp_begin: no_timestamps
            .checked_add(1)
            .ok_or_else(|| ConvertError::Vocabulary {
                path: path.to_path_buf(),
                reason: "<|notimestamps|> id overflows".into(),
            })?,
    };
    // Tokenizers that list the timestamps (newer HF ones) must agree with notimestamps + 1.
    if let Some(id) = table.id("<|0.00|>") {
        if id != special.timestamp_begin {
            return Err(ConvertError::Vocabulary {
                path: path.to_path_buf(),
                reason: format!(
                    "<|0.00|> is {id}, but <|notimestamps|> + 1 is {}",
                    special.timestamp_begin
                ),
            });
        }
    }
    let mut languages = Vec::new();
    for id in special.sot.saturating_add(1)..special.translate {
        let text = table.text(id).ok_or_else(|| ConvertError::Vocabulary {
            path: path.to_path_buf(),
            reason: format!(
                "no token with id {id} (between <|startoftranscript|> and <|translate|>)"
            ),
        })?;
        let code = text
            .strip_prefix("<|")
            .and_then(|t| t.strip_suffix("|>"))
            .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase()))
            .ok_or_else(|| ConvertError::Vocabulary {
                path: path.to_path_buf(),
                reason: format!("token {id} {text:?} between <|startoftranscript|> and <|translate|> is not a language"),
            })?;
        languages.push((code.to_string(), id));
    }
    Ok((special, languages))
}

/// Cross-checks CTranslate2's `vocabulary.txt` (line i = token i, timestamps included; empty
/// lines are tokens too) against `n_vocab` and the special tokens.
pub fn check_vocabulary(
    path: &Path,
    text: &str,
    n_vocab: usize,
    special: &SpecialTokens,
) -> Result<(), ConvertError> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let bad = |reason: String| ConvertError::Vocabulary {
        path: path.to_path_buf(),
        reason,
    };
    if lines.len() != n_vocab {
        return Err(bad(format!(
            "{} tokens, but the embedding has {n_vocab} rows",
            lines.len()
        )));
    }
    let last_timestamp = special.timestamp_begin as usize + N_TIMESTAMPS as usize - 1;
    for (id, want) in [
        (special.eot as usize, "<|endoftext|>"),
        (special.no_timestamps as usize, "<|notimestamps|>"),
        (special.timestamp_begin as usize, "<|0.00|>"),
        (last_timestamp, "<|30.00|>"),
    ] {
        let got = lines.get(id).copied().unwrap_or("<missing>");
        if got != want {
            return Err(bad(format!("line {id} is {got:?}, expected {want}")));
        }
    }
    Ok(())
}
