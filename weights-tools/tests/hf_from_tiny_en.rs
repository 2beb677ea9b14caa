//! The Hugging Face reader. No HF checkpoint is reachable here, so a test builds an HF-named
//! directory (model.safetensors with transformers' module names, config.json with HF keys,
//! generation_config.json with the decoding lists) from the real tiny.en CTranslate2 weights,
//! converts both, and requires the two model files to be identical in every tensor and every
//! metadata value but `source`.

mod common;

use std::collections::HashMap;
use std::path::Path;

use amanuensis_model::config::keys;
use amanuensis_model::weights::{Dtype, WeightsFile};
use common::{ct2_dir, TempDir};
use safetensors::tensor::TensorView;
use serde_json::json;
use weights_tools::{convert, ConvertError, SourceKind};

/// Our tensor name → transformers' name (written out independently of the reader).
fn hf_name(ours: &str) -> String {
    let mut s = format!("model.{ours}");
    for (a, b) in [
        (".positional_embedding", ".embed_positions.weight"),
        (
            "decoder.token_embedding.weight",
            "decoder.embed_tokens.weight",
        ),
        (".blocks.", ".layers."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".mlp_ln.", ".final_layer_norm."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
        (".cross_attn.", ".encoder_attn."),
        (".attn.", ".self_attn."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
        ("encoder.ln_post.", "encoder.layer_norm."),
        ("decoder.ln.", "decoder.layer_norm."),
    ] {
        s = s.replace(a, b);
    }
    s
}

#[derive(Clone)]
struct HfDir {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    config: serde_json::Value,
    generation: Option<serde_json::Value>,
    tokenizer: String,
}

impl HfDir {
    /// From a converted model file: even-numbered tensors stored f32 (exactly widened), odd f16;
    /// plus the tied `proj_out.weight`.
    fn from_model(w: &WeightsFile, ct2_config: &serde_json::Value) -> HfDir {
        let mut tensors = Vec::new();
        // The tokenizer's byte tensors (format_version 3) are not checkpoint tensors.
        let weights = w
            .tensor_names()
            .filter(|n| *n != "mel_filters" && !n.starts_with("tokenizer."));
        for (i, name) in weights.enumerate() {
            let (_, shape) = w.tensor_info(name).unwrap();
            let (dtype, data) = if i % 2 == 0 {
                let v = w.tensor_f32(name, &shape).unwrap();
                (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            } else {
                let v = w.tensor_f16(name, &shape).unwrap();
                (
                    Dtype::F16,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                )
            };
            tensors.push((hf_name(name), dtype, shape, data));
        }
        let emb = tensors
            .iter()
            .find(|t| t.0 == "model.decoder.embed_tokens.weight")
            .unwrap()
            .clone();
        tensors.push(("proj_out.weight".into(), emb.1, emb.2, emb.3));
        let d = w.config().dims;
        let config = json!({
            "architectures": ["WhisperForConditionalGeneration"],
            "activation_function": "gelu",
            "d_model": d.n_audio_state,
            "encoder_layers": d.n_audio_layer,
            "encoder_attention_heads": d.n_audio_head,
            "encoder_ffn_dim": 4 * d.n_audio_state,
            "decoder_layers": d.n_text_layer,
            "decoder_attention_heads": d.n_text_head,
            "decoder_ffn_dim": 4 * d.n_text_state,
            "num_mel_bins": d.n_mels,
            "max_source_positions": d.n_audio_ctx,
            "max_target_positions": d.n_text_ctx,
            "vocab_size": d.n_vocab,
            "scale_embedding": false,
            "model_type": "whisper",
        });
        let generation = json!({
            "suppress_tokens": ct2_config["suppress_ids"],
            "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
            "alignment_heads": ct2_config["alignment_heads"],
            "is_multilingual": false,
        });
        HfDir {
            tensors,
            config,
            generation: Some(generation),
            tokenizer: w.tokenizer_json().unwrap().to_string(),
        }
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let views = self
            .tensors
            .iter()
            .map(|(n, t, s, d)| (n.clone(), TensorView::new(*t, s.clone(), d).unwrap()));
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("config.json"), self.config.to_string()).unwrap();
        let _ = std::fs::remove_file(dir.join("generation_config.json"));
        if let Some(g) = &self.generation {
            std::fs::write(dir.join("generation_config.json"), g.to_string()).unwrap();
        }
        std::fs::write(dir.join("tokenizer.json"), &self.tokenizer).unwrap();
    }
}

struct Fixture {
    tmp: TempDir,
    ct2_model: WeightsFile,
    hf: HfDir,
}

fn fixture() -> Fixture {
    let dir = ct2_dir("tiny.en");
    let tmp = TempDir::new("hf");
    let a = tmp.path().join("from_ct2.safetensors");
    convert(&dir, SourceKind::Ct2, &a).unwrap();
    let ct2_model = WeightsFile::open(&a).unwrap();
    let ct2_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let hf = HfDir::from_model(&ct2_model, &ct2_config);
    Fixture { tmp, ct2_model, hf }
}

impl Fixture {
    fn convert_hf(&self, hf: &HfDir) -> Result<WeightsFile, ConvertError> {
        let dir = self.tmp.path().join("hf");
        hf.write(&dir);
        let out = self.tmp.path().join("from_hf.safetensors");
        convert(&dir, SourceKind::HuggingFace, &out).map(|_| WeightsFile::open(&out).unwrap())
    }
}

fn assert_same_model(a: &WeightsFile, b: &WeightsFile) {
    let mut names_a: Vec<&str> = a.tensor_names().collect();
    let mut names_b: Vec<&str> = b.tensor_names().collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b);
    for name in names_a {
        let (dtype, shape) = a.tensor_info(name).unwrap();
        assert_eq!(
            b.tensor_info(name).unwrap(),
            (dtype, shape.clone()),
            "{name}"
        );
        if matches!(dtype, Dtype::U8 | Dtype::U32) {
            // The tokenizer's tensors: the same bytes.
            assert_eq!(a.tensor_bytes(name), b.tensor_bytes(name), "{name}");
        } else if dtype == Dtype::F16 {
            let (x, y) = (
                a.tensor_f16(name, &shape).unwrap(),
                b.tensor_f16(name, &shape).unwrap(),
            );
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name}"
            );
        } else {
            assert_eq!(
                a.tensor_f32(name, &shape).unwrap(),
                b.tensor_f32(name, &shape).unwrap()
            );
        }
    }
    let strip = |m: &HashMap<String, String>| {
        let mut m = m.clone();
        m.remove(keys::SOURCE);
        m.remove(keys::METADATA_CRC32); // covers `source`
        m
    };
    assert_eq!(strip(a.metadata()), strip(b.metadata()));
    assert_eq!(a.config(), b.config());
}

#[test]
fn hf_layout_converts_to_the_same_model_as_ct2() {
    let f = fixture();
    let b = f.convert_hf(&f.hf).unwrap();
    assert_same_model(&f.ct2_model, &b);
    assert_eq!(
        (f.ct2_model.source(), b.source()),
        ("ctranslate2", "huggingface")
    );

    // Without the `model.` prefix and without proj_out (a bare WhisperModel / tied checkpoint).
    let mut hf = HfDir::from_model(&f.ct2_model, &json!({}));
    hf.generation = f.hf.generation.clone();
    hf.tensors.retain(|t| t.0 != "proj_out.weight");
    for t in &mut hf.tensors {
        t.0 = t.0.strip_prefix("model.").unwrap().to_string();
    }
    assert_same_model(&f.ct2_model, &f.convert_hf(&hf).unwrap());
}

#[test]
fn decoding_lists_fall_back_like_ctranslate2() {
    let f = fixture();
    // No generation_config.json: the lists come from config.json; no alignment heads: every
    // head of the last half of the decoder layers.
    let mut hf = HfDir::from_model(&f.ct2_model, &json!({}));
    let gen = f.hf.generation.clone().unwrap();
    hf.generation = None;
    hf.config["suppress_tokens"] = gen["suppress_tokens"].clone();
    hf.config["begin_suppress_tokens"] = gen["begin_suppress_tokens"].clone();
    let b = f.convert_hf(&hf).unwrap();
    let c = b.config();
    assert_eq!(c.suppress_ids, f.ct2_model.config().suppress_ids);
    assert_eq!(c.suppress_ids_begin, vec![220, 50256]);
    let want: Vec<(usize, usize)> = (2..4).flat_map(|l| (0..6).map(move |h| (l, h))).collect();
    assert_eq!(c.alignment_heads, want);
}

#[test]
fn hf_problems_give_specific_errors() {
    let f = fixture();

    let mut hf = f.hf.clone();
    hf.tensors
        .retain(|t| t.0 != "model.decoder.layers.2.encoder_attn.k_proj.weight");
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::MissingVariable { name, .. }) if name == "model.decoder.layers.2.encoder_attn.k_proj.weight"));

    let mut hf = f.hf.clone();
    hf.tensors.push((
        "model.encoder.layers.0.self_attn.k_proj.bias".into(),
        Dtype::F16,
        vec![384],
        vec![0; 768],
    ));
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::UnexpectedVariable { name, .. }) if name == "model.encoder.layers.0.self_attn.k_proj.bias"));

    let mut hf = f.hf.clone();
    let proj = hf
        .tensors
        .iter_mut()
        .find(|t| t.0 == "proj_out.weight")
        .unwrap();
    proj.3[0] ^= 1;
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::Unsupported { name, .. }) if name == "proj_out.weight"));

    let mut hf = f.hf.clone();
    hf.config["activation_function"] = json!("gelu_new");
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::Unsupported { name, .. }) if name == "activation_function"));

    let mut hf = f.hf.clone();
    hf.config["d_model"] = json!(512);
    hf.config["encoder_ffn_dim"] = json!(2048);
    hf.config["decoder_ffn_dim"] = json!(2048);
    hf.config["encoder_attention_heads"] = json!(8);
    hf.config["decoder_attention_heads"] = json!(8);
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::VariableShape { name, expected, got, .. })
            if name == "model.encoder.conv1.weight" && expected == vec![512, 80, 3] && got == vec![384, 80, 3]));

    let mut hf = f.hf.clone();
    hf.config.as_object_mut().unwrap().remove("num_mel_bins");
    assert!(matches!(f.convert_hf(&hf),
        Err(ConvertError::Json { key, .. }) if key == "num_mel_bins"));

    let hf = f.hf.clone();
    let dir = f.tmp.path().join("hf-bad");
    hf.write(&dir);
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        convert(
            &dir,
            SourceKind::HuggingFace,
            &f.tmp.path().join("x.safetensors")
        ),
        Err(ConvertError::Safetensors { .. })
    ));
}
