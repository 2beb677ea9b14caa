//! A small TXN v0.1 encoder (mlir-aie flavour: op-header bytes 1–2 zero, 7-word MASKWRITE) for
//! tests, the emulated programs and `profile-dispatch`: header, WRITE, BLOCKWRITE, MASKWRITE,
//! DDR_PATCH, TCT sync, and a whole shim transfer (BD + patch + queue push) as
//! `npu-instruction-stream.md` §9 lays it out.

use super::op::{Direction, OP_BLOCKWRITE, OP_DDR_PATCH, OP_MASKWRITE, OP_TCT, OP_WRITE};
use super::shim_bd::{ShimBd, BD_BASE, BD_STRIDE, CHANNEL_BASE};
use super::validate::{DDR_APERTURE, FIRMWARE_TRANSLATED_ARGS};

/// Builds a stream op by op; [`TxnBuilder::finish`] prepends the header.
#[derive(Clone, Debug)]
pub struct TxnBuilder {
    dev_gen: u8,
    cols: u8,
    ops: Vec<u32>,
    count: u32,
}

/// Address of shim column `col`'s register `offset`.
pub fn shim_addr(col: u8, offset: u32) -> u32 {
    (col as u32) << 25 | offset
}

/// Offset of the task queue of a shim channel.
pub fn queue_offset(dir: Direction, channel: u8) -> u32 {
    let base = CHANNEL_BASE + 8 * channel as u32;
    match dir {
        Direction::S2mm => base + 4,
        Direction::Mm2s => base + 0x10 + 4,
    }
}

impl TxnBuilder {
    /// A stream for device generation `dev_gen` (3 = npu1, 4 = npu2) with `cols` columns.
    pub fn new(dev_gen: u8, cols: u8) -> Self {
        Self {
            dev_gen,
            cols,
            ops: Vec::new(),
            count: 0,
        }
    }

    /// WRITE.
    pub fn write32(&mut self, addr: u32, value: u32) -> &mut Self {
        self.ops
            .extend_from_slice(&[OP_WRITE as u32, 0, addr, 0, value, 24]);
        self.count += 1;
        self
    }

    /// BLOCKWRITE of `data` from `addr`.
    pub fn blockwrite(&mut self, addr: u32, data: &[u32]) -> &mut Self {
        self.ops
            .extend_from_slice(&[OP_BLOCKWRITE as u32, 0, addr, 16 + 4 * data.len() as u32]);
        self.ops.extend_from_slice(data);
        self.count += 1;
        self
    }

    /// MASKWRITE (7 words).
    pub fn maskwrite(&mut self, addr: u32, value: u32, mask: u32) -> &mut Self {
        self.ops
            .extend_from_slice(&[OP_MASKWRITE as u32, 0, addr, 0, value, mask, 28]);
        self.count += 1;
        self
    }

    /// DDR_PATCH of BD word `reg_addr` with buffer `arg_idx` + `offset` bytes (adds the DDR
    /// aperture for `arg_idx ≥ 5`).
    pub fn ddr_patch(&mut self, reg_addr: u32, arg_idx: u32, offset: u64) -> &mut Self {
        let plus = if arg_idx as u64 >= FIRMWARE_TRANSLATED_ARGS {
            offset + DDR_APERTURE
        } else {
            offset
        };
        self.ops.extend_from_slice(&[
            OP_DDR_PATCH as u32,
            48,
            0,
            0,
            0,
            0,
            reg_addr,
            0,
            arg_idx,
            0,
            plus as u32,
            (plus >> 32) as u32,
        ]);
        self.count += 1;
        self
    }

    /// TCT sync on one shim channel.
    pub fn sync(&mut self, col: u8, dir: Direction, channel: u8) -> &mut Self {
        let d = match dir {
            Direction::S2mm => 0,
            Direction::Mm2s => 1,
        };
        self.ops.extend_from_slice(&[
            OP_TCT as u32,
            16,
            d | (col as u32) << 16,
            1 << 8 | 1 << 16 | (channel as u32) << 24,
        ]);
        self.count += 1;
        self
    }

    /// One shim transfer: BLOCKWRITE of `bd` (word 1 = `offset`, as mlir-aie's builds do),
    /// DDR_PATCH of its word 1 with buffer `arg_idx` + `offset`, and the queue push with
    /// `runs` runs and a completion token.
    #[allow(clippy::too_many_arguments)]
    pub fn shim_transfer(
        &mut self,
        col: u8,
        dir: Direction,
        channel: u8,
        bd_id: u8,
        bd: &ShimBd,
        arg_idx: u32,
        offset: u64,
        runs: u32,
    ) -> &mut Self {
        let bd_addr = shim_addr(col, BD_BASE + bd_id as u32 * BD_STRIDE);
        let mut words = bd.encode();
        words[1] = offset as u32 & !3;
        self.blockwrite(bd_addr, &words);
        self.ddr_patch(bd_addr + 4, arg_idx, offset);
        let push = bd_id as u32 & 0xF | (runs.saturating_sub(1) & 0xFF) << 16 | 1 << 31;
        self.write32(shim_addr(col, queue_offset(dir, channel)), push)
    }

    /// The stream: header (`0.1`, DevGen, 6 rows, columns, 1 memtile row, op count, bytes) and
    /// the ops.
    pub fn finish(&self) -> Vec<u32> {
        let bytes = 4 * (4 + self.ops.len()) as u32;
        let mut out = Vec::with_capacity(4 + self.ops.len());
        out.extend_from_slice(&[
            0x0600_0100 | (self.dev_gen as u32) << 16,
            0x100 | self.cols as u32,
            self.count,
            bytes,
        ]);
        out.extend_from_slice(&self.ops);
        out
    }
}

/// The stream of a one-column byte copy through the array: buffer 0 → MM2S0 → (array) →
/// S2MM0 → buffer 1, `bytes` (a multiple of 4) each, one linear BD per direction.
/// `rtp` values are written to core tile (0, 2) data memory at 0x0 first (run-time parameters).
pub fn copy_stream(dev_gen: u8, bytes: u32, rtp: &[u32]) -> Vec<u32> {
    let mut b = TxnBuilder::new(dev_gen, 1);
    if !rtp.is_empty() {
        b.blockwrite(2 << 20, rtp);
    }
    let words = bytes / 4;
    b.shim_transfer(0, Direction::Mm2s, 0, 0, &ShimBd::linear(words), 0, 0, 1);
    b.shim_transfer(0, Direction::S2mm, 0, 1, &ShimBd::linear(words), 1, 0, 1);
    b.sync(0, Direction::Mm2s, 0);
    b.sync(0, Direction::S2mm, 0);
    b.finish()
}
