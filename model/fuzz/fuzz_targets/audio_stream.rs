//! Fuzzes the streaming decoders: our WAV reader and the symphonia path (FLAC, MP3, Ogg, AAC)
//! over an unseekable source, as standard input feeds them. Any bytes must give blocks of
//! finite samples or a typed error, never a panic or an endless loop.
#![no_main]

use std::io::Cursor;

use amanuensis_model::audio::codec::{unseekable, CodecReader};
use amanuensis_model::audio::WavReader;
use libfuzzer_sys::fuzz_target;

/// Blocks read before giving up on an input (its bytes bound what it can hold).
const MAX_BLOCKS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Ok(mut wav) = WavReader::new(Cursor::new(data.to_vec())) {
        for _ in 0..MAX_BLOCKS {
            out.clear();
            match wav.read_block(&mut out) {
                Ok(more) => {
                    assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
                    if !more {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    for ext in [None, Some("mp3"), Some("flac")] {
        if let Ok(mut codec) = CodecReader::new(unseekable(Cursor::new(data.to_vec())), ext) {
            for _ in 0..MAX_BLOCKS {
                out.clear();
                match codec.read_block(&mut out) {
                    Ok(more) => {
                        assert!(out.iter().all(|s| s.is_finite()));
                        if !more {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
});
