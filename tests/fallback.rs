//! The fallback's compression ratio equals faster-whisper's `get_compression_ratio` (Python's
//! `zlib.compress`): compressed lengths byte for byte on the texts of
//! tests/goldens/compression/zlib_lengths.tsv (made by make_compression_goldens.py there).

mod common;

use amanuensis::model::decode::{compression_ratio, zlib_len};

#[test]
fn zlib_lengths_equal_pythons() {
    let path = common::goldens_dir()
        .join("compression")
        .join("zlib_lengths.tsv");
    let text = common::read_text(&path);
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.splitn(3, '\t');
        let (len, zlen, t) = (
            cols.next().unwrap().parse::<usize>().unwrap(),
            cols.next().unwrap().parse::<usize>().unwrap(),
            cols.next().unwrap_or("").replace("\\n", "\n"),
        );
        assert_eq!(t.len(), len, "line {}: utf-8 length", i + 1);
        assert_eq!(zlib_len(t.as_bytes()), zlen, "line {}: {t:?}", i + 1);
        let ratio = compression_ratio(&t);
        let expect = len as f64 / zlen as f64;
        assert_eq!(ratio, expect, "line {}", i + 1);
        n += 1;
    }
    assert!(n > 300, "{n} texts");
}
