//! A transcription session: the per-stream state (encoder buffers, KV cache, decoder buffers,
//! logits) allocated once, and the long-form loop that walks 30 s windows over a file exactly as
//! faster-whisper's `generate_segments` does (greedy or beam search, temperature 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use amanuensis_runtime::backend::Backend;

use crate::decode::fallback::{best_hypothesis, decode_with_fallback, FallbackOptions, Scored};
use crate::decode::guards::{is_digital_silence, repetition_cut, SpeechGate};
use crate::decode::BeamSearch;
use crate::decode::{compression_ratio, sample, Rng};
use crate::decode::{GreedyPick, LogitFilter, SuppressBlank, SuppressTokens, TimestampRules};
use crate::decoder::DecoderScratch;
use crate::encoder::EncoderScratch;
use crate::error::WhisperError;
use crate::kv_cache::KvCache;
use crate::segment::{split_by_timestamps, Segment, TIME_PER_FRAME, TIME_PRECISION};
use crate::whisper::Whisper;
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
            fallback: FallbackOptions::default(),
            guards: GuardOptions::default(),
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub mel: Duration,
    pub encode: Duration,
    pub decode: Duration,
    /// Within `decode`: the decoder blocks of single-token passes.
    pub decoder_layers: Duration,
    /// Within `decode`: the output projection of single-token passes.
    pub logits: Duration,
    /// Within `decode`: logit filters and the greedy pick.
    pub sampling: Duration,
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
}

/// Per-stream state over a shared model. Everything is allocated in [`Session::new`].
pub struct Session<B: Backend> {
    model: Arc<Whisper<B>>,
    mel_window: Vec<f32>,
    encoder_scratch: EncoderScratch,
    encoder_out: Vec<f32>,
    kv: KvCache<B>,
    decoder_scratch: DecoderScratch,
    logits: Vec<f32>,
    sampled: Vec<u32>,
    suppress: SuppressTokens,
    suppress_blank: SuppressBlank,
    timestamp_rules: TimestampRules,
    /// Beam-search state, allocated by the first call with `beam_size > 1`.
    beams: Option<BeamBuffers>,
}

/// Most beams a session searches with.
pub const MAX_BEAMS: usize = 16;

/// Buffers of beam search: the search state, every beam's logits, cache slot bookkeeping.
struct BeamBuffers {
    search: BeamSearch,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    slots: [usize; MAX_BEAMS],
    next_slots: [usize; MAX_BEAMS],
}

impl<B: Backend> Session<B> {
    /// Allocates all buffers a transcription needs.
    pub fn new(model: Arc<Whisper<B>>) -> Self {
        let dims = model.config.dims;
        let backend = &model.backend;
        Self {
            mel_window: zeroed(dims.n_mels * model.encoder.n_frames()),
            encoder_scratch: model.encoder.scratch(backend),
            encoder_out: zeroed(dims.n_audio_ctx * dims.n_audio_state),
            kv: KvCache::new(backend, &dims),
            decoder_scratch: model.decoder.scratch(backend),
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
            model,
        }
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Whisper<B>> {
        &self.model
    }

    /// Encodes one padded window `[n_mels, 3000]`; returns the encoder output `[1500, d]`.
    pub fn encode(&mut self, mel_window: &[f32]) -> &[f32] {
        let m = &self.model;
        m.encoder.forward(
            &m.backend,
            mel_window,
            &mut self.encoder_scratch,
            &mut self.encoder_out,
        );
        &self.encoder_out
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_gated(samples, opts, None)
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
        let model = Arc::clone(&self.model);
        let special = model.config.special;
        let n_text_ctx = model.config.dims.n_text_ctx;
        let mut timings = Timings::default();

        let t = Instant::now();
        let mel = model.mel.compute(samples);
        timings.mel = t.elapsed();
        let content_frames = mel.content_frames;

        let sot_sequence = model.sot_sequence(&opts.language)?;
        let mut all_tokens: Vec<u32> = Vec::new();
        if let Some(p) = &opts.initial_prompt {
            all_tokens.extend(model.tokenizer.encode(&format!(" {}", p.trim()))?);
        }
        let mut prompt_reset_since = 0;
        let mut segments = Vec::new();
        let mut prompt: Vec<u32> = Vec::with_capacity(n_text_ctx);
        let mut seek = 0usize;
        let mut rng = Rng::new(opts.fallback.seed);
        while seek < content_frames {
            let time_offset = seek as f64 * TIME_PER_FRAME;
            let segment_size = model.encoder.n_frames().min(content_frames - seek);
            if opts.guards.skip_silence && !holds_speech(samples, gate, seek, segment_size) {
                seek += segment_size;
                continue;
            }

            let t = Instant::now();
            mel.window(seek, &mut self.mel_window)?;
            model.encoder.forward(
                &model.backend,
                &self.mel_window,
                &mut self.encoder_scratch,
                &mut self.encoder_out,
            );
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
                    continue;
                }
            }

            let split = split_by_timestamps(
                &result.tokens,
                special.timestamp_begin,
                time_offset,
                segment_size,
            );
            let window_seek = seek;
            seek += split.seek_delta;
            for raw in split.segments {
                let text = model.tokenizer.decode_text(&raw.tokens)?;
                if raw.start == raw.end || text.trim().is_empty() {
                    continue;
                }
                if opts.guards.skip_silence && !span_holds_speech(samples, gate, raw.start, raw.end)
                {
                    continue;
                }
                all_tokens.extend_from_slice(&raw.tokens);
                segments.push(Segment {
                    id: segments.len() + 1,
                    seek: window_seek,
                    start: raw.start,
                    end: raw.end,
                    text,
                    tokens: raw.tokens,
                    avg_logprob: result.avg_logprob,
                    no_speech_prob: result.no_speech_prob,
                    temperature,
                });
            }
            if !opts.condition_on_previous_text
                || temperature > opts.fallback.prompt_reset_on_temperature
            {
                prompt_reset_since = all_tokens.len();
            }
        }
        let duration = samples.len() as f64 / crate::audio::resample::TARGET_RATE as f64;
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
        mut sampling: Option<(f64, &mut Rng)>,
        timings: &mut Timings,
    ) -> Result<WindowResult, WhisperError> {
        let model = Arc::clone(&self.model);
        let (backend, decoder) = (&model.backend, &model.decoder);
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

        let (proj_k, proj_v) = self.encoder_scratch.spare_pair();
        decoder.compute_cross_kv(backend, &self.encoder_out, &mut self.kv, proj_k, proj_v);
        self.kv.reset();
        decoder.forward(backend, prompt, &mut self.kv, &mut self.decoder_scratch);
        timings.decoder_passes += 1;

        // No-speech probability: softmax of the raw logits at the SOT position.
        decoder.logits(backend, &self.decoder_scratch, sot_index, &mut self.logits);
        let no_speech_prob = {
            let lse = crate::decode::log_sum_exp(&self.logits);
            (self.logits[special.no_speech as usize] as f64 - lse).exp()
        };
        if sot_index != prompt.len() - 1 {
            decoder.logits(
                backend,
                &self.decoder_scratch,
                prompt.len() - 1,
                &mut self.logits,
            );
        }

        let max_sampled = (n_text_ctx / 2).min(n_text_ctx + 1 - prompt.len());
        if opts.beam_size != 1 && sampling.is_none() {
            let (tokens, sum_logprob) =
                self.beam_search(opts, &timestamps, max_sampled, timings)?;
            let avg_logprob = sum_logprob / (tokens.len() + 1) as f64;
            return Ok(WindowResult {
                tokens,
                sum_logprob,
                avg_logprob,
                no_speech_prob,
            });
        }
        self.sampled.clear();
        let mut sum_logprob = 0.0;
        for step in 0..max_sampled {
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
            if pick.token == special.eot {
                break;
            }
            self.sampled.push(pick.token);
            timings.sampled_tokens += 1;
            if step + 1 == max_sampled {
                break;
            }
            let t_forward = Instant::now();
            decoder.forward(
                backend,
                &[pick.token],
                &mut self.kv,
                &mut self.decoder_scratch,
            );
            timings.decoder_passes += 1;
            let t_logits = Instant::now();
            timings.decoder_layers += t_logits - t_forward;
            decoder.logits(backend, &self.decoder_scratch, 0, &mut self.logits);
            timings.logits += t_logits.elapsed();
        }
        let tokens = self.sampled.clone();
        let avg_logprob = sum_logprob / (tokens.len() + 1) as f64;
        Ok(WindowResult {
            tokens,
            sum_logprob,
            avg_logprob,
            no_speech_prob,
        })
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
        let (backend, decoder) = (&model.backend, &model.decoder);
        let dims = model.config.dims;
        let n_vocab = dims.n_vocab;
        if self.beams.as_ref().is_none_or(|b| b.search.beam() != beam) {
            self.beams = Some(BeamBuffers {
                search: BeamSearch::new(beam, model.config.special.eot, dims.n_text_ctx),
                logits: vec![0.0; beam * n_vocab],
                tokens: vec![0; beam],
                slots: [0; MAX_BEAMS],
                next_slots: [0; MAX_BEAMS],
            });
            self.kv.ensure_slots(beam);
        }
        let bb = self.beams.as_mut().expect("allocated above");
        bb.search.reset();
        bb.logits[..n_vocab].copy_from_slice(&self.logits);
        bb.slots[0] = 0;
        for step in 0..max_sampled {
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
                    self.kv.copy_slot(bb.slots[c.parent], slot);
                    bb.next_slots[k] = slot;
                }
            }
            std::mem::swap(&mut bb.slots, &mut bb.next_slots);
            timings.sampled_tokens += 1;
            let t_forward = Instant::now();
            decoder.forward_beams(
                backend,
                &bb.tokens[..n],
                &bb.slots[..n],
                &mut self.kv,
                &mut self.decoder_scratch,
            );
            timings.decoder_passes += 1;
            let t_logits = Instant::now();
            timings.decoder_layers += t_logits - t_forward;
            decoder.logits_rows(backend, &self.decoder_scratch, n, &mut bb.logits);
            timings.logits += t_logits.elapsed();
        }
        Ok(match bb.search.best() {
            Some((tokens, score)) => (tokens.to_vec(), score as f64),
            None => (Vec::new(), f64::NEG_INFINITY),
        })
    }
}

/// Temperature fallback and the loop guard (faster-whisper `generate_with_fallback`; the rules
/// are in `decode::fallback`).
impl<B: Backend> Session<B> {
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
            let best = best_hypothesis(samples.iter().map(|r| (r.sum_logprob, r.tokens.len())))
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

/// Samples per 10 ms mel frame.
const SAMPLES_PER_FRAME: usize = 160;

/// Whether the window of `n_frames` from frame `seek` may hold speech: not digital silence, and
/// inside a speech stretch when there is a gate.
fn holds_speech(samples: &[f32], gate: Option<&SpeechGate>, seek: usize, n_frames: usize) -> bool {
    let start = (seek * SAMPLES_PER_FRAME).min(samples.len());
    let end = ((seek + n_frames) * SAMPLES_PER_FRAME).min(samples.len());
    !is_digital_silence(&samples[start..end])
        && gate.is_none_or(|g| g.window_has_speech(seek, n_frames))
}

/// Whether the segment `start..end` (seconds) may hold speech (as [`holds_speech`]).
fn span_holds_speech(samples: &[f32], gate: Option<&SpeechGate>, start: f64, end: f64) -> bool {
    let rate = crate::audio::resample::TARGET_RATE as f64;
    let s = ((start.max(0.0) * rate) as usize).min(samples.len());
    let e = ((end.max(start + 0.02) * rate).ceil() as usize).min(samples.len());
    !is_digital_silence(&samples[s..e]) && gate.is_none_or(|g| g.segment_has_speech(start, end))
}
