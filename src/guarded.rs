//! Transcription with the voice-activity guards: the VAD gate (default when the VAD model is
//! at hand: windows and segments without speech are skipped, speech windows are untouched) or
//! the `--vad` filter (faster-whisper's `vad_filter=True`: speech stretches concatenated, times
//! mapped back); and the decoding flags that choose them, with faster-whisper's names and
//! defaults.

use std::time::{Duration, Instant};

use amanuensis_model::audio::AudioInput;
use amanuensis_model::decode::guards::{SilenceMap, SpeechGate};
use amanuensis_model::mel::MelFrontend;
use amanuensis_model::mel_windows::StreamedLogMel;
use amanuensis_model::session::{TranscribeOptions, Transcript};
use amanuensis_model::vad::{speech_chunks, SpeechOnly, Vad, VadOptions};

use crate::engine::{Error, Session};
use amanuensis_model::session::{Hooks, WindowDone};

/// How the VAD is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadMode {
    /// Not at all (only the digital-silence guard, if guards are on).
    Off,
    /// Gate: skip windows and drop segments without speech; never changes a speech window.
    Gate,
    /// faster-whisper's `vad_filter=True` with its default `VadOptions`.
    Filter,
}

/// [`Session::transcribe_guarded`] under `mode`, with hooks and a per-window callback (under
/// [`VadMode::Filter`] the callback sees segments on the speech-only timeline; the returned
/// transcript's times are mapped back); also returns the time the VAD took.
pub fn transcribe(
    session: &mut Session,
    vad: Option<&Vad>,
    mode: VadMode,
    samples: &[f32],
    opts: &TranscribeOptions,
    hooks: &mut Hooks,
    on_window: &mut dyn FnMut(WindowDone<'_>),
) -> Result<(Transcript, Duration), Error> {
    let vad = match (mode, vad) {
        (VadMode::Off, _) | (_, None) => {
            return Ok((
                session.transcribe_guarded(samples, None, opts, hooks, on_window)?,
                Duration::ZERO,
            ))
        }
        (_, Some(v)) => v,
    };
    let t = Instant::now();
    let chunks = vad.speech_chunks(samples, &VadOptions::default());
    let vad_time = t.elapsed();
    match mode {
        VadMode::Gate => {
            let gate = SpeechGate::new(chunks);
            Ok((
                session.transcribe_guarded(samples, Some(&gate), opts, hooks, on_window)?,
                vad_time,
            ))
        }
        _ => {
            let speech = SpeechOnly::new(samples, chunks);
            let mut transcript =
                session.transcribe_guarded(&speech.samples, None, opts, hooks, on_window)?;
            speech.restore_times(&mut transcript.segments);
            transcript.duration = samples.len() as f64 / 16_000.0;
            Ok((transcript, vad_time))
        }
    }
}

/// A streamed input with what the guards need, gathered in the log-mel's first pass: the
/// digital-silence map (one bit per 10 ms) and, under [`VadMode::Gate`] with a VAD, the speech
/// stretches. Memory does not grow with the input (the VAD keeps one probability per 32 ms).
pub struct StreamedInput {
    /// The windows, served from the second pass.
    pub mel: StreamedLogMel,
    /// Which frames are digital silence.
    pub silence: SilenceMap,
    /// The speech stretches (`None` without a VAD or outside [`VadMode::Gate`]).
    pub gate: Option<SpeechGate>,
    /// Time the VAD took in the first pass.
    pub vad_time: Duration,
}

/// Opens `input` as a stream and gathers the guards on the way (`mode` must not be
/// [`VadMode::Filter`], which cuts the audio itself and so reads it whole).
pub fn open_streamed(
    input: &AudioInput,
    frontend: &MelFrontend,
    vad: Option<&Vad>,
    mode: VadMode,
) -> Result<StreamedInput, Error> {
    let mut silence = SilenceMap::default();
    let mut probs = vad.filter(|_| mode == VadMode::Gate).map(Vad::stream);
    let mut vad_time = Duration::ZERO;
    let mel = StreamedLogMel::open_observed(input, frontend, &mut |block| {
        silence.push(block);
        if let Some(p) = probs.as_mut() {
            let t = Instant::now();
            p.push(block);
            vad_time += t.elapsed();
        }
    })?;
    let gate = probs.map(|p| {
        let t = Instant::now();
        let n = p.samples();
        let chunks = speech_chunks(&p.finish(), n, &VadOptions::default());
        vad_time += t.elapsed();
        SpeechGate::new(chunks)
    });
    Ok(StreamedInput {
        mel,
        silence,
        gate,
        vad_time,
    })
}
