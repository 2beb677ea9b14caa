//! Whisper itself: what the network computes, independent of the backend that computes it.
//!
//! Config and tensor names, weight loading (mmap), the audio input and log-mel frontend, the
//! encoder, the decoder with its KV cache, the tokenizer, decoding rules and long-form
//! segmentation. Arithmetic goes through `amanuensis_runtime` kernels; nothing here names a device.
#![forbid(unsafe_code)]

pub mod audio;
pub mod checksum;
pub mod clips;
pub mod config;
pub mod decode;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod hallucination;
pub mod layers;
pub mod load_error;
pub mod mel;
pub mod mel_filters;
pub mod mel_stream;
pub mod mel_windows;
pub mod names;
pub mod segment;
pub mod session;
pub mod tokenizer;
pub mod vad;
pub mod weights;
pub mod whisper;
pub mod words;
