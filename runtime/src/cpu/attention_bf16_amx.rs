//! AMX-BF16 micro-kernels of [`super::attention_bf16()`] (Intel Xeon 4th generation and later):
//! `TDPBF16PS` (pairs of bf16 products summed into f32, 16 × 16 outputs per instruction) on
//! the very layouts [`super::attention_bf16::Bf16KeyValues`] packs for `vdpbf16ps`:
//! - scores `q·kᵀ` for 32 queries × one 32-key panel: the queries (bf16 pairs, `half` words a
//!   row) are the first source, 16 rows × 16 pairs; a key panel (`[t][32 keys]` pair words) is
//!   already the second source's k-pairs × columns layout, 16 keys a tile (row stride 128
//!   bytes);
//! - `P·V` for 32 queries × 64 value columns: the probabilities (bf16, `kv_pad` a row) are the
//!   first source, 32 keys a tile; the values (`[key pair][head_dim]` pair words) are the
//!   second source, 16 columns a tile (row stride `head_dim·4` bytes).
//!
//! Each is a 2 × 2 block of accumulator tiles (two 16-query row tiles × two 16-column tiles),
//! two first-source and two second-source loads per four `TDPBF16PS`. `TDPBF16PS` rounds as
//! `vdpbf16ps` (round to nearest even, denormal inputs and outputs flushed) but sums in
//! another order, so the results agree with the AVX-512 tiles within f32 rounding of the sums,
//! as those agree with the portable ones.
//!
//! Chosen only where CPUID reports AMX-TILE and AMX-BF16 and Linux grants the tile-data state
//! ([`usable`]); `AMANUENSIS_NO_AMX` in the environment keeps the AVX-512 tiles.

use std::arch::asm;

/// Queries per block (two 16-row tiles).
pub(super) const BLOCK_Q: usize = 32;

/// Whether the AMX-BF16 tiles may run here: CPUID.(7,0):EDX AMX-BF16 (bit 22) and AMX-TILE
/// (bit 24), AVX-512 BF16 (the rest of the attention), the tile-data permission, and no
/// `AMANUENSIS_NO_AMX`. Decided once per process.
pub fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        std::env::var_os("AMANUENSIS_NO_AMX").is_none()
            && crate::amx::has(crate::amx::Feature::Bf16)
            && is_x86_feature_detected!("avx512bf16")
            && crate::amx::tile_data_permitted()
    })
}

/// This thread's tiles for [`scores`] and [`values`] (AMX-BF16).
pub(super) struct Tiles(crate::amx::Tiles);

impl Tiles {
    /// Configures the tiles on this thread.
    ///
    /// # Panics
    /// If the AMX-BF16 tiles are not [`usable`].
    pub(super) fn new() -> Tiles {
        assert!(usable(), "AMX-BF16 tiles on a CPU or process without them");
        Tiles(crate::amx::Tiles::new(crate::amx::Feature::Bf16))
    }
}

/// A 2 × 2 block of `TDPBF16PS` over `steps` steps of 16 pairs: for `i, j < 2`, the 16 × 16
/// f32 tile at `c + i·16·c_stride + j·64` (bytes) = Σ over steps of (16 rows of 64 bytes at
/// `a + i·16·a_stride + step·64`, stride `a_stride`) · (16 rows of 64 bytes at
/// `b + step·b_step + j·64`, stride `b_stride`).
///
/// # Safety
/// `_tiles` configured on this thread; every address above readable (a, b) or writable (c)
/// for its 16 rows.
#[allow(clippy::too_many_arguments)] // two operands and a result, each with its strides
unsafe fn block_2x2(
    _tiles: &Tiles,
    a: *const u8,
    a_stride: usize,
    b: *const u8,
    b_stride: usize,
    b_step: usize,
    steps: usize,
    c: *mut u8,
    c_stride: usize,
) {
    // SAFETY: caller's contract.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {sb}*1 + 64]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b}, {bs}",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c0} + {sc}*1 + 64], tmm1",
            "tilestored [{c1} + {sc}*1], tmm2",
            "tilestored [{c1} + {sc}*1 + 64], tmm3",
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(16 * a_stride) => _,
            b = inout(reg) b => _,
            n = inout(reg) steps => _,
            sa = in(reg) a_stride,
            sb = in(reg) b_stride,
            bs = in(reg) b_step,
            c0 = in(reg) c,
            c1 = in(reg) c.add(16 * c_stride),
            sc = in(reg) c_stride,
            options(nostack),
        );
    }
}

/// Scores of 32 queries against one 32-key panel: `scores[r·s_stride + c] = Σ_t
/// q_pairs[r·half + t] · panel[t·32 + c]` (bf16 pairs, f32 sums) for `r, c < 32`.
///
/// # Panics
/// If `half` is not a positive multiple of 16 or a slice is too short.
pub(super) fn scores(
    tiles: &Tiles,
    q_pairs: &[u32],
    half: usize,
    panel: &[u32],
    scores: &mut [f32],
    s_stride: usize,
) {
    assert!(half > 0 && half.is_multiple_of(16) && s_stride >= 32);
    assert!(q_pairs.len() >= BLOCK_Q * half && panel.len() >= half * 32);
    assert!(scores.len() >= (BLOCK_Q - 1) * s_stride + 32);
    // SAFETY: `tiles` is this thread's. First sources: rows 0-31 of `q_pairs` (stride
    // half·4 bytes), 64 bytes at step·64 < half·4; second: rows t < half of the panel (128
    // bytes each), 64 bytes at column 0 or 64; results: rows 0-31 of `scores` (stride
    // s_stride·4), 64 bytes at column 0 or 64 bytes. All inside the slices (asserted).
    unsafe {
        block_2x2(
            tiles,
            q_pairs.as_ptr().cast(),
            half * 4,
            panel.as_ptr().cast(),
            128,
            16 * 128,
            half / 16,
            scores.as_mut_ptr().cast(),
            s_stride * 4,
        )
    }
}

/// `P·V` of 32 queries over `chunks` chunks of 32 keys, 64 value columns from `col0`:
/// `out[r][c] = Σ_s probs[r·p_stride + s] · values[s·v_stride + col0 + c]` (bf16 pairs, f32
/// sums) for `r < 32`, `c < 64`, `s < 16·chunks` (pair words).
///
/// # Panics
/// If a slice is too short or `v_stride < col0 + 64`.
#[allow(clippy::too_many_arguments)] // two operands with their strides, a column, a result
pub(super) fn values(
    tiles: &Tiles,
    probs: &[u32],
    p_stride: usize,
    chunks: usize,
    values: &[u32],
    v_stride: usize,
    col0: usize,
    out: &mut [[f32; 64]; BLOCK_Q],
) {
    let pairs = 16 * chunks;
    assert!(chunks > 0 && p_stride >= pairs && v_stride >= col0 + 64);
    assert!(probs.len() >= (BLOCK_Q - 1) * p_stride + pairs);
    assert!(values.len() >= (pairs - 1) * v_stride + col0 + 64);
    for half in 0..2 {
        // SAFETY: `tiles` is this thread's. First sources: rows 0-31 of `probs` (stride
        // p_stride·4 bytes), 64 bytes at chunk·64 < pairs·4; second: pair rows < pairs of
        // `values` (stride v_stride·4), 64 bytes at (col0 + 32·half)·4 + {0, 64}; results:
        // the 32 rows of `out` (256 bytes each), 64 bytes at 128·half + {0, 64}. All inside
        // (asserted).
        unsafe {
            block_2x2(
                tiles,
                probs.as_ptr().cast(),
                p_stride * 4,
                values.as_ptr().add(col0 + 32 * half).cast(),
                v_stride * 4,
                16 * v_stride * 4,
                chunks,
                out.as_mut_ptr().cast::<u8>().add(128 * half),
                256,
            )
        }
    }
}
