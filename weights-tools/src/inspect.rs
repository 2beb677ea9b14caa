//! `weights-tools inspect`: a human-readable description of a model file or a CTranslate2
//! `model.bin`.

use std::fmt::Write;
use std::path::Path;

use amanuensis_model::checksum::{has_checksums, Verification, NO_CHECKSUMS};
use amanuensis_model::config::keys;
use amanuensis_model::weights::WeightsFile;

use crate::ct2;
use crate::error::ConvertError;
use crate::from_ct2::map;

/// Describes `path`: an Amanuensis `.safetensors` file (format, dims, special tokens, list
/// sizes, metadata sizes, every tensor), or a CTranslate2 `model.bin` (header, variables,
/// aliases), chosen by the file's first bytes.
pub fn inspect(path: &Path) -> Result<String, ConvertError> {
    inspect_with(path, false)
}

/// [`inspect`], then with `verify` every checksum of a model file checked
/// ([`WeightsFile::verify`]): a mismatch is an error naming the tensor, and so is a file
/// without checksums (format_version 1: nothing to check), or a CTranslate2 file.
pub fn inspect_with(path: &Path, verify: bool) -> Result<String, ConvertError> {
    if verify {
        let mut s = inspect_model(path)?;
        let w = WeightsFile::open(path).map_err(ConvertError::Inspect)?;
        let t = std::time::Instant::now();
        match w.verify().map_err(ConvertError::Inspect)? {
            Verification::Verified { tensors, bytes } => {
                let _ = writeln!(
                    s,
                    "verify: OK: metadata and {tensors} tensors ({bytes} bytes) match their CRC-32 ({:.1} ms)",
                    t.elapsed().as_secs_f64() * 1e3
                );
                return Ok(s);
            }
            Verification::NoChecksums => {
                return Err(ConvertError::Unverifiable {
                    path: path.to_path_buf(),
                    reason: NO_CHECKSUMS.into(),
                })
            }
        }
    }
    let head = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut b = [0u8; 4];
        let n = f.read(&mut b).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        (n == 4).then_some(u32::from_le_bytes(b))
    };
    if head == Some(ct2::BINARY_VERSION) {
        return inspect_ct2(path);
    }
    inspect_model(path)
}

fn inspect_model(path: &Path) -> Result<String, ConvertError> {
    let w = WeightsFile::open(path)?;
    let c = w.config();
    let mut s = String::new();
    let _ = writeln!(s, "file: {}", path.display());
    let _ = writeln!(
        s,
        "format: amanuensis-whisper v{}, source {}",
        w.metadata()
            .get(keys::FORMAT_VERSION)
            .map_or("?", String::as_str),
        w.source()
    );
    let _ = writeln!(
        s,
        "checksums: {}",
        if has_checksums(w.metadata()) {
            "CRC-32 per tensor and of the metadata (check with --verify)"
        } else {
            NO_CHECKSUMS
        }
    );
    let _ = writeln!(s, "dims: {:?}", c.dims);
    let _ = writeln!(s, "special tokens: {:?}", c.special);
    let _ = writeln!(
        s,
        "multilingual: {}; languages: {} ({}..); suppress_ids: {}; suppress_ids_begin: {:?}; alignment_heads: {:?}",
        c.multilingual,
        c.languages.len(),
        c.languages.first().map(|l| format!("{} {}", l.0, l.1)).unwrap_or_default(),
        c.suppress_ids.len(),
        c.suppress_ids_begin,
        c.alignment_heads
    );
    let mut keys: Vec<_> = w.metadata().iter().collect();
    keys.sort();
    let _ = writeln!(s, "metadata:");
    for (k, v) in keys {
        let _ = writeln!(s, "  {k}: {} bytes", v.len());
    }
    let names: Vec<&str> = w.tensor_names().collect();
    let mut total = 0usize;
    let _ = writeln!(s, "tensors: {}", names.len());
    for name in names {
        let (dtype, shape) = w.tensor_info(name).expect("listed tensor");
        // The tokenizer's byte tensors (format_version 3) are not parameters.
        if !name.starts_with("tokenizer.") {
            total += shape.iter().product::<usize>();
        }
        let _ = writeln!(s, "  {name}  {dtype:?}  {shape:?}");
    }
    let _ = writeln!(s, "parameters: {total}");
    Ok(s)
}

fn inspect_ct2(path: &Path) -> Result<String, ConvertError> {
    let file = map(path)?;
    let bytes = file.bytes();
    let m = ct2::parse(bytes).map_err(|source| ConvertError::Ct2 {
        path: path.to_path_buf(),
        source,
    })?;
    let mut s = String::new();
    let _ = writeln!(s, "file: {} ({} bytes)", path.display(), bytes.len());
    let _ = writeln!(
        s,
        "ctranslate2 model.bin: binary version {}, spec {}, revision {}, {} variables",
        m.binary_version,
        m.spec,
        m.revision,
        m.variables.len()
    );
    for v in &m.variables {
        match v.scalar_int() {
            Some(x) => {
                let _ = writeln!(s, "  {}  {:?}  {:?} = {x}", v.name, v.dtype, v.shape);
            }
            None => {
                let _ = writeln!(s, "  {}  {:?}  {:?}", v.name, v.dtype, v.shape);
            }
        }
    }
    for (a, t) in &m.aliases {
        let _ = writeln!(s, "alias: {a} -> {t}");
    }
    Ok(s)
}
