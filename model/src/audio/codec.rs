//! Compressed audio (FLAC, MP3, Ogg Vorbis, M4A/AAC, and WAV variants we do not parse
//! ourselves) decoded by symphonia, packet by packet, to mono f32 at the stream's own rate.

use std::io::Read;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::error::AudioError;

/// Corrupt packets skipped (each with a warning) before a stream is given up.
const MAX_BAD_PACKETS: usize = 100;

/// A symphonia demuxer and decoder on the first audio track.
pub struct CodecReader {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: u32,
    sample_rate: u32,
    channels: u16,
    buffer: Option<SampleBuffer<f32>>,
    bad_packets: usize,
    warnings: Vec<String>,
}

/// A non-seekable source (a pipe) as symphonia's media source. A FLAC stream's PICTURE and
/// VORBIS_COMMENT metadata blocks are passed on as PADDING ([`FlacMetadataGuard`]).
pub fn unseekable<R: Read + Send + Sync + 'static>(reader: R) -> Box<dyn MediaSource> {
    Box::new(ReadOnlySource::new(FlacMetadataGuard::new(reader)))
}

/// Turns the PICTURE and VORBIS_COMMENT metadata blocks of a FLAC stream into PADDING blocks of
/// the same length as they stream past (any other stream passes unchanged). symphonia 0.5
/// allocates the lengths stated by 32-bit fields inside those blocks (a picture's media type,
/// description and data; each comment) before checking them against the block, up to 4 GiB: a
/// 36-byte file aborted the process, and a 25-byte one with a comment did under the fuzzer's
/// memory limit (both found by the `audio_stream` fuzz target; upstream: symphonia issue 508,
/// still open in 0.6.0). We use neither cover art nor tags, and padding is skipped by its block
/// length (24 bits). The same symphonia flaw remains in the Ogg Vorbis comment header and ID3v2
/// frames, which this guard does not see.
pub struct FlacMetadataGuard<R> {
    inner: R,
    state: GuardState,
    /// Bytes read from `inner` and not yet handed on (a block header, the magic).
    pending: [u8; 4],
    pending_len: usize,
    pending_at: usize,
    /// The last four bytes seen before the marker.
    marker: u32,
    /// Bytes read past the marker in the read that found it (given out before `inner`'s).
    carry: std::collections::VecDeque<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GuardState {
    /// Before the first four bytes.
    Magic,
    /// At a metadata block header.
    Header,
    /// Inside a metadata block: bytes left, and whether it is the last one.
    Body(u32, bool),
    /// Audio frames (or not FLAC): everything passes.
    Through,
}

/// FLAC metadata block types.
const FLAC_PADDING: u8 = 1;
const FLAC_VORBIS_COMMENT: u8 = 4;
const FLAC_PICTURE: u8 = 6;

impl<R: Read> FlacMetadataGuard<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: GuardState::Magic,
            pending: [0; 4],
            pending_len: 0,
            pending_at: 0,
            marker: 0,
            carry: std::collections::VecDeque::new(),
        }
    }

    /// Reads from the carried bytes first, then from `inner`.
    fn read_inner(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.carry.is_empty() {
            return self.inner.read(buf);
        }
        let n = self.carry.len().min(buf.len());
        for (o, b) in buf[..n].iter_mut().zip(self.carry.drain(..n)) {
            *o = b;
        }
        Ok(n)
    }

    /// Reads up to four bytes into `pending` (fewer only at the end of the stream).
    fn fill_pending(&mut self) -> std::io::Result<()> {
        self.pending_len = 0;
        self.pending_at = 0;
        while self.pending_len < 4 {
            let len = self.pending_len;
            let mut tmp = [0u8; 4];
            match self.read_inner(&mut tmp[..4 - len]) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending[len..len + n].copy_from_slice(&tmp[..n]);
                    self.pending_len += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for FlacMetadataGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pending_at < self.pending_len {
            let n = (self.pending_len - self.pending_at).min(buf.len());
            buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
            self.pending_at += n;
            return Ok(n);
        }
        match self.state {
            GuardState::Through => self.read_inner(buf),
            GuardState::Magic => {
                // The probe finds "fLaC" anywhere in the stream's first bytes: pass bytes on
                // until just after the marker, then watch the metadata blocks.
                let n = self.inner.read(buf)?;
                for i in 0..n {
                    self.marker = (self.marker << 8) | buf[i] as u32;
                    if self.marker == u32::from_be_bytes(*b"fLaC") {
                        self.state = GuardState::Header;
                        let rest = i + 1;
                        // Bytes after the marker in this read: hand them back through
                        // `pending` is not possible in general, so keep them for the header.
                        self.carry.extend(buf[rest..n].iter().copied());
                        return Ok(rest);
                    }
                }
                Ok(n)
            }
            GuardState::Header => {
                self.fill_pending()?;
                if self.pending_len < 4 {
                    self.state = GuardState::Through;
                } else {
                    let last = self.pending[0] & 0x80 != 0;
                    if matches!(self.pending[0] & 0x7f, FLAC_PICTURE | FLAC_VORBIS_COMMENT) {
                        self.pending[0] = (self.pending[0] & 0x80) | FLAC_PADDING;
                    }
                    let len =
                        u32::from_be_bytes([0, self.pending[1], self.pending[2], self.pending[3]]);
                    self.state = GuardState::Body(len, last);
                }
                self.read(buf)
            }
            GuardState::Body(0, last) => {
                self.state = if last {
                    GuardState::Through
                } else {
                    GuardState::Header
                };
                self.read(buf)
            }
            GuardState::Body(left, last) => {
                let want = buf.len().min(left as usize);
                let n = self.read_inner(&mut buf[..want])?;
                self.state = if n == 0 {
                    GuardState::Through
                } else {
                    GuardState::Body(left - n as u32, last)
                };
                Ok(n)
            }
        }
    }
}

impl CodecReader {
    /// Probes the container, opens its first audio track. `extension` helps the probe.
    pub fn new(source: Box<dyn MediaSource>, extension: Option<&str>) -> Result<Self, AudioError> {
        let stream = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                stream,
                // Gapless: trim the encoder delay and padding (MP3 LAME/Xing tags, M4A edit lists)
                // as FFmpeg does, so times match faster-whisper's.
                &FormatOptions {
                    enable_gapless: true,
                    ..Default::default()
                },
                &MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymphoniaError::Unsupported(_) => AudioError::UnknownFormat { path: None },
                other => decode_error(other),
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or(AudioError::Decode {
                path: None,
                reason: "the container has no audio track".into(),
            })?;
        let params = track.codec_params.clone();
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| AudioError::Decode {
                path: None,
                reason: format!("no decoder for this codec ({e})"),
            })?;
        let sample_rate = params.sample_rate.ok_or(AudioError::Decode {
            path: None,
            reason: "the stream does not state its sample rate".into(),
        })?;
        let channels = params.channels.map_or(0, |c| c.count()) as u16;
        Ok(CodecReader {
            track: track.id,
            format,
            decoder,
            sample_rate,
            channels,
            buffer: None,
            bad_packets: 0,
            warnings: Vec::new(),
        })
    }

    /// The stream's sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The stream's channel count (0 if the container does not say).
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Packets that could not be decoded and were skipped.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Appends the next packet's samples mixed to mono and clipped to [-1, 1]; `Ok(false)` at
    /// the end of the stream.
    pub fn read_block(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(false)
                }
                Err(SymphoniaError::ResetRequired) => return Ok(false),
                Err(e) => return Err(decode_error(e)),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                Err(SymphoniaError::DecodeError(reason)) => {
                    self.bad_packets += 1;
                    if self.bad_packets > MAX_BAD_PACKETS {
                        return Err(AudioError::Decode {
                            path: None,
                            reason: format!("more than {MAX_BAD_PACKETS} corrupt packets"),
                        });
                    }
                    self.warnings.push(format!(
                        "skipped a corrupt packet at {:.2} s: {reason}",
                        packet.ts() as f64 / self.sample_rate as f64
                    ));
                    continue;
                }
                Err(e) => return Err(decode_error(e)),
            };
            let spec = *decoded.spec();
            if spec.rate != self.sample_rate {
                return Err(AudioError::Decode {
                    path: None,
                    reason: format!(
                        "the sample rate changes from {} to {} Hz mid-stream",
                        self.sample_rate, spec.rate
                    ),
                });
            }
            if decoded.frames() == 0 {
                continue;
            }
            let channels = spec.channels.count().max(1);
            let needed = decoded.capacity() * channels;
            if self.buffer.as_ref().is_none_or(|b| b.capacity() < needed) {
                self.buffer = Some(SampleBuffer::new(decoded.capacity() as u64, spec));
            }
            let buffer = self.buffer.as_mut().expect("allocated above");
            buffer.copy_interleaved_ref(decoded);
            let samples = buffer.samples();
            out.reserve(samples.len() / channels);
            for frame in samples.chunks_exact(channels) {
                let value = if channels == 1 {
                    frame[0]
                } else {
                    (frame.iter().map(|&v| v as f64).sum::<f64>() / channels as f64) as f32
                };
                // NaN (a broken float stream) becomes silence; the rest is clipped as FFmpeg does.
                out.push(if value.is_nan() {
                    0.0
                } else {
                    value.clamp(-1.0, 1.0)
                });
            }
            return Ok(true);
        }
    }
}

fn decode_error(e: SymphoniaError) -> AudioError {
    match e {
        SymphoniaError::IoError(source) => AudioError::Io {
            path: "<input>".into(),
            source,
        },
        other => AudioError::Decode {
            path: None,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input the `audio_stream` fuzz target found: a FLAC whose PICTURE block states a
    /// 4 GiB field. It must be an error, not an abort.
    #[test]
    fn a_flac_picture_block_with_a_huge_length_is_an_error() {
        let bytes: Vec<u8> = vec![
            102, 76, 97, 67, 6, 174, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255,
            255, 255, 255, 255, 255, 255, 255, 93, 100, 0, 102, 255, 243, 1,
        ];
        assert!(CodecReader::new(unseekable(std::io::Cursor::new(bytes)), None).is_err());
        // The same with the marker after junk (the probe scans for it).
        let bytes: Vec<u8> = vec![
            255, 11, 102, 241, 211, 211, 211, 102, 76, 97, 67, 6, 10, 2, 82, 255, 255, 255, 255,
            255, 255, 254, 245, 10,
        ];
        assert!(CodecReader::new(unseekable(std::io::Cursor::new(bytes)), None).is_err());
    }

    /// The `audio_stream` fuzz target's third find: junk, then a FLAC whose VORBIS_COMMENT block
    /// states a comment of 0xffffff00 bytes (symphonia allocated it before reading).
    #[test]
    fn a_flac_comment_with_a_huge_length_is_an_error() {
        let bytes: Vec<u8> = vec![
            255, 102, 76, 97, 67, 4, 246, 255, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 255, 255, 255,
            255, 255, 255, 250,
        ];
        for ext in [None, Some("flac")] {
            let r = CodecReader::new(unseekable(std::io::Cursor::new(bytes.clone())), ext);
            assert!(r.is_err());
        }
    }

    #[test]
    fn the_guard_turns_pictures_and_comments_into_padding_and_leaves_the_rest() {
        let mut flac = b"fLaC".to_vec();
        flac.extend_from_slice(&[0x06, 0, 0, 3, 9, 9, 9]); // PICTURE, 3 bytes
        flac.extend_from_slice(&[0x02, 0, 0, 2, 7, 7]); // APPLICATION, 2 bytes
        flac.extend_from_slice(&[0x84, 0, 0, 1, 7]); // last: VORBIS_COMMENT, 1 byte
        flac.extend_from_slice(&[0xff, 0xf8, 1, 2]); // a frame
        let mut out = Vec::new();
        let mut g = FlacMetadataGuard::new(std::io::Cursor::new(flac.clone()));
        let mut buf = [0u8; 3];
        loop {
            let n = g.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let mut want = flac.clone();
        want[4] = 0x01;
        want[17] = 0x81; // the last flag kept
        assert_eq!(out, want);
        let mut other = Vec::new();
        FlacMetadataGuard::new(&b"ID3\x06\x00"[..])
            .read_to_end(&mut other)
            .unwrap();
        assert_eq!(other, b"ID3\x06\x00");
    }
}
