//! TXN v0.1 framing: the 16-byte header and the ops that follow it, decoded without allocation
//! (`npu-instruction-stream.md` §1–§3). Every size field is checked against the op's known
//! layout and against the words left; nothing is read past the stream.

use super::error::TxnError;

/// Header words.
pub const HEADER_WORDS: usize = 4;
/// `Major` of the v0.1 encoding.
pub const MAJOR: u8 = 0;
/// `Minor` of the v0.1 encoding.
pub const MINOR: u8 = 1;
/// `NumRows` of every NPU model (shim, memtile, 4 core rows).
pub const ROWS: u8 = 6;
/// `DevGen` values accepted: 3 = npu1 (AIE2 IPU), 4 = npu2/npu4 (AIE2P), 8/9 = AIE2P Strix A0/B0
/// (aie-rt / IREE streams).
pub const DEV_GENS: &[u8] = &[3, 4, 8, 9];
/// Most columns a device model has (`npu2`: 8).
pub const MAX_COLS: u8 = 8;

/// Opcode WRITE (6 words).
pub const OP_WRITE: u8 = 0;
/// Opcode BLOCKWRITE (4 + n words).
pub const OP_BLOCKWRITE: u8 = 1;
/// Opcode MASKWRITE (7 words mlir-aie, 8 aie-rt).
pub const OP_MASKWRITE: u8 = 3;
/// Opcode MASKPOLL (7 or 8 words).
pub const OP_MASKPOLL: u8 = 4;
/// Opcode NOOP (1 word).
pub const OP_NOOP: u8 = 5;
/// Opcode PREEMPT (1 word).
pub const OP_PREEMPT: u8 = 6;
/// Opcode MASKPOLL_BUSY (7 or 8 words).
pub const OP_MASKPOLL_BUSY: u8 = 7;
/// Opcode LOADPDI (4 words).
pub const OP_LOADPDI: u8 = 8;
/// Custom opcode TCT sync (4 words).
pub const OP_TCT: u8 = 0x80;
/// Custom opcode DDR_PATCH (12 words).
pub const OP_DDR_PATCH: u8 = 0x81;
/// Custom opcode READ_REGS (size in w1; layout disputed, skipped).
pub const OP_READ_REGS: u8 = 0x82;
/// Custom opcode RECORD_TIMER (size in w1; skipped).
pub const OP_RECORD_TIMER: u8 = 0x83;

/// The stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Device generation (3 = npu1, 4 = npu2/npu4).
    pub dev_gen: u8,
    /// Rows (6).
    pub rows: u8,
    /// Columns of the device model the stream was generated for.
    pub cols: u8,
    /// Memtile rows (1).
    pub mem_tile_rows: u8,
    /// Number of ops that follow.
    pub num_ops: u32,
    /// Total bytes including the header.
    pub txn_size: u32,
}

/// Direction of a shim DMA channel: S2MM = array → host memory, MM2S = host memory → array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Stream to memory: the array writes a host buffer (code 0).
    S2mm,
    /// Memory to stream: the array reads a host buffer (code 1).
    Mm2s,
}

/// One decoded op. Register addresses are `col<<25 | row<<20 | offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// WRITE: one register.
    Write {
        /// Register address.
        addr: u32,
        /// Value.
        value: u32,
    },
    /// BLOCKWRITE: consecutive registers from `addr`.
    BlockWrite {
        /// First register address.
        addr: u32,
        /// Values.
        data: &'a [u32],
    },
    /// MASKWRITE: `reg = (reg & !mask) | (value & mask)`.
    MaskWrite {
        /// Register address.
        addr: u32,
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
    },
    /// MASKPOLL / MASKPOLL_BUSY: wait until `(reg & mask) == value`.
    MaskPoll {
        /// Register address.
        addr: u32,
        /// Expected value.
        value: u32,
        /// Mask.
        mask: u32,
        /// MASKPOLL_BUSY (7) rather than MASKPOLL (4).
        busy: bool,
    },
    /// NOOP.
    Noop,
    /// PREEMPT at a level (0–3).
    Preempt {
        /// Preemption level.
        level: u8,
    },
    /// LOADPDI.
    LoadPdi {
        /// PDI id.
        id: u16,
        /// PDI size in bytes.
        size: u32,
        /// PDI address.
        addr: u64,
    },
    /// TCT sync: wait for the task-completion tokens of a channel on `col_num` columns.
    Sync {
        /// Channel direction.
        dir: Direction,
        /// Row (0 = shim).
        row: u8,
        /// First column.
        col: u8,
        /// Rows covered.
        row_num: u8,
        /// Columns covered.
        col_num: u8,
        /// Channel number.
        channel: u8,
    },
    /// DDR_PATCH: write the address of buffer `arg_idx` + `arg_plus` into the BD word at
    /// `reg_addr` (and the high bits into the next word).
    DdrPatch {
        /// Address of the patched BD word (word 1 of a shim BD).
        reg_addr: u64,
        /// Index among the runtime-sequence buffers (0 = first data buffer).
        arg_idx: u64,
        /// Byte offset added (64-bit; includes 0x80000000 for `arg_idx ≥ 5`).
        arg_plus: u64,
    },
    /// READ_REGS / RECORD_TIMER: accepted and skipped (no effect on data).
    Skipped {
        /// The opcode.
        opcode: u8,
    },
}

/// An op with its position in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located<'a> {
    /// Index of the op (0 = first after the header).
    pub index: u32,
    /// Word offset of the op's first word in the stream.
    pub word: usize,
    /// The op.
    pub op: Op<'a>,
}

/// A parsed stream: the header and the op words (borrowed).
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    header: Header,
    words: &'a [u32],
}

/// Decode the header and check the framing of every op (sizes, counts, total length).
pub fn parse(words: &[u32]) -> Result<Stream<'_>, TxnError> {
    let header = parse_header(words)?;
    let stream = Stream { header, words };
    let mut n = 0u32;
    for op in stream.ops() {
        op?;
        n += 1;
    }
    if n != header.num_ops {
        return Err(TxnError::OpCount {
            header: header.num_ops,
            found: n,
        });
    }
    Ok(stream)
}

fn parse_header(words: &[u32]) -> Result<Header, TxnError> {
    if words.first() == Some(&0x11) {
        // Riallto / early mlir-aie "IPU" sequences start with their 17-word prolog length.
        return Err(TxnError::LegacyIpuSequence);
    }
    if words.len() < HEADER_WORDS {
        return Err(TxnError::TooShort { words: words.len() });
    }
    let [w0, w1, w2, w3] = [words[0], words[1], words[2], words[3]];
    let (major, minor) = (w0 as u8, (w0 >> 8) as u8);
    if (major, minor) != (MAJOR, MINOR) {
        return Err(TxnError::Version { major, minor });
    }
    let header = Header {
        dev_gen: (w0 >> 16) as u8,
        rows: (w0 >> 24) as u8,
        cols: w1 as u8,
        mem_tile_rows: (w1 >> 8) as u8,
        num_ops: w2,
        txn_size: w3,
    };
    let bad = |field: &'static str, value: u64, expected: &'static str| {
        Err(TxnError::BadHeader {
            field,
            value,
            expected,
        })
    };
    if !DEV_GENS.contains(&header.dev_gen) {
        return bad(
            "DevGen",
            header.dev_gen as u64,
            "3 (npu1), 4 (npu2/npu4), 8 or 9",
        );
    }
    if header.rows != ROWS {
        return bad("NumRows", header.rows as u64, "6");
    }
    if header.cols == 0 || header.cols > MAX_COLS {
        return bad("NumCols", header.cols as u64, "1..=8");
    }
    if header.mem_tile_rows != 1 {
        return bad("NumMemTileRows", header.mem_tile_rows as u64, "1");
    }
    if w1 >> 16 != 0 {
        return bad("padding (w1[31:16])", (w1 >> 16) as u64, "0");
    }
    let bytes = words.len() as u64 * 4;
    if header.txn_size as u64 != bytes {
        return Err(TxnError::SizeMismatch {
            header: header.txn_size,
            actual: bytes,
        });
    }
    Ok(header)
}

impl<'a> Stream<'a> {
    /// The header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// All words, header included.
    pub fn words(&self) -> &'a [u32] {
        self.words
    }

    /// The ops in order. Each item is an error if the op at that position is malformed (the
    /// iterator stops after the first error). [`parse`] has already checked the whole stream.
    pub fn ops(&self) -> Ops<'a> {
        Ops {
            words: self.words,
            at: HEADER_WORDS,
            index: 0,
            failed: false,
        }
    }
}

/// Iterator over the ops of a [`Stream`].
#[derive(Clone, Debug)]
pub struct Ops<'a> {
    words: &'a [u32],
    at: usize,
    index: u32,
    failed: bool,
}

impl<'a> Iterator for Ops<'a> {
    type Item = Result<Located<'a>, TxnError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.words.len() {
            return None;
        }
        match decode(self.words, self.at, self.index) {
            Ok((op, len)) => {
                let item = Located {
                    index: self.index,
                    word: self.at,
                    op,
                };
                self.at += len;
                self.index += 1;
                Some(Ok(item))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decode the op at word `at`: the op and its length in words.
fn decode(words: &[u32], at: usize, index: u32) -> Result<(Op<'_>, usize), TxnError> {
    let rest = &words[at..];
    let opcode = rest[0] as u8;
    let need = |n: usize| -> Result<&[u32], TxnError> {
        rest.get(..n).ok_or(TxnError::Truncated {
            op: index,
            word: at,
            opcode,
            need: n,
            left: rest.len(),
        })
    };
    let bad_size = |size: u32, expected: &'static str| TxnError::BadOpSize {
        op: index,
        word: at,
        opcode,
        size,
        expected,
    };
    // Addresses of WRITE/MASKWRITE/MASKPOLL are u64 with a zero high word.
    let addr64 = |w: &[u32]| -> Result<u32, TxnError> {
        if w[3] != 0 {
            return Err(TxnError::BadField {
                op: index,
                word: at,
                field: "register address high word",
                value: w[3] as u64,
            });
        }
        Ok(w[2])
    };
    Ok(match opcode {
        OP_WRITE => {
            let w = need(6)?;
            if w[5] != 24 {
                return Err(bad_size(w[5], "24"));
            }
            (
                Op::Write {
                    addr: addr64(w)?,
                    value: w[4],
                },
                6,
            )
        }
        OP_BLOCKWRITE => {
            let w = need(4)?;
            let size = w[3];
            if size < 20 || size % 4 != 0 {
                return Err(bad_size(size, "16 + 4·n with n ≥ 1"));
            }
            let n = size as usize / 4;
            let w = need(n)?;
            (
                Op::BlockWrite {
                    addr: w[2],
                    data: &w[4..n],
                },
                n,
            )
        }
        OP_MASKWRITE | OP_MASKPOLL | OP_MASKPOLL_BUSY => {
            let w = need(7)?;
            let n = match w[6] {
                28 => 7,
                32 => 8,
                other => return Err(bad_size(other, "28 (mlir-aie) or 32 (aie-rt)")),
            };
            let w = need(n)?;
            let (addr, value, mask) = (addr64(w)?, w[4], w[5]);
            let op = if opcode == OP_MASKWRITE {
                Op::MaskWrite { addr, value, mask }
            } else {
                Op::MaskPoll {
                    addr,
                    value,
                    mask,
                    busy: opcode == OP_MASKPOLL_BUSY,
                }
            };
            (op, n)
        }
        OP_NOOP => (Op::Noop, 1),
        OP_PREEMPT => (
            Op::Preempt {
                level: (rest[0] >> 8) as u8,
            },
            1,
        ),
        OP_LOADPDI => {
            let w = need(4)?;
            (
                Op::LoadPdi {
                    id: (w[0] >> 16) as u16,
                    size: w[1],
                    addr: w[2] as u64 | (w[3] as u64) << 32,
                },
                4,
            )
        }
        OP_TCT => {
            let w = need(2)?;
            if w[1] != 16 {
                return Err(bad_size(w[1], "16"));
            }
            let w = need(4)?;
            let dir = match w[2] as u8 {
                0 => Direction::S2mm,
                1 => Direction::Mm2s,
                other => {
                    return Err(TxnError::BadField {
                        op: index,
                        word: at,
                        field: "sync direction",
                        value: other as u64,
                    })
                }
            };
            (
                Op::Sync {
                    dir,
                    row: (w[2] >> 8) as u8,
                    col: (w[2] >> 16) as u8,
                    row_num: (w[3] >> 8) as u8,
                    col_num: (w[3] >> 16) as u8,
                    channel: (w[3] >> 24) as u8,
                },
                4,
            )
        }
        OP_DDR_PATCH => {
            let w = need(2)?;
            if w[1] != 48 {
                return Err(bad_size(w[1], "48"));
            }
            let w = need(12)?;
            let u64_at = |i: usize| w[i] as u64 | (w[i + 1] as u64) << 32;
            (
                Op::DdrPatch {
                    reg_addr: u64_at(6),
                    arg_idx: u64_at(8),
                    arg_plus: u64_at(10),
                },
                12,
            )
        }
        OP_READ_REGS | OP_RECORD_TIMER => {
            let w = need(2)?;
            let size = w[1];
            if size < 8 || size % 4 != 0 {
                return Err(bad_size(size, "a multiple of 4, at least 8"));
            }
            need(size as usize / 4)?;
            (Op::Skipped { opcode }, size as usize / 4)
        }
        _ => {
            return Err(TxnError::UnknownOpcode {
                op: index,
                word: at,
                opcode,
            })
        }
    })
}
