//! The real tiny.en CTranslate2 checkpoint (`$AMANUENSIS_CACHE/ct2/tiny.en`, from
//! `scripts/setup-models.sh`): converted, loaded, and every tensor compared byte for byte with
//! the CTranslate2 variable (or row block of a fused variable) it came from.

mod common;

use std::time::Instant;

use amanuensis_model::config::{Dims, SpecialTokens};
use amanuensis_model::weights::{expected_tensors, Dtype, WeightsFile};
use common::{ct2_dir, TempDir};
use weights_tools::{convert, ct2, SourceKind};

/// The CTranslate2 variable and row block `[rows.0, rows.1)` a tensor of ours comes from,
/// written out independently of the converter.
fn source_of(name: &str, d: usize) -> (String, usize, usize) {
    let full = |v: String| (v, 0, usize::MAX);
    let ln = |p: &str, suffix: &str| {
        format!("{p}/{}", if suffix == "weight" { "gamma" } else { "beta" })
    };
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["encoder", "conv1" | "conv2", wb] => full(format!("encoder/{}/{wb}", parts[1])),
        ["encoder", "positional_embedding"] => full("encoder/position_encodings/encodings".into()),
        ["decoder", "positional_embedding"] => full("decoder/position_encodings/encodings".into()),
        ["decoder", "token_embedding", "weight"] => full("decoder/embeddings/weight".into()),
        ["encoder", "ln_post", wb] => full(ln("encoder/layer_norm", wb)),
        ["decoder", "ln", wb] => full(ln("decoder/layer_norm", wb)),
        [stack, "blocks", i, module, rest @ ..] => {
            let p = format!("{stack}/layer_{i}");
            match (*module, rest) {
                ("attn_ln", [wb]) => full(ln(&format!("{p}/self_attention/layer_norm"), wb)),
                ("cross_attn_ln", [wb]) => full(ln(&format!("{p}/attention/layer_norm"), wb)),
                ("mlp_ln", [wb]) => full(ln(&format!("{p}/ffn/layer_norm"), wb)),
                ("mlp", ["0", wb]) => full(format!("{p}/ffn/linear_0/{wb}")),
                ("mlp", ["2", wb]) => full(format!("{p}/ffn/linear_1/{wb}")),
                ("attn", [proj, wb]) => match *proj {
                    "query" => (format!("{p}/self_attention/linear_0/{wb}"), 0, d),
                    "key" => (format!("{p}/self_attention/linear_0/{wb}"), d, 2 * d),
                    "value" => (format!("{p}/self_attention/linear_0/{wb}"), 2 * d, 3 * d),
                    "out" => full(format!("{p}/self_attention/linear_1/{wb}")),
                    _ => panic!("{name}"),
                },
                ("cross_attn", [proj, wb]) => match *proj {
                    "query" => full(format!("{p}/attention/linear_0/{wb}")),
                    "key" => (format!("{p}/attention/linear_1/{wb}"), 0, d),
                    "value" => (format!("{p}/attention/linear_1/{wb}"), d, 2 * d),
                    "out" => full(format!("{p}/attention/linear_2/{wb}")),
                    _ => panic!("{name}"),
                },
                _ => panic!("{name}"),
            }
        }
        _ => panic!("unmapped tensor {name}"),
    }
}

#[test]
fn tiny_en_converts_and_every_tensor_matches_its_source() {
    let dir = ct2_dir("tiny.en");
    let tmp = TempDir::new("tiny");
    let out = tmp.path().join("tiny.en.safetensors");
    let report = convert(&dir, SourceKind::Ct2, &out).unwrap();
    assert_eq!(report.n_tensors, 168);
    let w = WeightsFile::open(&out).unwrap();
    let c = w.config();
    // docs/whisper.md tables.
    assert_eq!(
        c.dims,
        Dims {
            n_mels: 80,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_vocab: 51864,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
        }
    );
    assert_eq!(
        c.special,
        SpecialTokens {
            eot: 50256,
            sot: 50257,
            translate: 50357,
            transcribe: 50358,
            startoflm: 50359,
            startofprev: 50360,
            no_speech: 50361,
            no_timestamps: 50362,
            timestamp_begin: 50363,
        }
    );
    assert_eq!(c.languages.len(), 99);
    assert_eq!(c.languages[0], ("en".to_string(), 50258));
    assert_eq!(c.languages[98].1, 50356);
    assert_eq!(c.suppress_ids.len(), 90);
    assert_eq!(c.suppress_ids_begin, vec![220, 50256]);
    assert_eq!(
        c.alignment_heads,
        vec![
            (1, 0),
            (2, 0),
            (2, 5),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4)
        ]
    );
    assert!(!c.multilingual);
    assert_eq!(
        w.tokenizer_json().unwrap(),
        std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()
    );

    let bin = std::fs::read(dir.join("model.bin")).unwrap();
    let model = ct2::parse(&bin).unwrap();
    let d = 384;
    let mut compared = 0;
    for spec in expected_tensors(&c.dims) {
        if spec.dtype == Dtype::F32 {
            continue; // mel_filters: tests/mel_reference.rs
        }
        let ours = w.tensor_f16(&spec.name, &spec.shape).unwrap();
        let ours: Vec<u8> = ours.iter().flat_map(|h| h.to_le_bytes()).collect();
        let (var, r0, r1) = source_of(&spec.name, d);
        let v = model.get(&var).unwrap_or_else(|| panic!("{var}"));
        let row_bytes = v.data.len() / v.shape[0];
        let rows = &v.data[r0 * row_bytes..r1.min(v.shape[0]) * row_bytes];
        assert_eq!(ours, rows, "{} vs {var}[{r0}..{r1}]", spec.name);
        compared += 1;
    }
    assert_eq!(compared, 167);
    // The dropped key biases are exactly zero in the source.
    for i in 0..4 {
        for (var, r0) in [
            (format!("encoder/layer_{i}/self_attention/linear_0/bias"), d),
            (format!("decoder/layer_{i}/self_attention/linear_0/bias"), d),
            (format!("decoder/layer_{i}/attention/linear_1/bias"), 0),
        ] {
            let v = model.get(&var).unwrap();
            assert!(v.data[2 * r0..2 * (r0 + d)]
                .chunks(2)
                .all(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32() == 0.0));
        }
    }
}

/// Measures f16 → f32 widening of every tensor of tiny.en (what a full-f32 CPU load costs).
#[test]
fn widening_every_tensor_of_tiny_en() {
    let dir = ct2_dir("tiny.en");
    let tmp = TempDir::new("widen");
    let out = tmp.path().join("tiny.en.safetensors");
    convert(&dir, SourceKind::Ct2, &out).unwrap();
    let t0 = Instant::now();
    let w = WeightsFile::open(&out).unwrap();
    let open = t0.elapsed();
    let specs = expected_tensors(&w.config().dims);
    let t1 = Instant::now();
    let mut values = 0usize;
    let mut checksum = 0f64;
    for spec in &specs {
        let v = w.tensor_f32(&spec.name, &spec.shape).unwrap();
        values += v.len();
        checksum += f64::from(v[v.len() / 2]);
    }
    let widen = t1.elapsed();
    // tiny.en: 37.8 M parameters (+ 16 080 mel filter values).
    assert!((37_000_000..39_000_000).contains(&values), "{values}");
    assert!(checksum.is_finite());
    eprintln!(
        "tiny.en: open (mmap + header + validation) {:.2} ms; widening {values} values ({:.1} MB of f32) {:.1} ms",
        open.as_secs_f64() * 1e3,
        values as f64 * 4.0 / 1e6,
        widen.as_secs_f64() * 1e3
    );
}
