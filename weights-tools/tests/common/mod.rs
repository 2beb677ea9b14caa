//! Shared helpers for the weights-tools integration tests: the model cache, temporary
//! directories, and a small synthetic CTranslate2 Whisper directory built in code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;
use weights_tools::ct2;

/// `$AMANUENSIS_CACHE`, default `${XDG_CACHE_HOME:-~/.cache}/amanuensis` (as setup-models.sh).
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("AMANUENSIS_CACHE") {
        return PathBuf::from(c);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("amanuensis")
}

/// The CTranslate2 directory of `name` in the cache. Fails (never skips) when it is absent.
pub fn ct2_dir(name: &str) -> PathBuf {
    let dir = cache_dir().join("ct2").join(name);
    assert!(
        dir.join("model.bin").is_file(),
        "{} is missing: run `scripts/setup-models.sh {name}` (set AMANUENSIS_CACHE to use another cache)",
        dir.join("model.bin").display()
    );
    dir
}

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "amanuensis-wt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sizes of the synthetic model: d 4, 2 heads, 1 + 1 layers, 2 mels, 1521 tokens.
pub const D: usize = 4;
pub const N_MELS: usize = 2;
pub const N_VOCAB: usize = 1521;
pub const EOT: u32 = 10;
pub const NO_TIMESTAMPS: u32 = 19;

/// A CTranslate2 variable: name, shape, dtype id, bytes.
pub type Var = (String, Vec<u32>, u8, Vec<u8>);

/// Distinct f16 values for variable number `v`, element `i` (exact in f16).
pub fn value(v: usize, i: usize) -> f32 {
    ((v * 13 + i * 7) % 251) as f32 / 32.0 - 4.0
}

fn f16_bytes(v: usize, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| f16::from_f32(value(v, i)).to_le_bytes())
        .collect()
}

/// A synthetic CTranslate2 Whisper directory, editable before it is written.
pub struct SynthCt2 {
    pub vars: Vec<Var>,
    pub aliases: Vec<(String, String)>,
    pub config_json: String,
    pub tokenizer_json: String,
    pub vocabulary: Option<String>,
}

impl SynthCt2 {
    pub fn new() -> SynthCt2 {
        let d = D as u32;
        let mut shapes: Vec<(String, Vec<u32>)> = vec![
            ("encoder/conv1/weight".into(), vec![d, N_MELS as u32, 3]),
            ("encoder/conv1/bias".into(), vec![d]),
            ("encoder/conv2/weight".into(), vec![d, d, 3]),
            ("encoder/conv2/bias".into(), vec![d]),
            ("encoder/position_encodings/encodings".into(), vec![3, d]),
            ("encoder/layer_norm/gamma".into(), vec![d]),
            ("encoder/layer_norm/beta".into(), vec![d]),
            ("decoder/embeddings/weight".into(), vec![N_VOCAB as u32, d]),
            ("decoder/position_encodings/encodings".into(), vec![3, d]),
            ("decoder/layer_norm/gamma".into(), vec![d]),
            ("decoder/layer_norm/beta".into(), vec![d]),
        ];
        for stack in ["encoder", "decoder"] {
            let p = format!("{stack}/layer_0");
            let mut add = |n: String, s: Vec<u32>| shapes.push((n, s));
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                add(format!("{p}/{ln}/gamma"), vec![d]);
                add(format!("{p}/{ln}/beta"), vec![d]);
            }
            add(
                format!("{p}/self_attention/linear_0/weight"),
                vec![3 * d, d],
            );
            add(format!("{p}/self_attention/linear_0/bias"), vec![3 * d]);
            add(format!("{p}/self_attention/linear_1/weight"), vec![d, d]);
            add(format!("{p}/self_attention/linear_1/bias"), vec![d]);
            add(format!("{p}/ffn/linear_0/weight"), vec![4 * d, d]);
            add(format!("{p}/ffn/linear_0/bias"), vec![4 * d]);
            add(format!("{p}/ffn/linear_1/weight"), vec![d, 4 * d]);
            add(format!("{p}/ffn/linear_1/bias"), vec![d]);
            if stack == "decoder" {
                add(format!("{p}/attention/layer_norm/gamma"), vec![d]);
                add(format!("{p}/attention/layer_norm/beta"), vec![d]);
                add(format!("{p}/attention/linear_0/weight"), vec![d, d]);
                add(format!("{p}/attention/linear_0/bias"), vec![d]);
                add(format!("{p}/attention/linear_1/weight"), vec![2 * d, d]);
                add(format!("{p}/attention/linear_1/bias"), vec![2 * d]);
                add(format!("{p}/attention/linear_2/weight"), vec![d, d]);
                add(format!("{p}/attention/linear_2/bias"), vec![d]);
            }
        }
        let mut vars: Vec<Var> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n: usize = shape.iter().map(|&x| x as usize).product();
                let mut data = f16_bytes(i, n);
                // Key biases are zero: rows [d, 2d) of self-attention, [0, d) of cross K/V.
                let zero = if name.ends_with("self_attention/linear_0/bias") {
                    Some(D..2 * D)
                } else if name.ends_with("attention/linear_1/bias") && name.contains("/attention/")
                {
                    Some(0..D)
                } else {
                    None
                };
                if let Some(r) = zero {
                    data[2 * r.start..2 * r.end].fill(0);
                }
                (name, shape, 4u8, data)
            })
            .collect();
        let scalars: [(&str, u8, i64); 9] = [
            ("encoder/num_heads", 2, 2),
            ("decoder/num_heads", 2, 2),
            ("decoder/activation", 1, 3),
            ("decoder/pre_norm", 1, 1),
            ("decoder/scale_embeddings", 1, 0),
            ("decoder/alibi", 1, 0),
            ("decoder/start_from_zero_embedding", 1, 0),
            ("decoder/alignment_layer", 2, -1),
            ("decoder/alignment_heads", 2, 1),
        ];
        for (name, dtype, v) in scalars {
            let data = if dtype == 1 {
                vec![v as i8 as u8]
            } else {
                (v as i16).to_le_bytes().to_vec()
            };
            vars.push((name.into(), vec![], dtype, data));
        }
        vars.sort_by(|a, b| a.0.cmp(&b.0));

        let specials: [(u32, &str); 10] = [
            (EOT, "<|endoftext|>"),
            (11, "<|startoftranscript|>"),
            (12, "<|en|>"),
            (13, "<|de|>"),
            (14, "<|translate|>"),
            (15, "<|transcribe|>"),
            (16, "<|startoflm|>"),
            (17, "<|startofprev|>"),
            (18, "<|nocaptions|>"),
            (NO_TIMESTAMPS, "<|notimestamps|>"),
        ];
        let added: Vec<serde_json::Value> = specials
            .iter()
            .map(|(id, c)| serde_json::json!({"id": id, "content": c, "special": true}))
            .collect();
        let vocab: serde_json::Map<String, serde_json::Value> = (0..EOT)
            .map(|i| (format!("t{i}"), serde_json::json!(i)))
            .collect();
        let tokenizer_json = serde_json::to_string_pretty(&serde_json::json!({
            "version": "1.0",
            "added_tokens": added,
            "model": {"type": "BPE", "vocab": vocab},
        }))
        .unwrap();
        let mut lines: Vec<String> = (0..N_VOCAB).map(|i| format!("t{i}")).collect();
        for (id, c) in specials {
            lines[id as usize] = c.to_string();
        }
        for k in 0..1501 {
            lines[NO_TIMESTAMPS as usize + 1 + k] = format!("<|{:.2}|>", k as f64 * 0.02);
        }
        lines[3] = String::new(); // an empty token, as base's line 50256
        let config_json = serde_json::json!({
            "alignment_heads": [[0, 1]],
            "lang_ids": [12, 13],
            "suppress_ids": [1, 2, 14, 15],
            "suppress_ids_begin": [5, EOT],
        })
        .to_string();
        SynthCt2 {
            vars,
            aliases: vec![(
                "decoder/projection/weight".into(),
                "decoder/embeddings/weight".into(),
            )],
            config_json,
            tokenizer_json,
            vocabulary: Some(lines.join("\n") + "\n"),
        }
    }

    pub fn var_mut(&mut self, name: &str) -> &mut Var {
        self.vars
            .iter_mut()
            .find(|v| v.0 == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    }

    pub fn var(&self, name: &str) -> &Var {
        self.vars.iter().find(|v| v.0 == name).unwrap()
    }

    pub fn model_bin(&self) -> Vec<u8> {
        let vars: Vec<(&str, &[u32], u8, &[u8])> = self
            .vars
            .iter()
            .map(|(n, s, t, d)| (n.as_str(), s.as_slice(), *t, d.as_slice()))
            .collect();
        let aliases: Vec<(&str, &str)> = self
            .aliases
            .iter()
            .map(|(a, t)| (a.as_str(), t.as_str()))
            .collect();
        ct2::build("WhisperSpec", &vars, &aliases)
    }

    /// Writes the directory into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("model.bin"), self.model_bin()).unwrap();
        std::fs::write(dir.join("config.json"), &self.config_json).unwrap();
        std::fs::write(dir.join("tokenizer.json"), &self.tokenizer_json).unwrap();
        if let Some(v) = &self.vocabulary {
            std::fs::write(dir.join("vocabulary.txt"), v).unwrap();
        }
    }
}

/// f16 values of a variable's bytes.
pub fn f16_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// A model file's tensors (name, dtype, shape, data) and metadata, for rewriting in tests.
pub struct ModelFileParts {
    pub tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    pub metadata: std::collections::HashMap<String, String>,
}

impl ModelFileParts {
    /// Splits a safetensors file.
    pub fn read(bytes: &[u8]) -> ModelFileParts {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    view.dtype(),
                    view.shape().to_vec(),
                    view.data().to_vec(),
                )
            })
            .collect();
        ModelFileParts {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        }
    }

    /// The data of tensor `name`.
    pub fn data_mut(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .3
    }

    /// The file of these parts, with the checksums recomputed when the metadata has them (so
    /// only what the test changed is wrong with it).
    pub fn write(mut self) -> Vec<u8> {
        use amanuensis_model::checksum;
        use amanuensis_model::config::keys;
        for t in &mut self.tensors {
            let n: usize = t.2.iter().product();
            if n * t.1.bitsize() / 8 != t.3.len() {
                // A changed length: the shape follows (1-D tensors only).
                assert_eq!(t.2.len(), 1, "{}", t.0);
                t.2 = vec![t.3.len() * 8 / t.1.bitsize()];
            }
        }
        if self.metadata.contains_key(keys::TENSOR_CRC32) {
            let table = checksum::tensor_table_json(
                self.tensors
                    .iter()
                    .map(|t| (t.0.as_str(), checksum::crc32(&t.3))),
            );
            self.metadata.insert(keys::TENSOR_CRC32.into(), table);
            let m = checksum::metadata_crc32(&self.metadata).to_string();
            self.metadata.insert(keys::METADATA_CRC32.into(), m);
        }
        let views = self.tensors.iter().map(|t| {
            (
                t.0.clone(),
                safetensors::tensor::TensorView::new(t.1, t.2.clone(), &t.3).unwrap(),
            )
        });
        safetensors::serialize(views, Some(self.metadata)).unwrap()
    }

    /// These parts as an older format version (`"2"`, or `"1"` without checksums): the
    /// tokenizer JSON moved back into the metadata, the decoding table dropped.
    pub fn downgraded(mut self, version: &str) -> ModelFileParts {
        use amanuensis_model::config::keys;
        use amanuensis_model::names;
        let json = self.data_mut(names::TOKENIZER_JSON).clone();
        self.tensors.retain(|t| !t.0.starts_with("tokenizer."));
        self.metadata.insert(
            keys::TOKENIZER_JSON.into(),
            String::from_utf8(json).unwrap(),
        );
        self.metadata
            .insert(keys::FORMAT_VERSION.into(), version.into());
        if version == "1" {
            self.metadata.remove(keys::TENSOR_CRC32);
            self.metadata.remove(keys::METADATA_CRC32);
        }
        self
    }
}
