//! The log-mel frontend as a stream: 16 kHz samples pushed in blocks, log-mel frames out as soon
//! as every sample they touch has arrived, with the same bits as [`MelFrontend::compute`].
//!
//! A frame `t` covers padded positions `t·160 − 200 .. t·160 + 200`. Before the input ends it can
//! be computed once position `t·160 + 200` has arrived (the reflection at the start only reads
//! samples 1..=200); the last frames, which reflect around the end of `samples + 160 zeros`,
//! wait for [`LogMelFramer::finish`]. Only one frame's reach of samples is held.
//!
//! The frames are the *raw* `log10(max(mel, 1e-10))` values: the clamp at (global max − 8)
//! needs the whole file's max, which [`crate::mel_windows::StreamedLogMel`] finds first.

use crate::mel::{
    reflect_index, FrameScratch, MelFrontend, CENTER_PADDING, HOP_LENGTH, N_FFT, TAIL_PADDING,
};

/// Samples in, raw log-mel frames out.
pub struct LogMelFramer {
    frontend: MelFrontend,
    scratch: FrameScratch,
    frame: Box<[f32; N_FFT]>,
    column: Vec<f32>,
    /// Samples from absolute index `first` on.
    samples: Vec<f32>,
    first: usize,
    received: usize,
    next_frame: usize,
}

impl LogMelFramer {
    /// A framer for `frontend`'s filterbank.
    pub fn new(frontend: MelFrontend) -> Self {
        LogMelFramer {
            scratch: frontend.scratch(),
            column: vec![0f32; frontend.n_mels()],
            frontend,
            frame: Box::new([0f32; N_FFT]),
            samples: Vec::new(),
            first: 0,
            received: 0,
            next_frame: 0,
        }
    }

    /// Mel bins per frame.
    pub fn n_mels(&self) -> usize {
        self.column.len()
    }

    /// Samples received so far.
    pub fn samples_received(&self) -> usize {
        self.received
    }

    /// Feeds samples; calls `sink` with each frame (`n_mels` raw log values) they complete.
    pub fn push<E>(
        &mut self,
        samples: &[f32],
        sink: &mut impl FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.samples.extend_from_slice(samples);
        self.received += samples.len();
        while self.next_frame * HOP_LENGTH + CENTER_PADDING < self.received {
            self.emit(None, sink)?;
        }
        let keep_from = (self.next_frame * HOP_LENGTH).saturating_sub(CENTER_PADDING);
        if keep_from > self.first {
            let drop = (keep_from - self.first).min(self.samples.len());
            self.samples.drain(..drop);
            self.first += drop;
        }
        Ok(())
    }

    /// Ends the input: emits the remaining frames; the total is `N / 160 + 1` for N samples.
    pub fn finish<E>(&mut self, sink: &mut impl FnMut(&[f32]) -> Result<(), E>) -> Result<(), E> {
        let n_frames = (self.received + TAIL_PADDING) / HOP_LENGTH;
        while self.next_frame < n_frames {
            self.emit(Some(self.received + TAIL_PADDING), sink)?;
        }
        Ok(())
    }

    /// Computes frame `next_frame`; `padded_len` is known once the input ended.
    fn emit<E>(
        &mut self,
        padded_len: Option<usize>,
        sink: &mut impl FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.next_frame * HOP_LENGTH;
        if start >= CENTER_PADDING && start - CENTER_PADDING + N_FFT <= self.received {
            let from = start - CENTER_PADDING - self.first;
            self.frame
                .copy_from_slice(&self.samples[from..from + N_FFT]);
        } else {
            for (k, out) in self.frame.iter_mut().enumerate() {
                let p = start as i64 + k as i64 - CENTER_PADDING as i64;
                let index = match padded_len {
                    Some(len) => reflect_index(p, len),
                    None => p.unsigned_abs() as usize,
                };
                *out = if index < self.received {
                    self.samples[index - self.first]
                } else {
                    0.0
                };
            }
        }
        self.frontend
            .log_mel_frame(&self.frame, &mut self.scratch, &mut self.column);
        self.next_frame += 1;
        sink(&self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mel::N_FREQ_BINS;

    /// A smooth nonnegative filterbank with overlapping bands (every bin feeds some mel).
    fn filters(n_mels: usize) -> Vec<f32> {
        let mut f = vec![0f32; n_mels * N_FREQ_BINS];
        for m in 0..n_mels {
            for k in 0..N_FREQ_BINS {
                let centre = (m as f32 + 0.5) * N_FREQ_BINS as f32 / n_mels as f32;
                let d = (k as f32 - centre).abs();
                if d < 12.0 {
                    f[m * N_FREQ_BINS + k] = 1.0 - d / 12.0;
                }
            }
        }
        f
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every length (short ones reflect over the whole signal) and every block size gives the
    /// raw log values of the whole-file frontend bit for bit.
    #[test]
    fn stream_equals_whole_file() {
        let n_mels = 8;
        let frontend = MelFrontend::new(filters(n_mels), n_mels).unwrap();
        for n in [
            0usize, 1, 5, 159, 160, 199, 200, 201, 239, 401, 1000, 4321, 16000,
        ] {
            let x = noise(n, n as u64 + 1);
            let whole = frontend.compute(&x);
            let max = whole_raw_max(&frontend, &x);
            for block in [1usize, 3, 160, 999, n.max(1)] {
                let mut framer = LogMelFramer::new(frontend.clone());
                let mut frames: Vec<Vec<f32>> = Vec::new();
                let mut sink = |f: &[f32]| -> Result<(), ()> {
                    frames.push(f.to_vec());
                    Ok(())
                };
                for chunk in x.chunks(block) {
                    framer.push(chunk, &mut sink).unwrap();
                }
                framer.finish(&mut sink).unwrap();
                assert!(framer.samples.len() <= N_FFT + block + HOP_LENGTH);
                assert_eq!(frames.len(), whole.n_frames, "n {n} block {block}");
                let stream_max = frames
                    .iter()
                    .flatten()
                    .cloned()
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(stream_max, max);
                let floor = max - 8.0;
                for (t, f) in frames.iter().enumerate() {
                    for (m, &v) in f.iter().enumerate() {
                        assert_eq!(
                            crate::mel::normalise(v, floor).to_bits(),
                            whole.data[m * whole.n_frames + t].to_bits(),
                            "n {n} block {block} frame {t} mel {m}"
                        );
                    }
                }
            }
        }
    }

    fn whole_raw_max(frontend: &MelFrontend, x: &[f32]) -> f32 {
        let mut scratch = frontend.scratch();
        let mut frame = [0f32; N_FFT];
        let mut column = vec![0f32; frontend.n_mels()];
        let mut max = f32::NEG_INFINITY;
        for t in 0..(x.len() + TAIL_PADDING) / HOP_LENGTH {
            crate::mel::read_frame(x, t, &mut frame);
            frontend.log_mel_frame(&frame, &mut scratch, &mut column);
            max = column.iter().cloned().fold(max, f32::max);
        }
        max
    }
}
