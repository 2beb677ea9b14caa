//! CTranslate2 Whisper directory (`model.bin`, `config.json`, `tokenizer.json`, optional
//! `vocabulary.txt`) → the parts of an Amanuensis model file.
//!
//! Renames follow `../shared/docs/whisper.md`: fused self-attention rows `[Q; K; V]` and fused
//! cross-attention rows `[K; V]` are split, the key biases (stored as zeros) are checked to be
//! exactly zero and dropped, `gamma`/`beta` become `weight`/`bias`. Every variable must be used:
//! one the converter does not know is an error, never silently dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use amanuensis_model::config::{Dims, ModelConfig, MULTILINGUAL_MIN_VOCAB};
use amanuensis_model::names::{self, AttnKind, Proj, Stack};
use amanuensis_model::weights::Dtype;
use amanuensis_runtime::mapped_file::MappedFile;
use half::f16;

use crate::ct2::{self, Ct2Dtype, Ct2Model, Variable};
use crate::error::ConvertError;
use crate::tokens::{check_vocabulary, special_tokens, TokenTable};
use crate::writer::{ModelParts, OwnedTensor};

/// Reads a CTranslate2 Whisper directory into model parts.
pub fn read_ct2_dir(dir: &Path) -> Result<ModelParts, ConvertError> {
    let bin_path = dir.join("model.bin");
    let (dims, tensors) = ct2_tensors(&bin_path, map(&bin_path)?.bytes())?;

    let tok_path = dir.join("tokenizer.json");
    let tokenizer_json = read_string(&tok_path)?;
    let table = TokenTable::parse(&tok_path, &tokenizer_json)?;
    let (special, languages) = special_tokens(&tok_path, &table)?;
    let vocab_path = dir.join("vocabulary.txt");
    if vocab_path.exists() {
        check_vocabulary(
            &vocab_path,
            &read_string(&vocab_path)?,
            dims.n_vocab,
            &special,
        )?;
    }

    let config_path = dir.join("config.json");
    let cfg: serde_json::Value = parse_json(&config_path, &read_string(&config_path)?)?;
    let config = ModelConfig {
        dims,
        special,
        languages,
        multilingual: dims.n_vocab >= MULTILINGUAL_MIN_VOCAB,
        suppress_ids: json_field(&config_path, &cfg, "suppress_ids")?,
        suppress_ids_begin: json_field(&config_path, &cfg, "suppress_ids_begin")?,
        alignment_heads: json_field(&config_path, &cfg, "alignment_heads")?,
    };
    Ok(ModelParts {
        config,
        source: "ctranslate2".into(),
        tokenizer_json,
        tensors,
    })
}

/// The dims and renamed f16 tensors of a `model.bin` (`path` is for error messages).
pub fn ct2_tensors(path: &Path, bytes: &[u8]) -> Result<(Dims, Vec<OwnedTensor>), ConvertError> {
    let model = ct2::parse(bytes).map_err(|source| ConvertError::Ct2 {
        path: path.to_path_buf(),
        source,
    })?;
    let mut conv = Ct2Converter {
        path: path.to_path_buf(),
        model: &model,
        used: HashSet::new(),
        tensors: Vec::new(),
    };
    let dims = conv.dims()?;
    conv.check_architecture()?;
    conv.convert_tensors(&dims)?;
    conv.check_all_used()?;
    Ok((dims, conv.tensors))
}

/// Maps an input file read-only (no copy of multi-hundred-MB checkpoints).
pub(crate) fn map(path: &Path) -> Result<MappedFile, ConvertError> {
    MappedFile::open(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_string(path: &Path) -> Result<String, ConvertError> {
    std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value, ConvertError> {
    serde_json::from_str(text).map_err(|e| ConvertError::Json {
        path: path.to_path_buf(),
        key: String::new(),
        reason: e.to_string(),
    })
}

/// A required key of a JSON object, deserialised.
pub(crate) fn json_field<T: serde::de::DeserializeOwned>(
    path: &Path,
    root: &serde_json::Value,
    key: &str,
) -> Result<T, ConvertError> {
    let value = root.get(key).ok_or_else(|| ConvertError::Json {
        path: path.to_path_buf(),
        key: key.into(),
        reason: "missing".into(),
    })?;
    serde_json::from_value(value.clone()).map_err(|e| ConvertError::Json {
        path: path.to_path_buf(),
        key: key.into(),
        reason: e.to_string(),
    })
}

/// Little-endian f16 bytes of a float tensor: f16 copied, f32 rounded to nearest f16.
pub(crate) fn to_f16_bytes(
    path: &Path,
    name: &str,
    dtype: Dtype,
    data: &[u8],
) -> Result<Vec<u8>, ConvertError> {
    match dtype {
        Dtype::F16 => Ok(data.to_vec()),
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .flat_map(|c| {
                f16::from_f32(f32::from_le_bytes(c.try_into().expect("4 bytes"))).to_le_bytes()
            })
            .collect()),
        other => Err(ConvertError::VariableDtype {
            path: path.to_path_buf(),
            name: name.into(),
            dtype: format!("{other:?}"),
        }),
    }
}

/// Checks the rows `[start, end)` of a bias (f16 bytes) are exactly ±0.
pub(crate) fn check_zero(
    path: &Path,
    name: &str,
    f16_bytes: &[u8],
    start: usize,
    end: usize,
) -> Result<(), ConvertError> {
    for i in start..end {
        let v = f16::from_le_bytes([f16_bytes[2 * i], f16_bytes[2 * i + 1]]);
        if v.to_f32() != 0.0 {
            return Err(ConvertError::KeyBiasNotZero {
                path: path.to_path_buf(),
                name: name.into(),
                index: i,
                value: v.to_f32(),
            });
        }
    }
    Ok(())
}

struct Ct2Converter<'m, 'a> {
    path: PathBuf,
    model: &'m Ct2Model<'a>,
    used: HashSet<String>,
    tensors: Vec<OwnedTensor>,
}

impl<'m, 'a> Ct2Converter<'m, 'a> {
    fn var(&mut self, name: &str) -> Result<&'m Variable<'a>, ConvertError> {
        let model: &'m Ct2Model<'a> = self.model;
        let v = model
            .get(name)
            .ok_or_else(|| ConvertError::MissingVariable {
                path: self.path.clone(),
                name: name.into(),
            })?;
        self.used.insert(name.to_string());
        Ok(v)
    }

    fn shape_of(&mut self, name: &str, rank: usize) -> Result<Vec<usize>, ConvertError> {
        let v = self.var(name)?;
        if v.shape.len() != rank {
            return Err(ConvertError::VariableRank {
                path: self.path.clone(),
                name: name.into(),
                expected: rank,
                got: v.shape.clone(),
            });
        }
        Ok(v.shape.clone())
    }

    fn scalar(&mut self, name: &str) -> Result<i64, ConvertError> {
        let path = self.path.clone();
        let v = self.var(name)?;
        v.scalar_int().ok_or_else(|| ConvertError::VariableRank {
            path,
            name: name.into(),
            expected: 0,
            got: v.shape.clone(),
        })
    }

    /// f16 bytes of a float variable checked to have `shape`.
    fn float(&mut self, name: &str, shape: &[usize]) -> Result<Vec<u8>, ConvertError> {
        let path = self.path.clone();
        let v = self.var(name)?;
        if v.shape != shape {
            return Err(ConvertError::VariableShape {
                path,
                name: name.into(),
                expected: shape.to_vec(),
                got: v.shape.clone(),
            });
        }
        let dtype = match v.dtype {
            Ct2Dtype::F16 => Dtype::F16,
            Ct2Dtype::F32 => Dtype::F32,
            other => {
                return Err(ConvertError::VariableDtype {
                    path,
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        to_f16_bytes(&path, name, dtype, v.data)
    }

    fn emit(&mut self, name: String, shape: Vec<usize>, data: Vec<u8>) {
        self.tensors.push(OwnedTensor {
            name,
            dtype: Dtype::F16,
            shape,
            data,
        });
    }

    /// Number of `{stack}/layer_N/` blocks, N contiguous from 0.
    fn count_layers(&self, stack: &str) -> usize {
        let prefix = format!("{stack}/layer_");
        let mut seen = HashSet::new();
        for v in &self.model.variables {
            if let Some(rest) = v.name.strip_prefix(&prefix) {
                if let Some(n) = rest.split('/').next().and_then(|n| n.parse::<usize>().ok()) {
                    seen.insert(n);
                }
            }
        }
        // Missing layers below the count show up as missing variables later.
        seen.into_iter().max().map_or(0, |m| m + 1)
    }

    fn dims(&mut self) -> Result<Dims, ConvertError> {
        let conv1 = self.shape_of("encoder/conv1/weight", 3)?;
        let enc_pos = self.shape_of("encoder/position_encodings/encodings", 2)?;
        let emb = self.shape_of("decoder/embeddings/weight", 2)?;
        let dec_pos = self.shape_of("decoder/position_encodings/encodings", 2)?;
        let heads = |c: &mut Self, name: &str| -> Result<usize, ConvertError> {
            let h = c.scalar(name)?;
            usize::try_from(h)
                .ok()
                .filter(|&h| h > 0)
                .ok_or_else(|| ConvertError::Unsupported {
                    path: c.path.clone(),
                    name: name.into(),
                    value: h.to_string(),
                    reason: "head count must be positive".into(),
                })
        };
        let dims = Dims {
            n_mels: conv1[1],
            n_audio_ctx: enc_pos[0],
            n_audio_state: conv1[0],
            n_audio_head: heads(self, "encoder/num_heads")?,
            n_audio_layer: self.count_layers("encoder"),
            n_vocab: emb[0],
            n_text_ctx: dec_pos[0],
            n_text_state: emb[1],
            n_text_head: heads(self, "decoder/num_heads")?,
            n_text_layer: self.count_layers("decoder"),
        };
        dims.validate().map_err(|reason| ConvertError::Config {
            key: "dims".into(),
            reason,
        })?;
        Ok(dims)
    }

    /// The decoder flags must describe Whisper (pre-norm, exact GELU, unscaled embeddings).
    fn check_architecture(&mut self) -> Result<(), ConvertError> {
        let flags: [(&str, i64, &str); 5] = [
            ("decoder/activation", 3, "only GELU (3) is supported"),
            ("decoder/pre_norm", 1, "only pre-norm layers are supported"),
            (
                "decoder/scale_embeddings",
                0,
                "embeddings must not be scaled",
            ),
            ("decoder/alibi", 0, "ALiBi is not supported"),
            ("decoder/start_from_zero_embedding", 0, "not supported"),
        ];
        for (name, want, reason) in flags {
            if self.model.get(name).is_none() {
                continue;
            }
            let got = self.scalar(name)?;
            if got != want {
                return Err(ConvertError::Unsupported {
                    path: self.path.clone(),
                    name: name.into(),
                    value: got.to_string(),
                    reason: reason.into(),
                });
            }
        }
        // Generic Transformer defaults, not the word-timestamp heads (those are config.json's).
        for name in ["decoder/alignment_layer", "decoder/alignment_heads"] {
            if self.model.get(name).is_some() {
                self.scalar(name)?;
            }
        }
        Ok(())
    }

    fn linear(&mut self, from: &str, to: &str, out: usize, inp: usize) -> Result<(), ConvertError> {
        let w = self.float(&format!("{from}/weight"), &[out, inp])?;
        let b = self.float(&format!("{from}/bias"), &[out])?;
        self.emit(names::weight(to), vec![out, inp], w);
        self.emit(names::bias(to), vec![out], b);
        Ok(())
    }

    fn layer_norm(&mut self, from: &str, to: &str, d: usize) -> Result<(), ConvertError> {
        let g = self.float(&format!("{from}/gamma"), &[d])?;
        let b = self.float(&format!("{from}/beta"), &[d])?;
        self.emit(names::weight(to), vec![d], g);
        self.emit(names::bias(to), vec![d], b);
        Ok(())
    }

    /// Splits a fused `[n·d, d]` projection into the listed projections (row blocks in order);
    /// the key block's bias must be zero and is dropped.
    fn fused(
        &mut self,
        from: &str,
        stack: Stack,
        layer: usize,
        kind: AttnKind,
        projs: &[Proj],
        d: usize,
    ) -> Result<(), ConvertError> {
        let n = projs.len();
        let w_name = format!("{from}/weight");
        let b_name = format!("{from}/bias");
        let w = self.float(&w_name, &[n * d, d])?;
        let b = self.float(&b_name, &[n * d])?;
        for (i, &proj) in projs.iter().enumerate() {
            let module = names::attn_proj(stack, layer, kind, proj);
            let rows = 2 * d * d;
            self.emit(
                names::weight(&module),
                vec![d, d],
                w[i * rows..(i + 1) * rows].to_vec(),
            );
            if proj.has_bias() {
                self.emit(
                    names::bias(&module),
                    vec![d],
                    b[i * 2 * d..(i + 1) * 2 * d].to_vec(),
                );
            } else {
                check_zero(&self.path, &b_name, &b, i * d, (i + 1) * d)?;
            }
        }
        Ok(())
    }

    fn block(&mut self, stack: Stack, layer: usize, d: usize) -> Result<(), ConvertError> {
        let p = format!("{}/layer_{layer}", stack.prefix());
        let sa = AttnKind::SelfAttn;
        self.layer_norm(
            &format!("{p}/self_attention/layer_norm"),
            &names::attn_ln(stack, layer, sa),
            d,
        )?;
        self.fused(
            &format!("{p}/self_attention/linear_0"),
            stack,
            layer,
            sa,
            &[Proj::Query, Proj::Key, Proj::Value],
            d,
        )?;
        self.linear(
            &format!("{p}/self_attention/linear_1"),
            &names::attn_proj(stack, layer, sa, Proj::Out),
            d,
            d,
        )?;
        if stack == Stack::Decoder {
            let ca = AttnKind::Cross;
            self.layer_norm(
                &format!("{p}/attention/layer_norm"),
                &names::attn_ln(stack, layer, ca),
                d,
            )?;
            self.linear(
                &format!("{p}/attention/linear_0"),
                &names::attn_proj(stack, layer, ca, Proj::Query),
                d,
                d,
            )?;
            self.fused(
                &format!("{p}/attention/linear_1"),
                stack,
                layer,
                ca,
                &[Proj::Key, Proj::Value],
                d,
            )?;
            self.linear(
                &format!("{p}/attention/linear_2"),
                &names::attn_proj(stack, layer, ca, Proj::Out),
                d,
                d,
            )?;
        }
        self.layer_norm(
            &format!("{p}/ffn/layer_norm"),
            &names::mlp_ln(stack, layer),
            d,
        )?;
        self.linear(
            &format!("{p}/ffn/linear_0"),
            &names::mlp(stack, layer, false),
            4 * d,
            d,
        )?;
        self.linear(
            &format!("{p}/ffn/linear_1"),
            &names::mlp(stack, layer, true),
            d,
            4 * d,
        )?;
        Ok(())
    }

    fn convert_tensors(&mut self, dims: &Dims) -> Result<(), ConvertError> {
        let d = dims.n_audio_state;
        let w = self.float("encoder/conv1/weight", &[d, dims.n_mels, 3])?;
        self.emit(names::weight(names::CONV1), vec![d, dims.n_mels, 3], w);
        let b = self.float("encoder/conv1/bias", &[d])?;
        self.emit(names::bias(names::CONV1), vec![d], b);
        let w = self.float("encoder/conv2/weight", &[d, d, 3])?;
        self.emit(names::weight(names::CONV2), vec![d, d, 3], w);
        let b = self.float("encoder/conv2/bias", &[d])?;
        self.emit(names::bias(names::CONV2), vec![d], b);
        let pos = self.float(
            "encoder/position_encodings/encodings",
            &[dims.n_audio_ctx, d],
        )?;
        self.emit(
            names::ENCODER_POSITIONS.into(),
            vec![dims.n_audio_ctx, d],
            pos,
        );
        for layer in 0..dims.n_audio_layer {
            self.block(Stack::Encoder, layer, d)?;
        }
        self.layer_norm("encoder/layer_norm", names::ENCODER_LN_POST, d)?;

        let d = dims.n_text_state;
        let emb = self.float("decoder/embeddings/weight", &[dims.n_vocab, d])?;
        self.emit(names::TOKEN_EMBEDDING.into(), vec![dims.n_vocab, d], emb);
        let pos = self.float(
            "decoder/position_encodings/encodings",
            &[dims.n_text_ctx, d],
        )?;
        self.emit(
            names::DECODER_POSITIONS.into(),
            vec![dims.n_text_ctx, d],
            pos,
        );
        for layer in 0..dims.n_text_layer {
            self.block(Stack::Decoder, layer, d)?;
        }
        self.layer_norm("decoder/layer_norm", names::DECODER_LN, d)?;
        Ok(())
    }

    /// Every variable must have been used; the only alias allowed is the tied projection.
    fn check_all_used(&self) -> Result<(), ConvertError> {
        if let Some(v) = self
            .model
            .variables
            .iter()
            .find(|v| !self.used.contains(&v.name))
        {
            return Err(ConvertError::UnexpectedVariable {
                path: self.path.clone(),
                name: v.name.clone(),
            });
        }
        for (alias, target) in &self.model.aliases {
            if !(alias == "decoder/projection/weight" && target == "decoder/embeddings/weight") {
                return Err(ConvertError::UnexpectedVariable {
                    path: self.path.clone(),
                    name: format!("{alias} (alias of {target})"),
                });
            }
        }
        Ok(())
    }
}
