//! The emulated firmware: hardware contexts, their job queues, and the execution of a command
//! by the Rust function registered for the CU's PDI.
//!
//! Time is virtual but tied to CLOCK_MONOTONIC: a job completes at `max(submit, previous job's
//! completion) + latency`, and runs (its kernel executes, its header gets the final state, the
//! syncobj point signals) the first time the emulator is entered at or after that time. Jobs of
//! a context complete in order, like the real per-context queue.

use std::collections::VecDeque;
use std::sync::Arc;

use super::memory::Memory;
use crate::npu::ert::{CmdState, DecodedStartCu, Header, FIRST_BUFFER_ARG_OFFSET};

/// A kernel of the emulated device: reads its arguments and buffers through [`KernelCall`] and
/// returns `Err(message)` to end the command in state ERROR.
pub type KernelFn = Arc<dyn Fn(&mut KernelCall<'_>) -> Result<(), String> + Send + Sync>;

/// What a kernel sees of one command.
pub struct KernelCall<'a> {
    regmap: &'a [u32],
    memory: &'a Memory,
    allowed: &'a [u32],
}

impl KernelCall<'_> {
    /// The regmap (payload after the CU mask) as u32 words.
    pub fn regmap(&self) -> &[u32] {
        self.regmap
    }

    /// The u32 argument at regmap byte offset `off`.
    pub fn arg_u32(&self, off: usize) -> Option<u32> {
        self.regmap.get(off / 4).copied()
    }

    /// The u64 argument at regmap byte offset `off`.
    pub fn arg_u64(&self, off: usize) -> Option<u64> {
        Some(self.arg_u32(off)? as u64 | (self.arg_u32(off + 4)? as u64) << 32)
    }

    // The device model writes BO memory like DMA does: through the device's view, not a Rust
    // borrow of the host's.
    #[allow(clippy::mut_from_ref)]
    fn bytes_at(&self, addr: u64, what: &str) -> Result<&mut [u8], String> {
        let (p, len, handle) = self
            .memory
            .resolve(addr)
            .ok_or_else(|| format!("{what}: device address {addr:#x} is in no BO"))?;
        if !self.allowed.contains(&handle) {
            return Err(format!(
                "{what}: BO {handle} at {addr:#x} is not in the EXEC_CMD handle list"
            ));
        }
        // SAFETY: `resolve` returned a live range of `len` bytes inside a BO that the command
        // references. The host must not touch buffers of an in-flight command (the same rule as
        // for real device DMA); the emulator runs one kernel at a time under its lock.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }

    /// The instruction words: BO address at 0x08, word count at 0x10 (mlir-aie regmap).
    pub fn instructions(&self) -> Result<Vec<u32>, String> {
        let addr = self
            .arg_u64(0x08)
            .ok_or("regmap has no instruction address")?;
        let n = self
            .arg_u32(0x10)
            .ok_or("regmap has no instruction count")? as usize;
        let bytes = self.bytes_at(addr, "instructions")?;
        if bytes.len() < 4 * n {
            return Err(format!("{n} instruction words run past their BO"));
        }
        Ok(bytes[..4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Buffer argument `i` (address at 0x14 + 8·i) from its address to the end of its BO.
    pub fn buffer(&mut self, i: usize) -> Result<&mut [u8], String> {
        let addr = self
            .arg_u64(FIRST_BUFFER_ARG_OFFSET + 8 * i)
            .ok_or_else(|| format!("regmap has no buffer argument {i}"))?;
        self.bytes_at(addr, &format!("bo{i}"))
    }
}

/// How an injected fault changes a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobFault {
    None,
    /// Never completes (until the context is destroyed: ABORT).
    Hang,
    /// Completes in this state without running the kernel.
    State(CmdState),
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) cmd_bo: u32,
    pub(super) arg_bos: Vec<u32>,
    /// CLOCK_MONOTONIC ns at which it completes; `None` = hung.
    pub(super) complete_at: Option<i64>,
    pub(super) fault: JobFault,
}

pub(super) struct Context {
    /// Kernel per CU index; `None` for a PDI no kernel is registered for.
    pub(super) cus: Option<Vec<Option<KernelFn>>>,
    pub(super) next_seq: u64,
    pub(super) pending: VecDeque<Job>,
    /// Highest completed seq.
    pub(super) signaled: Option<u64>,
}

impl Context {
    pub(super) fn new() -> Self {
        Self {
            cus: None,
            next_seq: 0,
            pending: VecDeque::new(),
            signaled: None,
        }
    }
}

// As `bytes_at`: the firmware writes command headers through its own view of the BO.
#[allow(clippy::mut_from_ref)]
fn cmd_words(memory: &Memory, cmd_bo: u32) -> Option<&mut [u32]> {
    let (p, len) = memory.pages(cmd_bo)?;
    // SAFETY: the pages of a live CMD BO, page-aligned (so u32-aligned), `len` bytes. The host
    // does not write a submitted packet until the command completes (ring discipline).
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u32>(), len / 4) })
}

/// Write the final state into the header; on failure overwrite the payload with 0xFF as
/// `amdxdna_cmd_set_error` does.
pub(super) fn finish(memory: &Memory, cmd_bo: u32, state: CmdState) {
    let Some(words) = cmd_words(memory, cmd_bo) else {
        return;
    };
    let h = Header::decode(words[0]);
    if state != CmdState::Completed {
        let end = (1 + h.count as usize).min(words.len());
        words[1..end].fill(0xFFFF_FFFF);
    }
    words[0] = Header { state, ..h }.encode();
}

/// Run one job's kernel: its final state, and the reason when it is not COMPLETED.
pub(super) fn execute(memory: &Memory, ctx: &Context, job: &Job) -> (CmdState, Option<String>) {
    if let JobFault::State(s) = job.fault {
        return (s, Some(format!("injected final state {s:?}")));
    }
    let fail = |why: String| (CmdState::Error, Some(why));
    let Some(words) = cmd_words(memory, job.cmd_bo) else {
        return fail(format!("command BO {} is not a live CMD BO", job.cmd_bo));
    };
    let Some(packet) = DecodedStartCu::parse(words) else {
        return fail(format!(
            "malformed ERT_START_CU packet, header {:#010x}",
            words[0]
        ));
    };
    let cu = packet.cu_mask.trailing_zeros() as usize;
    let kernel = ctx
        .cus
        .as_ref()
        .and_then(|c| c.get(cu))
        .and_then(|k| k.clone());
    let Some(kernel) = kernel else {
        return fail(format!("no kernel registered for the PDI of CU {cu}"));
    };
    let mut call = KernelCall {
        regmap: &packet.regmap,
        memory,
        allowed: &job.arg_bos,
    };
    match kernel(&mut call) {
        Ok(()) => (CmdState::Completed, None),
        Err(why) => fail(why),
    }
}
