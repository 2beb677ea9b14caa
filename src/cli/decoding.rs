//! The decoding flags of `transcribe`: faster-whisper's `transcribe()` names and defaults, the
//! hallucination guards and the VAD.

use std::path::PathBuf;

use amanuensis::guarded::VadMode;
use amanuensis::model::decode::fallback::FallbackOptions;
use amanuensis::model::decode::BeamOptions;
use amanuensis::model::session::{GuardOptions, TranscribeOptions};
use amanuensis::model::vad::Vad;

/// Decoding flags (faster-whisper's `transcribe()` names and defaults) and the guards.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Temperatures for fallback, comma-separated; `0` alone: no fallback.
    #[arg(long, value_delimiter = ',', default_value = "0,0.2,0.4,0.6,0.8,1.0")]
    pub temperature: Vec<f64>,
    /// Random samples per temperature above 0; the most likely one is kept.
    #[arg(long, default_value_t = 5)]
    pub best_of: usize,
    /// Beam search patience: stop once beam size × patience hypotheses have finished.
    #[arg(long, default_value_t = 1.0)]
    pub patience: f32,
    /// Rank finished hypotheses by log-probability / length^this (0: by summed
    /// log-probability, and beam search stops when its best beam finishes).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub length_penalty: f32,
    /// Retry a window whose text's gzip compression ratio is above this.
    #[arg(long, default_value_t = 2.4)]
    pub compression_ratio_threshold: f64,
    /// Retry a window whose average log-probability is below this.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub logprob_threshold: f64,
    /// Treat a window as silence when its no-speech probability is above this and its
    /// log-probability below --logprob-threshold.
    #[arg(long, default_value_t = 0.6)]
    pub no_speech_threshold: f64,
    /// Prompt each window with the previous windows' text.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub condition_on_previous_text: bool,
    /// Seed of the sampling at temperatures above 0 (same seed, same transcript).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// faster-whisper's vad_filter: transcribe only the speech Silero VAD finds (threshold 0.5,
    /// min silence 2 s, pad 400 ms), times mapped back.
    #[arg(long)]
    pub vad: bool,
    /// The VAD model file (default: silero-vad in the model cache, from
    /// `scripts/setup-models.sh silero-vad`).
    #[arg(long)]
    pub vad_model: Option<PathBuf>,
    /// Turn off the hallucination guards (skipping windows without speech, cutting repetition
    /// loops): faster-whisper's behaviour.
    #[arg(long)]
    pub no_guards: bool,
}

impl DecodeArgs {
    /// `opts` with these flags applied.
    pub fn apply(&self, opts: TranscribeOptions) -> TranscribeOptions {
        TranscribeOptions {
            fallback: FallbackOptions {
                temperatures: self.temperature.clone(),
                best_of: self.best_of,
                compression_ratio_threshold: Some(self.compression_ratio_threshold),
                seed: self.seed,
                ..FallbackOptions::default()
            },
            log_prob_threshold: Some(self.logprob_threshold),
            no_speech_threshold: Some(self.no_speech_threshold),
            condition_on_previous_text: self.condition_on_previous_text,
            beam_options: BeamOptions {
                patience: self.patience,
                length_penalty: self.length_penalty,
            },
            guards: if self.no_guards {
                GuardOptions::off()
            } else {
                GuardOptions::default()
            },
            ..opts
        }
    }

    /// Checks the values faster-whisper would reject or that make no sense (`beam_size`:
    /// `--beam-size`, which the patience applies to).
    pub fn validate(&self, beam_size: usize) -> Result<(), String> {
        if self.temperature.is_empty() || self.temperature.iter().any(|t| !(0.0..=10.0).contains(t))
        {
            return Err(format!(
                "--temperature {:?}: expected one or more values in 0..=10",
                self.temperature
            ));
        }
        if self.best_of == 0 {
            return Err("--best-of 0: at least one sample is needed".into());
        }
        let beam = BeamOptions {
            patience: self.patience,
            length_penalty: self.length_penalty,
        };
        if beam.max_candidates(beam_size.max(1)).is_none() {
            return Err(format!(
                "--patience {}: must be a positive number with beam size × patience ≥ 0.5 \
                 (beam size {beam_size})",
                self.patience
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(format!(
                "--length-penalty {}: must be a finite number",
                self.length_penalty
            ));
        }
        Ok(())
    }

    /// Whether the input is decoded whole (`--vad` cuts the audio to its speech); else it
    /// streams window by window, the guards gathered on the way.
    pub fn whole_input(&self) -> bool {
        self.vad
    }

    /// The VAD mode these flags ask for.
    pub fn vad_mode(&self) -> VadMode {
        if self.vad {
            VadMode::Filter
        } else if self.no_guards {
            VadMode::Off
        } else {
            VadMode::Gate
        }
    }

    /// Loads the VAD model if the mode needs it: `--vad` without a model is an error; the
    /// default gate without one falls back to the digital-silence guard (the returned note
    /// says so).
    pub fn load_vad(&self, threads: usize) -> Result<(Option<Vad>, Option<String>), String> {
        let mode = self.vad_mode();
        if mode == VadMode::Off {
            return Ok((None, None));
        }
        let path = self
            .vad_model
            .clone()
            .unwrap_or_else(|| amanuensis::model_path::cached_model("silero-vad"));
        if !path.is_file() {
            let msg = format!(
                "no VAD model at {} (scripts/setup-models.sh silero-vad)",
                path.display()
            );
            return match mode {
                VadMode::Filter => Err(msg),
                _ => Ok((
                    None,
                    Some(format!("{msg}: only digital silence is skipped")),
                )),
            };
        }
        Vad::open(&path, threads)
            .map(|v| (Some(v), None))
            .map_err(|e| e.to_string())
    }
}
