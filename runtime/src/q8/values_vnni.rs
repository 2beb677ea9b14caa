//! AVX-512 VNNI micro-kernel of [`super::values::group_dot`]: 512-bit `vpdpbusd`, one
//! instruction = 16 columns × a group of 4 along the depth, for one row (one byte plane).
//!
//! Per group, each 16-column block of the right operand is one 64-byte load (a column's four
//! depth values are one 32-bit lane); each row's four bytes of the group (per plane) are
//! broadcast to every lane. With two planes the high and low bytes accumulate into separate i32
//! vectors, combined once at the end as `(hi << 8) + lo`. Products and sums are integers and the
//! caller bounds the total below 2³¹, so the result equals the scalar reference bit for bit
//! (`vpdpbusd` does not saturate; wrapping i32 arithmetic is exact when the total fits).
//!
//! Blocking: `R` rows × `CB` 16-column blocks × planes accumulators (≤ 16 of 32 zmm): one
//! row keeps 8 independent chains in flight (one plane: 8 column blocks; two: 4 × 2).

use super::kernels::MAX_R;
use super::values::{ColumnSums, Groups, Rows, GROUP};
use std::arch::x86_64::*;

/// `group_dot` on `vpdpbusd` (see the module docs); the caller checked the shapes, including
/// that 16-column blocks past `cols` stay inside `b`.
///
/// # Panics
/// If the CPU lacks AVX-512 VNNI/BW/F, or the shapes were not checked as documented.
pub(super) fn group_dot(
    rows: usize,
    a: Rows<'_>,
    b: Groups<'_>,
    col0: usize,
    cols: usize,
    out: &mut ColumnSums,
) {
    assert!(
        super::gemm_vnni::available(),
        "VNNI kernel on a CPU without AVX-512 VNNI"
    );
    let n = b.groups * GROUP;
    let padded = cols.next_multiple_of(16);
    let plane = (rows.max(1) - 1) * a.stride + n;
    assert!((1..=MAX_R).contains(&rows) && padded <= out[0].len() && n <= a.stride);
    assert!(a.lo.len() >= plane && a.hi.is_none_or(|hi| hi.len() >= plane));
    assert!(GROUP * (col0 + padded) <= b.group_stride);
    assert!(
        b.groups == 0 || b.b.len() >= (b.groups - 1) * b.group_stride + GROUP * (col0 + padded)
    );
    let blocks = padded / 16;
    let ptrs = Ptrs {
        hi: a.hi.map(<[u8]>::as_ptr),
        lo: a.lo.as_ptr(),
        stride: a.stride,
        b: b.b.as_ptr().wrapping_add(GROUP * col0),
        groups: b.groups,
        group_stride: b.group_stride,
    };
    let mut b0 = 0;
    while b0 < blocks {
        let left = blocks - b0;
        let cb = match rows {
            1 if left >= 8 => 8,
            1 | 2 if left >= 4 => 4,
            3 | 4 if left >= 2 => 2,
            _ => 1,
        };
        // SAFETY: the features were detected above; every kernel reads bytes `..n` of rows
        // `..rows` of the planes, and for each group 64-byte blocks of columns below
        // `col0 + padded` (inside `b`, asserted), and writes `out[r][16·b0 .. 16·(b0 + cb)]`
        // with `16·(b0 + cb) <= padded <= out[r].len()`.
        unsafe {
            if ptrs.hi.is_some() {
                dispatch::<true>(rows, cb, &ptrs, b0, out);
            } else {
                dispatch::<false>(rows, cb, &ptrs, b0, out);
            }
        }
        b0 += cb;
    }
}

/// [`block`] for `rows` rows and `cb` column blocks (one of the combinations chosen above).
///
/// # Safety
/// As [`block`].
#[inline]
unsafe fn dispatch<const HI: bool>(
    rows: usize,
    cb: usize,
    p: &Ptrs,
    b0: usize,
    out: &mut ColumnSums,
) {
    // SAFETY: the caller's contract, for the `(rows, cb)` it chose.
    unsafe {
        match (rows, cb) {
            (1, 8) => block::<1, 8, HI>(p, b0, out),
            (1, 4) => block::<1, 4, HI>(p, b0, out),
            (2, 4) => block::<2, 4, HI>(p, b0, out),
            (3, 2) => block::<3, 2, HI>(p, b0, out),
            (4, 2) => block::<4, 2, HI>(p, b0, out),
            (1, _) => block::<1, 1, HI>(p, b0, out),
            (2, _) => block::<2, 1, HI>(p, b0, out),
            (3, _) => block::<3, 1, HI>(p, b0, out),
            _ => block::<4, 1, HI>(p, b0, out),
        }
    }
}

/// Raw operands of one call.
struct Ptrs {
    hi: Option<*const u8>,
    lo: *const u8,
    stride: usize,
    /// Column `col0` of group 0.
    b: *const i8,
    groups: usize,
    group_stride: usize,
}

/// Columns `16·b0 .. 16·(b0 + CB)` of rows `..R`.
///
/// # Safety
/// AVX-512F/BW/VNNI available; `p.lo` (and `p.hi` when `HI`) readable for
/// `(R-1)·stride + 4·groups` bytes; `p.b` for `(groups-1)·group_stride + 64·(b0 + CB)` bytes;
/// `16·(b0 + CB) <= out[r].len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<const R: usize, const CB: usize, const HI: bool>(
    p: &Ptrs,
    b0: usize,
    out: &mut ColumnSums,
) {
    let mut acc_hi = [[_mm512_setzero_si512(); CB]; R];
    let mut acc_lo = [[_mm512_setzero_si512(); CB]; R];
    let hi = p.hi.unwrap_or(p.lo);
    for g in 0..p.groups {
        let mut bv = [_mm512_setzero_si512(); CB];
        for (c, bv) in bv.iter_mut().enumerate() {
            // SAFETY: group g < groups, 64 bytes of columns 16·(b0 + c) .. +16 inside `b`.
            *bv = unsafe { _mm512_loadu_si512(p.b.add(g * p.group_stride + (b0 + c) * 64).cast()) };
        }
        for r in 0..R {
            let at = r * p.stride + g * GROUP;
            // SAFETY: row r < R, bytes 4g .. 4g + 4 <= 4·groups of it.
            let l = unsafe { p.lo.add(at).cast::<i32>().read_unaligned() };
            let l = _mm512_set1_epi32(l);
            for c in 0..CB {
                acc_lo[r][c] = _mm512_dpbusd_epi32(acc_lo[r][c], l, bv[c]);
            }
            if HI {
                // SAFETY: as above, in the high plane (present when HI).
                let h = unsafe { hi.add(at).cast::<i32>().read_unaligned() };
                let h = _mm512_set1_epi32(h);
                for c in 0..CB {
                    acc_hi[r][c] = _mm512_dpbusd_epi32(acc_hi[r][c], h, bv[c]);
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..CB {
            let sum = if HI {
                _mm512_add_epi32(_mm512_slli_epi32::<8>(acc_hi[r][c]), acc_lo[r][c])
            } else {
                acc_lo[r][c]
            };
            let at = &mut out[r][(b0 + c) * 16..(b0 + c + 1) * 16];
            // SAFETY: `at` is 16 i32 (sliced above).
            unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), sum) };
        }
    }
}
