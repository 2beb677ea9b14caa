//! The device programs' geometry at Whisper's shapes, matching the IRON designs in
//! `aie/designs/` (`gemm_i8.py`, `attention.py`), with their memory budgets checked against the
//! hardware (`../shared/docs/npu-hardware.md`: 64 KB data memory per compute tile, 512 KB per
//! memory tile).

use crate::kernels::attention::{HEAD_DIM, KEY_CHUNK, MAX_KEYS, Q_ROWS};
use crate::kernels::layout::{A_BYTES, C_ELEMS, TILE_K, TILE_M, TILE_N, W_BYTES};
use crate::kernels::norm_quant::{codes_bytes, param_bytes, NQ_ROWS};
use crate::txn::Target;
use crate::AieError;

/// Data memory of a compute tile (AIE-ML: 64 KB).
pub const L1_BYTES: usize = 64 * 1024;
/// Data memory of a memory tile (AIE-ML: 512 KB).
pub const L2_BYTES: usize = 512 * 1024;
/// Bytes kept free in L1 for the core's stack and the kernels' locals.
pub const L1_STACK_RESERVE: usize = 2 * 1024;
/// Compute rows per column (all NPU models).
pub const CORE_ROWS: usize = 4;
/// Rows of one super-block: the four core rows × 32.
pub const BLOCK_ROWS: usize = CORE_ROWS * TILE_M;

/// Whisper dimensions the designs are instantiated at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WhisperDims {
    /// Model name.
    pub name: &'static str,
    /// `d_model`.
    pub d: usize,
    /// MLP width (4·d).
    pub mlp: usize,
    /// Heads (d / 64).
    pub heads: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
}

/// Encoder rows of a 30 s window (3000 mel frames after the stride-2 convolution).
pub const ENCODER_ROWS: usize = 1500;
/// Largest decoder text context.
pub const TEXT_CONTEXT: usize = 448;
/// Vocabulary (the logits stay on the CPU, see `crate::budget`).
pub const VOCAB: usize = 51865;

/// whisper-tiny / tiny.en.
pub const TINY: WhisperDims = WhisperDims {
    name: "tiny",
    d: 384,
    mlp: 1536,
    heads: 6,
    encoder_layers: 4,
    decoder_layers: 4,
};
/// whisper-base.
pub const BASE: WhisperDims = WhisperDims {
    name: "base",
    d: 512,
    mlp: 2048,
    heads: 8,
    encoder_layers: 6,
    decoder_layers: 6,
};

/// How the GEMM design spreads a matmul over the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Encoder-sized M: 128-row super-blocks, core row `j` takes rows `32·j..`, column `c`
    /// takes channel blocks `c, c + cols, …` (row streams broadcast along core rows, column
    /// streams along columns).
    RowBlocks,
    /// Decoder-sized M (1-5 rows: greedy, beam 5): 32-row super-blocks, every core of a
    /// column takes its own channel block of a quad of four (`4·q + j`), column `c` the quads
    /// `c, c + cols, …`; the 32 rows are broadcast to the four cores of each column. Nothing
    /// computes or moves 96 padding rows; the weight image is padded to whole quads.
    ChannelSpread,
}

/// The GEMM design for one weight shape `k × n` (both multiples of 64; `K` and the per-column
/// tile counts are compiled into the cores, like every mlir-aie GEMM): `cols` columns × 4 core
/// rows, each core a 32 × 64 output tile per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDesign {
    /// Target device model (columns used = `target.cols`).
    pub target: Target,
    /// Depth (input features), a multiple of 64.
    pub k: usize,
    /// Output channels, a multiple of 64.
    pub n: usize,
    /// Work split.
    pub mapping: Mapping,
}

/// BDs one column may use per BD set (two sets alternate; 16 shim BDs per column).
pub const BDS_PER_SET: usize = 8;

impl GemmDesign {
    /// The encoder-sized design ([`Mapping::RowBlocks`]) for `k × n` on `target`, or why not.
    pub fn new(target: Target, k: usize, n: usize) -> Result<GemmDesign, AieError> {
        Self::with_mapping(target, k, n, Mapping::RowBlocks)
    }

    /// The decoder-sized design ([`Mapping::ChannelSpread`]).
    pub fn decoder(target: Target, k: usize, n: usize) -> Result<GemmDesign, AieError> {
        Self::with_mapping(target, k, n, Mapping::ChannelSpread)
    }

    /// The design for `k × n` with `mapping`, or why not.
    pub fn with_mapping(
        target: Target,
        k: usize,
        n: usize,
        mapping: Mapping,
    ) -> Result<GemmDesign, AieError> {
        let bad = |what, value, reason| {
            Err(AieError::Shape {
                what,
                value,
                reason,
            })
        };
        if k == 0 || !k.is_multiple_of(TILE_K) {
            return bad(
                "k",
                k,
                "must be a positive multiple of 64 (the model file pads it)",
            );
        }
        if n == 0 || !n.is_multiple_of(TILE_N) {
            return bad(
                "n",
                n,
                "must be a positive multiple of 64 (the model file pads it)",
            );
        }
        let d = GemmDesign {
            target,
            k,
            n,
            mapping,
        };
        if d.groups_of(0) > 64 {
            return bad(
                "n",
                n,
                "more than 64 channel groups per column (6-bit iteration count)",
            );
        }
        if mapping == Mapping::ChannelSpread && 2 + d.groups_of(0) > BDS_PER_SET {
            return bad(
                "n",
                n,
                "more than 6 channel quads per column (shim BDs per set)",
            );
        }
        if d.k_tiles() + 1 > 64 {
            return bad("k", k, "more than 63 depth steps (6-bit iteration count)");
        }
        d.check_budgets()?;
        Ok(d)
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.target.cols as usize
    }

    /// Depth steps `k / 64`.
    pub fn k_tiles(&self) -> usize {
        self.k / TILE_K
    }

    /// 64-channel blocks `n / 64`.
    pub fn n_tiles(&self) -> usize {
        self.n / TILE_N
    }

    /// 64-channel blocks in the weight image and the output rows: `n / 64`, rounded up to
    /// whole quads for [`Mapping::ChannelSpread`] (the extra blocks are zero).
    pub fn image_tiles(&self) -> usize {
        match self.mapping {
            Mapping::RowBlocks => self.n_tiles(),
            Mapping::ChannelSpread => self.n_tiles().div_ceil(CORE_ROWS) * CORE_ROWS,
        }
    }

    /// Floats per output row (`image_tiles · 64`).
    pub fn out_width(&self) -> usize {
        self.image_tiles() * TILE_N
    }

    /// Channel groups column `c` computes per super-block: channel blocks `c, c + cols, …`
    /// ([`Mapping::RowBlocks`]) or quads `c, c + cols, …` ([`Mapping::ChannelSpread`]).
    pub fn groups_of(&self, c: usize) -> usize {
        let units = match self.mapping {
            Mapping::RowBlocks => self.n_tiles(),
            Mapping::ChannelSpread => self.image_tiles() / CORE_ROWS,
        };
        (units + self.cols() - 1).saturating_sub(c) / self.cols()
    }

    /// Channel groups per super-block (the most any column has).
    pub fn channel_groups(&self) -> usize {
        self.groups_of(0)
    }

    /// Rows of a super-block: 128 or 32.
    pub fn block_rows(&self) -> usize {
        match self.mapping {
            Mapping::RowBlocks => BLOCK_ROWS,
            Mapping::ChannelSpread => TILE_M,
        }
    }

    /// Bytes of one row of the activation image: the codes, then 64 bytes holding the row's
    /// scale (f32 LE) and zeros.
    pub fn activation_row_bytes(&self) -> usize {
        self.k + TILE_K
    }

    /// Bytes of one 64-channel block of the device weight image: its `k/64` file tiles, then
    /// the parameter tile (per channel: scale, bias as f32 LE, zeros).
    pub fn weight_block_bytes(&self) -> usize {
        (self.k_tiles() + 1) * W_BYTES
    }

    /// Super-blocks for `m` rows.
    pub fn row_blocks(&self, m: usize) -> usize {
        m.div_ceil(self.block_rows())
    }

    /// Rows the activation and output buffers hold for `m` rows (whole super-blocks; the rows
    /// past `m` are computed from whatever the buffer holds and must be ignored).
    pub fn padded_rows(&self, m: usize) -> usize {
        self.row_blocks(m) * self.block_rows()
    }

    /// Compute-tile data memory: A, W and C objects, each double-buffered.
    pub fn l1_bytes(&self) -> usize {
        2 * A_BYTES + 2 * W_BYTES + 2 * C_ELEMS * 4
    }

    /// Memory-tile data memory: the row stream's and the column stream's forwarding buffers
    /// (double-buffered; a column object is a quad of tiles for [`Mapping::ChannelSpread`])
    /// and the join of four C objects (double-buffered).
    pub fn l2_bytes(&self) -> usize {
        let col_obj = match self.mapping {
            Mapping::RowBlocks => W_BYTES,
            Mapping::ChannelSpread => CORE_ROWS * W_BYTES,
        };
        2 * A_BYTES + 2 * col_obj + 2 * CORE_ROWS * C_ELEMS * 4
    }

    fn check_budgets(&self) -> Result<(), AieError> {
        check_budget("compute tile", self.l1_bytes() + L1_STACK_RESERVE, L1_BYTES)?;
        check_budget("memory tile", self.l2_bytes(), L2_BYTES)
    }
}

fn check_budget(tile: &'static str, need: usize, have: usize) -> Result<(), AieError> {
    if need > have {
        Err(AieError::Budget { tile, need, have })
    } else {
        Ok(())
    }
}

/// The attention design (`aie/designs/attention.py`): each core takes groups of 4 queries of one
/// head; K chunks (int8) and V chunks (bf16) of 32 keys are broadcast from the memory tile to
/// the four cores of a column (encoder: the head's K/V stay in the memory tile for all its
/// query rounds, so DDR supplies them once per head).
pub struct AttentionDesign;

impl AttentionDesign {
    /// Compute-tile data memory: Q object and scales, K and V chunks double-buffered, the f32
    /// score rows, the bf16 probability rows, the output double-buffered.
    pub fn l1_bytes() -> usize {
        let q = Q_ROWS * HEAD_DIM + Q_ROWS * 4 + Q_ROWS * 4;
        let k = 2 * (KEY_CHUNK * HEAD_DIM + KEY_CHUNK * 4);
        let v = 2 * KEY_CHUNK * HEAD_DIM * 2;
        let scores = Q_ROWS * MAX_KEYS * 4;
        let p = Q_ROWS * MAX_KEYS * 2;
        let out = 2 * Q_ROWS * HEAD_DIM * 4;
        q + k + v + scores + p + out
    }

    /// Memory-tile data memory (encoder mapping): one head's K (codes + scales) and V resident
    /// for the whole head, replayed to the four cores once per round; Q objects for the four
    /// cores and the joined outputs, double-buffered.
    pub fn l2_bytes() -> usize {
        let kv = MAX_KEYS * (HEAD_DIM + 4) + MAX_KEYS * HEAD_DIM * 2;
        let q = 2 * CORE_ROWS * Q_ROWS * (HEAD_DIM + 8);
        let out = 2 * CORE_ROWS * Q_ROWS * HEAD_DIM * 4;
        kv + q + out
    }

    /// Checks both budgets.
    pub fn check() -> Result<(), AieError> {
        check_budget(
            "compute tile",
            Self::l1_bytes() + L1_STACK_RESERVE,
            L1_BYTES,
        )?;
        check_budget("memory tile", Self::l2_bytes(), L2_BYTES)
    }
}

/// The LayerNorm + quantize design (`aie/designs/norm_quant.py`, kernel
/// `aie/kernels/norm_quant.cc`): every core takes 4-row groups of the residual stream; with a
/// residual (`add_norm_quant`: `x += r` first) two cores per column, without one
/// (`norm_quant`) four.
///
/// Per column, shim MM2S 0 carries the x rows (its first object: the parameter object, padded
/// to one x object, once per core; the kernel copies it into its own array), MM2S 1 the
/// residual rows; the memory tile splits each round's rows over the column's cores. The
/// cores' codes (A-object runs) and updated rows go back through the memory tile (joined; the
/// codes re-laid into rows on the way) to shim S2MM 0 (the GEMM's activation image, rows of
/// `d + 64` bytes) and S2MM 1 (x). Memory-tile channels with a residual: MM2S 2 + 2 (x and r
/// split over 2 cores) + 2 (codes, x out), S2MM 2 (x, r in) + 2 + 2 (the joins): the 6 + 6 an
/// AIE-ML memory tile has. Without: MM2S 4 + 1, S2MM 1 + 4. Four cores per column with a
/// residual would need 10 MM2S.
///
/// **The plain quantize** ([`NormQuantDesign::quantize`], `--quantize`): the same geometry
/// without the norm, for a GEMM's f32 output rows (fc1's GELU output before fc2): no parameter
/// object, four cores per column, x single-buffered in L1 (a 4-row object of fc2's input is
/// `16·d` bytes: 32 KB for base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormQuantDesign {
    /// Target device model.
    pub target: Target,
    /// Row width (`d_model`; fc2's depth for the plain quantize), a multiple of 64.
    pub d: usize,
    /// `add_norm_quant` (residual add first) or `norm_quant`.
    pub residual: bool,
    /// The LayerNorm (false: the plain quantize `nq_quant`; then `residual` is false).
    pub norm: bool,
}

impl NormQuantDesign {
    /// The design for rows of width `d`, or why not (width, or the L1 budget: with a residual
    /// `d = 768` needs 84.6 KB + the stack; without one 36.6 KB fits).
    pub fn new(target: Target, d: usize, residual: bool) -> Result<Self, AieError> {
        NormQuantDesign {
            target,
            d,
            residual,
            norm: true,
        }
        .checked()
    }

    /// The plain quantize for rows of width `d`, or why not (width, the L1 budget: d = 3072,
    /// whisper-small's fc2 input, needs 72.5 KB + the stack).
    pub fn quantize(target: Target, d: usize) -> Result<Self, AieError> {
        NormQuantDesign {
            target,
            d,
            residual: false,
            norm: false,
        }
        .checked()
    }

    fn checked(self) -> Result<Self, AieError> {
        let d = self.d;
        if d == 0 || !d.is_multiple_of(TILE_K) {
            return Err(AieError::NormWidth {
                d,
                reason: "must be a positive multiple of 64 (the A objects' depth step)",
            });
        }
        let design = self;
        check_budget(
            "compute tile",
            design.l1_bytes() + L1_STACK_RESERVE,
            L1_BYTES,
        )?;
        check_budget("memory tile", design.l2_bytes(), L2_BYTES)?;
        Ok(design)
    }

    /// Cores used per column: 2 with a residual, 4 without (memory-tile DMA channels).
    pub fn cores_per_column(&self) -> usize {
        if self.residual {
            2
        } else {
            CORE_ROWS
        }
    }

    /// Cores used.
    pub fn cores(&self) -> usize {
        self.target.cols as usize * self.cores_per_column()
    }

    /// Bytes of one x (or r, or x_out) object: 4 rows of f32.
    pub fn row_object_bytes(&self) -> usize {
        NQ_ROWS * self.d * 4
    }

    /// Compute-tile data memory: x double-buffered (its first object is the parameter object,
    /// padded to an x object), r and x_out double-buffered (with a residual), the codes
    /// double-buffered, and the kernel's own copy of the parameters (`nq_load_params`).
    pub fn l1_bytes(&self) -> usize {
        let x = self.row_object_bytes();
        if !self.norm {
            // The plain quantize: x single-buffered, no parameters.
            return x + 2 * codes_bytes(self.d);
        }
        let rx = if self.residual { 4 * x } else { 0 };
        2 * x + rx + 2 * codes_bytes(self.d) + param_bytes(self.d)
    }

    /// Memory-tile data memory: per round the column's rows of x (and r, x_out) and codes
    /// (`d + 64` bytes a row), double-buffered.
    pub fn l2_bytes(&self) -> usize {
        let rows = self.cores_per_column() * NQ_ROWS;
        let f32_rows = if self.residual { 3 } else { 1 };
        2 * rows * (f32_rows * self.d * 4 + self.d + TILE_K)
    }

    /// Rows one round covers (every core one 4-row group).
    pub fn rows_per_round(&self) -> usize {
        self.cores() * NQ_ROWS
    }
}

/// The weight shapes `(k, n)` of one model's linears on the NPU: fused Q/K/V (`d × 3d`),
/// attention output and cross-attention query (`d × d`), fused cross K/V (`d × 2d`), fc1
/// (`d × 4d`, GELU), fc2 (`4d × d`).
pub fn gemm_shapes(w: &WhisperDims) -> [(usize, usize); 5] {
    [
        (w.d, 3 * w.d),
        (w.d, w.d),
        (w.d, 2 * w.d),
        (w.d, w.mlp),
        (w.mlp, w.d),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whisper_shape_fits_both_npus() {
        for dims in [TINY, BASE] {
            for (k, n) in gemm_shapes(&dims) {
                for t in [Target::NPU1, Target::NPU2] {
                    let d = GemmDesign::new(t, k, n).unwrap();
                    assert!(d.l1_bytes() + L1_STACK_RESERVE <= L1_BYTES);
                    assert!(d.l2_bytes() <= L2_BYTES);
                    let tiles: usize = (0..d.cols()).map(|c| d.groups_of(c)).sum();
                    assert_eq!(tiles, d.n_tiles(), "{k}×{n}");
                    let d = GemmDesign::decoder(t, k, n).unwrap();
                    assert!(d.l2_bytes() <= L2_BYTES);
                    let quads: usize = (0..d.cols()).map(|c| d.groups_of(c)).sum();
                    assert_eq!(4 * quads, d.image_tiles(), "{k}×{n}");
                    assert!(d.image_tiles() < d.n_tiles() + 4);
                }
            }
        }
        AttentionDesign::check().unwrap();
        assert!(
            AttentionDesign::l1_bytes() <= 52 * 1024,
            "{}",
            AttentionDesign::l1_bytes()
        );
    }

    #[test]
    fn the_norm_design_fits_tiny_and_base_and_refuses_residual_768() {
        for t in [Target::NPU1, Target::NPU2] {
            for residual in [false, true] {
                for d in [TINY.d, BASE.d] {
                    let n = NormQuantDesign::new(t, d, residual).unwrap();
                    assert!(n.l1_bytes() + L1_STACK_RESERVE <= L1_BYTES);
                }
                // whisper-small's width: the plain norm fits (36.6 KB), the residual form
                // (84.6 KB) does not.
                let small = NormQuantDesign::new(t, 768, residual);
                if residual {
                    assert!(matches!(
                        small,
                        Err(AieError::Budget {
                            tile: "compute tile",
                            ..
                        })
                    ));
                } else {
                    assert!(small.is_ok());
                }
                assert!(matches!(
                    NormQuantDesign::new(t, 100, residual),
                    Err(AieError::NormWidth { d: 100, .. })
                ));
            }
        }
        // base with a residual: x, r and x_out 2 × 8 KB each, codes 2 × 2304 B, the
        // parameters 4160 B: 56.6 KB + the 2 KB stack.
        let n = NormQuantDesign::new(Target::NPU1, 512, true).unwrap();
        assert_eq!(n.l1_bytes(), 6 * 8192 + 2 * 2304 + 4160);
        // L2: 8 rows of x, r, x_out (f32) and image rows (576 B), double-buffered: 105 KB.
        assert_eq!(n.l2_bytes(), 2 * 8 * (3 * 2048 + 576));
        assert_eq!((n.cores(), n.rows_per_round()), (8, 32));
        assert_eq!(
            NormQuantDesign::new(Target::NPU2, 384, false)
                .unwrap()
                .rows_per_round(),
            128
        );
    }

    #[test]
    fn the_plain_quantize_fits_fc2_inputs_of_tiny_and_base() {
        for t in [Target::NPU1, Target::NPU2] {
            for dims in [TINY, BASE] {
                let q = NormQuantDesign::quantize(t, dims.mlp).unwrap();
                assert!(q.l1_bytes() + L1_STACK_RESERVE <= L1_BYTES);
                assert_eq!(
                    (q.cores_per_column(), q.residual, q.norm),
                    (4, false, false)
                );
            }
            // base: x 32 KB single-buffered, codes 2 × 8448 B.
            let q = NormQuantDesign::quantize(t, 2048).unwrap();
            assert_eq!(q.l1_bytes(), 32768 + 2 * 8448);
            // L2: 16 rows of x (f32) and image rows (2112 B), double-buffered: 322 KB.
            assert_eq!(q.l2_bytes(), 2 * 16 * (4 * 2048 + 2112));
            assert!(matches!(
                NormQuantDesign::quantize(t, 3072),
                Err(AieError::Budget {
                    tile: "compute tile",
                    ..
                })
            ));
            assert!(matches!(
                NormQuantDesign::quantize(t, 100),
                Err(AieError::NormWidth { d: 100, .. })
            ));
        }
    }

    #[test]
    fn bad_shapes_are_refused_with_the_dimension_named() {
        assert!(matches!(
            GemmDesign::new(Target::NPU1, 100, 64),
            Err(AieError::Shape {
                what: "k",
                value: 100,
                ..
            })
        ));
        assert!(matches!(
            GemmDesign::new(Target::NPU1, 64, 0),
            Err(AieError::Shape { what: "n", .. })
        ));
        assert!(matches!(
            GemmDesign::new(Target::NPU1, 64, 64 * 4 * 65),
            Err(AieError::Shape { what: "n", .. })
        ));
    }

    #[test]
    fn tiny_d384_splits_six_channel_blocks_over_four_columns() {
        let d = GemmDesign::new(Target::NPU1, 384, 384).unwrap();
        assert_eq!(
            (0..4).map(|c| d.groups_of(c)).collect::<Vec<_>>(),
            [2, 2, 1, 1]
        );
        assert_eq!(d.padded_rows(1500), 1536);
        assert_eq!(d.padded_rows(5), 128);
        // The decoder mapping pads 6 blocks to 2 quads; columns 2 and 3 have none.
        let d = GemmDesign::decoder(Target::NPU1, 384, 384).unwrap();
        assert_eq!(
            (0..4).map(|c| d.groups_of(c)).collect::<Vec<_>>(),
            [1, 1, 0, 0]
        );
        assert_eq!(
            (d.image_tiles(), d.out_width(), d.padded_rows(5)),
            (8, 512, 32)
        );
    }
}
