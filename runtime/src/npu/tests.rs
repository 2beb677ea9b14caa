//! End-to-end tests of the NPU layer against the emulated device: discovery queries, heap and
//! BO address rules, the arena, context life cycle, the submission ring, and fault injection.

use std::sync::Arc;
use std::time::Duration;

use super::arena::{ArenaPlan, BoArena, BufferId};
use super::bo::MappedBo;
use super::device::Device;
use super::driver::{BoType, Driver};
use super::emu::{EmuConfig, EmuDriver, KernelCall, HEAP_DEVICE_BASE};
use super::error::Errno;
use super::ert::{CmdState, StartCu, MLIR_AIE_OPCODE_TXN};
use super::heap::{DevBo, Heap, HEAP_SIZE};
use super::hwctx::{qos_buffer, HwContext};
use super::ring::{CommandRing, Packet};
use super::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use super::NpuError;

const PDI: &[u8] = b"EMU-PDI:add-constant";
const N: usize = 1000;

/// The test kernel: instr[0] = byte count, instr[1] = constant; bo1[i] = bo0[i] + constant.
fn add_constant(call: &mut KernelCall<'_>) -> Result<(), String> {
    let instr = call.instructions()?;
    let (n, k) = (instr[0] as usize, instr[1] as u8);
    let input = call.buffer(0)?.get(..n).ok_or("bo0 too short")?.to_vec();
    let out = call.buffer(1)?.get_mut(..n).ok_or("bo1 too short")?;
    for (o, i) in out.iter_mut().zip(input) {
        *o = i.wrapping_add(k);
    }
    Ok(())
}

struct Fixture {
    emu: Arc<EmuDriver>,
    device: Device,
    heap: Arc<Heap>,
    arena: BoArena,
    ring: CommandRing,
    instr: BufferId,
    input: BufferId,
    output: BufferId,
}

fn emu_device(config: EmuConfig) -> (Arc<EmuDriver>, Device) {
    let emu = Arc::new(EmuDriver::new(config));
    emu.register_kernel(PDI, add_constant);
    let device = Device::from_driver(emu.clone()).unwrap();
    (emu, device)
}

fn fixture(depth: usize, timeout: Duration) -> Fixture {
    let (emu, device) = emu_device(EmuConfig::default());
    let heap = Heap::create(&device).unwrap();
    let bytes = XclbinBuilder::mlir_aie(PDI, 4, 2).build();
    let xclbin = Xclbin::parse(&bytes).unwrap();
    let ctx = Arc::new(HwContext::load(&device, &heap, &xclbin, MLIR_AIE_DPU_KERNEL_ID).unwrap());
    let mut plan = ArenaPlan::new();
    let instr = plan.instructions("instr", 2);
    let input = plan.buffer("in", N);
    let output = plan.buffer("out", N);
    let arena = BoArena::allocate(&device, &heap, &plan).unwrap();
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
    }
}

impl Fixture {
    fn packet_buffers(&self) -> [u64; 2] {
        [
            self.arena.device_addr(self.input),
            self.arena.device_addr(self.output),
        ]
    }

    fn prepare(&mut self, k: u32) {
        self.arena
            .write_instructions(self.instr, &[N as u32, k])
            .unwrap();
        for (i, b) in self.arena.bytes_mut(self.input).iter_mut().enumerate() {
            *b = i as u8;
        }
        self.arena.flush(self.input);
    }

    fn submit(&mut self) -> Result<super::ring::Ticket, NpuError> {
        let bufs = self.packet_buffers();
        let p = StartCu {
            cu_mask: 1,
            opcode: MLIR_AIE_OPCODE_TXN,
            instr_addr: self.arena.device_addr(self.instr),
            instr_words: 2,
            buffers: &bufs,
        };
        self.ring.submit(&Packet::StartCu(p), self.arena.handles())
    }

    fn output_ok(&self, k: u8) -> bool {
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
    assert!(e.contains("CREATE_BO(DEV) failed: ENOMEM"), "{e}");
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
    assert_eq!(emu.create_bo(BoType::Dev, 4096), Err(Errno::INVAL));
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
    let bufs = f.packet_buffers();
    let p = StartCu {
        cu_mask: 1,
        opcode: 3,
        instr_addr: f.arena.device_addr(f.instr),
        instr_words: 2,
        buffers: &bufs,
    };
    let instr_only = &f.arena.handles()[..1];
    let t = f.ring.submit(&Packet::StartCu(p), instr_only).unwrap();
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
fn hung_commands_time_out_and_are_aborted_at_teardown() {
    let mut f = fixture(4, Duration::from_millis(20));
    f.prepare(0);
    f.emu.hang_exec(1);
    let t = f.submit().unwrap();
    assert!(matches!(f.ring.wait(t), Err(NpuError::Timeout { .. })));
    assert!(matches!(f.ring.wait(t), Err(NpuError::Timeout { .. })));
    // Behind the hung command, three more fill the context; the emulated driver refuses a 5th
    // where the real one would block forever.
    for _ in 0..3 {
        f.submit().unwrap();
    }
    let ctx = f.ring.context().clone();
    assert_eq!(f.emu.exec_cmd(ctx.handle(), 999, &[]), Err(Errno::NOENT));
    let spare = MappedBo::command(&f.device).unwrap();
    assert_eq!(
        f.emu.exec_cmd(ctx.handle(), spare.handle(), &[]),
        Err(Errno::BUSY)
    );
    drop(spare);
    let e = f.submit().unwrap_err();
    assert!(
        matches!(e, NpuError::InvalidRequest { .. }),
        "ring refuses before the driver: {e}"
    );
    let Fixture {
        emu,
        ring,
        arena,
        heap,
        device,
        ..
    } = f;
    drop(ring);
    drop(ctx);
    assert!(emu
        .command_errors()
        .iter()
        .any(|e| e.contains("aborted by DESTROY_HWCTX")));
    drop((arena, heap, device));
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
    f.emu.fail_next("SYNCOBJ_TIMELINE_WAIT", Errno::INTR);
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
        opcode: 3,
        instr_addr: 0,
        instr_words: 0,
        buffers: &[],
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
