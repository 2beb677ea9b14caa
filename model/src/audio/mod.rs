//! Audio input: WAV files to 16 kHz mono f32, the sample format Whisper consumes.

pub mod error;
pub mod resample;
pub mod wav;

use std::path::Path;

pub use error::{AudioError, FourCc, WavError};
pub use resample::{resample_to_16k, TARGET_RATE};
pub use wav::{parse_wav, read_wav, WavAudio};

/// Loads a WAV file as 16 kHz mono f32: decoded, mixed down to mono, resampled unless the file
/// is already 16 kHz (then the samples are exactly the decoded ones; for 16-bit PCM, the
/// faster-whisper values `int16 / 32768`).
pub fn load_wav(path: &Path) -> Result<Vec<f32>, AudioError> {
    let wav = read_wav(path)?;
    if wav.sample_rate == TARGET_RATE {
        return Ok(wav.samples);
    }
    resample_to_16k(&wav.samples, wav.sample_rate).map_err(|e| e.with_path(path))
}
