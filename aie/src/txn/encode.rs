//! The op encoder (§1-§4, §9-§10).

/// NPU generation, as the TXN header's DevGen byte says it (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// Phoenix / Hawk Point, AIE2 (`npu1`): DevGen 3, largest shim burst 256 B.
    Npu1,
    /// Strix / Krackan, AIE2P (`npu2`): DevGen 4, largest shim burst 512 B.
    Npu2,
}

impl Generation {
    /// The header's DevGen byte (mlir-aie's values).
    pub fn dev_gen(self) -> u32 {
        match self {
            Self::Npu1 => 3,
            Self::Npu2 => 4,
        }
    }

    /// Burst_Length encoding of the largest burst (§7): 2 = 256 B on npu1, 3 = 512 B on npu2.
    pub fn max_burst(self) -> u8 {
        match self {
            Self::Npu1 => 2,
            Self::Npu2 => 3,
        }
    }
}

/// The device model a stream is written for: generation and partition columns (header w1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Generation.
    pub generation: Generation,
    /// Columns of the device model (`npu1` 4, `npu2` 8, `_Ncol` variants N).
    pub cols: u8,
}

impl Target {
    /// `npu1`: Phoenix / Hawk Point, 4 usable columns.
    pub const NPU1: Target = Target {
        generation: Generation::Npu1,
        cols: 4,
    };
    /// `npu2`: Strix class, 8 columns.
    pub const NPU2: Target = Target {
        generation: Generation::Npu2,
        cols: 8,
    };
}

/// `col<<25 | row<<20 | offset` (§4).
#[inline]
pub const fn tile_address(col: u8, row: u8, offset: u32) -> u32 {
    (col as u32) << 25 | (row as u32) << 20 | (offset & 0xF_FFFF)
}

/// Word 0 of shim BD `bd` in column `col` (§6).
#[inline]
pub const fn shim_bd_address(col: u8, bd: u8) -> u32 {
    tile_address(col, 0, 0x1D000 + bd as u32 * 0x20)
}

/// DMA direction of a shim channel (the TCT op's direction byte, §3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Array → DDR (0).
    S2mm,
    /// DDR → array (1).
    Mm2s,
}

impl Direction {
    fn code(self) -> u32 {
        match self {
            Self::S2mm => 0,
            Self::Mm2s => 1,
        }
    }
}

/// Control register of shim channel `chan` (0/1) of `dir` in column `col` (§10).
#[inline]
pub const fn shim_ctrl_address(col: u8, dir: Direction, chan: u8) -> u32 {
    let base = match dir {
        Direction::S2mm => 0x1D200,
        Direction::Mm2s => 0x1D210,
    };
    tile_address(col, 0, base + 8 * chan as u32)
}

/// Task queue of a shim channel: control + 4 (§10).
#[inline]
pub const fn shim_queue_address(col: u8, dir: Direction, chan: u8) -> u32 {
    shim_ctrl_address(col, dir, chan) + 4
}

/// Controller_ID MASKWRITE before a token push, as the 2026 mlir-aie streams in
/// `../shared/npu-fixtures/1bit-monster` write it: value `0x0F00` (id 15) under mask `0x1F00`.
pub const CONTROLLER_ID_VALUE: u32 = 0x0F00;
/// See [`CONTROLLER_ID_VALUE`].
pub const CONTROLLER_ID_MASK: u32 = 0x1F00;

/// A TCT wait (§3.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sync {
    /// Channel direction.
    pub dir: Direction,
    /// Column.
    pub col: u8,
    /// Row (0 = shim).
    pub row: u8,
    /// Channel.
    pub chan: u8,
    /// Columns waited for, from `col` (mlir-aie writes 1).
    pub cols: u8,
    /// Rows waited for (mlir-aie writes 1).
    pub rows: u8,
}

impl Sync {
    /// The wait mlir-aie emits for a `dma_wait` on a shim channel.
    pub fn shim(dir: Direction, col: u8, chan: u8) -> Sync {
        Sync {
            dir,
            col,
            row: 0,
            chan,
            cols: 1,
            rows: 1,
        }
    }
}

/// A TXN v0.1 stream under construction.
#[derive(Clone, Debug)]
pub struct Txn {
    target: Target,
    words: Vec<u32>,
    ops: u32,
}

impl Txn {
    /// An empty stream for `target`.
    pub fn new(target: Target) -> Txn {
        Txn {
            target,
            words: vec![0; 4],
            ops: 0,
        }
    }

    /// The target this stream is written for.
    pub fn target(&self) -> Target {
        self.target
    }

    fn op(&mut self, words: &[u32]) {
        self.words.extend_from_slice(words);
        self.ops += 1;
    }

    /// WRITE (0): `{0, 0, addr, 0, value, 24}` (§3.1).
    pub fn write32(&mut self, addr: u32, value: u32) {
        self.op(&[0, 0, addr, 0, value, 24]);
    }

    /// WRITE with mlir-aie's `column`/`row` attributes: the address's upper bits are replaced.
    pub fn write32_at(&mut self, col: u8, row: u8, addr: u32, value: u32) {
        self.write32(tile_address(col, row, addr), value);
    }

    /// BLOCKWRITE (1) with w1 = 0 (DMA lowering form, §3.2).
    pub fn blockwrite(&mut self, addr: u32, data: &[u32]) {
        self.blockwrite_raw(0, addr, data);
    }

    /// BLOCKWRITE with `column`/`row` attributes: w1 = `col | row<<8`, address bits replaced.
    pub fn blockwrite_at(&mut self, col: u8, row: u8, addr: u32, data: &[u32]) {
        self.blockwrite_raw(
            col as u32 | (row as u32) << 8,
            tile_address(col, row, addr),
            data,
        );
    }

    fn blockwrite_raw(&mut self, w1: u32, addr: u32, data: &[u32]) {
        self.words
            .extend_from_slice(&[1, w1, addr, 16 + 4 * data.len() as u32]);
        self.words.extend_from_slice(data);
        self.ops += 1;
    }

    /// MASKWRITE (3), mlir-aie's 7-word form (§3.3).
    pub fn maskwrite32(&mut self, addr: u32, value: u32, mask: u32) {
        self.op(&[3, 0, addr, 0, value, mask, 28]);
    }

    /// MASKPOLL (4): wait until `(reg & mask) == value` (§3.4).
    pub fn maskpoll32(&mut self, addr: u32, value: u32, mask: u32) {
        self.op(&[4, 0, addr, 0, value, mask, 28]);
    }

    /// NOOP (5).
    pub fn noop(&mut self) {
        self.op(&[5]);
    }

    /// PREEMPT (6) at `level` (0-3, §3.6).
    pub fn preempt(&mut self, level: u8) {
        self.op(&[6 | (level as u32) << 8]);
    }

    /// TCT sync (0x80, §3.8).
    pub fn sync(&mut self, s: Sync) {
        let w2 = s.dir.code() | (s.row as u32) << 8 | (s.col as u32) << 16;
        let w3 = (s.rows as u32) << 8 | (s.cols as u32) << 16 | (s.chan as u32) << 24;
        self.op(&[0x80, 16, w2, w3]);
    }

    /// DDR_PATCH (0x81, §3.9, §5): `regaddr` = the BD's address word, buffer argument `arg_idx`
    /// (0 = first runtime-sequence buffer), `arg_plus` bytes. For `arg_idx ≥ 5` the DDR
    /// aperture `0x80000000` is added to `arg_plus` (§5 rule 2).
    pub fn ddr_patch(&mut self, regaddr: u32, arg_idx: u32, arg_plus: u64) {
        let plus = if arg_idx >= 5 {
            arg_plus + 0x8000_0000
        } else {
            arg_plus
        };
        self.op(&[
            0x81,
            48,
            0,
            0,
            0,
            0,
            regaddr,
            0,
            arg_idx,
            0,
            plus as u32,
            (plus >> 32) as u32,
        ]);
    }

    /// Push a task on a shim channel (§9 steps 3-4): with a token, first the Controller_ID
    /// MASKWRITE, then the queue WRITE `bd | (runs − 1)<<16 | token<<31`.
    pub fn push_shim_task(
        &mut self,
        col: u8,
        dir: Direction,
        chan: u8,
        bd: u8,
        runs: u16,
        token: bool,
    ) {
        if token {
            let ctrl = shim_ctrl_address(col, dir, chan);
            self.maskwrite32(ctrl, CONTROLLER_ID_VALUE, CONTROLLER_ID_MASK);
        }
        let value = bd as u32 | ((runs as u32 - 1) & 0xFF) << 16 | (token as u32) << 31;
        self.write32(shim_queue_address(col, dir, chan), value);
    }

    /// Ops so far.
    pub fn op_count(&self) -> u32 {
        self.ops
    }

    /// The finished stream: header (§1) + ops.
    pub fn finish(mut self) -> Vec<u32> {
        let g = self.target.generation.dev_gen();
        self.words[0] = 1 << 8 | g << 16 | 6 << 24;
        self.words[1] = self.target.cols as u32 | 1 << 8;
        self.words[2] = self.ops;
        self.words[3] = 4 * self.words.len() as u32;
        self.words
    }
}
