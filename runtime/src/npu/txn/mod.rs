//! TXN v0.1 instruction streams (`insts.bin`, `../shared/docs/npu-instruction-stream.md`):
//! parser, validator, shim-DMA interpreter and a small encoder.
//!
//! The NPU firmware runs the instruction stream of an `ERT_START_CU` command: it configures the
//! shim-tile DMAs (buffer descriptors, DDR address patches, task-queue pushes) that move data
//! between host buffers and the AIE array, and waits for their completion tokens. A stream the
//! firmware misreads hangs or corrupts memory on real hardware; this module refuses such streams
//! before submission and, on the emulated device, performs the transfers they describe.
//!
//! # API
//!
//! - [`parse`]`(words) -> Result<`[`Stream`]`, `[`TxnError`]`>`: header (version 0.1, DevGen,
//!   rows, columns, op count, byte size) and framing (each op's size field against its layout).
//!   [`Stream::ops`] iterates [`Located`] [`Op`]s.
//! - [`validate`]`(words, &`[`Limits`]`) -> Result<`[`Plan`]`, TxnError>`: everything [`parse`]
//!   checks, plus register addresses inside the array (header columns and the partition),
//!   BLOCKWRITEs inside one tile, DDR_PATCH targets (word 1 of a shim BD) and argument indices
//!   (within [`Limits::arg_lens`], with the `0x80000000` aperture for `arg_idx ≥ 5`), every
//!   pushed BD written, valid, patched, unchained, and with its whole address pattern (length,
//!   wraps, strides, iterations × repeat count) inside the buffer it points into; no BD rewritten
//!   while a task on it awaits its sync; no sync without an outstanding token-issuing task. The
//!   [`Plan`] lists the shim DMA [`Task`]s (a snapshot of each BD at its push), the register
//!   writes outside the shim DMA (run-time parameters) and a [`Summary`].
//! - [`check`]`(words, &Limits) -> Result<`[`CheckReport`]`, TxnError>`: the same checks without
//!   building a plan, allocation-free (what debug builds run before every submission).
//! - [`execute`]`(&plan, &mut dyn `[`DmaMemory`]`, &mut array)`: gathers the bytes every MM2S
//!   task reads (in push order, per channel), hands them to `array` as an [`ArrayIo`] (inputs per
//!   shim column and channel, zeroed outputs exactly as long as the S2MM tasks will write, the
//!   register writes), then scatters each S2MM output stream through its BDs. An "array" is a
//!   Rust model of what the AIE cores compute; it sees exactly the bytes the real shim DMAs would
//!   fetch.
//! - [`encode::TxnBuilder`]: emits WRITE/BLOCKWRITE/MASKWRITE/DDR_PATCH/sync and whole shim
//!   transfers ([`encode::TxnBuilder::shim_transfer`]); [`encode::copy_stream`] is the stream of
//!   the emulated copy program.
//!
//! # Where it runs
//!
//! - Debug builds validate every stream before submission (`npu::program`).
//! - The emulated device ([`crate::npu::emu`]) validates the stream it reads from device memory
//!   and executes it against the command's buffers for every `ERT_START_CU` with opcode 3;
//!   a stream it refuses ends the command in state ERROR with the validator's message.
//!
//! # Not modelled (refused or ignored, each stated in the error)
//!
//! BD chaining (`Use_Next_BD`), shim BD locks, packet mode, LOADPDI, syncs on non-shim tiles,
//! memtile/core DMAs started from the stream (their register writes are passed to the array model
//! as [`RegisterWrite`]s), MASKPOLL (accepted, no effect), READ_REGS/RECORD_TIMER (skipped), the
//! v1.0 "optimized" encoding and the pre-TXN IPU sequences (refused). What the firmware does with
//! DevGen, MASKPOLL_BUSY and PREEMPT is unverified (npu-instruction-stream.md §14).

pub mod encode;
mod error;
mod op;
pub mod shim_bd;
mod shim_dma;
mod validate;

pub use error::TxnError;
pub use op::{
    parse, Direction, Header, Located, Op, Ops, Stream, DEV_GENS, HEADER_WORDS, MAX_COLS,
    OP_BLOCKWRITE, OP_DDR_PATCH, OP_LOADPDI, OP_MASKPOLL, OP_MASKPOLL_BUSY, OP_MASKWRITE, OP_NOOP,
    OP_PREEMPT, OP_READ_REGS, OP_RECORD_TIMER, OP_TCT, OP_WRITE,
};
pub use shim_bd::ShimBd;
pub use shim_dma::{execute, ArrayIo, DmaMemory, ExecReport};
pub use validate::{
    check, validate, Channel, CheckReport, Limits, Plan, RegisterWrite, Summary, Task,
    DDR_APERTURE, FIRMWARE_TRANSLATED_ARGS, MAX_CHANNEL_BYTES, MAX_OUTSTANDING,
};

/// Little-endian bytes (an `insts.bin` file) as words; `None` if the length is not a multiple
/// of 4.
pub fn words_from_le_bytes(bytes: &[u8]) -> Option<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests;
