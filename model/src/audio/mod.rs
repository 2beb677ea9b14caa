//! Audio input: WAV, FLAC, MP3, Ogg Vorbis and M4A/AAC files or standard input, decoded and
//! resampled as a stream to 16 kHz mono f32, the sample format Whisper consumes.

pub mod codec;
pub mod error;
pub mod resample;
pub mod stream;
pub mod wav;

use std::path::Path;

pub use error::{AudioError, FourCc, WavError};
pub use resample::{resample_to_16k, StreamResampler, TARGET_RATE};
pub use stream::{load_audio, AudioInput, AudioStream, MAX_DURATION_SECONDS};
pub use wav::{parse_wav, read_wav, WavAudio, WavReader};

/// Loads an audio file (any supported format) as 16 kHz mono f32: decoded, mixed down to mono,
/// resampled unless the file is already 16 kHz (then the samples are exactly the decoded ones;
/// for 16-bit PCM, the faster-whisper values `int16 / 32768`).
pub fn load_wav(path: &Path) -> Result<Vec<f32>, AudioError> {
    load_audio(&AudioInput::File(path.to_path_buf()))
}
