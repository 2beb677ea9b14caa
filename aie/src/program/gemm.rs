//! The TXN instruction stream of a whole matmul `out[m×n] = f(A[m×k] · Wᵀ)` on the GEMM design
//! (`aie/designs/gemm_i8.py`, geometry in `crate::design::GemmDesign`), for any `m`.
//!
//! Data movement (only the shim side is in the stream; memory-tile and core DMAs are in the
//! PDI, npu-instruction-stream.md §11):
//!
//! - **row streams** — shim column `j < 4`, MM2S channel 0, carries the rows `128·rb + 32·j ..
//!   +32` of the activation image as `k/64 + 1` objects of 32 rows × 64 bytes (the last one holds
//!   the row scales). Memory tile `j` broadcasts them to the four cores of core row `j` (all
//!   columns). One task per super-block `rb`, repeated once per channel group:
//!   BD `d0 = 16 words, d1 = 32 rows × (k+64)/4 words, d2 step 16 words`, length
//!   `16·32·(k/64+1)` words, Repeat_Count = groups − 1, no iteration stride (the same rows again);
//! - **column streams** — shim column `c`, MM2S channel 1, carries the weight image's 64-channel
//!   blocks `c, c + cols, …` (each `k/64 + 1` tiles of 4 KB, contiguous) to memory tile `c`, which
//!   broadcasts them to the four cores of column `c`. One task per super-block: linear BD of one
//!   block, iterated over the column's blocks (Iteration_Stepsize = `cols` blocks);
//! - **outputs** — core `(j, c)` writes 32 × 64 f32; memory tile `c` joins the four into 128 × 64;
//!   shim column `c`, S2MM channel 0, writes them to rows `128·rb..`, channels `64·(c + cols·g)`:
//!   BD `d0 = 64 words, d1 = 128 rows × n words`, iterated over the column's blocks, with a token.
//!
//! BDs alternate between two sets per column (ids 0-2 and 3-5), and before super-block `rb`
//! reuses a set the stream waits (TCT) for the outputs of `rb − 2`: at most two super-blocks are
//! in flight, and every token is awaited exactly once. An output task completing implies its
//! super-block's input tasks have been consumed, so waiting on outputs alone is enough before a
//! BD is rewritten. Buffer arguments: 0 = activation image, 1 = weight image, 2 = output
//! (`crate::program::images`), all below the firmware-translated argument 5 (§5).

use crate::design::{GemmDesign, BLOCK_ROWS, CORE_ROWS};
use crate::kernels::layout::{TILE_K, TILE_M, TILE_N, W_BYTES};
use crate::txn::{shim_bd_address, Dim, Direction, ShimBd, Sync, Txn};
use crate::AieError;

/// Runtime-sequence argument of the activation image.
pub const ARG_ACTIVATIONS: u32 = 0;
/// Runtime-sequence argument of the weight image.
pub const ARG_WEIGHTS: u32 = 1;
/// Runtime-sequence argument of the output.
pub const ARG_OUTPUT: u32 = 2;

/// BD ids of one column for BD set `s` (0 or 1): (row stream, column stream, output).
fn bd_ids(s: usize) -> (u8, u8, u8) {
    let b = 3 * s as u8;
    (b, b + 1, b + 2)
}

/// The instruction stream of one `m`-row matmul on design `d`.
///
/// # Errors
/// [`AieError::Shape`] for `m = 0` or more than 256 channel groups; [`AieError::BdField`] if a
/// BD field overflows (not reachable for shapes [`GemmDesign::new`] accepts; kept as a check).
pub fn gemm_program(d: &GemmDesign, m: usize) -> Result<Vec<u32>, AieError> {
    if m == 0 {
        return Err(AieError::Shape {
            what: "m",
            value: 0,
            reason: "a matmul needs at least one row",
        });
    }
    let mut txn = Txn::new(d.target);
    let blocks = d.row_blocks(m);
    for rb in 0..blocks {
        if rb >= 2 {
            wait_outputs(&mut txn, d);
        }
        push_block(&mut txn, d, rb)?;
    }
    for _ in 0..blocks.min(2) {
        wait_outputs(&mut txn, d);
    }
    Ok(txn.finish())
}

/// One TCT per output channel of the columns that produce output (oldest super-block first:
/// tokens of a channel arrive in push order).
fn wait_outputs(txn: &mut Txn, d: &GemmDesign) {
    for c in (0..d.cols()).filter(|&c| d.channel_tiles_of(c) > 0) {
        txn.sync(Sync::shim(Direction::S2mm, c as u8, 0));
    }
}

fn emit(
    txn: &mut Txn,
    col: u8,
    bd_id: u8,
    bd: ShimBd,
    arg: u32,
    plus: u64,
) -> Result<(), AieError> {
    let words = bd.encode(bd_id)?;
    let addr = shim_bd_address(col, bd_id);
    txn.blockwrite(addr, &words);
    txn.ddr_patch(addr + 4, arg, plus);
    Ok(())
}

fn push_block(txn: &mut Txn, d: &GemmDesign, rb: usize) -> Result<(), AieError> {
    let burst = d.target.generation.max_burst();
    let (row_bd, col_bd, out_bd) = bd_ids(rb % 2);
    let kt1 = d.k_tiles() + 1;
    let groups = d.channel_groups();
    // Row streams: rows 128·rb + 32·j, k/64 + 1 objects of 32 × 64 bytes.
    for j in 0..CORE_ROWS {
        let plus = ((rb * BLOCK_ROWS + j * TILE_M) * d.activation_row_bytes()) as u64;
        let row_words = (TILE_K / 4) as u32;
        let bd = ShimBd {
            length: row_words * TILE_M as u32 * kt1 as u32,
            word1: plus as u32,
            d0: Dim {
                wrap: row_words,
                stride: 1,
            },
            d1: Dim {
                wrap: TILE_M as u32,
                stride: (d.activation_row_bytes() / 4) as u32,
            },
            d2_stride: row_words,
            ..ShimBd::linear(0, burst)
        };
        emit(txn, j as u8, row_bd, bd, ARG_ACTIVATIONS, plus)?;
        txn.push_shim_task(j as u8, Direction::Mm2s, 0, row_bd, runs(groups)?, false);
    }
    // Column streams and outputs.
    let block_words = (d.weight_block_bytes() / 4) as u32;
    for c in 0..d.cols() {
        let tiles = d.channel_tiles_of(c);
        if tiles == 0 {
            continue;
        }
        let plus = (c * d.weight_block_bytes()) as u64;
        let bd = ShimBd {
            word1: plus as u32,
            iteration_wrap: tiles as u32,
            iteration_stride: if tiles > 1 {
                d.cols() as u32 * block_words
            } else {
                0
            },
            ..ShimBd::linear(block_words, burst)
        };
        emit(txn, c as u8, col_bd, bd, ARG_WEIGHTS, plus)?;
        txn.push_shim_task(c as u8, Direction::Mm2s, 1, col_bd, runs(tiles)?, false);

        let plus = ((rb * BLOCK_ROWS * d.n + c * TILE_N) * 4) as u64;
        let bd = ShimBd {
            length: (TILE_N * BLOCK_ROWS) as u32,
            word1: plus as u32,
            d0: Dim {
                wrap: TILE_N as u32,
                stride: 1,
            },
            d1: Dim {
                wrap: BLOCK_ROWS as u32,
                stride: d.n as u32,
            },
            iteration_wrap: tiles as u32,
            iteration_stride: if tiles > 1 {
                (d.cols() * TILE_N) as u32
            } else {
                0
            },
            ..ShimBd::linear(0, burst)
        };
        emit(txn, c as u8, out_bd, bd, ARG_OUTPUT, plus)?;
        txn.push_shim_task(c as u8, Direction::S2mm, 0, out_bd, runs(tiles)?, true);
    }
    debug_assert_eq!(W_BYTES % 4, 0);
    Ok(())
}

fn runs(n: usize) -> Result<u16, AieError> {
    if (1..=256).contains(&n) {
        Ok(n as u16)
    } else {
        Err(AieError::Shape {
            what: "n",
            value: n,
            reason: "more than 256 runs of one task",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{parse, Op, Target};

    #[test]
    fn stream_shape_for_base_fc1_over_a_window() {
        let d = GemmDesign::new(Target::NPU1, 512, 2048).unwrap();
        let words = gemm_program(&d, 1500).unwrap();
        let (h, ops) = parse(&words).unwrap();
        assert_eq!((h.dev_gen, h.cols, h.rows), (3, 4, 6));
        let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
        // 12 super-blocks × (4 row + 4 column + 4 output tasks).
        assert_eq!(count(|o| matches!(o, Op::BlockWrite { .. })), 12 * 12);
        assert_eq!(count(|o| matches!(o, Op::DdrPatch { .. })), 12 * 12);
        assert_eq!(count(|o| matches!(o, Op::Sync { .. })), 12 * 4);
        assert_eq!(count(|o| matches!(o, Op::MaskWrite { .. })), 12 * 4);
        assert!(words.len() < 8 * 1024, "{} words", words.len());
    }

    #[test]
    fn zero_rows_is_an_error() {
        let d = GemmDesign::new(Target::NPU1, 64, 64).unwrap();
        assert!(matches!(
            gemm_program(&d, 0),
            Err(AieError::Shape { what: "m", .. })
        ));
    }
}
