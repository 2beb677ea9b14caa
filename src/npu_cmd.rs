//! `amanuensis devices` and `amanuensis profile-dispatch`: the NPU subcommands.
//!
//! Exit status: 0 on success; 1 when no usable NPU exists (the reason is printed); 2 for bad
//! arguments or files; 3 when a benchmark fails on a device that was found.

use std::path::PathBuf;
use std::process::ExitCode;

use amanuensis_runtime::dispatch::StageStats;
use amanuensis_runtime::dispatch_bench::{self, BenchReport};
use amanuensis_runtime::npu::device::Device;
use amanuensis_runtime::npu::discovery;
use amanuensis_runtime::npu::driver::Backend;

/// Exit status when there is no usable NPU.
pub const EXIT_NO_NPU: u8 = 1;
/// Exit status for bad arguments or unreadable input files.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when a device was found but the benchmark failed.
pub const EXIT_FAILED: u8 = 3;

/// Arguments of `amanuensis devices`.
#[derive(clap::Args, Debug)]
pub struct DevicesArgs {}

/// Which device `profile-dispatch` drives.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    /// The first usable amdxdna NPU.
    Npu,
    /// The in-process emulated device (host-side costs only).
    Emu,
}

/// Arguments of `amanuensis profile-dispatch`.
#[derive(clap::Args, Debug)]
pub struct ProfileDispatchArgs {
    /// Device to measure.
    #[arg(long, value_enum, default_value = "emu")]
    pub backend: BackendArg,
    /// Number of measured dispatches (after 3 warm-up dispatches).
    #[arg(short = 'n', long = "count", default_value_t = 1000)]
    pub n: usize,
    /// Bytes per input and per output buffer.
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
    /// xclbin of the program to dispatch (required for --backend npu; bo0 = input, bo1 = output).
    #[arg(long)]
    pub xclbin: Option<PathBuf>,
    /// Instruction stream (insts.bin, little-endian u32 words) for --xclbin.
    #[arg(long)]
    pub insts: Option<PathBuf>,
}

fn print_device(d: &Device) {
    let i = d.info();
    let v = &i.driver;
    println!(
        "  driver      {} {}.{}.{}",
        v.name, v.major, v.minor, v.patchlevel
    );
    println!("  AIE version {}.{}", i.aie_version.0, i.aie_version.1);
    println!(
        "  array       {} columns x {} rows ({} core rows from row {}, {} mem, {} shim)",
        i.columns(),
        i.rows(),
        i.core_rows(),
        i.metadata.core.row_start,
        i.metadata.mem.row_count,
        i.metadata.shim.row_count
    );
    match i.firmware {
        Some((a, b, c, d)) => println!("  firmware    {a}.{b}.{c}.{d}"),
        None => println!("  firmware    (query failed)"),
    }
    if i.clocks.is_empty() {
        println!("  clocks      (query failed)");
    }
    for (name, mhz) in &i.clocks {
        println!("  clock       {name}: {mhz} MHz");
    }
}

/// `amanuensis devices`: list every accel node with its properties, or why it is unusable.
pub fn devices(_args: &DevicesArgs) -> ExitCode {
    let found = discovery::discover();
    let mut usable = 0;
    for (node, result) in &found.nodes {
        let id = node.pci_id.as_deref().unwrap_or("?");
        println!("{} (PCI {} [{id}])", node.node.display(), node.pci_address);
        match result {
            Ok(d) => {
                usable += 1;
                print_device(d);
            }
            Err(e) => println!("  unusable: {e}"),
        }
    }
    if let Some(why) = &found.none_found {
        println!("no NPU device node: {why}");
    }
    if usable == 0 {
        println!("no usable NPU");
        return ExitCode::from(EXIT_NO_NPU);
    }
    ExitCode::SUCCESS
}

fn read_insts(path: &PathBuf) -> Result<Vec<u32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(format!(
            "{}: {} bytes is not a non-empty multiple of 4",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn print_stage(name: &str, s: &StageStats) {
    println!(
        "  {name:<8} min {:>9.1} us   median {:>9.1} us   p99 {:>9.1} us   max {:>9.1} us",
        us(s.min),
        us(s.median),
        us(s.p99),
        us(s.max)
    );
}

fn print_report(r: &BenchReport) {
    let label = match r.backend {
        Backend::Amdxdna => "NPU (amdxdna)",
        Backend::Emulated => "EMULATED device: host-side costs only, NOT NPU timings",
    };
    println!("profile-dispatch: {label}");
    println!(
        "  {} dispatches, {} B in + {} B out each{}",
        r.dispatches,
        r.bytes,
        r.bytes,
        if r.verified { ", output verified" } else { "" }
    );
    let s = &r.summary;
    print_stage("submit", &s.submit);
    print_stage("wait", &s.wait);
    print_stage("total", &s.total);
    let total_s = s.total.median as f64 / 1e9;
    println!(
        "  per-dispatch overhead (median submit + wait): {:.1} us{}",
        us(s.total.median),
        if total_s > 0.0 {
            format!(" = {:.0} dispatches/s", 1.0 / total_s)
        } else {
            String::new()
        }
    );
}

/// `amanuensis profile-dispatch`: time N small dispatches through the full submission path.
pub fn profile_dispatch(args: &ProfileDispatchArgs) -> ExitCode {
    if args.n == 0 || args.bytes == 0 || args.bytes > (256 << 20) {
        eprintln!("profile-dispatch: need -n ≥ 1 and 1 ≤ --bytes ≤ 256 MiB");
        return ExitCode::from(EXIT_USAGE);
    }
    let (device, xclbin, insts) = match args.backend {
        BackendArg::Emu => {
            if args.xclbin.is_some() || args.insts.is_some() {
                eprintln!("profile-dispatch: --xclbin/--insts apply to --backend npu only (the emulator runs its built-in copy kernel)");
                return ExitCode::from(EXIT_USAGE);
            }
            let device = match dispatch_bench::emulated_device() {
                Ok((_, d)) => d,
                Err(e) => {
                    eprintln!("profile-dispatch: emulated device: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            let (xclbin, insts) = dispatch_bench::emulated_program(args.bytes);
            (device, xclbin, insts)
        }
        BackendArg::Npu => {
            let device = match discovery::discover().first_usable() {
                Ok(d) => d,
                Err(e) => {
                    println!("profile-dispatch: {e}");
                    return ExitCode::from(EXIT_NO_NPU);
                }
            };
            let (Some(x), Some(i)) = (&args.xclbin, &args.insts) else {
                eprintln!(
                    "profile-dispatch: --backend npu needs --xclbin and --insts (a program with bo0 = input, bo1 = output); none ships yet"
                );
                return ExitCode::from(EXIT_USAGE);
            };
            let xclbin = match std::fs::read(x) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("profile-dispatch: cannot read {}: {e}", x.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let insts = match read_insts(i) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("profile-dispatch: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            (device, xclbin, insts)
        }
    };
    match dispatch_bench::run(&device, &xclbin, &insts, args.bytes, args.n, 1) {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("profile-dispatch: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
