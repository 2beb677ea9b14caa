//! The tile-major INT8 weight layout shared by the model file, the CPU kernels and (later) the
//! NPU: `[n_out, k]` zero-padded to multiples of [`TILE`] in both dimensions, stored as
//! `TILE × TILE` tiles in order `[n / TILE][k / TILE]`, each tile row-major by output channel
//! (`TILE` contiguous k bytes per channel). See `docs/int8-layout.md`.

use super::quant::quantize_to_tiles;
use thiserror::Error;

/// Side of a weight tile: 64 output channels × 64 k values = 4 KB of int8, small enough for an
/// AIE tile's 64 KB data memory with double buffering.
pub const TILE: usize = 64;
/// Bytes in one tile.
pub const TILE_BYTES: usize = TILE * TILE;

/// Why pre-quantized weight data does not form a valid [`QuantMatrix`].
#[derive(Debug, Error, PartialEq)]
pub enum LayoutError {
    /// `n_out` or `k` is zero, or the padded size overflows `usize`.
    #[error("int8 matrix: unsupported shape [{n_out}, {k}] (empty or too large)")]
    BadShape {
        /// Output channels.
        n_out: usize,
        /// Input channels.
        k: usize,
    },
    /// The data is not `padded_len(n_out, k)` bytes.
    #[error("int8 matrix [{n_out}, {k}]: data has {got} bytes, the tile layout needs {expected}")]
    DataLength {
        /// Output channels.
        n_out: usize,
        /// Input channels.
        k: usize,
        /// Bytes given.
        got: usize,
        /// Bytes required.
        expected: usize,
    },
    /// The scales are not `n_out` values.
    #[error("int8 matrix [{n_out}, {k}]: {got} scales, expected one per output channel ({n_out})")]
    ScaleLength {
        /// Output channels.
        n_out: usize,
        /// Input channels.
        k: usize,
        /// Scales given.
        got: usize,
    },
    /// A scale is negative, NaN or infinite.
    #[error("int8 matrix: scale of output channel {row} is {value} (must be finite and >= 0)")]
    BadScale {
        /// Output channel.
        row: usize,
        /// The offending scale.
        value: f32,
    },
    /// A value is -128 (the kernels' sign trick needs `[-127, 127]`).
    #[error("int8 matrix: byte offset {offset} holds -128 (values must lie in [-127, 127])")]
    Minus128 {
        /// Byte offset in the tile-major data.
        offset: usize,
    },
    /// A padding byte (beyond `n_out` or `k`) is not zero.
    #[error("int8 matrix [{n_out}, {k}]: padding byte at offset {offset} is {value}, not 0")]
    PaddingNotZero {
        /// Output channels.
        n_out: usize,
        /// Input channels.
        k: usize,
        /// Byte offset in the tile-major data.
        offset: usize,
        /// The byte found.
        value: i8,
    },
}

/// `x` rounded up to a multiple of [`TILE`], or `None` on overflow.
pub fn pad_to_tile(x: usize) -> Option<usize> {
    x.checked_next_multiple_of(TILE)
}

/// Bytes of the tile-major data of an `[n_out, k]` matrix, or `None` on overflow.
pub fn padded_len(n_out: usize, k: usize) -> Option<usize> {
    pad_to_tile(n_out)?.checked_mul(pad_to_tile(k)?)
}

/// Offset of logical element `(row, col)` in the tile-major data of a matrix with `k` columns.
#[inline]
pub fn tile_offset(row: usize, col: usize, k: usize) -> usize {
    let k_tiles = k.div_ceil(TILE);
    ((row / TILE) * k_tiles + col / TILE) * TILE_BYTES + (row % TILE) * TILE + col % TILE
}

/// An `[n_out, k]` weight matrix in per-output-channel symmetric INT8, tile-major.
///
/// Element `(r, c)` stands for `data[tile_offset(r, c, k)] as f32 · scales[r]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    data: Vec<i8>,
    scales: Vec<f32>,
    n_out: usize,
    k: usize,
    /// `Σ_c q[r, c]` per (padded) output channel: derived at construction (not stored in
    /// files), for kernels that offset activations to unsigned bytes (VNNI).
    code_sums: Vec<i32>,
}

impl QuantMatrix {
    /// Quantizes a row-major f32 `[n_out, k]` matrix (see [`quantize_to_tiles`]).
    ///
    /// # Panics
    /// If `w.len() != n_out · k` or the padded size overflows (programming errors).
    pub fn quantize(w: &[f32], n_out: usize, k: usize) -> QuantMatrix {
        let (data, scales) = quantize_to_tiles(w, n_out, k);
        QuantMatrix::new(data, scales, n_out, k)
    }

    /// Wraps tile-major data and per-channel scales read from a file, validating everything
    /// the kernels rely on: lengths, scales finite and `>= 0`, no `-128`, zero padding.
    pub fn from_parts(
        data: Vec<i8>,
        scales: Vec<f32>,
        n_out: usize,
        k: usize,
    ) -> Result<QuantMatrix, LayoutError> {
        let expected = match padded_len(n_out, k) {
            Some(len) if n_out > 0 && k > 0 => len,
            _ => return Err(LayoutError::BadShape { n_out, k }),
        };
        if data.len() != expected {
            return Err(LayoutError::DataLength {
                n_out,
                k,
                got: data.len(),
                expected,
            });
        }
        if scales.len() != n_out {
            return Err(LayoutError::ScaleLength {
                n_out,
                k,
                got: scales.len(),
            });
        }
        if let Some((row, &value)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
        {
            return Err(LayoutError::BadScale { row, value });
        }
        for (offset, &value) in data.iter().enumerate() {
            if value == -128 {
                return Err(LayoutError::Minus128 { offset });
            }
            if value != 0 && is_padding(offset, n_out, k) {
                return Err(LayoutError::PaddingNotZero {
                    n_out,
                    k,
                    offset,
                    value,
                });
            }
        }
        Ok(QuantMatrix::new(data, scales, n_out, k))
    }

    /// Assembles validated parts and derives the per-channel code sums.
    fn new(data: Vec<i8>, scales: Vec<f32>, n_out: usize, k: usize) -> QuantMatrix {
        let k_tiles = k.div_ceil(TILE);
        let n_pad = n_out.div_ceil(TILE) * TILE;
        let mut code_sums = vec![0i32; n_pad];
        for (offset, &q) in data.iter().enumerate() {
            let tile = offset / TILE_BYTES;
            let row = (tile / k_tiles.max(1)) * TILE + (offset % TILE_BYTES) / TILE;
            code_sums[row] += q as i32;
        }
        QuantMatrix {
            data,
            scales,
            n_out,
            k,
            code_sums,
        }
    }

    /// `Σ_c q[r, c]` for every output channel `r` of the padded matrix (`n_tiles · TILE`
    /// values; zero for padding channels).
    pub fn code_sums(&self) -> &[i32] {
        &self.code_sums
    }

    /// Output channels (rows).
    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// Input channels (columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of tiles along k (`k` rounded up to [`TILE`], divided by it).
    pub fn k_tiles(&self) -> usize {
        self.k.div_ceil(TILE)
    }

    /// Number of tiles along the output channels.
    pub fn n_tiles(&self) -> usize {
        self.n_out.div_ceil(TILE)
    }

    /// The tile-major bytes (see the module docs).
    pub fn data(&self) -> &[i8] {
        &self.data
    }

    /// Per-output-channel scales (`n_out` values).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Splits into `(data, scales)`, e.g. to write a model file.
    pub fn into_parts(self) -> (Vec<i8>, Vec<f32>) {
        (self.data, self.scales)
    }

    /// The quantized value of logical element `(row, col)`.
    ///
    /// # Panics
    /// If `row >= n_out` or `col >= k`.
    #[inline]
    pub fn get(&self, row: usize, col: usize) -> i8 {
        assert!(
            row < self.n_out && col < self.k,
            "QuantMatrix::get out of range"
        );
        self.data[tile_offset(row, col, self.k)]
    }

    /// The tiles of output-channel tile `nt`: `k_tiles` tiles of [`TILE_BYTES`], contiguous.
    #[inline]
    pub fn n_tile(&self, nt: usize) -> &[i8] {
        let len = self.k_tiles() * TILE_BYTES;
        &self.data[nt * len..(nt + 1) * len]
    }

    /// Writes the dequantized row `row` (`q · scale`, `k` floats) into `out`.
    ///
    /// # Panics
    /// If `row >= n_out` or `out.len() != k`.
    pub fn dequantize_row_into(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.n_out,
            "QuantMatrix::dequantize_row_into: row {row}"
        );
        assert_eq!(
            out.len(),
            self.k,
            "QuantMatrix::dequantize_row_into: out is not k"
        );
        let scale = self.scales[row];
        let tiles = self.n_tile(row / TILE);
        for (kt, chunk) in out.chunks_mut(TILE).enumerate() {
            let src = &tiles[kt * TILE_BYTES + (row % TILE) * TILE..][..chunk.len()];
            for (o, &q) in chunk.iter_mut().zip(src) {
                *o = q as f32 * scale;
            }
        }
    }
}

/// Whether byte `offset` of the tile-major data lies in the zero padding.
fn is_padding(offset: usize, n_out: usize, k: usize) -> bool {
    let k_tiles = k.div_ceil(TILE);
    let tile = offset / TILE_BYTES;
    let (nt, kt) = (tile / k_tiles, tile % k_tiles);
    let within = offset % TILE_BYTES;
    let row = nt * TILE + within / TILE;
    let col = kt * TILE + within % TILE;
    row >= n_out || col >= k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_offsets_follow_the_documented_order() {
        // k = 130 → 3 k-tiles; n = 70 → 2 n-tiles.
        let k = 130;
        assert_eq!(tile_offset(0, 0, k), 0);
        assert_eq!(tile_offset(0, 1, k), 1);
        assert_eq!(tile_offset(1, 0, k), 64);
        assert_eq!(tile_offset(0, 64, k), 4096);
        assert_eq!(tile_offset(0, 128, k), 2 * 4096);
        assert_eq!(tile_offset(64, 0, k), 3 * 4096);
        assert_eq!(tile_offset(69, 129, k), (3 + 2) * 4096 + 5 * 64 + 1);
        assert_eq!(padded_len(70, 130), Some(128 * 192));
        assert_eq!(padded_len(usize::MAX, 1), None);
    }

    #[test]
    fn padding_map_matches_offsets() {
        let (n, k) = (70, 130);
        let len = padded_len(n, k).unwrap();
        let mut logical = vec![false; len];
        for r in 0..n {
            for c in 0..k {
                logical[tile_offset(r, c, k)] = true;
            }
        }
        for (offset, &is_logical) in logical.iter().enumerate() {
            assert_eq!(is_padding(offset, n, k), !is_logical, "offset {offset}");
        }
    }

    fn valid_parts(n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7) % 255) as f32 - 127.0).collect();
        quantize_to_tiles(&w, n, k)
    }

    #[test]
    fn from_parts_accepts_quantized_data_and_round_trips() {
        let (data, scales) = valid_parts(70, 130);
        let m = QuantMatrix::from_parts(data.clone(), scales.clone(), 70, 130).unwrap();
        assert_eq!(
            (m.n_out(), m.k(), m.n_tiles(), m.k_tiles()),
            (70, 130, 2, 3)
        );
        for r in [0, 5, 69] {
            let want: i32 = (0..130).map(|c| m.get(r, c) as i32).sum();
            assert_eq!(m.code_sums()[r], want);
        }
        assert_eq!(m.code_sums().len(), 128);
        assert_eq!(m.into_parts(), (data, scales));
    }

    #[test]
    fn from_parts_rejects_bad_data_with_specific_errors() {
        let (n, k) = (70, 130);
        let (data, scales) = valid_parts(n, k);
        let len = data.len();
        assert_eq!(
            QuantMatrix::from_parts(data[1..].to_vec(), scales.clone(), n, k),
            Err(LayoutError::DataLength {
                n_out: n,
                k,
                got: len - 1,
                expected: len
            })
        );
        assert_eq!(
            QuantMatrix::from_parts(data.clone(), scales[1..].to_vec(), n, k),
            Err(LayoutError::ScaleLength {
                n_out: n,
                k,
                got: n - 1
            })
        );
        for bad in [-1.0, f32::NAN, f32::INFINITY] {
            let mut s = scales.clone();
            s[5] = bad;
            let err = QuantMatrix::from_parts(data.clone(), s, n, k).unwrap_err();
            assert!(matches!(err, LayoutError::BadScale { row: 5, .. }), "{err}");
        }
        let mut d = data.clone();
        let at = tile_offset(3, 4, k);
        d[at] = -128;
        assert_eq!(
            QuantMatrix::from_parts(d, scales.clone(), n, k),
            Err(LayoutError::Minus128 { offset: at })
        );
        let mut d = data.clone();
        let pad = 2 * TILE_BYTES + 3 * TILE + 4; // row 3, column 128 + 4 = 132 >= k
        assert!(is_padding(pad, n, k));
        d[pad] = 3;
        assert_eq!(
            QuantMatrix::from_parts(d, scales.clone(), n, k),
            Err(LayoutError::PaddingNotZero {
                n_out: n,
                k,
                offset: pad,
                value: 3
            })
        );
        assert_eq!(
            QuantMatrix::from_parts(Vec::new(), Vec::new(), 0, 5),
            Err(LayoutError::BadShape { n_out: 0, k: 5 })
        );
        assert_eq!(
            QuantMatrix::from_parts(Vec::new(), Vec::new(), usize::MAX, 5),
            Err(LayoutError::BadShape {
                n_out: usize::MAX,
                k: 5
            })
        );
    }
}
