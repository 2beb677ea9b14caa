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
//! The decoder mapping (`Mapping::ChannelSpread`, M of 1-5) is documented at
//! `push_spread_block`.
//!
//! BDs alternate between two sets per column (ids 0-7 and 8-15), and before super-block `rb`
//! reuses a set the stream waits (TCT) for the outputs of `rb − 2`: at most two super-blocks are
//! in flight, and every token is awaited exactly once. An output task completing implies its
//! super-block's input tasks have been consumed, so waiting on outputs alone is enough before a
//! BD is rewritten. Buffer arguments: 0 = activation image, 1 = weight image, 2 = output
//! (`crate::program::images`), all below the firmware-translated argument 5 (§5).

use crate::design::{GemmDesign, Mapping, CORE_ROWS};
use crate::kernels::layout::{TILE_K, TILE_M, TILE_N, W_BYTES};
use crate::txn::{shim_bd_address, Dim, Direction, ShimBd, Sync, Txn};
use crate::AieError;

/// Runtime-sequence argument of the activation image.
pub const ARG_ACTIVATIONS: u32 = 0;
/// Runtime-sequence argument of the weight image.
pub const ARG_WEIGHTS: u32 = 1;
/// Runtime-sequence argument of the output.
pub const ARG_OUTPUT: u32 = 2;

/// BD ids of one column in BD set `s` (0 or 1): the row stream, the output, then the column
/// stream's BDs (one per quad for the decoder mapping).
fn bd_ids(s: usize) -> (u8, u8, u8) {
    let b = (8 * s) as u8;
    (b, b + 1, b + 2)
}

/// The instruction stream of one `m`-row matmul on design `d`.
///
/// # Errors
/// [`AieError::Shape`] for `m = 0`; [`AieError::BdField`] if a BD field overflows (not
/// reachable for shapes [`GemmDesign::with_mapping`] accepts; kept as a check).
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
        match d.mapping {
            Mapping::RowBlocks => push_row_block(&mut txn, d, rb)?,
            Mapping::ChannelSpread => push_spread_block(&mut txn, d, rb)?,
        }
    }
    for _ in 0..blocks.min(2) {
        wait_outputs(&mut txn, d);
    }
    Ok(txn.finish())
}

/// One TCT per output channel of the columns that produce output (oldest super-block first:
/// tokens of a channel arrive in push order).
fn wait_outputs(txn: &mut Txn, d: &GemmDesign) {
    for c in (0..d.cols()).filter(|&c| d.groups_of(c) > 0) {
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

/// The rows `row0..row0 + 32` of the activation image as `k/64 + 1` objects of 32 × 64 bytes,
/// `runs` times, on MM2S 0 of column `col`.
fn push_rows(
    txn: &mut Txn,
    d: &GemmDesign,
    col: u8,
    bd_id: u8,
    row0: usize,
    runs: usize,
) -> Result<(), AieError> {
    let plus = (row0 * d.activation_row_bytes()) as u64;
    let row_words = (TILE_K / 4) as u32;
    let bd = ShimBd {
        length: row_words * TILE_M as u32 * (d.k_tiles() + 1) as u32,
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
        ..ShimBd::linear(0, d.target.generation.max_burst())
    };
    emit(txn, col, bd_id, bd, ARG_ACTIVATIONS, plus)?;
    txn.push_shim_task(col, Direction::Mm2s, 0, bd_id, runs_of(runs)?, false);
    Ok(())
}

fn push_row_block(txn: &mut Txn, d: &GemmDesign, rb: usize) -> Result<(), AieError> {
    let burst = d.target.generation.max_burst();
    let (row_bd, out_bd, col_bd) = bd_ids(rb % 2);
    let rows = d.block_rows();
    for j in 0..CORE_ROWS {
        push_rows(
            txn,
            d,
            j as u8,
            row_bd,
            rb * rows + j * TILE_M,
            d.channel_groups(),
        )?;
    }
    let block_words = (d.weight_block_bytes() / 4) as u32;
    for c in 0..d.cols() {
        let tiles = d.groups_of(c);
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
        txn.push_shim_task(c as u8, Direction::Mm2s, 1, col_bd, runs_of(tiles)?, false);
        push_output(txn, d, c, out_bd, rb, 1, tiles)?;
    }
    Ok(())
}

/// Decoder mapping: column `c` gets the 32 rows (once per quad) and, per quad `q = c + cols·g`,
/// depth step by depth step the four blocks' tiles (`4q..4q+4`), one task per quad:
/// BD `d0 = 512 words, d1 = 2 × 512 words (one 4 KB tile), d2 = 4 blocks × block`, iterated
/// over the `k/64 + 1` steps (stride one tile).
fn push_spread_block(txn: &mut Txn, d: &GemmDesign, rb: usize) -> Result<(), AieError> {
    let burst = d.target.generation.max_burst();
    let (row_bd, out_bd, col_bd0) = bd_ids(rb % 2);
    let block_words = (d.weight_block_bytes() / 4) as u32;
    let tile_words = (W_BYTES / 4) as u32;
    let steps = d.k_tiles() + 1;
    for c in 0..d.cols() {
        let quads = d.groups_of(c);
        if quads == 0 {
            continue;
        }
        push_rows(txn, d, c as u8, row_bd, rb * d.block_rows(), quads)?;
        for g in 0..quads {
            let q = c + d.cols() * g;
            let plus = (CORE_ROWS * q * d.weight_block_bytes()) as u64;
            let bd = ShimBd {
                length: tile_words * CORE_ROWS as u32,
                word1: plus as u32,
                d0: Dim {
                    wrap: tile_words / 2,
                    stride: 1,
                },
                d1: Dim {
                    wrap: 2,
                    stride: tile_words / 2,
                },
                d2_stride: block_words,
                iteration_wrap: steps as u32,
                iteration_stride: tile_words,
                ..ShimBd::linear(0, burst)
            };
            let bd_id = col_bd0 + g as u8;
            emit(txn, c as u8, bd_id, bd, ARG_WEIGHTS, plus)?;
            txn.push_shim_task(c as u8, Direction::Mm2s, 1, bd_id, runs_of(steps)?, false);
        }
        push_output(txn, d, c, out_bd, rb, CORE_ROWS, quads)?;
    }
    Ok(())
}

/// The S2MM task of column `c` for super-block `rb`: per group, `blocks` side-by-side 64-wide
/// blocks of `block_rows / blocks`… rows: row-major 128 × 64 (row mapping, `blocks = 1`) or
/// four 32 × 64 blocks next to each other (decoder mapping, `blocks = 4`).
fn push_output(
    txn: &mut Txn,
    d: &GemmDesign,
    c: usize,
    bd_id: u8,
    rb: usize,
    blocks: usize,
    groups: usize,
) -> Result<(), AieError> {
    let rows = d.block_rows();
    let width = d.out_width();
    let plus = ((rb * rows * width + c * blocks * TILE_N) * 4) as u64;
    let bd = ShimBd {
        length: (TILE_N * rows * blocks) as u32,
        word1: plus as u32,
        d0: Dim {
            wrap: TILE_N as u32,
            stride: 1,
        },
        d1: Dim {
            wrap: rows as u32,
            stride: width as u32,
        },
        d2_stride: TILE_N as u32,
        iteration_wrap: groups as u32,
        iteration_stride: if groups > 1 {
            (d.cols() * blocks * TILE_N) as u32
        } else {
            0
        },
        ..ShimBd::linear(0, d.target.generation.max_burst())
    };
    emit(txn, c as u8, bd_id, bd, ARG_OUTPUT, plus)?;
    txn.push_shim_task(c as u8, Direction::S2mm, 0, bd_id, runs_of(groups)?, true);
    Ok(())
}

fn runs_of(n: usize) -> Result<u16, AieError> {
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
        assert_eq!(words.len(), 4852, "{} words", words.len());
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
