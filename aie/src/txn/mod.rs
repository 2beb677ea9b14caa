//! TXN v0.1 instruction streams (`insts.bin`): the encoder ([`Txn`]), shim and memory-tile
//! buffer descriptors ([`ShimBd`], [`MemtileBd`]) and a decoder ([`parse`]) for replays and
//! tests. Every layout follows `../shared/docs/npu-instruction-stream.md` (§ numbers below);
//! the golden tests (`tests/txn_golden.rs`) reproduce its worked examples word for word.
//!
//! **Output layout** (what [`Txn::finish`] returns, a plain `Vec<u32>` of little-endian words):
//! a 4-word header `[0x00 | 0x01<<8 | dev_gen<<16 | 6<<24, cols | 1<<8, n_ops, bytes]`, then the
//! ops back to back: WRITE (6 words), BLOCKWRITE (4 + n), MASKWRITE (7, mlir-aie form), MASKPOLL
//! (7), NOOP (1), PREEMPT (1), TCT sync (4), DDR_PATCH (12). Op-header bytes 1-2 are zero (the
//! mlir-aie flavour). Nothing else is ever emitted.

mod bd;
mod decode;
mod encode;

pub use bd::{Dim, MemtileBd, ShimBd, BD_WORDS};
pub use decode::{parse, DecodeError, Header, Op};
pub use encode::{
    shim_bd_address, shim_ctrl_address, shim_queue_address, tile_address, Direction, Generation,
    Sync, Target, Txn, CONTROLLER_ID_MASK, CONTROLLER_ID_VALUE,
};
