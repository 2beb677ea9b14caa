//! Hugging Face `openai/whisper-*` directory (`model.safetensors`, `config.json`,
//! `tokenizer.json`, optional `generation_config.json`) → the parts of an Amanuensis model file.
//!
//! Module names are transformers' `WhisperForConditionalGeneration` (`model.encoder.layers.N.
//! self_attn.{q,k,v,out}_proj`, `fc1`, `fc2`, `*_layer_norm`, `encoder_attn`, ...; the `model.`
//! prefix is optional, as a bare `WhisperModel` saves without it). Tensors may be f32 or f16;
//! they are written as f16 (round to nearest even; exact for checkpoints published in f16).
//! The decoding lists are taken as CTranslate2's converter takes them: from
//! `generation_config.json` (`suppress_tokens`, `begin_suppress_tokens`, `alignment_heads`) when
//! present, else from `config.json`; missing alignment heads default to every head of the last
//! half of the decoder layers. `proj_out.weight`, if present, must equal the token embedding
//! (tied). Every tensor must be used.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use amanuensis_model::config::{Dims, ModelConfig, MULTILINGUAL_MIN_VOCAB};
use amanuensis_model::names::{self, AttnKind, Proj, Stack};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::error::ConvertError;
use crate::from_ct2::{json_field, map, parse_json, read_string, to_f16_bytes};
use crate::tokens::{special_tokens, TokenTable};
use crate::writer::{ModelParts, OwnedTensor};

/// Reads a Hugging Face Whisper directory into model parts.
pub fn read_hf_dir(dir: &Path) -> Result<ModelParts, ConvertError> {
    let config_path = dir.join("config.json");
    let cfg = parse_json(&config_path, &read_string(&config_path)?)?;
    let dims = hf_dims(&config_path, &cfg)?;

    let st_path = dir.join("model.safetensors");
    let tensors = hf_tensors(&st_path, map(&st_path)?.bytes(), &dims)?;

    let tok_path = dir.join("tokenizer.json");
    let tokenizer_json = read_string(&tok_path)?;
    let table = TokenTable::parse(&tok_path, &tokenizer_json)?;
    let (special, languages) = special_tokens(&tok_path, &table)?;

    let gen_path = dir.join("generation_config.json");
    let (lists_path, lists) = if gen_path.exists() {
        let gen = parse_json(&gen_path, &read_string(&gen_path)?)?;
        (gen_path, gen)
    } else {
        (config_path.clone(), cfg.clone())
    };
    let alignment_heads = match lists.get("alignment_heads") {
        Some(v) if !v.is_null() => json_field(&lists_path, &lists, "alignment_heads")?,
        _ => (dims.n_text_layer / 2..dims.n_text_layer)
            .flat_map(|l| (0..dims.n_text_head).map(move |h| (l, h)))
            .collect(),
    };
    let config = ModelConfig {
        dims,
        special,
        languages,
        multilingual: dims.n_vocab >= MULTILINGUAL_MIN_VOCAB,
        suppress_ids: json_field(&lists_path, &lists, "suppress_tokens")?,
        suppress_ids_begin: json_field(&lists_path, &lists, "begin_suppress_tokens")?,
        alignment_heads,
    };
    Ok(ModelParts {
        config,
        source: "huggingface".into(),
        tokenizer_json,
        tensors,
    })
}

/// Dims from an HF `config.json`, with the architecture checks (GELU, unscaled embeddings,
/// FFN width 4·d).
fn hf_dims(path: &Path, cfg: &Value) -> Result<Dims, ConvertError> {
    let get = |key: &str| json_field::<usize>(path, cfg, key);
    let d = get("d_model")?;
    let dims = Dims {
        n_mels: get("num_mel_bins")?,
        n_audio_ctx: get("max_source_positions")?,
        n_audio_state: d,
        n_audio_head: get("encoder_attention_heads")?,
        n_audio_layer: get("encoder_layers")?,
        n_vocab: get("vocab_size")?,
        n_text_ctx: get("max_target_positions")?,
        n_text_state: d,
        n_text_head: get("decoder_attention_heads")?,
        n_text_layer: get("decoder_layers")?,
    };
    dims.validate().map_err(|reason| ConvertError::Config {
        key: "dims".into(),
        reason,
    })?;
    let unsupported = |key: &str, value: String, reason: &str| ConvertError::Unsupported {
        path: path.to_path_buf(),
        name: key.into(),
        value,
        reason: reason.into(),
    };
    for key in ["encoder_ffn_dim", "decoder_ffn_dim"] {
        let ffn = get(key)?;
        if ffn != 4 * d {
            return Err(unsupported(
                key,
                ffn.to_string(),
                "the FFN width must be 4 * d_model",
            ));
        }
    }
    if let Some(act) = cfg.get("activation_function") {
        if act != "gelu" {
            return Err(unsupported(
                "activation_function",
                act.to_string(),
                "only exact GELU is supported",
            ));
        }
    }
    if let Some(scale) = cfg.get("scale_embedding") {
        if scale != &Value::Bool(false) {
            return Err(unsupported(
                "scale_embedding",
                scale.to_string(),
                "embeddings must not be scaled",
            ));
        }
    }
    Ok(dims)
}

/// Renamed f16 tensors of an HF `model.safetensors` (`path` is for error messages).
pub fn hf_tensors(
    path: &Path,
    bytes: &[u8],
    dims: &Dims,
) -> Result<Vec<OwnedTensor>, ConvertError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ConvertError::Safetensors {
        path: path.to_path_buf(),
        reason: format!("{e:?}"),
    })?;
    let prefix = if st.names().contains(&"model.encoder.conv1.weight") {
        "model."
    } else {
        ""
    };
    let mut conv = HfConverter {
        path: path.to_path_buf(),
        st: &st,
        prefix,
        used: HashSet::new(),
        tensors: Vec::new(),
    };
    conv.convert(dims)?;
    // The tied output projection, if stored, must be the embedding.
    if st.names().contains(&"proj_out.weight") {
        let proj = conv.float("proj_out.weight", &[dims.n_vocab, dims.n_text_state], true)?;
        let emb = conv
            .tensors
            .iter()
            .find(|t| t.name == names::TOKEN_EMBEDDING)
            .expect("converted above");
        if proj != emb.data {
            return Err(ConvertError::Unsupported {
                path: path.to_path_buf(),
                name: "proj_out.weight".into(),
                value: "differs from the token embedding".into(),
                reason: "the output projection must be tied".into(),
            });
        }
    }
    let mut all: Vec<&str> = st.names();
    all.sort();
    if let Some(name) = all.iter().find(|n| !conv.used.contains(**n)) {
        return Err(ConvertError::UnexpectedVariable {
            path: path.to_path_buf(),
            name: name.to_string(),
        });
    }
    Ok(conv.tensors)
}

struct HfConverter<'s, 'd> {
    path: PathBuf,
    st: &'s SafeTensors<'d>,
    prefix: &'static str,
    used: HashSet<String>,
    tensors: Vec<OwnedTensor>,
}

impl HfConverter<'_, '_> {
    /// f16 bytes of tensor `name` (with the `model.` prefix unless `absolute`), checked to have
    /// `shape`.
    fn float(
        &mut self,
        name: &str,
        shape: &[usize],
        absolute: bool,
    ) -> Result<Vec<u8>, ConvertError> {
        let full = if absolute {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        };
        let view = self
            .st
            .tensor(&full)
            .map_err(|_| ConvertError::MissingVariable {
                path: self.path.clone(),
                name: full.clone(),
            })?;
        if view.shape() != shape {
            return Err(ConvertError::VariableShape {
                path: self.path.clone(),
                name: full,
                expected: shape.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let data = to_f16_bytes(&self.path, &full, view.dtype(), view.data())?;
        self.used.insert(full);
        Ok(data)
    }

    /// Copies `from` (HF name) to `to` (our name).
    fn copy(&mut self, from: &str, to: String, shape: Vec<usize>) -> Result<(), ConvertError> {
        let data = self.float(from, &shape, false)?;
        self.tensors.push(OwnedTensor {
            name: to,
            dtype: amanuensis_model::weights::Dtype::F16,
            shape,
            data,
        });
        Ok(())
    }

    /// `from.weight` `[out, inp]` and `from.bias` `[out]` (unless `bias` is false).
    fn linear(
        &mut self,
        from: &str,
        to: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<(), ConvertError> {
        self.copy(&format!("{from}.weight"), names::weight(to), vec![out, inp])?;
        if bias {
            self.copy(&format!("{from}.bias"), names::bias(to), vec![out])?;
        }
        Ok(())
    }

    fn block(&mut self, stack: Stack, layer: usize, d: usize) -> Result<(), ConvertError> {
        let p = format!("{}.layers.{layer}", stack.prefix());
        let mut attns = vec![(AttnKind::SelfAttn, "self_attn")];
        if stack == Stack::Decoder {
            attns.push((AttnKind::Cross, "encoder_attn"));
        }
        for (kind, hf) in attns {
            self.layer_norm(
                &format!("{p}.{hf}_layer_norm"),
                &names::attn_ln(stack, layer, kind),
                d,
            )?;
            for (proj, hp) in [
                (Proj::Query, "q_proj"),
                (Proj::Key, "k_proj"),
                (Proj::Value, "v_proj"),
                (Proj::Out, "out_proj"),
            ] {
                let to = names::attn_proj(stack, layer, kind, proj);
                self.linear(&format!("{p}.{hf}.{hp}"), &to, d, d, proj.has_bias())?;
            }
        }
        self.layer_norm(
            &format!("{p}.final_layer_norm"),
            &names::mlp_ln(stack, layer),
            d,
        )?;
        self.linear(
            &format!("{p}.fc1"),
            &names::mlp(stack, layer, false),
            4 * d,
            d,
            true,
        )?;
        self.linear(
            &format!("{p}.fc2"),
            &names::mlp(stack, layer, true),
            d,
            4 * d,
            true,
        )?;
        Ok(())
    }

    fn layer_norm(&mut self, from: &str, to: &str, d: usize) -> Result<(), ConvertError> {
        self.copy(&format!("{from}.weight"), names::weight(to), vec![d])?;
        self.copy(&format!("{from}.bias"), names::bias(to), vec![d])
    }

    fn convert(&mut self, dims: &Dims) -> Result<(), ConvertError> {
        let d = dims.n_audio_state;
        self.copy(
            "encoder.conv1.weight",
            names::weight(names::CONV1),
            vec![d, dims.n_mels, 3],
        )?;
        self.copy("encoder.conv1.bias", names::bias(names::CONV1), vec![d])?;
        self.copy(
            "encoder.conv2.weight",
            names::weight(names::CONV2),
            vec![d, d, 3],
        )?;
        self.copy("encoder.conv2.bias", names::bias(names::CONV2), vec![d])?;
        self.copy(
            "encoder.embed_positions.weight",
            names::ENCODER_POSITIONS.into(),
            vec![dims.n_audio_ctx, d],
        )?;
        for layer in 0..dims.n_audio_layer {
            self.block(Stack::Encoder, layer, d)?;
        }
        self.layer_norm("encoder.layer_norm", names::ENCODER_LN_POST, d)?;
        let d = dims.n_text_state;
        self.copy(
            "decoder.embed_tokens.weight",
            names::TOKEN_EMBEDDING.into(),
            vec![dims.n_vocab, d],
        )?;
        self.copy(
            "decoder.embed_positions.weight",
            names::DECODER_POSITIONS.into(),
            vec![dims.n_text_ctx, d],
        )?;
        for layer in 0..dims.n_text_layer {
            self.block(Stack::Decoder, layer, d)?;
        }
        self.layer_norm("decoder.layer_norm", names::DECODER_LN, d)?;
        Ok(())
    }
}
