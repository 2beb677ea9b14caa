//! A loaded Whisper model: configuration, tokenizer, mel frontend and the network's weights
//! prepared for its backends (the encoder's and the decoder's, often the same one). Immutable
//! once loaded and `Send + Sync`: share it behind an `Arc`; transcription state lives in a
//! [`crate::session::Session`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use amanuensis_runtime::backend::Backend;

use crate::config::ModelConfig;
use crate::decoder::TextDecoder;
use crate::encoder::AudioEncoder;
use crate::error::WhisperError;
use crate::mel::MelFrontend;
use crate::names;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightsFile;

/// Whisper weights, tokenizer and frontend, ready to run: the encoder on backend `E`, the
/// decoder on backend `D` (by default the same).
pub struct Whisper<E: Backend, D: Backend = E> {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub mel: MelFrontend,
    pub encoder: AudioEncoder<E>,
    pub decoder: TextDecoder<D>,
    pub encoder_backend: Arc<E>,
    pub decoder_backend: Arc<D>,
}

/// The log-mel frontend of a model file (its mel filter bank), as [`Whisper::from_file`] builds
/// it: what reading audio up to its first window needs of the model, so that it can start
/// before the weights are loaded.
pub fn mel_frontend(file: &WeightsFile) -> Result<MelFrontend, WhisperError> {
    let n_mels = file.config().dims.n_mels;
    let n_freq = crate::mel::N_FFT / 2 + 1;
    let filters = file.tensor_f32(names::MEL_FILTERS, &[n_mels, n_freq])?;
    MelFrontend::new(filters, n_mels).map_err(|e| WhisperError::BadModel {
        path: file.path().display().to_string(),
        reason: e.to_string(),
    })
}

impl<B: Backend> Whisper<B, B> {
    /// Loads a model file (`docs/model-format.md`) onto `backend` (encoder and decoder).
    ///
    /// The file is memory-mapped; each f16 tensor is widened to f32 once here, into the
    /// backend's own buffers; INT8 tiles and the tokenizer's decoding table (format_version 3)
    /// are read in place from the map, which the model keeps.
    pub fn load(path: &Path, backend: B) -> Result<Self, WhisperError> {
        Self::from_file(&WeightsFile::open(path)?, backend)
    }

    /// [`Whisper::load`] from a file already opened.
    pub fn from_file(file: &WeightsFile, backend: B) -> Result<Self, WhisperError> {
        let backend = Arc::new(backend);
        Whisper::from_file_split(file, Arc::clone(&backend), backend)
    }
}

impl<E: Backend, D: Backend> Whisper<E, D> {
    /// Loads a model file with the encoder on `encoder_backend` and the decoder on
    /// `decoder_backend` (e.g. an NPU encoder and a CPU decoder).
    pub fn load_split(
        path: &Path,
        encoder_backend: E,
        decoder_backend: D,
    ) -> Result<Self, WhisperError> {
        Self::from_file_split(
            &WeightsFile::open(path)?,
            Arc::new(encoder_backend),
            Arc::new(decoder_backend),
        )
    }

    /// [`Whisper::load_split`] from a file already opened.
    pub fn from_file_split(
        file: &WeightsFile,
        encoder_backend: Arc<E>,
        decoder_backend: Arc<D>,
    ) -> Result<Self, WhisperError> {
        let config = file.config().clone();
        let dims = &config.dims;
        let tokenizer = Tokenizer::from_file(file, config.special)?;
        let mel = mel_frontend(file)?;
        let encoder = AudioEncoder::load(file, &*encoder_backend, dims)?;
        let decoder = TextDecoder::load(file, &*decoder_backend, dims, &config.alignment_heads)?;
        Ok(Self {
            config,
            tokenizer,
            mel,
            encoder,
            decoder,
            encoder_backend,
            decoder_backend,
        })
    }

    /// Weight matrices [`Whisper::prepare_weights`] walks: the encoder's, then the decoder's.
    pub fn weight_matrices(&self) -> usize {
        self.encoder.program().matrices().len() + self.decoder.program().matrices().len()
    }

    /// Does now the one-time work on the weights that the first transcription would otherwise
    /// do inside its first window ([`Backend::prepare_matrix`]; on the CPU INT8 backend the
    /// per-channel code sums, a read of every tile that also faults the mapped file in),
    /// claiming matrices one at a time from `next` (an index into the encoder's matrices, then
    /// the decoder's: the order a transcription first uses them) until none is left. Several
    /// threads may call it with the same counter (starting at 0) to share the work, while
    /// sessions are created or transcribe; what a transcription computes never depends on it.
    pub fn prepare_weights(&self, next: &AtomicUsize) {
        let encoder = self.encoder.program().matrices();
        let decoder = self.decoder.program().matrices();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = encoder.get(i) {
                self.encoder_backend.prepare_matrix(w);
            } else if let Some(w) = decoder.get(i - encoder.len()) {
                self.decoder_backend.prepare_matrix(w);
            } else {
                return;
            }
        }
    }

    /// The backends' name: one name (e.g. `cpu-f32`) when encoder and decoder run on the same
    /// kind of backend, else `encoder+decoder` (e.g. `npu+cpu-int8`).
    pub fn backend_name(&self) -> String {
        let (e, d) = (self.encoder_backend.name(), self.decoder_backend.name());
        if e == d {
            e.to_string()
        } else {
            format!("{e}+{d}")
        }
    }

    /// Device submissions of one encoder window, and of one decoded token (decoder step +
    /// logits), on this model's backends.
    pub fn submissions(&self) -> Submissions {
        let (cross_kv, token) = self.decoder.submissions(&self.decoder_backend);
        Submissions {
            encoder_window: self.encoder.submissions_per_window(&self.encoder_backend),
            cross_kv_per_window: cross_kv,
            decoder_token: token,
        }
    }

    /// The SOT sequence: `[SOT]` for English-only models, `[SOT, <|lang|>, <|transcribe|>]`
    /// for multilingual ones.
    pub fn sot_sequence(&self, language: &str) -> Result<Vec<u32>, WhisperError> {
        self.sot_sequence_for(language, false)
    }

    /// The SOT sequence for a task: `[SOT, <|lang|>, <|transcribe|>]` or, with `translate`,
    /// `[SOT, <|lang|>, <|translate|>]`. English-only models have only `[SOT]` and refuse
    /// translation.
    pub fn sot_sequence_for(
        &self,
        language: &str,
        translate: bool,
    ) -> Result<Vec<u32>, WhisperError> {
        let s = &self.config.special;
        if translate && !self.config.multilingual {
            return Err(WhisperError::EnglishOnly("translation".into()));
        }
        if !self.config.multilingual {
            return Ok(vec![s.sot]);
        }
        let lang = self
            .config
            .languages
            .iter()
            .find(|(code, _)| code == language)
            .map(|(_, id)| *id)
            .ok_or_else(|| WhisperError::UnknownLanguage(language.to_string()))?;
        Ok(vec![
            s.sot,
            lang,
            if translate { s.translate } else { s.transcribe },
        ])
    }
}

/// How many device submissions a stage costs (CPU backends: one per layer op; a device backend
/// that compiles a stage: one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submissions {
    /// One encoder window.
    pub encoder_window: usize,
    /// Preparing one window's cross-attention keys/values (decoder side).
    pub cross_kv_per_window: usize,
    /// One decoded token: the decoder step (all blocks) plus its logits.
    pub decoder_token: usize,
}
