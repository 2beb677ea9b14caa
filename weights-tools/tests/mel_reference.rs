//! `amanuensis_model::mel_filters` against faster-whisper's `get_mel_filters` cast to float32
//! (`tests/data/mel_ref.json`, written by `tests/make_mel_ref.py` in the peers venv).
//!
//! Tolerance: at most 1 f32 ulp per value. Both sides compute in f64 in the same order of
//! operations and round once, so the values are expected to be bit-identical; one ulp allows for
//! a different libm `exp`/`ln` in the last f64 bit flipping a rounding to f32. The row sums are
//! compared to 1e-6 relative (80 / 201 summed terms, each within an ulp).

use amanuensis_model::mel_filters::mel_filters;
use serde_json::Value;

#[test]
fn mel_filters_match_faster_whisper() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mel_ref.json"
    ))
    .unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let mut max_ulps = 0u32;
    let mut checked = 0;
    for set in root["sets"].as_array().unwrap() {
        let n_mels = set["n_mels"].as_u64().unwrap() as usize;
        let f = mel_filters(n_mels, 400, 16000);
        assert_eq!(f.len(), n_mels * 201);
        for (row, entries) in set["rows"].as_object().unwrap() {
            let r: usize = row.parse().unwrap();
            let got_row = &f[r * 201..(r + 1) * 201];
            let mut want_row = [0f32; 201];
            for e in entries.as_array().unwrap() {
                let k = e[0].as_u64().unwrap() as usize;
                want_row[k] = f32::from_bits(e[1].as_u64().unwrap() as u32);
            }
            for k in 0..201 {
                let (g, w) = (got_row[k], want_row[k]);
                let ulps = (g.to_bits() as i64 - w.to_bits() as i64).unsigned_abs() as u32;
                assert!(ulps <= 1, "n_mels {n_mels} row {r} bin {k}: {g:e} vs {w:e}");
                max_ulps = max_ulps.max(ulps);
                checked += 1;
            }
        }
        for (r, want) in set["row_sums"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got: f64 = f[r * 201..(r + 1) * 201]
                .iter()
                .map(|&x| f64::from(x))
                .sum();
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "n_mels {n_mels} row {r}: {got} vs {want}"
            );
        }
    }
    assert!(checked >= 11 * 201);
    eprintln!("{checked} values, max {max_ulps} ulp");
}
