//! Silero VAD v6 (the network faster-whisper 1.2.1 runs as `assets/silero_vad_v6.onnx`), written
//! out: speech probability per 32 ms chunk of 16 kHz audio.
//!
//! Per chunk of 512 samples, with the previous chunk's last 64 samples in front (zeros before
//! the first chunk), 576 samples in all:
//! 1. STFT: right reflect-pad by 64 (numpy "reflect": the edge is not repeated) to 640, four
//!    frames of 256 at hop 128, each multiplied by the stored `[258, 256]` basis (rows 0..129 the
//!    real, 129..258 the imaginary parts of a Hann-windowed DFT); magnitude `√(re² + im²)`:
//!    `[4 frames, 129 bins]`.
//! 2. Four convolutions (kernel 3, padding 1), each followed by ReLU: 129→128 (stride 1),
//!    128→64 (stride 2), 64→64 (stride 2), 64→128 (stride 1): 4 → 4 → 2 → 1 → 1 frames.
//! 3. One LSTM cell (hidden 128, ONNX gate order i, o, f, c) whose state runs from chunk to
//!    chunk through the whole file.
//! 4. Decoder: ReLU, a 1 × 1 convolution 128 → 1, sigmoid.
//!
//! Steps 1–2 and the LSTM's input projection do not depend on the state, so they run for blocks
//! of chunks at once as matrix products on the runtime's f32 GEMM; only the recurrent half
//! (`128 → 512` per chunk) runs chunk by chunk.
//!
//! The stored basis is a periodic Hann window times the DFT (checked at load: every entry within
//! 1e-6 of `hann[n]·cos(2πkn/256)` / `−hann[n]·sin(2πkn/256)`), so step 1 runs as a real FFT
//! of the windowed frame: the same magnitudes, a 256-point FFT instead of a 258 × 256 product
//! (the VAD's largest cost).

use std::path::Path;

use std::sync::Arc;

use amanuensis_runtime::cpu::{gemm_bt, CpuPool, Epilogue};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use safetensors::SafeTensors;

use crate::load_error::{Dtype, LoadError};

/// Samples per chunk (32 ms at 16 kHz): one probability each.
pub const CHUNK: usize = 512;
/// Samples of the previous chunk fed in front of each chunk.
pub const CONTEXT: usize = 64;
/// The sample rate the network was trained for.
pub const SAMPLE_RATE: usize = 16_000;
/// Hidden size of the LSTM.
pub const HIDDEN: usize = 128;

const INPUT: usize = CONTEXT + CHUNK; // 576
const PADDED: usize = INPUT + 64; // 640
const N_FFT: usize = 256;
const HOP: usize = 128;
const FRAMES: usize = (PADDED - N_FFT) / HOP + 1; // 4
const BINS: usize = N_FFT / 2 + 1; // 129
/// Chunks whose state-free half runs as one block of matrix products.
const BLOCK: usize = 256;

/// `format` metadata of a Silero VAD file.
pub const FORMAT: &str = "amanuensis-silero-vad";
/// `format_version` this code reads.
pub const FORMAT_VERSION: &str = "1";

/// Tensor names and shapes of the file (f32, row-major).
pub mod names {
    pub const STFT_BASIS: &str = "stft.basis";
    pub const LSTM_WEIGHT_IH: &str = "lstm.weight_ih";
    pub const LSTM_WEIGHT_HH: &str = "lstm.weight_hh";
    pub const LSTM_BIAS_IH: &str = "lstm.bias_ih";
    pub const LSTM_BIAS_HH: &str = "lstm.bias_hh";
    pub const DECODER_WEIGHT: &str = "decoder.weight";
    pub const DECODER_BIAS: &str = "decoder.bias";

    /// `encoder.{i}.weight` / `encoder.{i}.bias` for the four convolutions.
    pub fn conv_weight(i: usize) -> String {
        format!("encoder.{i}.weight")
    }
    pub fn conv_bias(i: usize) -> String {
        format!("encoder.{i}.bias")
    }
}

/// The four convolutions: (input channels, output channels, stride).
pub const CONVS: [(usize, usize, usize); 4] =
    [(BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];

/// Every tensor of the file with its shape.
pub fn expected_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![(names::STFT_BASIS.to_string(), vec![2 * BINS, N_FFT])];
    for (i, &(c_in, c_out, _)) in CONVS.iter().enumerate() {
        t.push((names::conv_weight(i), vec![c_out, c_in, 3]));
        t.push((names::conv_bias(i), vec![c_out]));
    }
    t.push((names::LSTM_WEIGHT_IH.into(), vec![4 * HIDDEN, HIDDEN]));
    t.push((names::LSTM_WEIGHT_HH.into(), vec![4 * HIDDEN, HIDDEN]));
    t.push((names::LSTM_BIAS_IH.into(), vec![4 * HIDDEN]));
    t.push((names::LSTM_BIAS_HH.into(), vec![4 * HIDDEN]));
    t.push((names::DECODER_WEIGHT.into(), vec![HIDDEN]));
    t.push((names::DECODER_BIAS.into(), vec![1]));
    t
}

struct Conv {
    /// `[c_out, c_in · 3]` (PyTorch's `[c_out, c_in, 3]` flattened).
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    stride: usize,
}

/// The network's weights.
pub struct SileroVad {
    /// The periodic Hann window the stored basis applies.
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    convs: Vec<Conv>,
    weight_ih: Vec<f32>,
    weight_hh: Vec<f32>,
    /// `bias_ih + bias_hh`: both are added to every gate.
    bias: Vec<f32>,
    decoder_weight: Vec<f32>,
    decoder_bias: f32,
}

/// Buffers of one block of chunks (allocated once per [`SileroVad::speech_probs`] call).
struct Scratch {
    frame: Vec<f32>,
    bins: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    features: [Vec<f32>; 5],
    cols: Vec<f32>,
    gates_in: Vec<f32>,
}

impl SileroVad {
    /// Reads a file written by `weights-tools convert --from silero-onnx`.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a Silero VAD file (`path` names it in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, LoadError> {
        let p = || path.to_path_buf();
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| LoadError::NotSafetensors {
                path: p(),
                offset: 0,
                reason: e.to_string(),
            })?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| LoadError::NotSafetensors {
            path: p(),
            offset: 0,
            reason: e.to_string(),
        })?;
        let md = meta.metadata().clone().unwrap_or_default();
        let key = |k: &str| md.get(k).map(String::as_str);
        if key("format") != Some(FORMAT) {
            return Err(LoadError::BadMetadata {
                path: p(),
                key: "format".into(),
                reason: format!("{:?}, expected {FORMAT:?}", key("format")),
            });
        }
        if key("format_version") != Some(FORMAT_VERSION) {
            return Err(LoadError::UnsupportedFormatVersion {
                path: p(),
                found: key("format_version").unwrap_or("").into(),
                supported: FORMAT_VERSION,
            });
        }
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>, LoadError> {
            let t = st.tensor(name).map_err(|_| LoadError::MissingTensor {
                path: p(),
                name: name.into(),
            })?;
            if t.dtype() != Dtype::F32 {
                return Err(LoadError::Dtype {
                    path: p(),
                    name: name.into(),
                    expected: Dtype::F32,
                    got: t.dtype(),
                });
            }
            if t.shape() != shape {
                return Err(LoadError::Shape {
                    path: p(),
                    name: name.into(),
                    expected: shape.to_vec(),
                    got: t.shape().to_vec(),
                });
            }
            let data: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(LoadError::BadMetadata {
                    path: p(),
                    key: name.into(),
                    reason: format!("element {i} is not finite"),
                });
            }
            Ok(data)
        };
        let shapes = expected_tensors();
        let get = |i: usize| tensor(&shapes[i].0, &shapes[i].1);
        let basis = get(0)?;
        let window = hann_dft_window(&basis).ok_or_else(|| LoadError::BadMetadata {
            path: p(),
            key: names::STFT_BASIS.into(),
            reason: "not a periodic-Hann-windowed DFT of 256 points (within 1e-6)".into(),
        })?;
        let mut convs = Vec::with_capacity(CONVS.len());
        for (i, &(c_in, c_out, stride)) in CONVS.iter().enumerate() {
            convs.push(Conv {
                weight: get(1 + 2 * i)?,
                bias: get(2 + 2 * i)?,
                c_in,
                c_out,
                stride,
            });
        }
        let n = 1 + 2 * CONVS.len();
        let weight_ih = get(n)?;
        let weight_hh = get(n + 1)?;
        let bias_ih = get(n + 2)?;
        let bias_hh = get(n + 3)?;
        let decoder_weight = get(n + 4)?;
        let decoder_bias = get(n + 5)?[0];
        Ok(Self {
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            convs,
            weight_ih,
            weight_hh,
            bias: bias_ih.iter().zip(&bias_hh).map(|(a, b)| a + b).collect(),
            decoder_weight,
            decoder_bias,
        })
    }

    /// Speech probabilities of 16 kHz mono `samples`, one per 512-sample chunk, exactly as
    /// faster-whisper's `SileroVADModel.__call__` after `get_speech_timestamps`' padding: the
    /// audio is zero-padded by `512 − len % 512` samples (a whole chunk when the length is
    /// already a multiple), so the result has `len / 512 + 1` entries, and the last 64 samples
    /// of the final chunk read as zeros (as faster-whisper's in-place context write makes them).
    pub fn speech_probs(&self, pool: &CpuPool, samples: &[f32]) -> Vec<f32> {
        let mut stream = self.stream(pool);
        stream.push(samples);
        stream.finish()
    }

    /// The same probabilities from samples pushed block by block: memory stays at one block of
    /// chunks whatever the input's length. The chunks are computed in the same blocks as
    /// [`SileroVad::speech_probs`] (`BLOCK` from the first, the rest at [`SpeechProbStream::finish`]),
    /// so every value is identical to the whole-input one.
    pub fn stream<'a>(&'a self, pool: &'a CpuPool) -> SpeechProbStream<'a> {
        SpeechProbStream {
            vad: self,
            pool,
            scratch: None,
            h: [0.0; HIDDEN],
            c: [0.0; HIDDEN],
            gates: [0.0; 4 * HIDDEN],
            held: Vec::new(),
            held_from: 0,
            first: 0,
            received: 0,
            probs: Vec::new(),
        }
    }

    fn scratch(&self, block: usize) -> Scratch {
        let rows = block * FRAMES;
        Scratch {
            frame: vec![0.0; N_FFT],
            bins: vec![Complex::default(); BINS],
            fft_scratch: vec![Complex::default(); self.fft.get_scratch_len()],
            features: [
                vec![0.0; rows * BINS],
                vec![0.0; rows * 128],
                vec![0.0; block * 2 * 64],
                vec![0.0; block * 64],
                vec![0.0; block * 128],
            ],
            cols: vec![0.0; rows * BINS * 3],
            gates_in: vec![0.0; block * 4 * HIDDEN],
        }
    }

    /// STFT magnitudes, the four convolutions and the LSTM input projection of chunks
    /// `first .. first + nb` into `s.gates_in` (`[nb, 512]`).
    fn block_features(
        &self,
        pool: &CpuPool,
        samples: SampleView<'_>,
        first: usize,
        nb: usize,
        s: &mut Scratch,
    ) {
        // Frames: [nb · 4, 256]. Before the start is the zero context, past the end the zero
        // padding; faster-whisper also zeroes the last 64 samples of the final chunk (its
        // `context[-1] = 0` writes through a view into the audio), and so do we.
        let sample = |i: isize| -> f32 {
            if i < 0 || i as usize >= samples.end {
                0.0
            } else {
                (i as usize)
                    .checked_sub(samples.offset)
                    .and_then(|j| samples.data.get(j))
                    .copied()
                    .unwrap_or(0.0)
            }
        };
        let mut input = [0f32; PADDED];
        let [mag, rest @ ..] = &mut s.features;
        for k in 0..nb {
            let start = ((first + k) * CHUNK) as isize - CONTEXT as isize;
            for (j, x) in input[..INPUT].iter_mut().enumerate() {
                *x = sample(start + j as isize);
            }
            for j in 0..PADDED - INPUT {
                input[INPUT + j] = input[INPUT - 2 - j];
            }
            for f in 0..FRAMES {
                let x = &input[f * HOP..f * HOP + N_FFT];
                for ((o, &v), &w) in s.frame.iter_mut().zip(x).zip(&self.window) {
                    *o = v * w;
                }
                self.fft
                    .process_with_scratch(&mut s.frame, &mut s.bins, &mut s.fft_scratch)
                    .expect("FFT buffers sized by the plan");
                let row = (k * FRAMES + f) * BINS;
                for (o, z) in mag[row..row + BINS].iter_mut().zip(&s.bins) {
                    *o = (z.re * z.re + z.im * z.im).sqrt();
                }
            }
        }
        // Convolutions, chunk by chunk in time ([nb, t, c] time-major), batched over chunks.
        let mut t_in = FRAMES;
        let mut x: &[f32] = &mag[..];
        for (conv, out) in self.convs.iter().zip(rest.iter_mut()) {
            let t_out = (t_in - 1) / conv.stride + 1;
            let k = conv.c_in * 3;
            let m = nb * t_out;
            let cols = &mut s.cols[..m * k];
            for b in 0..nb {
                let xb = &x[b * t_in * conv.c_in..(b + 1) * t_in * conv.c_in];
                for t in 0..t_out {
                    let row = &mut cols[(b * t_out + t) * k..(b * t_out + t + 1) * k];
                    for tap in 0..3 {
                        let src = (t * conv.stride + tap).checked_sub(1).filter(|&u| u < t_in);
                        for ci in 0..conv.c_in {
                            row[ci * 3 + tap] = src.map_or(0.0, |u| xb[u * conv.c_in + ci]);
                        }
                    }
                }
            }
            let out = &mut out[..m * conv.c_out];
            gemm_bt(
                pool,
                cols,
                m,
                k,
                &conv.weight,
                conv.c_out,
                Some(&conv.bias),
                Epilogue::Store,
                out,
            );
            out.iter_mut().for_each(|v| *v = v.max(0.0));
            t_in = t_out;
            x = out;
        }
        gemm_bt(
            pool,
            &x[..nb * HIDDEN],
            nb,
            HIDDEN,
            &self.weight_ih,
            4 * HIDDEN,
            Some(&self.bias),
            Epilogue::Store,
            &mut s.gates_in[..nb * 4 * HIDDEN],
        );
    }

    /// One LSTM step from the chunk's input gates, then the decoder: the speech probability.
    fn step(
        &self,
        gates_in: &[f32],
        h: &mut [f32; HIDDEN],
        c: &mut [f32; HIDDEN],
        gates: &mut [f32; 4 * HIDDEN],
    ) -> f32 {
        for ((g, &gi), w) in gates
            .iter_mut()
            .zip(gates_in)
            .zip(self.weight_hh.chunks_exact(HIDDEN))
        {
            *g = gi + dot(w, h);
        }
        let (i, rest) = gates.split_at(HIDDEN);
        let (o, rest) = rest.split_at(HIDDEN);
        let (f, g) = rest.split_at(HIDDEN);
        for k in 0..HIDDEN {
            c[k] = sigmoid(f[k]) * c[k] + sigmoid(i[k]) * tanh(g[k]);
            h[k] = sigmoid(o[k]) * tanh(c[k]);
        }
        let z: f32 = self
            .decoder_weight
            .iter()
            .zip(h.iter())
            .map(|(w, &v)| w * v.max(0.0))
            .sum();
        sigmoid(z + self.decoder_bias)
    }
}

/// Samples `data` starting at global index `offset`; indices from `end` on read as zero.
#[derive(Clone, Copy)]
struct SampleView<'a> {
    data: &'a [f32],
    offset: usize,
    end: usize,
}

/// Speech probabilities of samples pushed as they are decoded ([`SileroVad::stream`]).
pub struct SpeechProbStream<'a> {
    vad: &'a SileroVad,
    pool: &'a CpuPool,
    scratch: Option<Scratch>,
    h: [f32; HIDDEN],
    c: [f32; HIDDEN],
    gates: [f32; 4 * HIDDEN],
    /// Samples from global index `held_from` on (the context of chunk `first` and after).
    held: Vec<f32>,
    held_from: usize,
    /// The first chunk without a probability yet.
    first: usize,
    received: usize,
    probs: Vec<f32>,
}

impl SpeechProbStream<'_> {
    /// Takes the next samples; computes every whole block of chunks that cannot be the last.
    pub fn push(&mut self, samples: &[f32]) {
        self.held.extend_from_slice(samples);
        self.received += samples.len();
        // Chunk k is not the final one once (k + 1) · 512 samples have arrived (the final chunk
        // is the one that reaches past the input's end), so it reads no padding.
        while (self.first + BLOCK) * CHUNK <= self.received {
            let mut held = std::mem::take(&mut self.held);
            let view = SampleView {
                data: &held,
                offset: self.held_from,
                end: usize::MAX,
            };
            self.run_block(view, BLOCK);
            let keep_from = self.first * CHUNK - CONTEXT;
            held.drain(..keep_from - self.held_from);
            self.held = held;
            self.held_from = keep_from;
        }
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> usize {
        self.received
    }

    /// The probabilities of the whole input: `samples / 512 + 1` of them.
    pub fn finish(mut self) -> Vec<f32> {
        let n_chunks = self.received / CHUNK + 1;
        let end = n_chunks * CHUNK - CONTEXT;
        let held = std::mem::take(&mut self.held);
        while self.first < n_chunks {
            let view = SampleView {
                data: &held,
                offset: self.held_from,
                end,
            };
            self.run_block(view, BLOCK.min(n_chunks - self.first));
        }
        self.probs
    }

    fn run_block(&mut self, view: SampleView<'_>, nb: usize) {
        let vad = self.vad;
        let scratch = self.scratch.get_or_insert_with(|| vad.scratch(BLOCK));
        vad.block_features(self.pool, view, self.first, nb, scratch);
        for row in scratch.gates_in.chunks_exact(4 * HIDDEN).take(nb) {
            self.probs
                .push(vad.step(row, &mut self.h, &mut self.c, &mut self.gates));
        }
        self.first += nb;
    }
}

/// The window `w` if `basis` (`[258, 256]`) is `w[n]·cos(2πkn/256)` over
/// `−w[n]·sin(2πkn/256)` with `w` the periodic Hann window, every entry within 1e-6.
fn hann_dft_window(basis: &[f32]) -> Option<Vec<f32>> {
    let tau = 2.0 * std::f64::consts::PI;
    let window: Vec<f64> = (0..N_FFT)
        .map(|n| 0.5 - 0.5 * (tau * n as f64 / N_FFT as f64).cos())
        .collect();
    for k in 0..BINS {
        for n in 0..N_FFT {
            let angle = tau * ((k * n) % N_FFT) as f64 / N_FFT as f64;
            let re = window[n] * angle.cos();
            let im = -window[n] * angle.sin();
            if (basis[k * N_FFT + n] as f64 - re).abs() > 1e-6
                || (basis[(BINS + k) * N_FFT + n] as f64 - im).abs() > 1e-6
            {
                return None;
            }
        }
    }
    Some(window.iter().map(|&w| w as f32).collect())
}

/// Dot product in eight lanes (vectorises; the order is fixed, so results are reproducible).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `tanh x = 1 − 2 / (e^{2x} + 1)`: one `exp` (libm's `tanhf` took a quarter of the VAD's time);
/// within 2e-7 absolute of `f32::tanh` (tested), saturating to ±1.
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / ((2.0 * x).exp() + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_matches_libm() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-7, "{worst}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
    }

    #[test]
    fn the_basis_check_accepts_hann_dft_and_nothing_else() {
        let tau = 2.0 * std::f64::consts::PI;
        let mut basis = vec![0f32; 2 * BINS * N_FFT];
        for k in 0..BINS {
            for n in 0..N_FFT {
                let w = 0.5 - 0.5 * (tau * n as f64 / N_FFT as f64).cos();
                let a = tau * (k * n) as f64 / N_FFT as f64;
                basis[k * N_FFT + n] = (w * a.cos()) as f32;
                basis[(BINS + k) * N_FFT + n] = (-w * a.sin()) as f32;
            }
        }
        let w = hann_dft_window(&basis).expect("a Hann DFT");
        assert_eq!(w[0], 0.0);
        assert!((w[128] - 1.0).abs() < 1e-7);
        basis[5 * N_FFT + 7] += 1e-4;
        assert!(hann_dft_window(&basis).is_none());
    }
}
