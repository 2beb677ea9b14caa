//! The emulated firmware: hardware contexts, their job queues, and the execution of a command.
//!
//! A command is an `ERT_START_CU` packet whose regmap follows mlir-aie's layout (opcode u64 @0,
//! instruction BO address @0x08, word count @0x10, buffer i @0x14 + 8·i). The firmware reads the
//! instruction words from device memory (so they must have been flushed), validates them as a
//! TXN v0.1 stream against the command's buffers ([`crate::npu::txn::validate`]), performs the
//! shim DMA transfers they describe on device memory ([`crate::npu::txn::execute`]) and lets the
//! array model registered for the CU's PDI turn input streams into output streams. Any refusal
//! ends the command in state ERROR with the reason recorded.
//!
//! Time is virtual but tied to CLOCK_MONOTONIC: a job completes at `max(submit, previous job's
//! completion) + latency`, and runs the first time the emulator is entered at or after that
//! time. A hung job is ended by the driver's scheduler timeout (TDR) `tdr` after it started;
//! what its header and the other cancelled jobs' headers then say depends on the driver profile
//! (F1). Jobs of a context complete in order, like the real per-context queue.

use std::collections::VecDeque;
use std::sync::Arc;

use super::memory::Memory;
use super::profile::DriverProfile;
use crate::npu::driver::BoType;
use crate::npu::ert::{
    chain_slot_fits, CmdState, DecodedChain, DecodedStartCu, Header, CHAIN_BUFFER_BYTES,
    CHAIN_SLOT_HEADER_BYTES, ERT_CMD_CHAIN, ERT_START_CU, MLIR_AIE_OPCODE_TXN,
};
use crate::npu::txn::{self, ArrayIo, DmaMemory, Limits};

/// The model of what the AIE array computes for one command: turns the bytes that arrived on
/// each MM2S shim channel into the bytes leaving on each S2MM channel; `Err(message)` ends the
/// command in state ERROR.
pub type KernelFn = Arc<dyn Fn(&mut ArrayIo) -> Result<(), String> + Send + Sync>;

/// Regmap words the non-cmdlist `execute_buffer_req.payload` holds (F2).
pub const EXECBUF_PAYLOAD_WORDS: usize = 19;

/// How an injected fault changes a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobFault {
    None,
    /// Never completes by itself: the driver's TDR ends it.
    Hang,
    /// Completes in this state without running the kernel.
    State(CmdState),
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) cmd_bo: u32,
    pub(super) arg_bos: Vec<u32>,
    /// CLOCK_MONOTONIC ns at which it completes (hung jobs: when the TDR fires).
    pub(super) complete_at: i64,
    pub(super) fault: JobFault,
}

pub(super) struct Context {
    /// Kernel per CU index; `None` for a PDI no kernel is registered for.
    pub(super) cus: Option<Vec<Option<KernelFn>>>,
    /// Partition width.
    pub(super) cols: u8,
    pub(super) next_seq: u64,
    pub(super) pending: VecDeque<Job>,
    /// Highest completed seq.
    pub(super) signaled: Option<u64>,
}

impl Context {
    pub(super) fn new(cols: u8) -> Self {
        Self {
            cus: None,
            cols,
            next_seq: 0,
            pending: VecDeque::new(),
            signaled: None,
        }
    }
}

// As DMA does: the firmware writes command headers through its own view of the BO.
#[allow(clippy::mut_from_ref)]
fn cmd_words(memory: &Memory, cmd_bo: u32) -> Option<&mut [u32]> {
    let (p, len) = memory.pages(cmd_bo)?;
    // SAFETY: the pages of a live CMD BO, page-aligned (so u32-aligned), `len` bytes. The host
    // does not write a submitted packet until the command completes (ring discipline).
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u32>(), len / 4) })
}

/// Write the final state into the header. ERROR/ABORT/TIMEOUT overwrite the payload with 0xFF
/// as `amdxdna_cmd_set_error` does (a chain's own payload excepted); NEW (a pre-fix kernel's
/// killed job, F1, or a chain the driver refused) writes nothing.
pub(super) fn finish(memory: &Memory, cmd_bo: u32, state: CmdState) {
    let Some(words) = cmd_words(memory, cmd_bo) else {
        return;
    };
    let h = Header::decode(words[0]);
    if state == CmdState::New {
        return;
    }
    // A chain's own payload (command_count, error_index, handles) stays: the driver fills the
    // payload of its first sub-command instead (`execute_chain`).
    if state != CmdState::Completed && h.opcode != ERT_CMD_CHAIN {
        let end = (1 + h.count as usize).min(words.len());
        words[1..end].fill(0xFFFF_FFFF);
    }
    words[0] = Header { state, ..h }.encode();
}

/// Device memory as the shim DMAs reach it: each buffer argument from its address to the end of
/// its BO (null = absent, length 0).
struct DeviceBuffers {
    bufs: Vec<(*mut u8, usize)>,
    /// Each buffer's device address.
    addrs: Vec<u64>,
    /// Device byte ranges written, adjacent writes merged: (address, length).
    written: Vec<(u64, usize)>,
}

impl DmaMemory for DeviceBuffers {
    fn len(&self, arg: usize) -> u64 {
        self.bufs[arg].1 as u64
    }
    fn read(&self, arg: usize, offset: u64, out: &mut [u8]) {
        let (p, len) = self.bufs[arg];
        assert!(offset as usize + out.len() <= len, "validated range");
        // SAFETY: in bounds (asserted) of a live BO's device copy; raw copy, no reference to
        // device memory is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(p.add(offset as usize), out.as_mut_ptr(), out.len())
        }
    }
    fn write(&mut self, arg: usize, offset: u64, data: &[u8]) {
        let (p, len) = self.bufs[arg];
        assert!(offset as usize + data.len() <= len, "validated range");
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(offset as usize), data.len()) }
        let at = self.addrs[arg] + offset;
        match self.written.last_mut() {
            Some((a, n)) if *a + *n as u64 == at => *n += data.len(),
            _ => self.written.push((at, data.len())),
        }
    }
}

/// Run one job: its final state, and the reason when it is not COMPLETED.
pub(super) fn execute(
    memory: &Memory,
    ctx: &Context,
    job: &Job,
    profile: DriverProfile,
    force_cmdlist: Option<bool>,
) -> (CmdState, Option<String>) {
    if let JobFault::State(s) = job.fault {
        return (s, Some(format!("injected final state {s:?}")));
    }
    let fail = |why: String| (CmdState::Error, Some(why));
    let Some(words) = cmd_words(memory, job.cmd_bo) else {
        return fail(format!("command BO {} is not a live CMD BO", job.cmd_bo));
    };
    if Header::decode(words[0]).opcode == ERT_CMD_CHAIN {
        return execute_chain(memory, ctx, job, profile);
    }
    let Some(mut packet) = DecodedStartCu::parse(words) else {
        return fail(format!(
            "not an ERT_START_CU packet, header {:#010x} (the emulated firmware runs START_CU only)",
            words[0]
        ));
    };
    if packet.regmap.len() > EXECBUF_PAYLOAD_WORDS {
        match profile.long_regmap(force_cmdlist) {
            super::profile::LongRegmap::Chained => {}
            super::profile::LongRegmap::Truncated => packet.regmap.truncate(EXECBUF_PAYLOAD_WORDS),
            super::profile::LongRegmap::Refused => {
                return fail(format!(
                    "regmap of {} words exceeds the {EXECBUF_PAYLOAD_WORDS}-word execbuf payload (force_cmdlist off): EINVAL",
                    packet.regmap.len()
                ))
            }
        }
    }
    match run_start_cu(memory, ctx, &job.arg_bos, &packet) {
        Ok(()) => (CmdState::Completed, None),
        Err(e) => fail(e),
    }
}

/// An `ERT_CMD_CHAIN` job, as `aie2_message.c: aie2_cmdlist_multi_execbuf` builds it and the
/// firmware runs it, and as `aie2_ctx.c: aie2_sched_cmdlist_resp_handler` reports it.
///
/// Driver side, before anything runs: each `data[i]` must name a live CMD BO (ENOENT), every
/// sub-command must have the first one's opcode and a CU mask and a payload (EINVAL), and each
/// slot must fit the 4 KiB chain buffer ([`chain_slot_fits`], under the profile's rule). A
/// refused chain is never sent: its fence signals with an error and its header keeps the NEW
/// the driver wrote when the job started (state NEW here). Firmware side: the slots run in
/// order, each exactly as a single command (same validator, same device-memory view); the first
/// failing one stops the chain (the firmware's behaviour after a failure is not in the driver
/// source: stopping is our assumption), the header gets ERROR and `error_index` its index.
/// Profiles after the 6.14 era (`amdxdna_ctx.c: amdxdna_cmd_set_error`) also fill the payload
/// of the chain's *first* sub-command (`data[0]`, whichever failed) with 0xFF.
fn execute_chain(
    memory: &Memory,
    ctx: &Context,
    job: &Job,
    profile: DriverProfile,
) -> (CmdState, Option<String>) {
    let refused = |why: String| {
        (
            CmdState::New,
            Some(format!("chain refused by the driver: {why}")),
        )
    };
    let Some(words) = cmd_words(memory, job.cmd_bo) else {
        return refused(format!("command BO {} is not a live CMD BO", job.cmd_bo));
    };
    let Some(chain) = DecodedChain::parse(words) else {
        return refused(format!(
            "ERT_CMD_CHAIN header {:#010x} with a payload shorter than its command_count: EINVAL",
            words[0]
        ));
    };
    let strict = profile == DriverProfile::Upstream614;
    let mut slots = Vec::with_capacity(chain.handles.len());
    let mut offset = 0;
    let mut first_op = None;
    for (i, &h) in chain.handles.iter().enumerate() {
        let sub = match memory.bo_type(h) {
            Ok(BoType::Cmd) => cmd_words(memory, h),
            _ => None,
        };
        let Some(sub) = sub else {
            return refused(format!(
                "sub-command {i}: handle {h} is not a CMD BO: ENOENT"
            ));
        };
        let op = Header::decode(sub[0]).opcode;
        let first = *first_op.get_or_insert(op);
        if op != first {
            return refused(format!(
                "sub-command {i}: opcode {op}, the chain's first has {first}: EINVAL"
            ));
        }
        if op != ERT_START_CU {
            return refused(format!(
                "sub-command {i}: opcode {op} (the emulated firmware runs START_CU chains only)"
            ));
        }
        let Some(packet) = DecodedStartCu::parse(sub).filter(|p| p.cu_mask != 0) else {
            return refused(format!(
                "sub-command {i}: header {:#010x} has no CU mask or payload: EINVAL",
                sub[0]
            ));
        };
        let payload = 4 * packet.regmap.len();
        if !chain_slot_fits(offset, payload, strict) {
            return refused(format!(
                "sub-command {i}: a {payload}-byte slot at offset {offset} does not fit the {CHAIN_BUFFER_BYTES}-byte chain buffer: ENOSPC"
            ));
        }
        offset += CHAIN_SLOT_HEADER_BYTES + payload;
        slots.push(packet);
    }
    for (i, packet) in slots.iter().enumerate() {
        if let Err(e) = run_start_cu(memory, ctx, &job.arg_bos, packet) {
            if let Some(words) = cmd_words(memory, job.cmd_bo) {
                words[DecodedChain::ERROR_INDEX_WORD] = i as u32;
            }
            if !strict {
                if let Some(first) = cmd_words(memory, chain.handles[0]) {
                    first[1..].fill(0xFFFF_FFFF);
                }
            }
            return (
                CmdState::Error,
                Some(format!(
                    "chain sub-command {i} of {}: {e}",
                    chain.handles.len()
                )),
            );
        }
    }
    (CmdState::Completed, None)
}

/// Run one `ERT_START_CU` (a single command or a chain slot) on its CU: `Err(reason)` ends it.
fn run_start_cu(
    memory: &Memory,
    ctx: &Context,
    arg_bos: &[u32],
    packet: &DecodedStartCu,
) -> Result<(), String> {
    let cu = packet.cu_mask.trailing_zeros() as usize;
    let kernel = ctx
        .cus
        .as_ref()
        .and_then(|c| c.get(cu))
        .and_then(|k| k.clone());
    let Some(kernel) = kernel else {
        return Err(format!("no kernel registered for the PDI of CU {cu}"));
    };
    let opcode = packet.arg_u64(0).unwrap_or(0);
    if opcode != MLIR_AIE_OPCODE_TXN {
        return Err(format!(
            "regmap opcode {opcode}: the emulated firmware runs TXN streams (opcode 3) only"
        ));
    }
    let resolve = |addr: u64, what: &str| -> Result<(*mut u8, usize), String> {
        let (p, len, handle) = memory
            .resolve(addr)
            .ok_or_else(|| format!("{what}: device address {addr:#x} is in no BO"))?;
        if !arg_bos.contains(&handle) {
            return Err(format!(
                "{what}: BO {handle} at {addr:#x} is not in the EXEC_CMD handle list"
            ));
        }
        Ok((p, len))
    };
    let (Some(instr_addr), Some(ninstr)) = (packet.arg_u64(0x08), packet.arg_u32(0x10)) else {
        return Err("regmap has no instruction address/count".into());
    };
    let instr = match resolve(instr_addr, "instructions")? {
        (p, len) if len >= 4 * ninstr as usize => {
            // SAFETY: `len` live bytes of device memory at `p` (u32 reads unaligned-safe).
            (0..ninstr as usize)
                .map(|i| unsafe { p.cast::<u32>().add(i).read_unaligned() })
                .collect::<Vec<u32>>()
        }
        (_, len) => {
            return Err(format!(
                "{ninstr} instruction words run past their BO ({len} bytes)"
            ))
        }
    };
    let n_bufs = packet.regmap.len().saturating_sub(5) / 2;
    let mut bufs = Vec::with_capacity(n_bufs);
    let mut addrs = Vec::with_capacity(n_bufs);
    for i in 0..n_bufs {
        let addr = packet.arg_u64(0x14 + 8 * i).unwrap_or(0);
        addrs.push(addr);
        if addr == 0 {
            bufs.push((std::ptr::null_mut(), 0));
            continue;
        }
        bufs.push(resolve(addr, &format!("bo{i}"))?);
    }
    let lens: Vec<u64> = bufs.iter().map(|b| b.1 as u64).collect();
    let plan = txn::validate(
        &instr,
        &Limits {
            arg_lens: &lens,
            partition_cols: Some(ctx.cols),
        },
    )
    .map_err(|e| format!("instruction stream refused: {e}"))?;
    let mut mem = DeviceBuffers {
        bufs,
        addrs,
        written: Vec::new(),
    };
    let run = txn::execute(&plan, &mut mem, &mut |io| kernel(io));
    // What the device wrote (also before a failure) is stale in the host's clean lines.
    for &(addr, len) in &mem.written {
        memory.device_wrote(addr, len);
    }
    run.map(|_| ())
        .map_err(|e| format!("instruction stream execution: {e}"))
}
