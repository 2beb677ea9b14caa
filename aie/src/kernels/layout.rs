//! Where an element sits in the compute tile's data memory (L1) for the kernels' operands, as
//! the memory-tile DMA lays it out (the device programs' `dims_to_stream` patterns produce
//! exactly these orders; `crate::program::gemm` documents the DMA side).
//!
//! AIE2 (npu1) computes int8 matrix products on 4×8 · 8×8 blocks (`aie::mmul<4, 8, 8, int8,
//! int8>`, the `r×s×t` of mlir-aie's `microkernel_mac_dim_map` for npu1). So:
//! - **A objects** (activations, 32 rows × 64 k): 4×8 blocks, row-major inside, blocks in
//!   row-major order ([`a_offset`]);
//! - **W objects** (one 64 × 64 tile of the model file: 64 output channels × 64 k, channel-major):
//!   8 channels × 8 k blocks, row-major inside, blocks in row-major order ([`w_offset`]). The
//!   kernel transposes each block to the 8(k) × 8(n) operand `mmul` wants;
//! - **C objects** (32 rows × 64 channels, i32 sums, then f32 results in place): row-major
//!   ([`c_offset`]), so the memory tile can join four of them into 128 rows with no reordering.

/// Rows of an A / C object (one compute tile's share of a 128-row block).
pub const TILE_M: usize = 32;
/// Depth of one A / W object: the model file's tile width.
pub const TILE_K: usize = 64;
/// Output channels of a W / C object: the model file's tile height.
pub const TILE_N: usize = 64;
/// `mmul` block rows (r).
pub const MMUL_R: usize = 4;
/// `mmul` block depth (s).
pub const MMUL_S: usize = 8;
/// `mmul` block columns (t).
pub const MMUL_T: usize = 8;
/// Bytes of an A object.
pub const A_BYTES: usize = TILE_M * TILE_K;
/// Bytes of a W object (one 4 KB file tile).
pub const W_BYTES: usize = TILE_N * TILE_K;
/// Elements of a C object.
pub const C_ELEMS: usize = TILE_M * TILE_N;

/// Offset of `(m, k)` in an A object (`m < TILE_M`, `k < TILE_K`).
#[inline]
pub const fn a_offset(m: usize, k: usize) -> usize {
    ((m / MMUL_R) * (TILE_K / MMUL_S) + k / MMUL_S) * (MMUL_R * MMUL_S)
        + (m % MMUL_R) * MMUL_S
        + k % MMUL_S
}

/// Offset of `(n, k)` (channel, depth) in a W object.
#[inline]
pub const fn w_offset(n: usize, k: usize) -> usize {
    ((n / MMUL_T) * (TILE_K / MMUL_S) + k / MMUL_S) * (MMUL_T * MMUL_S)
        + (n % MMUL_T) * MMUL_S
        + k % MMUL_S
}

/// Offset of `(m, n)` in a C object.
#[inline]
pub const fn c_offset(m: usize, n: usize) -> usize {
    m * TILE_N + n
}

/// Blocks a row-major `TILE_M × TILE_K` byte matrix (the order the shim DMA delivers) into the
/// A-object order, as the memory tile's MM2S pattern does.
pub fn block_a(row_major: &[i8], out: &mut [i8]) {
    for m in 0..TILE_M {
        for k in 0..TILE_K {
            out[a_offset(m, k)] = row_major[m * TILE_K + k];
        }
    }
}

/// Blocks a channel-major `TILE_N × TILE_K` file tile into the W-object order.
pub fn block_w(tile: &[i8], out: &mut [i8]) {
    for n in 0..TILE_N {
        for k in 0..TILE_K {
            out[w_offset(n, k)] = tile[n * TILE_K + k];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_permutations() {
        let mut seen = vec![false; A_BYTES];
        for m in 0..TILE_M {
            for k in 0..TILE_K {
                assert!(!std::mem::replace(&mut seen[a_offset(m, k)], true));
            }
        }
        let mut seen = vec![false; W_BYTES];
        for n in 0..TILE_N {
            for k in 0..TILE_K {
                assert!(!std::mem::replace(&mut seen[w_offset(n, k)], true));
            }
        }
        // A 4×8 block is 32 contiguous bytes; a W 8×8 block 64.
        assert_eq!(a_offset(0, 8), 32);
        assert_eq!(a_offset(4, 0), 32 * 8);
        assert_eq!(w_offset(0, 8), 64);
        assert_eq!(w_offset(8, 0), 64 * 8);
    }
}
