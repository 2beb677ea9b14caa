//! A transcription session: the per-stream state (the encoder's and the decoder's backend
//! workspaces with their buffers, caches and scratch; logits; decoding rules) allocated once,
//! and the long-form loop that walks 30 s windows over a file exactly as faster-whisper's
//! `generate_segments` does (greedy or beam search, temperature 0).
//!
//! Any number of sessions may run at once over one shared model, each on its own thread: a
//! session owns everything it writes, the model nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amanuensis_runtime::backend::Backend;

use crate::clips::seek_clips;
use crate::decode::fallback::{best_hypothesis, decode_with_fallback, FallbackOptions, Scored};
use crate::decode::guards::{repetition_cut, SilenceMap, SpeechGate};
use crate::decode::{compression_ratio, sample, Rng};
use crate::decode::{BeamOptions, BeamSearch};
use crate::decode::{GreedyPick, LogitFilter, SuppressBlank, SuppressTokens, TimestampRules};
use crate::decoder::MAX_SLOTS;
use crate::error::WhisperError;
use crate::hallucination::{skip_silence_before_hallucinations, HallucinationSkip, WindowSpan};
use crate::mel::WINDOW_FRAMES;
use crate::mel_windows::MelWindows;
use crate::segment::{split_by_timestamps, Segment, TIME_PER_FRAME, TIME_PRECISION};
use crate::whisper::Whisper;
use crate::words::{
    add_word_timestamps, last_end, timings_from_path, AlignScratch, Word, APPEND_PUNCTUATIONS,
    PREPEND_PUNCTUATIONS,
};
use amanuensis_runtime::resident::zeroed;

/// What to do; the defaults are faster-whisper's for `beam_size=1, temperature=0`.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// Language code for multilingual models (ignored by `.en` models).
    pub language: String,
    /// Decode without timestamp tokens (`<|notimestamps|>` in the prompt): one segment per window.
    pub without_timestamps: bool,
    /// Feed the previous windows' tokens as the prompt.
    pub condition_on_previous_text: bool,
    /// Skip a window whose no-speech probability is above this (unless its log-prob is high).
    pub no_speech_threshold: Option<f64>,
    /// The average log-probability that vetoes a no-speech skip.
    pub log_prob_threshold: Option<f64>,
    /// Text that seeds the previous tokens.
    pub initial_prompt: Option<String>,
    /// The first timestamp of a window is at most this many seconds.
    pub max_initial_timestamp: f64,
    /// Disable " " and EOT at the first sampled step.
    pub suppress_blank: bool,
    /// 1: greedy; more: beam search with this many beams (faster-whisper's default is 5),
    /// patience 1, length penalty 1, at most [`MAX_BEAMS`].
    pub beam_size: usize,
    /// Beam search's patience and length penalty (faster-whisper's `patience`,
    /// `length_penalty`; both 1 by default). The length penalty also ranks the `best_of`
    /// samples of the temperature fallback, as in CTranslate2.
    pub beam_options: BeamOptions,
    /// Hand back, per window, the cross-attention weights of the model's alignment heads over
    /// the decoded tokens ([`WindowResult::alignment`]; one extra batched decoder pass per
    /// window). Off by default: no cost.
    pub alignment_weights: bool,
    /// Word timestamps (faster-whisper `word_timestamps=True`): after each window, one
    /// decoder pass with alignment over its text gives each segment its words
    /// ([`Segment::words`]); segment starts and ends move to their first and last words', and
    /// the next window starts at the last word's end unless the window ended with a single
    /// timestamp. Off by default: nothing changes.
    pub word_timestamps: bool,
    /// faster-whisper's `hallucination_silence_threshold` (seconds; needs
    /// [`word_timestamps`](Self::word_timestamps), ignored without them, as there): a segment
    /// whose words look anomalous and that sits between silences longer than this is dropped
    /// with the rest of its window, and decoding resumes at it ([`crate::hallucination`]).
    /// Off by default.
    pub hallucination_silence_threshold: Option<f64>,
    /// faster-whisper's `clip_timestamps` (seconds, `start,end,start,end,…`; an odd list ends
    /// at the end of the audio): transcribe only these clips, each window ending at its clip's
    /// end ([`crate::clips`]). Empty (the default): the whole audio. Values must be finite, 0
    /// or more, and in order ([`crate::clips::check`]; `transcribe` refuses others).
    pub clip_timestamps: Vec<f64>,
    /// Translate to English (`<|translate|>` in the SOT sequence; multilingual models only).
    pub translate: bool,
    /// Temperature fallback (faster-whisper's defaults; [`FallbackOptions::off`] = temperature
    /// 0 only, the golden tests' setting).
    pub fallback: FallbackOptions,
    /// Hallucination guards (on by default; they never touch a window that holds speech).
    pub guards: GuardOptions,
}

/// Hallucination guards of the long-form loop (`decode::guards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardOptions {
    /// Skip windows (and drop segments) whose audio is digital silence, and, given a
    /// [`SpeechGate`], those with no speech in them.
    pub skip_silence: bool,
    /// Cut a window whose text ends in one phrase repeated [`MIN_REPEATS`] times or more and
    /// whose compression ratio is above the threshold (2.4 when the fallback's is off).
    ///
    /// [`MIN_REPEATS`]: crate::decode::guards::MIN_REPEATS
    pub cut_loops: bool,
}

impl Default for GuardOptions {
    fn default() -> Self {
        Self {
            skip_silence: true,
            cut_loops: true,
        }
    }
}

impl GuardOptions {
    /// No guards: faster-whisper's behaviour.
    pub fn off() -> Self {
        Self {
            skip_silence: false,
            cut_loops: false,
        }
    }
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: "en".to_string(),
            without_timestamps: false,
            condition_on_previous_text: true,
            no_speech_threshold: Some(0.6),
            log_prob_threshold: Some(-1.0),
            initial_prompt: None,
            max_initial_timestamp: 1.0,
            suppress_blank: true,
            beam_size: 1,
            beam_options: BeamOptions::default(),
            alignment_weights: false,
            word_timestamps: false,
            hallucination_silence_threshold: None,
            clip_timestamps: Vec::new(),
            translate: false,
            fallback: FallbackOptions::default(),
            guards: GuardOptions::default(),
        }
    }
}

/// What [`Session::transcribe_windows`] reports after each window: the segments it decided and
/// how far the audio is done.
#[derive(Debug, Clone, Copy)]
pub struct WindowDone<'a> {
    /// The window's new segments (possibly none).
    pub segments: &'a [Segment],
    /// Seconds of audio done (the next window's start, at most the duration).
    pub done: f64,
    /// Seconds of audio in the input.
    pub duration: f64,
}

/// A language identified from the first window (openai/whisper `detect_language`).
#[derive(Debug, Clone)]
pub struct DetectedLanguage {
    /// The most probable language code.
    pub code: String,
    /// Its probability (softmax over the language tokens' logits after `<|startoftranscript|>`).
    pub probability: f64,
    /// Every language with its probability, most probable first.
    pub all: Vec<(String, f64)>,
}

/// Where the time went.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub mel: Duration,
    pub encode: Duration,
    pub decode: Duration,
    /// Within `decode`: the passes of sampled tokens (one stage each: all blocks and the
    /// logits).
    pub decoder_layers: Duration,
    /// Within `decode`: the logits of prompt passes (a stage of their own).
    pub logits: Duration,
    /// Within `decode`: logit filters and the greedy pick.
    pub sampling: Duration,
    /// Within `decode`: word timestamps (the alignment pass, DTW and word rules).
    pub words: Duration,
    pub windows: usize,
    /// Decoder passes (one per prompt, one per sampled token).
    pub decoder_passes: usize,
    pub sampled_tokens: usize,
}

impl std::ops::AddAssign<&Timings> for Timings {
    /// Sums every duration and count (over files, for reports).
    fn add_assign(&mut self, other: &Timings) {
        self.mel += other.mel;
        self.encode += other.encode;
        self.decode += other.decode;
        self.decoder_layers += other.decoder_layers;
        self.logits += other.logits;
        self.sampling += other.sampling;
        self.words += other.words;
        self.windows += other.windows;
        self.decoder_passes += other.decoder_passes;
        self.sampled_tokens += other.sampled_tokens;
    }
}

/// A whole file's result.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// Audio duration in seconds.
    pub duration: f64,
    pub timings: Timings,
}

impl Transcript {
    /// All segment texts joined, trimmed (as `" ".join(s.text.strip())` would give).
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self.segments.iter().map(|s| s.text.trim()).collect();
        parts.join(" ")
    }
}

/// Cross-attention weights of the alignment heads over one decoder pass (for word timestamps).
#[derive(Debug, Clone, PartialEq)]
pub struct AlignmentWeights {
    /// The tokens of the pass: the SOT sequence (with `<|notimestamps|>` if the window had
    /// it), the window's sampled tokens, EOT.
    pub tokens: Vec<u32>,
    /// Index in `tokens` of the first sampled token.
    pub first_sampled: usize,
    /// `(decoder layer, head)` of each head, in the model metadata's order.
    pub heads: Vec<(usize, usize)>,
    /// Encoder frames per row (`n_audio_ctx`, 20 ms each).
    pub frames: usize,
    /// `[heads, tokens, frames]`: row `(h, i)` is head `h`'s attention (a probability
    /// distribution over the window's frames) from the position of `tokens[i]`.
    pub weights: Vec<f32>,
}

impl AlignmentWeights {
    /// Head `h`'s weights for token `i` (`frames` values).
    pub fn row(&self, h: usize, i: usize) -> &[f32] {
        let start = (h * self.tokens.len() + i) * self.frames;
        &self.weights[start..start + self.frames]
    }
}

/// The outcome of decoding one window.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Sampled tokens, EOT excluded.
    pub tokens: Vec<u32>,
    /// Sum of the sampled tokens' log-probabilities, EOT included.
    pub sum_logprob: f64,
    /// `sum_logprob / (tokens.len() + 1)`.
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    /// With [`TranscribeOptions::alignment_weights`]: the alignment heads' cross-attention.
    pub alignment: Option<AlignmentWeights>,
}

/// Where a transcription is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Seconds of audio done (the next window's start).
    pub done: f64,
    /// Seconds of audio in all.
    pub total: f64,
}

/// Calls out of a transcription: each decided segment as soon as its window is done, progress
/// after each window, and a cooperative abort flag (checked between windows and tokens; a set
/// flag ends the call with [`WhisperError::Aborted`]).
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called with each segment as it is decided.
    pub on_segment: Option<&'a mut dyn FnMut(&Segment)>,
    /// Called after each window.
    pub on_progress: Option<&'a mut dyn FnMut(Progress)>,
    /// When set, the transcription stops at the next window or token.
    pub abort: Option<Arc<AtomicBool>>,
}

/// Per-stream state over a shared model. Everything is allocated in [`Session::new`].
pub struct Session<E: Backend, D: Backend = E> {
    model: Arc<Whisper<E, D>>,
    mel_window: Vec<f32>,
    encoder_ws: E::Workspace,
    decoder_ws: D::Workspace,
    /// Positions filled in the self-attention cache.
    kv_len: usize,
    abort: Option<Arc<AtomicBool>>,
    logits: Vec<f32>,
    sampled: Vec<u32>,
    suppress: SuppressTokens,
    suppress_blank: SuppressBlank,
    timestamp_rules: TimestampRules,
    /// Beam-search state, allocated by the first call with `beam_size > 1`.
    beams: Option<BeamBuffers>,
    /// Word-alignment buffers, allocated by the first window with word timestamps.
    aligner: Option<WordAligner>,
}

/// Buffers of the word-alignment pass, sized for the longest window once.
struct WordAligner {
    scratch: AlignScratch,
    tokens: Vec<u32>,
    text_tokens: Vec<u32>,
    probs: Vec<f64>,
}

/// Most beams a session searches with (one self-attention cache slot each).
pub const MAX_BEAMS: usize = MAX_SLOTS;

/// Buffers of beam search: the search state, every beam's logits, cache slot bookkeeping.
struct BeamBuffers {
    search: BeamSearch,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    slots: [usize; MAX_BEAMS],
    next_slots: [usize; MAX_BEAMS],
}

impl<E: Backend, D: Backend> Session<E, D> {
    /// Allocates all buffers a transcription needs, on the backends' default thread count.
    pub fn new(model: Arc<Whisper<E, D>>) -> Result<Self, WhisperError> {
        let threads = model.decoder_backend.default_threads();
        Self::with_threads(model, threads)
    }

    /// Allocates all buffers a transcription needs; CPU backends run this session on its own
    /// pool of `threads` threads (the calling thread included).
    pub fn with_threads(model: Arc<Whisper<E, D>>, threads: usize) -> Result<Self, WhisperError> {
        let dims = model.config.dims;
        Ok(Self {
            mel_window: zeroed(dims.n_mels * model.encoder.n_frames()),
            encoder_ws: model.encoder.workspace(&model.encoder_backend, threads)?,
            decoder_ws: model.decoder.workspace(&model.decoder_backend, threads)?,
            kv_len: 0,
            abort: None,
            logits: zeroed(dims.n_vocab),
            sampled: Vec::with_capacity(dims.n_text_ctx),
            suppress: SuppressTokens::new(model.config.suppress_ids.clone()),
            suppress_blank: SuppressBlank::new(model.config.suppress_ids_begin.clone()),
            timestamp_rules: TimestampRules {
                eot: model.config.special.eot,
                no_timestamps: model.config.special.no_timestamps,
                timestamp_begin: model.config.special.timestamp_begin,
                max_initial_timestamp_index: None,
            },
            beams: None,
            aligner: None,
            model,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Whisper<E, D>> {
        &self.model
    }

    /// The encoder's and the decoder's workspaces (for a backend's own accounting, e.g. the
    /// device submissions each recorded).
    pub fn workspaces(&self) -> (&E::Workspace, &D::Workspace) {
        (&self.encoder_ws, &self.decoder_ws)
    }

    /// Sets (or clears) the cooperative abort flag [`Session::decode_window`] checks before each
    /// token.
    pub fn set_abort(&mut self, abort: Option<Arc<AtomicBool>>) {
        self.abort = abort;
    }

    fn aborted(&self) -> bool {
        self.abort
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Relaxed))
    }

    /// Encodes one padded window `[n_mels, 3000]`; returns the encoder output `[1500, d]`,
    /// which the next [`Session::decode_window`] attends to.
    pub fn encode(&mut self, mel_window: &[f32]) -> Result<&[f32], WhisperError> {
        let m = &self.model;
        m.encoder
            .forward(&m.encoder_backend, &mut self.encoder_ws, mel_window)
    }

    /// Transcribes 16 kHz mono samples (the whole-file log-mel in memory).
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_with(samples, opts, &mut Hooks::default())
    }

    /// [`Session::transcribe`] with callbacks and an abort flag.
    pub fn transcribe_with(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
    ) -> Result<Transcript, WhisperError> {
        let t = Instant::now();
        let mut mel = self.model.mel.compute(samples);
        let mel_time = t.elapsed();
        // The sample count gives the duration exactly; the frame count only to within a hop.
        let duration = samples.len() as f64 / crate::audio::resample::TARGET_RATE as f64;
        self.abort = hooks.abort.clone();
        let silence = opts.guards.skip_silence.then(|| SilenceMap::of(samples));
        let audio = Audio {
            silence: silence.as_ref(),
            gate: None,
        };
        let result = self.transcribe_inner(&mut mel, duration, audio, opts, hooks, &mut |_| {});
        self.abort = None;
        let mut transcript = result?;
        transcript.timings.mel += mel_time;
        Ok(transcript)
    }

    /// Identifies the language from the first window, as openai/whisper's `detect_language`:
    /// the decoder's logits after `[<|startoftranscript|>]`, softmax over the language tokens.
    pub fn detect_language(
        &mut self,
        mel: &mut dyn MelWindows,
    ) -> Result<DetectedLanguage, WhisperError> {
        self.detect_language_at(mel, 0)
    }

    /// [`Session::detect_language`] on the window from mel frame `seek` (with clips:
    /// [`crate::clips::language_detection_seek`]).
    pub fn detect_language_at(
        &mut self,
        mel: &mut dyn MelWindows,
        seek: usize,
    ) -> Result<DetectedLanguage, WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        mel.language_window(seek, &mut self.mel_window)?;
        model.encoder.forward(
            &model.encoder_backend,
            &mut self.encoder_ws,
            &self.mel_window,
        )?;
        let encoder_out = model
            .encoder
            .output(&model.encoder_backend, &self.encoder_ws)?;
        decoder.set_audio(backend, &mut self.decoder_ws, encoder_out)?;
        self.kv_len = 0;
        decoder.forward(
            backend,
            &mut self.decoder_ws,
            &[model.config.special.sot],
            0,
            false,
        )?;
        self.kv_len = 1;
        self.logits
            .copy_from_slice(decoder.logits(backend, &mut self.decoder_ws, 0, 1)?);
        let languages = &model.config.languages;
        let logit = |id: u32| {
            self.logits
                .get(id as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY)
        };
        let max = languages
            .iter()
            .map(|(_, id)| logit(*id))
            .fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = languages
            .iter()
            .map(|(_, id)| ((logit(*id) - max) as f64).exp())
            .sum();
        let mut all: Vec<(String, f64)> = languages
            .iter()
            .map(|(code, id)| (code.clone(), ((logit(*id) - max) as f64).exp() / sum))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (code, probability) = all.first().cloned().ok_or_else(|| {
            WhisperError::UnknownLanguage("(this model lists no languages)".into())
        })?;
        Ok(DetectedLanguage {
            code,
            probability,
            all,
        })
    }

    /// Transcribes the windows of `mel` (in memory or streamed), calling `on_window` after each
    /// window with the segments it decided.
    pub fn transcribe_windows(
        &mut self,
        mel: &mut dyn MelWindows,
        opts: &TranscribeOptions,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_windows_with(mel, opts, &mut Hooks::default(), on_window)
    }

    /// [`Session::transcribe_windows`] with [`Hooks`] (segments, progress, abort).
    pub fn transcribe_windows_with(
        &mut self,
        mel: &mut dyn MelWindows,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_windows_guarded(mel, None, None, opts, hooks, on_window)
    }

    /// [`Session::transcribe_windows_with`] with the guards that read the audio, gathered while
    /// the input streamed past (so nothing holds its samples): the digital-silence map and the
    /// VAD's speech stretches. With `opts.guards.skip_silence`, windows that are silent or
    /// without speech are not decoded and segments wholly outside speech are dropped.
    pub fn transcribe_windows_guarded(
        &mut self,
        mel: &mut dyn MelWindows,
        silence: Option<&SilenceMap>,
        gate: Option<&SpeechGate>,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        self.abort = hooks.abort.clone();
        let duration = mel.duration();
        let audio = Audio { silence, gate };
        let result = self.transcribe_inner(mel, duration, audio, opts, hooks, on_window);
        self.abort = None;
        result
    }

    /// [`Session::transcribe`] with the file's speech stretches (from the VAD): with
    /// `opts.guards.skip_silence`, windows without speech are not decoded and segments wholly
    /// outside speech are dropped.
    pub fn transcribe_gated(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
        gate: Option<&SpeechGate>,
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_guarded(samples, gate, opts, &mut Hooks::default(), &mut |_| {})
    }

    /// The whole-samples path with everything: the speech gate (and the digital-silence guard,
    /// which reads the samples), hooks and a per-window callback.
    pub fn transcribe_guarded(
        &mut self,
        samples: &[f32],
        gate: Option<&SpeechGate>,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        let t = Instant::now();
        let mut mel = self.model.mel.compute(samples);
        let mel_time = t.elapsed();
        let duration = samples.len() as f64 / crate::audio::resample::TARGET_RATE as f64;
        self.abort = hooks.abort.clone();
        let silence = opts.guards.skip_silence.then(|| SilenceMap::of(samples));
        let audio = Audio {
            silence: silence.as_ref(),
            gate,
        };
        let result = self.transcribe_inner(&mut mel, duration, audio, opts, hooks, on_window);
        self.abort = None;
        let mut transcript = result?;
        transcript.timings.mel += mel_time;
        Ok(transcript)
    }

    fn transcribe_inner(
        &mut self,
        mel: &mut dyn MelWindows,
        duration: f64,
        audio: Audio<'_>,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, WhisperError> {
        let model = Arc::clone(&self.model);
        let special = model.config.special;
        let n_text_ctx = model.config.dims.n_text_ctx;
        let mut timings = Timings::default();
        let content_frames = mel.content_frames();

        let sot_sequence = model.sot_sequence_for(&opts.language, opts.translate)?;
        let mut all_tokens: Vec<u32> = Vec::new();
        if let Some(p) = &opts.initial_prompt {
            all_tokens.extend(model.tokenizer.encode(&format!(" {}", p.trim()))?);
        }
        let mut prompt_reset_since = 0;
        let mut segments = Vec::new();
        let mut prompt: Vec<u32> = Vec::with_capacity(n_text_ctx);
        crate::clips::check(&opts.clip_timestamps)?;
        let clips = seek_clips(&opts.clip_timestamps, content_frames);
        let mut clip = 0;
        let mut seek = clips[0].0;
        let mut last_speech_timestamp = 0.0f64;
        let mut rng = Rng::new(opts.fallback.seed);
        while let Some(&(clip_start, clip_end)) = clips.get(clip) {
            // faster-whisper's flattened loop over the clips: windows never cross a clip's end.
            let clip_end = clip_end.min(content_frames);
            seek = seek.max(clip_start);
            if seek >= clip_end {
                clip += 1;
                // faster-whisper moves to the next clip's start even when the last window's
                // words ended past it; our windows are read front to back, so seek stays.
                if let Some(&(next_start, _)) = clips.get(clip) {
                    seek = seek.max(next_start);
                }
                continue;
            }
            if self.aborted() {
                return Err(WhisperError::Aborted);
            }
            if seek > 0 {
                if let Some(f) = hooks.on_progress.as_mut() {
                    f(Progress {
                        done: (seek as f64 * TIME_PER_FRAME).min(duration),
                        total: duration,
                    });
                }
            }
            let time_offset = seek as f64 * TIME_PER_FRAME;
            let segment_size = model
                .encoder
                .n_frames()
                .min(content_frames - seek)
                .min(clip_end - seek);
            if opts.guards.skip_silence && !audio.holds_speech(seek, segment_size) {
                seek += segment_size;
                on_window(WindowDone {
                    segments: &[],
                    done: (seek as f64 * TIME_PER_FRAME).min(duration),
                    duration,
                });
                continue;
            }

            let t = Instant::now();
            let filled = mel.window(seek, &mut self.mel_window)?;
            if filled > segment_size {
                // A clip ends inside this window: as faster-whisper's pad_or_trim of
                // `features[:, seek:seek + segment_size]`, nothing after it is seen.
                for row in self.mel_window.chunks_exact_mut(WINDOW_FRAMES) {
                    row[segment_size..filled].fill(0.0);
                }
            }
            timings.mel += t.elapsed();
            let t = Instant::now();
            model.encoder.forward(
                &model.encoder_backend,
                &mut self.encoder_ws,
                &self.mel_window,
            )?;
            timings.encode += t.elapsed();
            timings.windows += 1;

            // Prompt: [<|startofprev|>, last 223 previous tokens] + SOT sequence (+ notimestamps).
            prompt.clear();
            let previous = &all_tokens[prompt_reset_since..];
            if !previous.is_empty() {
                prompt.push(special.startofprev);
                let keep = n_text_ctx / 2 - 1;
                prompt.extend_from_slice(&previous[previous.len().saturating_sub(keep)..]);
            }
            let sot_index = prompt.len();
            prompt.extend_from_slice(&sot_sequence);
            if opts.without_timestamps {
                prompt.push(special.no_timestamps);
            }

            let t = Instant::now();
            let (result, temperature) =
                self.decode_with_fallback(&prompt, sot_index, opts, &mut rng, &mut timings)?;
            timings.decode += t.elapsed();

            if let Some(threshold) = opts.no_speech_threshold {
                let mut skip = result.no_speech_prob > threshold;
                if opts
                    .log_prob_threshold
                    .is_some_and(|lp| result.avg_logprob > lp)
                {
                    skip = false;
                }
                if skip {
                    seek += segment_size;
                    on_window(WindowDone {
                        segments: &[],
                        done: (seek as f64 * TIME_PER_FRAME).min(duration),
                        duration,
                    });
                    continue;
                }
            }

            let mut split = split_by_timestamps(
                &result.tokens,
                special.timestamp_begin,
                time_offset,
                segment_size,
            );
            let window_seek = seek;
            let first_new = segments.len();
            seek += split.seek_delta;
            let mut words: Vec<Vec<Word>> = Vec::new();
            if opts.word_timestamps {
                let t = Instant::now();
                // faster-whisper ignores the returned last-speech time; it takes get_end below.
                let (w, _) = self.word_timestamps(
                    &sot_sequence,
                    &mut split.segments,
                    segment_size,
                    time_offset,
                    &opts.language,
                    last_speech_timestamp,
                )?;
                words = w;
                timings.decode += t.elapsed();
                timings.words += t.elapsed();
                let n = result.tokens.len();
                let tb = special.timestamp_begin;
                let single_timestamp_ending =
                    n >= 2 && result.tokens[n - 2] < tb && result.tokens[n - 1] >= tb;
                if !single_timestamp_ending {
                    let end = last_end(&split.segments, &words);
                    if let Some(end) = end.filter(|&e| e > time_offset) {
                        seek = (end / TIME_PER_FRAME).round_ties_even() as usize;
                    }
                }
                if let Some(threshold) = opts.hallucination_silence_threshold {
                    let span = WindowSpan {
                        seek: window_seek,
                        time_offset,
                        segment_duration: segment_size as f64 * TIME_PER_FRAME,
                        window_end_time: (window_seek + model.encoder.n_frames()) as f64
                            * TIME_PER_FRAME,
                        content_frames,
                        content_duration: content_frames as f64 * TIME_PER_FRAME,
                    };
                    match skip_silence_before_hallucinations(
                        threshold,
                        &split.segments,
                        &words,
                        last_speech_timestamp,
                        &span,
                    ) {
                        HallucinationSkip::Keep => {}
                        HallucinationSkip::SkipWindow { seek: next } => {
                            seek = next;
                            on_window(WindowDone {
                                segments: &[],
                                done: (seek as f64 * TIME_PER_FRAME).min(duration),
                                duration,
                            });
                            continue;
                        }
                        HallucinationSkip::Truncate { keep, seek: next } => {
                            split.segments.truncate(keep);
                            words.truncate(keep);
                            seek = next;
                        }
                    }
                }
                if let Some(end) = last_end(&split.segments, &words) {
                    last_speech_timestamp = end;
                }
            }
            let mut words = words.into_iter();
            for raw in split.segments {
                let seg_words = words.next().unwrap_or_default();
                let text = model.tokenizer.decode_text(&raw.tokens)?;
                if raw.start == raw.end || text.trim().is_empty() {
                    continue;
                }
                if opts.guards.skip_silence && !audio.span_holds_speech(raw.start, raw.end) {
                    continue;
                }
                all_tokens.extend_from_slice(&raw.tokens);
                let segment = Segment {
                    id: segments.len() + 1,
                    seek: window_seek,
                    start: raw.start,
                    end: raw.end,
                    text,
                    tokens: raw.tokens,
                    avg_logprob: result.avg_logprob,
                    no_speech_prob: result.no_speech_prob,
                    temperature,
                    words: seg_words,
                };
                if let Some(f) = hooks.on_segment.as_mut() {
                    f(&segment);
                }
                segments.push(segment);
            }
            if !opts.condition_on_previous_text
                || temperature > opts.fallback.prompt_reset_on_temperature
            {
                prompt_reset_since = all_tokens.len();
            }
            on_window(WindowDone {
                segments: &segments[first_new..],
                done: (seek as f64 * TIME_PER_FRAME).min(duration),
                duration,
            });
        }
        if let Some(f) = hooks.on_progress.as_mut() {
            f(Progress {
                done: duration,
                total: duration,
            });
        }
        Ok(Transcript {
            segments,
            duration,
            timings,
        })
    }

    /// Greedy decoding of the current window (after [`Session::encode`]) from `prompt`, whose
    /// SOT token sits at `sot_index`.
    pub fn decode_window(
        &mut self,
        prompt: &[u32],
        sot_index: usize,
        opts: &TranscribeOptions,
        timings: &mut Timings,
    ) -> Result<WindowResult, WhisperError> {
        self.decode_window_at(prompt, sot_index, opts, None, timings)
    }

    /// [`Session::decode_window`], or with `sampling = Some((temperature, rng))` one random
    /// sample at that temperature (beam size ignored, as CTranslate2 at T > 0).
    fn decode_window_at(
        &mut self,
        prompt: &[u32],
        sot_index: usize,
        opts: &TranscribeOptions,
        sampling: Option<(f64, &mut Rng)>,
        timings: &mut Timings,
    ) -> Result<WindowResult, WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        let config = &model.config;
        let special = &config.special;
        let n_text_ctx = config.dims.n_text_ctx;
        for &id in prompt {
            if id as usize >= config.dims.n_vocab {
                return Err(WhisperError::TokenOutOfRange {
                    id,
                    n_vocab: config.dims.n_vocab,
                });
            }
        }
        // History (≤ n_text_ctx/2 − 1) + <|startofprev|> + SOT sequence (≤ 3) + <|notimestamps|>.
        let max_prompt = n_text_ctx / 2 + 4;
        if prompt.is_empty() || prompt.len() > max_prompt || sot_index >= prompt.len() {
            return Err(WhisperError::BadPrompt {
                len: prompt.len(),
                max: max_prompt,
                sot_index,
            });
        }

        let mut timestamps = self.timestamp_rules;
        timestamps.max_initial_timestamp_index =
            Some((opts.max_initial_timestamp / TIME_PRECISION).round() as u32);

        let encoder_out = model
            .encoder
            .output(&model.encoder_backend, &self.encoder_ws)?;
        decoder.set_audio(backend, &mut self.decoder_ws, encoder_out)?;
        self.kv_len = 0;
        decoder.forward(backend, &mut self.decoder_ws, prompt, 0, false)?;
        self.kv_len = prompt.len();
        timings.decoder_passes += 1;

        // No-speech probability: softmax of the raw logits at the SOT position.
        let t_logits = Instant::now();
        self.logits
            .copy_from_slice(decoder.logits(backend, &mut self.decoder_ws, sot_index, 1)?);
        let no_speech_prob = {
            let lse = crate::decode::log_sum_exp(&self.logits);
            (self.logits[special.no_speech as usize] as f64 - lse).exp()
        };
        if sot_index != prompt.len() - 1 {
            self.logits.copy_from_slice(decoder.logits(
                backend,
                &mut self.decoder_ws,
                prompt.len() - 1,
                1,
            )?);
        }
        timings.logits += t_logits.elapsed();

        let max_sampled = (n_text_ctx / 2).min(n_text_ctx + 1 - prompt.len());
        let (tokens, sum_logprob) = if opts.beam_size != 1 && sampling.is_none() {
            self.beam_search(opts, &timestamps, max_sampled, timings)?
        } else {
            self.greedy(opts, &timestamps, max_sampled, sampling, timings)?
        };
        let avg_logprob = sum_logprob / (tokens.len() + 1) as f64;
        let alignment = if opts.alignment_weights {
            Some(self.alignment_pass(&prompt[sot_index..], &tokens)?)
        } else {
            None
        };
        Ok(WindowResult {
            tokens,
            sum_logprob,
            avg_logprob,
            no_speech_prob,
            alignment,
        })
    }

    /// Word timestamps of one decoded window (faster-whisper `add_word_timestamps` over
    /// CTranslate2 `align`): a decoder pass with alignment over `[sot_sequence,
    /// <|notimestamps|>, text tokens of segments, EOT]`, the heads' attention over the
    /// window's `segment_size / 2` real encoder positions, DTW, words; `segments` may move to
    /// their words' times. Returns each segment's words and the last speech time.
    fn word_timestamps(
        &mut self,
        sot_sequence: &[u32],
        segments: &mut [crate::segment::RawSegment],
        segment_size: usize,
        time_offset: f64,
        language: &str,
        last_speech_timestamp: f64,
    ) -> Result<(Vec<Vec<Word>>, f64), WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        let special = model.config.special;
        let eot = special.eot;
        let dims = model.config.dims;
        let heads = decoder.n_alignment_heads();
        if heads == 0 {
            return Err(WhisperError::NoAlignmentHeads);
        }
        let al = self.aligner.get_or_insert_with(|| WordAligner {
            scratch: AlignScratch::with_capacity(heads, dims.n_text_ctx, dims.n_audio_ctx),
            tokens: Vec::with_capacity(dims.n_text_ctx),
            text_tokens: Vec::with_capacity(dims.n_text_ctx),
            probs: Vec::with_capacity(dims.n_text_ctx),
        });
        al.text_tokens.clear();
        for s in segments.iter() {
            al.text_tokens
                .extend(s.tokens.iter().copied().filter(|&t| t < eot));
        }
        let cols = (segment_size / 2).min(dims.n_audio_ctx);
        if al.text_tokens.is_empty() || cols == 0 {
            return Ok((vec![Vec::new(); segments.len()], last_speech_timestamp));
        }
        al.tokens.clear();
        al.tokens.extend_from_slice(sot_sequence);
        al.tokens.push(special.no_timestamps);
        al.tokens.extend_from_slice(&al.text_tokens);
        al.tokens.push(eot);
        let rows = al.tokens.len();
        let first = sot_sequence.len();
        let n_text = al.text_tokens.len();
        decoder.forward(backend, &mut self.decoder_ws, &al.tokens, 0, true)?;
        self.kv_len = rows;

        // Each head's attention over the real frames only: CTranslate2 takes the softmax over
        // those; renormalising the full softmax over them is the same distribution.
        let plane = rows * cols;
        al.scratch.weights.clear();
        al.scratch.weights.resize(heads * plane, 0.0);
        for h in 0..heads {
            let w = decoder.alignment_weights(backend, &self.decoder_ws, h, rows)?;
            let dst = &mut al.scratch.weights[h * plane..(h + 1) * plane];
            for (src, out) in w
                .chunks_exact(dims.n_audio_ctx)
                .zip(dst.chunks_exact_mut(cols))
            {
                let src = &src[..cols];
                let sum: f64 = src.iter().map(|&x| x as f64).sum();
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                for (o, &x) in out.iter_mut().zip(src) {
                    *o = (x as f64 * inv) as f32;
                }
            }
        }

        // Each text token's probability: softmax over the text vocabulary (ids < EOT) at the
        // row before it.
        al.probs.clear();
        let mut done = 0;
        while done < n_text {
            let n = (n_text - done).min(crate::decoder::MAX_LOGIT_ROWS);
            let logits = decoder.logits(backend, &mut self.decoder_ws, first + done, n)?;
            for (r, row) in logits.chunks_exact(dims.n_vocab).take(n).enumerate() {
                let text = &row[..eot as usize];
                let max = text.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = text.iter().map(|&x| ((x - max) as f64).exp()).sum();
                let tok = al.text_tokens[done + r] as usize;
                al.probs.push(((row[tok] - max) as f64).exp() / sum);
            }
            done += n;
        }

        al.scratch.align(heads, rows, cols, first, n_text + 1);
        let tokenizer = &model.tokenizer;
        let decode = |ids: &[u32]| tokenizer.decode_text(ids).unwrap_or_default();
        let timings = timings_from_path(
            &al.text_tokens,
            eot,
            language,
            &al.scratch.path,
            &al.probs,
            &decode,
        );
        Ok(add_word_timestamps(
            segments,
            timings,
            eot,
            time_offset,
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
            last_speech_timestamp,
        ))
    }

    /// One decoder pass with alignment over `sot_sequence`, `tokens`, EOT from position 0 of
    /// the current window (after its decoding; the cache is rebuilt by the next window).
    pub fn alignment_pass(
        &mut self,
        sot_sequence: &[u32],
        tokens: &[u32],
    ) -> Result<AlignmentWeights, WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        let mut all = Vec::with_capacity(sot_sequence.len() + tokens.len() + 1);
        all.extend_from_slice(sot_sequence);
        all.extend_from_slice(tokens);
        all.push(model.config.special.eot);
        let n_vocab = model.config.dims.n_vocab;
        if let Some(&id) = all.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(WhisperError::TokenOutOfRange { id, n_vocab });
        }
        decoder.forward(backend, &mut self.decoder_ws, &all, 0, true)?;
        self.kv_len = all.len();
        let frames = model.config.dims.n_audio_ctx;
        let heads = model.config.alignment_heads.clone();
        let mut weights = Vec::with_capacity(heads.len() * all.len() * frames);
        for i in 0..heads.len() {
            weights.extend_from_slice(decoder.alignment_weights(
                backend,
                &self.decoder_ws,
                i,
                all.len(),
            )?);
        }
        Ok(AlignmentWeights {
            first_sampled: sot_sequence.len(),
            tokens: all,
            heads,
            frames,
            weights,
        })
    }

    /// Greedy decoding from the prompt's last logits (in `self.logits`): the sampled tokens and
    /// their summed log-probability (EOT included).
    fn greedy(
        &mut self,
        opts: &TranscribeOptions,
        timestamps: &TimestampRules,
        max_sampled: usize,
        mut sampling: Option<(f64, &mut Rng)>,
        timings: &mut Timings,
    ) -> Result<(Vec<u32>, f64), WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        let eot = model.config.special.eot;
        self.sampled.clear();
        let mut sum_logprob = 0.0;
        for step in 0..max_sampled {
            if self.aborted() {
                return Err(WhisperError::Aborted);
            }
            let t_sample = Instant::now();
            self.suppress.apply(&mut self.logits, &self.sampled);
            if opts.suppress_blank {
                self.suppress_blank.apply(&mut self.logits, &self.sampled);
            }
            if !opts.without_timestamps {
                timestamps.apply(&mut self.logits, &self.sampled);
            }
            let pick = match sampling.as_mut() {
                None => GreedyPick::pick(&self.logits),
                Some((temperature, rng)) => {
                    sample(&self.logits, *temperature, rng).map(|s| GreedyPick {
                        token: s.token,
                        logprob: s.logprob,
                    })
                }
            };
            let Some(pick) = pick else {
                break;
            };
            sum_logprob += pick.logprob;
            timings.sampling += t_sample.elapsed();
            if pick.token == eot {
                break;
            }
            self.sampled.push(pick.token);
            timings.sampled_tokens += 1;
            if step + 1 == max_sampled {
                break;
            }
            let t_forward = Instant::now();
            let logits =
                decoder.forward_token(backend, &mut self.decoder_ws, pick.token, self.kv_len)?;
            self.logits.copy_from_slice(logits);
            self.kv_len += 1;
            timings.decoder_passes += 1;
            timings.decoder_layers += t_forward.elapsed();
        }
        Ok((self.sampled.clone(), sum_logprob))
    }

    /// Beam search over one window whose prompt has been run (its last logits in
    /// `self.logits`); returns the best hypothesis' tokens and cumulative log-probability.
    fn beam_search(
        &mut self,
        opts: &TranscribeOptions,
        timestamps: &TimestampRules,
        max_sampled: usize,
        timings: &mut Timings,
    ) -> Result<(Vec<u32>, f64), WhisperError> {
        let beam = opts.beam_size;
        if beam == 0 || beam > MAX_BEAMS {
            return Err(WhisperError::BadBeamSize(beam));
        }
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&*model.decoder_backend, &model.decoder);
        let dims = model.config.dims;
        let n_vocab = dims.n_vocab;
        let options = opts.beam_options;
        if options.max_candidates(beam).is_none() || !options.length_penalty.is_finite() {
            return Err(WhisperError::BadBeamOptions {
                patience: options.patience,
                length_penalty: options.length_penalty,
            });
        }
        if self
            .beams
            .as_ref()
            .is_none_or(|b| b.search.beam() != beam || b.search.options() != options)
        {
            self.beams = Some(BeamBuffers {
                search: BeamSearch::with_options(
                    beam,
                    model.config.special.eot,
                    dims.n_text_ctx,
                    options,
                ),
                logits: vec![0.0; beam * n_vocab],
                tokens: vec![0; beam],
                slots: [0; MAX_BEAMS],
                next_slots: [0; MAX_BEAMS],
            });
        }
        let bb = self.beams.as_mut().expect("allocated above");
        bb.search.reset();
        bb.logits[..n_vocab].copy_from_slice(&self.logits);
        bb.slots[0] = 0;
        for step in 0..max_sampled {
            if self
                .abort
                .as_ref()
                .is_some_and(|a| a.load(Ordering::Relaxed))
            {
                return Err(WhisperError::Aborted);
            }
            let t_sample = Instant::now();
            let alive = bb.search.alive();
            for (r, row) in bb.logits.chunks_exact_mut(n_vocab).take(alive).enumerate() {
                let sampled = bb.search.tokens(r);
                self.suppress.apply(row, sampled);
                if opts.suppress_blank {
                    self.suppress_blank.apply(row, sampled);
                }
                if !opts.without_timestamps {
                    timestamps.apply(row, sampled);
                }
                let lse = amanuensis_runtime::cpu::log_sum_exp(row) as f32;
                row.iter_mut().for_each(|x| *x -= lse);
            }
            let mut rows: [&[f32]; MAX_BEAMS] = [&[]; MAX_BEAMS];
            for (r, row) in bb.logits.chunks_exact(n_vocab).take(alive).enumerate() {
                rows[r] = row;
            }
            let last = step + 1 == max_sampled;
            let conts = bb.search.step(&rows[..alive], last);
            timings.sampling += t_sample.elapsed();
            if conts.is_empty() {
                break;
            }
            // Cache slots: a parent's first child keeps its slot; further children take slots
            // no continuing beam needs and get a copy of the parent's history.
            let n = conts.len();
            let mut claimed = [false; MAX_BEAMS]; // by parent index
            let mut in_use = [false; MAX_BEAMS]; // by slot
            let mut pending = [false; MAX_BEAMS];
            for (k, c) in conts.iter().enumerate() {
                bb.tokens[k] = c.token;
                if !claimed[c.parent] {
                    claimed[c.parent] = true;
                    bb.next_slots[k] = bb.slots[c.parent];
                    in_use[bb.slots[c.parent]] = true;
                } else {
                    pending[k] = true;
                }
            }
            let mut free = (0..beam).filter(|&s| !in_use[s]);
            for (k, c) in conts.iter().enumerate() {
                if pending[k] {
                    let slot = free.next().expect("beam slots: one per beam");
                    decoder.copy_slot(
                        backend,
                        &mut self.decoder_ws,
                        bb.slots[c.parent],
                        slot,
                        self.kv_len,
                    )?;
                    bb.next_slots[k] = slot;
                }
            }
            std::mem::swap(&mut bb.slots, &mut bb.next_slots);
            timings.sampled_tokens += 1;
            let t_forward = Instant::now();
            let logits = decoder.forward_beams(
                backend,
                &mut self.decoder_ws,
                &bb.tokens[..n],
                &bb.slots[..n],
                self.kv_len,
            )?;
            bb.logits[..n * n_vocab].copy_from_slice(logits);
            self.kv_len += 1;
            timings.decoder_passes += 1;
            timings.decoder_layers += t_forward.elapsed();
        }
        // Release the beams' slots (a copy of no positions): a backend that shares slot 0's
        // positions with them then has nothing to copy out when slot 0 is next written.
        for slot in 1..beam {
            decoder.copy_slot(backend, &mut self.decoder_ws, 0, slot, 0)?;
        }
        Ok(match bb.search.best() {
            Some((tokens, score)) => (tokens.to_vec(), score as f64),
            None => (Vec::new(), f64::NEG_INFINITY),
        })
    }
}

/// Temperature fallback and the loop guard (faster-whisper `generate_with_fallback`; the rules
/// are in `decode::fallback`).
impl<E: Backend, D: Backend> Session<E, D> {
    /// Decodes the current window at each of `opts.fallback.temperatures` until one passes
    /// (best of `best_of` samples at T > 0); then, with `opts.guards.cut_loops`, cuts a
    /// repetition loop. Returns the result and the temperature it is labelled with.
    fn decode_with_fallback(
        &mut self,
        prompt: &[u32],
        sot_index: usize,
        opts: &TranscribeOptions,
        rng: &mut Rng,
        timings: &mut Timings,
    ) -> Result<(WindowResult, f64), WhisperError> {
        let model = Arc::clone(&self.model);
        let fb = &opts.fallback;
        let thresholds = crate::decode::fallback::Thresholds {
            compression_ratio: fb.compression_ratio_threshold,
            log_prob: opts.log_prob_threshold,
            no_speech: opts.no_speech_threshold,
        };
        let score = |r: WindowResult| -> Result<Scored<WindowResult>, WhisperError> {
            let text = model.tokenizer.decode_text(&r.tokens)?;
            Ok(Scored {
                avg_logprob: r.avg_logprob,
                no_speech_prob: r.no_speech_prob,
                compression_ratio: compression_ratio(text.trim()),
                result: r,
            })
        };
        let temperatures: &[f64] = if fb.temperatures.is_empty() {
            &[0.0]
        } else {
            &fb.temperatures
        };
        let (mut chosen, temperature) = decode_with_fallback(temperatures, &thresholds, |t| {
            if t <= 0.0 {
                let r = self.decode_window_at(prompt, sot_index, opts, None, timings)?;
                return score(r);
            }
            let mut samples = Vec::with_capacity(fb.best_of.max(1));
            for _ in 0..fb.best_of.max(1) {
                let r =
                    self.decode_window_at(prompt, sot_index, opts, Some((t, &mut *rng)), timings)?;
                samples.push(r);
            }
            let best = best_hypothesis(
                samples.iter().map(|r| (r.sum_logprob, r.tokens.len())),
                opts.beam_options.length_penalty as f64,
            )
            .expect("at least one sample");
            score(samples.swap_remove(best))
        })?;
        if opts.guards.cut_loops
            && chosen.compression_ratio > fb.compression_ratio_threshold.unwrap_or(2.4)
        {
            let timestamp_begin = model.config.special.timestamp_begin;
            if let Some(keep) = repetition_cut(&chosen.result.tokens, timestamp_begin) {
                chosen.result.tokens.truncate(keep);
            }
        }
        Ok((chosen.result, temperature))
    }
}

/// What the guards may read of the input: its samples (digital silence) and its speech
/// stretches (the VAD gate); a streamed input has neither.
#[derive(Clone, Copy)]
struct Audio<'a> {
    silence: Option<&'a SilenceMap>,
    gate: Option<&'a SpeechGate>,
}

/// Samples per 10 ms mel frame.
const SAMPLES_PER_FRAME: usize = 160;

impl Audio<'_> {
    fn holds_speech(&self, seek: usize, n_frames: usize) -> bool {
        let silent = self.silence.is_some_and(|map| {
            map.is_silent(
                seek * SAMPLES_PER_FRAME,
                (seek + n_frames) * SAMPLES_PER_FRAME,
            )
        });
        !silent
            && self
                .gate
                .is_none_or(|g| g.window_has_speech(seek, n_frames))
    }

    fn span_holds_speech(&self, start: f64, end: f64) -> bool {
        let silent = self.silence.is_some_and(|map| {
            let rate = crate::audio::resample::TARGET_RATE as f64;
            let s = (start.max(0.0) * rate) as usize;
            let e = (end.max(start + 0.02) * rate).ceil() as usize;
            map.is_silent(s, e)
        });
        !silent && self.gate.is_none_or(|g| g.segment_has_speech(start, end))
    }
}
