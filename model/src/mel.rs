//! The log-mel frontend: 16 kHz samples to Whisper's normalised log-mel spectrogram.
//!
//! Computed once over the whole file exactly as faster-whisper's `FeatureExtractor.__call__`
//! with `padding=160` (see `../shared/docs/whisper.md`, "Audio frontend"):
//!
//! 1. append 160 zero samples to the N input samples (length L = N + 160);
//! 2. reflect-pad 200 samples each side (numpy `"reflect"`: the edge sample is not repeated;
//!    a pad longer than the signal keeps reflecting, as numpy does);
//! 3. frames of 400 samples every 160, times the periodic Hann window `np.hanning(401)[:-1]`
//!    (computed in f64, rounded to f32; the product is rounded to f32 as numpy's f32 multiply);
//! 4. real FFT, power `|X|²` of the 201 bins: the FFT is done in f64, its result rounded to
//!    complex64, `|X|` rounded to f32 and squared in f32 as numpy does — numpy (2.x) itself runs
//!    the FFT in f32, so ours is the more exact one and differs only by numpy's rounding;
//! 5. the last frame is dropped: L / 160 = N / 160 + 1 frames remain;
//! 6. mel = filters · power (the filterbank's nonzero band per row, summed in f64, rounded to
//!    f32);
//! 7. `log10(max(mel, 1e-10))`, clamped from below at (global max − 8), then `(x + 4) / 4`,
//!    all in f32. The max runs over all frames, including the last one that is never fed
//!    to the encoder.
//!
//! [`LogMel::window`] then cuts the encoder's 3000-frame windows, right-padded with 0.0 in the
//! normalised domain. An empty input is not an error: it gives one (padding) frame and
//! `content_frames == 0`, like faster-whisper, and every window of it is all zeros.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// FFT length (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms at 16 kHz).
pub const HOP_LENGTH: usize = 160;
/// Frequency bins of the one-sided spectrum, `N_FFT / 2 + 1`: the filterbank's row length.
pub const N_FREQ_BINS: usize = N_FFT / 2 + 1;
/// Frames in one encoder window (30 s).
pub const WINDOW_FRAMES: usize = 3000;
/// Zero samples appended before the STFT (faster-whisper `padding=160`).
pub(crate) const TAIL_PADDING: usize = 160;
/// Reflect padding each side (`center=True`): half the FFT length.
pub(crate) const CENTER_PADDING: usize = N_FFT / 2;

/// Wrong shapes given to the frontend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MelError {
    /// The filterbank is not `[n_mels, 201]`.
    #[error(
        "mel filterbank has {got} values, expected n_mels {n_mels} x {N_FREQ_BINS} = {expected}"
    )]
    FilterShape {
        /// Requested mel bins.
        n_mels: usize,
        /// `n_mels * 201`.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// `n_mels` is zero.
    #[error("mel filterbank must have at least one mel bin")]
    NoMelBins,
    /// A filterbank value is NaN, infinite or negative.
    #[error("mel filterbank value at [{mel}, {bin}] is {value} (must be finite and >= 0)")]
    BadFilterValue {
        /// Row.
        mel: usize,
        /// Column.
        bin: usize,
        /// The value.
        value: f32,
    },
    /// A `LogMel` whose fields disagree (its fields are public; [`MelFrontend::compute`] never
    /// makes one).
    #[error("inconsistent LogMel: {n_mels} x {n_frames} frames ({content_frames} content) but {len} values")]
    InconsistentLogMel {
        /// `n_mels` field.
        n_mels: usize,
        /// `n_frames` field.
        n_frames: usize,
        /// `content_frames` field.
        content_frames: usize,
        /// `data.len()`.
        len: usize,
    },
    /// A streamed spectrogram was asked for a window before one it already passed.
    #[error("window at frame {seek} requested after frame {first}: streamed windows go forward")]
    SeekBackwards {
        /// The requested start.
        seek: usize,
        /// The first frame still held.
        first: usize,
    },
    /// The window buffer is not `[n_mels, 3000]`.
    #[error(
        "window buffer has {got} values, expected n_mels {n_mels} x {WINDOW_FRAMES} = {expected}"
    )]
    WindowBufferSize {
        /// Mel bins of the spectrogram.
        n_mels: usize,
        /// `n_mels * 3000`.
        expected: usize,
        /// Length given.
        got: usize,
    },
}

/// A whole file's normalised log-mel spectrogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    /// Mel bins (rows).
    pub n_mels: usize,
    /// Frames (columns): `N / 160 + 1` for N samples.
    pub n_frames: usize,
    /// Frames that hold audio, `N / 160`: the last frame counts for the max only.
    pub content_frames: usize,
    /// `[n_mels, n_frames]` row-major.
    pub data: Vec<f32>,
}

impl LogMel {
    /// Fills `out` (`[n_mels, 3000]` row-major) with frames `seek .. seek + count`, where
    /// `count = min(3000, content_frames − seek)` (0 when `seek >= content_frames`), and 0.0
    /// after them (faster-whisper's `pad_or_trim` of the normalised features). Returns `count`.
    /// Allocates nothing.
    pub fn window(&self, seek: usize, out: &mut [f32]) -> Result<usize, MelError> {
        let expected = self.n_mels * WINDOW_FRAMES;
        if out.len() != expected {
            return Err(MelError::WindowBufferSize {
                n_mels: self.n_mels,
                expected,
                got: out.len(),
            });
        }
        if self.data.len() != self.n_mels * self.n_frames || self.content_frames > self.n_frames {
            return Err(MelError::InconsistentLogMel {
                n_mels: self.n_mels,
                n_frames: self.n_frames,
                content_frames: self.content_frames,
                len: self.data.len(),
            });
        }
        let count = self.content_frames.saturating_sub(seek).min(WINDOW_FRAMES);
        for (mel, row) in out.chunks_exact_mut(WINDOW_FRAMES).enumerate() {
            let (filled, padding) = row.split_at_mut(count);
            filled.copy_from_slice(
                &self.data[mel * self.n_frames + seek.min(self.n_frames)..][..count],
            );
            padding.fill(0.0);
        }
        Ok(count)
    }
}

/// The log-mel frontend: filterbank, window and FFT plan, made once and reused for every file.
#[derive(Clone)]
pub struct MelFrontend {
    n_mels: usize,
    /// `[n_mels, 201]` row-major.
    filters: Vec<f32>,
    /// Per mel row, the bin range holding its nonzero weights (empty range if none).
    bands: Vec<std::ops::Range<usize>>,
    /// Periodic Hann window, `np.hanning(401)[:-1]` rounded to f32.
    hann: Vec<f32>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontend")
            .field("n_mels", &self.n_mels)
            .finish_non_exhaustive()
    }
}

impl MelFrontend {
    /// Takes the `[n_mels, 201]` f32 filterbank (the model file's `mel_filters` tensor) and plans
    /// the FFT.
    pub fn new(filters: Vec<f32>, n_mels: usize) -> Result<Self, MelError> {
        if n_mels == 0 {
            return Err(MelError::NoMelBins);
        }
        let expected = n_mels * N_FREQ_BINS;
        if filters.len() != expected {
            return Err(MelError::FilterShape {
                n_mels,
                expected,
                got: filters.len(),
            });
        }
        let mut bands = Vec::with_capacity(n_mels);
        for (mel, row) in filters.chunks_exact(N_FREQ_BINS).enumerate() {
            if let Some(bin) = row.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(MelError::BadFilterValue {
                    mel,
                    bin,
                    value: row[bin],
                });
            }
            let first = row.iter().position(|&v| v != 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&v| v != 0.0).map_or(0, |i| i + 1);
            bands.push(first..last.max(first));
        }
        Ok(MelFrontend {
            n_mels,
            filters,
            bands,
            hann: hann_window(),
            fft: RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT),
        })
    }

    /// Mel bins (rows of the filterbank).
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The whole-file normalised log-mel of 16 kHz mono `samples` (see the module docs).
    /// Samples should be finite ([`crate::audio::load_wav`] guarantees it); a NaN would end up
    /// as the clamp floor in the frames it touches.
    /// Allocates the result and one set of per-call scratch buffers, nothing per frame.
    pub fn compute(&self, samples: &[f32]) -> LogMel {
        let padded_len = samples.len() + TAIL_PADDING;
        let n_frames = padded_len / HOP_LENGTH;
        let mut data = vec![0f32; self.n_mels * n_frames];
        let mut scratch = FrameScratch::new(self.fft.as_ref());
        let mut frame = [0f32; N_FFT];
        let mut column = vec![0f32; self.n_mels];
        let mut max = f32::NEG_INFINITY;
        for t in 0..n_frames {
            read_frame(samples, t, &mut frame);
            self.log_mel_frame(&frame, &mut scratch, &mut column);
            for (mel, &log) in column.iter().enumerate() {
                max = max.max(log);
                data[mel * n_frames + t] = log;
            }
        }
        let floor = max - 8.0;
        for v in &mut data {
            *v = normalise(*v, floor);
        }
        LogMel {
            n_mels: self.n_mels,
            n_frames,
            content_frames: samples.len() / HOP_LENGTH,
            data,
        }
    }

    /// One frame's `log10(max(mel, 1e-10))` for every mel bin (before the clamp), from the 400
    /// samples of STFT frame `frame`. The one definition [`MelFrontend::compute`] and the
    /// streaming frontend ([`crate::mel_stream`]) share, so both give the same bits.
    pub(crate) fn log_mel_frame(
        &self,
        frame: &[f32; N_FFT],
        scratch: &mut FrameScratch,
        out: &mut [f32],
    ) {
        scratch.power_spectrum(self.fft.as_ref(), frame, &self.hann);
        for ((mel, band), o) in self.bands.iter().enumerate().zip(out.iter_mut()) {
            let weights = &self.filters[mel * N_FREQ_BINS..][band.clone()];
            let power = &scratch.power[band.clone()];
            let energy: f64 = weights
                .iter()
                .zip(power)
                .map(|(&w, &p)| w as f64 * p as f64)
                .sum();
            *o = log10_f32((energy as f32).max(1e-10));
        }
    }

    /// Scratch buffers for [`MelFrontend::log_mel_frame`].
    pub(crate) fn scratch(&self) -> FrameScratch {
        FrameScratch::new(self.fft.as_ref())
    }
}

/// The clamp and normalisation of one log value: `(max(x, floor) + 4) / 4` in f32, with
/// `floor` = the file's max − 8.
#[inline]
pub(crate) fn normalise(x: f32, floor: f32) -> f32 {
    (x.max(floor) + 4.0) / 4.0
}

/// Buffers for one frame's FFT, reused across frames.
pub(crate) struct FrameScratch {
    input: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    fft_scratch: Vec<Complex<f64>>,
    power: Vec<f32>,
}

impl FrameScratch {
    fn new(fft: &dyn RealToComplex<f64>) -> Self {
        FrameScratch {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            fft_scratch: fft.make_scratch_vec(),
            power: vec![0f32; N_FREQ_BINS],
        }
    }

    /// `self.power` = numpy's `abs(rfft(frame * hann).astype(complex64)) ** 2` in f32.
    fn power_spectrum(&mut self, fft: &dyn RealToComplex<f64>, frame: &[f32; N_FFT], hann: &[f32]) {
        for ((x, &s), &w) in self.input.iter_mut().zip(frame).zip(hann) {
            *x = (s * w) as f64;
        }
        fft.process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.fft_scratch)
            .expect("FFT buffers are made by the plan itself, so their lengths match");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            // complex64 components, then |X| as glibc hypotf (exact squares summed in f64,
            // sqrt, rounded to f32), then squared in f32.
            let (re, im) = (c.re as f32 as f64, c.im as f32 as f64);
            let magnitude = (re * re + im * im).sqrt() as f32;
            *p = magnitude * magnitude;
        }
    }
}

/// Copies STFT frame `t` (400 samples from padded position `t · 160`) of the padded signal:
/// `samples`, then 160 zeros, reflect-padded by 200 each side.
pub(crate) fn read_frame(samples: &[f32], t: usize, frame: &mut [f32; N_FFT]) {
    let start = t * HOP_LENGTH;
    if start >= CENTER_PADDING && start - CENTER_PADDING + N_FFT <= samples.len() {
        frame.copy_from_slice(&samples[start - CENTER_PADDING..][..N_FFT]);
        return;
    }
    let len = samples.len() + TAIL_PADDING;
    for (k, out) in frame.iter_mut().enumerate() {
        let index = reflect_index(start as i64 + k as i64 - CENTER_PADDING as i64, len);
        *out = samples.get(index).copied().unwrap_or(0.0);
    }
}

/// numpy `np.pad(mode="reflect")` index: position `i` (may be outside `0..len`) of a signal of
/// `len >= 1` samples, reflected about the end samples without repeating them (period
/// `2 · (len − 1)`), as numpy does when the pad exceeds the signal.
pub(crate) fn reflect_index(i: i64, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as i64 - 1);
    let m = i.rem_euclid(period);
    (if m >= len as i64 { period - m } else { m }) as usize
}

/// `np.hanning(401)[:-1].astype(float32)`: numpy computes `0.5 + 0.5 · cos(π · n / 400)` for
/// n = −400, −398, …, 400 in f64.
fn hann_window() -> Vec<f32> {
    let m = (N_FFT + 1) as f64;
    (0..N_FFT)
        .map(|i| {
            let n = 1.0 - m + 2.0 * i as f64;
            (0.5 + 0.5 * (std::f64::consts::PI * n / (m - 1.0)).cos()) as f32
        })
        .collect()
}

/// log10 of an f32, computed in f64 and rounded once (a correctly rounded f32 log10 in all but
/// rare double-rounding cases).
fn log10_f32(x: f32) -> f32 {
    (x as f64).log10() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        /// Uniform in [-1, 1) from xorshift64*.
        fn uniform(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// A filterbank with one nonzero weight per row (mel m reads bin 2m + 1), so tests can
    /// predict mel values from the power spectrum.
    fn picking_filters(n_mels: usize) -> Vec<f32> {
        let mut f = vec![0f32; n_mels * N_FREQ_BINS];
        for m in 0..n_mels {
            f[m * N_FREQ_BINS + 2 * m + 1] = 1.0;
        }
        f
    }

    /// The FFT power spectrum against a naive f64 DFT of the same windowed frame. Tolerance:
    /// numpy's rounding of X to complex64 and |X|² to f32 gives ~3 f32 ulps (≈ 4e-7 relative);
    /// allow 1e-6 relative plus 1e-12 of the frame's peak for bins near zero.
    #[test]
    fn power_spectrum_matches_naive_dft() {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let hann = hann_window();
        let mut scratch = FrameScratch::new(fft.as_ref());
        let mut rng = Rng(12345);
        for _ in 0..5 {
            let mut frame = [0f32; N_FFT];
            frame.iter_mut().for_each(|x| *x = rng.uniform());
            scratch.power_spectrum(fft.as_ref(), &frame, &hann);
            let windowed: Vec<f64> = frame
                .iter()
                .zip(&hann)
                .map(|(&s, &w)| (s * w) as f64)
                .collect();
            let reference: Vec<f64> = (0..N_FREQ_BINS)
                .map(|k| {
                    let (mut re, mut im) = (0.0f64, 0.0f64);
                    for (n, &x) in windowed.iter().enumerate() {
                        let angle =
                            -2.0 * std::f64::consts::PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
                        re += x * angle.cos();
                        im += x * angle.sin();
                    }
                    re * re + im * im
                })
                .collect();
            let peak = reference.iter().cloned().fold(0.0, f64::max);
            for (k, (&p, &r)) in scratch.power.iter().zip(&reference).enumerate() {
                assert!(
                    (p as f64 - r).abs() <= 1e-6 * r + 1e-12 * peak,
                    "bin {k}: {p} vs {r}"
                );
            }
        }
    }

    /// Bit-exact against numpy's `np.hanning(401)[:-1].astype("float32")` (stored by
    /// `tests/make_mel_golden.py`).
    #[test]
    fn hann_window_matches_numpy() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../tests/goldens/mel_short.json")).unwrap();
        let numpy: Vec<f32> = golden["hann"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(hann_window(), numpy);
    }

    #[test]
    fn hann_window_is_periodic_and_symmetric() {
        let w = hann_window();
        assert_eq!(w.len(), N_FFT);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[200], 1.0);
        for i in 1..N_FFT {
            assert_eq!(w[i], w[N_FFT - i], "i = {i}");
        }
        assert!((w[100] - 0.5).abs() < 1e-7);
    }

    /// numpy: `np.pad(np.arange(5), (7, 7), mode="reflect")` =
    /// `[1 2 3 4 3 2 1 | 0 1 2 3 4 | 3 2 1 0 1 2 3]` (the pad exceeds the signal: it keeps
    /// reflecting).
    #[test]
    fn reflect_padding_matches_numpy() {
        let expected = [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3];
        let got: Vec<usize> = (-7..12).map(|i| reflect_index(i, 5)).collect();
        assert_eq!(got, expected);
        assert_eq!(reflect_index(-3, 1), 0);
        // Frame 0 of 300 samples + 160 zeros: padded[0..200] = x[200], x[199], …, x[1].
        let samples: Vec<f32> = (0..300).map(|i| i as f32).collect();
        let mut frame = [0f32; N_FFT];
        read_frame(&samples, 0, &mut frame);
        let expected: Vec<f32> = (1..=200).rev().chain(0..200).map(|i| i as f32).collect();
        assert_eq!(frame.to_vec(), expected);
        // The last frame reaches into the zero tail and reflects back over it.
        let t = (300 + 160) / HOP_LENGTH; // 2: the dropped frame is 2, read frame 2 anyway
        read_frame(&samples, t, &mut frame);
        let expected: Vec<f32> = (120..520)
            .map(|p| {
                let i = reflect_index(p as i64, 460);
                if i < 300 {
                    i as f32
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(frame.to_vec(), expected);
        assert_eq!(frame[399], 0.0); // padded position 519 -> index 2·459 − 519 = 399 -> zero tail
    }

    #[test]
    fn frame_counts() {
        let mel = MelFrontend::new(picking_filters(4), 4).unwrap();
        for n in [0usize, 1, 159, 160, 161, 479, 480, 16000, 16159] {
            let out = mel.compute(&vec![0.1; n]);
            assert_eq!(out.n_frames, n / 160 + 1, "n = {n}");
            assert_eq!(out.content_frames, n / 160, "n = {n}");
            assert_eq!(out.data.len(), 4 * out.n_frames);
        }
    }

    /// Silence: every mel is log10(1e-10) = −10, the max is −10, so everything is (−10+4)/4.
    #[test]
    fn silence_and_empty_input() {
        let mel = MelFrontend::new(picking_filters(3), 3).unwrap();
        for n in [0, 1000] {
            let out = mel.compute(&vec![0.0; n]);
            assert!(out.data.iter().all(|&v| v == -1.5), "n = {n}");
        }
        let empty = mel.compute(&[]);
        assert_eq!((empty.n_frames, empty.content_frames), (1, 0));
        let mut window = vec![7.0; 3 * WINDOW_FRAMES];
        assert_eq!(empty.window(0, &mut window), Ok(0));
        assert!(window.iter().all(|&v| v == 0.0));
    }

    /// A pure tone exactly on bin 21 (840 Hz): with the picking filterbank, mel 10 reads bin 21
    /// and every other mel reads an odd bin at least 2 bins away, where the periodic Hann window
    /// leaks nothing: those are clamped at the floor.
    #[test]
    fn clamp_at_global_max_minus_eight_and_normalise() {
        let n_mels = 12;
        let mel = MelFrontend::new(picking_filters(n_mels), n_mels).unwrap();
        let samples: Vec<f32> = (0..4000)
            .map(|i| (2.0 * std::f64::consts::PI * 21.0 * i as f64 / 400.0).sin() as f32)
            .collect();
        let out = mel.compute(&samples);
        let max = out.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let min = out.data.iter().cloned().fold(f32::INFINITY, f32::min);
        // Bin 21 is mel 10: the peak. A tone of amplitude 1 on an exact bin with a periodic Hann
        // window has |X| = 400/4 = 100 in the middle frames: power 1e4, log10 4, normalised 2.
        assert!((max - 2.0).abs() < 1e-4, "max {max}");
        assert!((min - (max - 2.0)).abs() < 1e-6); // clamped: (log max − 8 + 4)/4 = max − 2
        let middle = out.n_frames / 2;
        assert!((out.data[10 * out.n_frames + middle] - 2.0).abs() < 1e-4);
    }

    #[test]
    fn window_copies_and_zero_pads() {
        let n_mels = 2;
        let mel = MelFrontend::new(picking_filters(n_mels), n_mels).unwrap();
        let mut rng = Rng(7);
        let samples: Vec<f32> = (0..160 * 3500 + 37).map(|_| rng.uniform()).collect();
        let out = mel.compute(&samples);
        assert_eq!(out.content_frames, 3500);
        let mut window = vec![9.0; n_mels * WINDOW_FRAMES];
        assert_eq!(out.window(0, &mut window), Ok(3000));
        assert_eq!(&window[..3000], &out.data[..3000]);
        assert_eq!(
            &window[3000..],
            &out.data[out.n_frames..out.n_frames + 3000]
        );
        assert_eq!(out.window(3000, &mut window), Ok(500));
        for m in 0..n_mels {
            let row = &window[m * WINDOW_FRAMES..][..WINDOW_FRAMES];
            assert_eq!(&row[..500], &out.data[m * out.n_frames + 3000..][..500]);
            assert!(row[500..].iter().all(|&v| v == 0.0));
        }
        // The extra (non-content) frame is never copied.
        assert_eq!(out.window(3499, &mut window), Ok(1));
        assert_eq!(window[1], 0.0);
        assert_eq!(out.window(3500, &mut window), Ok(0));
        assert_eq!(out.window(usize::MAX, &mut window), Ok(0));
        assert!(window.iter().all(|&v| v == 0.0));
        let mut broken = out.clone();
        broken.content_frames = broken.n_frames + 1;
        assert!(matches!(
            broken.window(0, &mut window),
            Err(MelError::InconsistentLogMel { .. })
        ));
        broken.content_frames = out.content_frames;
        broken.data.pop();
        assert!(matches!(
            broken.window(0, &mut window),
            Err(MelError::InconsistentLogMel { .. })
        ));
        assert_eq!(
            out.window(0, &mut window[1..]),
            Err(MelError::WindowBufferSize {
                n_mels,
                expected: 6000,
                got: 5999
            })
        );
    }

    #[test]
    fn filterbank_errors() {
        assert_eq!(
            MelFrontend::new(vec![], 0).unwrap_err(),
            MelError::NoMelBins
        );
        assert!(matches!(
            MelFrontend::new(vec![0.0; 200], 1),
            Err(MelError::FilterShape { got: 200, .. })
        ));
        let mut f = picking_filters(2);
        f[N_FREQ_BINS + 5] = f32::NAN;
        assert!(matches!(
            MelFrontend::new(f, 2),
            Err(MelError::BadFilterValue { mel: 1, bin: 5, .. })
        ));
    }
}
