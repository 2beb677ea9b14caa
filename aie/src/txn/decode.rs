//! A TXN v0.1 decoder: header and ops, each op checked against its fixed size (§1-§3). Used by
//! the functional replay (`crate::program::replay`) and by tests on real streams; the
//! runtime's validator is the authority on what may be submitted.

use super::encode::Direction;

/// The 16-byte header (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Major (0).
    pub major: u8,
    /// Minor (1).
    pub minor: u8,
    /// DevGen.
    pub dev_gen: u8,
    /// NumRows.
    pub rows: u8,
    /// NumCols.
    pub cols: u8,
    /// NumMemTileRows.
    pub mem_tile_rows: u8,
    /// NumOps.
    pub ops: u32,
    /// TxnSize in bytes, header included.
    pub bytes: u32,
}

/// One decoded op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// WRITE.
    Write {
        /// Register address.
        addr: u32,
        /// Value.
        value: u32,
    },
    /// BLOCKWRITE.
    BlockWrite {
        /// First register address.
        addr: u32,
        /// Words.
        data: Vec<u32>,
    },
    /// MASKWRITE.
    MaskWrite {
        /// Register address.
        addr: u32,
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
    },
    /// MASKPOLL or MASKPOLL_BUSY.
    MaskPoll {
        /// Register address.
        addr: u32,
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
    },
    /// NOOP.
    Noop,
    /// PREEMPT.
    Preempt(u8),
    /// TCT sync.
    Sync {
        /// Direction.
        dir: Direction,
        /// Column.
        col: u8,
        /// Row.
        row: u8,
        /// Channel.
        chan: u8,
        /// Columns waited for.
        cols: u8,
        /// Rows waited for.
        rows: u8,
    },
    /// DDR_PATCH.
    DdrPatch {
        /// BD address word patched.
        regaddr: u32,
        /// Buffer argument.
        arg_idx: u32,
        /// Byte offset (as written, aperture included for `arg_idx ≥ 5`).
        arg_plus: u64,
    },
}

/// Why a stream does not decode (word offsets count from the start of the stream).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than 4 words.
    #[error("stream of {0} words has no 16-byte header")]
    NoHeader(usize),
    /// Not v0.1.
    #[error("header version {major}.{minor}: only TXN v0.1 is decoded")]
    Version {
        /// Major.
        major: u8,
        /// Minor.
        minor: u8,
    },
    /// TxnSize disagrees with the stream length.
    #[error("header says {said} bytes, the stream has {have}")]
    Size {
        /// Header's TxnSize.
        said: u32,
        /// 4 × words.
        have: usize,
    },
    /// An op runs past the end.
    #[error("op {index} at word {at} runs past the end of the stream")]
    Truncated {
        /// Op index.
        index: usize,
        /// Word offset.
        at: usize,
    },
    /// An op's size field is not its fixed size.
    #[error(
        "op {index} (opcode {opcode:#x}) at word {at}: size field {size}, expected {expected}"
    )]
    OpSize {
        /// Op index.
        index: usize,
        /// Opcode.
        opcode: u32,
        /// Word offset.
        at: usize,
        /// Size field.
        size: u32,
        /// Expected size.
        expected: u32,
    },
    /// An opcode this decoder does not take.
    #[error("op {index} at word {at}: opcode {opcode:#x} is not decoded")]
    Opcode {
        /// Op index.
        index: usize,
        /// Word offset.
        at: usize,
        /// Opcode byte.
        opcode: u32,
    },
    /// NumOps disagrees with the ops found.
    #[error("header says {said} ops, the stream has {found}")]
    OpCount {
        /// Header's NumOps.
        said: u32,
        /// Ops decoded.
        found: usize,
    },
}

/// Decodes a whole stream.
pub fn parse(words: &[u32]) -> Result<(Header, Vec<Op>), DecodeError> {
    if words.len() < 4 {
        return Err(DecodeError::NoHeader(words.len()));
    }
    let b = |w: u32, i: u32| (w >> (8 * i)) as u8;
    let h = Header {
        major: b(words[0], 0),
        minor: b(words[0], 1),
        dev_gen: b(words[0], 2),
        rows: b(words[0], 3),
        cols: b(words[1], 0),
        mem_tile_rows: b(words[1], 1),
        ops: words[2],
        bytes: words[3],
    };
    if (h.major, h.minor) != (0, 1) {
        return Err(DecodeError::Version {
            major: h.major,
            minor: h.minor,
        });
    }
    if h.bytes as usize != 4 * words.len() {
        return Err(DecodeError::Size {
            said: h.bytes,
            have: 4 * words.len(),
        });
    }
    let mut ops = Vec::new();
    let mut at = 4;
    while at < words.len() {
        let index = ops.len();
        let opcode = words[at] & 0xFF;
        let need = |n: usize| -> Result<&[u32], DecodeError> {
            words
                .get(at..at + n)
                .ok_or(DecodeError::Truncated { index, at })
        };
        let sized = |w: &[u32], pos: usize, expected: u32| -> Result<(), DecodeError> {
            if w[pos] == expected {
                Ok(())
            } else {
                Err(DecodeError::OpSize {
                    index,
                    opcode,
                    at,
                    size: w[pos],
                    expected,
                })
            }
        };
        let (op, len) = match opcode {
            0 => {
                let w = need(6)?;
                sized(w, 5, 24)?;
                (
                    Op::Write {
                        addr: w[2],
                        value: w[4],
                    },
                    6,
                )
            }
            1 => {
                let w = need(4)?;
                let size = w[3];
                if size < 16 || size % 4 != 0 {
                    return Err(DecodeError::OpSize {
                        index,
                        opcode,
                        at,
                        size,
                        expected: 16,
                    });
                }
                let n = size as usize / 4;
                let w = need(n)?;
                (
                    Op::BlockWrite {
                        addr: w[2],
                        data: w[4..].to_vec(),
                    },
                    n,
                )
            }
            3 | 4 | 7 => {
                let w = need(7)?;
                // aie-rt's 8-word MASKWRITE carries Size 32 (§3.3): accept both.
                let len = if opcode == 3 && w[6] == 32 { 8 } else { 7 };
                if len == 7 {
                    sized(w, 6, 28)?;
                }
                need(len)?;
                let (addr, value, mask) = (w[2], w[4], w[5]);
                match opcode {
                    3 => (Op::MaskWrite { addr, value, mask }, len),
                    _ => (Op::MaskPoll { addr, value, mask }, len),
                }
            }
            5 => (Op::Noop, 1),
            6 => (Op::Preempt(b(words[at], 1)), 1),
            0x80 => {
                let w = need(4)?;
                sized(w, 1, 16)?;
                let dir = if w[2] & 0xFF == 0 {
                    Direction::S2mm
                } else {
                    Direction::Mm2s
                };
                let op = Op::Sync {
                    dir,
                    row: b(w[2], 1),
                    col: b(w[2], 2),
                    rows: b(w[3], 1),
                    cols: b(w[3], 2),
                    chan: b(w[3], 3),
                };
                (op, 4)
            }
            0x81 => {
                let w = need(12)?;
                sized(w, 1, 48)?;
                let op = Op::DdrPatch {
                    regaddr: w[6],
                    arg_idx: w[8],
                    arg_plus: w[10] as u64 | (w[11] as u64) << 32,
                };
                (op, 12)
            }
            _ => return Err(DecodeError::Opcode { index, at, opcode }),
        };
        ops.push(op);
        at += len;
    }
    if ops.len() != h.ops as usize {
        return Err(DecodeError::OpCount {
            said: h.ops,
            found: ops.len(),
        });
    }
    Ok((h, ops))
}
