//! Converters from published Whisper checkpoints to the Amanuensis model file
//! (`docs/model-format.md`).
