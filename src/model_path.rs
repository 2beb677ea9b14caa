//! Where the model file is: `-m PATH` (or a model name), else `$AMANUENSIS_MODEL`, else the
//! default model in the cache that `scripts/setup-models.sh` fills.

use std::path::{Path, PathBuf};

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

/// Resolves the model file from the `-m` argument and the environment.
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ModelNotFound> {
    let (spec, origin) = match arg {
        Some(a) => (a.to_string(), "from -m"),
        None => match std::env::var(MODEL_ENV) {
            Ok(v) if !v.is_empty() => (v, "from $AMANUENSIS_MODEL"),
            _ => (DEFAULT_MODEL.to_string(), "the default model"),
        },
    };
    let path = Path::new(&spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let (path, name) = if looks_like_name(&spec) {
        (cached_model(&spec), spec.clone())
    } else {
        (path.to_path_buf(), DEFAULT_MODEL.to_string())
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelNotFound { path, origin, name })
    }
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
}
