//! ERT command packets: the header word, its states, and builders for `ERT_START_CU` (what XRT
//! sends for xclbin kernels), `ERT_START_NPU` (npu-driver.md §2.7; not submitted, F5) and
//! `ERT_CMD_CHAIN` (several `ERT_START_CU` commands in one submission, [`CmdChain`]).
//!
//! Header bits: state `[3:0]`, stat_enabled `[4]`, extra_cu_masks `[11:10]`, count `[22:12]` (words after
//! the header), opcode `[27:23]`, type `[31:28]` (`ERT_CU` = 3).

/// `ERT_START_CU`.
pub const ERT_START_CU: u32 = 0;
/// `ERT_CMD_CHAIN`.
pub const ERT_CMD_CHAIN: u32 = 19;
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
    /// A chain without sub-commands.
    #[error("command chain without sub-commands")]
    EmptyChain,
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

/// The hardware context's chain buffer (`MAX_CHAIN_CMDBUF_SIZE`, aie2_msg_priv.h): the driver
/// copies every sub-command of a chain into it as one slot.
pub const CHAIN_BUFFER_BYTES: usize = 4096;
/// Bytes of a `cmd_chain_slot_execbuf_cf` slot before its `args[]` (`cu_idx`, `arg_cnt`).
pub const CHAIN_SLOT_HEADER_BYTES: usize = 8;
/// Words of `struct amdxdna_cmd_chain` before `data[]` (`command_count`, `submit_index`,
/// `error_index`, `reserved[3]`).
pub const CHAIN_HEADER_WORDS: usize = 6;

/// Bytes one `ERT_START_CU` sub-command with a `regmap_words`-word regmap takes in the chain
/// buffer: the slot header and the payload after the CU mask, which
/// `aie2_message.c: aie2_cmdlist_fill_one_slot_cf` copies as `args[]`.
pub const fn chain_slot_bytes(regmap_words: usize) -> usize {
    CHAIN_SLOT_HEADER_BYTES + 4 * regmap_words
}

/// Whether the driver puts a slot of `payload_bytes` at byte `offset` of the chain buffer.
///
/// Current upstream (`aie2_msg_priv.h: slot_has_space`, since the April 2025 fix of
/// aac243092b70): `4096 >= offset + payload + 8`. The 6.14-era macro (`slot_cf_has_space`) was
/// `4096 - (offset + payload) > 8` in `u32` arithmetic: one word stricter, and a payload that
/// overruns the buffer wraps the subtraction and passes (the driver then writes past its 4 KiB
/// buffer); `strict` applies the 6.14 rule without the wrap, which the runtime never relies on.
pub fn chain_slot_fits(offset: usize, payload_bytes: usize, strict: bool) -> bool {
    let end = offset + payload_bytes + CHAIN_SLOT_HEADER_BYTES;
    if strict {
        end < CHAIN_BUFFER_BYTES
    } else {
        end <= CHAIN_BUFFER_BYTES
    }
}

/// Most `ERT_START_CU` sub-commands with `regmap_words`-word regmaps one chain carries under
/// every driver profile (the 6.14 rule, the stricter one).
pub fn max_chain_len(regmap_words: usize) -> usize {
    let slot = chain_slot_bytes(regmap_words);
    let mut n = 0;
    while chain_slot_fits(n * slot, 4 * regmap_words, true) {
        n += 1;
    }
    n
}

/// An `ERT_CMD_CHAIN` packet: a header (no CU mask: `amdxdna_ctx.c: amdxdna_cmd_get_payload`
/// takes none for this opcode, XRT's `get_ert_cmd_chain_data` neither), then
/// `struct amdxdna_cmd_chain { u32 command_count; u32 submit_index; u32 error_index; u32
/// reserved[3]; u64 data[command_count]; }` ([`super::uapi::amdxdna_cmd_chain`]) with `data[i]`
/// the GEM handle of sub-command `i`, a CMD BO holding an ordinary `ERT_START_CU` packet.
///
/// The driver (`aie2_message.c: aie2_cmdlist_multi_execbuf`) looks each handle up as a CMD BO
/// (ENOENT otherwise), takes the first sub-command's opcode and refuses a chain whose others
/// differ, copies each into the context's chain buffer (refused when it does not fit,
/// [`chain_slot_fits`]) and sends one firmware message: one job, one `seq`, one fence. A
/// refused chain never reaches the firmware; its header stays NEW while its fence signals (the
/// ring reports that as a failed command, F1). On a firmware error `aie2_ctx.c:
/// aie2_sched_cmdlist_resp_handler` writes ERROR (ABORT when the failing sub-command's own
/// status is success) and sets `error_index` to the failing sub-command (0 when out of range);
/// nothing writes `submit_index`.
#[derive(Clone, Copy, Debug)]
pub struct CmdChain<'a> {
    /// GEM handles of the sub-command BOs, in execution order.
    pub commands: &'a [u32],
}

impl CmdChain<'_> {
    /// Total packet length in words (header + chain struct + 2 words per handle).
    pub fn words(&self) -> usize {
        1 + CHAIN_HEADER_WORDS + 2 * self.commands.len()
    }

    /// Write the packet into `out` (header last) and return its length in words.
    pub fn write(&self, out: &mut [u32]) -> Result<usize, PacketError> {
        if self.commands.is_empty() {
            return Err(PacketError::EmptyChain);
        }
        let n = self.words();
        let room = out.len().min(MAX_COUNT as usize + 1);
        if n > room {
            return Err(PacketError::TooLong { needed: n, room });
        }
        out[1] = self.commands.len() as u32;
        out[2..1 + CHAIN_HEADER_WORDS].fill(0); // submit_index, error_index, reserved
        for (i, &h) in self.commands.iter().enumerate() {
            put_u64(out, 1 + CHAIN_HEADER_WORDS + 2 * i, h as u64);
        }
        out[0] = Header {
            state: CmdState::New,
            extra_cu_masks: 0,
            count: (n - 1) as u32,
            opcode: ERT_CMD_CHAIN,
            kind: ERT_CU,
        }
        .encode();
        Ok(n)
    }
}

/// A decoded `ERT_CMD_CHAIN` packet (as the emulated driver reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedChain {
    /// `data[i]` truncated to the 32-bit GEM handle, as the driver does (`(u32)data[i]`).
    pub handles: Vec<u32>,
}

impl DecodedChain {
    /// Word index of `error_index` in the packet.
    pub const ERROR_INDEX_WORD: usize = 3;

    /// Parse a packet; `None` unless it is an `ERT_CMD_CHAIN` whose `count` fits `words` and
    /// holds `command_count` handles (the driver's `struct_size` check: EINVAL otherwise).
    pub fn parse(words: &[u32]) -> Option<Self> {
        let h = Header::decode(*words.first()?);
        let count = h.count as usize;
        if h.opcode != ERT_CMD_CHAIN || count + 1 > words.len() || count < CHAIN_HEADER_WORDS {
            return None;
        }
        let n = words[1] as usize;
        if count < CHAIN_HEADER_WORDS + 2 * n {
            return None;
        }
        let data = &words[1 + CHAIN_HEADER_WORDS..];
        Some(Self {
            handles: (0..n).map(|i| data[2 * i]).collect(),
        })
    }
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
    fn command_chain_layout_matches_struct_amdxdna_cmd_chain() {
        use crate::npu::uapi::amdxdna_cmd_chain;
        use core::mem::{align_of, offset_of, size_of};
        // The kernel struct (amdxdna_ctx.h): 24 bytes before the u64 handles, 8-byte aligned.
        assert_eq!(size_of::<amdxdna_cmd_chain>(), 24);
        assert_eq!(align_of::<amdxdna_cmd_chain>(), 8);
        assert_eq!(offset_of!(amdxdna_cmd_chain, command_count), 0);
        assert_eq!(offset_of!(amdxdna_cmd_chain, submit_index), 4);
        assert_eq!(offset_of!(amdxdna_cmd_chain, error_index), 8);
        assert_eq!(offset_of!(amdxdna_cmd_chain, reserved), 12);
        assert_eq!(offset_of!(amdxdna_cmd_chain, data), 24);
        assert_eq!(4 * CHAIN_HEADER_WORDS, size_of::<amdxdna_cmd_chain>());
        let mut out = [0xDEAD_BEEFu32; 16];
        let p = CmdChain {
            commands: &[7, 0x1_0009],
        };
        assert_eq!(p.write(&mut out).unwrap(), 11);
        // Header: NEW | count 10 << 12 | CMD_CHAIN 19 << 23 | ERT_CU 3 << 28; no CU mask word.
        assert_eq!(out[0], 1 | 10 << 12 | 19 << 23 | 3 << 28);
        assert_eq!(out[..11], [out[0], 2, 0, 0, 0, 0, 0, 7, 0, 0x1_0009, 0]);
        assert_eq!(out[11], 0xDEAD_BEEF, "nothing written past the packet");
        let d = DecodedChain::parse(&out).unwrap();
        assert_eq!(d.handles, vec![7, 0x1_0009]);
        // command_count past the count field: refused as the driver's struct_size check does.
        let mut bad = out;
        bad[1] = 3;
        assert_eq!(DecodedChain::parse(&bad), None);
        assert_eq!(
            CmdChain { commands: &[] }.write(&mut out),
            Err(PacketError::EmptyChain)
        );
        assert!(
            DecodedStartCu::parse(&out[..11]).is_none(),
            "not a START_CU"
        );
    }

    #[test]
    fn chain_buffer_rules_of_both_driver_generations() {
        // Our GEMM regmap: 3 buffers, 11 words: 52-byte slots.
        assert_eq!(chain_slot_bytes(11), 52);
        assert_eq!(max_chain_len(11), 78);
        // 78 slots end at 4056: both rules take them; a 79th (4108) neither.
        assert!(chain_slot_fits(77 * 52, 44, true) && chain_slot_fits(77 * 52, 44, false));
        assert!(!chain_slot_fits(78 * 52, 44, false));
        // A slot ending exactly at 4096 fits the current rule, not the 6.14 one.
        assert!(chain_slot_fits(4096 - 52, 44, false));
        assert!(!chain_slot_fits(4096 - 52, 44, true));
        // The full 15-word mlir-aie regmap: 68-byte slots, 60 of them.
        assert_eq!(max_chain_len(15), 60);
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
