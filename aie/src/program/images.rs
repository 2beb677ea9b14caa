//! The buffers a GEMM submission reads, as the host writes them (`crate::design::GemmDesign`):
//!
//! - **activation image** (argument 0, per submission): `padded_rows(m)` rows of
//!   `k + 64` bytes — row `r` is its `k` int8 codes, then its scale as f32 LE, then zeros. The
//!   extra 64 bytes make the row scales arrive as one more depth step of the row stream;
//! - **weight image** (argument 1, uploaded once at load): for each 64-channel block, the
//!   block's `k/64` tiles **exactly as the model file holds them** (64 × 64, channel-major,
//!   `docs/int8-layout.md` §2), then a 4 KB parameter tile whose channel row holds the
//!   channel's weight scale and bias (f32 LE) and zeros. No tile byte is changed or moved
//!   within its block;
//!   For the decoder mapping the image has whole quads of blocks (`image_tiles`): the extra
//!   blocks are zero, with zero parameters;
//! - **output** (argument 2): `padded_rows(m) × out_width` f32, row-major (`out_width = n`
//!   except for the decoder mapping's padded quads).

use crate::design::GemmDesign;
use crate::kernels::layout::{TILE_K, TILE_N, W_BYTES};
use crate::kernels::matmul::{put_channel_params, put_row_scale};

/// Bytes of the activation image for `m` rows.
pub fn activation_image_len(d: &GemmDesign, m: usize) -> usize {
    d.padded_rows(m) * d.activation_row_bytes()
}

/// Bytes of the weight image.
pub fn weight_image_len(d: &GemmDesign) -> usize {
    d.image_tiles() * d.weight_block_bytes()
}

/// Bytes of the output for `m` rows.
pub fn output_len(d: &GemmDesign, m: usize) -> usize {
    d.padded_rows(m) * d.out_width() * 4
}

/// Writes row `r` of the activation image: `codes` (`k` bytes) and the row's scale.
///
/// # Panics
/// If `codes` is not `k` long or the row is outside `image`.
pub fn put_activation_row(d: &GemmDesign, image: &mut [u8], r: usize, codes: &[i8], scale: f32) {
    assert_eq!(codes.len(), d.k, "put_activation_row: codes are not k long");
    let row = &mut image[r * d.activation_row_bytes()..(r + 1) * d.activation_row_bytes()];
    for (o, &c) in row.iter_mut().zip(codes) {
        *o = c as u8;
    }
    let mut tail = [0i8; TILE_K];
    put_row_scale(&mut tail, scale);
    for (o, &t) in row[d.k..].iter_mut().zip(&tail) {
        *o = t as u8;
    }
}

/// The weight image of a layer: `tiles` is the file's tile-major data (`n × k` codes in 64 × 64
/// tiles), `scales` the `n` per-channel scales (channels past the file's `n_out` pad with 0),
/// `bias` the optional bias.
///
/// # Panics
/// If `tiles` is not `n·k` bytes or `scales` / `bias` are longer than `n`.
pub fn weight_image(d: &GemmDesign, tiles: &[i8], scales: &[f32], bias: Option<&[f32]>) -> Vec<u8> {
    assert_eq!(
        tiles.len(),
        d.n * d.k,
        "weight_image: tiles are not n·k bytes"
    );
    assert!(scales.len() <= d.n && bias.is_none_or(|b| b.len() <= d.n));
    let block = d.k_tiles() * W_BYTES;
    let mut out = vec![0u8; weight_image_len(d)];
    for nt in 0..d.n_tiles() {
        // Blocks past n_tiles (decoder quads) stay zero: zero codes, zero scale and bias.
        let dst = &mut out[nt * d.weight_block_bytes()..(nt + 1) * d.weight_block_bytes()];
        for (o, &t) in dst[..block]
            .iter_mut()
            .zip(&tiles[nt * block..(nt + 1) * block])
        {
            *o = t as u8;
        }
        let mut params = [0i8; W_BYTES];
        for ch in 0..TILE_N {
            let n = nt * TILE_N + ch;
            let s = scales.get(n).copied().unwrap_or(0.0);
            let b = bias.and_then(|b| b.get(n).copied()).unwrap_or(0.0);
            put_channel_params(&mut params[ch * TILE_K..(ch + 1) * TILE_K], s, b);
        }
        for (o, &p) in dst[block..].iter_mut().zip(&params) {
            *o = p as u8;
        }
    }
    out
}
