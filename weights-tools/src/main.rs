//! `weights-tools`: convert Whisper checkpoints to Amanuensis model files, and inspect files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use weights_tools::{convert_with, inspect, Quantization, SourceKind};

#[derive(Parser)]
#[command(name = "weights-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceArg {
    /// CTranslate2 directory: model.bin, config.json, tokenizer.json, vocabulary.txt.
    Ct2,
    /// Hugging Face directory: model.safetensors, config.json, tokenizer.json,
    /// generation_config.json.
    Hf,
    /// Silero VAD v6 ONNX file (faster-whisper's `assets/silero_vad_v6.onnx`): writes the VAD
    /// model file `--vad` reads.
    SileroOnnx,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantArg {
    /// Symmetric INT8 per output channel, 64 × 64 tiles, f32 scales.
    Int8,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a checkpoint directory (or the Silero VAD ONNX file) to an Amanuensis
    /// .safetensors model file.
    Convert {
        /// Kind of checkpoint.
        #[arg(long, value_enum)]
        from: SourceArg,
        /// The checkpoint directory.
        input: PathBuf,
        /// The model file to write (atomically).
        #[arg(short, long)]
        output: PathBuf,
        /// Store the weight matrices as INT8 tiles (`docs/int8-layout.md`).
        #[arg(long, value_enum)]
        quant: Option<QuantArg>,
    },
    /// Describe a model file (.safetensors) or a CTranslate2 model.bin.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Also read all tensor data and check it against the file's CRC-32 checksums (exit 1
        /// on a mismatch, naming the tensor, or when the file has no checksums).
        #[arg(long)]
        verify: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert {
            from,
            input,
            output,
            quant,
        } => {
            let kind = match from {
                SourceArg::Ct2 => SourceKind::Ct2,
                SourceArg::Hf => SourceKind::HuggingFace,
                SourceArg::SileroOnnx if quant.is_some() => {
                    eprintln!("weights-tools: --quant does not apply to the VAD model");
                    return ExitCode::FAILURE;
                }
                SourceArg::SileroOnnx => {
                    return report(
                        weights_tools::silero::convert_silero_onnx(&input, &output).map(|bytes| {
                            eprintln!("wrote {} (Silero VAD, {bytes} bytes)", output.display())
                        }),
                    )
                }
            };
            let quantization = match quant {
                Some(QuantArg::Int8) => Quantization::Int8,
                None => Quantization::None,
            };
            convert_with(&input, kind, quantization, &output).map(|r| {
                eprintln!(
                    "wrote {} ({} tensors, {} bytes, n_vocab {}, {} + {} layers, d {})",
                    r.output.display(),
                    r.n_tensors,
                    r.bytes,
                    r.dims.n_vocab,
                    r.dims.n_audio_layer,
                    r.dims.n_text_layer,
                    r.dims.n_audio_state
                )
            })
        }
        Command::Inspect { file, verify } => {
            inspect::inspect_with(&file, verify).map(|text| print!("{text}"))
        }
    };
    report(result)
}

fn report(result: Result<(), weights_tools::ConvertError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weights-tools: {e}");
            ExitCode::FAILURE
        }
    }
}
