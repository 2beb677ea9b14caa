//! `ERT_CMD_CHAIN` end to end on the emulated device: the ring's chain submission, and the
//! driver and firmware rules the emulator applies to chains it is handed raw (npu-driver.md
//! §2.7; `aie2_message.c: aie2_cmdlist_multi_execbuf`, `aie2_ctx.c:
//! aie2_sched_cmdlist_resp_handler`).

use std::sync::Arc;
use std::time::Duration;

use super::arena::{ArenaPlan, BoArena, BufferId};
use super::bo::MappedBo;
use super::clock::deadline_after;
use super::driver::Driver;
use super::emu::{DriverProfile, EmuConfig, EmuDriver};
use super::ert::{CmdChain, CmdState, Header, StartCu, StartNpu};
use super::heap::Heap;
use super::hwctx::HwContext;
use super::program::{Program, RegmapLayout};
use super::ring::CommandRing;
use super::tests::add_constant;
use super::txn::encode::copy_stream;
use super::txn::ArrayIo;
use super::xclbin::{Xclbin, XclbinBuilder, MLIR_AIE_DPU_KERNEL_ID};
use super::NpuError;
use crate::npu::device::Device;

const PDI: &[u8] = b"EMU-PDI:chain-add-constant";
const PDI_INVERT: &[u8] = b"EMU-PDI:chain-invert";
const N: usize = 512;

/// Three buffers a → b → c and two programs: `first` b = a + 1, `second` c = b + 2.
struct Chained {
    emu: Arc<EmuDriver>,
    device: Device,
    _heap: Arc<Heap>,
    arena: BoArena,
    ring: CommandRing,
    c: BufferId,
    first: Program,
    second: Program,
}

/// The second CU's array: bo1 = !bo0 (ignores the run-time parameter).
fn invert(io: &mut ArrayIo) -> Result<(), String> {
    let input = io.input(0, 0).ok_or("no input stream")?.to_vec();
    let out = io.output(0, 0).ok_or("no output stream")?;
    for (o, i) in out.iter_mut().zip(input) {
        *o = !i;
    }
    Ok(())
}

fn chained(profile: DriverProfile, max_chain: usize) -> Chained {
    chained_on(profile, max_chain, false)
}

/// With `two_cus`, one context with two CUs from one two-kernel xclbin: CU 0 adds, CU 1
/// inverts.
fn chained_on(profile: DriverProfile, max_chain: usize, two_cus: bool) -> Chained {
    let emu = Arc::new(EmuDriver::new(EmuConfig::with_profile(profile)));
    emu.register_kernel(PDI, add_constant);
    emu.register_kernel(PDI_INVERT, invert);
    let device = Device::from_driver(emu.clone()).unwrap();
    let heap = Heap::create(&device).unwrap();
    let ctx = if two_cus {
        let bytes =
            XclbinBuilder::mlir_aie_kernels(&[PDI.to_vec(), PDI_INVERT.to_vec()], 4, 2).build();
        let x = Xclbin::parse(&bytes).unwrap();
        let ids = [MLIR_AIE_DPU_KERNEL_ID, MLIR_AIE_DPU_KERNEL_ID + 1];
        let kernels = x.kernels().unwrap();
        assert_eq!(kernels.len(), 2);
        assert_eq!(kernels[1].dpu_kernel_id, Some(ids[1]));
        assert_eq!(
            RegmapLayout::from_kernel(&kernels[1]).unwrap(),
            RegmapLayout::mlir_aie(2)
        );
        let ctx = HwContext::load_kernels(&device, &heap, &x, &ids).unwrap();
        assert_eq!(ctx.cus(), 2);
        ctx
    } else {
        let bytes = XclbinBuilder::mlir_aie(PDI, 4, 2).build();
        HwContext::load(
            &device,
            &heap,
            &Xclbin::parse(&bytes).unwrap(),
            MLIR_AIE_DPU_KERNEL_ID,
        )
        .unwrap()
    };
    let mut plan = ArenaPlan::new();
    let words = copy_stream(3, N as u32, &[1]).len();
    let (i1, i2) = (
        plan.instructions("i1", words),
        plan.instructions("i2", words),
    );
    let (a, b, c) = (
        plan.buffer("a", N),
        plan.buffer("b", N),
        plan.buffer("c", N),
    );
    let mut arena = BoArena::allocate(&device, &heap, &plan).unwrap();
    arena
        .write_instructions(i1, &copy_stream(3, N as u32, &[1]))
        .unwrap();
    arena
        .write_instructions(i2, &copy_stream(3, N as u32, &[2]))
        .unwrap();
    for (i, v) in arena.bytes_mut(a).iter_mut().enumerate() {
        *v = i as u8;
    }
    arena.flush(a);
    let layout = RegmapLayout::mlir_aie(2);
    let first = Program::new(&layout, &arena, i1, &[a, b], Some(4)).unwrap();
    let second = Program::new(&layout, &arena, i2, &[b, c], Some(4)).unwrap();
    let ring =
        CommandRing::with_chains(&device, Arc::new(ctx), 1, Duration::from_secs(2), max_chain)
            .unwrap();
    Chained {
        emu,
        device,
        _heap: heap,
        arena,
        ring,
        c,
        first,
        second,
    }
}

impl Chained {
    fn start_cu<'a>(&self, p: &'a Program) -> StartCu<'a> {
        StartCu {
            cu_mask: 1,
            regmap: p.regmap(),
        }
    }

    fn c(&self) -> Vec<u8> {
        self.arena.flush(self.c);
        self.arena.bytes(self.c).to_vec()
    }

    /// EXEC_CMD of a raw chain of `packets` (each written into its own CMD BO); waits and
    /// returns the chain's header state and its words, and the sub-command BOs.
    fn raw_chain(&self, packets: &[Vec<u32>]) -> (CmdState, Vec<u32>, Vec<MappedBo>) {
        let mut subs = Vec::new();
        for p in packets {
            let mut bo = MappedBo::command(&self.device).unwrap();
            bo.words_mut()[..p.len()].copy_from_slice(p);
            subs.push(bo);
        }
        let handles: Vec<u32> = subs.iter().map(MappedBo::handle).collect();
        let mut chain = MappedBo::command(&self.device).unwrap();
        CmdChain { commands: &handles }
            .write(chain.words_mut())
            .unwrap();
        let ctx = self.ring.context();
        let seq = self
            .emu
            .exec_cmd(ctx.handle(), chain.handle(), self.arena.handles())
            .unwrap();
        self.emu
            .timeline_wait(ctx.syncobj(), seq, deadline_after(Duration::from_secs(2)))
            .unwrap();
        let words: Vec<u32> = (0..16).map(|i| chain.read_word_volatile(i)).collect();
        (Header::decode(words[0]).state, words, subs)
    }
}

fn packet(p: &StartCu<'_>) -> Vec<u32> {
    let mut out = vec![0; p.words()];
    p.write(&mut out).unwrap();
    out
}

#[test]
fn a_chain_runs_its_commands_in_order_in_one_submission() {
    for profile in DriverProfile::ALL {
        let mut f = chained(profile, 4);
        let (p1, p2) = (f.start_cu(&f.first), f.start_cu(&f.second));
        let t = f.ring.submit_chain([p1, p2], f.arena.handles()).unwrap();
        f.ring.wait(t).unwrap();
        // The second read what the first wrote: c = a + 1 + 2.
        assert!(
            f.c()
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i as u8).wrapping_add(3)),
            "{profile:?}"
        );
        assert_eq!(f.emu.stats().submitted, 1, "one EXEC_CMD for the chain");
        assert!(
            f.emu.command_errors().is_empty(),
            "{:?}",
            f.emu.command_errors()
        );
        // The slot is reused for the next chain (no allocation, same BOs).
        let bos = f.emu.stats().live_bos;
        let t = f.ring.submit_chain([p1, p2], f.arena.handles()).unwrap();
        f.ring.wait(t).unwrap();
        assert_eq!(f.emu.stats().live_bos, bos);
    }
}

#[test]
fn a_chain_mixes_the_cus_of_one_context() {
    let mut f = chained_on(DriverProfile::UpstreamCurrent, 2, true);
    let p1 = f.start_cu(&f.first);
    // The second program on CU 1: c = !b.
    let p2 = StartCu {
        cu_mask: 1 << 1,
        regmap: f.second.regmap(),
    };
    let t = f.ring.submit_chain([p1, p2], f.arena.handles()).unwrap();
    f.ring.wait(t).unwrap();
    assert!(
        f.c()
            .iter()
            .enumerate()
            .all(|(i, &v)| v == !(i as u8).wrapping_add(1)),
        "CU 0 added, CU 1 inverted"
    );
    assert_eq!(f.emu.stats().submitted, 1);
    // A CU the context does not have ends the chain in ERROR at that command.
    let p3 = StartCu {
        cu_mask: 1 << 2,
        regmap: f.second.regmap(),
    };
    let t = f.ring.submit_chain([p1, p3], f.arena.handles()).unwrap();
    assert!(matches!(
        f.ring.wait(t),
        Err(NpuError::ChainFailed {
            state: CmdState::Error,
            index: 1,
            ..
        })
    ));
    assert!(f.emu.command_errors()[0].contains("no kernel registered for the PDI of CU 2"));
}

#[test]
fn a_failing_middle_command_stops_the_chain_and_names_its_index() {
    for profile in DriverProfile::ALL {
        let mut f = chained(profile, 4);
        // No instruction BO: the firmware refuses it.
        let broken = StartCu {
            cu_mask: 1,
            regmap: &[3, 0, 0, 0, 0],
        };
        let (p1, p2) = (f.start_cu(&f.first), f.start_cu(&f.second));
        let t = f
            .ring
            .submit_chain([p1, broken, p2], f.arena.handles())
            .unwrap();
        match f.ring.wait(t) {
            Err(NpuError::ChainFailed { state, index, .. }) => {
                assert_eq!((state, index), (CmdState::Error, 1), "{profile:?}")
            }
            other => panic!("{profile:?}: expected a failed chain, got {other:?}"),
        }
        assert!(f.c().iter().all(|&v| v == 0), "the third never ran");
        let errors = f.emu.command_errors();
        assert!(errors[0].contains("chain sub-command 1 of 3"), "{errors:?}");
        // The ring rebuilds every packet: the next chain runs.
        let t = f.ring.submit_chain([p1, p2], f.arena.handles()).unwrap();
        f.ring.wait(t).unwrap();
        assert_eq!(f.c()[5], 8);
        // Raw: after a failure the driver fills the first sub-command's payload with 0xFF
        // (amdxdna_cmd_set_error), except on the 6.14-era driver.
        let (state, words, subs) = f.raw_chain(&[packet(&p1), packet(&broken)]);
        assert_eq!((state, words[3]), (CmdState::Error, 1), "{profile:?}");
        assert_eq!(words[1], 2, "the chain's own payload stays");
        let filled = subs[0].read_word_volatile(1) == 0xFFFF_FFFF;
        assert_eq!(filled, profile != DriverProfile::Upstream614, "{profile:?}");
    }
}

#[test]
fn the_chain_buffer_limit_is_the_drivers() {
    for profile in DriverProfile::ALL {
        let f = chained(profile, 1);
        // 30-word regmaps: 128-byte slots; 32 of them end exactly at 4096.
        let mut regmap = f.first.regmap().to_vec();
        regmap.resize(30, 0);
        let p = packet(&StartCu {
            cu_mask: 1,
            regmap: &regmap,
        });
        let (state, _, _) = f.raw_chain(&vec![p.clone(); 32]);
        let want = match profile {
            // `4096 - (offset + payload) > 8`: one word stricter.
            DriverProfile::Upstream614 => CmdState::New,
            _ => CmdState::Completed,
        };
        assert_eq!(state, want, "{profile:?}");
        // One more never fits: refused before anything runs, the header left NEW.
        let (state, _, _) = f.raw_chain(&vec![p; 33]);
        assert_eq!(state, CmdState::New, "{profile:?}");
        let errors = f.emu.command_errors();
        assert!(errors.last().unwrap().contains("ENOSPC"), "{errors:?}");
        // The ring refuses what the stricter rule refuses, before the driver sees it.
        let mut f = chained(profile, 40);
        let sub = StartCu {
            cu_mask: 1,
            regmap: &regmap,
        };
        assert!(matches!(
            f.ring.submit_chain([sub; 32], f.arena.handles()),
            Err(NpuError::InvalidRequest { .. })
        ));
        assert!(matches!(
            f.ring.submit_chain([], f.arena.handles()),
            Err(NpuError::InvalidRequest { .. })
        ));
    }
}

#[test]
fn mixed_opcodes_and_bad_handles_are_refused_by_the_driver() {
    let f = chained(DriverProfile::UpstreamCurrent, 1);
    let cu = packet(&f.start_cu(&f.first));
    let mut npu = vec![0; 8];
    StartNpu {
        cu_mask: 1,
        instr_addr: 0,
        instr_bytes: 0,
        args: &[3, 0],
    }
    .write(&mut npu)
    .unwrap();
    let (state, _, _) = f.raw_chain(&[cu.clone(), npu]);
    assert_eq!(state, CmdState::New);
    let errors = f.emu.command_errors();
    assert!(
        errors[0].contains("opcode 20, the chain's first has 0"),
        "{errors:?}"
    );
    assert!(f.c().iter().all(|&v| v == 0), "nothing ran");
    // A handle that is not a CMD BO.
    let data = f.arena.handles()[1];
    let mut chain = MappedBo::command(&f.device).unwrap();
    CmdChain { commands: &[data] }
        .write(chain.words_mut())
        .unwrap();
    let ctx = f.ring.context();
    let seq = f
        .emu
        .exec_cmd(ctx.handle(), chain.handle(), f.arena.handles())
        .unwrap();
    f.emu
        .timeline_wait(ctx.syncobj(), seq, deadline_after(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        Header::decode(chain.read_word_volatile(0)).state,
        CmdState::New
    );
    assert!(f.emu.command_errors().last().unwrap().contains("ENOENT"));
}
