//! Why an instruction stream was refused. Every variant names the op (index after the header and
//! word offset in the stream) and the values involved.

use super::op::Direction;

/// A TXN stream the validator or the shim-DMA interpreter refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Fewer words than the 4-word header.
    #[error("instruction stream of {words} words is shorter than the 4-word TXN header")]
    TooShort {
        /// Words present.
        words: usize,
    },
    /// The stream is a pre-TXN "IPU" sequence (Riallto `.seq`, 17-word prolog).
    #[error("not a TXN stream: a legacy IPU sequence (first word 0x11 = its 17-word prolog); only TXN v0.1 is supported")]
    LegacyIpuSequence,
    /// Header version other than 0.1 (1.0 is the "optimized" encoding with other op layouts).
    #[error("TXN version {major}.{minor} is not supported (only 0.1)")]
    Version {
        /// Major.
        major: u8,
        /// Minor.
        minor: u8,
    },
    /// A header field with an impossible value.
    #[error("TXN header {field} = {value}, expected {expected}")]
    BadHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is accepted.
        expected: &'static str,
    },
    /// `TxnSize` differs from the stream's length.
    #[error("TXN header says {header} bytes, the stream has {actual}")]
    SizeMismatch {
        /// `TxnSize`.
        header: u32,
        /// Bytes given.
        actual: u64,
    },
    /// `NumOps` differs from the ops found.
    #[error("TXN header says {header} ops, the stream holds {found}")]
    OpCount {
        /// `NumOps`.
        header: u32,
        /// Ops decoded.
        found: u32,
    },
    /// An op runs past the end of the stream.
    #[error("op {op} (opcode {opcode:#x}) at word {word} needs {need} words, {left} left")]
    Truncated {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Opcode.
        opcode: u8,
        /// Words the op needs.
        need: usize,
        /// Words left in the stream.
        left: usize,
    },
    /// An opcode outside the v0.1 set we accept.
    #[error("op {op} at word {word}: unknown or unsupported opcode {opcode:#x}")]
    UnknownOpcode {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Opcode.
        opcode: u8,
    },
    /// An op's size field does not match its layout.
    #[error("op {op} (opcode {opcode:#x}) at word {word}: size field {size}, expected {expected}")]
    BadOpSize {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Opcode.
        opcode: u8,
        /// The size field.
        size: u32,
        /// What the layout requires.
        expected: &'static str,
    },
    /// A field with an impossible value.
    #[error("op {op} at word {word}: {field} = {value:#x} is invalid")]
    BadField {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A register address outside the device model's tiles.
    #[error("op {op} at word {word}: register {addr:#010x} (column {col}, row {row}) is outside the {cols}-column × {rows}-row array")]
    RegisterOutOfRange {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// The address.
        addr: u64,
        /// Its column.
        col: u32,
        /// Its row.
        row: u32,
        /// Columns allowed.
        cols: u32,
        /// Rows allowed.
        rows: u32,
    },
    /// A BLOCKWRITE that crosses the end of its tile's 1 MiB register space.
    #[error("op {op} at word {word}: BLOCKWRITE of {words} words at {addr:#010x} crosses the tile's address space")]
    BlockWriteCrossesTile {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Start address.
        addr: u32,
        /// Words written.
        words: usize,
    },
    /// A DDR_PATCH whose target is not word 1 of a shim-tile BD.
    #[error("op {op} at word {word}: DDR_PATCH target {reg_addr:#x} is not word 1 of a shim BD (c<<25 | 0x1D004 + bd·0x20)")]
    PatchTarget {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// The target.
        reg_addr: u64,
    },
    /// A DDR_PATCH naming a buffer the command does not pass.
    #[error("op {op} at word {word}: DDR_PATCH arg_idx {arg_idx}, but the command passes {args} buffer(s)")]
    PatchArgIndex {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// The index.
        arg_idx: u64,
        /// Buffers passed.
        args: usize,
    },
    /// `arg_idx ≥ 5` without the 0x80000000 DDR aperture in `arg_plus` (the firmware adds it
    /// only for arguments 0–4, npu-instruction-stream.md §5 rule 2).
    #[error("op {op} at word {word}: DDR_PATCH arg_idx {arg_idx} ≥ 5 needs 0x80000000 added to arg_plus ({arg_plus:#x})")]
    PatchAperture {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// The index.
        arg_idx: u64,
        /// `arg_plus`.
        arg_plus: u64,
    },
    /// A task pushed on a BD that was never written, is not valid, or has no DDR_PATCH.
    #[error("op {op} at word {word}: column {col} {dir:?}{channel} pushes BD {bd}, which {why}")]
    BadTask {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Column.
        col: u8,
        /// Direction.
        dir: Direction,
        /// Channel.
        channel: u8,
        /// BD id.
        bd: u8,
        /// What is wrong.
        why: String,
    },
    /// A BD whose address pattern leaves the buffer it points into.
    #[error("op {op} at word {word}: column {col} BD {bd} reads/writes bytes {first}..{end} of buffer {arg_idx}, which has {len} bytes")]
    BdOutOfBounds {
        /// Op index (the queue push).
        op: u32,
        /// Word offset.
        word: usize,
        /// Column.
        col: u8,
        /// BD id.
        bd: u8,
        /// Buffer index.
        arg_idx: usize,
        /// First byte touched.
        first: u64,
        /// One past the last byte touched.
        end: u64,
        /// Buffer length.
        len: u64,
    },
    /// A BD rewritten while a task that uses it still awaits its sync.
    #[error("op {op} at word {word}: column {col} BD {bd} is rewritten while a task using it is still outstanding")]
    BdRewrittenWhileQueued {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Column.
        col: u8,
        /// BD id.
        bd: u8,
    },
    /// A sync that no outstanding token-issuing task will ever satisfy.
    #[error("op {op} at word {word}: sync on column {col} {dir:?}{channel} has no outstanding token-issuing task; it would wait forever")]
    SyncWithoutTask {
        /// Op index.
        op: u32,
        /// Word offset.
        word: usize,
        /// Column.
        col: u8,
        /// Direction.
        dir: Direction,
        /// Channel.
        channel: u8,
    },
    /// A stream moving more bytes than the interpreter's limit.
    #[error("shim channel column {col} {dir:?}{channel} would move {bytes} bytes, more than the {limit}-byte limit")]
    TooMuchData {
        /// Column.
        col: u8,
        /// Direction.
        dir: Direction,
        /// Channel.
        channel: u8,
        /// Bytes.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The registered array model failed.
    #[error("array model: {0}")]
    Array(String),
}
