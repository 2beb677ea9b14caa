//! Synthetic test signals, sample for sample the ones tests/goldens/make_vad_goldens.py makes
//! (`white_noise`, `tones`, `synthetic`): 16 kHz mono f32.

/// 16 kHz.
pub const RATE: usize = 16_000;

/// `n` zeros (digital silence).
pub fn silence(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

/// xorshift32 from 0x9E3779B9, top 16 bits → uniform in [-0.1, 0.1) (the golden script's
/// `white_noise`).
pub fn white_noise(n: usize) -> Vec<f32> {
    let mut x: u32 = 0x9E37_79B9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (((x >> 16) as f64 - 32768.0) / 32768.0 * 0.1) as f32
        })
        .collect()
}

/// Three steady tones over `n` samples: 440 Hz, then 1 kHz, then 250 Hz + 2 kHz (amplitude 0.3;
/// the golden script's `tones`).
pub fn tones(n: usize) -> Vec<f32> {
    let third = n / 3;
    let tau = 2.0 * std::f64::consts::PI;
    (0..n)
        .map(|i| {
            let t = i as f64;
            let y = if i < 2 * third {
                let f = if i < third { 440.0 } else { 1000.0 };
                0.3 * (tau * f * t / RATE as f64).sin()
            } else {
                0.15 * (tau * 250.0 * t / RATE as f64).sin()
                    + 0.15 * (tau * 2000.0 * t / RATE as f64).sin()
            };
            y as f32
        })
        .collect()
}

/// `audio` followed by `seconds` of digital silence.
pub fn with_silence(audio: &[f32], seconds: usize) -> Vec<f32> {
    let mut v = audio.to_vec();
    v.resize(audio.len() + seconds * RATE, 0.0);
    v
}
