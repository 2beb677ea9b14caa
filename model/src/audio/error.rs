//! Errors of the audio input: reading a file, parsing RIFF/WAVE, resampling.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong turning an audio file into 16 kHz mono samples.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be read.
    #[error("cannot read audio file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bytes are not a WAV file we can decode.
    #[error("{}: {error}", Origin(path.as_deref()))]
    Wav {
        /// The file, or `None` when parsing bytes from memory.
        path: Option<PathBuf>,
        /// What is wrong, with byte offsets.
        error: WavError,
    },
    /// Not a container we recognise.
    #[error(
        "{}: not a recognised audio format (WAV, FLAC, MP3, Ogg Vorbis, M4A/AAC are)",
        Origin(path.as_deref())
    )]
    UnknownFormat {
        /// The file, or `None` for in-memory input.
        path: Option<PathBuf>,
    },
    /// The container or codec is broken or unsupported.
    #[error("{}: cannot decode: {reason}", Origin(path.as_deref()))]
    Decode {
        /// The file, or `None` for in-memory input.
        path: Option<PathBuf>,
        /// What the decoder said.
        reason: String,
    },
    /// The input runs past the duration limit.
    #[error(
        "{}: longer than the {limit_hours} h limit (refused rather than filling memory and disk)",
        Origin(path.as_deref())
    )]
    TooLong {
        /// The file, or `None` for in-memory input.
        path: Option<PathBuf>,
        /// The limit in hours.
        limit_hours: u64,
    },
    /// The sample rate is outside what the resampler accepts.
    #[error(
        "{}: sample rate {rate} Hz is not supported (must be {}..={} Hz)",
        Origin(path.as_deref()),
        crate::audio::resample::MIN_INPUT_RATE,
        crate::audio::resample::MAX_INPUT_RATE
    )]
    UnsupportedSampleRate {
        /// The file, or `None` for in-memory input.
        path: Option<PathBuf>,
        /// The rejected rate.
        rate: u32,
    },
}

impl AudioError {
    /// Attaches a file path to an error produced from in-memory bytes.
    pub(crate) fn with_path(self, file: &Path) -> Self {
        let named = Some(file.to_path_buf());
        match self {
            AudioError::Io { path, source } if path == Path::new("<input>") => AudioError::Io {
                path: file.to_path_buf(),
                source,
            },
            AudioError::UnknownFormat { path: None } => AudioError::UnknownFormat { path: named },
            AudioError::Decode { path: None, reason } => AudioError::Decode {
                path: named,
                reason,
            },
            AudioError::TooLong {
                path: None,
                limit_hours,
            } => AudioError::TooLong {
                path: named,
                limit_hours,
            },
            AudioError::Wav { path: None, error } => AudioError::Wav {
                path: Some(file.to_path_buf()),
                error,
            },
            AudioError::UnsupportedSampleRate { path: None, rate } => {
                AudioError::UnsupportedSampleRate {
                    path: Some(file.to_path_buf()),
                    rate,
                }
            }
            other => other,
        }
    }
}

impl From<WavError> for AudioError {
    fn from(error: WavError) -> Self {
        AudioError::Wav { path: None, error }
    }
}

/// Names where the audio came from in an error message.
struct Origin<'a>(Option<&'a Path>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("<audio bytes>"),
        }
    }
}

/// A four-character RIFF chunk id, printed with non-printable bytes escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// Why a byte string is not a decodable RIFF/WAVE file. Offsets are from the start of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Fewer than the 12 bytes of the RIFF/WAVE header.
    #[error("file is {len} bytes, too short for a RIFF/WAVE header (12 bytes)")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The first four bytes are not `RIFF`.
    #[error("not a RIFF file (starts with {found})")]
    NotRiff {
        /// The bytes found at offset 0.
        found: FourCc,
    },
    /// The RIFF form type at offset 8 is not `WAVE`.
    #[error("RIFF form type at offset 8 is {found}, not \"WAVE\"")]
    NotWave {
        /// The bytes found at offset 8.
        found: FourCc,
    },
    /// A chunk header (8 bytes) is cut off by the end of the file.
    #[error("truncated chunk header at offset {offset}: {available} of 8 bytes present")]
    TruncatedChunkHeader {
        /// Offset of the chunk header.
        offset: u64,
        /// Bytes left in the file there.
        available: u64,
    },
    /// A chunk declares more bytes than the file holds.
    #[error(
        "truncated {id} chunk at offset {offset}: declares {declared} bytes, {available} present"
    )]
    TruncatedChunk {
        /// The chunk id.
        id: FourCc,
        /// Offset of the chunk header.
        offset: u64,
        /// The size field.
        declared: u64,
        /// Bytes left in the file after the header.
        available: u64,
    },
    /// No `fmt ` chunk before the end of the file.
    #[error("no \"fmt \" chunk")]
    NoFmtChunk,
    /// No `data` chunk before the end of the file.
    #[error("no \"data\" chunk")]
    NoDataChunk,
    /// The `fmt ` chunk is too small for its format.
    #[error("\"fmt \" chunk at offset {offset} is {size} bytes, need at least {needed}")]
    FmtTooShort {
        /// Offset of the chunk header.
        offset: u64,
        /// Its size.
        size: u32,
        /// The minimum for the format tag found.
        needed: u32,
    },
    /// A format tag other than PCM (1), IEEE float (3) or WAVE_FORMAT_EXTENSIBLE (0xFFFE).
    #[error("unsupported WAV format tag {tag:#06x} at offset {offset} (PCM, IEEE float and extensible are supported)")]
    UnsupportedFormatTag {
        /// The tag (for extensible files, the sub-format code).
        tag: u16,
        /// Offset of the field.
        offset: u64,
    },
    /// A WAVE_FORMAT_EXTENSIBLE sub-format GUID that is not the standard PCM/float GUID.
    #[error("unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID at offset {offset}")]
    UnsupportedSubFormat {
        /// Offset of the GUID.
        offset: u64,
    },
    /// A sample size we do not decode for this encoding.
    #[error(
        "unsupported bit depth: {bits}-bit {encoding} (supported: PCM 8/16/24/32, float 32/64)"
    )]
    UnsupportedBitDepth {
        /// `"PCM"` or `"float"`.
        encoding: &'static str,
        /// Bits per sample.
        bits: u16,
    },
    /// The format declares zero channels.
    #[error("\"fmt \" chunk at offset {offset} declares zero channels")]
    ZeroChannels {
        /// Offset of the chunk header.
        offset: u64,
    },
    /// The format declares a zero sample rate.
    #[error("\"fmt \" chunk at offset {offset} declares a zero sample rate")]
    ZeroSampleRate {
        /// Offset of the chunk header.
        offset: u64,
    },
    /// Block align disagrees with channels x bytes per sample.
    #[error("block align {block_align} disagrees with {channels} channels x {bits} bits")]
    BlockAlignMismatch {
        /// The declared block align.
        block_align: u16,
        /// Channels.
        channels: u16,
        /// Bits per sample.
        bits: u16,
    },
    /// The data chunk holds no complete sample frame.
    #[error("\"data\" chunk at offset {offset} holds no audio")]
    EmptyData {
        /// Offset of the chunk header.
        offset: u64,
    },
    /// The data chunk size is not a whole number of sample frames.
    #[error("\"data\" chunk at offset {offset}: {size} bytes is not a multiple of the {block_align}-byte frame")]
    PartialFrame {
        /// Offset of the chunk header.
        offset: u64,
        /// Its size.
        size: u64,
        /// Bytes per frame.
        block_align: u16,
    },
    /// A float sample is NaN or infinite.
    #[error("non-finite float sample at offset {offset}")]
    NonFiniteSample {
        /// Offset of the sample.
        offset: u64,
    },
}
