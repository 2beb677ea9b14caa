//! The `amanuensis` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use amanuensis::model_path::resolve_model_for;
use cli::args::PrecisionArg;

mod cli;
mod npu_cmd;

#[derive(Parser)]
#[command(
    name = "amanuensis",
    version,
    about = "Whisper speech-to-text on the CPU and AMD Ryzen AI NPUs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files or standard input (WAV, FLAC, MP3, Ogg Vorbis, M4A/AAC; any rate
    /// and channel count). Exit 0: all inputs done; 1: some failed; 2: usage error.
    Transcribe(Box<cli::args::TranscribeArgs>),
    /// Time each stage on real audio: load, mel, encoder, decoder, realtime factor, peak RSS.
    Bench(BenchArgs),
    /// List NPU devices and their properties, or say exactly why there is none
    /// (exit 0: at least one usable NPU; 1: none).
    Devices(npu_cmd::DevicesArgs),
    /// Time N small dispatches through the full NPU submission path (min/median/p99 per stage).
    /// Exit 1: no usable NPU; 2: bad arguments/files; 3: the run failed.
    ProfileDispatch(npu_cmd::ProfileDispatchArgs),
    /// NPU diagnostics: `npu selftest` walks the device life cycle step by step (for bug reports).
    Npu(npu_cmd::NpuArgs),
    /// Convert a published checkpoint to an Amanuensis model file (same as `weights-tools convert`).
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Audio files (WAV); the first is also transcribed once untimed as a warm-up.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model file or cached model name (a plain name means its INT8 file unless
    /// --precision f32).
    #[arg(short, long)]
    model: Option<String>,
    /// Threads (default and 0: all available cores; more than those is capped, with a
    /// warning).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Arithmetic: auto = INT8 for an INT8 model file, else f32.
    #[arg(long, value_enum, default_value = "auto")]
    precision: PrecisionArg,
    /// Beams: 1 = greedy, more = beam search.
    #[arg(short, long, default_value_t = 1)]
    beam_size: usize,
    /// Where the network runs: auto (as `transcribe`), cpu, npu, emu (the emulated NPU: slow,
    /// no warm-up run). On npu/emu the dispatch budget is printed: submissions and bytes per
    /// 30 s window and per token, host time per submission, and a labelled projection for
    /// Phoenix and Strix.
    #[arg(long, value_enum, default_value = "auto")]
    device: cli::args::DeviceArg,
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Checkpoint folder (CTranslate2: model.bin, config.json, tokenizer.json).
    input: PathBuf,
    /// Output .safetensors file.
    #[arg(short, long)]
    output: PathBuf,
    /// Checkpoint kind: ct2 (CTranslate2) or hf (Hugging Face).
    #[arg(long, default_value = "ct2")]
    from: String,
    /// `int8`: store the weight matrices as INT8 tiles (docs/int8-layout.md).
    #[arg(long)]
    quant: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => return npu_cmd::devices(&args),
        Command::ProfileDispatch(args) => return npu_cmd::profile_dispatch(&args),
        Command::Npu(args) => return npu_cmd::npu(&args),
        Command::Transcribe(args) => return cli::batch::run(&args),
        Command::Bench(args) => bench(&args),
        Command::Convert(args) => convert(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::stdio::note(&format!("amanuensis: {e}"));
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn default_threads(threads: Option<usize>) -> usize {
    let count = amanuensis::resolve_threads(threads);
    if let Some(warning) = count.warning() {
        cli::stdio::note(&format!("amanuensis: warning: {warning}"));
    }
    count.threads
}

fn bench(args: &BenchArgs) -> CliResult {
    let path = resolve_model_for(args.model.as_deref(), args.precision.into())?;
    let threads = default_threads(args.threads);
    let report = amanuensis::bench::run(
        &path,
        threads,
        args.precision.into(),
        args.device.into(),
        args.beam_size,
        &args.files,
    )?;
    println!(
        "amanuensis bench: {} ({threads} threads, {})",
        path.display(),
        report.backend
    );
    print!("{report}");
    Ok(())
}

fn convert(args: &ConvertArgs) -> CliResult {
    let kind = match args.from.as_str() {
        "ct2" => weights_tools::SourceKind::Ct2,
        "hf" => weights_tools::SourceKind::HuggingFace,
        other => {
            return Err(format!("unknown checkpoint kind {other:?} (expected ct2 or hf)").into())
        }
    };
    let quantization = match args.quant.as_deref() {
        None => weights_tools::Quantization::None,
        Some("int8") => weights_tools::Quantization::Int8,
        Some(other) => return Err(format!("unknown quantization {other:?} (expected int8)").into()),
    };
    let report = weights_tools::convert_with(&args.input, kind, quantization, &args.output)?;
    eprintln!(
        "wrote {} ({} tensors, {} bytes)",
        report.output.display(),
        report.n_tensors,
        report.bytes
    );
    Ok(())
}
