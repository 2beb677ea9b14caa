//! AMX INT8 GEMM (Intel Xeon 4th generation "Sapphire Rapids" and later), selected as
//! [`super::Isa::Amx`]. First run on hardware on an Intel Xeon with AMX-INT8 (2 vCPUs,
//! December 2026): bit-exact against the scalar reference there. Guarded so that it is only
//! chosen where it has been verified at run time:
//! 1. CPUID.(7,0):EDX reports AMX-TILE (bit 24) and AMX-INT8 (bit 25), and AVX-512F is present
//!    (the epilogue's);
//! 2. Linux grants the tile-data state: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`;
//! 3. a start-up self-check ([`self_check`]) gives the scalar reference's sums bit for bit on
//!    random and extreme codes.
//!
//! Otherwise [`super::Isa::detect`] falls back to the next instruction set with a one-line
//! note on stderr.
//!
//! **The GEMM's many-rows path** ([`block`], driven by `gemm.rs`): `TDPBUSD` (unsigned bytes
//! of the first source × signed bytes of the second, four products summed into each i32, no
//! saturation). The activations are the first source as they are quantized: offset bytes
//! `u = q + 128`, row-major, 16 rows × 64 bytes per tile (row stride `kp`), so they need no
//! rearranging. The weights are the second source, which wants k quads × (16 channels × 4
//! bytes); the file's tiles hold 64 channels × 64 k bytes, so each GEMM call rearranges the
//! matrix once ([`pack_weights`], `n·k` bytes against `m·n·k` multiply-adds) into a scratch,
//! and the file keeps the one layout every ISA reads. Accumulators are 16 rows × 16 channels:
//! the output's own orientation, so the AVX-512 epilogue ([`finish_block`]) reads rows and
//! applies `out = (C − 128·Σ_p w(c, p)) · scale_x · scale_w + bias` as the other paths.
//!
//! **Up to 4 rows** (decoder GEMVs, attention blocks) `kernels.rs` sends the calls to the
//! 512-bit VNNI kernel, which every AMX CPU has: a GEMV reuses no tile, so each weight byte
//! would cost a tile load (an AMX few-rows kernel was measured slower and removed).

use super::layout::{TILE, TILE_BYTES};
use crate::cpu::{gelu_f32_in_place, Epilogue};
use std::arch::asm;

/// Whether CPUID reports AMX-TILE and AMX-INT8.
pub(super) fn cpu_has_amx_int8() -> bool {
    crate::amx::has(crate::amx::Feature::Int8)
}

/// Whether the CPU has AMX-INT8 and Linux granted this process the tile-data state (asked
/// once per process).
pub(super) fn permitted() -> bool {
    cpu_has_amx_int8() && crate::amx::tile_data_permitted()
}

/// Whether the kernel may run: [`permitted`] and the [`self_check`] passed (decided once per
/// process; a CPU with AMX-INT8 where either fails gets a one-line note on stderr).
pub(super) fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        if !cpu_has_amx_int8() {
            return false;
        }
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("amanuensis: AMX INT8 not used: its epilogue needs AVX-512F");
            return false;
        }
        if !permitted() {
            eprintln!("amanuensis: AMX INT8 not used: Linux refused the tile-data permission");
            return false;
        }
        match self_check() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("amanuensis: AMX INT8 not used: start-up self-check failed ({e})");
                false
            }
        }
    })
}

/// Activation rows of one [`block`] call: two 16-row tiles.
pub(super) const BLOCK_ROWS: usize = 32;

/// Bytes of one k tile of a 64-channel weight tile in the `TDPBUSD` second-source layout.
const PACKED_TILE: usize = TILE_BYTES;

/// Rearranges the weight tiles of one 64-channel tile (`k_tiles` × `TILE_BYTES`, channel-major
/// as the file holds them: byte `c·64 + p`) into `TDPBUSD`'s second-source ("VNNI") layout:
/// per k tile, 16 rows of k quads × (64 channels × 4 bytes), byte `kk·256 + c·4 + j` =
/// `w(c, 4·kk + j)`. A 16-channel quarter is then one 16 × 64-byte tile at column `q·64`,
/// row stride 256. Done once per GEMM call for the whole matrix (`n·k` bytes; the GEMM does
/// `m·n·k` multiply-adds), never stored in the file, so every ISA reads one file layout.
///
/// # Panics
/// If `w_tiles` or `dst` is shorter than `k_tiles · TILE_BYTES`.
pub(super) fn pack_weights(k_tiles: usize, w_tiles: &[i8], dst: &mut [i8]) {
    let len = k_tiles * TILE_BYTES;
    let (src, dst) = (&w_tiles[..len], &mut dst[..len]);
    for (s, d) in src
        .chunks_exact(TILE_BYTES)
        .zip(dst.chunks_exact_mut(PACKED_TILE))
    {
        for c in 0..TILE {
            let row = &s[c * TILE..(c + 1) * TILE];
            for (kk, quad) in row.chunks_exact(4).enumerate() {
                d[kk * 256 + c * 4..][..4].copy_from_slice(quad);
            }
        }
    }
}

/// This thread's AMX tile configuration for [`block`]: eight 16 × 64-byte tiles (tmm0-3
/// accumulators, tmm4-5 activations, tmm6-7 weights).
pub(super) struct Tiles(crate::amx::Tiles);

impl Tiles {
    /// Configures the tiles on this thread.
    ///
    /// # Panics
    /// If AMX is not [`permitted`].
    pub(super) fn new() -> Tiles {
        assert!(permitted(), "AMX kernel without AMX-INT8 permission");
        Tiles(crate::amx::Tiles::new(crate::amx::Feature::Int8))
    }
}

/// Raw `TDPBUSD` sums of a 32-row × 64-channel block over `k_tiles` k tiles: `out[r][c]
/// (=, +=) Σ_{p < 64·k_tiles} x[r·stride + p] · w(c, p)` (`+=` when `accumulate`: the sums of
/// earlier k tiles are loaded back into the accumulators), offset bytes times signed weights
/// with no correction (subtract `128·Σ_p w(c, p)` for the codes' products). `x` holds
/// `BLOCK_ROWS` rows of offset bytes, `stride` apart, and `w` the weights of those k tiles as
/// [`pack_weights`] leaves them. Two passes of 32 channels, each a 2 × 2 block of accumulator
/// tiles: per k tile, two activation and two weight tile loads feed four `TDPBUSD`.
///
/// # Panics
/// If `k_tiles == 0` or a slice is too short.
pub(super) fn block(
    _tiles: &Tiles,
    x: &[u8],
    stride: usize,
    k_tiles: usize,
    w: &[i8],
    accumulate: bool,
    out: &mut [[i32; TILE]; BLOCK_ROWS],
) {
    assert!(k_tiles > 0 && stride >= k_tiles * TILE && w.len() >= k_tiles * PACKED_TILE);
    assert!(x.len() >= (BLOCK_ROWS - 1) * stride + k_tiles * TILE);
    let o = out.as_mut_ptr() as *mut u8;
    for half in 0..2 {
        let (o0, o1) = (half * 128, 16 * 256 + half * 128);
        // SAFETY: `_tiles` configured eight 16 × 64-byte tiles on this thread. The
        // accumulator loads and stores touch 16 rows of 64 bytes (stride 256) at byte offsets
        // {o0, o1} + {0, 64} of the 8 KB `out`. Activation loads read rows 0-31 (stride
        // `stride`) at columns kt·64..+64 ≤ 64·k_tiles of `x`; weight loads read 16 rows
        // (stride 256) of 64 bytes at offset kt·4096 + half·128 + {0, 64} of `w`: inside both
        // slices as asserted.
        unsafe {
            if accumulate {
                asm!(
                    "tileloadd tmm0, [{o} + {s256}*1]",
                    "tileloadd tmm1, [{o} + {s256}*1 + 64]",
                    "tileloadd tmm2, [{o1} + {s256}*1]",
                    "tileloadd tmm3, [{o1} + {s256}*1 + 64]",
                    o = in(reg) o.add(o0),
                    o1 = in(reg) o.add(o1),
                    s256 = in(reg) 256usize,
                    options(nostack, readonly),
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem),
                );
            }
            asm!(
                "2:",
                "tileloadd tmm4, [{a0} + {stride}*1]",
                "tileloadd tmm6, [{b} + {s256}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {stride}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tileloadd tmm7, [{b} + {s256}*1 + 64]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b}, 4096",
                "dec {n}",
                "jnz 2b",
                "tilestored [{o} + {s256}*1], tmm0",
                "tilestored [{o} + {s256}*1 + 64], tmm1",
                "tilestored [{o1} + {s256}*1], tmm2",
                "tilestored [{o1} + {s256}*1 + 64], tmm3",
                a0 = inout(reg) x.as_ptr() => _,
                a1 = inout(reg) x.as_ptr().add(16 * stride) => _,
                b = inout(reg) w.as_ptr().add(half * 128) => _,
                n = inout(reg) k_tiles => _,
                stride = in(reg) stride,
                s256 = in(reg) 256usize,
                o = in(reg) o.add(o0),
                o1 = in(reg) o.add(o1),
                options(nostack),
            );
        }
    }
}

/// The epilogue of a [`block`]'s sums, 16 channels per AVX-512 instruction, rounding exactly
/// as [`super::gemm::dequantize_into`]: for rows `r < rows` and channels `c < width`,
/// `out[r·n + j0 + c] (=, +=, = gelu) ((acc[r][c] − 128·sums[c]) as f32 · scales_x[r]) ·
/// scale_w[c] + bias[c]` (`+ 0.0` without a bias), GELU over the same `width`-long slices.
///
/// # Panics
/// If AVX-512F is missing, `rows > BLOCK_ROWS`, `width > TILE`, or a slice is too short.
#[allow(clippy::too_many_arguments)] // one block's sums, its scales and where they go
pub(super) fn finish_block(
    acc: &[[i32; TILE]; BLOCK_ROWS],
    rows: usize,
    sums: &[i32],
    scales_x: &[f32],
    scale_w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    n: usize,
    j0: usize,
    width: usize,
) {
    assert!(
        is_x86_feature_detected!("avx512f"),
        "AMX epilogue without AVX-512F"
    );
    assert!(rows <= BLOCK_ROWS && width <= TILE && j0 + width <= n);
    assert!(sums.len() >= width && scale_w.len() >= width && scales_x.len() >= rows);
    assert!(bias.is_none_or(|b| b.len() >= width));
    assert!(rows == 0 || out.len() >= (rows - 1) * n + j0 + width);
    for r in 0..rows {
        let row = &mut out[r * n + j0..r * n + j0 + width];
        // SAFETY: AVX-512F detected above; `acc[r]` has TILE ≥ width values, `sums`,
        // `scale_w`, `bias` and `row` at least `width` (asserted); every access is masked to
        // the lanes below `width`.
        unsafe { finish_row_avx512(&acc[r], sums, scales_x[r], scale_w, bias, epilogue, row) };
        if epilogue == Epilogue::Gelu {
            gelu_f32_in_place(row);
        }
    }
}

/// One row of [`finish_block`] (GELU excepted: it stores the pre-activation).
///
/// # Safety
/// AVX-512F available; `sums`, `scale_w` and `bias` (when given) hold at least `row.len()`
/// (≤ TILE) values.
#[target_feature(enable = "avx512f")]
unsafe fn finish_row_avx512(
    acc: &[i32; TILE],
    sums: &[i32],
    scale_x: f32,
    scale_w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    row: &mut [f32],
) {
    use std::arch::x86_64::*;
    let width = row.len();
    let sx = _mm512_set1_ps(scale_x);
    for c0 in (0..width).step_by(16) {
        let lanes = (width - c0).min(16);
        let k: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
        // SAFETY: lanes c0..c0+lanes of each slice are inside it (caller's contract); the
        // masked lanes are neither read nor written.
        unsafe {
            let a = _mm512_maskz_loadu_epi32(k, acc.as_ptr().add(c0));
            let s = _mm512_maskz_loadu_epi32(k, sums.as_ptr().add(c0));
            let a = _mm512_sub_epi32(a, _mm512_slli_epi32::<7>(s));
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(a), sx);
            let v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, scale_w.as_ptr().add(c0)));
            let b = match bias {
                Some(b) => _mm512_maskz_loadu_ps(k, b.as_ptr().add(c0)),
                None => _mm512_setzero_ps(),
            };
            let v = _mm512_add_ps(v, b);
            let o = row.as_mut_ptr().add(c0);
            let v = match epilogue {
                Epilogue::AddInto => _mm512_add_ps(_mm512_maskz_loadu_ps(k, o), v),
                Epilogue::Store | Epilogue::Gelu => v,
            };
            _mm512_mask_storeu_ps(o, k, v);
        }
    }
}

/// Start-up check of [`pack_weights`] and [`block`] against the scalar sums on a small problem
/// (random and extreme codes, 3 k tiles in one call and as 2 + 1 accumulated): `Ok` when every
/// sum matches bit for bit, else a one-line description of the first mismatch.
pub(super) fn self_check() -> Result<(), String> {
    const K_TILES: usize = 3;
    const KP: usize = K_TILES * TILE;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tiles = Tiles::new();
    let mut packed = vec![0i8; K_TILES * TILE_BYTES];
    let mut got = [[0i32; TILE]; BLOCK_ROWS];
    for case in 0..3 {
        let (x, w): (Vec<u8>, Vec<i8>) = match case {
            0 => (
                (0..BLOCK_ROWS * KP).map(|_| next() as u8).collect(),
                (0..K_TILES * TILE_BYTES)
                    .map(|_| ((next() % 255) as i32 - 127) as i8)
                    .collect(),
            ),
            1 => (vec![255; BLOCK_ROWS * KP], vec![-127; K_TILES * TILE_BYTES]),
            _ => (vec![255; BLOCK_ROWS * KP], vec![127; K_TILES * TILE_BYTES]),
        };
        // The file's tile layout: w(c, p) at byte (p / 64)·TILE_BYTES + c·64 + p % 64.
        let want = |r: usize, c: usize| -> i32 {
            (0..KP)
                .map(|p| {
                    x[r * KP + p] as i32 * w[(p / TILE) * TILE_BYTES + c * TILE + p % TILE] as i32
                })
                .sum()
        };
        pack_weights(K_TILES, &w, &mut packed);
        for split in [false, true] {
            if split {
                block(&tiles, &x, KP, 2, &packed, false, &mut got);
                let rest = &packed[2 * TILE_BYTES..];
                block(&tiles, &x[2 * TILE..], KP, 1, rest, true, &mut got);
            } else {
                block(&tiles, &x, KP, K_TILES, &packed, false, &mut got);
            }
            for (r, row) in got.iter().enumerate() {
                if let Some(c) = (0..TILE).find(|&c| row[c] != want(r, c)) {
                    return Err(format!(
                        "case {case}{}: row {r} channel {c} gave {} instead of {}",
                        if split { ", k in 2 + 1 tiles" } else { "" },
                        row[c],
                        want(r, c)
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-exactness on AMX hardware (the self-check is the same comparison); skipped with a
    /// printed reason elsewhere.
    #[test]
    fn amx_kernel_matches_the_scalar_reference_where_amx_exists() {
        if !cpu_has_amx_int8() {
            eprintln!("skipped: this CPU has no AMX-INT8 (CPUID.7.0:EDX bits 24/25)");
            return;
        }
        assert!(permitted(), "CPU has AMX-INT8 but Linux refused tile data");
        assert_eq!(self_check(), Ok(()));
    }

    /// Single-thread rate of [`block`] on cache-resident operands (k = 384 and 1536):
    /// `cargo test -p amanuensis-runtime --release --lib gemm_amx::tests::block_throughput --
    /// --ignored --nocapture` on an AMX machine.
    #[test]
    #[ignore = "timing only"]
    fn block_throughput() {
        if !permitted() {
            eprintln!("skipped: no AMX-INT8");
            return;
        }
        for k_tiles in [6, 24] {
            let kp = k_tiles * TILE;
            let x = vec![3u8; BLOCK_ROWS * kp];
            let w = vec![1i8; k_tiles * TILE_BYTES];
            let mut out = [[0i32; TILE]; BLOCK_ROWS];
            let tiles = Tiles::new();
            let mut best = f64::INFINITY;
            for _ in 0..200 {
                let t = std::time::Instant::now();
                for _ in 0..100 {
                    block(
                        &tiles,
                        std::hint::black_box(&x),
                        kp,
                        k_tiles,
                        &w,
                        false,
                        &mut out,
                    );
                }
                best = best.min(t.elapsed().as_secs_f64() / 100.0);
            }
            let macs = (BLOCK_ROWS * TILE * kp) as f64;
            println!(
                "block k={kp}: {:.0} ns, {:.0} G MAC/s",
                best * 1e9,
                macs / best / 1e9
            );
            assert_eq!(out[0][0], 3 * kp as i32);
        }
    }
}
