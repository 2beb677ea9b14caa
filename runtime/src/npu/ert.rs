//! ERT command packets: the header word, its states, and builders for `ERT_START_CU` (what XRT
//! sends for xclbin kernels) and `ERT_START_NPU` (npu-driver.md §2.7; not submitted, F5).
//!
//! Header bits: state `[3:0]`, stat_enabled `[4]`, extra_cu_masks `[11:10]`, count `[22:12]` (words after
//! the header), opcode `[27:23]`, type `[31:28]` (`ERT_CU` = 3).

/// `ERT_START_CU`.
pub const ERT_START_CU: u32 = 0;
/// `ERT_START_NPU`.
pub const ERT_START_NPU: u32 = 20;
/// `ERT_CU`, the packet type XRT writes in bits `[31:28]`.
pub const ERT_CU: u32 = 3;
/// The regmap `opcode` argument of mlir-aie designs (3 = TXN; 2 is the deprecated legacy flow).
pub const MLIR_AIE_OPCODE_TXN: u64 = 3;
/// Byte offset of the first buffer argument in the mlir-aie regmap; buffer i is at 0x14 + 8·i.
pub const FIRST_BUFFER_ARG_OFFSET: usize = 0x14;
/// Largest `count` the 11-bit field holds.
pub const MAX_COUNT: u32 = (1 << 11) - 1;
/// Arg limit of `ERT_START_NPU` packets on current firmware (`MAX_NPU_ARGS_SIZE`, words).
pub const MAX_NPU_ARGS_WORDS: usize = 26;

/// The state field of a command header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdState {
    /// 1: written by the host before submission.
    New,
    /// 2.
    Queued,
    /// 3.
    Running,
    /// 4: the only success state.
    Completed,
    /// 5: the firmware reported an error (payload overwritten by the driver).
    Error,
    /// 6: aborted (context destroyed, reset).
    Abort,
    /// 7.
    Submitted,
    /// 8: the driver's own timeout.
    Timeout,
    /// 9: the firmware did not respond.
    NoResponse,
    /// Any other value (0 = INVALID, XRT's 10/11, garbage).
    Other(u32),
}

impl CmdState {
    /// Decode the 4-bit state field.
    pub fn from_bits(bits: u32) -> Self {
        match bits & 0xF {
            1 => Self::New,
            2 => Self::Queued,
            3 => Self::Running,
            4 => Self::Completed,
            5 => Self::Error,
            6 => Self::Abort,
            7 => Self::Submitted,
            8 => Self::Timeout,
            9 => Self::NoResponse,
            other => Self::Other(other),
        }
    }

    /// The 4-bit encoding.
    pub fn bits(self) -> u32 {
        match self {
            Self::New => 1,
            Self::Queued => 2,
            Self::Running => 3,
            Self::Completed => 4,
            Self::Error => 5,
            Self::Abort => 6,
            Self::Submitted => 7,
            Self::Timeout => 8,
            Self::NoResponse => 9,
            Self::Other(v) => v & 0xF,
        }
    }

    /// Whether the command has finished (XRT's `state >= COMPLETED`).
    pub fn is_final(self) -> bool {
        self.bits() >= 4
    }
}

/// The header word's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// State.
    pub state: CmdState,
    /// Number of extra CU mask words (0..=3).
    pub extra_cu_masks: u32,
    /// Number of payload words after the header.
    pub count: u32,
    /// ERT opcode.
    pub opcode: u32,
    /// Packet type.
    pub kind: u32,
}

impl Header {
    /// Pack into the header word.
    pub fn encode(&self) -> u32 {
        debug_assert!(self.count <= MAX_COUNT && self.extra_cu_masks <= 3 && self.opcode < 32);
        self.state.bits()
            | (self.extra_cu_masks & 0x3) << 10
            | (self.count & MAX_COUNT) << 12
            | (self.opcode & 0x1F) << 23
            | (self.kind & 0xF) << 28
    }

    /// Unpack a header word.
    pub fn decode(word: u32) -> Self {
        Self {
            state: CmdState::from_bits(word),
            extra_cu_masks: (word >> 10) & 0x3,
            count: (word >> 12) & MAX_COUNT,
            opcode: (word >> 23) & 0x1F,
            kind: word >> 28,
        }
    }
}

/// Why a packet could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet needs more words than the command BO (or the count field) holds.
    #[error("packet needs {needed} words, room for {room}")]
    TooLong {
        /// Words needed including the header.
        needed: usize,
        /// Words available.
        room: usize,
    },
    /// The CU mask is zero (the driver derives the CU index from its lowest set bit).
    #[error("CU mask is 0")]
    EmptyCuMask,
    /// More args than the firmware accepts for this opcode.
    #[error("{words} arg words exceed the firmware limit of {limit}")]
    TooManyArgs {
        /// Arg words given.
        words: usize,
        /// The limit.
        limit: usize,
    },
}

/// An `ERT_START_CU` packet: the CU mask and the regmap, built by
/// [`super::program::RegmapLayout`] from the xclbin's kernel arguments (F4).
#[derive(Clone, Copy, Debug)]
pub struct StartCu<'a> {
    /// CU mask word (bit i = CU index i of CONFIG_HWCTX; one CU ⇒ 1).
    pub cu_mask: u32,
    /// The regmap words, full length (XRT sends `max(offset + size) / 4` words).
    pub regmap: &'a [u32],
}

impl StartCu<'_> {
    /// Regmap length in words.
    pub fn regmap_words(&self) -> usize {
        self.regmap.len()
    }

    /// Total packet length in words (header + mask + regmap).
    pub fn words(&self) -> usize {
        2 + self.regmap_words()
    }

    /// Write the packet into `out` (header last) and return its length in words.
    pub fn write(&self, out: &mut [u32]) -> Result<usize, PacketError> {
        if self.cu_mask == 0 {
            return Err(PacketError::EmptyCuMask);
        }
        let n = self.words();
        let room = out.len().min(MAX_COUNT as usize + 1);
        if n > room {
            return Err(PacketError::TooLong { needed: n, room });
        }
        out[1] = self.cu_mask;
        out[2..n].copy_from_slice(self.regmap);
        out[0] = Header {
            state: CmdState::New,
            extra_cu_masks: 0,
            count: (n - 1) as u32,
            opcode: ERT_START_CU,
            kind: ERT_CU,
        }
        .encode();
        Ok(n)
    }
}

/// An `ERT_START_NPU` packet: CU mask, `ert_npu_data{instruction_buffer u64,
/// instruction_buffer_size u32 (bytes), instruction_prop_count u32 = 0}`, then `args`.
///
/// **Not supported for submission** (F5): with NPU-command firmware START_NPU runs control code
/// that aiebu generated from a TXN and the host patched (`EXEC_NPU_TYPE_PARTIAL_ELF`), with the
/// full regmap after `ert_npu_data`; feeding it a raw mlir-aie `insts.bin` is unproven.
/// [`super::ring::CommandRing::submit`] refuses it with [`super::NpuError::Unsupported`]; the
/// builder stays for layout tests only.
#[derive(Clone, Copy, Debug)]
pub struct StartNpu<'a> {
    /// CU mask word.
    pub cu_mask: u32,
    /// Device address of the instruction (control code) buffer.
    pub instr_addr: u64,
    /// Its size in bytes.
    pub instr_bytes: u32,
    /// The regmap words that follow (at most [`MAX_NPU_ARGS_WORDS`]).
    pub args: &'a [u32],
}

impl StartNpu<'_> {
    /// Total packet length in words.
    pub fn words(&self) -> usize {
        2 + 4 + self.args.len()
    }

    /// Write the packet into `out` (header last) and return its length in words.
    pub fn write(&self, out: &mut [u32]) -> Result<usize, PacketError> {
        if self.cu_mask == 0 {
            return Err(PacketError::EmptyCuMask);
        }
        if self.args.len() > MAX_NPU_ARGS_WORDS {
            return Err(PacketError::TooManyArgs {
                words: self.args.len(),
                limit: MAX_NPU_ARGS_WORDS,
            });
        }
        let n = self.words();
        let room = out.len().min(MAX_COUNT as usize + 1);
        if n > room {
            return Err(PacketError::TooLong { needed: n, room });
        }
        out[1] = self.cu_mask;
        put_u64(out, 2, self.instr_addr);
        out[4] = self.instr_bytes;
        out[5] = 0; // instruction_prop_count
        out[6..n].copy_from_slice(self.args);
        out[0] = Header {
            state: CmdState::New,
            extra_cu_masks: 0,
            count: (n - 1) as u32,
            opcode: ERT_START_NPU,
            kind: ERT_CU,
        }
        .encode();
        Ok(n)
    }
}

fn put_u64(words: &mut [u32], at: usize, v: u64) {
    words[at] = v as u32;
    words[at + 1] = (v >> 32) as u32;
}

/// The regmap of a decoded `ERT_START_CU` packet (as the emulated firmware reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedStartCu {
    /// CU mask.
    pub cu_mask: u32,
    /// Regmap words (after the CU masks).
    pub regmap: Vec<u32>,
}

impl DecodedStartCu {
    /// Parse a packet; `None` if the header is not a well-formed START_CU that fits `words`.
    pub fn parse(words: &[u32]) -> Option<Self> {
        let h = Header::decode(*words.first()?);
        let masks = 1 + h.extra_cu_masks as usize;
        let count = h.count as usize;
        if h.opcode != ERT_START_CU || count <= masks || count + 1 > words.len() {
            return None;
        }
        Some(Self {
            cu_mask: words[1],
            regmap: words[1 + masks..1 + count].to_vec(),
        })
    }

    /// The u64 regmap argument at byte offset `off`, if present.
    pub fn arg_u64(&self, off: usize) -> Option<u64> {
        let w = off / 4;
        let lo = *self.regmap.get(w)? as u64;
        let hi = *self.regmap.get(w + 1)? as u64;
        Some(lo | hi << 32)
    }

    /// The u32 regmap argument at byte offset `off`, if present.
    pub fn arg_u32(&self, off: usize) -> Option<u32> {
        self.regmap.get(off / 4).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_buffer_start_cu_matches_the_measured_header_and_words() {
        use crate::npu::program::RegmapLayout;
        let bufs = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 0xA, 0xB, 0xC];
        let mut regmap = [0u32; 15];
        RegmapLayout::mlir_aie(5)
            .write(MLIR_AIE_OPCODE_TXN, 0x0400_8000, 123, &bufs, &mut regmap)
            .unwrap();
        let p = StartCu {
            cu_mask: 1,
            regmap: &regmap,
        };
        let mut out = [0xDEAD_BEEFu32; 32];
        assert_eq!(p.write(&mut out).unwrap(), 17);
        // Hand-computed: header NEW | count 16 << 12 | START_CU 0 << 23 | ERT_CU 3 << 28.
        let expected: [u32; 17] = [
            0x3001_0001, // measured in npu-driver.md §2.7
            0x0000_0001, // cu mask
            0x0000_0003,
            0x0000_0000, // opcode 3 (u64)           @0x00
            0x0400_8000,
            0x0000_0000, // instr BO address (u64)   @0x08
            123,         // ninstr                                @0x10
            0x3333_4444,
            0x1111_2222, // bo0                      @0x14
            0x7777_8888,
            0x5555_6666, // bo1                      @0x1c
            0xA,
            0, // bo2 @0x24
            0xB,
            0, // bo3 @0x2c
            0xC,
            0, // bo4 @0x34
        ];
        assert_eq!(&out[..17], &expected);
        assert_eq!(out[17], 0xDEAD_BEEF, "nothing written past the packet");
        let d = DecodedStartCu::parse(&out).unwrap();
        assert_eq!(d.arg_u64(0x08), Some(0x0400_8000));
        assert_eq!(d.arg_u32(0x10), Some(123));
        assert_eq!(d.arg_u64(0x14 + 8), Some(0x5555_6666_7777_8888));
    }

    #[test]
    fn header_fields_roundtrip_at_their_bit_positions() {
        let h = Header {
            state: CmdState::Abort,
            extra_cu_masks: 3,
            count: MAX_COUNT,
            opcode: 31,
            kind: 0xF,
        };
        assert_eq!(
            h.encode(),
            0x6 | 0x3 << 10 | 0x7FF << 12 | 0x1F << 23 | 0xF << 28
        );
        assert_eq!(Header::decode(h.encode()), h);
        assert_eq!(Header::decode(0x3001_0001).count, 16);
        // Bits [9:5] and [4] are not part of any field we set.
        assert_eq!(Header::decode(0x3E0 | 0x10 | 4).state, CmdState::Completed);
    }

    #[test]
    fn states_decode_and_classify() {
        for bits in 0..16 {
            assert_eq!(CmdState::from_bits(bits).bits(), bits);
        }
        assert!(!CmdState::Running.is_final());
        assert!(CmdState::Completed.is_final() && CmdState::Error.is_final());
        assert_eq!(CmdState::from_bits(5), CmdState::Error);
        assert_eq!(CmdState::from_bits(6), CmdState::Abort);
    }

    #[test]
    fn start_npu_layout() {
        let args = [3, 0];
        let p = StartNpu {
            cu_mask: 1,
            instr_addr: 0x1_0000_2000,
            instr_bytes: 400,
            args: &args,
        };
        let mut out = [0u32; 8];
        assert_eq!(p.write(&mut out).unwrap(), 8);
        // header: NEW | count 7 << 12 | opcode 20 << 23 | 3 << 28 = 0x3A00_7001.
        assert_eq!(out, [0x3A00_7001, 1, 0x0000_2000, 0x1, 400, 0, 3, 0]);
        let too_many = [0u32; 27];
        let p = StartNpu {
            args: &too_many,
            ..p
        };
        assert!(matches!(
            p.write(&mut [0; 64]),
            Err(PacketError::TooManyArgs { .. })
        ));
    }

    #[test]
    fn refuses_short_buffers_and_empty_masks() {
        let regmap = [0u32; 9];
        let p = StartCu {
            cu_mask: 1,
            regmap: &regmap,
        };
        assert_eq!(
            p.write(&mut [0; 10]),
            Err(PacketError::TooLong {
                needed: 11,
                room: 10
            })
        );
        let p = StartCu { cu_mask: 0, ..p };
        assert_eq!(p.write(&mut [0; 64]), Err(PacketError::EmptyCuMask));
        assert_eq!(
            DecodedStartCu::parse(&[0x3001_0001, 1]),
            None,
            "count past the end"
        );
    }
}
