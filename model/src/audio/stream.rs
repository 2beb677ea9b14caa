//! An audio input (a file or standard input) as a stream of 16 kHz mono f32 blocks: the
//! container is recognised from its first bytes (RIFF/WAVE by our own parser, everything else
//! by symphonia), decoded block by block, mixed to mono, clipped to [-1, 1] and resampled, so
//! memory does not grow with the input's length.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::codec::{unseekable, CodecReader};
use super::error::AudioError;
use super::resample::{StreamResampler, TARGET_RATE};
use super::wav::WavReader;

/// Longest input accepted, in seconds (24 h): a stream that claims or delivers more (say
/// `/dev/zero` behind a WAV header) is refused instead of running for days.
pub const MAX_DURATION_SECONDS: u64 = 24 * 3600;

/// Where audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// A file.
    File(PathBuf),
    /// Standard input (`-` on the command line).
    Stdin,
}

impl AudioInput {
    /// `-` is standard input, anything else a file.
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") {
            AudioInput::Stdin
        } else {
            AudioInput::File(arg.to_path_buf())
        }
    }

    /// The name used in messages (`<stdin>` for standard input).
    pub fn name(&self) -> PathBuf {
        match self {
            AudioInput::File(p) => p.clone(),
            AudioInput::Stdin => PathBuf::from("<stdin>"),
        }
    }

    /// Whether the input can be read twice (files can; pipes cannot).
    pub fn rereadable(&self) -> bool {
        matches!(self, AudioInput::File(_))
    }
}

enum Decoder {
    Wav(WavReader<Box<dyn Read + Send>>),
    Codec(Box<CodecReader>),
}

/// A decoded, resampled input.
pub struct AudioStream {
    name: PathBuf,
    decoder: Decoder,
    resampler: Option<StreamResampler>,
    native: Vec<f32>,
    /// Native-rate frames decoded so far.
    frames: u64,
    max_frames: u64,
    ended: bool,
}

impl AudioStream {
    /// Opens and recognises `input`, ready to decode.
    pub fn open(input: &AudioInput) -> Result<Self, AudioError> {
        let name = input.name();
        let io = |source| AudioError::Io {
            path: name.clone(),
            source,
        };
        let (decoder, name) = match input {
            AudioInput::File(path) => {
                let mut file = File::open(path).map_err(io)?;
                if file.metadata().map_err(io)?.is_dir() {
                    return Err(io(std::io::Error::new(
                        std::io::ErrorKind::IsADirectory,
                        "is a directory",
                    )));
                }
                let mut head = [0u8; 12];
                let got = read_head(&mut file, &mut head).map_err(io)?;
                let decoder = if is_wav(&head[..got]) {
                    let reader: Box<dyn Read + Send> = Box::new(std::io::BufReader::new(
                        Cursor::new(head[..got].to_vec()).chain(file),
                    ));
                    Decoder::Wav(WavReader::new(reader).map_err(|e| e.with_path(path))?)
                } else {
                    file.seek(SeekFrom::Start(0)).map_err(io)?;
                    let ext = path.extension().and_then(|e| e.to_str());
                    // FLAC reads front to back; unseekable() guards its metadata. symphonia's
                    // probe finds the marker anywhere in the first MiB, after junk too.
                    let flac = flac_marker_in_head(&mut file).map_err(io)?;
                    file.seek(SeekFrom::Start(0)).map_err(io)?;
                    let source: Box<dyn symphonia::core::io::MediaSource> = if flac {
                        unseekable(std::io::BufReader::new(file))
                    } else {
                        Box::new(file)
                    };
                    Decoder::Codec(Box::new(
                        CodecReader::new(source, ext).map_err(|e| e.with_path(path))?,
                    ))
                };
                (decoder, path.clone())
            }
            AudioInput::Stdin => {
                let mut stdin = std::io::stdin();
                let mut head = [0u8; 12];
                let got = read_head(&mut stdin, &mut head).map_err(io)?;
                let reader = Cursor::new(head[..got].to_vec()).chain(stdin);
                let decoder = if is_wav(&head[..got]) {
                    let reader: Box<dyn Read + Send> = Box::new(std::io::BufReader::new(reader));
                    Decoder::Wav(WavReader::new(reader).map_err(|e| e.with_path(&name))?)
                } else {
                    Decoder::Codec(Box::new(
                        CodecReader::new(unseekable(reader), None)
                            .map_err(|e| e.with_path(&name))?,
                    ))
                };
                (decoder, name.clone())
            }
        };
        let rate = match &decoder {
            Decoder::Wav(w) => w.sample_rate(),
            Decoder::Codec(c) => c.sample_rate(),
        };
        let resampler = if rate == TARGET_RATE {
            None
        } else {
            Some(StreamResampler::new(rate).map_err(|e| e.with_path(&name))?)
        };
        Ok(AudioStream {
            name,
            decoder,
            resampler,
            native: Vec::new(),
            frames: 0,
            max_frames: MAX_DURATION_SECONDS * rate as u64,
            ended: false,
        })
    }

    /// Lowers the duration limit (seconds) from [`MAX_DURATION_SECONDS`].
    pub fn with_max_seconds(mut self, seconds: u64) -> Self {
        self.max_frames = seconds.min(MAX_DURATION_SECONDS) * self.sample_rate() as u64;
        self
    }

    /// The input's sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        match &self.decoder {
            Decoder::Wav(w) => w.sample_rate(),
            Decoder::Codec(c) => c.sample_rate(),
        }
    }

    /// The input's channel count (0 when the container does not say).
    pub fn channels(&self) -> u16 {
        match &self.decoder {
            Decoder::Wav(w) => w.channels(),
            Decoder::Codec(c) => c.channels(),
        }
    }

    /// What the input got wrong but was decoded anyway (complete once [`AudioStream::read`]
    /// returned `false`).
    pub fn warnings(&self) -> Vec<String> {
        match &self.decoder {
            Decoder::Wav(w) => w.warnings().to_vec(),
            Decoder::Codec(c) => c.warnings().to_vec(),
        }
    }

    /// Appends the next block of 16 kHz samples to `out`; `Ok(false)` once the input is done
    /// (the samples appended by that call count).
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        if self.ended {
            return Ok(false);
        }
        self.native.clear();
        let more = match &mut self.decoder {
            Decoder::Wav(w) => w.read_block(&mut self.native),
            Decoder::Codec(c) => c.read_block(&mut self.native),
        }
        .map_err(|e| e.with_path(&self.name))?;
        self.frames += self.native.len() as u64;
        if self.frames > self.max_frames {
            return Err(AudioError::TooLong {
                path: Some(self.name.clone()),
                limit_hours: MAX_DURATION_SECONDS / 3600,
            });
        }
        match &mut self.resampler {
            None => out.extend_from_slice(&self.native),
            Some(r) => {
                r.push(&self.native, out);
                if !more {
                    r.finish(out);
                }
            }
        }
        self.ended = !more;
        Ok(more)
    }
}

fn is_wav(head: &[u8]) -> bool {
    head.len() >= 4 && &head[..4] == b"RIFF"
}

fn read_head<R: Read>(reader: &mut R, head: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// How far symphonia 0.5's probe searches a stream for a format marker
/// (`Probe::PROBE_SEARCH_LIMIT`).
const PROBE_SEARCH_LIMIT: u64 = 1 << 20;

/// Whether the FLAC marker `fLaC` occurs within the first [`PROBE_SEARCH_LIMIT`] bytes, where
/// symphonia's probe would find it (it scans byte by byte, so junk before it does not hide it).
fn flac_marker_in_head<R: Read>(reader: &mut R) -> std::io::Result<bool> {
    let mut window = 0u32;
    let mut buf = [0u8; 64 * 1024];
    let mut limited = reader.take(PROBE_SEARCH_LIMIT + 4);
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            window = (window << 8) | b as u32;
            if window == u32::from_be_bytes(*b"fLaC") {
                return Ok(true);
            }
        }
    }
}

/// Decodes a whole input to 16 kHz mono samples (for tests and short files; the CLI streams).
pub fn load_audio(input: &AudioInput) -> Result<Vec<f32>, AudioError> {
    let mut stream = AudioStream::open(input)?;
    let mut samples = Vec::new();
    while stream.read(&mut samples)? {}
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FLAC *file* whose marker comes after junk bytes is found by symphonia's probe all the
    /// same, so it must go through the FLAC metadata guard too (the `audio_stream` fuzz target's second
    /// input, as a file): an error, not an abort on a 4 GiB allocation.
    #[test]
    fn a_flac_file_with_junk_before_the_marker_is_guarded() {
        let bytes: Vec<u8> = vec![
            255, 11, 102, 241, 211, 211, 211, 102, 76, 97, 67, 6, 10, 2, 82, 255, 255, 255, 255,
            255, 255, 254, 245, 10,
        ];
        let path = std::env::temp_dir().join(format!("junk-flac-{}.bin", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let opened = AudioStream::open(&AudioInput::File(path.clone()));
        std::fs::remove_file(&path).unwrap();
        assert!(opened.is_err());
        let mut junk = vec![0u8; 5000];
        junk.extend_from_slice(b"fLaC");
        assert!(flac_marker_in_head(&mut &junk[..]).unwrap());
        assert!(!flac_marker_in_head(&mut &junk[..4000]).unwrap());
        let mut far = vec![0u8; (PROBE_SEARCH_LIMIT + 10) as usize];
        far.extend_from_slice(b"fLaC");
        assert!(!flac_marker_in_head(&mut &far[..]).unwrap());
    }

    /// An 8-bit 1 kHz mono WAV of `seconds` of silence, open-ended size (as a pipe writes it).
    fn wav(seconds: usize) -> Vec<u8> {
        let mut b = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0\x01\0\x01\0".to_vec();
        b.extend_from_slice(&1000u32.to_le_bytes());
        b.extend_from_slice(&1000u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 8, 0]);
        b.extend_from_slice(b"data\xff\xff\xff\xff");
        b.extend(std::iter::repeat_n(128u8, 1000 * seconds));
        b
    }

    /// Input past the duration limit is a typed error naming the file, raised while streaming
    /// (not after reading everything).
    #[test]
    fn input_longer_than_the_limit_is_refused() {
        let path =
            std::env::temp_dir().join(format!("amanuensis-limit-{}.wav", std::process::id()));
        std::fs::write(&path, wav(3)).unwrap();
        let input = AudioInput::File(path.clone());
        let mut ok = AudioStream::open(&input).unwrap().with_max_seconds(3);
        let mut out = Vec::new();
        while ok.read(&mut out).unwrap() {}
        assert_eq!(out.len(), 3 * 16000);
        let mut long = AudioStream::open(&input).unwrap().with_max_seconds(2);
        let err = loop {
            match long.read(&mut out) {
                Ok(true) => {}
                Ok(false) => panic!("the limit was not enforced"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, AudioError::TooLong { path: Some(p), .. } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("limit"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
