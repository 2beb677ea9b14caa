//! Transcription with the voice-activity guards: the VAD gate (default when the VAD model is
//! at hand: windows and segments without speech are skipped, speech windows are untouched) or
//! the `--vad` filter (faster-whisper's `vad_filter=True`: speech stretches concatenated, times
//! mapped back); and the decoding flags that choose them, with faster-whisper's names and
//! defaults.

use std::time::{Duration, Instant};

use amanuensis_model::decode::guards::SpeechGate;
use amanuensis_model::session::{TranscribeOptions, Transcript};
use amanuensis_model::vad::{SpeechOnly, Vad, VadOptions};

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
