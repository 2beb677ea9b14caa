//! The tile-major INT8 weight layout shared by the model file, the CPU kernels and (later) the
//! NPU: `[n_out, k]` zero-padded to multiples of [`TILE`] in both dimensions, stored as
//! `TILE × TILE` tiles in order `[n / TILE][k / TILE]`, each tile row-major by output channel
//! (`TILE` contiguous k bytes per channel). See `docs/int8-layout.md`.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use super::quant::{quantize_f16_to_tiles, quantize_to_tiles};
use thiserror::Error;

/// Read-only bytes shared with their owner, e.g. a model file's memory map handed down as
/// `Arc<MappedFile>`: a [`QuantMatrix`] made by [`QuantMatrix::from_shared`] reads its tiles
/// and scales in place. The implementation must return the same slice on every call.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Values owned, or a range of [`SharedBytes`] read in place.
#[derive(Clone)]
enum Store<T> {
    Owned(Vec<T>),
    Shared {
        bytes: SharedBytes,
        start: usize,
        /// Bytes.
        len: usize,
    },
}

impl<T: bytemuck::Pod> Store<T> {
    /// `range` of `bytes` in place, or copied out when it is not aligned for `T`; `None` when
    /// the range lies outside the bytes or is not a whole number of `T`.
    fn shared(bytes: &SharedBytes, range: Range<usize>) -> Option<Store<T>> {
        let all: &[u8] = (**bytes).as_ref();
        let slice = all.get(range.clone())?;
        if slice.len() % std::mem::size_of::<T>() != 0 {
            return None;
        }
        Some(match bytemuck::try_cast_slice::<u8, T>(slice) {
            Ok(_) => Store::Shared {
                bytes: Arc::clone(bytes),
                start: range.start,
                len: slice.len(),
            },
            Err(_) => {
                let mut v = vec![T::zeroed(); slice.len() / std::mem::size_of::<T>()];
                bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(slice);
                Store::Owned(v)
            }
        })
    }

    #[inline]
    fn get(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            Store::Shared { bytes, start, len } => {
                let all: &[u8] = (**bytes).as_ref();
                bytemuck::cast_slice(&all[*start..*start + *len])
            }
        }
    }

    fn into_vec(self) -> Vec<T> {
        match self {
            Store::Owned(v) => v,
            shared => shared.get().to_vec(),
        }
    }
}

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
    /// A byte range lies outside the shared bytes, or is not a whole number of values.
    #[error("int8 matrix: {what} at bytes {start}..{end} is outside the {len} shared bytes or not whole values")]
    OutOfRange {
        /// `data` or `scales`.
        what: &'static str,
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
        /// Bytes shared.
        len: usize,
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
///
/// The tiles and scales are owned, or read in place from shared bytes (a model file's memory
/// map: [`QuantMatrix::from_shared`]), so loading a model copies nothing. Cloning is cheap
/// for shared data.
#[derive(Clone)]
pub struct QuantMatrix {
    data: Store<i8>,
    scales: Store<f32>,
    n_out: usize,
    k: usize,
    /// `Σ_c q[r, c]` per (padded) output channel, for kernels that offset activations to
    /// unsigned bytes (VNNI): not stored in files; derived at construction for owned data,
    /// on first use for shared data (so a load touches no tile).
    code_sums: OnceLock<Vec<i32>>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantMatrix")
            .field("n_out", &self.n_out)
            .field("k", &self.k)
            .field("shared", &matches!(self.data, Store::Shared { .. }))
            .finish_non_exhaustive()
    }
}

impl PartialEq for QuantMatrix {
    fn eq(&self, other: &Self) -> bool {
        (self.n_out, self.k) == (other.n_out, other.k)
            && self.data() == other.data()
            && self.scales() == other.scales()
    }
}

impl QuantMatrix {
    /// Quantizes a row-major f32 `[n_out, k]` matrix (see [`quantize_to_tiles`]).
    ///
    /// # Panics
    /// If `w.len() != n_out · k` or the padded size overflows (programming errors).
    pub fn quantize(w: &[f32], n_out: usize, k: usize) -> QuantMatrix {
        let (data, scales) = quantize_to_tiles(w, n_out, k);
        let m = QuantMatrix::new(Store::Owned(data), Store::Owned(scales), n_out, k);
        m.code_sums();
        m
    }

    /// Quantizes a row-major f16 `[n_out, k]` matrix (see [`quantize_f16_to_tiles`]): the
    /// matrix [`QuantMatrix::quantize`] makes of its values widened to f32.
    ///
    /// # Panics
    /// If `w.len() != n_out · k` or the padded size overflows (programming errors).
    pub fn quantize_f16(w: &[half::f16], n_out: usize, k: usize) -> QuantMatrix {
        let (data, scales) = quantize_f16_to_tiles(w, n_out, k);
        let m = QuantMatrix::new(Store::Owned(data), Store::Owned(scales), n_out, k);
        m.code_sums();
        m
    }

    /// Wraps tile-major data and per-channel scales read from a file, validating everything
    /// the kernels rely on: lengths, scales finite and `>= 0`, no `-128`, zero padding.
    pub fn from_parts(
        data: Vec<i8>,
        scales: Vec<f32>,
        n_out: usize,
        k: usize,
    ) -> Result<QuantMatrix, LayoutError> {
        check_lengths(data.len(), scales.len(), n_out, k)?;
        check_scales(&scales)?;
        check_codes(&data, n_out, k)?;
        let m = QuantMatrix::new(Store::Owned(data), Store::Owned(scales), n_out, k);
        m.code_sums();
        Ok(m)
    }

    /// Reads the tile-major data (`data`, a byte range of `bytes`) and the little-endian f32
    /// scales (`scales`, another range) in place: nothing is copied (scales not 4-byte
    /// aligned are copied out) and no tile is read. Checks the shape, the lengths and the
    /// scales (finite, `>= 0`: `n_out` values); the codes are trusted to be what the
    /// converter wrote (within `[-127, 127]`, zero padding: [`QuantMatrix::check_codes`] reads
    /// every tile to verify that). The per-channel code sums are derived on first use.
    pub fn from_shared(
        bytes: &SharedBytes,
        data: Range<usize>,
        scales: Range<usize>,
        n_out: usize,
        k: usize,
    ) -> Result<QuantMatrix, LayoutError> {
        let len = (**bytes).as_ref().len();
        let out_of_range = |what, r: &Range<usize>| LayoutError::OutOfRange {
            what,
            start: r.start,
            end: r.end,
            len,
        };
        let data_store =
            Store::<i8>::shared(bytes, data.clone()).ok_or_else(|| out_of_range("data", &data))?;
        let scale_store = Store::<f32>::shared(bytes, scales.clone())
            .ok_or_else(|| out_of_range("scales", &scales))?;
        check_lengths(data_store.get().len(), scale_store.get().len(), n_out, k)?;
        check_scales(scale_store.get())?;
        Ok(QuantMatrix::new(data_store, scale_store, n_out, k))
    }

    /// Checks every code: within `[-127, 127]` and zero in the padding (what
    /// [`QuantMatrix::from_parts`] checks and [`QuantMatrix::from_shared`] trusts).
    pub fn check_codes(&self) -> Result<(), LayoutError> {
        check_codes(self.data(), self.n_out, self.k)
    }

    /// Whether the tiles are read in place from shared bytes.
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Store::Shared { .. })
    }

    fn new(data: Store<i8>, scales: Store<f32>, n_out: usize, k: usize) -> QuantMatrix {
        QuantMatrix {
            data,
            scales,
            n_out,
            k,
            code_sums: OnceLock::new(),
        }
    }

    /// `Σ_c q[r, c]` for every output channel `r` of the padded matrix (`n_tiles · TILE`
    /// values; zero for padding channels). Derived from the tiles on the first call (one pass
    /// over them; later calls read it).
    pub fn code_sums(&self) -> &[i32] {
        self.code_sums.get_or_init(|| {
            let k_tiles = self.k_tiles();
            let mut sums = vec![0i32; self.n_tiles() * TILE];
            for (t, tile) in self.data().chunks_exact(TILE_BYTES).enumerate() {
                let row0 = (t / k_tiles.max(1)) * TILE;
                for (r, codes) in tile.chunks_exact(TILE).enumerate() {
                    sums[row0 + r] += codes.iter().map(|&q| q as i32).sum::<i32>();
                }
            }
            sums
        })
    }

    /// Whether [`QuantMatrix::code_sums`] has been derived (by a first GEMM, or ahead of it by
    /// [`crate::backend::Backend::prepare_matrix`]).
    pub fn code_sums_derived(&self) -> bool {
        self.code_sums.get().is_some()
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
    #[inline]
    pub fn data(&self) -> &[i8] {
        self.data.get()
    }

    /// Per-output-channel scales (`n_out` values).
    #[inline]
    pub fn scales(&self) -> &[f32] {
        self.scales.get()
    }

    /// Splits into `(data, scales)`, e.g. to write a model file (shared data is copied).
    pub fn into_parts(self) -> (Vec<i8>, Vec<f32>) {
        (self.data.into_vec(), self.scales.into_vec())
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
        self.data()[tile_offset(row, col, self.k)]
    }

    /// The tiles of output-channel tile `nt`: `k_tiles` tiles of [`TILE_BYTES`], contiguous.
    #[inline]
    pub fn n_tile(&self, nt: usize) -> &[i8] {
        let len = self.k_tiles() * TILE_BYTES;
        &self.data()[nt * len..(nt + 1) * len]
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
        let scale = self.scales()[row];
        let tiles = self.n_tile(row / TILE);
        for (kt, chunk) in out.chunks_mut(TILE).enumerate() {
            let src = &tiles[kt * TILE_BYTES + (row % TILE) * TILE..][..chunk.len()];
            for (o, &q) in chunk.iter_mut().zip(src) {
                *o = q as f32 * scale;
            }
        }
    }
}

/// Shape and lengths: `data_len` bytes of tiles, `scale_len` scales.
fn check_lengths(
    data_len: usize,
    scale_len: usize,
    n_out: usize,
    k: usize,
) -> Result<(), LayoutError> {
    let expected = match padded_len(n_out, k) {
        Some(len) if n_out > 0 && k > 0 => len,
        _ => return Err(LayoutError::BadShape { n_out, k }),
    };
    if data_len != expected {
        return Err(LayoutError::DataLength {
            n_out,
            k,
            got: data_len,
            expected,
        });
    }
    if scale_len != n_out {
        return Err(LayoutError::ScaleLength {
            n_out,
            k,
            got: scale_len,
        });
    }
    Ok(())
}

/// Every scale finite and `>= 0`.
fn check_scales(scales: &[f32]) -> Result<(), LayoutError> {
    match scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
    {
        Some((row, &value)) => Err(LayoutError::BadScale { row, value }),
        None => Ok(()),
    }
}

/// No `-128`, zero padding.
fn check_codes(data: &[i8], n_out: usize, k: usize) -> Result<(), LayoutError> {
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
    Ok(())
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

    /// `data` and `scales` laid out in one buffer as a file would: `lead` bytes first, the
    /// scales (little-endian f32), then the tiles.
    fn shared_file(
        lead: usize,
        data: &[i8],
        scales: &[f32],
    ) -> (SharedBytes, Range<usize>, Range<usize>) {
        let mut bytes = vec![0xAAu8; lead];
        let s0 = bytes.len();
        bytes.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
        let d0 = bytes.len();
        bytes.extend(data.iter().map(|&q| q as u8));
        let end = bytes.len();
        (Arc::new(bytes), d0..end, s0..d0)
    }

    #[test]
    fn from_shared_reads_in_place_and_equals_from_parts() {
        let (n, k) = (70, 130);
        let (data, scales) = valid_parts(n, k);
        let owned = QuantMatrix::from_parts(data.clone(), scales.clone(), n, k).unwrap();
        // Vec<u8> storage: aligned scales are read in place for some leads, copied for others;
        // the tiles (bytes) are always in place.
        for lead in [0, 1, 2, 3, 4, 64] {
            let (bytes, d, s) = shared_file(lead, &data, &scales);
            let m = QuantMatrix::from_shared(&bytes, d, s, n, k).unwrap();
            assert!(m.is_shared());
            assert_eq!(m, owned);
            assert_eq!(m.code_sums(), owned.code_sums());
            assert_eq!(
                m.data().as_ptr() as usize,
                (*bytes).as_ref().as_ptr() as usize + lead + 4 * n
            );
            assert_eq!(m.check_codes(), Ok(()));
            let mut row = vec![0.0; k];
            let mut want = vec![0.0; k];
            m.dequantize_row_into(69, &mut row);
            owned.dequantize_row_into(69, &mut want);
            assert_eq!(row, want);
            assert_eq!(m.clone().into_parts(), (data.clone(), scales.clone()));
        }
    }

    #[test]
    fn from_shared_checks_ranges_lengths_and_scales_and_trusts_codes() {
        let (n, k) = (70, 130);
        let (mut data, mut scales) = valid_parts(n, k);
        let (bytes, d, s) = shared_file(8, &data, &scales);
        let len = (*bytes).as_ref().len();
        assert_eq!(
            QuantMatrix::from_shared(&bytes, d.start..len + 1, s.clone(), n, k).unwrap_err(),
            LayoutError::OutOfRange {
                what: "data",
                start: d.start,
                end: len + 1,
                len
            }
        );
        assert!(matches!(
            QuantMatrix::from_shared(&bytes, d.clone(), s.start..s.end - 1, n, k),
            Err(LayoutError::OutOfRange { what: "scales", .. })
        ));
        assert!(matches!(
            QuantMatrix::from_shared(&bytes, d.start..d.end - 1, s.clone(), n, k),
            Err(LayoutError::DataLength { .. })
        ));
        assert!(matches!(
            QuantMatrix::from_shared(&bytes, d.clone(), s.start..s.end - 4, n, k),
            Err(LayoutError::ScaleLength { .. })
        ));
        scales[3] = f32::NAN;
        let (bytes, d, s) = shared_file(8, &data, &scales);
        assert!(matches!(
            QuantMatrix::from_shared(&bytes, d, s, n, k),
            Err(LayoutError::BadScale { row: 3, .. })
        ));
        scales[3] = 1.0;
        let at = tile_offset(3, 4, k);
        data[at] = -128;
        let (bytes, d, s) = shared_file(8, &data, &scales);
        let m = QuantMatrix::from_shared(&bytes, d, s, n, k).unwrap();
        assert_eq!(m.check_codes(), Err(LayoutError::Minus128 { offset: at }));
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
