//! The gzip compression ratio faster-whisper uses to spot repetitive text
//! (`get_compression_ratio`): `len(utf-8 bytes) / len(zlib.compress(bytes))`, Python's default
//! level (6), zlib framing included.
//!
//! Computed with zlib itself (flate2's zlib backend, libz-sys built from its bundled source), so
//! the compressed length equals Python's byte for byte: tests/fallback.rs checks it against
//! Python-made values (tests/goldens/compression/), where miniz_oxide's deflate is off by up to
//! 6 bytes on 41 % of the texts.

use std::io::Write;

/// `len(text) / len(zlib.compress(text))` of the UTF-8 bytes of `text` (strip it first, as
/// faster-whisper does). The empty string gives 0 (its compressed form is 8 bytes).
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    bytes.len() as f64 / zlib_len(bytes) as f64
}

/// Length of `zlib.compress(bytes)` (level 6).
pub fn zlib_len(bytes: &[u8]) -> usize {
    let mut counter = ByteCounter(0);
    let mut encoder = flate2::write::ZlibEncoder::new(&mut counter, flate2::Compression::new(6));
    // Writing into a counter cannot fail.
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.try_finish())
        .expect("zlib into a byte counter");
    drop(encoder);
    counter.0
}

/// A sink that only counts bytes.
struct ByteCounter(usize);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_lengths() {
        // Python: len(zlib.compress(b"")) == 8, len(zlib.compress(b"you " * 50)) == 15.
        assert_eq!(zlib_len(b""), 8);
        assert_eq!(compression_ratio(""), 0.0);
        assert!(compression_ratio(&"you ".repeat(50)) > 2.4);
        assert!(compression_ratio("And so my fellow Americans, ask not") < 2.4);
    }
}
