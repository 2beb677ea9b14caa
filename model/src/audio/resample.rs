//! Sample-rate conversion to 16 kHz: a Kaiser-windowed sinc (band-limited) interpolator.
//!
//! Written here rather than taken from a crate: one fixed target rate needs ~150 lines, and it
//! keeps the dependency list short and the arithmetic visible.
//!
//! Output sample `j` is the band-limited input evaluated at input time `j · rate / 16000`
//! (the first output sample sits on the first input sample); input outside the file is zero.
//! The output has `round(n · 16000 / rate)` samples, halves rounded up ([`output_len`]).
//!
//! Filter: low-pass at `CUTOFF` (0.94) × the lower Nyquist frequency, `ZERO_CROSSINGS` (32) sinc lobes
//! each side, Kaiser window β = 8 (stop band ≈ −80 dB, pass-band ripple ≈ 1e-4).
//! When downsampling, the transition band is about 7.0–8.1 kHz. Each filter phase is scaled to
//! unit DC gain. Rates whose ratio to 16000 is a small fraction use a precomputed polyphase
//! table; other rates compute each output's taps directly (slower, same result).

use super::error::AudioError;

/// The rate Whisper consumes.
pub const TARGET_RATE: u32 = 16_000;
/// Lowest accepted input rate in Hz.
pub const MIN_INPUT_RATE: u32 = 1_000;
/// Highest accepted input rate in Hz (bounds the filter length, so hostile headers cannot
/// make a conversion arbitrarily slow).
pub const MAX_INPUT_RATE: u32 = 768_000;

/// Pass-band edge as a fraction of the lower of the two Nyquist frequencies.
const CUTOFF: f64 = 0.94;
/// Sinc zero crossings on each side of the centre (filter length in units of the cutoff period).
const ZERO_CROSSINGS: f64 = 32.0;
/// Kaiser window shape: β = 8 gives ≈ 80 dB side-lobe attenuation.
const KAISER_BETA: f64 = 8.0;
/// Largest polyphase table (coefficients) built; beyond it taps are computed per output.
const MAX_TABLE: usize = 1 << 21;

/// Number of output samples for `n` input samples at `rate`: `round(n · 16000 / rate)`, halves
/// rounded up.
pub fn output_len(n: usize, rate: u32) -> usize {
    let rate = rate as u128;
    ((n as u128 * TARGET_RATE as u128 + rate / 2) / rate) as usize
}

/// Converts mono samples at `rate` Hz to 16 kHz. At 16 kHz the samples are returned unchanged
/// (bit-exact copy).
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&rate) {
        return Err(AudioError::UnsupportedSampleRate { path: None, rate });
    }
    if rate == TARGET_RATE {
        return Ok(samples.to_vec());
    }
    Ok(Resampler::new(rate).run(samples, MAX_TABLE))
}

/// A conversion `rate` → 16 kHz as the rational step `down / up` input samples per output sample.
#[derive(Clone)]
struct Resampler {
    rate: u32,
    up: u64,
    down: u64,
    /// Cutoff in cycles per input sample.
    cutoff: f64,
    /// Half the filter length in input samples.
    half_width: f64,
    /// Taps per output: input samples `floor(t) − taps/2 + 1 ..= floor(t) + taps/2`.
    taps: usize,
}

impl Resampler {
    fn new(rate: u32) -> Self {
        let g = gcd(rate as u64, TARGET_RATE as u64);
        let cutoff = CUTOFF * 0.5 * (TARGET_RATE.min(rate) as f64) / rate as f64;
        let half_width = ZERO_CROSSINGS / (2.0 * cutoff);
        let taps = 2 * half_width.ceil() as usize;
        Resampler {
            rate,
            up: TARGET_RATE as u64 / g,
            down: rate as u64 / g,
            cutoff,
            half_width,
            taps,
        }
    }

    /// The filter at `x` input samples from the interpolation point.
    fn kernel(&self, x: f64) -> f64 {
        let r = x / self.half_width;
        if r.abs() >= 1.0 {
            return 0.0;
        }
        let arg = 2.0 * self.cutoff * x;
        let sinc = if arg == 0.0 {
            1.0
        } else {
            (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
        };
        2.0 * self.cutoff * sinc * bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt())
            / bessel_i0(KAISER_BETA)
    }

    /// Fills `out` (length `taps`) with the unit-DC-gain taps for fractional position
    /// `phase / phases`.
    fn phase_taps(&self, phase: u64, phases: u64, out: &mut [f32]) {
        let frac = phase as f64 / phases as f64;
        let first = 1 - (self.taps as i64 / 2);
        let mut sum = 0.0;
        for (k, o) in out.iter_mut().enumerate() {
            let value = self.kernel(frac - (first + k as i64) as f64);
            sum += value;
            *o = value as f32;
        }
        let scale = (1.0 / sum) as f32;
        for o in out.iter_mut() {
            *o *= scale;
        }
    }

    /// The coefficient table: `Exact` holds every phase (`up` rows); when that would exceed
    /// `max_table` coefficients, `Interpolated` holds `rows + 1` evenly spaced phases and each
    /// output's taps are interpolated linearly between the two nearest rows (so absurd rates cost
    /// 3 × taps per output instead of taps Bessel evaluations).
    fn table(&self, max_table: usize) -> Table {
        let taps = self.taps;
        if (self.up as usize).saturating_mul(taps) <= max_table {
            let mut table = vec![0f32; self.up as usize * taps];
            for (phase, row) in table.chunks_exact_mut(taps).enumerate() {
                self.phase_taps(phase as u64, self.up, row);
            }
            return Table::Exact(table);
        }
        let rows = (max_table / taps).clamp(64, 4096);
        let mut table = vec![0f32; (rows + 1) * taps];
        for (phase, row) in table.chunks_exact_mut(taps).enumerate() {
            self.phase_taps(phase as u64, rows as u64, row);
        }
        Table::Interpolated { rows, table }
    }

    /// Converts a whole `input`; `max_table` caps the polyphase table size (tests force both
    /// paths).
    fn run(&self, input: &[f32], max_table: usize) -> Vec<f32> {
        let mut stream = StreamResampler::with_table(self.clone(), max_table);
        let mut out = Vec::with_capacity(output_len(input.len(), self.rate));
        stream.push(input, &mut out);
        stream.finish(&mut out);
        out
    }
}

/// Polyphase coefficients.
enum Table {
    Exact(Vec<f32>),
    Interpolated { rows: usize, table: Vec<f32> },
}

/// Resampling to 16 kHz as a stream: [`StreamResampler::push`] input blocks, then
/// [`StreamResampler::finish`]. Gives exactly the samples of [`resample_to_16k`] on the whole
/// input (same taps, same summation order), holding only one filter length of input.
pub struct StreamResampler {
    resampler: Resampler,
    table: Table,
    scratch: Vec<f32>,
    /// Input samples from absolute index `first` on.
    input: Vec<f32>,
    first: u64,
    /// Input samples received.
    received: u64,
    /// Next output index.
    next: u64,
}

impl StreamResampler {
    /// A stream from `rate` Hz (checked) to 16 kHz.
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&rate) {
            return Err(AudioError::UnsupportedSampleRate { path: None, rate });
        }
        Ok(Self::with_table(Resampler::new(rate), MAX_TABLE))
    }

    fn with_table(resampler: Resampler, max_table: usize) -> Self {
        let table = resampler.table(max_table);
        StreamResampler {
            scratch: vec![0f32; resampler.taps],
            resampler,
            table,
            input: Vec::new(),
            first: 0,
            received: 0,
            next: 0,
        }
    }

    /// Feeds input samples; appends every output sample they complete.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        self.input.extend_from_slice(samples);
        self.received += samples.len() as u64;
        self.emit(None, out);
        // Keep input from the next output's first tap on.
        let keep_from = self.first_tap(self.next).max(0) as u64;
        if keep_from > self.first {
            let drop = ((keep_from - self.first) as usize).min(self.input.len());
            self.input.drain(..drop);
            self.first += drop as u64;
        }
    }

    /// Ends the input: appends the remaining outputs (taps past the end read zeros).
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let total = output_len(self.received as usize, self.resampler.rate) as u64;
        self.emit(Some(total), out);
    }

    /// Input index of output `j`'s first tap.
    fn first_tap(&self, j: u64) -> i64 {
        let r = &self.resampler;
        let pos = j as u128 * r.down as u128;
        (pos / r.up as u128) as i64 - r.taps as i64 / 2 + 1
    }

    /// Emits outputs while their taps are all received, or up to `end` when the input ended.
    fn emit(&mut self, end: Option<u64>, out: &mut Vec<f32>) {
        let r = &self.resampler;
        let taps = r.taps;
        loop {
            let j = self.next;
            let start = self.first_tap(j);
            match end {
                Some(end) if j >= end => break,
                None if start + taps as i64 > self.received as i64 => break,
                _ => {}
            }
            let pos = j as u128 * r.down as u128;
            let phase = (pos % r.up as u128) as u64;
            let coefficients: &[f32] = match &self.table {
                Table::Exact(t) => &t[phase as usize * taps..][..taps],
                Table::Interpolated { rows, table } => {
                    let x = phase as f64 * *rows as f64 / r.up as f64;
                    let row = (x as usize).min(rows - 1);
                    let w = (x - row as f64) as f32;
                    let (a, b) = (
                        &table[row * taps..][..taps],
                        &table[(row + 1) * taps..][..taps],
                    );
                    for ((s, &a), &b) in self.scratch.iter_mut().zip(a).zip(b) {
                        *s = a + w * (b - a);
                    }
                    &self.scratch
                }
            };
            // Clip the tap range to the input received (zeros outside the file).
            let lo = (-start).max(0) as usize;
            let hi = ((self.received as i64 - start).min(taps as i64)).max(lo as i64) as usize;
            let from = (start + lo as i64) as u64 - self.first;
            let from = from as usize;
            out.push(
                dot(&coefficients[lo..hi], &self.input[from..from + (hi - lo)]).clamp(-1.0, 1.0),
            );
            self.next += 1;
        }
    }
}

/// Dot product with eight independent accumulators (vectorises; the sum order is fixed).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Modified Bessel function of the first kind, order 0 (power series; converges for all x).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin())
                    as f32
            })
            .collect()
    }

    /// Least-squares fit of `a·sin + b·cos` at `freq` Hz (16 kHz samples) over `range`; returns
    /// (amplitude, phase in radians, RMS residual).
    fn fit(samples: &[f32], freq: f64, range: std::ops::Range<usize>) -> (f64, f64, f64) {
        let w = 2.0 * std::f64::consts::PI * freq / TARGET_RATE as f64;
        let (mut ss, mut cc, mut sc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in range.clone() {
            let (s, c, y) = (
                (w * i as f64).sin(),
                (w * i as f64).cos(),
                samples[i] as f64,
            );
            ss += s * s;
            cc += c * c;
            sc += s * c;
            ys += y * s;
            yc += y * c;
        }
        let det = ss * cc - sc * sc;
        let a = (ys * cc - yc * sc) / det;
        let b = (yc * ss - ys * sc) / det;
        let mut residual = 0.0;
        for i in range.clone() {
            let model = a * (w * i as f64).sin() + b * (w * i as f64).cos();
            residual += (samples[i] as f64 - model).powi(2);
        }
        (
            a.hypot(b),
            b.atan2(a),
            (residual / range.len() as f64).sqrt(),
        )
    }

    #[test]
    fn output_length_rule() {
        assert_eq!(output_len(44100, 44100), 16000);
        assert_eq!(output_len(1, 44100), 0); // 0.363 -> 0
        assert_eq!(output_len(2, 44100), 1); // 0.726 -> 1
        assert_eq!(output_len(3, 32000), 2); // 1.5 -> 2 (half up)
        assert_eq!(output_len(5, 8000), 10);
        assert_eq!(output_len(0, 48000), 0);
    }

    #[test]
    fn sixteen_khz_passes_through_bit_exact() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let y = resample_to_16k(&x, 16000).unwrap();
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    /// A pass-band sine keeps frequency, amplitude and phase (phase 0: output 0 is input 0).
    /// Tolerances: amplitude 1e-3 relative and residual RMS 1e-3 of the amplitude — the filter's
    /// pass-band ripple is ~1e-4 and f32 rounding ~1e-6; a wrong frequency (even 0.1 %) over
    /// 1 s would leave a residual of order the amplitude. Edges (one filter length) are excluded.
    #[test]
    fn sines_keep_frequency_and_amplitude() {
        for &rate in &[8000u32, 11025, 22050, 44100, 48000, 96000, 44101] {
            for &freq in &[440.0, 1000.0, 3000.0] {
                if freq > 0.4 * rate as f64 {
                    continue;
                }
                let x = sine(rate, freq, 0.5, 1.0);
                let y = resample_to_16k(&x, rate).unwrap();
                assert_eq!(y.len(), output_len(x.len(), rate));
                let edge = 200;
                let (amplitude, phase, residual) = fit(&y, freq, edge..y.len() - edge);
                assert!(
                    (amplitude / 0.5 - 1.0).abs() < 1e-3,
                    "{rate} {freq}: {amplitude}"
                );
                assert!(phase.abs() < 1e-3, "{rate} {freq}: phase {phase}");
                assert!(residual < 0.5e-3, "{rate} {freq}: residual {residual}");
            }
        }
    }

    /// Above the output Nyquist frequency a tone is removed: 10 kHz at 48 kHz must come out
    /// below −70 dB (the stop band is ≈ −80 dB).
    #[test]
    fn aliases_are_rejected() {
        let x = sine(48000, 10_000.0, 0.5, 1.0);
        let y = resample_to_16k(&x, 48000).unwrap();
        let rms = (y[200..y.len() - 200]
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            / (y.len() - 400) as f64)
            .sqrt();
        assert!(
            rms < 0.5 / 2f64.sqrt() * 10f64.powf(-70.0 / 20.0),
            "rms {rms}"
        );
    }

    /// The interpolated table (rates whose exact table is too big) stays within 2e-5 of the
    /// exact taps on a pass-band sine: linear interpolation between 64+ phases of a smooth
    /// kernel errs by about (1/rows)² of its curvature, far below 16-bit quantisation (3e-5).
    #[test]
    fn interpolated_table_is_close_to_exact() {
        let x = sine(44100, 1234.5, 0.3, 0.2);
        let r = Resampler::new(44100);
        let exact = r.run(&x, MAX_TABLE);
        let interpolated = r.run(&x, 0);
        assert_eq!(exact.len(), interpolated.len());
        let worst = exact
            .iter()
            .zip(&interpolated)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 2e-5, "{worst}");
    }

    /// Streaming in blocks of any size gives exactly the whole-input result.
    #[test]
    fn streaming_equals_whole_input() {
        for &rate in &[8000u32, 44100, 48000, 22051] {
            let x = sine(rate, 440.0, 0.5, 0.37);
            let whole = resample_to_16k(&x, rate).unwrap();
            for block in [1usize, 7, 160, 4096, x.len()] {
                let mut s = StreamResampler::new(rate).unwrap();
                let mut out = Vec::new();
                for chunk in x.chunks(block) {
                    s.push(chunk, &mut out);
                }
                s.finish(&mut out);
                assert_eq!(out, whole, "rate {rate} block {block}");
                assert!(
                    s.input.len() <= s.resampler.taps + block,
                    "held {}",
                    s.input.len()
                );
            }
        }
    }

    /// A hostile rate (767 999 Hz: no small polyphase table) costs a bounded number of
    /// operations per output: the interpolated table, not per-output Bessel evaluations.
    #[test]
    fn absurd_rates_use_the_interpolated_table() {
        let r = Resampler::new(767_999);
        assert!(matches!(r.table(MAX_TABLE), Table::Interpolated { .. }));
        let x = sine(767_999, 1000.0, 0.5, 0.05);
        let y = resample_to_16k(&x, 767_999).unwrap();
        let (amplitude, _, _) = fit(&y, 1000.0, 200..y.len() - 200);
        assert!((amplitude / 0.5 - 1.0).abs() < 1e-3, "{amplitude}");
    }

    #[test]
    fn rates_out_of_range_are_typed_errors() {
        for rate in [0, 999, 768_001, u32::MAX] {
            assert!(matches!(
                resample_to_16k(&[0.0], rate),
                Err(AudioError::UnsupportedSampleRate { rate: r, .. }) if r == rate
            ));
        }
    }

    #[test]
    fn bessel_i0_matches_known_values() {
        // I0(0) = 1, I0(1) = 1.2660658777520082, I0(8) = 427.56411572180474.
        assert_eq!(bessel_i0(0.0), 1.0);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_2).abs() < 1e-15);
        assert!((bessel_i0(8.0) / 427.564_115_721_804_74 - 1.0).abs() < 1e-14);
    }
}
