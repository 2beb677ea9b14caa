//! The `amanuensis` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use amanuensis::engine::{Engine, Precision};
use amanuensis::model::audio::load_wav;
use amanuensis::model::session::TranscribeOptions;
use amanuensis::model_path::resolve_model;
use amanuensis::output::{render, OutputFormat};

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
    /// Transcribe WAV files (any rate, any channel count; resampled to 16 kHz mono).
    Transcribe(TranscribeArgs),
    /// Time each stage on real audio: load, mel, encoder, decoder, realtime factor, peak RSS.
    Bench(BenchArgs),
    /// List NPU devices and their properties, or say exactly why there is none
    /// (exit 0: at least one usable NPU; 1: none).
    Devices(npu_cmd::DevicesArgs),
    /// Time N small dispatches through the full NPU submission path (min/median/p99 per stage).
    /// Exit 1: no usable NPU; 2: bad arguments/files; 3: the run failed.
    ProfileDispatch(npu_cmd::ProfileDispatchArgs),
    /// Convert a published checkpoint to an Amanuensis model file (same as `weights-tools convert`).
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
struct TranscribeArgs {
    /// Audio files (WAV).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model file, or a model name in the cache (tiny.en, base). Default: $AMANUENSIS_MODEL, else tiny.en.
    #[arg(short, long)]
    model: Option<String>,
    /// Threads (default: available cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Decode without timestamp tokens (one segment per 30 s window).
    #[arg(long)]
    no_timestamps: bool,
    /// What to print.
    #[arg(long, value_enum, default_value = "console")]
    output_format: OutputFormat,
    /// Write FILE_STEM.<ext> into this folder instead of printing.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Language of the speech (multilingual models only).
    #[arg(short, long, default_value = "en")]
    language: String,
    /// Text that seeds the previous-text prompt of the first window.
    #[arg(long)]
    initial_prompt: Option<String>,
    /// Print load and stage timings on stderr.
    #[arg(long)]
    timings: bool,
    /// Beams: 1 = greedy; 5 = faster-whisper's default beam search (patience 1, length
    /// penalty 1).
    #[arg(short, long, default_value_t = 1)]
    beam_size: usize,
    /// Arithmetic: auto = INT8 for an INT8 model file, else f32 (the reference).
    #[arg(long, value_enum, default_value = "auto")]
    precision: Precision,
    #[command(flatten)]
    decoding: amanuensis::guarded::DecodeArgs,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Audio files (WAV); the first is also transcribed once untimed as a warm-up.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model file or cached model name.
    #[arg(short, long)]
    model: Option<String>,
    /// Threads (default: available cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Arithmetic: auto = INT8 for an INT8 model file, else f32.
    #[arg(long, value_enum, default_value = "auto")]
    precision: Precision,
    /// Beams: 1 = greedy, more = beam search.
    #[arg(short, long, default_value_t = 1)]
    beam_size: usize,
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
        Command::Transcribe(args) => transcribe(&args),
        Command::Bench(args) => bench(&args),
        Command::Convert(args) => convert(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amanuensis: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn transcribe(args: &TranscribeArgs) -> CliResult {
    let path = resolve_model(args.model.as_deref())?;
    let threads = default_threads(args.threads);
    let t = Instant::now();
    let mut session = Engine::load(&path, threads, args.precision)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    if args.timings {
        eprintln!(
            "load time = {load_ms:.1} ms ({}, {threads} threads, {})",
            path.display(),
            session.backend_name()
        );
    }
    let opts = args.decoding.apply(TranscribeOptions {
        language: args.language.clone(),
        without_timestamps: args.no_timestamps,
        initial_prompt: args.initial_prompt.clone(),
        beam_size: args.beam_size,
        ..Default::default()
    });
    args.decoding.validate()?;
    let (vad, note) = args.decoding.load_vad(threads)?;
    if let Some(note) = note {
        eprintln!("amanuensis: {note}");
    }
    let many = args.files.len() > 1 && args.output_dir.is_none();
    for file in &args.files {
        let t = Instant::now();
        let audio = load_wav(file)?;
        let (transcript, vad_time) = amanuensis::guarded::transcribe(
            &mut session,
            vad.as_ref(),
            args.decoding.vad_mode(),
            &audio,
            &opts,
        )?;
        let total = t.elapsed().as_secs_f64();
        let text = render(
            &transcript,
            args.output_format,
            &file.display().to_string(),
            !args.no_timestamps,
        );
        match &args.output_dir {
            Some(dir) => {
                let out = output_file(dir, file, args.output_format.extension());
                std::fs::write(&out, text)
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
            None => {
                if many {
                    println!("==> {} <==", file.display());
                }
                print!("{text}");
            }
        }
        if args.timings {
            let tm = &transcript.timings;
            eprintln!(
                "{}: vad {:.1} ms",
                file.display(),
                vad_time.as_secs_f64() * 1e3
            );
            eprintln!(
                "{}: {:.2} s audio in {:.3} s ({:.1}x realtime) | mel {:.1} ms | encode {}x {:.1} ms | decode {} passes {:.1} ms ({:.2} ms/pass)",
                file.display(),
                transcript.duration,
                total,
                transcript.duration / total,
                tm.mel.as_secs_f64() * 1e3,
                tm.windows,
                tm.encode.as_secs_f64() * 1e3 / tm.windows.max(1) as f64,
                tm.decoder_passes,
                tm.decode.as_secs_f64() * 1e3,
                tm.decode.as_secs_f64() * 1e3 / tm.decoder_passes.max(1) as f64,
            );
        }
    }
    Ok(())
}

fn default_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn bench(args: &BenchArgs) -> CliResult {
    let path = resolve_model(args.model.as_deref())?;
    let threads = default_threads(args.threads);
    let report =
        amanuensis::bench::run(&path, threads, args.precision, args.beam_size, &args.files)?;
    println!(
        "amanuensis bench: {} ({threads} threads, {})",
        path.display(),
        report.backend
    );
    print!("{report}");
    Ok(())
}

fn output_file(dir: &Path, input: &Path, ext: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(|| "transcript".into(), |s| s.to_os_string());
    dir.join(stem).with_extension(ext)
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
