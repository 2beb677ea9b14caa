//! `amanuensis devices`, `amanuensis profile-dispatch` and `amanuensis npu selftest`: the NPU
//! subcommands. All three find devices through `amanuensis_runtime::npu::discovery`.
//!
//! Exit status: 0 on success; 1 when no usable NPU exists (the reason is printed); 2 for bad
//! arguments or files; 3 when a benchmark fails on a device that was found.

use std::path::PathBuf;
use std::process::ExitCode;

use amanuensis_runtime::dispatch::{write_csv, Histogram, StageStats};
use amanuensis_runtime::dispatch_bench::{self, BenchReport};
use amanuensis_runtime::npu::device::Device;
use amanuensis_runtime::npu::discovery;
use amanuensis_runtime::npu::driver::Backend;
use amanuensis_runtime::npu::emu::{DriverProfile, EmuConfig};
use amanuensis_runtime::npu::selftest;

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
    /// Commands kept in flight (ring depth, 1-4).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Write every measured dispatch as a CSV row (index, bytes, flush, submit, wait,
    /// invalidate, total in ns) to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print a log2 histogram of the per-dispatch total.
    #[arg(long)]
    pub histogram: bool,
    /// Driver profile of the emulated device: 6.14, upstream, xdna (--backend emu only).
    #[arg(long)]
    pub profile: Option<String>,
    /// Emulated command latency in microseconds (--backend emu only; 0 = complete at
    /// submission, which measures host costs alone; > 0 lets --depth keep commands queued).
    #[arg(long, default_value_t = 0)]
    pub latency_us: u64,
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
        "  {name:<10} min {:>9.1} us   median {:>9.1} us   p99 {:>9.1} us   max {:>9.1} us",
        us(s.min),
        us(s.median),
        us(s.p99),
        us(s.max)
    );
}

fn print_report(r: &BenchReport, profile: Option<&str>, latency_us: u64, histogram: bool) {
    let label = match r.backend {
        Backend::Amdxdna => "NPU (amdxdna)".to_string(),
        Backend::Emulated => format!(
            "EMULATED device (driver profile '{}', command latency {latency_us} us): host-side costs only, NOT NPU timings",
            profile.unwrap_or("upstream")
        ),
    };
    println!("profile-dispatch: {label}");
    println!(
        "  {} dispatches, {} B in + {} B out each, depth {} (at most {} in flight){}",
        r.dispatches,
        r.bytes,
        r.bytes,
        r.depth,
        r.max_in_flight,
        if r.verified { ", output verified" } else { "" }
    );
    let s = &r.summary;
    print_stage("flush", &s.flush);
    print_stage("submit", &s.submit);
    print_stage("wait", &s.wait);
    print_stage("invalidate", &s.invalidate);
    print_stage("total", &s.total);
    println!(
        "  per-dispatch host time (median of flush + submit + wait + invalidate): {:.1} us",
        us(s.total.median)
    );
    if r.wall_ns > 0 {
        println!(
            "  throughput at depth {}: {:.0} dispatches/s ({} dispatches in {:.3} ms)",
            r.depth,
            r.dispatches as f64 * 1e9 / r.wall_ns as f64,
            r.dispatches,
            r.wall_ns as f64 / 1e6
        );
    }
    if histogram {
        let h = Histogram::log2(r.samples.iter().map(|x| x.total_ns()));
        let top = h.buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        println!(
            "  histogram of the per-dispatch total ({} samples):",
            h.count()
        );
        for (lo, hi, n) in &h.buckets {
            let bar = "#".repeat(((n * 50).div_ceil(top)) as usize);
            println!(
                "    [{:>10.1}, {:>10.1}) us {:>8}  {bar}",
                us(*lo),
                us(*hi),
                n
            );
        }
    }
}

/// `amanuensis profile-dispatch`: time N small dispatches through the full submission path.
pub fn profile_dispatch(args: &ProfileDispatchArgs) -> ExitCode {
    if args.n == 0 || args.bytes == 0 || args.bytes > (256 << 20) {
        eprintln!("profile-dispatch: need -n ≥ 1 and 1 ≤ --bytes ≤ 256 MiB");
        return ExitCode::from(EXIT_USAGE);
    }
    if !(1..=amanuensis_runtime::npu::ring::MAX_DEPTH).contains(&args.depth) {
        eprintln!("profile-dispatch: --depth {} must be 1-4", args.depth);
        return ExitCode::from(EXIT_USAGE);
    }
    if args.backend == BackendArg::Npu && (args.profile.is_some() || args.latency_us > 0) {
        eprintln!("profile-dispatch: --profile/--latency-us apply to --backend emu only");
        return ExitCode::from(EXIT_USAGE);
    }
    let profile = match args
        .profile
        .as_deref()
        .map(|n| (n, DriverProfile::from_name(n)))
    {
        None => DriverProfile::UpstreamCurrent,
        Some((_, Some(p))) => p,
        Some((n, None)) => {
            eprintln!("profile-dispatch: --profile {n}: expected one of 6.14, upstream, xdna");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (device, xclbin, insts) = match args.backend {
        BackendArg::Emu => {
            if args.xclbin.is_some() || args.insts.is_some() {
                eprintln!("profile-dispatch: --xclbin/--insts apply to --backend npu only (the emulator runs its built-in copy kernel)");
                return ExitCode::from(EXIT_USAGE);
            }
            let mut config = EmuConfig::with_profile(profile);
            config.latency = std::time::Duration::from_micros(args.latency_us);
            let device = match dispatch_bench::emulated_device_with(config) {
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
    match dispatch_bench::run(&device, &xclbin, &insts, args.bytes, args.n, args.depth) {
        Ok(report) => {
            print_report(
                &report,
                (args.backend == BackendArg::Emu).then_some(profile.name()),
                args.latency_us,
                args.histogram,
            );
            if let Some(path) = &args.csv {
                let written = std::fs::File::create(path)
                    .and_then(|f| write_csv(std::io::BufWriter::new(f), &report.samples));
                if let Err(e) = written {
                    eprintln!("profile-dispatch: cannot write {}: {e}", path.display());
                    return ExitCode::from(EXIT_USAGE);
                }
                println!(
                    "  {} samples written to {}",
                    report.samples.len(),
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("profile-dispatch: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `amanuensis npu …`.
#[derive(clap::Args, Debug)]
pub struct NpuArgs {
    #[command(subcommand)]
    pub command: NpuCommand,
}

/// The `npu` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum NpuCommand {
    /// Print kernel, amdxdna module and parameters, firmware and device, then walk the device
    /// life cycle (open, heap, BOs, context, CU configuration with --xclbin, one dispatch with
    /// --insts, teardown) printing each step's ioctls, errnos and times. Exit 0: no step failed;
    /// 1: no usable NPU (the failing step says why); 2: bad arguments/files; 3: a later step
    /// failed.
    Selftest(SelftestArgs),
}

/// Arguments of `amanuensis npu selftest`.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Walk the emulated device instead (labelled EMULATED; tests the walk itself).
    #[arg(long)]
    pub emu: bool,
    /// Driver profile of the emulated device: 6.14, upstream, xdna.
    #[arg(long, requires = "emu")]
    pub profile: Option<String>,
    /// xclbin whose CU the walk configures (the emulator's built-in copy program without it
    /// under --emu; on hardware the walk stops before the context without it).
    #[arg(long)]
    pub xclbin: Option<PathBuf>,
    /// Instruction stream (TXN, little-endian u32 words) for one dispatch of --xclbin
    /// (bo0 = input, the other buffers outputs).
    #[arg(long, requires = "xclbin")]
    pub insts: Option<PathBuf>,
    /// Bytes of each buffer argument of the dispatch.
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
    /// Also write the report as JSON to FILE ("-": JSON only, on standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `amanuensis npu …`.
pub fn npu(args: &NpuArgs) -> ExitCode {
    match &args.command {
        NpuCommand::Selftest(a) => selftest(a),
    }
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("(unknown)")
}

fn errno_text(e: Option<amanuensis_runtime::npu::error::Errno>) -> String {
    match e {
        None => "ok".into(),
        Some(e) => format!(
            "{} ({})",
            amanuensis_runtime::npu::error::errno_name(e),
            e.raw_os_error()
        ),
    }
}

fn print_selftest(r: &selftest::Report) {
    match &r.target {
        selftest::Target::Emulated { profile } => println!(
            "npu selftest: EMULATED device (driver profile '{profile}'): this walks the emulator, NOT an NPU"
        ),
        selftest::Target::Hardware { node } => println!(
            "npu selftest: {}",
            node.as_ref()
                .map_or("no device node".to_string(), |n| n.display().to_string())
        ),
    }
    let s = &r.system;
    println!("system");
    println!(
        "  kernel          {} {}",
        opt(&s.kernel_release),
        s.kernel_version.as_deref().unwrap_or("")
    );
    if s.module.loaded {
        println!(
            "  amdxdna module  loaded, version {}, srcversion {}",
            opt(&s.module.version),
            opt(&s.module.srcversion)
        );
        if s.module.params.is_empty() {
            println!("  parameters      (none)");
        }
        for (k, v) in &s.module.params {
            println!("  parameter       {k} = {v}");
        }
    } else {
        println!(
            "  amdxdna module  not loaded ({} absent)",
            discovery::SYSFS_AMDXDNA_MODULE
        );
    }
    if s.npu_pci.is_empty() {
        println!("  NPU on PCI      none");
    }
    for (addr, id) in &s.npu_pci {
        println!("  NPU on PCI      {addr} [{id}]");
    }
    println!(
        "  firmware files  {}",
        if s.firmware_files.is_empty() {
            "(none under /lib/firmware/amdnpu)".to_string()
        } else {
            s.firmware_files.join(" ")
        }
    );
    if let Some(d) = &r.device {
        println!("device");
        println!(
            "  driver          {} {}.{}.{}",
            d.driver.name, d.driver.major, d.driver.minor, d.driver.patchlevel
        );
        println!(
            "  AIE             {}.{}, {} columns x {} rows ({} core rows)",
            d.aie_version.0,
            d.aie_version.1,
            d.columns(),
            d.rows(),
            d.core_rows()
        );
        match d.firmware {
            Some((a, b, c, e)) => println!("  firmware        {a}.{b}.{c}.{e}"),
            None => println!("  firmware        (GET_INFO(FIRMWARE_VERSION) failed)"),
        }
        for (name, mhz) in &d.clocks {
            println!("  clock           {name}: {mhz} MHz");
        }
    }
    println!("steps");
    for (i, st) in r.steps.iter().enumerate() {
        println!(
            "  {:>2}. {:<17} {:<11} {:>10.3} ms  {}",
            i + 1,
            st.name,
            st.status.label(),
            st.ns as f64 / 1e6,
            st.message
        );
        for c in &st.calls {
            println!(
                "        {:<28} arg {:<10} {:<14} {:>10.3} ms",
                c.op,
                c.arg,
                errno_text(c.errno),
                c.ns as f64 / 1e6
            );
        }
    }
    match r.first_failure() {
        None => println!(
            "result: PASSED{}",
            if r.steps
                .iter()
                .any(|s| s.status == selftest::StepStatus::Skipped)
            {
                " (some steps skipped: see above)"
            } else {
                ""
            }
        ),
        Some(f) => println!("result: FAILED at step '{}': {}", f.name, f.message),
    }
}

fn selftest_json(r: &selftest::Report) -> serde_json::Value {
    use serde_json::json;
    let s = &r.system;
    let target = match &r.target {
        selftest::Target::Emulated { profile } => json!({"kind": "emulated", "profile": profile}),
        selftest::Target::Hardware { node } => {
            json!({"kind": "hardware", "node": node.as_ref().map(|n| n.display().to_string())})
        }
    };
    let device = r.device.as_ref().map(|d| {
        json!({
            "driver": {"name": d.driver.name, "major": d.driver.major, "minor": d.driver.minor, "patchlevel": d.driver.patchlevel},
            "aie_version": [d.aie_version.0, d.aie_version.1],
            "columns": d.columns(),
            "rows": d.rows(),
            "core_rows": d.core_rows(),
            "firmware": d.firmware.map(|(a, b, c, e)| format!("{a}.{b}.{c}.{e}")),
            "clocks_mhz": d.clocks.iter().map(|(n, m)| json!({"name": n, "mhz": m})).collect::<Vec<_>>(),
            "force_cmdlist": d.force_cmdlist,
        })
    });
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|st| {
            json!({
                "name": st.name,
                "status": st.status.label(),
                "message": st.message,
                "ns": st.ns,
                "calls": st.calls.iter().map(|c| json!({
                    "op": c.op,
                    "arg": c.arg,
                    "errno": c.errno.map(amanuensis_runtime::npu::error::errno_name),
                    "errno_value": c.errno.map(|e| e.raw_os_error()),
                    "ns": c.ns,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "tool": "amanuensis npu selftest",
        "version": env!("CARGO_PKG_VERSION"),
        "target": target,
        "emulated": matches!(r.target, selftest::Target::Emulated { .. }),
        "system": {
            "kernel_release": s.kernel_release,
            "kernel_version": s.kernel_version,
            "amdxdna_module": {
                "loaded": s.module.loaded,
                "version": s.module.version,
                "srcversion": s.module.srcversion,
                "parameters": s.module.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            },
            "npu_pci": s.npu_pci.iter().map(|(a, i)| json!({"address": a, "id": i})).collect::<Vec<_>>(),
            "nodes": s.nodes.iter().map(|n| n.display().to_string()).collect::<Vec<_>>(),
            "firmware_files": s.firmware_files,
        },
        "device": device,
        "steps": steps,
        "passed": r.passed(),
        "first_failure": r.first_failure().map(|f| json!({"step": f.name, "message": f.message})),
    })
}

/// `amanuensis npu selftest`.
pub fn selftest(args: &SelftestArgs) -> ExitCode {
    if args.bytes == 0 || args.bytes > (256 << 20) || !args.bytes.is_multiple_of(4) {
        eprintln!("npu selftest: --bytes must be a multiple of 4 in 4..=256 MiB");
        return ExitCode::from(EXIT_USAGE);
    }
    let program = match &args.xclbin {
        None => None,
        Some(x) => {
            let xclbin = match std::fs::read(x) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("npu selftest: cannot read {}: {e}", x.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let insts = match args.insts.as_ref().map(read_insts).transpose() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("npu selftest: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            Some(selftest::WalkProgram {
                xclbin,
                insts,
                bytes: args.bytes,
                verify_copy: false,
            })
        }
    };
    let report = if args.emu {
        let profile = match args.profile.as_deref() {
            None => DriverProfile::UpstreamCurrent,
            Some(name) => match DriverProfile::from_name(name) {
                Some(p) => p,
                None => {
                    eprintln!(
                        "npu selftest: --profile {name}: expected one of 6.14, upstream, xdna"
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
            },
        };
        let default = selftest::WalkProgram::emulated_copy(args.bytes);
        selftest::run_emulated(profile, Some(program.as_ref().unwrap_or(&default)), |_| {})
    } else {
        selftest::run_on_system(&selftest::SystemRoots::default(), program.as_ref())
    };
    let json_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    if !json_stdout {
        print_selftest(&report);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&selftest_json(&report)).expect("plain values");
        if json_stdout {
            println!("{text}");
        } else if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("npu selftest: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_USAGE);
        } else {
            println!("report written to {}", path.display());
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else if report.no_device() {
        ExitCode::from(EXIT_NO_NPU)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
