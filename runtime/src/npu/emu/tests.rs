//! Emulated-device tests: see ../tests.rs for the full submission path.
