//! The `transcribe` command: arguments, the batch over inputs, output files, standard output and
//! the progress bar.

pub mod args;
pub mod batch;
pub mod decoding;
pub mod outputs;
pub mod progress;
pub mod stdio;
