//! The tokenizer's decoding table (stored in the model file by the converter, format_version 3,
//! and read in place at load; or built at load from the vocabulary for older files) gives
//! exactly the text of the full `tokenizers` BPE decode, on every token id of the real
//! vocabularies and on random token sequences (which cut multi-byte characters anywhere).

use amanuensis::model_path::resolve_model;
use amanuensis_model::tokenizer::{DecodeTable, Tokenizer};
use amanuensis_model::weights::WeightsFile;

fn check(name: &str) {
    let path = resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
    let file = WeightsFile::open(&path).unwrap();
    assert!(
        file.has_tokenizer_tensors(),
        "{}: an older format_version without the stored decoding table: re-run \
         scripts/setup-models.sh {name}",
        path.display()
    );
    let special = file.config().special;
    let t = Tokenizer::from_file(&file, special).unwrap();
    // The stored table is exactly the one the JSON gives (what the converter wrote).
    let built = DecodeTable::from_json(file.tokenizer_json().unwrap()).unwrap();
    let stored = t.decode_table();
    assert_eq!(stored.len(), built.len(), "{name}: ids");
    assert_eq!(stored.ends(), built.ends(), "{name}: ends");
    assert_eq!(stored.blob(), built.blob(), "{name}: bytes");
    // Every id, text tokens and the rest (ids >= EOT are filtered by both).
    let n = file.config().dims.n_vocab as u32 + 10;
    for id in 0..n {
        assert_eq!(
            t.decode_text(&[id]).unwrap(),
            t.decode_text_bpe(&[id]).unwrap(),
            "{name}: id {id}"
        );
    }
    // Random sequences (a fixed LCG).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |m: u32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % m as u64) as u32
    };
    for _ in 0..3000 {
        let len = 1 + next(40) as usize;
        let ids: Vec<u32> = (0..len).map(|_| next(n)).collect();
        assert_eq!(
            t.decode_text(&ids).unwrap(),
            t.decode_text_bpe(&ids).unwrap(),
            "{name}: {ids:?}"
        );
    }
    // A sentence through encode (the BPE, built on first use) and back.
    let text = " And so, my fellow Americans: ask not — café, naïve, 東京, 😀.";
    let ids = t.encode(text).unwrap();
    assert_eq!(t.decode_text(&ids).unwrap(), text);
}

#[test]
fn the_decode_table_equals_the_bpe_decode_on_tiny_en() {
    check("tiny.en");
}

#[test]
fn the_decode_table_equals_the_bpe_decode_on_base() {
    check("base.int8");
}
