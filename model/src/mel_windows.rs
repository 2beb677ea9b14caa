//! Where the encoder's 30 s windows come from: a whole-file [`LogMel`] in memory, or a
//! [`StreamedLogMel`] that decodes the input as the windows are asked for, holding one window of
//! frames, so memory does not grow with the input.
//!
//! Exactness: the clamp at (global max − 8) needs the whole file's max before the first window
//! is final. [`StreamedLogMel::open`] therefore makes a first pass that only tracks the max (and
//! counts the samples), then serves windows from a second pass:
//! - a file is simply decoded again (no disk, ~1 extra decode + STFT: a few % of a
//!   transcription);
//! - standard input cannot be read twice: the first pass spools the raw log-mel frames (4 bytes
//!   × n_mels per 10 ms: 115 MB per hour for 80 mels, a quarter of the 16 kHz f64 samples'
//!   size) to an unlinked temporary file, and the second pass reads them back.
//!
//! Either way every value equals [`crate::mel::MelFrontend::compute`]'s bit for bit.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::audio::{AudioError, AudioInput, AudioStream};
use crate::error::WhisperError;
use crate::mel::{normalise, LogMel, MelError, MelFrontend, HOP_LENGTH, WINDOW_FRAMES};
use crate::mel_stream::LogMelFramer;

/// A source of encoder windows, read front to back (`seek` never decreases).
pub trait MelWindows {
    /// Frames that hold audio, `N / 160`.
    fn content_frames(&self) -> usize;
    /// Seconds of audio.
    fn duration(&self) -> f64;
    /// Fills `out` (`[n_mels, 3000]` row-major) with the normalised frames `seek .. seek +
    /// count`, `count = min(3000, content_frames − seek)`, and 0.0 after them; returns `count`.
    fn window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError>;
    /// The window language detection reads from frame `seek` (0, or the first clip's start):
    /// faster-whisper slices the *whole* feature matrix (`features[:, seek:seek + 3000]`, the
    /// extra last frame included) where transcription slices the content frames, so near the
    /// end of the input this window has one more frame than `window(seek)`.
    fn language_window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError>;
}

impl MelWindows for LogMel {
    fn content_frames(&self) -> usize {
        self.content_frames
    }

    fn duration(&self) -> f64 {
        // The frame count gives the samples only to within a hop; callers that know the sample
        // count (Session::transcribe) use it instead.
        (self.content_frames * HOP_LENGTH) as f64 / crate::audio::TARGET_RATE as f64
    }

    fn window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError> {
        Ok(LogMel::window(self, seek, out)?)
    }

    fn language_window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError> {
        let content = self.content_frames;
        self.content_frames = self.n_frames;
        let result = LogMel::window(self, seek, out);
        self.content_frames = content;
        Ok(result?)
    }
}

/// Where the second pass gets its raw frames.
enum Frames {
    /// Decoding the input again.
    Decode {
        stream: Box<AudioStream>,
        framer: Box<LogMelFramer>,
        samples: Vec<f32>,
        /// Frames computed but not yet taken, frame-major.
        ready: Vec<f32>,
        ready_from: usize,
        ended: bool,
    },
    /// Reading back the spool of the first pass.
    Spool(BufReader<File>),
}

/// The normalised log-mel of an input, produced window by window.
pub struct StreamedLogMel {
    name: PathBuf,
    n_mels: usize,
    floor: f32,
    max: f32,
    samples: usize,
    n_frames: usize,
    content_frames: usize,
    frames: Frames,
    /// Raw frames from absolute frame `held_from` on, frame-major.
    held: Vec<f32>,
    held_from: usize,
    /// Frames taken from `frames` so far.
    taken: usize,
    bytes: Vec<u8>,
    warnings: Vec<String>,
    spooled: bool,
}

/// Counter for unique spool file names within the process.
static SPOOL_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl StreamedLogMel {
    /// Opens `input` and makes the first pass (max, length; the spool for standard input).
    pub fn open(input: &AudioInput, frontend: &MelFrontend) -> Result<Self, WhisperError> {
        Self::open_observed(input, frontend, &mut |_| {})
    }

    /// [`StreamedLogMel::open`], handing every block of 16 kHz samples of the first pass to
    /// `observe` as it is decoded (the guards' VAD and silence map are built there, so they too
    /// need no copy of the input).
    pub fn open_observed(
        input: &AudioInput,
        frontend: &MelFrontend,
        observe: &mut dyn FnMut(&[f32]),
    ) -> Result<Self, WhisperError> {
        let name = input.name();
        let n_mels = frontend.n_mels();
        let spool = !input.rereadable();
        let mut stream = AudioStream::open(input)?;
        let mut framer = LogMelFramer::new(frontend.clone());
        let mut writer = if spool {
            Some(BufWriter::with_capacity(1 << 16, spool_file(&name)?))
        } else {
            None
        };
        let mut max = f32::NEG_INFINITY;
        let mut n_frames = 0usize;
        let spool_error = |source| AudioError::Io {
            path: std::env::temp_dir().join("(amanuensis spool)"),
            source,
        };
        let mut sink = |frame: &[f32]| -> Result<(), std::io::Error> {
            n_frames += 1;
            for &v in frame {
                max = max.max(v);
            }
            if let Some(w) = writer.as_mut() {
                for &v in frame {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
            Ok(())
        };
        let mut block = Vec::new();
        loop {
            block.clear();
            let more = stream.read(&mut block)?;
            observe(&block);
            framer.push(&block, &mut sink).map_err(spool_error)?;
            if !more {
                break;
            }
        }
        framer.finish(&mut sink).map_err(spool_error)?;
        let samples = framer.samples_received();
        let warnings = stream.warnings();
        let frames = match writer {
            Some(w) => {
                let mut file = w.into_inner().map_err(|e| spool_error(e.into_error()))?;
                file.seek(SeekFrom::Start(0)).map_err(spool_error)?;
                Frames::Spool(BufReader::with_capacity(1 << 16, file))
            }
            None => Frames::Decode {
                stream: Box::new(AudioStream::open(input)?),
                framer: Box::new(LogMelFramer::new(frontend.clone())),
                samples: Vec::new(),
                ready: Vec::new(),
                ready_from: 0,
                ended: false,
            },
        };
        Ok(StreamedLogMel {
            name,
            n_mels,
            floor: max - 8.0,
            max,
            samples,
            n_frames,
            content_frames: samples / HOP_LENGTH,
            frames,
            held: Vec::with_capacity(n_mels * WINDOW_FRAMES),
            held_from: 0,
            taken: 0,
            bytes: vec![0u8; n_mels * 4],
            warnings,
            spooled: spool,
        })
    }

    /// Samples (16 kHz) in the input.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// What the input got wrong but was decoded anyway.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the first pass spooled the frames to a temporary file (standard input).
    pub fn spooled(&self) -> bool {
        self.spooled
    }

    /// Appends the next raw frame to `held`; `false` if there is none.
    fn next_frame(&mut self) -> Result<bool, WhisperError> {
        if self.taken >= self.n_frames {
            return Ok(false);
        }
        let n_mels = self.n_mels;
        match &mut self.frames {
            Frames::Spool(reader) => {
                reader
                    .read_exact(&mut self.bytes)
                    .map_err(|source| AudioError::Io {
                        path: std::env::temp_dir().join("(amanuensis spool)"),
                        source,
                    })?;
                self.held.extend(
                    self.bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            Frames::Decode {
                stream,
                framer,
                samples,
                ready,
                ready_from,
                ended,
            } => {
                while *ready_from >= ready.len() {
                    ready.clear();
                    *ready_from = 0;
                    if *ended {
                        return Err(changed(&self.name));
                    }
                    samples.clear();
                    let more = stream.read(samples)?;
                    let mut sink = |f: &[f32]| -> Result<(), ()> {
                        ready.extend_from_slice(f);
                        Ok(())
                    };
                    let _ = framer.push(samples, &mut sink);
                    if !more {
                        let _ = framer.finish(&mut sink);
                        *ended = true;
                    }
                }
                let frame = &ready[*ready_from..*ready_from + n_mels];
                if frame.iter().any(|&v| v > self.max) {
                    return Err(changed(&self.name));
                }
                self.held.extend_from_slice(frame);
                *ready_from += n_mels;
            }
        }
        self.taken += 1;
        Ok(true)
    }
}

/// The second pass disagrees with the first: the file changed while being read.
fn changed(name: &std::path::Path) -> WhisperError {
    WhisperError::Audio(AudioError::Decode {
        path: Some(name.to_path_buf()),
        reason: "the input changed while it was being read".into(),
    })
}

/// An unlinked temporary file (removed from the folder at once; the space is freed when closed).
fn spool_file(name: &std::path::Path) -> Result<File, AudioError> {
    let n = SPOOL_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".amanuensis-spool-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| AudioError::Io {
            path: path.clone(),
            source,
        })?;
    let _ = std::fs::remove_file(&path);
    let _ = name;
    Ok(file)
}

impl MelWindows for StreamedLogMel {
    fn content_frames(&self) -> usize {
        self.content_frames
    }

    fn duration(&self) -> f64 {
        self.samples as f64 / crate::audio::TARGET_RATE as f64
    }

    fn window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError> {
        self.fill(seek, self.content_frames, out)
    }

    fn language_window(&mut self, seek: usize, out: &mut [f32]) -> Result<usize, WhisperError> {
        self.fill(seek, self.n_frames, out)
    }
}

impl StreamedLogMel {
    /// Fills `out` with the frames `seek .. min(seek + 3000, end)`, zeros after.
    fn fill(&mut self, seek: usize, end: usize, out: &mut [f32]) -> Result<usize, WhisperError> {
        let n_mels = self.n_mels;
        let expected = n_mels * WINDOW_FRAMES;
        if out.len() != expected {
            return Err(MelError::WindowBufferSize {
                n_mels,
                expected,
                got: out.len(),
            }
            .into());
        }
        if seek < self.held_from {
            return Err(MelError::SeekBackwards {
                seek,
                first: self.held_from,
            }
            .into());
        }
        // Drop frames before `seek`, skipping ahead if it lies past what is held.
        let held_frames = self.held.len() / n_mels;
        let drop = (seek - self.held_from).min(held_frames);
        self.held.drain(..drop * n_mels);
        self.held_from += drop;
        while self.held_from < seek.min(end) {
            if !self.next_frame()? {
                break;
            }
            self.held.clear();
            self.held_from += 1;
        }
        let count = end.saturating_sub(seek).min(WINDOW_FRAMES);
        while self.held.len() / n_mels < count {
            if !self.next_frame()? {
                return Err(changed(&self.name));
            }
        }
        for (mel, row) in out.chunks_exact_mut(WINDOW_FRAMES).enumerate() {
            let (filled, padding) = row.split_at_mut(count);
            for (k, o) in filled.iter_mut().enumerate() {
                *o = normalise(self.held[k * n_mels + mel], self.floor);
            }
            padding.fill(0.0);
        }
        Ok(count)
    }
}
