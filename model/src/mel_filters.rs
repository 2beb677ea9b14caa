//! The Slaney mel filterbank, computed exactly as faster-whisper's `get_mel_filters` (a port
//! of `librosa.filters.mel(sr, n_fft, n_mels)` with `htk=False, norm="slaney"`).
//!
//! Every step is done in f64 in numpy's order of operations and the result is rounded to f32
//! once, so the output equals faster-whisper's filters cast to float32 (tested against values
//! numpy produced: `weights-tools/tests/make_mel_ref.py`).

/// Hz where the Slaney scale turns logarithmic.
const MIN_LOG_HZ: f64 = 1000.0;
/// Hz per mel on the linear part.
const F_SP: f64 = 200.0 / 3.0;

/// Slaney Hz → mel (librosa `hz_to_mel`, `htk=False`).
fn hz_to_mel(hz: f64) -> f64 {
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

/// Slaney mel → Hz, as `get_mel_filters` writes it.
fn mel_to_hz(mel: f64) -> f64 {
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// `[n_mels, n_fft / 2 + 1]` row-major triangular filters from 0 Hz to `sample_rate / 2`,
/// Slaney area-normalised (`2 / (f[m + 2] - f[m])`).
///
/// faster-whisper hard-codes the top of the mel range as `45.245640471924965`
/// (`hz_to_mel(8000)` printed by numpy); that literal is used for 16 kHz so the result is
/// bit-identical, other rates compute `hz_to_mel(sample_rate / 2)`.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: u32) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    // np.fft.rfftfreq(n_fft, d=1/sr): k * (1 / (n_fft * d)).
    let d = 1.0 / f64::from(sample_rate);
    let bin_step = 1.0 / (n_fft as f64 * d);
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * bin_step).collect();

    let max_mel = if sample_rate == 16000 {
        45.245640471924965
    } else {
        hz_to_mel(f64::from(sample_rate) / 2.0)
    };
    // np.linspace(0, max_mel, n_mels + 2): i * step + start, last point exactly max_mel.
    let n_points = n_mels + 2;
    let step = max_mel / (n_points - 1) as f64;
    let freqs: Vec<f64> = (0..n_points)
        .map(|i| {
            let mel = if i == n_points - 1 {
                max_mel
            } else {
                i as f64 * step
            };
            mel_to_hz(mel)
        })
        .collect();

    let mut out = Vec::with_capacity(n_mels * n_bins);
    for m in 0..n_mels {
        let fdiff_lo = freqs[m + 1] - freqs[m];
        let fdiff_hi = freqs[m + 2] - freqs[m + 1];
        let enorm = 2.0 / (freqs[m + 2] - freqs[m]);
        for &f in &fft_freqs {
            let lower = -(freqs[m] - f) / fdiff_lo;
            let upper = (freqs[m + 2] - f) / fdiff_hi;
            let w = 0f64.max(lower.min(upper));
            out.push((w * enorm) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_top_mel_is_hz_to_mel_of_8000() {
        // The literal and the formula agree to an ulp or two; either way it is 8 kHz.
        assert!((hz_to_mel(8000.0) - 45.245640471924965).abs() < 1e-12);
        assert!((mel_to_hz(45.245640471924965) - 8000.0).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(440.0)) - 440.0).abs() < 1e-9);
    }

    #[test]
    fn filters_are_triangles_with_slaney_area() {
        let f = mel_filters(80, 400, 16000);
        assert_eq!(f.len(), 80 * 201);
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&w| w >= 0.0));
            // Non-zero entries are one contiguous run (a triangle).
            let nz: Vec<usize> = (0..201).filter(|&k| row[k] > 0.0).collect();
            assert!(!nz.is_empty(), "row {m} empty");
            assert_eq!(nz.len(), nz[nz.len() - 1] - nz[0] + 1, "row {m}");
        }
    }
}
