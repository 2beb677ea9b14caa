//! Command submission and completion (npu-driver.md §2.7, §2.8): a ring of up to 4 command BOs
//! per context, each with a prebuilt packet; EXEC_CMD with the handle list; completion by
//! SYNCOBJ_TIMELINE_WAIT with an absolute CLOCK_MONOTONIC deadline; header state check.
//!
//! Rules kept here: a slot is reused only after its command reached a final state; a packet is
//! written only when it differs from the slot's last one or after the slot's command failed (the
//! driver overwrites a failed payload with 0xFF); otherwise only the header state is reset to
//! NEW. Every submitted seq is waited at most once ([`NpuError::UnknownTicket`] otherwise) and
//! stays pending after a timeout, so no request is lost or completed twice. No allocation after
//! construction.
//!
//! Timeline point 0 (a context's first command) is special in the kernel: waiting on it waits for
//! the latest submitted command (npu-driver.md §2.8). Commands complete in order, so that is
//! correct, only possibly later than necessary for the very first ticket.
//!
//! Bring-up rules (npu-bringup.md §1.2):
//! - F1: a fence that signals while the header is not final (pre-fix kernels leave NEW on a
//!   timed-out or cancelled job) is a final failure: the ticket is removed, the slot freed and
//!   its payload rebuilt; [`CommandRing::drain`] advances past it.
//! - F2: a regmap over [`PORTABLE_REGMAP_WORDS`] words is refused unless the module parameter
//!   `force_cmdlist` reads `Y` (without it the driver truncates or refuses the payload).
//! - F5: `ERT_START_NPU` is refused ([`NpuError::Unsupported`]).
//! - F6: EINTR from EXEC_CMD (before queuing) and from the wait (absolute deadline) is retried.
//! - F7: the handle list is de-duplicated (the driver locks each BO once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bo::{MappedBo, CMD_BO_SIZE};
use super::clock::deadline_after;
use super::device::Device;
use super::error::{ioctl_err, NpuError, Result};
use super::ert::{
    chain_slot_bytes, chain_slot_fits, CmdChain, CmdState, DecodedChain, Header, StartCu, StartNpu,
    CHAIN_BUFFER_BYTES, ERT_CMD_CHAIN,
};
use super::hwctx::HwContext;
use rustix::io::Errno;

/// Commands in flight per context (`HWCTX_MAX_CMDS`).
pub const MAX_DEPTH: usize = 4;
/// Regmap words the non-cmdlist path carries (`execute_buffer_req.payload[19]`): 7 buffers with
/// the mlir-aie layout.
pub const PORTABLE_REGMAP_WORDS: usize = 19;
pub use super::driver::MAX_EINTR_RETRIES;
/// Handles an EXEC_CMD takes (`MAX_ARG_COUNT`).
pub const MAX_ARG_HANDLES: usize = 4095;

/// A packet to submit.
#[derive(Clone, Copy, Debug)]
pub enum Packet<'a> {
    /// `ERT_START_CU`.
    StartCu(StartCu<'a>),
    /// `ERT_START_NPU`: refused by [`CommandRing::submit`] (F5).
    StartNpu(StartNpu<'a>),
}

/// A submitted command: wait on it with [`CommandRing::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
    slot: usize,
}

impl Ticket {
    /// The driver's sequence number for the command.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

struct Slot {
    bo: MappedBo,
    /// Sub-command BOs of a chain submitted from this slot (empty for a ring without chains).
    subs: Vec<MappedBo>,
    /// The packet last written to the BO (valid only when `reusable`).
    last: Vec<u32>,
    reusable: bool,
    in_flight: Option<u64>,
}

/// The submission ring of one hardware context.
pub struct CommandRing {
    ctx: Arc<HwContext>,
    slots: Vec<Slot>,
    next: usize,
    pending: VecDeque<Ticket>,
    scratch: Vec<u32>,
    handles: Vec<u32>,
    /// Handles of the sub-command BOs of the chain being built.
    sub_handles: Vec<u32>,
    timeout: Duration,
    force_cmdlist: bool,
}

impl std::fmt::Debug for CommandRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRing")
            .field("depth", &self.slots.len())
            .field("pending", &self.pending)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CommandRing {
    /// `depth` (1..=4) command BOs for `ctx`; waits give up after `timeout`.
    pub fn new(
        device: &Device,
        ctx: Arc<HwContext>,
        depth: usize,
        timeout: Duration,
    ) -> Result<Self> {
        Self::with_chains(device, ctx, depth, timeout, 0)
    }

    /// As [`CommandRing::new`], with `max_chain` sub-command BOs per slot preallocated for
    /// [`CommandRing::submit_chain`] (0: no chains).
    pub fn with_chains(
        device: &Device,
        ctx: Arc<HwContext>,
        depth: usize,
        timeout: Duration,
        max_chain: usize,
    ) -> Result<Self> {
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(NpuError::InvalidRequest {
                what: format!("ring depth {depth}, must be 1..={MAX_DEPTH}"),
            });
        }
        let slots = (0..depth)
            .map(|_| {
                Ok(Slot {
                    bo: MappedBo::command(device)?,
                    subs: (0..max_chain)
                        .map(|_| MappedBo::command(device))
                        .collect::<Result<_>>()?,
                    last: Vec::with_capacity(CMD_BO_SIZE / 4),
                    reusable: false,
                    in_flight: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            ctx,
            slots,
            next: 0,
            pending: VecDeque::with_capacity(MAX_DEPTH),
            scratch: vec![0; CMD_BO_SIZE / 4],
            handles: Vec::with_capacity(16),
            sub_handles: Vec::with_capacity(max_chain),
            timeout,
            force_cmdlist: device.info().force_cmdlist == Some(true),
        })
    }

    /// Commands submitted and not yet waited.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The oldest pending ticket.
    pub fn oldest(&self) -> Option<Ticket> {
        self.pending.front().copied()
    }

    /// Whether a slot is free for [`CommandRing::submit`].
    pub fn has_free_slot(&self) -> bool {
        self.slots[self.next].in_flight.is_none()
    }

    /// Write `packet` into the next slot (only if it changed or the slot failed before; else
    /// just reset the header to NEW) and EXEC_CMD it with `arg_handles` (every BO the command
    /// references). Fails with [`NpuError::InvalidRequest`] if all slots are in flight.
    pub fn submit(&mut self, packet: &Packet<'_>, arg_handles: &[u32]) -> Result<Ticket> {
        let index = self.next;
        let slot = &mut self.slots[index];
        if slot.in_flight.is_some() {
            return Err(NpuError::InvalidRequest {
                what: format!(
                    "all {} command slots are in flight; wait first",
                    self.slots.len()
                ),
            });
        }
        let p = match packet {
            Packet::StartCu(p) => p,
            Packet::StartNpu(_) => {
                return Err(NpuError::Unsupported {
                    what: "ERT_START_NPU: it runs host-patched control code from aiebu, not an insts.bin; use ERT_START_CU".into(),
                })
            }
        };
        if p.regmap_words() > PORTABLE_REGMAP_WORDS && !self.force_cmdlist {
            return Err(NpuError::Unsupported {
                what: format!(
                    "a START_CU regmap of {} words: without force_cmdlist=Y the driver carries {PORTABLE_REGMAP_WORDS} (truncated or refused)",
                    p.regmap_words()
                ),
            });
        }
        if arg_handles.len() > MAX_ARG_HANDLES {
            return Err(NpuError::InvalidRequest {
                what: format!(
                    "{} BO handles, EXEC_CMD takes {MAX_ARG_HANDLES}",
                    arg_handles.len()
                ),
            });
        }
        let n = p
            .write(&mut self.scratch)
            .map_err(|e| NpuError::InvalidRequest {
                what: format!("command packet: {e}"),
            })?;
        self.handles.clear();
        self.handles.extend_from_slice(arg_handles);
        self.handles.sort_unstable();
        self.handles.dedup();
        let words = slot.bo.words_mut();
        if slot.reusable && slot.last[..] == self.scratch[..n] {
            // Same packet as last time and the slot completed cleanly: only the state changes.
            let h = Header::decode(words[0]);
            words[0] = Header {
                state: CmdState::New,
                ..h
            }
            .encode();
        } else {
            // Payload first, header last.
            words[1..n].copy_from_slice(&self.scratch[1..n]);
            words[0] = self.scratch[0];
            slot.last.clear();
            slot.last.extend_from_slice(&self.scratch[..n]);
        }
        slot.reusable = false;
        self.exec(index)
    }

    /// EXEC_CMD of slot `index` (its packet written, `self.handles` set), retried on EINTR;
    /// the slot is then in flight under the returned ticket and the ring moves on.
    fn exec(&mut self, index: usize) -> Result<Ticket> {
        let slot = &mut self.slots[index];
        let mut retries = 0;
        let seq = loop {
            match self
                .ctx
                .driver()
                .exec_cmd(self.ctx.handle(), slot.bo.handle(), &self.handles)
            {
                // Interrupted before the job was queued: submit again.
                Err(e) if e == Errno::INTR && retries < MAX_EINTR_RETRIES => retries += 1,
                r => break r.map_err(ioctl_err("EXEC_CMD"))?,
            }
        };
        slot.in_flight = Some(seq);
        let ticket = Ticket { seq, slot: index };
        self.pending.push_back(ticket);
        self.next = (self.next + 1) % self.slots.len();
        Ok(ticket)
    }

    /// Most sub-commands [`CommandRing::submit_chain`] takes.
    pub fn max_chain(&self) -> usize {
        self.slots[0].subs.len()
    }

    /// Submit `commands` as one `ERT_CMD_CHAIN` (npu-driver.md §2.7; [`CmdChain`]): each
    /// `ERT_START_CU` packet into its own preallocated sub-command BO, the chain packet naming
    /// them into the next slot, one EXEC_CMD whose handle list is `arg_handles` (every BO any
    /// sub-command references; the sub-command BOs themselves the driver looks up by handle).
    /// The sub-commands run in order on the device, so a later one may read what an earlier
    /// one wrote; one ticket covers them all.
    ///
    /// Refused here ([`NpuError::InvalidRequest`]) rather than by the driver: an empty chain,
    /// more commands than the ring preallocated, and a chain whose slots do not fit the
    /// driver's 4 KiB chain buffer under the stricter (6.14) rule.
    pub fn submit_chain<'a>(
        &mut self,
        commands: impl IntoIterator<Item = StartCu<'a>>,
        arg_handles: &[u32],
    ) -> Result<Ticket> {
        let index = self.next;
        let depth = self.slots.len();
        let slot = &mut self.slots[index];
        let bad = |what: String| Err(NpuError::InvalidRequest { what });
        if slot.in_flight.is_some() {
            return bad(format!(
                "all {depth} command slots are in flight; wait first"
            ));
        }
        if arg_handles.len() > MAX_ARG_HANDLES {
            return bad(format!(
                "{} BO handles, EXEC_CMD takes {MAX_ARG_HANDLES}",
                arg_handles.len()
            ));
        }
        let mut offset = 0;
        self.sub_handles.clear();
        let room = slot.subs.len();
        for (i, p) in commands.into_iter().enumerate() {
            let Some(sub) = slot.subs.get_mut(i) else {
                return bad(format!(
                    "a chain of more than {room} commands, this ring takes {room}"
                ));
            };
            if !chain_slot_fits(offset, 4 * p.regmap_words(), true) {
                return bad(format!(
                    "chain command {i} does not fit the driver's {CHAIN_BUFFER_BYTES}-byte chain buffer"
                ));
            }
            offset += chain_slot_bytes(p.regmap_words());
            let words = sub.words_mut();
            // Header last (the packet is complete before it says NEW).
            let n = p
                .write(&mut self.scratch)
                .map_err(|e| NpuError::InvalidRequest {
                    what: format!("chain command {i}: {e}"),
                })?;
            words[1..n].copy_from_slice(&self.scratch[1..n]);
            words[0] = self.scratch[0];
            self.sub_handles.push(sub.handle());
        }
        if self.sub_handles.is_empty() {
            return bad(format!("an empty chain, this ring takes 1..={room}"));
        }
        let n = CmdChain {
            commands: &self.sub_handles,
        }
        .write(&mut self.scratch)
        .map_err(|e| NpuError::InvalidRequest {
            what: format!("command chain: {e}"),
        })?;
        let words = slot.bo.words_mut();
        words[1..n].copy_from_slice(&self.scratch[1..n]);
        words[0] = self.scratch[0];
        // The slot no longer holds the single packet `last` describes.
        slot.reusable = false;
        slot.last.clear();
        self.handles.clear();
        self.handles.extend_from_slice(arg_handles);
        self.handles.sort_unstable();
        self.handles.dedup();
        self.exec(index)
    }

    /// Wait until `ticket`'s command completes and check its state.
    ///
    /// - `Ok(())`: COMPLETED.
    /// - [`NpuError::Timeout`]: the deadline passed; the command stays pending (wait again).
    /// - [`NpuError::CommandFailed`]: ERROR (5), ABORT (6), TIMEOUT (8) or any other final
    ///   state, or a signalled fence with a non-final header (a pre-fix kernel's killed job, F1);
    ///   the slot is freed and its payload will be rebuilt.
    /// - [`NpuError::UnknownTicket`]: not pending here (already waited, or another ring's).
    pub fn wait(&mut self, ticket: Ticket) -> Result<()> {
        let pos = self
            .pending
            .iter()
            .position(|t| *t == ticket)
            .ok_or(NpuError::UnknownTicket { seq: ticket.seq })?;
        let slot = &self.slots[ticket.slot];
        let mut state = CmdState::from_bits(slot.bo.read_word_volatile(0));
        if !state.is_final() {
            let started = Instant::now();
            let deadline = deadline_after(self.timeout);
            let mut retries = 0;
            loop {
                match self
                    .ctx
                    .driver()
                    .timeline_wait(self.ctx.syncobj(), ticket.seq, deadline)
                {
                    Ok(()) => break,
                    Err(e) if e == Errno::TIME => {
                        return Err(NpuError::Timeout {
                            seq: ticket.seq,
                            waited_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                    // A signal: the deadline is absolute, so waiting again is exact.
                    Err(e) if e == Errno::INTR && retries < MAX_EINTR_RETRIES => retries += 1,
                    Err(e) => return Err(ioctl_err("SYNCOBJ_TIMELINE_WAIT")(e)),
                }
            }
            // Signalled. A header that is still not final means the driver ended the job
            // without writing a state (F1): final, and failed.
            state = CmdState::from_bits(slot.bo.read_word_volatile(0));
        }
        self.pending.remove(pos);
        let slot = &mut self.slots[ticket.slot];
        slot.in_flight = None;
        if state == CmdState::Completed {
            slot.reusable = true;
            Ok(())
        } else {
            // The driver overwrote the payload (ERROR/ABORT/TIMEOUT) or the job never ran: the
            // next use of the slot rewrites the whole packet.
            slot.reusable = false;
            if Header::decode(slot.bo.read_word_volatile(0)).opcode == ERT_CMD_CHAIN {
                return Err(NpuError::ChainFailed {
                    seq: ticket.seq,
                    state,
                    index: slot.bo.read_word_volatile(DecodedChain::ERROR_INDEX_WORD),
                });
            }
            Err(NpuError::CommandFailed {
                seq: ticket.seq,
                state,
            })
        }
    }

    /// Wait for every pending command, oldest first; returns the first error after trying all.
    /// Stops at a command that times out (it stays pending: do not spin on it); every other
    /// outcome removes the ticket, so this always ends.
    pub fn drain(&mut self) -> Result<()> {
        let mut first = None;
        while let Some(t) = self.oldest() {
            if let Err(e) = self.wait(t) {
                let timed_out = matches!(e, NpuError::Timeout { .. });
                first.get_or_insert(e);
                if timed_out {
                    break; // still pending; do not spin on it
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The context this ring submits to.
    pub fn context(&self) -> &Arc<HwContext> {
        &self.ctx
    }
}
