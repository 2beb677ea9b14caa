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

/// A non-seekable source (a pipe) as symphonia's media source.
pub fn unseekable<R: Read + Send + Sync + 'static>(reader: R) -> Box<dyn MediaSource> {
    Box::new(ReadOnlySource::new(reader))
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
