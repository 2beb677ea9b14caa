//! Where the model file is: `-m PATH` (or a model name), else `$AMANUENSIS_MODEL`, else the
//! default model in the cache that `scripts/setup-models.sh` fills.
//!
//! Two resolvers:
//! - [`resolve_model`]: a name is the file of that name (`tiny.en` → `tiny.en.safetensors`,
//!   `tiny.en.int8` → `tiny.en.int8.safetensors`); what tests and examples use to name an exact
//!   file.
//! - [`resolve_model_for`]: the CLI's rule, INT8 by default. A plain model name (`tiny.en`,
//!   `base`) names its INT8 file (`tiny.en.int8.safetensors`) unless the precision is
//!   [`Precision::F32`], the exact reference, which needs the f16 file (`tiny.en.safetensors`).
//!   `NAME.int8` and `NAME.f16` name one file whatever the precision; a path is a path.

use std::path::{Path, PathBuf};

use crate::engine::Precision;

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "tiny.en";

/// The environment variable naming a model file.
pub const MODEL_ENV: &str = "AMANUENSIS_MODEL";

/// The environment variable overriding the cache folder.
pub const CACHE_ENV: &str = "AMANUENSIS_CACHE";

/// The model names `scripts/setup-models.sh` can fetch and convert.
pub const FETCHABLE: &[&str] = &["tiny.en", "base", "tiny.en.int8", "base.int8"];

/// No model file where one was looked for.
#[derive(Debug)]
pub struct ModelNotFound {
    /// Where the file was looked for.
    pub path: PathBuf,
    /// Why there (`-m`, `$AMANUENSIS_MODEL`, the default).
    pub origin: &'static str,
    /// The model's name, for the setup command.
    pub name: String,
    /// Why this file (e.g. `--precision f32` needs the f16 file), if a rule chose it.
    pub note: Option<String>,
}

impl std::error::Error for ModelNotFound {}

impl std::fmt::Display for ModelNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no model file at {} ({}).",
            self.path.display(),
            self.origin
        )?;
        if let Some(note) = &self.note {
            write!(f, "\n  {note}")?;
        }
        if FETCHABLE.contains(&self.name.as_str()) {
            write!(
                f,
                "\n  To fetch and convert it: scripts/setup-models.sh {}",
                self.name
            )?;
        } else {
            write!(f, "\n  {:?} is not a model name we know.", self.name)?;
        }
        let cached = cached_models();
        write!(
            f,
            "\n  Cached models ({}): {}",
            cache_dir().join("models").display(),
            if cached.is_empty() {
                "none".to_string()
            } else {
                cached.join(", ")
            }
        )?;
        write!(
            f,
            "\n  scripts/setup-models.sh can fetch: {}\n  \
             Or pass a converted file with -m PATH (see `amanuensis convert`).",
            FETCHABLE.join(", ")
        )
    }
}

/// The names of the converted models in the cache, sorted.
pub fn cached_models() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache_dir().join("models"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Whisper models only (the VAD file lives in the same folder).
            name.strip_suffix(".safetensors")
                .filter(|n| !n.contains("vad"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// `${AMANUENSIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/amanuensis}`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("amanuensis")
}

/// The cached converted file of model `name` (e.g. `tiny.en`, `base`).
pub fn cached_model(name: &str) -> PathBuf {
    cache_dir()
        .join("models")
        .join(format!("{name}.safetensors"))
}

fn looks_like_name(s: &str) -> bool {
    !s.contains('/') && !s.ends_with(".safetensors")
}

/// The `-m` argument, else `$AMANUENSIS_MODEL`, else [`DEFAULT_MODEL`], with where it came from.
fn model_spec(arg: Option<&str>) -> (String, &'static str) {
    match arg {
        Some(a) => (a.to_string(), "from -m"),
        None => match std::env::var(MODEL_ENV) {
            Ok(v) if !v.is_empty() => (v, "from $AMANUENSIS_MODEL"),
            _ => (DEFAULT_MODEL.to_string(), "the default model"),
        },
    }
}

/// Resolves the model file from the `-m` argument and the environment; a name is the cached
/// file of exactly that name (`NAME.f16` is `NAME`'s f16 file). See [`resolve_model_for`] for
/// the CLI's INT8-by-default rule.
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ModelNotFound> {
    let (spec, origin) = model_spec(arg);
    let path = Path::new(&spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let (path, name) = if looks_like_name(&spec) {
        let stem = spec.strip_suffix(".f16").unwrap_or(&spec).to_string();
        (cached_model(&stem), stem)
    } else {
        (path.to_path_buf(), DEFAULT_MODEL.to_string())
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelNotFound {
            path,
            origin,
            name,
            note: None,
        })
    }
}

/// Which cached file a model name stands for under `precision`: the file stem (the name
/// `scripts/setup-models.sh` takes) and why, when a rule chose it.
///
/// `NAME.int8` → `NAME.int8`, `NAME.f16` → `NAME` (explicit: any precision); a plain `NAME`
/// → `NAME` for [`Precision::F32`] (the exact reference needs the f16 file), else
/// `NAME.int8`.
pub fn file_stem_for(name: &str, precision: Precision) -> (String, Option<String>) {
    if name.ends_with(".int8") {
        return (name.to_string(), None);
    }
    if let Some(stem) = name.strip_suffix(".f16") {
        return (stem.to_string(), None);
    }
    match precision {
        Precision::F32 => (
            name.to_string(),
            Some(format!(
                "--precision f32 (the exact reference) needs the f16 file of {name}."
            )),
        ),
        Precision::Auto | Precision::Int8 => (
            format!("{name}.int8"),
            Some(format!(
                "{name} runs INT8 by default: its INT8 file is needed (for the f16 file, the \
                 exact reference: --precision f32, or -m {name}.f16)."
            )),
        ),
    }
}

/// The CLI's rule: resolves the model file from the `-m` argument and the environment, a
/// plain model name naming its INT8 file unless `precision` is [`Precision::F32`] (see
/// [`file_stem_for`]). A path that exists is used as it is. A plain name that is not one
/// `scripts/setup-models.sh` fetches, whose INT8 file is absent but whose file of that exact
/// name is cached (a model you converted yourself), resolves to that file.
pub fn resolve_model_for(
    arg: Option<&str>,
    precision: Precision,
) -> Result<PathBuf, ModelNotFound> {
    let (spec, origin) = model_spec(arg);
    let path = Path::new(&spec);
    if path.is_file() || !looks_like_name(&spec) {
        return resolve_model(Some(&spec)).map_err(|e| ModelNotFound { origin, ..e });
    }
    let (stem, note) = file_stem_for(&spec, precision);
    let path = cached_model(&stem);
    if path.is_file() {
        return Ok(path);
    }
    let verbatim = cached_model(&spec);
    if stem != spec && !FETCHABLE.contains(&spec.as_str()) && verbatim.is_file() {
        return Ok(verbatim);
    }
    Err(ModelNotFound {
        path,
        origin,
        name: stem,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_names_the_setup_command() {
        let err = resolve_model(Some("/nonexistent/dir/x.safetensors")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/dir/x.safetensors"), "{msg}");
        assert!(msg.contains("scripts/setup-models.sh"), "{msg}");
        let err = resolve_model(Some("no-such-model-name")).unwrap_err();
        assert!(err.path.ends_with("models/no-such-model-name.safetensors"));
        let msg = err.to_string();
        assert!(!msg.contains("setup-models.sh no-such-model-name"), "{msg}");
        assert!(msg.contains("not a model name we know"), "{msg}");
        assert!(msg.contains("can fetch: tiny.en, base"), "{msg}");
        assert!(msg.contains("Cached models"), "{msg}");
    }

    #[test]
    fn plain_names_mean_int8_unless_f32() {
        let stem = |name, p| file_stem_for(name, p).0;
        for p in [Precision::Auto, Precision::Int8] {
            assert_eq!(stem("tiny.en", p), "tiny.en.int8");
            assert_eq!(stem("base", p), "base.int8");
        }
        assert_eq!(stem("tiny.en", Precision::F32), "tiny.en");
        // Explicit suffixes name one file whatever the precision.
        for p in [Precision::Auto, Precision::Int8, Precision::F32] {
            assert_eq!(stem("tiny.en.int8", p), "tiny.en.int8");
            assert_eq!(stem("tiny.en.f16", p), "tiny.en");
            assert_eq!(stem("base.f16", p), "base");
        }
        let (_, note) = file_stem_for("tiny.en", Precision::F32);
        assert!(note.unwrap().contains("--precision f32"));
        let (_, note) = file_stem_for("base", Precision::Auto);
        assert!(note.unwrap().contains("-m base.f16"));
    }

    #[test]
    fn paths_are_paths_whatever_the_precision() {
        let err =
            resolve_model_for(Some("/nonexistent/dir/x.safetensors"), Precision::F32).unwrap_err();
        assert_eq!(err.path, Path::new("/nonexistent/dir/x.safetensors"));
        assert_eq!(err.origin, "from -m");
        let file = std::env::temp_dir().join(format!(
            "amanuensis-model-path-{}.safetensors",
            std::process::id()
        ));
        std::fs::write(&file, b"x").unwrap();
        for p in [Precision::Auto, Precision::F32] {
            assert_eq!(
                resolve_model_for(Some(file.to_str().unwrap()), p).unwrap(),
                file
            );
        }
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_missing_name_under_a_precision_names_the_file_and_the_command() {
        let err = resolve_model_for(Some("no-such-model"), Precision::F32).unwrap_err();
        assert!(err.path.ends_with("models/no-such-model.safetensors"));
        let err = resolve_model_for(Some("no-such-model"), Precision::Auto).unwrap_err();
        assert!(err.path.ends_with("models/no-such-model.int8.safetensors"));
        assert_eq!(err.name, "no-such-model.int8");
    }
}
