//! `load_wav` end to end on WAV files written here: a 44.1 kHz 16-bit stereo file is decoded,
//! mixed down and resampled to 16 kHz with the right length, frequency and amplitude.

use std::f64::consts::PI;
use std::path::PathBuf;

use amanuensis_model::audio::{load_wav, resample::output_len, AudioError, WavError};

/// A canonical 16-bit PCM WAV file of interleaved `frames` (each `channels` samples).
fn pcm16_wav(rate: u32, channels: u16, interleaved: &[i16]) -> Vec<u8> {
    let data_len = (interleaved.len() * 2) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2 * channels as u32).to_le_bytes());
    out.extend_from_slice(&(2 * channels).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for v in interleaved {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-wav-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Amplitude, phase and RMS residual of the best fit `a·sin + b·cos` at `freq` over `range`.
fn fit(y: &[f32], freq: f64, range: std::ops::Range<usize>) -> (f64, f64, f64) {
    let w = 2.0 * PI * freq / 16000.0;
    let (mut ss, mut cc, mut sc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in range.clone() {
        let (s, c, v) = ((w * i as f64).sin(), (w * i as f64).cos(), y[i] as f64);
        (ss, cc, sc, ys, yc) = (ss + s * s, cc + c * c, sc + s * c, ys + v * s, yc + v * c);
    }
    let det = ss * cc - sc * sc;
    let (a, b) = ((ys * cc - yc * sc) / det, (yc * ss - ys * sc) / det);
    let residual: f64 = range
        .clone()
        .map(|i| (y[i] as f64 - a * (w * i as f64).sin() - b * (w * i as f64).cos()).powi(2))
        .sum();
    (
        a.hypot(b),
        b.atan2(a),
        (residual / range.len() as f64).sqrt(),
    )
}

/// 1.5 s of a 1 kHz tone at 44.1 kHz, in both channels of a stereo file (left at amplitude
/// 0.6, right 0.2: the mono mix is 0.4). After resampling: length round(n·16000/44100), and a
/// 1 kHz tone of amplitude 0.4 (within 1e-3 relative; 16-bit quantisation noise is ~1e-5 RMS,
/// the filter's pass-band ripple ~1e-4) with phase 0 (within 1e-3 rad) and residual RMS below
/// 1e-4 (a 0.1 % frequency error would leave ~0.1 over 1.5 s).
#[test]
fn stereo_44k1_file_resamples_to_16k() {
    let rate = 44100;
    let n = 66150;
    let mut interleaved = Vec::with_capacity(2 * n);
    for i in 0..n {
        let s = (2.0 * PI * 1000.0 * i as f64 / rate as f64).sin();
        interleaved.push((0.6 * s * 32767.0).round() as i16);
        interleaved.push((0.2 * s * 32767.0).round() as i16);
    }
    let path = temp_file("tone-44k1.wav", &pcm16_wav(rate, 2, &interleaved));
    let y = load_wav(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(y.len(), output_len(n, rate));
    assert_eq!(y.len(), 24000);
    let (amplitude, phase, residual) = fit(&y, 1000.0, 300..y.len() - 300);
    let expected = 0.4 * 32767.0 / 32768.0;
    eprintln!("amplitude {amplitude:.6} (expected {expected:.6}), phase {phase:.2e}, residual {residual:.2e}");
    assert!((amplitude / expected - 1.0).abs() < 1e-3);
    assert!(phase.abs() < 1e-3);
    assert!(residual < 1e-4);
}

/// A 16 kHz file is returned exactly as decoded: int16 / 32768.
#[test]
fn sixteen_khz_file_is_exact() {
    let values: Vec<i16> = (0..1000)
        .map(|i| ((i * 7919) % 65536 - 32768) as i16)
        .collect();
    let path = temp_file("exact-16k.wav", &pcm16_wav(16000, 1, &values));
    let y = load_wav(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let expected: Vec<f32> = values.iter().map(|&v| v as f32 / 32768.0).collect();
    assert_eq!(y, expected);
}

/// Errors from a file name it; a rate the resampler refuses is a typed error.
#[test]
fn errors_name_the_file() {
    // A data chunk cut short decodes what is there (one whole frame of the 1.5 present).
    let path = temp_file("truncated.wav", &pcm16_wav(16000, 1, &[1, 2, 3])[..47]);
    assert_eq!(load_wav(&path).unwrap(), vec![1.0 / 32768.0]);
    // A cut inside the fmt chunk is an error naming the file and offset.
    let path = temp_file("cut-fmt.wav", &pcm16_wav(16000, 1, &[1, 2, 3])[..30]);
    match load_wav(&path) {
        Err(AudioError::Wav {
            path: Some(p),
            error: WavError::TruncatedChunk { offset: 12, .. },
        }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    let path = temp_file("slow.wav", &pcm16_wav(800, 1, &[1, 2, 3]));
    let err = load_wav(&path).unwrap_err();
    assert!(matches!(
        err,
        AudioError::UnsupportedSampleRate { rate: 800, .. }
    ));
    assert!(err.to_string().contains("slow.wav"), "{err}");
}
