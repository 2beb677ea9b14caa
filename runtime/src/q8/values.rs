//! Broadcast-row INT8 dot products over four-deep groups: both products of
//! [`super::prepared`] (`Q·Kᵀ` and `P·V`) as exact integer sums.
//!
//! `out[r][i] = Σ_{t < 4·groups} a(r, t) · b(t, col0 + i)` for `r < rows`, `i < cols`, where
//! the unsigned left operand `a` is one byte plane (`a = lo`) or two (`a = 256·hi + lo`, a
//! 16-bit code), rows `stride` apart, and the signed right operand `b` is stored in groups of
//! four along `t`, so one column's four consecutive `t` are one 32-bit word (what `vpdpbusd`
//! multiplies by four bytes of `a`, broadcast):
//!
//! ```text
//! offset(t, col) = (t / 4) · group_stride + 4·col + t % 4
//! ```
//!
//! - `P·V`: `t` = key, `col` = channel, `group_stride = 4·head_dim` ([`value_offset`]);
//!   `a` = the 16-bit probability codes in two planes.
//! - `Q·Kᵀ`: `t` = head dimension, `col` = key, `group_stride = 4·keys` ([`key_offset`]); `a`
//!   = the query's offset bytes `q + 128` in one plane (the caller removes `128·Σ_t k`).
//!
//! The callers bound `Σ_t a·|b|` below 2³¹, so every path computes the same i32 (tested bit for
//! bit against i64 sums).

use super::kernels::{Isa, MAX_R};

/// Depth of one group (the four bytes of one `vpdpbusd` lane).
pub const GROUP: usize = 4;

/// Most columns of one call (the i32 sums of [`MAX_R`] rows live on the stack).
pub const MAX_COLS: usize = 256;

/// The i32 sums of up to [`MAX_R`] rows: `[r][i]`.
pub type ColumnSums = [[i32; MAX_COLS]; MAX_R];

/// Offset of value `(j, c)` in one head's value codes (`d` channels).
#[inline]
pub fn value_offset(j: usize, c: usize, d: usize) -> usize {
    (j / GROUP) * GROUP * d + c * GROUP + j % GROUP
}

/// Offset of key `j`'s dimension `c` in one head's key codes (room for `keys` keys).
#[inline]
pub fn key_offset(j: usize, c: usize, keys: usize) -> usize {
    (c / GROUP) * GROUP * keys + j * GROUP + c % GROUP
}

/// The left operand: `rows` rows `stride` bytes apart, one plane (`hi` = `None`) or two.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    /// High bytes of 16-bit codes, if any.
    pub hi: Option<&'a [u8]>,
    /// Low bytes (or the 8-bit codes).
    pub lo: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
}

/// The right operand: groups of four along `t`, `group_stride` bytes apart.
#[derive(Clone, Copy)]
pub struct Groups<'a> {
    /// The codes.
    pub b: &'a [i8],
    /// Groups (`t < 4·groups`).
    pub groups: usize,
    /// Bytes from one group to the next.
    pub group_stride: usize,
}

/// `out[r][i] = Σ_t a(r, t) · b(t, col0 + i)` (see the module docs) for `r < rows`,
/// `i < cols`. On [`Isa::Avx512Vnni`] the `vpdpbusd` kernel when the 16-column blocks it reads
/// stay inside a group (`4·(col0 + cols rounded up to 16) ≤ group_stride`), else a plain loop
/// (the reference).
///
/// # Panics
/// If `rows` is not in `1..=MAX_R`, `cols > MAX_COLS`, a group is shorter than its columns,
/// or a slice is too short.
pub fn group_dot(
    isa: Isa,
    rows: usize,
    a: Rows<'_>,
    b: Groups<'_>,
    col0: usize,
    cols: usize,
    out: &mut ColumnSums,
) {
    let n = b.groups * GROUP;
    assert!(
        (1..=MAX_R).contains(&rows) && cols <= MAX_COLS && n <= a.stride,
        "group_dot: rows {rows}, {cols} columns, {n} deep in rows of {}",
        a.stride
    );
    assert!(
        GROUP * (col0 + cols) <= b.group_stride,
        "group_dot: columns past the group"
    );
    let plane = (rows - 1) * a.stride + n;
    assert!(
        a.lo.len() >= plane && a.hi.is_none_or(|hi| hi.len() >= plane),
        "group_dot: a row plane is too short"
    );
    assert!(
        b.groups == 0 || b.b.len() >= (b.groups - 1) * b.group_stride + GROUP * (col0 + cols),
        "group_dot: b is too short"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni
        && GROUP * (col0 + cols.next_multiple_of(16)) <= b.group_stride
        && (b.groups == 0
            || b.b.len()
                >= (b.groups - 1) * b.group_stride + GROUP * (col0 + cols.next_multiple_of(16)))
    {
        return super::values_vnni::group_dot(rows, a, b, col0, cols, out);
    }
    let _ = isa;
    group_dot_reference(rows, a, b, col0, cols, out);
}

/// The element-by-element definition of [`group_dot`].
fn group_dot_reference(
    rows: usize,
    a: Rows<'_>,
    b: Groups<'_>,
    col0: usize,
    cols: usize,
    out: &mut ColumnSums,
) {
    for (r, out) in out.iter_mut().enumerate().take(rows) {
        let out = &mut out[..cols];
        out.fill(0);
        for g in 0..b.groups {
            let bg = &b.b[g * b.group_stride + GROUP * col0..][..GROUP * cols];
            for s in 0..GROUP {
                let t = r * a.stride + g * GROUP + s;
                let x = a.hi.map_or(0, |hi| 256 * hi[t] as i32) + a.lo[t] as i32;
                for (i, o) in out.iter_mut().enumerate() {
                    *o += x * bg[i * GROUP + s] as i32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    /// Random left rows, extreme codes included; long rows get smaller 16-bit codes (the
    /// callers keep the sums below 2³¹).
    fn planes(rng: &mut Rng, rows: usize, stride: usize, n: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut hi, mut lo) = (vec![0u8; rows * stride], vec![0u8; rows * stride]);
        for r in 0..rows {
            for j in 0..n {
                let shift = j % 5 + if n > 256 { 4 } else { 0 };
                let p: u16 = match j % 7 {
                    0 if j < 64 => 65_535,
                    1 => 0,
                    _ => ((rng.f32(1.0).abs() * 65_535.0) as u16) >> shift,
                };
                hi[r * stride + j] = (p >> 8) as u8;
                lo[r * stride + j] = p as u8;
            }
        }
        (hi, lo)
    }

    #[test]
    fn group_dots_agree_across_isas_and_with_i64_sums() {
        let mut rng = Rng::new(7);
        // (rows, groups, col0, cols, group_stride / 4)
        for (rows, groups, col0, cols, width) in [
            (1, 1, 0, 16, 16),
            (1, 375, 0, 64, 64),
            (2, 17, 0, 64, 64),
            (3, 9, 0, 48, 48),
            (4, 200, 0, 64, 64),
            (4, 3, 0, 128, 128),
            (2, 4, 0, 5, 5),
            (1, 2, 0, 256, 256),
            (1, 16, 256, 256, 1536),
            (5 - 1, 16, 1280, 220, 1536),
            (3, 16, 64, 7, 80),
        ] {
            let n = groups * GROUP;
            let stride = n + 3;
            let (hi, lo) = planes(&mut rng, rows, stride, n);
            let group_stride = GROUP * width;
            // Codes at the extremes ±127 as well as random ones.
            let b: Vec<i8> = (0..groups * group_stride)
                .map(|i| match i % 11 {
                    0 => 127,
                    1 => -127,
                    _ => (rng.f32(1.0) * 127.0).round() as i8,
                })
                .collect();
            for two_planes in [true, false] {
                let a = Rows {
                    hi: two_planes.then_some(&hi[..]),
                    lo: &lo,
                    stride,
                };
                let bg = Groups {
                    b: &b,
                    groups,
                    group_stride,
                };
                let mut want = [[0i32; MAX_COLS]; MAX_R];
                for (r, want) in want.iter_mut().enumerate().take(rows) {
                    for (i, w) in want.iter_mut().enumerate().take(cols) {
                        let s: i64 = (0..n)
                            .map(|t| {
                                let at = r * stride + t;
                                let x = if two_planes { (hi[at] as i64) << 8 } else { 0 };
                                let bv = b[(t / 4) * group_stride + 4 * (col0 + i) + t % 4];
                                (x + lo[at] as i64) * bv as i64
                            })
                            .sum();
                        *w = i32::try_from(s).expect("test sums fit i32");
                    }
                }
                for isa in Isa::available() {
                    let mut got = [[i32::MIN; MAX_COLS]; MAX_R];
                    group_dot(isa, rows, a, bg, col0, cols, &mut got);
                    for r in 0..rows {
                        assert_eq!(
                            got[r][..cols],
                            want[r][..cols],
                            "{isa:?} rows {rows} groups {groups} cols {col0}+{cols} row {r} \
                             two planes {two_planes}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn offsets_follow_the_documented_layouts() {
        assert_eq!(value_offset(5, 3, 64), 4 * 64 + 3 * 4 + 1);
        assert_eq!(key_offset(5, 3, 1536), 5 * 4 + 3);
        assert_eq!(key_offset(5, 9, 1536), 2 * 4 * 1536 + 5 * 4 + 1);
    }
}
