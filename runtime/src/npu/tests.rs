//! End-to-end tests of the NPU layer against the emulated device: discovery queries, heap and
//! BO address rules, the arena, context life cycle, the submission ring, and fault injection.

use std::sync::Arc;
use std::time::Duration;

use super::arena::{ArenaPlan, BoArena, BufferId};
use super::bo::MappedBo;
use super::device::Device;
use super::driver::{BoType, Driver};
use super::emu::{EmuConfig, EmuDriver, HEAP_DEVICE_BASE};
use super::error::Errno;
use super::ert::{CmdState, StartCu};
use super::heap::{DevBo, Heap, HEAP_SIZE};
use super::hwctx::{qos_buffer, HwContext};
use super::program::{Program, RegmapLayout};
use super::ring::{CommandRing, Packet};
use super::txn::encode::copy_stream;
use super::txn::ArrayIo;
use super::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use super::NpuError;

const PDI: &[u8] = b"EMU-PDI:add-constant";
const N: usize = 1000;

/// The test array: the stream moves bo0 through MM2S0 and S2MM0 into bo1; the core adds the
/// run-time parameter the stream wrote to tile (0, 2): bo1[i] = bo0[i] + constant.
pub(crate) fn add_constant(io: &mut ArrayIo) -> Result<(), String> {
    let k = io
        .register_writes()
        .first()
        .ok_or("no run-time parameter")?
        .value as u8;
    let input = io.input(0, 0).ok_or("no input stream")?.to_vec();
    let out = io.output(0, 0).ok_or("no output stream")?;
    if out.len() != input.len() {
        return Err(format!("{} bytes in, {} out", input.len(), out.len()));
    }
    for (o, i) in out.iter_mut().zip(input) {
        *o = i.wrapping_add(k);
    }
    Ok(())
}

pub(crate) struct Fixture {
    pub(crate) emu: Arc<EmuDriver>,
    pub(crate) device: Device,
    pub(crate) heap: Arc<Heap>,
    pub(crate) arena: BoArena,
    pub(crate) ring: CommandRing,
    pub(crate) instr: BufferId,
    pub(crate) input: BufferId,
    pub(crate) output: BufferId,
    pub(crate) program: Program,
}

fn emu_device(config: EmuConfig) -> (Arc<EmuDriver>, Device) {
    let emu = Arc::new(EmuDriver::new(config));
    emu.register_kernel(PDI, add_constant);
    let device = Device::from_driver(emu.clone()).unwrap();
    (emu, device)
}

fn fixture(depth: usize, timeout: Duration) -> Fixture {
    fixture_with(EmuConfig::default(), depth, timeout)
}

pub(crate) fn fixture_with(config: EmuConfig, depth: usize, timeout: Duration) -> Fixture {
    let (emu, device) = emu_device(config);
    let heap = Heap::create(&device).unwrap();
    let bytes = XclbinBuilder::mlir_aie(PDI, 4, 2).build();
    let xclbin = Xclbin::parse(&bytes).unwrap();
    let ctx = Arc::new(HwContext::load(&device, &heap, &xclbin, MLIR_AIE_DPU_KERNEL_ID).unwrap());
    let mut plan = ArenaPlan::new();
    let instr = plan.instructions("instr", copy_stream(3, N as u32, &[0]).len());
    let input = plan.buffer("in", N);
    let output = plan.buffer("out", N);
    let arena = BoArena::allocate(&device, &heap, &plan).unwrap();
    let program = Program::new(
        &RegmapLayout::mlir_aie(2),
        &arena,
        instr,
        &[input, output],
        Some(4),
    )
    .unwrap();
    let ring = CommandRing::new(&device, ctx, depth, timeout).unwrap();
    Fixture {
        emu,
        device,
        heap,
        arena,
        ring,
        instr,
        input,
        output,
        program,
    }
}

impl Fixture {
    pub(crate) fn prepare(&mut self, k: u32) {
        self.arena
            .write_instructions(self.instr, &copy_stream(3, N as u32, &[k]))
            .unwrap();
        for (i, b) in self.arena.bytes_mut(self.input).iter_mut().enumerate() {
            *b = i as u8;
        }
        self.arena.flush(self.input);
    }

    pub(crate) fn submit(&mut self) -> Result<super::ring::Ticket, NpuError> {
        self.ring
            .submit(&self.program.packet(), self.arena.handles())
    }

    pub(crate) fn output_ok(&self, k: u8) -> bool {
        self.arena.flush(self.output);
        self.arena
            .bytes(self.output)
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u8).wrapping_add(k))
    }
}

#[test]
fn device_reports_the_emulated_geometry() {
    let (_, d) = emu_device(EmuConfig::default());
    let i = d.info();
    assert_eq!((i.columns(), i.rows(), i.core_rows()), (5, 6, 4));
    assert_eq!(i.metadata.core.row_start, 2);
    assert_eq!(i.aie_version, (2, 0));
    assert_eq!(i.driver.name, "amdxdna_accel_driver");
    assert_eq!(i.firmware, Some((1, 5, 2, 380)));
    assert_eq!(
        i.clocks,
        vec![
            ("MP-NPU Clock".to_string(), 400),
            ("H Clock".to_string(), 1024)
        ]
    );
}

#[test]
fn failing_queries_are_reported_with_the_op() {
    let emu = Arc::new(EmuDriver::new(EmuConfig::default()));
    emu.fail_nth_call(3, Errno::INVAL); // VERSION, AIE_VERSION, then AIE_METADATA fails
    let e = Device::from_driver(emu.clone()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("GET_INFO(AIE_METADATA) failed: EINVAL ({})", Errno::INVAL)
    );
    // Optional queries failing leave the device usable.
    emu.fail_nth_call(4, Errno::OPNOTSUPP); // VERSION, AIE_VERSION, AIE_METADATA, FIRMWARE
    assert_eq!(Device::from_driver(emu).unwrap().info().firmware, None);
}

#[test]
fn heap_and_dev_bos_follow_the_address_rules() {
    let (emu, device) = emu_device(EmuConfig::default());
    let heap = Heap::create(&device).unwrap();
    assert_eq!(
        heap.cpu_addr() % HEAP_SIZE,
        0,
        "heap mapping is 64 MiB aligned"
    );
    assert_eq!(heap.device_addr(), HEAP_DEVICE_BASE);
    let mut a = DevBo::create(&heap, 100).unwrap();
    let b = DevBo::create(&heap, 5000).unwrap();
    for bo in [&a, &b] {
        assert_eq!(
            bo.device_addr() % (32 << 10),
            0,
            "DEV BOs are 32 KiB aligned"
        );
        assert_eq!(
            bo.cpu_addr() - heap.cpu_addr(),
            (bo.device_addr() - heap.device_addr()) as usize
        );
    }
    assert!(b.device_addr() >= a.device_addr() + 4096, "no overlap");
    a.bytes_mut().fill(0xAB);
    a.flush(0..100);
    assert!(a.bytes().iter().all(|&x| x == 0xAB));
    // The driver reports the same CPU address for the DEV BO that we derived.
    assert_eq!(emu.bo_info(a.handle()).unwrap().vaddr, a.cpu_addr() as u64);
    // One heap per client.
    let e = Heap::create(&device).unwrap_err().to_string();
    assert!(e.starts_with("CREATE_BO(DEV_HEAP) failed: EBUSY"), "{e}");
    assert!(matches!(
        DevBo::create(&heap, 0),
        Err(NpuError::InvalidRequest { .. })
    ));
    let e = DevBo::create(&heap, HEAP_SIZE).unwrap_err().to_string();
    assert!(e.contains("CREATE_BO(DEV) failed: ENOSPC"), "{e}");
}

#[test]
fn share_bos_use_their_mapping_address() {
    let (emu, device) = emu_device(EmuConfig::default());
    let mut bo = MappedBo::share(&device, 10_000).unwrap();
    assert_eq!(bo.device_addr(), bo.bytes().as_ptr() as u64);
    assert_eq!(emu.bo_info(bo.handle()).unwrap().vaddr, bo.device_addr());
    bo.bytes_mut()[9_999] = 1;
    let cmd = MappedBo::command(&device).unwrap();
    assert_eq!(cmd.len(), 4096);
    drop((bo, cmd));
    assert_eq!(emu.stats().live_bos, 0);
    assert_eq!(emu.stats().mapped_bos, 0);
}

#[test]
fn failed_creation_leaks_nothing() {
    let (emu, device) = emu_device(EmuConfig::default());
    emu.fail_next("mmap", Errno::NOMEM);
    let e = Heap::create(&device).unwrap_err().to_string();
    assert!(e.starts_with("mmap(heap) failed: ENOMEM"), "{e}");
    emu.fail_next("GET_BO_INFO", Errno::FAULT);
    assert!(MappedBo::share(&device, 64).is_err());
    assert_eq!(emu.stats().live_bos, 0);
    // DEV BOs need a heap.
    let heap = Heap::create(&device).unwrap();
    drop(heap);
    assert_eq!(emu.stats().live_bos, 0);
    assert_eq!(
        emu.create_bo(BoType::Dev, 4096),
        Err(Errno::INVAL),
        "no heap at all"
    );
}

#[test]
fn qos_buffer_and_context_geometry() {
    let q = qos_buffer();
    assert!(q[..24].iter().all(|&b| b == 0));
    assert_eq!(&q[24..], &[0xFF, 0, 0, 0, 0, 0, 0, 0]);
    let (emu, device) = emu_device(EmuConfig::default());
    // No heap yet: the driver refuses (ENOENT).
    let e = HwContext::create(&device, 4, 2048).unwrap_err().to_string();
    assert!(e.starts_with("CREATE_HWCTX failed: ENOENT"), "{e}");
    let heap = Heap::create(&device).unwrap();
    assert!(matches!(
        HwContext::create(&device, 6, 2048),
        Err(NpuError::InvalidRequest { .. })
    ));
    let mut ctx = HwContext::create(&device, 4, 2048).unwrap();
    ctx.configure_cu(&heap, PDI, 0).unwrap();
    assert!(matches!(
        ctx.configure_cu(&heap, PDI, 0),
        Err(NpuError::InvalidRequest { .. })
    ));
    drop(ctx);
    let ops: Vec<&str> = emu.ops().iter().map(|(op, _)| *op).collect();
    let pos = |name| ops.iter().rposition(|o| *o == name).unwrap();
    assert!(pos("SYNCOBJ_DESTROY") < pos("DESTROY_HWCTX"), "{ops:?}");
    assert!(
        pos("DESTROY_HWCTX") < pos("GEM_CLOSE"),
        "PDI BO closed after the context: {ops:?}"
    );
}

#[test]
fn dispatches_run_the_registered_kernel_pipelined_four_deep() {
    let mut f = fixture(4, Duration::from_secs(2));
    f.emu.set_latency(Duration::from_micros(200));
    f.prepare(3);
    let mut done = 0;
    for _ in 0..40 {
        if !f.ring.has_free_slot() {
            f.ring.wait(f.ring.oldest().unwrap()).unwrap();
            done += 1;
        }
        f.submit().unwrap();
    }
    f.ring.drain().unwrap();
    done += 4;
    assert_eq!(done, 40);
    assert!(f.output_ok(3));
    let s = f.emu.stats();
    assert_eq!((s.submitted, s.completed), (40, 40));
    assert_eq!(
        s.max_in_flight, 4,
        "the ring keeps 4 in flight and never more"
    );
    assert!(
        f.emu.command_errors().is_empty(),
        "{:?}",
        f.emu.command_errors()
    );
}

#[test]
fn errors_and_aborts_are_typed_and_the_payload_is_rebuilt() {
    let mut f = fixture(1, Duration::from_secs(2));
    f.prepare(1);
    let t = f.submit().unwrap();
    f.ring.wait(t).unwrap();
    assert!(f.output_ok(1));
    f.emu.fail_exec(1, CmdState::Error);
    let t = f.submit().unwrap();
    assert!(matches!(
        f.ring.wait(t),
        Err(NpuError::CommandFailed {
            state: CmdState::Error,
            ..
        })
    ));
    f.emu.fail_exec(1, CmdState::Abort);
    let t = f.submit().unwrap();
    assert!(matches!(
        f.ring.wait(t),
        Err(NpuError::CommandFailed {
            state: CmdState::Abort,
            ..
        })
    ));
    // The driver overwrote the payload with 0xFF; the same slot must carry a correct packet again.
    f.prepare(9);
    let t = f.submit().unwrap();
    f.ring.wait(t).unwrap();
    assert!(f.output_ok(9), "payload rebuilt after the error");
    // A kernel failure (here: a data BO missing from the handle list) also ends in ERROR.
    let instr_only = &f.arena.handles()[..1];
    let t = f.ring.submit(&f.program.packet(), instr_only).unwrap();
    assert!(matches!(
        f.ring.wait(t),
        Err(NpuError::CommandFailed {
            state: CmdState::Error,
            ..
        })
    ));
    let errors = f.emu.command_errors();
    assert!(
        errors
            .last()
            .unwrap()
            .contains("not in the EXEC_CMD handle list"),
        "{errors:?}"
    );
}

#[test]
fn timeouts_keep_the_command_pending_and_nothing_completes_twice() {
    let mut f = fixture(2, Duration::from_millis(30));
    f.prepare(2);
    f.emu.set_latency(Duration::from_millis(400));
    let t = f.submit().unwrap();
    match f.ring.wait(t) {
        Err(NpuError::Timeout { seq, waited_ms }) => {
            assert_eq!(seq, t.seq());
            assert!((25..400).contains(&waited_ms), "{waited_ms}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(f.ring.in_flight(), 1, "not lost");
    std::thread::sleep(Duration::from_millis(400));
    f.ring.wait(t).unwrap();
    assert!(f.output_ok(2));
    assert!(
        matches!(f.ring.wait(t), Err(NpuError::UnknownTicket { .. })),
        "not completed twice"
    );
    assert_eq!(f.emu.stats().completed, 1);
}

#[test]
fn hung_commands_time_out_then_the_driver_ends_them() {
    let tdr = Duration::from_millis(300);
    let config = EmuConfig {
        tdr,
        ..EmuConfig::default()
    };
    let profile = config.profile;
    let mut f = fixture_with(config, 4, Duration::from_millis(20));
    f.prepare(0);
    f.emu.hang_exec(1);
    let t = f.submit().unwrap();
    let t0 = std::time::Instant::now();
    assert!(matches!(f.ring.wait(t), Err(NpuError::Timeout { .. })));
    assert!(matches!(f.ring.wait(t), Err(NpuError::Timeout { .. })));
    // Behind the hung command, three more fill the context; a 5th EXEC_CMD blocks in the
    // driver until its TDR ends the hung one (and cancels the three).
    let mut behind = Vec::new();
    for _ in 0..3 {
        behind.push(f.submit().unwrap());
    }
    let e = f.submit().unwrap_err();
    assert!(
        matches!(e, NpuError::InvalidRequest { .. }),
        "ring refuses before the driver: {e}"
    );
    let ctx = f.ring.context().clone();
    let spare = MappedBo::command(&f.device).unwrap();
    let _ = f.emu.exec_cmd(ctx.handle(), spare.handle(), &[]);
    assert!(
        t0.elapsed() >= tdr - Duration::from_millis(50),
        "blocked until the TDR"
    );
    let failed = |r: Result<(), NpuError>| match r {
        Err(NpuError::CommandFailed { state, .. }) => state,
        other => panic!("expected a failed command, got {other:?}"),
    };
    assert_eq!(failed(f.ring.wait(t)), profile.timed_out_state());
    for b in behind {
        assert_eq!(failed(f.ring.wait(b)), profile.cancelled_state());
    }
    assert_eq!(f.ring.in_flight(), 0);
    // The ring is usable again and the payload rebuilt.
    f.prepare(4);
    let t = f.submit().unwrap();
    f.ring.wait(t).unwrap();
    assert!(f.output_ok(4));
    drop(spare);
    let Fixture {
        emu,
        ring,
        arena,
        heap,
        device,
        ..
    } = f;
    drop((ring, ctx, arena, heap, device));
    let s = emu.stats();
    assert_eq!(
        (s.live_bos, s.mapped_bos, s.live_hwctxs, s.live_syncobjs),
        (0, 0, 0, 0)
    );
}

#[test]
fn failed_exec_leaves_the_ring_consistent() {
    let mut f = fixture(2, Duration::from_secs(1));
    f.prepare(5);
    f.emu.fail_next("EXEC_CMD", Errno::BUSY);
    let e = f.submit().unwrap_err();
    assert!(
        matches!(e, NpuError::Ioctl { op: "EXEC_CMD", errno } if errno == Errno::BUSY),
        "{e}"
    );
    assert_eq!(f.ring.in_flight(), 0);
    let t = f.submit().unwrap();
    f.ring.wait(t).unwrap();
    assert!(f.output_ok(5));
    f.emu.fail_next("SYNCOBJ_TIMELINE_WAIT", Errno::IO);
    f.emu.set_latency(Duration::from_millis(5));
    let t = f.submit().unwrap();
    let e = f.ring.wait(t).unwrap_err();
    assert!(
        matches!(
            e,
            NpuError::Ioctl {
                op: "SYNCOBJ_TIMELINE_WAIT",
                ..
            }
        ),
        "{e}"
    );
    f.ring.wait(t).unwrap(); // still pending, completes on the retry
}

#[test]
fn eintr_is_retried_on_exec_and_wait_f6() {
    // F6: EXEC_CMD blocks in down_interruptible and the syncobj wait is interruptible; a signal
    // surfaces as EINTR. Before the fix both reached the caller as Ioctl { EINTR }.
    let mut f = fixture(2, Duration::from_secs(1));
    f.prepare(6);
    f.emu.set_latency(Duration::from_millis(2));
    f.emu.fail_next("EXEC_CMD", Errno::INTR);
    f.emu.fail_next("EXEC_CMD", Errno::INTR);
    let t = f.submit().expect("EXEC_CMD retried after EINTR");
    f.emu.fail_next("SYNCOBJ_TIMELINE_WAIT", Errno::INTR);
    f.ring.wait(t).expect("wait retried after EINTR");
    assert!(f.output_ok(6));
    assert_eq!(f.emu.stats().submitted, 1, "submitted exactly once");
}

#[test]
fn teardown_releases_everything_in_order() {
    let f = fixture(4, Duration::from_secs(1));
    let Fixture {
        emu,
        ring,
        arena,
        heap,
        device,
        ..
    } = f;
    drop((ring, arena));
    drop(heap);
    drop(device);
    let s = emu.stats();
    assert_eq!(
        (s.live_bos, s.mapped_bos, s.live_hwctxs, s.live_syncobjs),
        (0, 0, 0, 0)
    );
    let ops = emu.ops();
    let last_two: Vec<&str> = ops[ops.len() - 2..].iter().map(|(o, _)| *o).collect();
    assert_eq!(
        last_two,
        ["munmap", "GEM_CLOSE"],
        "heap unmapped and closed last: {ops:?}"
    );
}

#[test]
fn unregistered_pdi_ends_in_error() {
    let (emu, device) = emu_device(EmuConfig::default());
    let heap = Heap::create(&device).unwrap();
    let mut ctx = HwContext::create(&device, 1, 2048).unwrap();
    ctx.configure_cu(&heap, b"some other PDI", 0).unwrap();
    let mut ring = CommandRing::new(&device, Arc::new(ctx), 1, Duration::from_secs(1)).unwrap();
    let p = StartCu {
        cu_mask: 1,
        regmap: &[3, 0, 0, 0, 0],
    };
    let t = ring.submit(&Packet::StartCu(p), &[]).unwrap();
    assert!(matches!(
        ring.wait(t),
        Err(NpuError::CommandFailed {
            state: CmdState::Error,
            ..
        })
    ));
    assert!(emu.command_errors()[0].contains("no kernel registered"));
}
