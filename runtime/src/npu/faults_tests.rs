//! Faulted devices (issue #15 item 7) on the emulated NPU: every driver call of a whole life
//! cycle (device queries, heap, BOs, context, CU, ring, pipelined dispatches, teardown) failing
//! once with EINVAL, ENOMEM, EAGAIN, EINTR and ETIME; a command that never completes; a command
//! ending in ERROR. Each ends in a named error (or succeeds: EINTR is retried, F6; release calls
//! in `Drop` are retried), and afterwards the emulator holds no BO, mapping, context or
//! syncobj, and nothing holds the device (its stand-in for the accel file descriptor).
//!
//! The 10 000-dispatch soak with injected faults is `runtime/tests/npu_fault_soak.rs` (its own
//! process, so it can count file descriptors too).

use std::sync::Arc;
use std::time::Duration;

use super::device::Device;
use super::emu::{DriverProfile, EmuConfig, EmuDriver};
use super::error::{errno_name, Errno};
use super::ert::CmdState;
use super::NpuError;
use crate::dispatch_bench::{self, EMU_COPY_PDI};

/// The errnos of the issue.
const ERRNOS: [Errno; 5] = [
    Errno::INVAL,
    Errno::NOMEM,
    Errno::AGAIN,
    Errno::INTR,
    Errno::TIME,
];

/// Every op the emulator names, in life-cycle order.
const OPS: [&str; 13] = [
    "DRM_IOCTL_VERSION",
    "GET_INFO",
    "CREATE_BO",
    "GET_BO_INFO",
    "mmap",
    "CREATE_HWCTX",
    "CONFIG_HWCTX",
    "EXEC_CMD",
    "SYNCOBJ_TIMELINE_WAIT",
    "munmap",
    "GEM_CLOSE",
    "SYNCOBJ_DESTROY",
    "DESTROY_HWCTX",
];

/// Release calls: made from `Drop`, retried there.
const RELEASES: [&str; 4] = ["munmap", "GEM_CLOSE", "SYNCOBJ_DESTROY", "DESTROY_HWCTX"];

/// The device of these tests. Jobs complete only where the host waits, so the calls a life
/// cycle makes (how many SYNCOBJ_TIMELINE_WAITs: a header already final needs none) do not
/// depend on the host's speed: a clean run's counts hold for the faulted runs on a loaded
/// machine too.
fn emu(profile: DriverProfile) -> Arc<EmuDriver> {
    let e = Arc::new(EmuDriver::new(EmuConfig {
        retire_in_waits_only: true,
        ..EmuConfig::with_profile(profile)
    }));
    e.register_kernel(EMU_COPY_PDI, dispatch_bench::copy_array);
    // 20 us per command: dispatches go through the syncobj wait, two stay in flight.
    e.set_latency(Duration::from_micros(20));
    e
}

/// Open the device and run the benchmark's whole life cycle: 3 synchronous warm-up dispatches,
/// then 4 pipelined 2 deep, output verified, everything dropped.
fn life_cycle(emu: &Arc<EmuDriver>) -> Result<(), NpuError> {
    let device = Device::from_driver(emu.clone())?;
    let (xclbin, insts) = dispatch_bench::emulated_program(1024);
    dispatch_bench::run(&device, &xclbin, &insts, 1024, 4, 2).map(|_| ())
}

fn assert_nothing_left(emu: &Arc<EmuDriver>, what: &str) {
    let s = emu.stats();
    assert_eq!(
        (s.live_bos, s.mapped_bos, s.live_hwctxs, s.live_syncobjs),
        (0, 0, 0, 0),
        "{what}: BOs, mappings, contexts, syncobjs left"
    );
    assert_eq!(
        Arc::strong_count(emu),
        1,
        "{what}: the device is still held"
    );
}

/// What a fault in the `nth` call of `op` must end in: `None` = success.
fn expected(op: &str, nth: u64, errno: Errno) -> Option<&'static str> {
    if errno == Errno::INTR || RELEASES.contains(&op) {
        return None; // retried
    }
    if op == "GET_INFO" && nth > 2 {
        return None; // FIRMWARE_VERSION and CLOCK_METADATA are informational
    }
    if op == "SYNCOBJ_TIMELINE_WAIT" && errno == Errno::TIME {
        return Some("Timeout");
    }
    Some("Ioctl")
}

#[test]
fn every_call_failing_once_with_each_errno_ends_named_or_retried_and_leaks_nothing() {
    for profile in DriverProfile::ALL {
        // How often each op runs in a clean life cycle.
        let clean = emu(profile);
        life_cycle(&clean).unwrap();
        let mut pairs = 0;
        for op in OPS {
            let calls = clean.calls_of(op);
            assert!(calls > 0, "{op} is exercised");
            for nth in 1..=calls {
                for errno in ERRNOS {
                    let e = emu(profile);
                    e.fail_nth(op, nth, errno);
                    let what = format!(
                        "{profile:?}: {op} call {nth} fails with {}",
                        errno_name(errno)
                    );
                    let r = life_cycle(&e);
                    match (expected(op, nth, errno), &r) {
                        (None, Ok(())) => {}
                        (
                            Some("Ioctl"),
                            Err(NpuError::Ioctl {
                                op: name,
                                errno: got,
                            }),
                        ) => {
                            assert!(name.starts_with(op), "{what}: {name}");
                            assert_eq!(*got, errno, "{what}");
                            let text = r.as_ref().unwrap_err().to_string();
                            assert!(
                                text.starts_with(name) && text.contains(errno_name(errno)),
                                "{what}: {text}"
                            );
                        }
                        (Some("Timeout"), Err(NpuError::Timeout { .. })) => {}
                        (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
                    }
                    if errno == Errno::INTR || RELEASES.contains(&op) {
                        assert_eq!(e.calls_of(op), calls + 1, "{what}: retried once");
                    }
                    assert_nothing_left(&e, &what);
                    pairs += 1;
                }
            }
        }
        assert!(pairs > 150, "{pairs} (op, call, errno) cases");
    }
}

#[test]
fn a_command_that_never_completes_and_an_error_state_end_in_named_errors() {
    for profile in DriverProfile::ALL {
        // Never completes: the ring's deadline gives Timeout (the command stays pending); the
        // teardown aborts it.
        let e = emu(profile);
        e.hang_exec(4); // the first measured dispatch, after 3 warm-ups
        let device = Device::from_driver(e.clone()).unwrap();
        let (xclbin, insts) = dispatch_bench::emulated_program(1024);
        let t0 = std::time::Instant::now();
        let r = run_with_timeout(&device, &xclbin, &insts, Duration::from_millis(30));
        assert!(
            matches!(r, Err(NpuError::Timeout { waited_ms, .. }) if waited_ms >= 25),
            "{profile:?}: {r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(device);
        assert_nothing_left(&e, "hung command");
        assert!(e
            .command_errors()
            .iter()
            .any(|m| m.contains("aborted by DESTROY_HWCTX")));

        // The driver's TDR ends it: the state the profile writes (TIMEOUT, or NEW before the
        // 6.14 fix, F1) is a CommandFailed.
        let e = Arc::new(EmuDriver::new(EmuConfig {
            tdr: Duration::from_millis(40),
            ..EmuConfig::with_profile(profile)
        }));
        e.register_kernel(EMU_COPY_PDI, dispatch_bench::copy_array);
        e.hang_exec(4);
        let device = Device::from_driver(e.clone()).unwrap();
        let r = run_with_timeout(&device, &xclbin, &insts, Duration::from_secs(2));
        match r {
            Err(NpuError::CommandFailed { state, .. }) => {
                assert_eq!(state, profile.timed_out_state(), "{profile:?}")
            }
            other => panic!("{profile:?}: {other:?}"),
        }
        drop(device);
        assert_nothing_left(&e, "command ended by the TDR");

        // ERROR state.
        let e = emu(profile);
        e.fail_exec(2, CmdState::Error);
        let r = life_cycle(&e);
        assert!(
            matches!(
                r,
                Err(NpuError::CommandFailed {
                    state: CmdState::Error,
                    ..
                })
            ),
            "{profile:?}: {r:?}"
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "command seq 1 ended in state Error"
        );
        assert_nothing_left(&e, "ERROR state");
    }
}

/// The benchmark life cycle with a ring timeout of `timeout`.
fn run_with_timeout(
    device: &Device,
    xclbin: &[u8],
    insts: &[u32],
    timeout: Duration,
) -> Result<(), NpuError> {
    use super::arena::{ArenaPlan, BoArena};
    use super::heap::Heap;
    use super::hwctx::HwContext;
    use super::program::{Program, RegmapLayout};
    use super::ring::CommandRing;
    use super::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
    use crate::dispatch::Dispatcher;
    let heap = Heap::create(device)?;
    let x = Xclbin::parse(xclbin)?;
    let ctx = Arc::new(HwContext::load(device, &heap, &x, MLIR_AIE_DPU_KERNEL_ID)?);
    let mut plan = ArenaPlan::new();
    let instr = plan.instructions("instr", insts.len());
    let input = plan.buffer("in", 1024);
    let output = plan.buffer("out", 1024);
    let mut arena = BoArena::allocate(device, &heap, &plan)?;
    arena.write_instructions(instr, insts)?;
    let program = Program::new(
        &RegmapLayout::mlir_aie(2),
        &arena,
        instr,
        &[input, output],
        Some(1),
    )?;
    let mut d = Dispatcher::new(CommandRing::new(device, ctx, 2, timeout)?, 16);
    for _ in 0..6 {
        d.dispatch(&arena, &program, &[input], &[output])?;
    }
    Ok(())
}
