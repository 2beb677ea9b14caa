//! Voice activity detection: Silero VAD v6 written out ([`silero`]) and faster-whisper's rules
//! that turn its probabilities into speech stretches and map times back ([`speech`]).

pub mod detector;
pub mod silero;
pub mod speech;

pub use detector::{SpeechOnly, Vad};
pub use silero::{SileroVad, SpeechProbStream};
pub use speech::{collect_speech, speech_chunks, SpeechChunk, SpeechMap, VadOptions};
