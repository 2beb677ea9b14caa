//! A ready-to-run voice activity detector: the Silero network, its thread pool and
//! faster-whisper's options, from samples to speech stretches; and the `--vad` filter (speech
//! stretches concatenated, segment times mapped back).

use std::path::Path;

use amanuensis_runtime::cpu::CpuPool;

use super::silero::{SileroVad, SpeechProbStream};
use super::speech::{collect_speech, speech_chunks, SpeechChunk, SpeechMap, VadOptions};
use crate::load_error::LoadError;
use crate::segment::Segment;

/// Silero VAD with its own thread pool.
pub struct Vad {
    model: SileroVad,
    pool: CpuPool,
}

impl Vad {
    /// Opens the VAD model file (`scripts/setup-models.sh silero-vad`) with `threads` threads.
    pub fn open(path: &Path, threads: usize) -> Result<Self, LoadError> {
        Ok(Self {
            model: SileroVad::open(path)?,
            pool: CpuPool::new(threads.max(1)),
        })
    }

    /// Per-chunk speech probabilities (see [`SileroVad::speech_probs`]).
    pub fn speech_probs(&self, samples: &[f32]) -> Vec<f32> {
        self.model.speech_probs(&self.pool, samples)
    }

    /// Probabilities of samples pushed as they come ([`SileroVad::stream`]); equal to
    /// [`Vad::speech_probs`] of all of them.
    pub fn stream(&self) -> SpeechProbStream<'_> {
        self.model.stream(&self.pool)
    }

    /// The speech stretches of 16 kHz mono `samples` under `opts`.
    pub fn speech_chunks(&self, samples: &[f32], opts: &VadOptions) -> Vec<SpeechChunk> {
        speech_chunks(&self.speech_probs(samples), samples.len(), opts)
    }
}

/// The audio `--vad` transcribes: the speech stretches of `samples` back to back, with the map
/// that takes times in it back to the original timeline.
pub struct SpeechOnly {
    pub samples: Vec<f32>,
    pub map: SpeechMap,
    pub chunks: Vec<SpeechChunk>,
}

impl SpeechOnly {
    /// Cuts `samples` to the speech stretches `chunks`.
    pub fn new(samples: &[f32], chunks: Vec<SpeechChunk>) -> Self {
        Self {
            samples: collect_speech(samples, &chunks),
            map: SpeechMap::new(&chunks),
            chunks,
        }
    }

    /// Moves segment times from the concatenated speech to the original timeline
    /// (faster-whisper `restore_speech_timestamps` for segments without words: the start maps
    /// into the stretch it falls in, the end into the stretch it closes).
    ///
    /// A segment with words: each word maps both its times into the stretch its middle falls
    /// in, and the segment spans its first word's start to its last word's end.
    pub fn restore_times(&self, segments: &mut [Segment]) {
        for s in segments {
            if s.words.is_empty() {
                s.start = self.map.original_time(s.start, false);
                s.end = self.map.original_time(s.end, true);
                continue;
            }
            for w in &mut s.words {
                let index = self.map.chunk_index((w.start + w.end) / 2.0, false);
                w.start = self.map.original_time_in(w.start, index);
                w.end = self.map.original_time_in(w.end, index);
            }
            s.start = s.words[0].start;
            s.end = s.words[s.words.len() - 1].end;
        }
    }
}
