//! The TXN instruction stream of the LayerNorm + quantize design (`aie/designs/norm_quant.py`,
//! geometry in `crate::design::NormQuantDesign`) for `m` rows, and its array model: what the
//! cores (the kernel's Rust model) and memory tiles make of the streams.
//!
//! The plain quantize ([`NormQuantDesign::quantize`]) is the same stream without the
//! parameter task (and without r, x_out): x rows in, activation image rows out.
//!
//! Buffer arguments (all below the firmware-translated argument 5):
//! 0 = x (f32, `padded_rows × d`), 1 = r (f32, same; read only with a residual), 2 = the
//! parameter object (`crate::kernels::norm_quant::param_object`, padded to one 4-row x object),
//! 3 = the GEMM's activation image (rows of `d + 64` bytes: codes, scale, zeros;
//! `crate::program::images`), 4 = x_out (f32, written only with a residual; may be x itself).
//!
//! Shim side, per column `c` (the memory-tile and core DMAs are in the PDI):
//! - **MM2S 0**: first the parameter object once per core of the column (one task, Repeat_Count
//!   = cores − 1), then per round `rb` the rows `(rb·cols + c)·R .. + R` of x (`R = 4 ·
//!   cores per column`), one linear task;
//! - **MM2S 1** (residual): the same rows of r;
//! - **S2MM 0**: the activation image rows of the round. The memory tile delivers the cores'
//!   code runs re-laid into 64-byte row slices in (core, run, row) order, so the BD is
//!   `d0 = 16 words, d1 = 4 rows × (d + 64)/4 words, d2 step 16 words` (the runs), iterated
//!   over the column's cores (stride 4 rows), with a token;
//! - **S2MM 1** (residual): x_out rows of the round, linear, with a token.
//!
//! BDs alternate between two sets per column (ids 0-3, 8-11; the parameter BD is 15), and before
//! round `rb` reuses a set the stream waits for the outputs of `rb − 2`, as the GEMM stream
//! does.

use std::collections::BTreeMap;

use crate::design::NormQuantDesign;
use crate::kernels::layout::{a_offset, TILE_K};
use crate::kernels::norm_quant::{codes_bytes, norm_quant, quant, GROUP_BYTES, NQ_ROWS};
use crate::program::replay::Channel;
use crate::txn::{shim_bd_address, Dim, Direction, ShimBd, Sync, Txn};
use crate::AieError;

/// Runtime-sequence argument of x.
pub const ARG_X: u32 = 0;
/// Runtime-sequence argument of r.
pub const ARG_R: u32 = 1;
/// Runtime-sequence argument of the parameter object.
pub const ARG_PARAMS: u32 = 2;
/// Runtime-sequence argument of the activation image.
pub const ARG_IMAGE: u32 = 3;
/// Runtime-sequence argument of x_out.
pub const ARG_X_OUT: u32 = 4;

/// BD id of the parameter object's task.
const PARAMS_BD: u8 = 15;

/// Rounds for `m` rows.
pub fn rounds(d: &NormQuantDesign, m: usize) -> usize {
    m.div_ceil(d.rows_per_round())
}

/// Rows the x, r, x_out and image buffers must hold for `m` rows (whole rounds).
pub fn padded_rows(d: &NormQuantDesign, m: usize) -> usize {
    rounds(d, m) * d.rows_per_round()
}

/// Bytes of the buffer arguments 0-4 for `m` rows.
pub fn arg_lens(d: &NormQuantDesign, m: usize) -> [usize; 5] {
    let rows = padded_rows(d, m);
    [
        rows * d.d * 4,
        rows * d.d * 4,
        d.row_object_bytes(),
        rows * (d.d + TILE_K),
        rows * d.d * 4,
    ]
}

fn rows_per_column(d: &NormQuantDesign) -> usize {
    d.cores_per_column() * NQ_ROWS
}

/// The instruction stream for `m` rows on design `d`.
///
/// # Errors
/// [`AieError::NormWidth`] for `m = 0` (nothing to normalize); [`AieError::BdField`] if a BD
/// field overflows.
pub fn norm_program(d: &NormQuantDesign, m: usize) -> Result<Vec<u32>, AieError> {
    if m == 0 {
        return Err(AieError::NormWidth {
            d: d.d,
            reason: "a norm submission needs at least one row",
        });
    }
    let mut txn = Txn::new(d.target);
    let burst = d.target.generation.max_burst();
    let cols = d.target.cols as usize;
    let obj_words = (d.row_object_bytes() / 4) as u32;
    // The plain quantize has no parameter object.
    for c in (0..cols).filter(|_| d.norm) {
        let bd = ShimBd::linear(obj_words, burst);
        emit(&mut txn, c as u8, PARAMS_BD, bd, ARG_PARAMS, 0)?;
        let runs = d.cores_per_column() as u16;
        txn.push_shim_task(c as u8, Direction::Mm2s, 0, PARAMS_BD, runs, false);
    }
    let n = rounds(d, m);
    for rb in 0..n {
        if rb >= 2 {
            wait_outputs(&mut txn, d);
        }
        push_round(&mut txn, d, rb)?;
    }
    for _ in 0..n.min(2) {
        wait_outputs(&mut txn, d);
    }
    Ok(txn.finish())
}

fn wait_outputs(txn: &mut Txn, d: &NormQuantDesign) {
    for c in 0..d.target.cols {
        txn.sync(Sync::shim(Direction::S2mm, c, 0));
        if d.residual {
            txn.sync(Sync::shim(Direction::S2mm, c, 1));
        }
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
    let bd = ShimBd {
        word1: plus as u32,
        ..bd
    };
    let words = bd.encode(bd_id)?;
    let addr = shim_bd_address(col, bd_id);
    txn.blockwrite(addr, &words);
    txn.ddr_patch(addr + 4, arg, plus);
    Ok(())
}

fn push_round(txn: &mut Txn, d: &NormQuantDesign, rb: usize) -> Result<(), AieError> {
    let burst = d.target.generation.max_burst();
    let cols = d.target.cols as usize;
    let set = (8 * (rb % 2)) as u8;
    let (x_bd, r_bd, img_bd, xo_bd) = (set, set + 1, set + 2, set + 3);
    let rows = rows_per_column(d);
    let f32_words = (rows * d.d) as u32;
    let row_bytes = d.d + TILE_K;
    let runs = d.d / TILE_K + 1;
    for c in 0..cols {
        let col = c as u8;
        let row0 = (rb * cols + c) * rows;
        let f32_plus = (row0 * d.d * 4) as u64;
        emit(
            txn,
            col,
            x_bd,
            ShimBd::linear(f32_words, burst),
            ARG_X,
            f32_plus,
        )?;
        txn.push_shim_task(col, Direction::Mm2s, 0, x_bd, 1, false);
        if d.residual {
            emit(
                txn,
                col,
                r_bd,
                ShimBd::linear(f32_words, burst),
                ARG_R,
                f32_plus,
            )?;
            txn.push_shim_task(col, Direction::Mm2s, 1, r_bd, 1, false);
        }
        let slice_words = (TILE_K / 4) as u32;
        let img = ShimBd {
            length: slice_words * NQ_ROWS as u32 * runs as u32,
            d0: Dim {
                wrap: slice_words,
                stride: 1,
            },
            d1: Dim {
                wrap: NQ_ROWS as u32,
                stride: (row_bytes / 4) as u32,
            },
            d2_stride: slice_words,
            iteration_wrap: d.cores_per_column() as u32,
            iteration_stride: (NQ_ROWS * row_bytes / 4) as u32,
            ..ShimBd::linear(0, burst)
        };
        emit(txn, col, img_bd, img, ARG_IMAGE, (row0 * row_bytes) as u64)?;
        let cores = d.cores_per_column() as u16;
        txn.push_shim_task(col, Direction::S2mm, 0, img_bd, cores, true);
        if d.residual {
            emit(
                txn,
                col,
                xo_bd,
                ShimBd::linear(f32_words, burst),
                ARG_X_OUT,
                f32_plus,
            )?;
            txn.push_shim_task(col, Direction::S2mm, 1, xo_bd, 1, true);
        }
    }
    Ok(())
}

/// The array's side of a norm submission: from the bytes the shim MM2S tasks delivered
/// (`sent`, keyed by `(column, Mm2s, channel)`), what the cores compute (the kernel's Rust
/// model, 4 rows a call) and the memory tiles send back, keyed by `(column, S2mm, channel)`:
/// channel 0 the code runs re-laid into 64-byte row slices in (core, run, row) order, channel 1 (with
/// a residual) the updated rows.
///
/// # Errors
/// A stream whose length is not the parameter objects plus whole rounds, or a missing one.
pub fn norm_array(
    d: &NormQuantDesign,
    sent: &BTreeMap<Channel, Vec<u8>>,
) -> Result<BTreeMap<Channel, Vec<u8>>, String> {
    let cols = d.target.cols;
    let per_col = d.cores_per_column();
    let obj = d.row_object_bytes();
    let rows = rows_per_column(d);
    let round_bytes = rows * d.d * 4;
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    };
    // The parameter objects at the head of each column's x stream (none for the quantize).
    let objs = if d.norm { per_col } else { 0 };
    let mut produced = BTreeMap::new();
    let mut x_out = vec![0f32; NQ_ROWS * d.d];
    let mut codes = vec![0u8; codes_bytes(d.d)];
    let mut y = vec![0f32; d.d];
    for col in 0..cols {
        let xs = sent
            .get(&(col, Direction::Mm2s, 0))
            .ok_or_else(|| format!("column {col}: no x stream"))?;
        if xs.len() < objs * obj || !(xs.len() - objs * obj).is_multiple_of(round_bytes) {
            return Err(format!(
                "column {col}: x stream of {} bytes is not {objs} parameter objects + whole \
                 rounds of {round_bytes}",
                xs.len()
            ));
        }
        let n = (xs.len() - objs * obj) / round_bytes;
        let r = if d.residual {
            let r = sent
                .get(&(col, Direction::Mm2s, 1))
                .ok_or_else(|| format!("column {col}: no residual stream"))?;
            if r.len() != n * round_bytes {
                return Err(format!(
                    "column {col}: residual stream of {} bytes, x has {n} rounds",
                    r.len()
                ));
            }
            Some(f32s(r))
        } else {
            None
        };
        // Each core's own copy of the parameters (the first object of its split).
        let params: Vec<Vec<f32>> = (0..objs)
            .map(|j| f32s(&xs[j * obj..(j + 1) * obj]))
            .collect();
        let x = f32s(&xs[objs * obj..]);
        let mut img = Vec::with_capacity(n * per_col * codes_bytes(d.d));
        let mut xo = Vec::with_capacity(if d.residual { n * round_bytes } else { 0 });
        for rb in 0..n {
            if !d.norm {
                for j in 0..per_col {
                    let at = (rb * rows + j * NQ_ROWS) * d.d;
                    quant(&x[at..at + NQ_ROWS * d.d], &mut codes);
                    unblock_runs(&codes, &mut img);
                }
                continue;
            }
            for (j, p) in params.iter().enumerate() {
                let at = (rb * rows + j * NQ_ROWS) * d.d;
                let group = at..at + NQ_ROWS * d.d;
                let (gamma, rest) = p.split_at(d.d);
                let (beta, rest) = rest.split_at(d.d);
                norm_quant(
                    &x[group.clone()],
                    r.as_ref().map(|r| &r[group.clone()]),
                    gamma,
                    beta,
                    rest[0],
                    &mut x_out,
                    &mut codes,
                    &mut y,
                );
                unblock_runs(&codes, &mut img);
                if d.residual {
                    xo.extend(x_out.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
        }
        produced.insert((col, Direction::S2mm, 0), img);
        if d.residual {
            produced.insert((col, Direction::S2mm, 1), xo);
        }
    }
    Ok(produced)
}

/// The memory tile's re-layout of one call's runs (A-object order, [`GROUP_BYTES`] each) into
/// 64-byte row slices, run by run, row by row: the order the S2MM 0 BD writes into rows.
pub fn unblock_runs(codes: &[u8], out: &mut Vec<u8>) {
    for run in codes.chunks_exact(GROUP_BYTES) {
        for m in 0..NQ_ROWS {
            out.extend((0..TILE_K).map(|k| run[a_offset(m, k)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{parse, Op, Target};

    #[test]
    fn stream_shape_for_base_over_a_window() {
        let d = NormQuantDesign::new(Target::NPU1, 512, true).unwrap();
        let words = norm_program(&d, 1500).unwrap();
        let (_, ops) = parse(&words).unwrap();
        // 47 rounds of 32 rows; per round and column 4 tasks, 2 of them with tokens; and the
        // parameter task per column.
        assert_eq!(rounds(&d, 1500), 47);
        let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
        assert_eq!(
            count(|o| matches!(o, Op::BlockWrite { .. })),
            4 + 47 * 4 * 4
        );
        assert_eq!(count(|o| matches!(o, Op::Sync { .. })), 47 * 4 * 2);
        assert!(matches!(
            norm_program(&d, 0),
            Err(AieError::NormWidth { .. })
        ));
        // The plain quantize of fc2's input: no parameter task; per round and column the x
        // and image BDs, one token (the image).
        let q = NormQuantDesign::quantize(Target::NPU1, 2048).unwrap();
        let (_, ops) = parse(&norm_program(&q, 100).unwrap()).unwrap();
        assert_eq!(rounds(&q, 100), 2);
        let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
        assert_eq!(count(|o| matches!(o, Op::BlockWrite { .. })), 2 * 4 * 2);
        assert_eq!(count(|o| matches!(o, Op::Sync { .. })), 2 * 4);
    }
}
