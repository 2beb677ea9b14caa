//! Stable-toolchain stand-in for the fuzz targets (`weights-tools/fuzz`, nightly only): a few
//! thousand deterministic mutations and truncations of a valid CTranslate2 `model.bin` and of a
//! valid model file, each run through the parser / converter / loader. Every input must give
//! `Ok` or a typed error, never a panic (a panic fails the test with the case number).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use amanuensis_model::weights::{expected_tensors, validate_model_bytes, WeightsFile};
use common::{SynthCt2, TempDir};
use weights_tools::{ct2, from_ct2, ConvertError, SourceKind};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `seed`; positions are drawn from `[0, hot)` three times out of four
/// (the structured part of the file) and from the whole file otherwise.
fn mutate(rng: &mut Rng, seed: &[u8], hot: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    let n_edits = 1 + rng.below(3);
    for _ in 0..n_edits {
        let len = b.len().max(1);
        let pos = if rng.below(4) < 3 {
            rng.below(hot.min(len))
        } else {
            rng.below(len)
        };
        match rng.below(7) {
            0 => b.truncate(pos),
            1 => {
                if pos < b.len() {
                    b[pos] ^= 1 << rng.below(8)
                }
            }
            2 => {
                if pos < b.len() {
                    b[pos] = rng.next() as u8
                }
            }
            3 => {
                let v: u32 = [0, 1, 0xffff, 0x7fff_ffff, u32::MAX, 0x8000][rng.below(6)];
                for (k, byte) in v.to_le_bytes().iter().enumerate() {
                    if pos + k < b.len() {
                        b[pos + k] = *byte;
                    }
                }
            }
            4 => {
                let n = rng.below(16).min(b.len() - pos.min(b.len()));
                b.drain(pos.min(b.len())..pos.min(b.len()) + n);
            }
            5 => {
                let at = pos.min(b.len());
                b.insert(at, rng.next() as u8);
            }
            _ => {
                // Swap two bytes (JSON punctuation, digits).
                let other = rng.below(hot.min(len));
                if pos < b.len() && other < b.len() {
                    b.swap(pos, other);
                }
            }
        }
    }
    b
}

#[test]
fn mutated_ct2_files_never_panic() {
    let seed = SynthCt2::new().model_bin();
    let (_, tensors) = from_ct2::ct2_tensors(Path::new("seed"), &seed).unwrap();
    assert!(!tensors.is_empty());
    // Variable headers are spread over the file; the embedding (12 kB) is one block.
    let hot = seed.len();
    let mut rng = Rng(0x5eed_c72b_1234_9876);
    let (mut ok, mut errors) = (0, 0);
    for case in 0..4000 {
        let input = if case < 400 {
            seed[..seed.len() * case / 400].to_vec()
        } else {
            mutate(&mut rng, &seed, hot)
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let parsed = ct2::parse(&input).is_ok();
            let converted = from_ct2::ct2_tensors(Path::new("m"), &input);
            (parsed, converted.map(|(_, t)| t.len()))
        }));
        match result {
            Err(_) => panic!("case {case}: panic on a {}-byte input", input.len()),
            Ok((parsed, Ok(_))) => {
                assert!(parsed);
                ok += 1
            }
            Ok((_, Err(e))) => {
                assert!(!e.to_string().is_empty());
                errors += 1
            }
        }
    }
    eprintln!("ct2: {ok} accepted, {errors} typed errors");
    assert!(errors > 3000);
}

#[test]
fn mutated_model_files_never_panic() {
    let tmp = TempDir::new("mut");
    let src = tmp.path().join("ct2");
    std::fs::create_dir(&src).unwrap();
    SynthCt2::new().write(&src);
    let out = tmp.path().join("seed.safetensors");
    weights_tools::convert(&src, SourceKind::Ct2, &out).unwrap();
    let seed = std::fs::read(&out).unwrap();
    let header_end = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let (mut ok, mut errors) = (0, 0);
    let path = tmp.path().join("case.safetensors");
    for case in 0..3000 {
        let input = if case < 300 {
            seed[..seed.len() * case / 300].to_vec()
        } else {
            mutate(&mut rng, &seed, header_end)
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let in_memory = validate_model_bytes(&input).map(|c| c.dims);
            // Every 10th case also through the file path, reading every tensor if it opens.
            if case % 10 == 0 {
                std::fs::write(&path, &input).unwrap();
                let opened = WeightsFile::open(&path).map(|w| {
                    for spec in expected_tensors(&w.config().dims) {
                        w.tensor_f32(&spec.name, &spec.shape).unwrap();
                    }
                    w.config().dims
                });
                assert_eq!(opened.is_ok(), in_memory.is_ok(), "case {case}");
            }
            in_memory
        }));
        match result {
            Err(_) => panic!("case {case}: panic on a {}-byte input", input.len()),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                errors += 1
            }
        }
    }
    eprintln!("model files: {ok} accepted, {errors} typed errors");
    assert!(errors > 2000);
}

#[test]
fn convert_reports_a_missing_directory_not_a_panic() {
    let tmp = TempDir::new("nodir");
    let e = weights_tools::convert(
        &tmp.path().join("x"),
        SourceKind::HuggingFace,
        &tmp.path().join("o"),
    );
    assert!(matches!(e, Err(ConvertError::Io { .. })));
}
