//! A loaded Whisper model: configuration, tokenizer, mel frontend and the network's weights
//! prepared for one backend. Immutable once loaded; transcription state lives in a
//! [`crate::session::Session`].

use std::path::Path;

use amanuensis_runtime::backend::Backend;

use crate::config::ModelConfig;
use crate::decoder::TextDecoder;
use crate::encoder::AudioEncoder;
use crate::error::WhisperError;
use crate::mel::MelFrontend;
use crate::names;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightsFile;

/// Whisper weights, tokenizer and frontend, ready to run on backend `B`.
pub struct Whisper<B: Backend> {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub mel: MelFrontend,
    pub encoder: AudioEncoder<B>,
    pub decoder: TextDecoder<B>,
    pub backend: B,
}

impl<B: Backend> Whisper<B> {
    /// Loads a model file (`docs/model-format.md`) onto `backend`.
    ///
    /// The file is memory-mapped; each f16 tensor is widened to f32 once here (INT8 tiles are
    /// copied as they are), into the backend's own buffers, and the mapping is dropped at the end.
    pub fn load(path: &Path, backend: B) -> Result<Self, WhisperError> {
        Self::from_file(&WeightsFile::open(path)?, backend)
    }

    /// [`Whisper::load`] from a file already opened.
    pub fn from_file(file: &WeightsFile, backend: B) -> Result<Self, WhisperError> {
        let path = file.path();
        let config = file.config().clone();
        let dims = &config.dims;
        let tokenizer = Tokenizer::from_json(file.tokenizer_json(), config.special)?;
        let n_freq = crate::mel::N_FFT / 2 + 1;
        let filters = file.tensor_f32(names::MEL_FILTERS, &[dims.n_mels, n_freq])?;
        let mel = MelFrontend::new(filters, dims.n_mels).map_err(|e| WhisperError::BadModel {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let encoder = AudioEncoder::load(file, &backend, dims)?;
        let decoder = TextDecoder::load(file, &backend, dims)?;
        Ok(Self {
            config,
            tokenizer,
            mel,
            encoder,
            decoder,
            backend,
        })
    }

    /// The backend's name (e.g. `cpu-f32`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
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
