//! `amanuensis npu selftest`: what a first user with an NPU runs, and attaches to a bug report.
//!
//! It collects the system facts (kernel release, the amdxdna module, its version and
//! parameters, NPUs on the PCI bus, accel nodes), then walks the device life cycle one step at
//! a time through a [`TracingDriver`], so every step lists each ioctl it made with its errno
//! and duration: find a node, open it, identify the DRM driver, query the device, create the
//! heap, allocate the BOs, create a context, configure its CU from an xclbin, build the command
//! ring, run one dispatch, tear everything down. The first failing step ends the walk (teardown
//! still runs); later steps are reported as not reached.
//!
//! On the emulated device ([`run_emulated`]) the walk is the same code; the report says
//! EMULATED and the teardown step also checks the emulator's live BO, mapping, context and
//! syncobj counters are back to zero.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::amdxdna::AmdxdnaDriver;
use super::arena::{ArenaPlan, BoArena, BufferId};
use super::device::{check_driver_name, open_failure, Device, DeviceInfo};
use super::discovery::{self, find_accel_nodes, find_npu_pci_devices};
use super::driver::Driver;
use super::emu::{DriverProfile, EmuConfig, EmuDriver, EmuStats};
use super::error::{errno_name, ioctl_err, Errno, NpuError};
use super::heap::Heap;
use super::hwctx::{cu_func_of, HwContext};
use super::program::{Program, RegmapLayout};
use super::ring::CommandRing;
use super::trace::{Call, TracingDriver};
use super::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
use crate::dispatch::Dispatcher;
use crate::dispatch_bench::{self, DISPATCH_TIMEOUT, EMU_COPY_PDI};

/// The steps of the walk, in order (their names are stable: tests and bug reports use them).
pub const STEPS: [&str; 11] = [
    "find device node",
    "open",
    "identify driver",
    "query device",
    "create heap",
    "allocate buffers",
    "create context",
    "configure CU",
    "command ring",
    "dispatch",
    "teardown",
];

/// Where the system facts and the device node are looked up (the real paths by default; tests
/// point them at fake trees).
#[derive(Clone, Debug)]
pub struct SystemRoots {
    /// `/sys/bus/pci/devices`.
    pub sysfs_pci: PathBuf,
    /// `/dev/accel`.
    pub dev_accel: PathBuf,
    /// `/sys/module/amdxdna`.
    pub module: PathBuf,
    /// `/proc/sys/kernel` (`osrelease` = `uname -r`, `version` = `uname -v`).
    pub proc_kernel: PathBuf,
    /// `/lib/firmware/amdnpu` (the firmware files the driver loads).
    pub firmware_dir: PathBuf,
}

impl Default for SystemRoots {
    fn default() -> Self {
        Self {
            sysfs_pci: discovery::SYSFS_PCI_DEVICES.into(),
            dev_accel: discovery::DEV_ACCEL.into(),
            module: discovery::SYSFS_AMDXDNA_MODULE.into(),
            proc_kernel: "/proc/sys/kernel".into(),
            firmware_dir: "/lib/firmware/amdnpu".into(),
        }
    }
}

/// The amdxdna kernel module as sysfs shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `/sys/module/amdxdna` exists.
    pub loaded: bool,
    /// `version` (out-of-tree builds have one).
    pub version: Option<String>,
    /// `srcversion`.
    pub srcversion: Option<String>,
    /// Every `parameters/*` file as (name, trimmed value), sorted by name.
    pub params: Vec<(String, String)>,
}

/// What the system says before any device is opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// `uname -r`.
    pub kernel_release: Option<String>,
    /// `uname -v`.
    pub kernel_version: Option<String>,
    /// The amdxdna module.
    pub module: ModuleInfo,
    /// NPU PCI devices as (address, vendor:device), bound or not.
    pub npu_pci: Vec<(String, String)>,
    /// Accel nodes found through sysfs.
    pub nodes: Vec<PathBuf>,
    /// Entries of the amdxdna firmware directory (empty when absent).
    pub firmware_files: Vec<String>,
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl SystemInfo {
    /// Read everything under `roots` (missing files are `None`/empty, never an error).
    pub fn collect(roots: &SystemRoots) -> Self {
        let params = sorted_names(&roots.module.join("parameters"))
            .into_iter()
            .map(|name| {
                let v = read_trimmed(&roots.module.join("parameters").join(&name))
                    .unwrap_or_else(|| "(unreadable)".into());
                (name, v)
            })
            .collect();
        Self {
            kernel_release: read_trimmed(&roots.proc_kernel.join("osrelease")),
            kernel_version: read_trimmed(&roots.proc_kernel.join("version")),
            module: ModuleInfo {
                loaded: roots.module.is_dir(),
                version: read_trimmed(&roots.module.join("version")),
                srcversion: read_trimmed(&roots.module.join("srcversion")),
                params,
            },
            npu_pci: find_npu_pci_devices(&roots.sysfs_pci),
            nodes: find_accel_nodes(&roots.sysfs_pci, &roots.dev_accel)
                .into_iter()
                .map(|n| n.node)
                .collect(),
            firmware_files: sorted_names(&roots.firmware_dir),
        }
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Done.
    Ok,
    /// Failed: the message says why.
    Failed,
    /// Not taken because an input is missing (no xclbin, no instruction stream).
    Skipped,
    /// Not taken because an earlier step failed.
    NotReached,
}

impl StepStatus {
    /// `"ok"`, `"FAILED"`, `"skipped"`, `"not reached"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "FAILED",
            Self::Skipped => "skipped",
            Self::NotReached => "not reached",
        }
    }
}

/// One step of the walk.
#[derive(Clone, Debug)]
pub struct Step {
    /// One of [`STEPS`].
    pub name: &'static str,
    /// How it ended.
    pub status: StepStatus,
    /// What it did or why it failed.
    pub message: String,
    /// Every driver call it made.
    pub calls: Vec<Call>,
    /// Wall time of the step, ns.
    pub ns: u64,
}

/// Which device the walk ran on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A real node (or none found).
    Hardware {
        /// The node walked, if one was found.
        node: Option<PathBuf>,
    },
    /// The emulated device under a driver profile.
    Emulated {
        /// The profile's name (`6.14`, `upstream`, `xdna`).
        profile: &'static str,
    },
}

/// Everything the self-test found.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was walked.
    pub target: Target,
    /// System facts (for the emulated device: still this machine's).
    pub system: SystemInfo,
    /// The queried device, once "query device" passed.
    pub device: Option<DeviceInfo>,
    /// The steps, in [`STEPS`] order.
    pub steps: Vec<Step>,
    /// Emulator counters after teardown (emulated walks only).
    pub emu_after_teardown: Option<EmuStats>,
}

impl Report {
    /// The first failed step.
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }

    /// Whether no step failed (skipped steps allowed).
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }

    /// Whether the failure is "no usable NPU" (before any device object was made).
    pub fn no_device(&self) -> bool {
        self.first_failure()
            .is_some_and(|s| matches!(s.name, "find device node" | "open" | "identify driver"))
    }
}

/// The program dispatched by the walk: an xclbin and, optionally, its instruction stream.
#[derive(Clone, Debug)]
pub struct WalkProgram {
    /// The xclbin bytes.
    pub xclbin: Vec<u8>,
    /// TXN words; `None` skips the dispatch step (the CU is still configured).
    pub insts: Option<Vec<u32>>,
    /// Bytes of each buffer argument (buffer 0 is the input, the others outputs).
    pub bytes: usize,
    /// Check that buffer 1 equals buffer 0 after the dispatch (the emulated copy program).
    pub verify_copy: bool,
}

impl WalkProgram {
    /// The emulated copy program (built-in xclbin whose PDI the emulator knows, copy stream).
    pub fn emulated_copy(bytes: usize) -> Self {
        let (xclbin, insts) = dispatch_bench::emulated_program(bytes);
        Self {
            xclbin,
            insts: Some(insts),
            bytes,
            verify_copy: true,
        }
    }
}

/// Step bookkeeping: records calls and times per step.
struct Walker {
    trace: Option<Arc<TracingDriver>>,
    steps: Vec<Step>,
    /// Why the following steps are skipped (a missing input), if so.
    missing: Option<String>,
}

impl Walker {
    fn failed(&self) -> Option<&'static str> {
        self.steps
            .iter()
            .find(|s| s.status == StepStatus::Failed)
            .map(|s| s.name)
    }

    fn push(
        &mut self,
        name: &'static str,
        status: StepStatus,
        message: String,
        calls: Vec<Call>,
        ns: u64,
    ) {
        self.steps.push(Step {
            name,
            status,
            message,
            calls,
            ns,
        });
    }

    /// Run `f` as step `name` unless an earlier step failed or an input is missing.
    /// `Ok((value, message))` passes, `Err(message)` fails.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Option<T> {
        if !self.pass(name) {
            return None;
        }
        let trace = self.trace.clone();
        if let Some(t) = &trace {
            t.take();
        }
        let t0 = Instant::now();
        let r = f();
        let ns = t0.elapsed().as_nanos() as u64;
        let calls = trace.map(|t| t.take()).unwrap_or_default();
        match r {
            Ok((v, m)) => {
                self.push(name, StepStatus::Ok, m, calls, ns);
                Some(v)
            }
            Err(m) => {
                self.push(name, StepStatus::Failed, m, calls, ns);
                None
            }
        }
    }

    /// Whether step `name` may run; if not, records it as not reached or skipped.
    fn pass(&mut self, name: &'static str) -> bool {
        if let Some(f) = self.failed() {
            let m = format!("not reached: step '{f}' failed");
            self.push(name, StepStatus::NotReached, m, Vec::new(), 0);
            return false;
        }
        if let Some(why) = self.missing.clone() {
            self.push(name, StepStatus::Skipped, why, Vec::new(), 0);
            return false;
        }
        true
    }

    /// From here on, steps are skipped because of `why` (unless already failing).
    fn missing(&mut self, why: &str) {
        if self.missing.is_none() {
            self.missing = Some(format!("skipped: {why}"));
        }
    }
}

/// The DPU kernel the walk configures: the first `dpu` kernel with an id, else mlir-aie's.
fn dpu_kernel_id(xclbin: &Xclbin<'_>) -> u64 {
    xclbin
        .kernels()
        .ok()
        .and_then(|ks| {
            ks.iter()
                .filter(|k| k.kind == "dpu")
                .find_map(|k| k.dpu_kernel_id)
        })
        .unwrap_or(MLIR_AIE_DPU_KERNEL_ID)
}

fn show(e: &NpuError) -> String {
    e.to_string()
}

/// The device objects of the walk; dropped in the teardown step.
#[derive(Default)]
struct Objects {
    device: Option<Device>,
    heap: Option<Arc<Heap>>,
    arena: Option<BoArena>,
    buffers: Vec<BufferId>,
    instr: Option<BufferId>,
    layout: Option<RegmapLayout>,
    ctx: Option<HwContext>,
    dispatcher: Option<Dispatcher>,
}

/// The life cycle from "query device" on, on an opened driver; returns the device info.
fn walk_device(w: &mut Walker, program: Option<&WalkProgram>) -> Option<DeviceInfo> {
    let driver: Arc<dyn Driver> = w.trace.clone().expect("an opened driver");
    let device = w.step("query device", || {
        let d = Device::from_driver(driver).map_err(|e| show(&e))?;
        let i = d.info();
        let m = format!(
            "AIE {}.{}, {} columns x {} rows ({} core rows), firmware {}",
            i.aie_version.0,
            i.aie_version.1,
            i.columns(),
            i.rows(),
            i.core_rows(),
            i.firmware
                .map_or("(query failed)".into(), |(a, b, c, d)| format!(
                    "{a}.{b}.{c}.{d}"
                ))
        );
        Ok((d, m))
    });
    let mut o = Objects {
        device,
        ..Objects::default()
    };
    let info = o.device.as_ref().map(|d| d.info().clone());
    o.heap = match &o.device {
        Some(device) => w.step("create heap", || {
            let h = Heap::create(device).map_err(|e| show(&e))?;
            let m = format!(
                "64 MiB heap at device address {:#x}, mapped at {:#x}",
                h.device_addr(),
                h.cpu_addr()
            );
            Ok((h, m))
        }),
        None => {
            w.pass("create heap");
            None
        }
    };
    let parsed = program.map(|p| Xclbin::parse(&p.xclbin));
    let words = program
        .and_then(|p| p.insts.as_ref())
        .map_or(0, |i| i.len());
    let bytes = program.map_or(4096, |p| p.bytes);
    match (&o.device, &o.heap) {
        (Some(device), Some(h)) => {
            let r = w.step("allocate buffers", || {
                let l = match &parsed {
                    Some(Ok(x)) => dispatch_bench::layout_of(x).map_err(|e| show(&e))?,
                    Some(Err(e)) => return Err(format!("xclbin: {e}")),
                    None => RegmapLayout::mlir_aie(2),
                };
                let mut plan = ArenaPlan::new();
                let ins = (words > 0).then(|| plan.instructions("instr", words));
                let bufs: Vec<BufferId> = (0..l.buffers().max(1))
                    .map(|i| plan.buffer(&format!("bo{i}"), bytes))
                    .collect();
                let mut a = BoArena::allocate(device, h, &plan).map_err(|e| show(&e))?;
                if let (Some(id), Some(ws)) = (ins, program.and_then(|p| p.insts.as_ref())) {
                    a.write_instructions(id, ws).map_err(|e| show(&e))?;
                }
                let m = format!(
                    "{} buffers of {bytes} B in one SHARE BO{}",
                    bufs.len(),
                    if words > 0 {
                        format!(", {words} instruction words in one DEV BO")
                    } else {
                        String::new()
                    }
                );
                Ok(((a, bufs, ins, l), m))
            });
            if let Some((a, b, i, l)) = r {
                o.arena = Some(a);
                o.buffers = b;
                o.instr = i;
                o.layout = Some(l);
            }
        }
        _ => {
            w.pass("allocate buffers");
        }
    }
    let xclbin = match &parsed {
        Some(Ok(x)) => Some(x),
        _ => {
            w.missing("no xclbin given (--xclbin)");
            None
        }
    };
    o.ctx = match (&o.device, xclbin) {
        (Some(device), Some(x)) => w.step("create context", || {
            let p = x.aie_partition().map_err(|e| format!("xclbin: {e}"))?;
            let c = HwContext::create(device, p.column_width, p.operations_per_cycle)
                .map_err(|e| show(&e))?;
            let m = format!(
                "context {} on {} column(s), timeline syncobj {}",
                c.handle(),
                c.columns(),
                c.syncobj()
            );
            Ok((c, m))
        }),
        _ => {
            w.pass("create context");
            None
        }
    };
    let configured = match (&o.heap, xclbin, &mut o.ctx) {
        (Some(h), Some(x), Some(c)) => w
            .step("configure CU", || {
                let id = dpu_kernel_id(x);
                let p = x.aie_partition().map_err(|e| format!("xclbin: {e}"))?;
                let pdi = p.pdi_for_kernel(id).map_err(|e| format!("xclbin: {e}"))?;
                let func = cu_func_of(x, id).map_err(|e| show(&e))?;
                c.configure_cu(h, pdi, func).map_err(|e| show(&e))?;
                let m = format!(
                    "DPU kernel {id:#x}: PDI of {} B in a DEV BO, cu_func {func}",
                    pdi.len()
                );
                Ok(((), m))
            })
            .is_some(),
        _ => {
            w.pass("configure CU");
            false
        }
    };
    let ctx = o.ctx.take().map(Arc::new);
    let ring = match (&o.device, &ctx) {
        (Some(device), Some(c)) if configured => w.step("command ring", || {
            let r =
                CommandRing::new(device, c.clone(), 1, DISPATCH_TIMEOUT).map_err(|e| show(&e))?;
            Ok((r, "1 command BO of 4 KiB, mapped".to_string()))
        }),
        _ => {
            w.pass("command ring");
            None
        }
    };
    if words == 0 {
        w.missing("no instruction stream given (--insts)");
    }
    match (ring, &mut o.arena, o.instr, &o.layout, &ctx) {
        (Some(r), Some(a), Some(instr), Some(l), Some(c)) => {
            let mut d = Dispatcher::new(r, 1);
            let buffers = &o.buffers;
            let verify = program.is_some_and(|p| p.verify_copy);
            w.step("dispatch", || {
                let input = buffers[0];
                let outputs = &buffers[1..];
                for (i, b) in a.bytes_mut(input).iter_mut().enumerate() {
                    *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
                }
                for &out in outputs {
                    a.bytes_mut(out).fill(0xA5);
                }
                let p = Program::new(l, a, instr, buffers, Some(c.columns() as u8))
                    .map_err(|e| show(&e))?;
                d.dispatch(a, &p, &[input], outputs).map_err(|e| show(&e))?;
                if verify && outputs.first().is_some_and(|&out| a.bytes(out) != a.bytes(input)) {
                    return Err("the copy program's output differs from its input".into());
                }
                let rec = d.log().records()[0];
                let m = format!(
                    "1 command COMPLETED{}: flush {:.1} us, submit {:.1} us, wait {:.1} us, invalidate {:.1} us",
                    if verify { ", output verified" } else { "" },
                    rec.flush_ns as f64 / 1e3,
                    rec.submit_ns as f64 / 1e3,
                    rec.wait_ns as f64 / 1e3,
                    rec.invalidate_ns as f64 / 1e3
                );
                Ok(((), m))
            });
            o.dispatcher = Some(d);
        }
        (r, ..) => {
            drop(r);
            w.pass("dispatch");
        }
    }
    // Teardown in the order ownership gives, every call traced: command BO, syncobj, context
    // (and its PDI BO), arena BOs, heap.
    let trace = w.trace.clone().expect("an opened driver");
    trace.take();
    let t0 = Instant::now();
    drop(o.dispatcher.take());
    drop(ctx);
    drop(o.arena.take());
    drop(o.heap.take());
    drop(o.device.take());
    let ns = t0.elapsed().as_nanos() as u64;
    let calls = trace.take();
    let failed: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            c.errno
                .map(|e| format!("{} failed: {}", c.op, errno_name(e)))
        })
        .collect();
    let (status, message) = if failed.is_empty() {
        (
            StepStatus::Ok,
            format!("{} calls, all succeeded", calls.len()),
        )
    } else {
        (StepStatus::Failed, failed.join("; "))
    };
    w.push("teardown", status, message, calls, ns);
    info
}

fn not_drm(node: &Path, e: Errno) -> String {
    format!(
        "{} is not a DRM device (DRM_IOCTL_VERSION: {})",
        node.display(),
        errno_name(e)
    )
}

/// Walk the first accel node of the system (see [`SystemRoots`]) with `program` (`None`: stop
/// after the heap and buffers; the context needs an xclbin).
pub fn run_on_system(roots: &SystemRoots, program: Option<&WalkProgram>) -> Report {
    let system = SystemInfo::collect(roots);
    let mut w = Walker {
        trace: None,
        steps: Vec::new(),
        missing: None,
    };
    let node = system.nodes.first().cloned();
    match &node {
        None => w.push(
            "find device node",
            StepStatus::Failed,
            format!(
                "no /dev/accel/accel* node: {}",
                discovery::why_no_node(&roots.sysfs_pci, &roots.module)
            ),
            Vec::new(),
            0,
        ),
        Some(n) => w.push(
            "find device node",
            StepStatus::Ok,
            format!("{} ({} node(s) found)", n.display(), system.nodes.len()),
            Vec::new(),
            0,
        ),
    }
    if let Some(n) = node.as_ref().filter(|_| w.pass("open")) {
        let t0 = Instant::now();
        let r = AmdxdnaDriver::open(n);
        let ns = t0.elapsed().as_nanos() as u64;
        let call = Call {
            op: "open(O_RDWR|O_CLOEXEC)",
            arg: 0,
            errno: r.as_ref().err().copied(),
            ns,
        };
        match r {
            Ok(d) => {
                w.push(
                    "open",
                    StepStatus::Ok,
                    format!("{} opened", n.display()),
                    vec![call],
                    ns,
                );
                w.trace = Some(Arc::new(TracingDriver::new(Arc::new(d))));
            }
            Err(e) => w.push(
                "open",
                StepStatus::Failed,
                open_failure(n, e).to_string(),
                vec![call],
                ns,
            ),
        }
    }
    let mut device = None;
    if let (Some(n), Some(t)) = (&node, w.trace.clone()) {
        let ok = w
            .step("identify driver", || {
                let v = t.version().map_err(|e| not_drm(n, e))?;
                check_driver_name(n, &v).map_err(|e| show(&e))?;
                Ok((
                    (),
                    format!("{} {}.{}.{}", v.name, v.major, v.minor, v.patchlevel),
                ))
            })
            .is_some();
        if ok {
            device = walk_device(&mut w, program);
        }
    }
    for name in STEPS.iter().skip(w.steps.len()) {
        w.pass(name);
    }
    Report {
        target: Target::Hardware { node },
        system,
        device,
        steps: w.steps,
        emu_after_teardown: None,
    }
}

/// The emulated command latency of the walk.
pub const EMU_WALK_LATENCY: std::time::Duration = std::time::Duration::from_micros(50);

/// Walk the emulated device under `profile` with `program` (the built-in copy program when
/// `None`), after `configure` (e.g. to inject a fault). The copy kernel is registered under
/// the built-in PDI only: an xclbin with another PDI configures, and its dispatch ends in
/// ERROR (the emulator runs no AIE core code it does not model).
pub fn run_emulated(
    profile: DriverProfile,
    program: Option<&WalkProgram>,
    configure: impl FnOnce(&EmuDriver),
) -> Report {
    let default = WalkProgram::emulated_copy(4096);
    let program = program.unwrap_or(&default);
    let emu = Arc::new(EmuDriver::new(EmuConfig::with_profile(profile)));
    emu.register_kernel(EMU_COPY_PDI, dispatch_bench::copy_array);
    // A command takes 50 us, so the dispatch goes through the syncobj wait (with zero latency
    // the header is final at submission and no wait is made).
    emu.set_latency(EMU_WALK_LATENCY);
    configure(&emu);
    let trace = Arc::new(TracingDriver::new(emu.clone()));
    let mut w = Walker {
        trace: Some(trace.clone()),
        steps: Vec::new(),
        missing: None,
    };
    w.push(
        "find device node",
        StepStatus::Ok,
        "EMULATED device (no node)".into(),
        Vec::new(),
        0,
    );
    w.push(
        "open",
        StepStatus::Ok,
        format!("EMULATED device, driver profile '{}'", profile.name()),
        Vec::new(),
        0,
    );
    let ok = w
        .step("identify driver", || {
            let v = trace
                .version()
                .map_err(|e| ioctl_err("DRM_IOCTL_VERSION")(e).to_string())?;
            check_driver_name(Path::new("(emulated)"), &v).map_err(|e| show(&e))?;
            Ok((
                (),
                format!("{} {}.{}.{}", v.name, v.major, v.minor, v.patchlevel),
            ))
        })
        .is_some();
    let device = if ok {
        walk_device(&mut w, Some(program))
    } else {
        None
    };
    for name in STEPS.iter().skip(w.steps.len()) {
        w.pass(name);
    }
    drop(w.trace.take());
    drop(trace);
    let stats = emu.stats();
    if let Some(t) = w.steps.iter_mut().find(|s| s.name == "teardown") {
        let left = (
            stats.live_bos,
            stats.mapped_bos,
            stats.live_hwctxs,
            stats.live_syncobjs,
        );
        if t.status == StepStatus::Ok && left != (0, 0, 0, 0) {
            t.status = StepStatus::Failed;
            t.message = format!(
                "left behind: {} BOs, {} mappings, {} contexts, {} syncobjs",
                left.0, left.1, left.2, left.3
            );
        } else if t.status == StepStatus::Ok {
            t.message += "; emulator: 0 BOs, 0 mappings, 0 contexts, 0 syncobjs left";
        }
    }
    Report {
        target: Target::Emulated {
            profile: profile.name(),
        },
        system: SystemInfo::collect(&SystemRoots::default()),
        device,
        steps: w.steps,
        emu_after_teardown: Some(stats),
    }
}

#[cfg(test)]
mod tests;
