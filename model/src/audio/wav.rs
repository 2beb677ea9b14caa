//! RIFF/WAVE decoding to mono f32 at the file's own sample rate, as a stream.
//!
//! Supported: PCM 8 (unsigned), 16, 24 and 32-bit integer, IEEE float 32/64, G.711 µ-law and
//! A-law (8-bit), and WAVE_FORMAT_EXTENSIBLE wrapping PCM or float; any channel count (mixed down
//! to mono by averaging). Chunks other than `fmt ` and `data` are skipped; odd-sized chunks are
//! followed by a pad byte. The header is read from any [`Read`] (a pipe works: nothing seeks),
//! then the `data` chunk is decoded block by block ([`WavReader::read_block`]), so memory does not
//! grow with the file.
//!
//! Data sizes that lie are decoded as far as the bytes go, as FFmpeg does:
//! - 0xFFFFFFFF (streaming encoders that cannot seek back) and 0 (pipes, recordings cut short)
//!   mean "to the end of the input"; a declared size larger than what follows decodes what is
//!   there. Both lies add a warning ([`WavReader::warnings`]); 0xFFFFFFFF does not.
//! - A trailing partial sample frame is dropped (with a warning unless the size was 0xFFFFFFFF).
//!
//! Integer samples are scaled by 1 / 2^(bits-1) (8-bit: (u8 − 128) / 128; G.711: the 16-bit
//! value of the standard expansion / 32768): for 16-bit mono this is exactly faster-whisper's
//! `int16 / 32768`. The mono mix is clipped to [-1, 1] (float files may hold anything; FFmpeg
//! clips when it converts to the s16 that faster-whisper feeds on). NaN samples are an error.

use std::io::{ErrorKind, Read};
use std::path::Path;

use super::error::{AudioError, FourCc, WavError};

/// A decoded WAV file: mono samples at the file's own rate.
#[derive(Debug, Clone, PartialEq)]
pub struct WavAudio {
    /// Sample rate of the file in Hz (nonzero).
    pub sample_rate: u32,
    /// Channel count of the file (nonzero); `samples` is already mixed down to mono.
    pub channels: u16,
    /// Mono samples in [-1, 1], one per sample frame.
    pub samples: Vec<f32>,
}

/// Reads and decodes a whole WAV file (no resampling). Errors name the file.
pub fn read_wav(path: &Path) -> Result<WavAudio, AudioError> {
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_wav(&bytes).map_err(|e| e.with_path(path))
}

/// Decodes RIFF/WAVE bytes (no resampling). Never panics, whatever the bytes.
pub fn parse_wav(bytes: &[u8]) -> Result<WavAudio, AudioError> {
    let mut reader = WavReader::new(bytes)?;
    let mut samples = Vec::new();
    while reader.read_block(&mut samples)? {}
    if samples.is_empty() {
        return Err(WavError::EmptyData {
            offset: reader.data_header,
        }
        .into());
    }
    Ok(WavAudio {
        sample_rate: reader.format.sample_rate,
        channels: reader.format.channels,
        samples,
    })
}

/// How one sample is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
    MuLaw,
    ALaw,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::U8 | Encoding::MuLaw | Encoding::ALaw => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }
}

/// The parts of the `fmt ` chunk we use.
#[derive(Debug, Clone, Copy)]
struct Format {
    encoding: Encoding,
    channels: u16,
    sample_rate: u32,
    block_align: u16,
}

const PCM: u16 = 1;
const IEEE_FLOAT: u16 = 3;
const ALAW: u16 = 6;
const MULAW: u16 = 7;
const EXTENSIBLE: u16 = 0xFFFE;
/// Bytes 2..16 of the KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT GUIDs (bytes 0..2 carry the tag).
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];
/// Largest `fmt ` chunk read (real ones are 16..40 bytes).
const MAX_FMT: u32 = 1 << 16;
/// Largest `data` chunk held in memory when it comes before `fmt ` (a rare layout; a pipe
/// cannot seek back to it).
const MAX_EARLY_DATA: u32 = 64 << 20;
/// Bytes decoded per block.
const BLOCK_BYTES: usize = 1 << 16;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn fourcc_at(b: &[u8], at: usize) -> FourCc {
    FourCc([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Skips up to `n` bytes; returns how many were there.
fn skip<R: Read>(reader: &mut R, n: u64) -> std::io::Result<u64> {
    std::io::copy(&mut reader.take(n), &mut std::io::sink())
}

/// How far the `data` chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataExtent {
    /// The declared size (bytes left to read).
    Declared(u64),
    /// 0xFFFFFFFF: to the end of the input, as streaming encoders mean it.
    Placeholder,
    /// 0: to the end of the input, with a warning.
    Zero,
}

/// A WAV stream: the header parsed, the `data` chunk decoded on demand.
pub struct WavReader<R: Read> {
    reader: R,
    format: Format,
    /// Offset of the `data` chunk header, for messages.
    data_header: u64,
    /// Offset of the first data byte.
    data_start: u64,
    declared: u32,
    extent: DataExtent,
    /// Data bytes consumed so far.
    consumed: u64,
    /// A `data` chunk that came before `fmt `, decoded from memory first.
    early: Option<std::io::Cursor<Vec<u8>>>,
    bytes: Vec<u8>,
    /// Bytes of an incomplete frame carried to the next block.
    carry: usize,
    done: bool,
    warnings: Vec<String>,
}

impl<R: Read> WavReader<R> {
    /// Reads the header up to the start of the `data` chunk's bytes.
    pub fn new(mut reader: R) -> Result<Self, AudioError> {
        let io = |source| AudioError::Io {
            path: "<input>".into(),
            source,
        };
        let mut head = [0u8; 12];
        let got = read_full(&mut reader, &mut head).map_err(io)?;
        if got < 12 {
            return Err(WavError::TooShort { len: got }.into());
        }
        if &head[0..4] != b"RIFF" {
            return Err(WavError::NotRiff {
                found: fourcc_at(&head, 0),
            }
            .into());
        }
        if &head[8..12] != b"WAVE" {
            return Err(WavError::NotWave {
                found: fourcc_at(&head, 8),
            }
            .into());
        }
        let mut pos = 12u64;
        let mut format = None;
        let mut early: Option<(u64, u64, Vec<u8>)> = None;
        loop {
            let mut header = [0u8; 8];
            let got = read_full(&mut reader, &mut header).map_err(io)?;
            if got == 0 {
                return Err(if format.is_none() {
                    WavError::NoFmtChunk
                } else {
                    WavError::NoDataChunk
                }
                .into());
            }
            if got < 8 {
                return Err(WavError::TruncatedChunkHeader {
                    offset: pos,
                    available: got as u64,
                }
                .into());
            }
            let id = fourcc_at(&header, 0);
            let size = u32_at(&header, 4);
            let body = pos + 8;
            let truncated = |available: u64| WavError::TruncatedChunk {
                id,
                offset: pos,
                declared: size as u64,
                available,
            };
            match &id.0 {
                b"fmt " if format.is_none() => {
                    if size > MAX_FMT {
                        return Err(truncated(0).into());
                    }
                    let mut fmt = vec![0u8; size as usize];
                    let got = read_full(&mut reader, &mut fmt).map_err(io)?;
                    if got < fmt.len() {
                        return Err(truncated(got as u64).into());
                    }
                    format = Some(parse_fmt(&fmt, pos)?);
                    if size & 1 == 1 {
                        skip(&mut reader, 1).map_err(io)?;
                    }
                    pos = body + size as u64 + (size as u64 & 1);
                    if let Some((header, start, bytes)) = early.take() {
                        return Ok(Self::start(
                            reader,
                            format.expect("just parsed"),
                            header,
                            start,
                            size_of_early(&bytes),
                            Some(bytes),
                        ));
                    }
                }
                b"data" => {
                    if let Some(format) = format {
                        return Ok(Self::start(reader, format, pos, body, size, None));
                    }
                    if early.is_some() || size == 0 || size == u32::MAX || size > MAX_EARLY_DATA {
                        return Err(WavError::NoFmtChunk.into());
                    }
                    let mut bytes = vec![0u8; size as usize];
                    let got = read_full(&mut reader, &mut bytes).map_err(io)?;
                    bytes.truncate(got);
                    if size & 1 == 1 {
                        skip(&mut reader, 1).map_err(io)?;
                    }
                    early = Some((pos, body, bytes));
                    pos = body + size as u64 + (size as u64 & 1);
                }
                _ => {
                    let want = size as u64 + (size as u64 & 1);
                    let got = skip(&mut reader, want).map_err(io)?;
                    // A missing final pad byte is tolerated.
                    if got < size as u64 {
                        return Err(truncated(got).into());
                    }
                    pos = body + got;
                }
            }
        }
    }

    fn start(
        reader: R,
        format: Format,
        data_header: u64,
        data_start: u64,
        declared: u32,
        early: Option<Vec<u8>>,
    ) -> Self {
        let extent = match declared {
            u32::MAX => DataExtent::Placeholder,
            0 => DataExtent::Zero,
            n => DataExtent::Declared(n as u64),
        };
        WavReader {
            reader,
            format,
            data_header,
            data_start,
            declared,
            extent: if early.is_some() {
                DataExtent::Declared(declared as u64)
            } else {
                extent
            },
            consumed: 0,
            early: early.map(std::io::Cursor::new),
            bytes: vec![0u8; BLOCK_BYTES.next_multiple_of(format.block_align as usize)],
            carry: 0,
            done: false,
            warnings: Vec::new(),
        }
    }

    /// The file's sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.format.sample_rate
    }

    /// The file's channel count.
    pub fn channels(&self) -> u16 {
        self.format.channels
    }

    /// What the header got wrong (filled in as the data is read; complete once
    /// [`WavReader::read_block`] returned `false`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Appends the next block of mono samples to `out`; `Ok(false)` once the data is exhausted
    /// (the samples appended by that last call count).
    pub fn read_block(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        if self.done {
            return Ok(false);
        }
        let frame = self.format.block_align as usize;
        let mut want = self.bytes.len() - self.carry;
        if let DataExtent::Declared(n) = self.extent {
            want = want.min((n - self.consumed) as usize);
        }
        let target = self.carry..self.carry + want;
        let got = match &mut self.early {
            Some(cursor) => read_full(cursor, &mut self.bytes[target]),
            None => read_full(&mut self.reader, &mut self.bytes[target]),
        }
        .map_err(|source| AudioError::Io {
            path: "<input>".into(),
            source,
        })?;
        let block_offset = self.data_start + self.consumed - self.carry as u64;
        self.consumed += got as u64;
        let available = self.carry + got;
        let whole = available - available % frame;
        self.decode(&self.bytes[..whole], block_offset, out)?;
        self.bytes.copy_within(whole..available, 0);
        self.carry = available - whole;
        let ended = got < want || want == 0;
        let declared_done = matches!(self.extent, DataExtent::Declared(n) if self.consumed == n);
        if ended || declared_done {
            self.finish(ended && !declared_done);
            return Ok(false);
        }
        Ok(true)
    }

    /// Records what the header got wrong once the data ends.
    fn finish(&mut self, cut_short: bool) {
        self.done = true;
        let header = self.data_header;
        match self.extent {
            DataExtent::Declared(n) if cut_short => self.warnings.push(format!(
                "\"data\" chunk at offset {header} declares {n} bytes but only {} follow \
                 (file cut short?): decoded what is present",
                self.consumed
            )),
            DataExtent::Zero if self.consumed > 0 => self.warnings.push(format!(
                "\"data\" chunk at offset {header} declares 0 bytes: decoded the {} bytes \
                 to the end of the input",
                self.consumed
            )),
            _ => {}
        }
        if self.carry > 0 && self.extent != DataExtent::Placeholder {
            self.warnings.push(format!(
                "dropped a partial sample frame of {} bytes at the end of the \"data\" chunk \
                 ({}-byte frames)",
                self.carry, self.format.block_align
            ));
        }
        let _ = self.declared;
    }

    fn decode(&self, body: &[u8], offset: u64, out: &mut Vec<f32>) -> Result<(), WavError> {
        let format = &self.format;
        let frame = format.block_align as usize;
        let width = format.encoding.bytes();
        let channels = format.channels as usize;
        out.reserve(body.len() / frame);
        for (index, frame_bytes) in body.chunks_exact(frame).enumerate() {
            let sample =
                |c: usize| decode_sample(format.encoding, &frame_bytes[c * width..][..width]);
            let value = if channels == 1 {
                sample(0)
            } else {
                // Average in f64 so the channel count does not limit precision.
                let sum: f64 = (0..channels).map(|c| sample(c) as f64).sum();
                (sum / channels as f64) as f32
            };
            if value.is_nan() {
                let first_bad = (0..channels).find(|&c| sample(c).is_nan()).unwrap_or(0);
                return Err(WavError::NonFiniteSample {
                    offset: offset + (index * frame + first_bad * width) as u64,
                });
            }
            out.push(value.clamp(-1.0, 1.0));
        }
        Ok(())
    }
}

fn size_of_early(bytes: &[u8]) -> u32 {
    bytes.len() as u32
}

/// Parses a `fmt ` chunk body; `header` is the chunk's offset, for messages.
fn parse_fmt(body: &[u8], header: u64) -> Result<Format, WavError> {
    let too_short = |needed: u32| WavError::FmtTooShort {
        offset: header,
        size: body.len() as u32,
        needed,
    };
    if body.len() < 16 {
        return Err(too_short(16));
    }
    let tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let sample_rate = u32_at(body, 4);
    let block_align = u16_at(body, 12);
    let bits = u16_at(body, 14);
    let code = match tag {
        PCM | IEEE_FLOAT | ALAW | MULAW => tag,
        EXTENSIBLE => {
            if body.len() < 40 {
                return Err(too_short(40));
            }
            if body[26..40] != GUID_TAIL {
                return Err(WavError::UnsupportedSubFormat {
                    offset: header + 8 + 24,
                });
            }
            let code = u16_at(body, 24);
            if !matches!(code, PCM | IEEE_FLOAT | ALAW | MULAW) {
                return Err(WavError::UnsupportedFormatTag {
                    tag: code,
                    offset: header + 8 + 24,
                });
            }
            code
        }
        _ => {
            return Err(WavError::UnsupportedFormatTag {
                tag,
                offset: header + 8,
            })
        }
    };
    let encoding = match (code, bits) {
        (PCM, 8) => Encoding::U8,
        (PCM, 16) => Encoding::I16,
        (PCM, 24) => Encoding::I24,
        (PCM, 32) => Encoding::I32,
        (IEEE_FLOAT, 32) => Encoding::F32,
        (IEEE_FLOAT, 64) => Encoding::F64,
        (MULAW, 8) => Encoding::MuLaw,
        (ALAW, 8) => Encoding::ALaw,
        _ => {
            return Err(WavError::UnsupportedBitDepth {
                encoding: match code {
                    PCM => "PCM",
                    IEEE_FLOAT => "float",
                    ALAW => "A-law",
                    _ => "µ-law",
                },
                bits,
            })
        }
    };
    if channels == 0 {
        return Err(WavError::ZeroChannels { offset: header });
    }
    if sample_rate == 0 {
        return Err(WavError::ZeroSampleRate { offset: header });
    }
    if block_align as usize != channels as usize * encoding.bytes() {
        return Err(WavError::BlockAlignMismatch {
            block_align,
            channels,
            bits,
        });
    }
    Ok(Format {
        encoding,
        channels,
        sample_rate,
        block_align,
    })
}

/// G.711 µ-law byte to its 16-bit linear value (ITU-T G.711 expansion, as FFmpeg and sox).
fn mulaw_to_i16(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 7;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law byte to its 16-bit linear value (ITU-T G.711 expansion, as FFmpeg and sox).
fn alaw_to_i16(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 7;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// One sample as f32; `b` holds exactly `encoding.bytes()` bytes.
fn decode_sample(encoding: Encoding, b: &[u8]) -> f32 {
    match encoding {
        Encoding::U8 => (b[0] as f32 - 128.0) / 128.0,
        // Exactly faster-whisper's int16 / 32768 (both operands exact in f32).
        Encoding::I16 => i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0,
        Encoding::I24 => {
            let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
            v as f32 / 8_388_608.0
        }
        Encoding::I32 => {
            (i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0) as f32
        }
        Encoding::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        Encoding::F64 => {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }
        Encoding::MuLaw => mulaw_to_i16(b[0]) as f32 / 32768.0,
        Encoding::ALaw => alaw_to_i16(b[0]) as f32 / 32768.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a WAV file: `fmt` is the fmt chunk body, `extra` chunks go between fmt and data.
    fn wav(fmt: &[u8], extra: &[(&[u8; 4], &[u8])], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(b"WAVE");
        let mut chunk = |id: &[u8; 4], body: &[u8]| {
            out.extend_from_slice(id);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            if body.len() % 2 == 1 {
                out.push(0);
            }
        };
        chunk(b"fmt ", fmt);
        for (id, body) in extra {
            chunk(id, body);
        }
        chunk(b"data", data);
        let riff = (out.len() - 8) as u32;
        out[4..8].copy_from_slice(&riff.to_le_bytes());
        out
    }

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * align as u32).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn extensible_body(code: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut f = fmt_body(EXTENSIBLE, channels, rate, bits);
        f.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        f.extend_from_slice(&bits.to_le_bytes()); // valid bits
        f.extend_from_slice(&3u32.to_le_bytes()); // channel mask
        f.extend_from_slice(&code.to_le_bytes());
        f.extend_from_slice(&GUID_TAIL);
        f
    }

    fn wav_error(bytes: &[u8]) -> WavError {
        match parse_wav(bytes) {
            Err(AudioError::Wav { path: None, error }) => error,
            other => panic!("expected a WAV error, got {other:?}"),
        }
    }

    #[test]
    fn pcm16_mono_is_int16_over_32768() {
        let values: [i16; 5] = [0, 1, -1, i16::MAX, i16::MIN];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let w = parse_wav(&wav(&fmt_body(PCM, 1, 16000, 16), &[], &data)).unwrap();
        assert_eq!(w.sample_rate, 16000);
        assert_eq!(w.channels, 1);
        let expected: Vec<f32> = values.iter().map(|&v| v as f32 / 32768.0).collect();
        assert_eq!(w.samples, expected);
        assert_eq!(w.samples[4], -1.0);
    }

    #[test]
    fn all_integer_depths_scale_to_unit_range() {
        // 8-bit unsigned: 0 -> -1, 128 -> 0, 255 -> 127/128.
        let w = parse_wav(&wav(&fmt_body(PCM, 1, 8000, 8), &[], &[0, 128, 255])).unwrap();
        assert_eq!(w.samples, vec![-1.0, 0.0, 127.0 / 128.0]);
        // 24-bit: min, -1 LSB, max.
        let data = [0x00, 0x00, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        let w = parse_wav(&wav(&fmt_body(PCM, 1, 8000, 24), &[], &data)).unwrap();
        assert_eq!(
            w.samples,
            vec![-1.0, -1.0 / 8_388_608.0, 8_388_607.0 / 8_388_608.0]
        );
        // 32-bit.
        let data: Vec<u8> = [i32::MIN, 1 << 16, -(1 << 30)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&fmt_body(PCM, 1, 8000, 32), &[], &data)).unwrap();
        assert_eq!(w.samples, vec![-1.0, 1.0 / 32768.0, -0.5]);
    }

    #[test]
    fn float_formats_and_extensible() {
        let data: Vec<u8> = [0.25f32, -1.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&fmt_body(IEEE_FLOAT, 1, 22050, 32), &[], &data)).unwrap();
        // -1.5 is clipped to -1 (FFmpeg clips when converting float to s16).
        assert_eq!(
            (w.sample_rate, w.samples.clone()),
            (22050, vec![0.25, -1.0])
        );
        let data: Vec<u8> = [0.125f64, 1e-3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&fmt_body(IEEE_FLOAT, 1, 22050, 64), &[], &data)).unwrap();
        assert_eq!(w.samples, vec![0.125, 1e-3f64 as f32]);
        // Extensible float, stereo.
        let data: Vec<u8> = [0.5f32, 0.25, -1.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&extensible_body(IEEE_FLOAT, 2, 48000, 32), &[], &data)).unwrap();
        assert_eq!((w.channels, w.samples.clone()), (2, vec![0.375, 0.0]));
        // Extensible PCM 16.
        let data: Vec<u8> = [16384i16].iter().flat_map(|v| v.to_le_bytes()).collect();
        let w = parse_wav(&wav(&extensible_body(PCM, 1, 44100, 16), &[], &data)).unwrap();
        assert_eq!(w.samples, vec![0.5]);
    }

    #[test]
    fn channels_are_averaged() {
        // Three channels, two frames.
        let data: Vec<u8> = [3000i16, 6000, -3000, 100, 200, 300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&fmt_body(PCM, 3, 16000, 16), &[], &data)).unwrap();
        assert_eq!(w.channels, 3);
        assert_eq!(w.samples, vec![2000.0 / 32768.0, 200.0 / 32768.0]);
    }

    #[test]
    fn unknown_and_odd_chunks_are_skipped() {
        let data: Vec<u8> = [1000i16, -1000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = wav(
            &fmt_body(PCM, 1, 16000, 16),
            &[(b"LIST", b"odd"), (b"fact", &[1, 0, 0, 0]), (b"junk", b"x")],
            &data,
        );
        let w = parse_wav(&bytes).unwrap();
        assert_eq!(w.samples, vec![1000.0 / 32768.0, -1000.0 / 32768.0]);
        // A data chunk before fmt, a fmt chunk that is 18 bytes (cbSize = 0), trailing junk.
        let mut fmt18 = fmt_body(PCM, 1, 16000, 16);
        fmt18.extend_from_slice(&0u16.to_le_bytes());
        let mut bytes = b"RIFF\0\0\0\0WAVEdata\x04\0\0\0".to_vec();
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"fmt \x12\0\0\0");
        bytes.extend_from_slice(&fmt18);
        bytes.extend_from_slice(b"tra");
        assert_eq!(parse_wav(&bytes).unwrap().samples.len(), 2);
    }

    #[test]
    fn odd_8bit_data_chunk_with_missing_final_pad_byte() {
        let mut bytes = wav(&fmt_body(PCM, 1, 8000, 8), &[], &[128, 128, 128]);
        assert_eq!(bytes.pop(), Some(0)); // drop the pad byte
        assert_eq!(parse_wav(&bytes).unwrap().samples, vec![0.0; 3]);
    }

    #[test]
    fn streaming_placeholder_size_reads_to_the_end() {
        let data: Vec<u8> = [1i16, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = wav(&fmt_body(PCM, 1, 16000, 16), &[], &data);
        let data_size_at = bytes.len() - data.len() - 4;
        bytes[data_size_at..data_size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.push(0x55); // half a frame: dropped for open-ended data
        assert_eq!(parse_wav(&bytes).unwrap().samples.len(), 3);
    }

    fn reader(bytes: &[u8]) -> (Vec<f32>, Vec<String>) {
        let mut r = WavReader::new(bytes).unwrap();
        let mut out = Vec::new();
        while r.read_block(&mut out).unwrap() {}
        (out, r.warnings().to_vec())
    }

    /// Data sizes that lie (0, 0xFFFFFFFF, larger than the file, not whole frames) decode what
    /// is present; every lie but the streaming placeholder leaves a warning.
    #[test]
    fn lying_data_sizes_decode_what_is_present() {
        let data: Vec<u8> = [1i16, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let good = wav(&fmt_body(PCM, 1, 16000, 16), &[], &data);
        let size_at = good.len() - data.len() - 4;
        let expected: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v / 32768.0).collect();
        let (samples, warnings) = reader(&good);
        assert_eq!((samples, warnings.len()), (expected.clone(), 0));
        for (size, warns) in [(0u32, 1), (u32::MAX, 0), (1000, 1), (7, 1)] {
            let mut b = good.clone();
            b[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
            let (samples, warnings) = reader(&b);
            assert_eq!(samples, expected, "size {size}");
            assert_eq!(warnings.len(), warns, "size {size}: {warnings:?}");
        }
        // Cut inside the data: what is there.
        let (samples, warnings) = reader(&good[..good.len() - 1]);
        assert_eq!(samples, expected[..2]);
        assert_eq!(warnings.len(), 2, "{warnings:?}"); // cut short + partial frame
                                                       // Declared smaller than what follows: the declared part only.
        let mut b = good.clone();
        b[size_at..size_at + 4].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(reader(&b).0, expected[..2]);
    }

    /// G.711 expansion against the ITU-T table values (as sox and FFmpeg decode them).
    #[test]
    fn g711_expansion() {
        // µ-law: 0xFF and 0x7F are ±0, 0x00 is -32124, 0x80 is +32124.
        assert_eq!(mulaw_to_i16(0xFF), 0);
        assert_eq!(mulaw_to_i16(0x00), -32124);
        assert_eq!(mulaw_to_i16(0x80), 32124);
        // A-law: 0xD5 is +8, 0x55 is -8, 0xAA is +32256, 0x2A is -32256.
        assert_eq!(alaw_to_i16(0xD5), 8);
        assert_eq!(alaw_to_i16(0x55), -8);
        assert_eq!(alaw_to_i16(0xAA), 32256);
        assert_eq!(alaw_to_i16(0x2A), -32256);
        let data = [0xFFu8, 0x80];
        let w = parse_wav(&wav(&fmt_body(MULAW, 1, 8000, 8), &[], &data)).unwrap();
        assert_eq!(w.samples, vec![0.0, 32124.0 / 32768.0]);
        let w = parse_wav(&wav(&fmt_body(ALAW, 1, 8000, 8), &[], &[0xD5])).unwrap();
        assert_eq!(w.samples, vec![8.0 / 32768.0]);
    }

    /// Float samples outside [-1, 1], infinities included, are clipped; NaN is an error.
    #[test]
    fn float_samples_are_clipped() {
        let data: Vec<u8> = [1e20f32, -3.0, f32::INFINITY, 0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = parse_wav(&wav(&fmt_body(IEEE_FLOAT, 1, 16000, 32), &[], &data)).unwrap();
        assert_eq!(w.samples, vec![1.0, -1.0, 1.0, 0.5]);
    }

    #[test]
    fn typed_errors() {
        let fmt16 = fmt_body(PCM, 1, 16000, 16);
        let good = wav(&fmt16, &[], &[0, 0, 1, 0]);
        assert_eq!(wav_error(&good[..5]), WavError::TooShort { len: 5 });
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(wav_error(&b), WavError::NotRiff { .. }));
        let mut b = good.clone();
        b[8..12].copy_from_slice(b"AVI ");
        assert!(matches!(wav_error(&b), WavError::NotWave { .. }));
        // Cut inside the data chunk header.
        assert_eq!(
            wav_error(&good[..40]),
            WavError::TruncatedChunkHeader {
                offset: 36,
                available: 4
            }
        );
        // Huge declared chunk size.
        let mut b = good.clone();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            wav_error(&b),
            WavError::TruncatedChunk { offset: 12, .. }
        ));
        assert_eq!(wav_error(&good[..36]), WavError::NoDataChunk);
        let only_data = b"RIFF\x0c\0\0\0WAVEdata\x02\0\0\0\0\0";
        assert_eq!(wav_error(only_data), WavError::NoFmtChunk);
        assert!(matches!(
            wav_error(&wav(&fmt_body(2, 1, 16000, 16), &[], &[0, 0])),
            WavError::UnsupportedFormatTag { tag: 2, offset: 20 }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt_body(PCM, 1, 16000, 12), &[], &[0, 0])),
            WavError::UnsupportedBitDepth { bits: 12, .. }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt_body(IEEE_FLOAT, 1, 16000, 16), &[], &[0, 0])),
            WavError::UnsupportedBitDepth {
                encoding: "float",
                ..
            }
        ));
        assert!(matches!(
            wav_error(&wav(&extensible_body(2, 1, 16000, 16), &[], &[0, 0])),
            WavError::UnsupportedFormatTag { tag: 2, .. }
        ));
        let mut ext = extensible_body(PCM, 1, 16000, 16);
        ext[39] ^= 1;
        assert!(matches!(
            wav_error(&wav(&ext, &[], &[0, 0])),
            WavError::UnsupportedSubFormat { .. }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt_body(PCM, 0, 16000, 16), &[], &[0, 0])),
            WavError::ZeroChannels { .. } | WavError::BlockAlignMismatch { .. }
        ));
        let mut zero_ch = fmt_body(PCM, 1, 16000, 16);
        zero_ch[2] = 0;
        assert!(matches!(
            wav_error(&wav(&zero_ch, &[], &[0, 0])),
            WavError::ZeroChannels { offset: 12 }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt_body(PCM, 1, 0, 16), &[], &[0, 0])),
            WavError::ZeroSampleRate { .. }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt16, &[], &[])),
            WavError::EmptyData { offset: 36 }
        ));
        assert!(matches!(
            wav_error(&wav(&fmt16[..14], &[], &[0, 0])),
            WavError::FmtTooShort { size: 14, .. }
        ));
        let mut bad_align = fmt16.clone();
        bad_align[12] = 4;
        assert!(matches!(
            wav_error(&wav(&bad_align, &[], &[0, 0, 0, 0])),
            WavError::BlockAlignMismatch { block_align: 4, .. }
        ));
        let nan: Vec<u8> = [0.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            wav_error(&wav(&fmt_body(IEEE_FLOAT, 1, 16000, 32), &[], &nan)),
            WavError::NonFiniteSample { offset: 48 }
        );
    }

    #[test]
    fn error_messages_name_the_file() {
        let dir = std::env::temp_dir().join(format!("amanuensis-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.wav");
        std::fs::write(&path, b"RIFF\0\0\0\0WAVE").unwrap();
        let message = read_wav(&path).unwrap_err().to_string();
        assert!(
            message.contains("bad.wav") && message.contains("no \"fmt \" chunk"),
            "{message}"
        );
        let missing = read_wav(&dir.join("missing.wav")).unwrap_err();
        assert!(matches!(missing, AudioError::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A small deterministic generator (xorshift64*), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Thousands of truncations and byte mutations of valid files: each must give Ok or a typed
    /// error, never a panic (the test harness turns a panic into a failure).
    #[test]
    fn truncations_and_mutations_never_panic() {
        let stereo24 = extensible_body(PCM, 2, 44100, 24);
        let seeds = [
            wav(
                &fmt_body(PCM, 1, 16000, 16),
                &[(b"LIST", b"abc")],
                &[1, 2, 3, 4, 5, 6],
            ),
            wav(&stereo24, &[], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
            wav(&fmt_body(IEEE_FLOAT, 1, 8000, 64), &[], &[0; 16]),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut outcomes = [0usize; 2];
        for seed in &seeds {
            for cut in 0..=seed.len() {
                outcomes[parse_wav(&seed[..cut]).is_ok() as usize] += 1;
            }
            for _ in 0..2000 {
                let mut b = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    match rng.below(4) {
                        0 => b[at] = rng.next() as u8,
                        1 => b[at] ^= 1 << rng.below(8),
                        // Sizes and counts live in 4-byte fields: hit them with extremes.
                        2 => {
                            let v = [0u32, 1, u32::MAX, u32::MAX - 1, 0x8000_0000][rng.below(5)];
                            let at = at.min(b.len().saturating_sub(4));
                            let end = (at + 4).min(b.len());
                            b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                        }
                        _ => b.truncate(at),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                outcomes[parse_wav(&b).is_ok() as usize] += 1;
            }
        }
        // Both outcomes occur, so the mutations reach past the header checks.
        assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
    }
}
