//! The Whisper tokenizer: the Hugging Face byte-level BPE embedded in the model file, plus the
//! special and timestamp tokens, whose ids come from the model's config (never hard-coded).
//!
//! Decoding needs only an id → bytes table ([`DecodeTable`]). A format-version-3 file carries
//! it (written by the converter), read in place from the file's map at load; an older file's is
//! built at load from the JSON's vocabulary in one pass (no merges, no regexes). The full
//! `tokenizers` BPE, which costs far more to build than the rest of a model load, is built on
//! first use: encoding a prompt ([`Tokenizer::encode`]) or a token's string form
//! ([`Tokenizer::token_str`]); a version-3 file's JSON is read (from its map) only then.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use amanuensis_runtime::q8::layout::SharedBytes;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::SpecialTokens;
use crate::error::WhisperError;
use crate::weights::WeightsFile;

#[cfg(feature = "bpe")]
use tokenizers::Tokenizer as Bpe;

#[cfg(not(feature = "bpe"))]
use no_bpe::Bpe;

/// Without the `bpe` feature (the fuzz crates, which never encode: `tokenizers` and its regex
/// engines were most of their build) the BPE is never built: encoding, [`Tokenizer::token_str`]'s
/// names and [`Tokenizer::decode_text_bpe`] fail with a parse error. Decoding (the table) is the
/// same.
#[cfg(not(feature = "bpe"))]
mod no_bpe {
    /// No value exists: parsing one always fails.
    pub enum Bpe {}

    impl std::str::FromStr for Bpe {
        type Err = String;

        fn from_str(_: &str) -> Result<Bpe, String> {
            Err("built without the `bpe` feature (the tokenizers BPE)".into())
        }
    }

    /// `tokenizers::Encoding`'s one method used here.
    pub struct Encoding(Vec<u32>);

    impl Encoding {
        pub fn get_ids(&self) -> &[u32] {
            &self.0
        }
    }

    impl Bpe {
        pub fn decode(&self, _: &[u32], _: bool) -> Result<String, String> {
            match *self {}
        }

        pub fn encode(&self, _: &str, _: bool) -> Result<Encoding, String> {
            match *self {}
        }

        pub fn id_to_token(&self, _: u32) -> Option<String> {
            match *self {}
        }
    }
}

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
    table: DecodeTable,
    json: JsonSource,
    inner: OnceLock<Result<Bpe, String>>,
    special: SpecialTokens,
}

/// Where the tokenizer JSON is: owned, or a byte range of the model file's map (read, and
/// checked to be UTF-8, only when the BPE is built).
pub enum JsonSource {
    Owned(String),
    Shared {
        file: SharedBytes,
        range: Range<usize>,
    },
}

impl JsonSource {
    fn text(&self) -> Result<&str, String> {
        match self {
            JsonSource::Owned(s) => Ok(s),
            JsonSource::Shared { file, range } => {
                let bytes = (**file)
                    .as_ref()
                    .get(range.clone())
                    .ok_or_else(|| format!("tokenizer JSON range {range:?} is outside the file"))?;
                std::str::from_utf8(bytes).map_err(|e| {
                    format!("tokenizer JSON is not UTF-8 (at byte {})", e.valid_up_to())
                })
            }
        }
    }
}

/// The bytes of every token id, as the byte-level BPE decoder (`skip_special_tokens`) gives
/// them: each character of the token string mapped back through GPT-2's byte ↔ character
/// table (the token's own UTF-8 when a character is outside it); special added tokens and ids
/// without a token give no bytes.
///
/// Stored as every id's bytes concatenated plus each id's end offset into them
/// (`bytes[ends[id - 1]..ends[id]]`, from 0 for id 0): owned, or read in place from a model
/// file (`tokenizer.decode_bytes` u8, `tokenizer.decode_ends` u32 little-endian).
pub struct DecodeTable {
    store: TableStore,
}

enum TableStore {
    Owned {
        bytes: Vec<u8>,
        ends: Vec<u32>,
    },
    /// Ranges of `file`, checked at construction (ends non-decreasing, the last = the bytes'
    /// length), so every lookup is in range.
    Shared {
        file: SharedBytes,
        bytes: Range<usize>,
        ends: Range<usize>,
    },
}

/// GPT-2's character → byte map (the inverse of `bytes_to_unicode`): the printable bytes map
/// to themselves, the other 68 to U+0100.. in byte order.
fn char_to_byte() -> HashMap<char, u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut map = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0u32..256 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        map.insert(char::from_u32(c).expect("BMP code point"), b as u8);
    }
    map
}

/// The parts of `tokenizer.json` decoding needs.
#[derive(Deserialize)]
struct DecodeJson<'a> {
    #[serde(borrow)]
    model: ModelJson<'a>,
    #[serde(default, borrow)]
    added_tokens: Vec<AddedJson<'a>>,
}

#[derive(Deserialize)]
struct ModelJson<'a> {
    #[serde(borrow)]
    vocab: Vocab<'a>,
}

#[derive(Deserialize)]
struct AddedJson<'a> {
    id: u32,
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
    #[serde(default)]
    special: bool,
}

/// `(token, id)` pairs in file order, without a hash map.
struct Vocab<'a>(Vec<(std::borrow::Cow<'a, str>, u32)>);

impl<'de: 'a, 'a> Deserialize<'de> for Vocab<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Vocab<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of token strings to ids")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Vocab<'a>, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, v)) = m.next_entry::<std::borrow::Cow<'de, str>, u32>()? {
                    out.push((k, v));
                }
                Ok(Vocab(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Checks a stored decoding table (`blob`: the bytes; `ends`: little-endian u32 end offsets):
/// `ends` a whole number of u32, at most `MAX_ID + 1` of them, non-decreasing, the last equal
/// to the bytes' length (0 with no ids). What the lookups of [`DecodeTable::bytes`] rely on.
pub fn check_decode_table(blob: &[u8], ends: &[u8]) -> Result<(), String> {
    if !ends.len().is_multiple_of(4) {
        return Err(format!(
            "ends are {} bytes, not a whole number of u32",
            ends.len()
        ));
    }
    if ends.len() / 4 > MAX_ID as usize + 1 {
        return Err(format!(
            "{} ids, more than {}",
            ends.len() / 4,
            MAX_ID as usize + 1
        ));
    }
    let mut previous = 0u32;
    for (id, c) in ends.chunks_exact(4).enumerate() {
        let end = u32::from_le_bytes(c.try_into().expect("4 bytes"));
        if end < previous {
            return Err(format!(
                "end of id {id} ({end}) is before the previous end ({previous})"
            ));
        }
        previous = end;
    }
    if previous as usize != blob.len() {
        return Err(format!(
            "the last end is {previous}, the bytes are {} long",
            blob.len()
        ));
    }
    Ok(())
}

/// Largest id the table accepts (Whisper vocabularies have ~52k tokens).
const MAX_ID: u32 = 1 << 20;

impl DecodeTable {
    /// Builds the table from a Hugging Face `tokenizer.json` (byte-level BPE).
    pub fn from_json(json: &str) -> Result<DecodeTable, TokenizerError> {
        // Unknown fields (merges, normalizers...) are skipped.
        let parsed: DecodeJson =
            serde_json::from_str(json).map_err(|e| TokenizerError::Parse(e.to_string()))?;
        let mut tokens: Vec<Option<&str>> = Vec::new();
        fn put<'t>(
            id: u32,
            s: &'t str,
            tokens: &mut Vec<Option<&'t str>>,
        ) -> Result<(), TokenizerError> {
            if id > MAX_ID {
                return Err(TokenizerError::Parse(format!(
                    "token id {id} exceeds {MAX_ID}"
                )));
            }
            let i = id as usize;
            if tokens.len() <= i {
                tokens.resize(i + 1, None);
            }
            tokens[i] = Some(s);
            Ok(())
        }
        for (s, id) in &parsed.model.vocab.0 {
            put(*id, s.as_ref(), &mut tokens)?;
        }
        // Added tokens take precedence over the vocabulary (as `tokenizers`' decode); the
        // special ones are skipped, also where a vocabulary entry has the same string.
        let special: std::collections::HashSet<&str> = parsed
            .added_tokens
            .iter()
            .filter(|a| a.special)
            .map(|a| a.content.as_ref())
            .collect();
        for a in &parsed.added_tokens {
            put(a.id, a.content.as_ref(), &mut tokens)?;
        }
        let map = char_to_byte();
        let mut bytes = Vec::with_capacity(tokens.len() * 6);
        let mut ends = Vec::with_capacity(tokens.len());
        let mut mapped = Vec::with_capacity(64);
        for t in tokens {
            if let Some(t) = t.filter(|t| !special.contains(t)) {
                mapped.clear();
                let all = t
                    .chars()
                    .all(|c| map.get(&c).map(|&b| mapped.push(b)).is_some());
                bytes.extend_from_slice(if all { &mapped } else { t.as_bytes() });
            }
            let end = u32::try_from(bytes.len())
                .map_err(|_| TokenizerError::Parse("vocabulary over 4 GB".into()))?;
            ends.push(end);
        }
        Ok(DecodeTable {
            store: TableStore::Owned { bytes, ends },
        })
    }

    /// The table stored in `file`: `bytes` (every id's bytes concatenated) and `ends` (one
    /// little-endian u32 end offset per id), byte ranges of `file`, read in place. Checks what
    /// lookups rely on (ranges inside the file, `ends` a whole number of u32, non-decreasing,
    /// the last equal to the bytes' length: ~1 ns per id) and says what is wrong otherwise.
    pub fn from_shared(
        file: SharedBytes,
        bytes: Range<usize>,
        ends: Range<usize>,
    ) -> Result<DecodeTable, String> {
        let all = (*file).as_ref();
        let blob = all
            .get(bytes.clone())
            .ok_or_else(|| format!("bytes range {bytes:?} is outside the file ({})", all.len()))?;
        let raw = all
            .get(ends.clone())
            .ok_or_else(|| format!("ends range {ends:?} is outside the file ({})", all.len()))?;
        check_decode_table(blob, raw)?;
        Ok(DecodeTable {
            store: TableStore::Shared { file, bytes, ends },
        })
    }

    /// Number of ids in the table (ids from here on have no bytes).
    pub fn len(&self) -> usize {
        match &self.store {
            TableStore::Owned { ends, .. } => ends.len(),
            TableStore::Shared { ends, .. } => ends.len() / 4,
        }
    }

    /// True when the table has no ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// End offset of id `i` (`i < len()`).
    fn end(&self, i: usize) -> u32 {
        match &self.store {
            TableStore::Owned { ends, .. } => ends[i],
            TableStore::Shared { file, ends, .. } => {
                let at = ends.start + 4 * i;
                let raw = &(**file).as_ref()[at..at + 4];
                u32::from_le_bytes(raw.try_into().expect("4 bytes"))
            }
        }
    }

    /// Every id's bytes concatenated.
    pub fn blob(&self) -> &[u8] {
        match &self.store {
            TableStore::Owned { bytes, .. } => bytes,
            TableStore::Shared { file, bytes, .. } => &(**file).as_ref()[bytes.clone()],
        }
    }

    /// Every id's end offset into [`DecodeTable::blob`] (what a model file stores).
    pub fn ends(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.end(i)).collect()
    }

    /// The bytes of token `id` (empty for special tokens and unknown ids).
    pub fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.len() {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        &self.blob()[start as usize..self.end(i) as usize]
    }

    /// The text of `ids`: their bytes concatenated, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::with_capacity(ids.len() * 6);
        for &id in ids {
            out.extend_from_slice(self.bytes(id));
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer_json` metadata and the model's special tokens:
    /// the decoding table now, the BPE on first use.
    pub fn from_json(json: &str, special: SpecialTokens) -> Result<Self, TokenizerError> {
        Ok(Self::new(
            DecodeTable::from_json(json)?,
            JsonSource::Owned(json.to_string()),
            special,
        ))
    }

    /// The tokenizer of a model file: its stored decoding table and JSON, read in place
    /// (format_version 3), or for older files the table built from the JSON of the metadata.
    pub fn from_file(file: &WeightsFile, special: SpecialTokens) -> Result<Self, WhisperError> {
        match file.decode_table()? {
            Some(table) => Ok(Self::new(table, file.tokenizer_json_source(), special)),
            None => Ok(Self::from_json(file.tokenizer_json()?, special)?),
        }
    }

    /// A decoding table and the JSON the BPE is built from on first use.
    pub fn new(table: DecodeTable, json: JsonSource, special: SpecialTokens) -> Self {
        Self {
            table,
            json,
            inner: OnceLock::new(),
            special,
        }
    }

    /// The decoding table.
    pub fn decode_table(&self) -> &DecodeTable {
        &self.table
    }

    /// The full BPE tokenizer, built on the first call.
    fn inner(&self) -> Result<&Bpe, TokenizerError> {
        self.inner
            .get_or_init(|| self.json.text()?.parse::<Bpe>().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| TokenizerError::Parse(e.clone()))
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
    /// as faster-whisper's `Tokenizer.decode`. Reads the decoding table only.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text_ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&t| t < self.special.eot)
            .collect();
        Ok(self.table.decode(&text_ids))
    }

    /// [`Tokenizer::decode_text`] through the full `tokenizers` BPE (the reference the table
    /// is checked against).
    pub fn decode_text_bpe(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text_ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&t| t < self.special.eot)
            .collect();
        self.inner()?
            .decode(&text_ids, true)
            .map_err(|e| TokenizerError::Op {
                op: "decode",
                reason: e.to_string(),
            })
    }

    /// Token ids of `text` without special tokens (as faster-whisper encodes prompts). The
    /// first call builds the BPE.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner()?
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
        self.inner()
            .ok()
            .and_then(|t| t.id_to_token(id))
            .unwrap_or_else(|| format!("<|{id}|>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_map_is_a_bijection_over_256_chars() {
        let m = char_to_byte();
        assert_eq!(m.len(), 256);
        let mut seen = [false; 256];
        for &b in m.values() {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(m[&'a'], b'a');
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
    }

    #[test]
    fn a_small_vocabulary_decodes_as_the_bpe_does() {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"normalizer":null,
            "pre_tokenizer":null,"post_processor":null,"added_tokens":[
            {"id":5,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
            {"id":6,"content":"plain","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":false}],
            "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
            "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":"",
            "end_of_word_suffix":"","fuse_unk":false,"vocab":{"a":0,"Ġb":1,"\u00e2\u0122\u013b":2,"c d":3,"<|endoftext|>":4},"merges":[]}}"#;
        let t = DecodeTable::from_json(json).unwrap();
        assert_eq!(t.bytes(0), b"a");
        assert_eq!(t.bytes(1), b" b");
        assert_eq!(
            t.bytes(3),
            b"c d",
            "a char outside the map: the token's own bytes"
        );
        assert_eq!(t.bytes(4), b"", "same string as a special added token");
        assert_eq!(t.bytes(5), b"");
        assert_eq!(t.bytes(6), b"plain");
        assert_eq!(t.bytes(99), b"");
        #[cfg(feature = "bpe")]
        let bpe: tokenizers::Tokenizer = json.parse().unwrap();
        #[cfg(feature = "bpe")]
        for ids in [&[0u32, 1, 2, 3, 4, 5, 6][..], &[2], &[1, 1, 0], &[]] {
            assert_eq!(t.decode(ids), bpe.decode(ids, true).unwrap(), "{ids:?}");
        }
    }

    #[test]
    fn bad_json_is_a_parse_error() {
        assert!(matches!(
            DecodeTable::from_json("{"),
            Err(TokenizerError::Parse(_))
        ));
        assert!(matches!(
            DecodeTable::from_json(r#"{"model":{"vocab":{"a":4294967295}}}"#),
            Err(TokenizerError::Parse(_))
        ));
    }
}
