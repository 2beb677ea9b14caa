//! AMX INT8 GEMM micro-kernel (Intel Xeon 4th generation "Sapphire Rapids" and later),
//! selected as [`super::Isa::Amx`]. **It has never run on hardware**: the development machine
//! (AMD Zen 4) has no AMX. It is written to the Intel SDM, checked to assemble, and guarded so
//! that it can only be chosen where it has been verified at run time:
//! 1. CPUID.(7,0):EDX reports AMX-TILE (bit 24) and AMX-INT8 (bit 25);
//! 2. Linux grants the tile-data state: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`;
//! 3. a start-up self-check ([`self_check`]) gives the scalar reference's sums bit for bit on
//!    random and extreme codes.
//!
//! Otherwise [`super::Isa::detect`] falls back to the next instruction set with a one-line
//! note on stderr.
//!
//! Arithmetic (same contract as the VNNI kernels, so no file layout change): `TDPBSUD` (signed
//! bytes of the first source × unsigned bytes of the second, four products summed into each
//! i32 element, no saturation). The weight tile layout already is the first source's layout:
//! 16 channels × 64 k bytes per tile row, row stride 64 (one quarter of a 64 × 64 weight tile,
//! loaded as is). The activations (offset bytes `u = q + 128`, up to 4 rows) are rearranged per
//! k tile into the second source's "VNNI" layout, 16 rows of k quads × (4 activation rows × 4
//! bytes), zero for missing rows. Each k tile: one activation tile load, four weight tile loads
//! and four `TDPBSUD` into four 16 × 4 i32 accumulator tiles (channels × activation rows);
//! then `out[r][c] = C[c][r] − 128·Σ_p w(c, p)` as on VNNI.
//!
//! This block (4 activation rows per call, the contract of `dot_tile_u8`) uses a quarter of
//! each `TDPBSUD`'s 16 × 16 output: it is a correct, guarded first path, not the ≥ 3× one
//! issue #10 asks for, which needs 16-row activation blocks in the GEMM driver.

use super::kernels::{TileSums, MAX_R};
use super::layout::{TILE, TILE_BYTES};
use std::arch::asm;
use std::cell::RefCell;

/// `arch_prctl` request for permission to use an extended state component.
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile-data state component.
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether CPUID reports AMX-TILE and AMX-INT8.
// `__cpuid` is a safe function on current toolchains and `unsafe` on older ones (MSRV).
#[allow(unused_unsafe)]
pub(super) fn cpu_has_amx_int8() -> bool {
    // SAFETY: CPUID is available on every x86-64 CPU; leaf 0 gives the highest leaf.
    let max_leaf = unsafe { std::arch::x86_64::__cpuid(0) }.eax;
    if max_leaf < 7 {
        return false;
    }
    // SAFETY: leaf 7 is supported (checked above).
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

/// Whether the CPU has AMX-INT8 and Linux granted this process the tile-data state (asked
/// once per process).
pub(super) fn permitted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        if !cpu_has_amx_int8() {
            return false;
        }
        // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes this process's permitted
        // extended-state set; it reads no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        rc == 0
    })
}

/// Whether the kernel may run: [`permitted`] and the [`self_check`] passed (decided once per
/// process; a CPU with AMX-INT8 where either fails gets a one-line note on stderr).
pub(super) fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        if !cpu_has_amx_int8() {
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

/// The 64-byte tile configuration (`LDTILECFG` operand), palette 1.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// tmm0-3: accumulators (16 channels × 4 i32); tmm4: activations (16 k quads × 16 bytes);
/// tmm5-7: weights (16 channels × 64 bytes).
const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [16, 16, 16, 16, 16, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

thread_local! {
    /// Per-thread activation tiles in the `TDPBSUD` second-source layout (256 bytes per k
    /// tile; grows to the largest depth seen, then allocates nothing).
    static PACKED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `out[r][c] = Σ_{p < kp} (x[r·kp + p] - 128) · w(c, p)` for `r < rows`, `c < width` (all 64
/// channels of the tile are computed), `sums[c] = Σ_p w(c, p)`.
///
/// # Panics
/// If AMX is not [`permitted`], `rows` is not in `1..=MAX_R`, `width > TILE`, or a slice is too
/// short.
pub(super) fn dot_tile(
    rows: usize,
    x: &[u8],
    k_tiles: usize,
    w_tiles: &[i8],
    sums: &[i32],
    width: usize,
    out: &mut TileSums,
) {
    let kp = k_tiles * TILE;
    assert!(permitted(), "AMX kernel without AMX-INT8 permission");
    assert!((1..=MAX_R).contains(&rows) && width <= TILE && sums.len() >= TILE);
    assert!(x.len() >= rows * kp && w_tiles.len() >= k_tiles * TILE_BYTES);
    PACKED.with(|packed| {
        let mut packed = packed.borrow_mut();
        if packed.len() < k_tiles * 256 {
            packed.resize(k_tiles * 256, 0);
        }
        // Second-source layout: byte (kt, kk, r, j) = x[r·kp + kt·64 + 4·kk + j].
        for kt in 0..k_tiles {
            let dst = &mut packed[kt * 256..(kt + 1) * 256];
            for kk in 0..16 {
                for r in 0..MAX_R {
                    let d = &mut dst[kk * 16 + r * 4..][..4];
                    if r < rows {
                        d.copy_from_slice(&x[r * kp + kt * TILE + 4 * kk..][..4]);
                    } else {
                        d.fill(0);
                    }
                }
            }
        }
        let mut c = [[[0i32; 4]; 16]; 4];
        // SAFETY: AMX-TILE/INT8 are present and the OS granted tile data (`permitted`). The
        // configuration has tiles 0-7 as described at CONFIG; loads read 16 rows × 16 bytes of
        // `packed` (k_tiles·256 bytes, resized above) and 16 rows × 64 bytes (stride 64) at
        // offsets kt·4096 + g·1024 < k_tiles·TILE_BYTES of `w_tiles` (asserted); stores write
        // 16 rows × 16 bytes into each 256-byte quarter of `c`. Tiles are released at the end.
        unsafe { amx_tile(packed.as_ptr(), k_tiles, w_tiles.as_ptr(), &mut c) };
        for (r, out) in out.iter_mut().enumerate().take(rows) {
            for (ch, o) in out.iter_mut().enumerate().take(width) {
                *o = c[ch / 16][ch % 16][r].wrapping_sub(128 * sums[ch]);
            }
        }
    });
}

/// The tile program: configure, zero four accumulators, per k tile load the activations and
/// the four 16-channel weight quarters and `TDPBSUD`, store, release.
///
/// # Safety
/// AMX-TILE/INT8 usable by this thread; `packed` readable for `k_tiles·256` bytes, `w` for
/// `k_tiles·TILE_BYTES` bytes.
unsafe fn amx_tile(packed: *const u8, k_tiles: usize, w: *const i8, c: &mut [[[i32; 4]; 16]; 4]) {
    let cfg = &CONFIG as *const TileConfig;
    // SAFETY: caller's contract; `cfg` is a valid 64-byte palette-1 configuration.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            cfg = in(reg) cfg,
            options(nostack, readonly),
        );
    }
    let (s16, s64) = (16usize, 64usize);
    for kt in 0..k_tiles {
        // SAFETY: tile kt of `packed` and of `w` (caller's contract); 16 rows each.
        unsafe {
            let b = packed.add(kt * 256);
            let a = w.add(kt * TILE_BYTES);
            asm!(
                "tileloadd tmm4, [{b} + {s16}*1]",
                "tileloadd tmm5, [{a0} + {s64}*1]",
                "tdpbsud tmm0, tmm5, tmm4",
                "tileloadd tmm6, [{a1} + {s64}*1]",
                "tdpbsud tmm1, tmm6, tmm4",
                "tileloadd tmm7, [{a2} + {s64}*1]",
                "tdpbsud tmm2, tmm7, tmm4",
                "tileloadd tmm5, [{a3} + {s64}*1]",
                "tdpbsud tmm3, tmm5, tmm4",
                b = in(reg) b,
                a0 = in(reg) a,
                a1 = in(reg) a.add(1024),
                a2 = in(reg) a.add(2048),
                a3 = in(reg) a.add(3072),
                s16 = in(reg) s16,
                s64 = in(reg) s64,
                options(nostack, readonly),
            );
        }
    }
    let p = c.as_mut_ptr() as *mut u8;
    // SAFETY: four 16 × 16-byte stores into the 1 KB of `c`; then the tile state is released.
    unsafe {
        asm!(
            "tilestored [{p0} + {s16}*1], tmm0",
            "tilestored [{p1} + {s16}*1], tmm1",
            "tilestored [{p2} + {s16}*1], tmm2",
            "tilestored [{p3} + {s16}*1], tmm3",
            "tilerelease",
            p0 = in(reg) p,
            p1 = in(reg) p.add(256),
            p2 = in(reg) p.add(512),
            p3 = in(reg) p.add(768),
            s16 = in(reg) s16,
            options(nostack),
        );
    }
}

/// Start-up check of the kernel against the scalar reference on a small problem (random and
/// extreme codes, every row count, 3 k tiles): `Ok` when every sum matches bit for bit, else
/// a one-line description of the first mismatch.
pub(super) fn self_check() -> Result<(), String> {
    use super::kernels::{dot_tile_u8, Isa};
    let k_tiles = 3;
    let kp = k_tiles * TILE;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for case in 0..3 {
        let (x, w): (Vec<u8>, Vec<i8>) = match case {
            0 => (
                (0..MAX_R * kp).map(|_| (next() % 255) as u8 + 1).collect(),
                (0..k_tiles * TILE_BYTES)
                    .map(|_| ((next() % 255) as i32 - 127) as i8)
                    .collect(),
            ),
            1 => (vec![255; MAX_R * kp], vec![-127; k_tiles * TILE_BYTES]),
            _ => (vec![1; MAX_R * kp], vec![127; k_tiles * TILE_BYTES]),
        };
        let sums: Vec<i32> = (0..TILE)
            .map(|c| {
                (0..kp)
                    .map(|p| w[(p / TILE) * TILE_BYTES + c * TILE + p % TILE] as i32)
                    .sum()
            })
            .collect();
        for rows in 1..=MAX_R {
            let mut want = [[0; TILE]; MAX_R];
            dot_tile_u8(Isa::Scalar, rows, &x, k_tiles, &w, &sums, TILE, &mut want);
            let mut got = [[0; TILE]; MAX_R];
            dot_tile(rows, &x, k_tiles, &w, &sums, TILE, &mut got);
            for r in 0..rows {
                if let Some(c) = (0..TILE).find(|&c| got[r][c] != want[r][c]) {
                    return Err(format!(
                        "case {case}, {rows} rows: row {r} channel {c} gave {} instead of {}",
                        got[r][c], want[r][c]
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

    #[test]
    fn tile_configuration_is_the_64_byte_palette_1_layout() {
        assert_eq!(std::mem::size_of::<TileConfig>(), 64);
        // SAFETY: TileConfig is 64 plain bytes (repr(C), no padding: 1+1+14+32+16).
        let bytes: [u8; 64] = unsafe { std::mem::transmute_copy(&CONFIG) };
        assert_eq!(bytes[0], 1);
        // colsb of tile 5 (weights) at bytes 16 + 2·5, rows of tile 4 at 48 + 4.
        assert_eq!(u16::from_le_bytes([bytes[26], bytes[27]]), 64);
        assert_eq!(bytes[52], 16);
    }
}
