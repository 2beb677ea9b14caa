//! Our resampler against rubato (0.16: SincFixedIn with its recommended 256-tap, 256×
//! oversampled, cubic-interpolated sinc, and FftFixedIn), to 16 kHz from 44.1 and 48 kHz, on a
//! swept sine and on speech. Accuracy is the SNR against a 64-bit reference; time is the best
//! of 5 runs over the same input, all in this process, back to back.
//!
//! - Swept sine: 20 Hz → 7 kHz over 10 s at amplitude 0.5, made in f64 at the input rate; the
//!   reference is the same analytic sweep at 16 kHz.
//! - Speech: jfk.wav low-passed at 7 kHz in f64 (the reference), then interpolated to the input
//!   rate in f64 (band-limited, 64 zero crossings, Kaiser β 12) and rounded to f32.
//!
//! 0.1 s at each end is left out (filters start from silence differently).
//!
//!     cargo bench --bench resampler

use std::f64::consts::PI;
use std::time::Instant;

use amanuensis::model::audio::{load_wav, resample_to_16k};
use rubato::{
    FftFixedIn, Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

const OUT: f64 = 16_000.0;

fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    while term > sum * 1e-17 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Windowed-sinc low-pass kernel at `x` samples (of the rate `cutoff` is relative to).
fn kernel(x: f64, cutoff: f64, half: f64, beta: f64) -> f64 {
    if x.abs() >= half {
        return 0.0;
    }
    let r = x / half;
    let arg = 2.0 * cutoff * x;
    let sinc = if arg == 0.0 {
        1.0
    } else {
        (PI * arg).sin() / (PI * arg)
    };
    2.0 * cutoff * sinc * bessel_i0(beta * (1.0 - r * r).sqrt()) / bessel_i0(beta)
}

/// f64 band-limited evaluation of `x` (at 16 kHz) at times `t` (in 16 kHz samples).
fn interpolate(x: &[f64], t: f64, cutoff: f64) -> f64 {
    let half = 64.0 / (2.0 * cutoff);
    let lo = ((t - half).ceil().max(0.0)) as usize;
    let hi = ((t + half).floor() as usize).min(x.len().saturating_sub(1));
    (lo..=hi)
        .map(|k| x[k] * kernel(t - k as f64, cutoff, half, 12.0))
        .sum()
}

fn sweep(rate: f64, seconds: f64) -> (Vec<f32>, Vec<f64>) {
    let (f0, f1) = (20.0, 7000.0);
    let phase = |t: f64| 2.0 * PI * (f0 * t + (f1 - f0) * t * t / (2.0 * seconds));
    let input = (0..(rate * seconds) as usize)
        .map(|n| (0.5 * phase(n as f64 / rate).sin()) as f32)
        .collect();
    let reference = (0..(OUT * seconds) as usize)
        .map(|n| 0.5 * phase(n as f64 / OUT).sin())
        .collect();
    (input, reference)
}

fn speech(rate: f64) -> (Vec<f32>, Vec<f64>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/speech/jfk.wav");
    let jfk: Vec<f64> = load_wav(&path).unwrap().iter().map(|&v| v as f64).collect();
    // Low-pass at 7 kHz (0.4375 of 16 kHz) in f64: the reference.
    let reference: Vec<f64> = (0..jfk.len())
        .map(|n| interpolate(&jfk, n as f64, 7000.0 / OUT))
        .collect();
    let n_in = (reference.len() as f64 * rate / OUT) as usize;
    let input = (0..n_in)
        .map(|n| interpolate(&reference, n as f64 * OUT / rate, 0.5) as f32)
        .collect();
    (input, reference)
}

fn snr(out: &[f32], reference: &[f64]) -> f64 {
    snr_at(out, reference, 0)
}

/// SNR with `out` shifted by `lag` samples (out[i + lag] against reference[i]).
fn snr_at(out: &[f32], reference: &[f64], lag: i64) -> f64 {
    let edge = (0.1 * OUT) as usize;
    let n = out.len().min(reference.len());
    let (mut signal, mut noise) = (0.0, 0.0);
    for (i, &r) in reference.iter().enumerate().take(n - edge).skip(edge) {
        let j = (i as i64 + lag).clamp(0, out.len() as i64 - 1) as usize;
        signal += r * r;
        noise += (out[j] as f64 - r).powi(2);
    }
    10.0 * (signal / noise).log10()
}

/// The SNR after the best constant delay `d` (real, in output samples, within ±400): `out[i]`
/// against the reference evaluated at `i − d` (`at(t)` gives the 64-bit reference at any time
/// `t` in 16 kHz samples). Separates a resampler that is accurate but delayed by a fraction of
/// a sample from one that is inaccurate. Returns (d, SNR).
fn snr_best_delay(out: &[f32], reference: &[f64], at: &dyn Fn(f64) -> f64) -> (f64, f64) {
    let edge = (0.5 * OUT) as usize;
    let n = out.len();
    let step = 7; // every 7th sample: plenty for the sums, 7x cheaper
    let snr_for = |d: f64| {
        let (mut signal, mut noise) = (0.0, 0.0);
        for i in (edge..n - edge).step_by(step) {
            let r = at(i as f64 - d);
            signal += r * r;
            noise += (out[i] as f64 - r).powi(2);
        }
        10.0 * (signal / noise).log10()
    };
    // Whole samples first, on the reference samples themselves (out[i + lag] vs reference[i]).
    let mut best = (0.0, f64::NEG_INFINITY);
    for lag in -400..=400 {
        let v = snr_at(out, reference, lag);
        if v > best.1 {
            best = (lag as f64, v);
        }
    }
    // Refine within ±1 sample (golden section).
    let (mut lo, mut hi) = (best.0 - 1.0, best.0 + 1.0);
    for _ in 0..24 {
        let m1 = hi - (hi - lo) / 1.618_033_988_75;
        let m2 = lo + (hi - lo) / 1.618_033_988_75;
        if snr_for(m1) > snr_for(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    let d = 0.5 * (lo + hi);
    (d, snr_for(d))
}

/// Runs a rubato resampler over the whole input in its chunks, drops `delay` output samples.
fn run_rubato<R: Resampler<f32>>(r: &mut R, input: &[f32], rate: f64, delay: usize) -> Vec<f32> {
    let want = (input.len() as f64 * OUT / rate).round() as usize;
    let mut out = Vec::with_capacity(want + delay);
    let mut pos = 0;
    while pos + r.input_frames_next() <= input.len() {
        let n = r.input_frames_next();
        let y = r.process(&[&input[pos..pos + n]], None).unwrap();
        out.extend_from_slice(&y[0]);
        pos += n;
    }
    let y = r.process_partial(Some(&[&input[pos..]]), None).unwrap();
    out.extend_from_slice(&y[0]);
    while out.len() < want + delay {
        let y = r.process_partial::<&[f32]>(None, None).unwrap();
        out.extend_from_slice(&y[0]);
    }
    out.drain(..delay);
    out.truncate(want);
    out
}

/// rubato's recommended sinc parameters (its README and docs).
fn params() -> SincInterpolationParameters {
    SincInterpolationParameters {
        sinc_len: 256,
        f_cutoff: 0.95,
        interpolation: SincInterpolationType::Cubic,
        oversampling_factor: 256,
        window: WindowFunction::BlackmanHarris2,
    }
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    (last.unwrap(), best)
}

fn report(
    rate: usize,
    name: &str,
    resampler: &str,
    out: &[f32],
    reference: &[f64],
    at: &dyn Fn(f64) -> f64,
    t: f64,
) {
    let (delay, best) = snr_best_delay(out, reference, at);
    println!(
        "{rate:<8} {name:<7} {resampler:<26} {:>9.1} {:>10.2} {delay:>9.3} {best:>9.1}",
        snr(out, reference),
        t * 1e3
    );
}

fn main() {
    // A hostile rate with no small polyphase table: cost per second of audio.
    let hostile = sweep(767_999.0, 2.0).0;
    let (_, t) = best_of(3, || resample_to_16k(&hostile, 767_999).unwrap());
    println!(
        "767999 Hz (interpolated table): {:.1} ms per second of audio",
        t * 1e3 / 2.0
    );
    println!("resampler bench: to 16 kHz; SNR against a 64-bit reference; time = best of 5");
    println!(
        "{:<8} {:<7} {:<26} {:>9} {:>10} {:>9} {:>9}",
        "rate", "signal", "resampler", "SNR dB", "ms", "delay", "SNR@delay"
    );
    for rate in [44_100usize, 48_000] {
        for name in ["sweep", "speech"] {
            let (input, reference) = match name {
                "sweep" => sweep(rate as f64, 10.0),
                _ => speech(rate as f64),
            };
            let at = |t: f64| -> f64 {
                match name {
                    "sweep" => {
                        let s = t / OUT;
                        0.5 * (2.0 * PI * (20.0 * s + (7000.0 - 20.0) * s * s / 20.0)).sin()
                    }
                    _ => interpolate(&reference, t, 0.5),
                }
            };
            let (ours, t) = best_of(5, || resample_to_16k(&input, rate as u32).unwrap());
            report(
                rate,
                name,
                "amanuensis (Kaiser sinc)",
                &ours,
                &reference,
                &at,
                t,
            );
            let (sinc, t) = best_of(5, || {
                let mut r =
                    SincFixedIn::<f32>::new(OUT / rate as f64, 1.0, params(), 1024, 1).unwrap();
                let delay = r.output_delay();
                run_rubato(&mut r, &input, rate as f64, delay)
            });
            report(rate, name, "rubato SincFixedIn", &sinc, &reference, &at, t);
            let (fft, t) = best_of(5, || {
                let mut r = FftFixedIn::<f32>::new(rate, OUT as usize, 1024, 1, 1).unwrap();
                let delay = r.output_delay();
                run_rubato(&mut r, &input, rate as f64, delay)
            });
            report(rate, name, "rubato FftFixedIn", &fft, &reference, &at, t);
        }
    }
}
