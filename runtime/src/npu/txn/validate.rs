//! The validator: walks a parsed stream with a model of the shim DMA registers of every column
//! and turns it into a [`Plan`] (the tasks the shim DMAs will run, each with a snapshot of its BD
//! and its patched buffer), refusing anything the firmware or the DMA would get wrong.

use std::collections::BTreeMap;

use super::error::TxnError;
use super::op::{parse, Direction, Header, Op, MAX_COLS};
use super::shim_bd::{bd_register, channel_register, split_addr, ShimBd, BDS, BD_WORDS};

/// Bytes a single shim channel may move in one command before the interpreter refuses
/// (a bound for hostile streams; real streams move a few MiB).
pub const MAX_CHANNEL_BYTES: u64 = 1 << 30;
/// The DDR aperture the generator adds to `arg_plus` for `arg_idx ≥ 5`.
pub const DDR_APERTURE: u64 = 0x8000_0000;
/// Arguments whose aperture the firmware adds itself.
pub const FIRMWARE_TRANSLATED_ARGS: u64 = 5;
const TILE_SPACE: u64 = 1 << 20;

/// What the stream runs against.
#[derive(Clone, Copy, Debug)]
pub struct Limits<'a> {
    /// Byte length of each buffer argument, in runtime-sequence order (`arg_idx` 0 = the first
    /// buffer after opcode/instr/ninstr).
    pub arg_lens: &'a [u64],
    /// Columns of the hardware context's partition, if known (the header's `NumCols` is the
    /// device model the stream was compiled for; ops must stay inside both).
    pub partition_cols: Option<u8>,
}

/// A shim DMA channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel {
    /// Shim column.
    pub col: u8,
    /// Direction.
    pub dir: Direction,
    /// Channel number (0 or 1).
    pub channel: u8,
}

/// One task pushed on a shim channel: a snapshot of its BD at push time and the buffer bytes it
/// reads (MM2S) or writes (S2MM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// The channel.
    pub channel: Channel,
    /// BD id.
    pub bd_id: u8,
    /// The BD as it was when pushed.
    pub bd: ShimBd,
    /// Buffer argument index.
    pub arg_idx: usize,
    /// Byte offset of the BD's base inside the buffer.
    pub offset: u64,
    /// Runs (`Repeat_Count + 1`).
    pub runs: u32,
    /// Whether completion issues a token (a sync waits for it).
    pub token: bool,
    /// Index of the pushing op.
    pub op: u32,
}

impl Task {
    /// Bytes the task moves.
    pub fn bytes(&self) -> u64 {
        self.bd.length as u64 * 4 * self.runs as u64
    }
}

/// A register write outside the shim DMA (core/memtile registers, run-time parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterWrite {
    /// Register address.
    pub addr: u32,
    /// Value.
    pub value: u32,
    /// Bits written (all ones for WRITE/BLOCKWRITE).
    pub mask: u32,
}

/// Op counts and totals of a validated stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Ops by opcode.
    pub ops_by_opcode: BTreeMap<u8, u32>,
    /// DDR_PATCH count per argument index.
    pub patches_by_arg: BTreeMap<u64, u32>,
    /// Largest `arg_plus` (aperture removed) per argument index.
    pub max_offset_by_arg: BTreeMap<u64, u64>,
    /// Token-issuing tasks never awaited by a sync.
    pub unawaited: u32,
    /// Shim columns used.
    pub columns: Vec<u8>,
}

/// A validated stream, ready for [`super::execute`].
#[derive(Clone, Debug)]
pub struct Plan {
    /// The header.
    pub header: Header,
    /// Shim DMA tasks in push order.
    pub tasks: Vec<Task>,
    /// Writes to registers outside the shim DMA, in order.
    pub register_writes: Vec<RegisterWrite>,
    /// Counts.
    pub summary: Summary,
}

impl Plan {
    /// Bytes moved per channel, in channel order.
    pub fn channel_bytes(&self) -> BTreeMap<Channel, u64> {
        let mut m = BTreeMap::new();
        for t in &self.tasks {
            *m.entry(t.channel).or_insert(0) += t.bytes();
        }
        m
    }
}

#[derive(Clone, Copy, Default)]
struct BdState {
    words: [u32; BD_WORDS],
    written: bool,
    /// (arg_idx, byte offset) set by DDR_PATCH; cleared when word 1 or 2 is rewritten.
    patch: Option<(usize, u64)>,
    /// Token-issuing tasks on this BD not yet awaited.
    outstanding: u32,
}

/// Token-issuing tasks one channel may have outstanding (un-synced) at a time; the real
/// streams have at most 5 (1bit-MONSTER README §1.6).
pub const MAX_OUTSTANDING: usize = 32;
const CHANNELS: usize = MAX_COLS as usize * 4;

fn channel_index(c: Channel) -> usize {
    c.col as usize * 4 + (c.dir == Direction::Mm2s) as usize * 2 + c.channel as usize
}

/// Where the validator's findings go: a [`Plan`] (allocates) or counters only (does not).
trait Sink {
    fn opcode(&mut self, opcode: u8);
    fn patch(&mut self, arg_idx: u64, offset: u64);
    fn task(&mut self, task: Task);
    fn register_write(&mut self, w: RegisterWrite);
}

/// FIFO of outstanding BD ids of one channel, fixed capacity.
#[derive(Clone, Copy)]
struct Fifo {
    ids: [u8; MAX_OUTSTANDING],
    head: usize,
    len: usize,
}

impl Fifo {
    const EMPTY: Self = Self {
        ids: [0; MAX_OUTSTANDING],
        head: 0,
        len: 0,
    };
    fn push(&mut self, id: u8) -> bool {
        if self.len == MAX_OUTSTANDING {
            return false;
        }
        self.ids[(self.head + self.len) % MAX_OUTSTANDING] = id;
        self.len += 1;
        true
    }
    fn pop(&mut self) -> Option<u8> {
        (self.len > 0).then(|| {
            let id = self.ids[self.head];
            self.head = (self.head + 1) % MAX_OUTSTANDING;
            self.len -= 1;
            id
        })
    }
}

struct Machine<'a, S: Sink> {
    limits: Limits<'a>,
    cols: u32,
    rows: u32,
    bds: [[BdState; BDS]; MAX_COLS as usize],
    /// Outstanding token-issuing tasks per channel, as BD ids in push order.
    queues: [Fifo; CHANNELS],
    /// Bytes moved per channel.
    bytes: [u64; CHANNELS],
    sink: S,
    op: u32,
    word: usize,
}

/// Walk `words` with `sink`; returns the machine for its totals.
fn walk<'a, S: Sink>(
    words: &[u32],
    limits: &Limits<'a>,
    sink: S,
) -> Result<(Header, Machine<'a, S>), TxnError> {
    let stream = parse(words)?;
    let header = stream.header();
    let cols = header.cols.min(limits.partition_cols.unwrap_or(u8::MAX)) as u32;
    let mut m = Machine {
        limits: *limits,
        cols,
        rows: header.rows as u32,
        bds: [[BdState::default(); BDS]; MAX_COLS as usize],
        queues: [Fifo::EMPTY; CHANNELS],
        bytes: [0; CHANNELS],
        sink,
        op: 0,
        word: 0,
    };
    for op in stream.ops() {
        let op = op?;
        m.op = op.index;
        m.word = op.word;
        m.step(&op.op)?;
    }
    for (i, &bytes) in m.bytes.iter().enumerate() {
        if bytes > MAX_CHANNEL_BYTES {
            return Err(TxnError::TooMuchData {
                col: (i / 4) as u8,
                dir: if i % 4 >= 2 {
                    Direction::Mm2s
                } else {
                    Direction::S2mm
                },
                channel: (i % 2) as u8,
                bytes,
                limit: MAX_CHANNEL_BYTES,
            });
        }
    }
    Ok((header, m))
}

impl Sink for Plan {
    fn opcode(&mut self, opcode: u8) {
        *self.summary.ops_by_opcode.entry(opcode).or_insert(0) += 1;
    }
    fn patch(&mut self, arg_idx: u64, offset: u64) {
        let sum = &mut self.summary;
        *sum.patches_by_arg.entry(arg_idx).or_insert(0) += 1;
        let max = sum.max_offset_by_arg.entry(arg_idx).or_insert(0);
        *max = (*max).max(offset);
    }
    fn task(&mut self, task: Task) {
        self.tasks.push(task);
    }
    fn register_write(&mut self, w: RegisterWrite) {
        self.register_writes.push(w);
    }
}

/// Validate `words` (the whole stream, header included) against `limits` and build the
/// [`Plan`] the interpreter runs.
pub fn validate(words: &[u32], limits: &Limits<'_>) -> Result<Plan, TxnError> {
    let plan = Plan {
        header: Header {
            dev_gen: 0,
            rows: 0,
            cols: 0,
            mem_tile_rows: 0,
            num_ops: 0,
            txn_size: 0,
        },
        tasks: Vec::new(),
        register_writes: Vec::new(),
        summary: Summary::default(),
    };
    let (header, m) = walk(words, limits, plan)?;
    let unawaited = m.queues.iter().map(|q| q.len as u32).sum();
    let mut plan = m.sink;
    plan.header = header;
    let s = &mut plan.summary;
    s.unawaited = unawaited;
    s.columns = plan.tasks.iter().map(|t| t.channel.col).collect();
    s.columns.sort_unstable();
    s.columns.dedup();
    Ok(plan)
}

/// Totals of [`check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Ops.
    pub ops: u32,
    /// Shim DMA tasks.
    pub tasks: u32,
    /// Bytes the MM2S tasks read from host buffers.
    pub bytes_read: u64,
    /// Bytes the S2MM tasks write to host buffers.
    pub bytes_written: u64,
    /// Token-issuing tasks never awaited.
    pub unawaited: u32,
}

impl Sink for CheckReport {
    fn opcode(&mut self, _: u8) {
        self.ops += 1;
    }
    fn patch(&mut self, _: u64, _: u64) {}
    fn task(&mut self, task: Task) {
        self.tasks += 1;
        match task.channel.dir {
            Direction::Mm2s => self.bytes_read += task.bytes(),
            Direction::S2mm => self.bytes_written += task.bytes(),
        }
    }
    fn register_write(&mut self, _: RegisterWrite) {}
}

/// The same checks as [`validate`] without building a plan: allocates nothing (the check run
/// before every submission in debug builds).
pub fn check(words: &[u32], limits: &Limits<'_>) -> Result<CheckReport, TxnError> {
    let (_, m) = walk(words, limits, CheckReport::default())?;
    let unawaited = m.queues.iter().map(|q| q.len as u32).sum();
    Ok(CheckReport {
        unawaited,
        ..m.sink
    })
}

impl<S: Sink> Machine<'_, S> {
    fn check_addr(&self, addr: u64) -> Result<(u32, u32, u32), TxnError> {
        let (col, row, off) = split_addr(addr);
        if addr >> 32 != 0 || col >= self.cols || row >= self.rows {
            return Err(TxnError::RegisterOutOfRange {
                op: self.op,
                word: self.word,
                addr,
                col,
                row,
                cols: self.cols,
                rows: self.rows,
            });
        }
        Ok((col, row, off))
    }

    fn bad(&self, field: &'static str, value: u64) -> TxnError {
        TxnError::BadField {
            op: self.op,
            word: self.word,
            field,
            value,
        }
    }

    fn step(&mut self, op: &Op<'_>) -> Result<(), TxnError> {
        let opcode = match op {
            Op::Write { .. } => super::op::OP_WRITE,
            Op::BlockWrite { .. } => super::op::OP_BLOCKWRITE,
            Op::MaskWrite { .. } => super::op::OP_MASKWRITE,
            Op::MaskPoll { busy: false, .. } => super::op::OP_MASKPOLL,
            Op::MaskPoll { busy: true, .. } => super::op::OP_MASKPOLL_BUSY,
            Op::Noop => super::op::OP_NOOP,
            Op::Preempt { .. } => super::op::OP_PREEMPT,
            Op::LoadPdi { .. } => super::op::OP_LOADPDI,
            Op::Sync { .. } => super::op::OP_TCT,
            Op::DdrPatch { .. } => super::op::OP_DDR_PATCH,
            Op::Skipped { opcode } => *opcode,
        };
        self.sink.opcode(opcode);
        match *op {
            Op::Write { addr, value } => self.write(addr, value, u32::MAX),
            Op::MaskWrite { addr, value, mask } => self.write(addr, value, mask),
            Op::BlockWrite { addr, data } => {
                self.check_addr(addr as u64)?;
                let end = (addr as u64 & (TILE_SPACE - 1)) + 4 * data.len() as u64;
                if end > TILE_SPACE {
                    return Err(TxnError::BlockWriteCrossesTile {
                        op: self.op,
                        word: self.word,
                        addr,
                        words: data.len(),
                    });
                }
                for (i, &v) in data.iter().enumerate() {
                    self.write(addr + 4 * i as u32, v, u32::MAX)?;
                }
                Ok(())
            }
            Op::MaskPoll { addr, .. } => self.check_addr(addr as u64).map(|_| ()),
            Op::Noop | Op::Preempt { .. } | Op::Skipped { .. } => Ok(()),
            Op::LoadPdi { id, .. } => Err(self.bad(
                "LOADPDI pdi id (reconfiguring the array inside a command is not supported)",
                id as u64,
            )),
            Op::Sync {
                dir,
                row,
                col,
                row_num,
                col_num,
                channel,
            } => self.sync(dir, row, col, row_num, col_num, channel),
            Op::DdrPatch {
                reg_addr,
                arg_idx,
                arg_plus,
            } => self.patch(reg_addr, arg_idx, arg_plus),
        }
    }

    fn write(&mut self, addr: u32, value: u32, mask: u32) -> Result<(), TxnError> {
        let (col, row, off) = self.check_addr(addr as u64)?;
        if row != 0 {
            self.sink
                .register_write(RegisterWrite { addr, value, mask });
            return Ok(());
        }
        if let Some((bd, w)) = bd_register(off) {
            let s = &mut self.bds[col as usize][bd];
            if s.outstanding > 0 {
                return Err(TxnError::BdRewrittenWhileQueued {
                    op: self.op,
                    word: self.word,
                    col: col as u8,
                    bd: bd as u8,
                });
            }
            s.words[w] = (s.words[w] & !mask) | (value & mask);
            s.written = true;
            if w == 1 || w == 2 && mask & 0xFFFF != 0 {
                s.patch = None; // a later write of the address replaces the patched one
            }
            return Ok(());
        }
        match channel_register(off) {
            Some((dir, channel, true)) => {
                if mask != u32::MAX {
                    return Err(self.bad("masked write of a task queue", off as u64));
                }
                self.push(
                    Channel {
                        col: col as u8,
                        dir,
                        channel,
                    },
                    value,
                )
            }
            // Control registers (Controller_ID, pause bits) and other shim registers: no data
            // effect in this model.
            _ => {
                self.sink
                    .register_write(RegisterWrite { addr, value, mask });
                Ok(())
            }
        }
    }

    fn patch(&mut self, reg_addr: u64, arg_idx: u64, arg_plus: u64) -> Result<(), TxnError> {
        let target = || TxnError::PatchTarget {
            op: self.op,
            word: self.word,
            reg_addr,
        };
        if reg_addr >> 32 != 0 {
            return Err(target());
        }
        let (col, row, off) = self.check_addr(reg_addr)?;
        let Some((bd, 1)) = bd_register(off).filter(|_| row == 0) else {
            return Err(target());
        };
        let args = self.limits.arg_lens.len();
        if arg_idx >= args as u64 {
            return Err(TxnError::PatchArgIndex {
                op: self.op,
                word: self.word,
                arg_idx,
                args,
            });
        }
        let offset = if arg_idx >= FIRMWARE_TRANSLATED_ARGS {
            arg_plus
                .checked_sub(DDR_APERTURE)
                .ok_or(TxnError::PatchAperture {
                    op: self.op,
                    word: self.word,
                    arg_idx,
                    arg_plus,
                })?
        } else {
            arg_plus
        };
        let s = &mut self.bds[col as usize][bd];
        if s.outstanding > 0 {
            return Err(TxnError::BdRewrittenWhileQueued {
                op: self.op,
                word: self.word,
                col: col as u8,
                bd: bd as u8,
            });
        }
        s.patch = Some((arg_idx as usize, offset));
        self.sink.patch(arg_idx, offset);
        Ok(())
    }

    fn push(&mut self, channel: Channel, value: u32) -> Result<(), TxnError> {
        let bd_id = (value & 0xF) as u8;
        let runs = ((value >> 16) & 0xFF) + 1;
        let token = value >> 31 == 1;
        if value & 0x7F00_FFF0 != 0 {
            return Err(self.bad("task-queue reserved bits", value as u64));
        }
        let s = self.bds[channel.col as usize][bd_id as usize];
        let bad_task = |why: String| TxnError::BadTask {
            op: self.op,
            word: self.word,
            col: channel.col,
            dir: channel.dir,
            channel: channel.channel,
            bd: bd_id,
            why,
        };
        if !s.written {
            return Err(bad_task("was never written".into()));
        }
        let bd = ShimBd::decode(&s.words);
        if !bd.valid {
            return Err(bad_task("is not marked valid (word 7 bit 25)".into()));
        }
        if bd.length == 0 {
            return Err(bad_task("has a length of 0 words".into()));
        }
        if bd.use_next {
            return Err(bad_task(format!(
                "chains to BD {} (Use_Next_BD): BD chains are not supported",
                bd.next_bd
            )));
        }
        if bd.lock_acquire {
            return Err(bad_task(
                "acquires a lock: shim BD locks are not supported".into(),
            ));
        }
        if bd.packet {
            return Err(bad_task("uses packet mode, which is not supported".into()));
        }
        if !bd.is_linear() && bd.d1_wrap == 0 {
            return Err(bad_task(
                "has D0_Wrap > 0 but D1_Wrap = 0 (no defined pattern)".into(),
            ));
        }
        let Some((arg_idx, offset)) = s.patch else {
            return Err(bad_task(
                "has no DDR_PATCH since its address was written: it would address raw memory, not a buffer"
                    .into(),
            ));
        };
        let max = bd.max_word_offset(runs).expect("length and runs ≥ 1");
        let len = self.limits.arg_lens[arg_idx];
        let end = offset
            .checked_add(4 * (max + 1))
            .filter(|&e| e <= len)
            .ok_or(TxnError::BdOutOfBounds {
                op: self.op,
                word: self.word,
                col: channel.col,
                bd: bd_id,
                arg_idx,
                first: offset,
                end: offset.saturating_add(4 * (max + 1)),
                len,
            })?;
        debug_assert!(end <= len);
        if offset % 4 != 0 {
            return Err(bad_task(format!(
                "addresses byte {offset}, not 4-byte aligned"
            )));
        }
        if token {
            if !self.queues[channel_index(channel)].push(bd_id) {
                return Err(bad_task(format!(
                    "would be the {}th outstanding token-issuing task of its channel (limit {MAX_OUTSTANDING})",
                    MAX_OUTSTANDING + 1
                )));
            }
            self.bds[channel.col as usize][bd_id as usize].outstanding += 1;
        }
        let task = Task {
            channel,
            bd_id,
            bd,
            arg_idx,
            offset,
            runs,
            token,
            op: self.op,
        };
        self.bytes[channel_index(channel)] += task.bytes();
        self.sink.task(task);
        Ok(())
    }

    fn sync(
        &mut self,
        dir: Direction,
        row: u8,
        col: u8,
        row_num: u8,
        col_num: u8,
        channel: u8,
    ) -> Result<(), TxnError> {
        if row != 0 || row_num != 1 {
            return Err(self.bad(
                "sync row/row_num (only shim-tile channels, row 0 × 1, are supported)",
                (row as u64) << 8 | row_num as u64,
            ));
        }
        if col_num == 0 || col as u32 + col_num as u32 > self.cols {
            return Err(self.bad("sync columns", (col as u64) << 8 | col_num as u64));
        }
        if channel > 1 {
            return Err(self.bad("sync channel", channel as u64));
        }
        for c in col..col + col_num {
            let ch = Channel {
                col: c,
                dir,
                channel,
            };
            let bd = self.queues[channel_index(ch)]
                .pop()
                .ok_or(TxnError::SyncWithoutTask {
                    op: self.op,
                    word: self.word,
                    col: c,
                    dir,
                    channel,
                })?;
            self.bds[c as usize][bd as usize].outstanding -= 1;
        }
        Ok(())
    }
}
