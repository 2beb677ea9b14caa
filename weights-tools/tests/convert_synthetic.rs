//! The CTranslate2 converter on a small synthetic Whisper directory built in code: the mapping
//! (splits, renames, dropped zero key biases) checked value by value, and every kind of bad
//! input giving its specific error.

mod common;

use amanuensis_model::config::keys;
use amanuensis_model::weights::WeightsFile;
use common::{f16_values, SynthCt2, TempDir, D, EOT, NO_TIMESTAMPS, N_VOCAB};
use weights_tools::ct2::Ct2Error;
use weights_tools::{convert, ConvertError, SourceKind};

fn convert_synth(s: &SynthCt2) -> (TempDir, Result<WeightsFile, ConvertError>) {
    let tmp = TempDir::new("synth");
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    s.write(&src);
    let out = tmp.path().join("out.safetensors");
    let result = convert(&src, SourceKind::Ct2, &out).map(|r| {
        assert_eq!(r.output, out);
        assert_eq!(r.bytes, std::fs::metadata(&out).unwrap().len());
        WeightsFile::open(&out).unwrap()
    });
    (tmp, result)
}

fn var_values(s: &SynthCt2, name: &str) -> Vec<f32> {
    f16_values(&s.var(name).3)
}

#[test]
fn synthetic_model_converts_with_every_tensor_in_place() {
    let s = SynthCt2::new();
    let (_tmp, w) = convert_synth(&s);
    let w = w.unwrap();
    let c = w.config();
    assert_eq!(
        (c.dims.n_audio_state, c.dims.n_text_head, c.dims.n_vocab),
        (D, 2, N_VOCAB)
    );
    assert_eq!(
        (c.dims.n_audio_layer, c.dims.n_text_layer, c.dims.n_mels),
        (1, 1, 2)
    );
    assert_eq!(
        (c.special.eot, c.special.sot, c.special.no_speech),
        (EOT, 11, 18)
    );
    assert_eq!(c.special.timestamp_begin, NO_TIMESTAMPS + 1);
    assert_eq!(
        c.languages,
        vec![("en".to_string(), 12), ("de".to_string(), 13)]
    );
    assert_eq!(c.suppress_ids, vec![1, 2, 14, 15]);
    assert_eq!(c.suppress_ids_begin, vec![5, EOT]);
    assert_eq!(c.alignment_heads, vec![(0, 1)]);
    assert!(!c.multilingual);
    assert_eq!(w.source(), "ctranslate2");
    assert_eq!(w.tokenizer_json().unwrap(), s.tokenizer_json);
    assert!(w.has_tokenizer_tensors());

    let get = |name: &str, shape: &[usize]| w.tensor_f32(name, shape).unwrap();
    let d = D;
    // Self-attention: rows [Q; K; V] split in order.
    for stack in ["encoder", "decoder"] {
        let qkv = var_values(
            &s,
            &format!("{stack}/layer_0/self_attention/linear_0/weight"),
        );
        let qkv_b = var_values(&s, &format!("{stack}/layer_0/self_attention/linear_0/bias"));
        for (i, p) in ["query", "key", "value"].iter().enumerate() {
            let name = format!("{stack}.blocks.0.attn.{p}");
            assert_eq!(
                get(&format!("{name}.weight"), &[d, d]),
                qkv[i * d * d..(i + 1) * d * d]
            );
            if *p != "key" {
                assert_eq!(
                    get(&format!("{name}.bias"), &[d]),
                    qkv_b[i * d..(i + 1) * d]
                );
            } else {
                assert!(w.tensor_info(&format!("{name}.bias")).is_none());
            }
        }
        let out = var_values(
            &s,
            &format!("{stack}/layer_0/self_attention/linear_1/weight"),
        );
        assert_eq!(
            get(&format!("{stack}.blocks.0.attn.out.weight"), &[d, d]),
            out
        );
        let g = var_values(&s, &format!("{stack}/layer_0/ffn/layer_norm/gamma"));
        assert_eq!(get(&format!("{stack}.blocks.0.mlp_ln.weight"), &[d]), g);
        let fc2 = var_values(&s, &format!("{stack}/layer_0/ffn/linear_1/weight"));
        assert_eq!(
            get(&format!("{stack}.blocks.0.mlp.2.weight"), &[d, 4 * d]),
            fc2
        );
    }
    // Cross-attention: query, rows [K; V], out.
    let kv = var_values(&s, "decoder/layer_0/attention/linear_1/weight");
    let kv_b = var_values(&s, "decoder/layer_0/attention/linear_1/bias");
    assert_eq!(
        get("decoder.blocks.0.cross_attn.key.weight", &[d, d]),
        kv[..d * d]
    );
    assert_eq!(
        get("decoder.blocks.0.cross_attn.value.weight", &[d, d]),
        kv[d * d..]
    );
    assert_eq!(
        get("decoder.blocks.0.cross_attn.value.bias", &[d]),
        kv_b[d..]
    );
    assert_eq!(
        get("decoder.blocks.0.cross_attn.query.weight", &[d, d]),
        var_values(&s, "decoder/layer_0/attention/linear_0/weight")
    );
    assert_eq!(
        get("decoder.blocks.0.cross_attn.out.bias", &[d]),
        var_values(&s, "decoder/layer_0/attention/linear_2/bias")
    );
    assert_eq!(
        get("decoder.blocks.0.cross_attn_ln.bias", &[d]),
        var_values(&s, "decoder/layer_0/attention/layer_norm/beta")
    );
    assert_eq!(
        get("encoder.conv1.weight", &[d, 2, 3]),
        var_values(&s, "encoder/conv1/weight")
    );
    assert_eq!(
        get("encoder.positional_embedding", &[3, d]),
        var_values(&s, "encoder/position_encodings/encodings")
    );
    assert_eq!(
        get("decoder.token_embedding.weight", &[N_VOCAB, d]),
        var_values(&s, "decoder/embeddings/weight")
    );
    assert_eq!(
        get("encoder.ln_post.weight", &[d]),
        var_values(&s, "encoder/layer_norm/gamma")
    );
    assert_eq!(
        get("decoder.ln.bias", &[d]),
        var_values(&s, "decoder/layer_norm/beta")
    );
    assert_eq!(
        get("mel_filters", &[2, 201]),
        amanuensis_model::mel_filters::mel_filters(2, 400, 16000)
    );
}

#[test]
fn f32_checkpoints_are_rounded_to_f16() {
    let mut s = SynthCt2::new();
    let name = "encoder/conv2/bias";
    let exact: Vec<f32> = (0..D).map(|i| 0.1 + i as f32).collect();
    let v = s.var_mut(name);
    v.2 = 0; // f32
    v.3 = exact.iter().flat_map(|x| x.to_le_bytes()).collect();
    let (_tmp, w) = convert_synth(&s);
    let got = w.unwrap().tensor_f32("encoder.conv2.bias", &[D]).unwrap();
    let want: Vec<f32> = exact
        .iter()
        .map(|&x| half::f16::from_f32(x).to_f32())
        .collect();
    assert_eq!(got, want);
}

fn convert_err(s: &SynthCt2) -> ConvertError {
    match convert_synth(s).1 {
        Ok(_) => panic!("conversion succeeded"),
        Err(e) => e,
    }
}

#[test]
fn a_nonzero_key_bias_is_refused() {
    let mut s = SynthCt2::new();
    let name = "decoder/layer_0/self_attention/linear_0/bias";
    let v = s.var_mut(name);
    let i = D + 2;
    v.3[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    match convert_err(&s) {
        ConvertError::KeyBiasNotZero {
            name: n,
            index,
            value,
            ..
        } => {
            assert_eq!((n.as_str(), index, value), (name, i, 0.5))
        }
        e => panic!("{e}"),
    }
    let mut s = SynthCt2::new();
    let name = "decoder/layer_0/attention/linear_1/bias";
    s.var_mut(name).3[0..2].copy_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
    assert!(matches!(
        convert_err(&s),
        ConvertError::KeyBiasNotZero { index: 0, .. }
    ));
}

#[test]
fn structural_problems_name_the_variable() {
    let mut s = SynthCt2::new();
    s.vars
        .retain(|v| v.0 != "encoder/layer_0/ffn/linear_1/bias");
    assert!(matches!(convert_err(&s),
        ConvertError::MissingVariable { name, .. } if name == "encoder/layer_0/ffn/linear_1/bias"));

    let mut s = SynthCt2::new();
    let v = s.var_mut("decoder/layer_0/ffn/linear_0/weight");
    v.1 = vec![D as u32, 4 * D as u32]; // transposed, same byte count
    assert!(matches!(convert_err(&s),
        ConvertError::VariableShape { name, expected, got, .. }
            if name == "decoder/layer_0/ffn/linear_0/weight" && expected == vec![16, 4] && got == vec![4, 16]));

    let mut s = SynthCt2::new();
    let v = s.var_mut("encoder/conv1/bias");
    v.2 = 1; // int8
    v.3.truncate(D);
    assert!(matches!(convert_err(&s),
        ConvertError::VariableDtype { name, .. } if name == "encoder/conv1/bias"));

    let mut s = SynthCt2::new();
    s.vars.push((
        "decoder/projection/bias".into(),
        vec![N_VOCAB as u32],
        4,
        vec![0; 2 * N_VOCAB],
    ));
    s.vars.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(matches!(convert_err(&s),
        ConvertError::UnexpectedVariable { name, .. } if name == "decoder/projection/bias"));

    let mut s = SynthCt2::new();
    let v = s.var_mut("encoder/conv1/weight");
    v.1 = vec![4 * 2 * 3]; // flattened
    assert!(matches!(convert_err(&s),
        ConvertError::VariableRank { name, expected: 3, got, .. }
            if name == "encoder/conv1/weight" && got == vec![24]));

    let mut s = SynthCt2::new();
    s.var_mut("decoder/num_heads").1 = vec![1]; // not a scalar
    assert!(matches!(convert_err(&s),
        ConvertError::VariableRank { name, expected: 0, .. } if name == "decoder/num_heads"));

    let mut s = SynthCt2::new();
    s.var_mut("decoder/activation").3 = vec![1]; // GELU tanh
    assert!(matches!(convert_err(&s),
        ConvertError::Unsupported { name, value, .. } if name == "decoder/activation" && value == "1"));

    let mut s = SynthCt2::new();
    s.var_mut("encoder/num_heads").3 = 3i16.to_le_bytes().to_vec(); // does not divide d 4
    assert!(matches!(convert_err(&s), ConvertError::Config { key, .. } if key == "dims"));

    let mut s = SynthCt2::new();
    let bin = s.model_bin();
    s.vars.clear();
    let tmp = TempDir::new("trunc");
    s.write(tmp.path());
    std::fs::write(tmp.path().join("model.bin"), &bin[..bin.len() - 10]).unwrap();
    match convert(
        tmp.path(),
        SourceKind::Ct2,
        &tmp.path().join("o.safetensors"),
    ) {
        Err(
            e @ ConvertError::Ct2 {
                source: Ct2Error::Truncated { .. },
                ..
            },
        ) => {
            assert!(e.to_string().contains("model.bin"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!tmp.path().join("o.safetensors").exists());
}

#[test]
fn vocabulary_and_json_problems_name_the_file() {
    let mut s = SynthCt2::new();
    let mut lines: Vec<&str> = s.vocabulary.as_deref().unwrap().lines().collect();
    lines.pop();
    s.vocabulary = Some(lines.join("\n"));
    match convert_err(&s) {
        e @ ConvertError::Vocabulary { .. } => {
            let msg = e.to_string();
            assert!(
                msg.contains("vocabulary.txt") && msg.contains("1520 tokens"),
                "{msg}"
            )
        }
        e => panic!("{e}"),
    }

    // Without vocabulary.txt the conversion still works (the check is skipped).
    let mut s = SynthCt2::new();
    s.vocabulary = None;
    assert!(convert_synth(&s).1.is_ok());

    let mut s = SynthCt2::new();
    s.tokenizer_json = s.tokenizer_json.replace("<|notimestamps|>", "<|nots|>");
    assert!(matches!(convert_err(&s),
        ConvertError::Vocabulary { reason, .. } if reason.contains("<|notimestamps|>")));

    // <|nospeech|> is preferred over <|nocaptions|>.
    let mut s = SynthCt2::new();
    s.tokenizer_json = s.tokenizer_json.replace("<|nocaptions|>", "<|nospeech|>");
    assert_eq!(convert_synth(&s).1.unwrap().config().special.no_speech, 18);

    // A tokenizer listing the timestamps: <|0.00|> must be notimestamps + 1.
    let with_timestamp = |id: u32| {
        let mut s = SynthCt2::new();
        let mut tok: serde_json::Value = serde_json::from_str(&s.tokenizer_json).unwrap();
        tok["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"id": id, "content": "<|0.00|>"}));
        s.tokenizer_json = tok.to_string();
        s
    };
    assert!(convert_synth(&with_timestamp(NO_TIMESTAMPS + 1)).1.is_ok());
    assert!(matches!(convert_err(&with_timestamp(NO_TIMESTAMPS + 2)),
        ConvertError::Vocabulary { reason, .. } if reason.contains("<|0.00|> is 21")));

    let mut s = SynthCt2::new();
    s.tokenizer_json = s.tokenizer_json.replace("<|de|>", "<|DE|>");
    assert!(matches!(convert_err(&s),
        ConvertError::Vocabulary { reason, .. } if reason.contains("not a language")));

    let mut s = SynthCt2::new();
    s.config_json = r#"{"alignment_heads": [[0, 1]], "suppress_ids_begin": [5]}"#.into();
    assert!(matches!(convert_err(&s),
        ConvertError::Json { key, .. } if key == "suppress_ids"));

    let mut s = SynthCt2::new();
    s.config_json =
        r#"{"alignment_heads": [[1, 0]], "suppress_ids": [], "suppress_ids_begin": []}"#.into();
    assert!(matches!(convert_err(&s),
        ConvertError::Config { key, .. } if key == keys::ALIGNMENT_HEADS));

    let mut s = SynthCt2::new();
    s.tokenizer_json = "{".into();
    assert!(matches!(convert_err(&s), ConvertError::Json { .. }));

    let tmp = TempDir::new("missing");
    assert!(matches!(
        convert(&tmp.path().join("nope"), SourceKind::Ct2, &tmp.path().join("o")),
        Err(ConvertError::Io { path, .. }) if path.ends_with("nope/model.bin")
    ));
}

#[test]
fn inspect_describes_model_files_and_ct2_files() {
    let s = SynthCt2::new();
    let tmp = TempDir::new("inspect");
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    s.write(&src);
    let out = tmp.path().join("m.safetensors");
    convert(&src, SourceKind::Ct2, &out).unwrap();
    let text = weights_tools::inspect::inspect(&out).unwrap();
    for want in [
        "format: amanuensis-whisper v3, source ctranslate2",
        "n_audio_state: 4",
        "timestamp_begin: 20",
        "languages: 2",
        "tensors: 54",
        "  tokenizer.json  U8  [",
        "  tokenizer.decode_ends  U32  [",
        "  mel_filters  F32  [2, 201]",
        "  decoder.blocks.0.cross_attn.key.weight  F16  [4, 4]",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let text = weights_tools::inspect::inspect(&src.join("model.bin")).unwrap();
    for want in [
        "ctranslate2 model.bin: binary version 6, spec WhisperSpec, revision 3, 52 variables",
        "  decoder/num_heads  I16  [] = 2",
        "  encoder/conv1/weight  F16  [4, 2, 3]",
        "alias: decoder/projection/weight -> decoder/embeddings/weight",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(matches!(
        weights_tools::inspect::inspect(&tmp.path().join("none")),
        Err(ConvertError::Io { .. })
    ));
}

#[test]
fn conversion_is_byte_reproducible_and_leaves_no_partial_files() {
    let s = SynthCt2::new();
    let tmp = TempDir::new("repro");
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    s.write(&src);
    let (a, b) = (
        tmp.path().join("a.safetensors"),
        tmp.path().join("b.safetensors"),
    );
    convert(&src, SourceKind::Ct2, &a).unwrap();
    convert(&src, SourceKind::Ct2, &b).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    // The header's keys are sorted (metadata first: "__" sorts before letters).
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.starts_with(r#"{"__metadata__":{"alignment_heads":"#),
        "{}",
        &header[..60]
    );
    assert_eq!(n % 8, 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // Overwriting an existing output works; a failed write leaves nothing behind.
    convert(&src, SourceKind::Ct2, &a).unwrap();
    let missing_dir = tmp.path().join("no/such/dir/m.safetensors");
    assert!(convert(&src, SourceKind::Ct2, &missing_dir).is_err());
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.safetensors", "b.safetensors", "ct2"]);
}
