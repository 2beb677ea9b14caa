//! The `amanuensis` command line (NPU subcommands; the lead merges `transcribe` beside them).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// List NPU devices and their properties, or say exactly why there is none
    /// (exit 0: at least one usable NPU; 1: none).
    Devices(npu_cmd::DevicesArgs),
    /// Time N small dispatches through the full NPU submission path (min/median/p99 per stage).
    /// Exit 1: no usable NPU; 2: bad arguments/files; 3: the run failed.
    ProfileDispatch(npu_cmd::ProfileDispatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Devices(a) => npu_cmd::devices(a),
        Command::ProfileDispatch(a) => npu_cmd::profile_dispatch(a),
    }
}
