//! GEMM micro-kernels: register tiles computed from packed or row-major weights, in a portable
//! form (written so LLVM vectorises it) and an AVX2+FMA form chosen at run time.
//!
//! Two tile shapes:
//! - **packed**: up to `MR` rows of `a` times one `NR`-column panel of packed weights
//!   (`[kc][NR]`, see [`super::packed`]); broadcast `a`, FMA into `MR × NR` accumulators.
//!   Used when there are enough rows to amortise packing.
//! - **dot**: up to `DOT_R` rows of `a` against consecutive rows of the weight matrix as stored
//!   (`[n, k]`), one weight row at a time so the weights stream strictly sequentially (reading
//!   8 rows side by side was measured 2× slower on a 80 MB matrix: the prefetchers lose track);
//!   no packing, for decoder-sized `m`.
//!
//! Each safe entry point checks slice lengths, then runs the chosen implementation.

/// Rows of `a` per packed micro-tile.
pub(crate) const MR: usize = 6;
/// Columns per packed panel (two 8-lane vectors).
pub(crate) const NR: usize = 16;
/// Rows of `a` per dot micro-tile, at most.
pub(crate) const DOT_R: usize = 4;

/// Instruction set used by the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust (auto-vectorised for the build target).
    Portable,
    /// x86-64 AVX2 + FMA intrinsics (checked at run time).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    }
}

/// A packed micro-tile result: `tile[r][c]` for `r < rows`.
pub(crate) type Tile = [[f32; NR]; MR];

/// `tile[r][c] = Σ_{p<kc} a[r·lda + p] · b[p·ldb + c]` for `r < rows` (1..=MR), `c < NR`
/// (`ldb = NR` for packed panels; larger for a column block of a row-major matrix).
#[allow(clippy::too_many_arguments)]
pub(crate) fn packed_tile(
    isa: Isa,
    rows: usize,
    kc: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    tile: &mut Tile,
) {
    packed_tile_rows::<false>(isa, rows, kc, a, lda, b, &[], kc, ldb, tile);
}

/// [`packed_tile`] with the rows of `b` in two pieces: row `p < split` at `head[p·ldb..]`, row
/// `p ≥ split` at `tail[(p − split)·ldb..]` (a key/value history whose first rows live
/// elsewhere). The products are summed in the same order as [`packed_tile`] over the same rows
/// held in one piece, so the tile is bit-identical to it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn packed_tile_split(
    isa: Isa,
    rows: usize,
    kc: usize,
    a: &[f32],
    lda: usize,
    head: &[f32],
    tail: &[f32],
    split: usize,
    ldb: usize,
    tile: &mut Tile,
) {
    assert!(split <= kc, "packed_tile_split: split {split} past kc {kc}");
    packed_tile_rows::<true>(isa, rows, kc, a, lda, head, tail, split, ldb, tile);
}

#[allow(clippy::too_many_arguments)]
fn packed_tile_rows<const SPLIT: bool>(
    isa: Isa,
    rows: usize,
    kc: usize,
    a: &[f32],
    lda: usize,
    head: &[f32],
    tail: &[f32],
    split: usize,
    ldb: usize,
    tile: &mut Tile,
) {
    assert!((1..=MR).contains(&rows) && ldb >= NR);
    assert!(a.len() >= (rows - 1) * lda + kc);
    assert!(split == 0 || head.len() >= (split - 1) * ldb + NR);
    assert!(kc == split || tail.len() >= (kc - split - 1) * ldb + NR);
    let b = (head, tail, split);
    match isa {
        Isa::Portable => match rows {
            1 => packed_portable::<1, SPLIT>(kc, a, lda, b, ldb, tile),
            2 => packed_portable::<2, SPLIT>(kc, a, lda, b, ldb, tile),
            3 => packed_portable::<3, SPLIT>(kc, a, lda, b, ldb, tile),
            4 => packed_portable::<4, SPLIT>(kc, a, lda, b, ldb, tile),
            5 => packed_portable::<5, SPLIT>(kc, a, lda, b, ldb, tile),
            _ => packed_portable::<6, SPLIT>(kc, a, lda, b, ldb, tile),
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only constructed after run-time detection of AVX2 and FMA; the
        // slice lengths asserted above cover every element the kernel reads.
        Isa::Avx2Fma => unsafe {
            let (a, b) = (a.as_ptr(), (head.as_ptr(), tail.as_ptr(), split));
            match rows {
                1 => avx2::packed::<1, SPLIT>(kc, a, lda, b, ldb, tile),
                2 => avx2::packed::<2, SPLIT>(kc, a, lda, b, ldb, tile),
                3 => avx2::packed::<3, SPLIT>(kc, a, lda, b, ldb, tile),
                4 => avx2::packed::<4, SPLIT>(kc, a, lda, b, ldb, tile),
                5 => avx2::packed::<5, SPLIT>(kc, a, lda, b, ldb, tile),
                _ => avx2::packed::<6, SPLIT>(kc, a, lda, b, ldb, tile),
            }
        },
    }
}

/// Row `p` of the `b` of [`packed_tile_split`] (of [`packed_tile`] when not `SPLIT`).
#[inline(always)]
fn b_row<'a, const SPLIT: bool>(
    b: (&'a [f32], &'a [f32], usize),
    p: usize,
    ldb: usize,
) -> &'a [f32] {
    let (head, tail, split) = b;
    if SPLIT && p >= split {
        &tail[(p - split) * ldb..(p - split) * ldb + NR]
    } else {
        &head[p * ldb..p * ldb + NR]
    }
}

// `p` picks a row of `b` through `b_row` as well as a column of `a`.
#[allow(clippy::needless_range_loop)]
fn packed_portable<const R: usize, const SPLIT: bool>(
    kc: usize,
    a: &[f32],
    lda: usize,
    b: (&[f32], &[f32], usize),
    ldb: usize,
    tile: &mut Tile,
) {
    let a_rows: [&[f32]; R] = std::array::from_fn(|r| &a[r * lda..r * lda + kc]);
    let mut acc = [[0.0f32; NR]; R];
    for p in 0..kc {
        let bp = b_row::<SPLIT>(b, p, ldb);
        for r in 0..R {
            let av = a_rows[r][p];
            for c in 0..NR {
                acc[r][c] += av * bp[c];
            }
        }
    }
    tile[..R].copy_from_slice(&acc);
}

/// `out[c·DOT_R + r] = Σ_{p<k} a[r·lda + p] · w[c·ldw + p]` for `r < rows` (1..=DOT_R) and
/// `c < cols`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_block(
    isa: Isa,
    rows: usize,
    cols: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    w: &[f32],
    ldw: usize,
    out: &mut [f32],
) {
    assert!((1..=DOT_R).contains(&rows) && lda >= k && ldw >= k);
    assert!(a.len() >= (rows - 1) * lda + k && out.len() >= cols * DOT_R);
    assert!(cols == 0 || w.len() >= (cols - 1) * ldw + k);
    match isa {
        Isa::Portable => match rows {
            1 => dot_portable::<1>(cols, k, a, lda, w, ldw, out),
            2 => dot_portable::<2>(cols, k, a, lda, w, ldw, out),
            3 => dot_portable::<3>(cols, k, a, lda, w, ldw, out),
            _ => dot_portable::<4>(cols, k, a, lda, w, ldw, out),
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2+FMA detected at run time (see `Isa`); the lengths asserted above cover
        // every element read and written.
        Isa::Avx2Fma => unsafe {
            let (a, w, out) = (a.as_ptr(), w.as_ptr(), out.as_mut_ptr());
            match rows {
                1 => avx2::dot::<1, 4>(cols, k, a, lda, w, ldw, out),
                2 => avx2::dot::<2, 2>(cols, k, a, lda, w, ldw, out),
                3 => avx2::dot::<3, 2>(cols, k, a, lda, w, ldw, out),
                _ => avx2::dot::<4, 2>(cols, k, a, lda, w, ldw, out),
            }
        },
    }
}

fn dot_portable<const R: usize>(
    cols: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    w: &[f32],
    ldw: usize,
    out: &mut [f32],
) {
    const L: usize = 8;
    let full = k / L * L;
    for c in 0..cols {
        let w_row = &w[c * ldw..c * ldw + k];
        let mut acc = [[0.0f32; L]; R];
        for p in (0..full).step_by(L) {
            let wv = &w_row[p..p + L];
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = &a[r * lda + p..r * lda + p + L];
                for l in 0..L {
                    acc[l] += av[l] * wv[l];
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let mut s = hsum8(acc);
            for p in full..k {
                s += a[r * lda + p] * w_row[p];
            }
            out[c * DOT_R + r] = s;
        }
    }
}

/// Pairwise sum of 8 lanes (the same order the AVX2 path uses).
#[inline]
fn hsum8(v: &[f32; 8]) -> f32 {
    let q = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Written with `wrapping_add` pointer steps and align-1 vector loads/stores so that
    //! builds with debug assertions (the test profile) do not wrap every access in UB checks
    //! (`_mm256_loadu_ps` and `ptr::add` carry them), which made these kernels 3× slower.
    // Register tiles read best as indexed loops over const bounds (LLVM unrolls them fully).
    #![allow(clippy::needless_range_loop)]
    use super::{Tile, DOT_R};
    use std::arch::x86_64::*;

    /// An `__m256` at any address.
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct Unaligned(__m256);

    /// # Safety
    /// `p` must be readable for 8 floats.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: readable per the contract; `Unaligned` has alignment 1.
        unsafe { (*(p as *const Unaligned)).0 }
    }

    /// # Safety
    /// `p` must be writable for 8 floats.
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: writable per the contract; `Unaligned` has alignment 1.
        unsafe { *(p as *mut Unaligned) = Unaligned(v) }
    }

    /// `b` of [`super::packed_tile_split`] as pointers: (head, tail, split).
    pub(super) type Rows = (*const f32, *const f32, usize);

    /// Row `p` of `b` (rows `≥ split` from the tail when `SPLIT`).
    #[inline(always)]
    fn row<const SPLIT: bool>(b: Rows, p: usize, ldb: usize) -> *const f32 {
        let (head, tail, split) = b;
        if SPLIT && p >= split {
            tail.wrapping_add((p - split) * ldb)
        } else {
            head.wrapping_add(p * ldb)
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` must be readable at `r·lda + p` for `r < R`,
    /// `p < kc`, and row `p` of `b` (see [`row`]) at `c` for `c < NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn packed<const R: usize, const SPLIT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: Rows,
        ldb: usize,
        tile: &mut Tile,
    ) {
        if R == 1 {
            return packed_one_row::<SPLIT>(kc, a, b, ldb, tile);
        }
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        let a_rows: [*const f32; R] = std::array::from_fn(|r| a.wrapping_add(r * lda));
        let mut bp = b.0;
        for p in 0..kc {
            if SPLIT && p == b.2 {
                bp = b.1;
            }
            let b0 = load(bp);
            let b1 = load(bp.wrapping_add(8));
            bp = bp.wrapping_add(ldb);
            for r in 0..R {
                let av = _mm256_set1_ps(*a_rows[r].wrapping_add(p));
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        }
        for r in 0..R {
            let t = tile[r].as_mut_ptr();
            store(t, lo[r]);
            store(t.wrapping_add(8), hi[r]);
        }
    }

    /// One row: two FMA chains would leave the unit idle (4-cycle latency), so even and odd
    /// `p` accumulate separately.
    ///
    /// # Safety
    /// As [`packed`] with `R = 1`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn packed_one_row<const SPLIT: bool>(
        kc: usize,
        a: *const f32,
        b: Rows,
        ldb: usize,
        tile: &mut Tile,
    ) {
        let z = _mm256_setzero_ps();
        let (mut lo0, mut hi0, mut lo1, mut hi1) = (z, z, z, z);
        let mut p = 0;
        while p + 2 <= kc {
            let b0 = row::<SPLIT>(b, p, ldb);
            let b1 = row::<SPLIT>(b, p + 1, ldb);
            let a0 = _mm256_set1_ps(*a.wrapping_add(p));
            let a1 = _mm256_set1_ps(*a.wrapping_add(p + 1));
            lo0 = _mm256_fmadd_ps(a0, load(b0), lo0);
            hi0 = _mm256_fmadd_ps(a0, load(b0.wrapping_add(8)), hi0);
            lo1 = _mm256_fmadd_ps(a1, load(b1), lo1);
            hi1 = _mm256_fmadd_ps(a1, load(b1.wrapping_add(8)), hi1);
            p += 2;
        }
        if p < kc {
            let b0 = row::<SPLIT>(b, p, ldb);
            let a0 = _mm256_set1_ps(*a.wrapping_add(p));
            lo0 = _mm256_fmadd_ps(a0, load(b0), lo0);
            hi0 = _mm256_fmadd_ps(a0, load(b0.wrapping_add(8)), hi0);
        }
        let t = tile[0].as_mut_ptr();
        store(t, _mm256_add_ps(lo0, lo1));
        store(t.wrapping_add(8), _mm256_add_ps(hi0, hi1));
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` must be readable at `r·lda + p` and `w` at
    /// `c·ldw + p` for `r < R`, `c < cols`, `p < k`; `out` writable for `cols·DOT_R`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot<const R: usize, const U: usize>(
        cols: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
        ldw: usize,
        out: *mut f32,
    ) {
        let a_rows: [*const f32; R] = std::array::from_fn(|r| a.wrapping_add(r * lda));
        let full = k / 8 * 8;
        for c in 0..cols {
            let w_row = w.wrapping_add(c * ldw);
            // U independent accumulators per row hide the FMA latency when R is small.
            let mut acc = [[_mm256_setzero_ps(); U]; R];
            let mut p = 0;
            while p + 8 * U <= full {
                for u in 0..U {
                    let wv = load(w_row.wrapping_add(p + 8 * u));
                    for r in 0..R {
                        let av = load(a_rows[r].wrapping_add(p + 8 * u));
                        acc[r][u] = _mm256_fmadd_ps(av, wv, acc[r][u]);
                    }
                }
                p += 8 * U;
            }
            while p < full {
                let wv = load(w_row.wrapping_add(p));
                for r in 0..R {
                    let av = load(a_rows[r].wrapping_add(p));
                    acc[r][0] = _mm256_fmadd_ps(av, wv, acc[r][0]);
                }
                p += 8;
            }
            for r in 0..R {
                let mut v = acc[r][0];
                for u in 1..U {
                    v = _mm256_add_ps(v, acc[r][u]);
                }
                let mut lanes = [0.0f32; 8];
                store(lanes.as_mut_ptr(), v);
                let mut s = super::hsum8(&lanes);
                for p in full..k {
                    s += *a_rows[r].wrapping_add(p) * *w_row.wrapping_add(p);
                }
                *out.wrapping_add(c * DOT_R + r) = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::detect());
        }
        v
    }

    #[test]
    fn packed_tile_matches_f64_for_every_row_count() {
        let mut rng = Rng::new(8);
        for isa in isas() {
            for rows in 1..=MR {
                for kc in [1, 7, 64, 257] {
                    let lda = kc + 3;
                    let ldb = if kc % 2 == 0 { NR } else { NR + 5 };
                    let a = rng.vec((rows - 1) * lda + kc, 1.0);
                    let b = rng.vec((kc - 1) * ldb + NR, 1.0);
                    let mut tile = [[f32::NAN; NR]; MR];
                    packed_tile(isa, rows, kc, &a, lda, &b, ldb, &mut tile);
                    for r in 0..rows {
                        for c in 0..NR {
                            let (s, abs) = (0..kc).fold((0.0f64, 0.0f64), |(s, t), p| {
                                let x = a[r * lda + p] as f64 * b[p * ldb + c] as f64;
                                (s + x, t + x.abs())
                            });
                            // Sequential f32 FMA accumulation: error ≤ kc·ε·Σ|terms|; the
                            // bound below (1e-5·√kc) holds for these random sizes with margin.
                            let tol = 1e-5 * (kc as f64).sqrt() * abs;
                            let got = tile[r][c] as f64;
                            assert!(
                                (got - s).abs() <= tol,
                                "{isa:?} rows={rows} kc={kc} [{r},{c}]"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dot_block_matches_f64_for_every_row_count() {
        let mut rng = Rng::new(9);
        for isa in isas() {
            for rows in 1..=DOT_R {
                for k in [1, 5, 8, 23, 40, 384] {
                    let cols = 11;
                    let (lda, ldw) = (k + 2, k + (k % 3));
                    let a = rng.vec(rows * lda, 1.0);
                    let w = rng.vec(cols * ldw, 1.0);
                    let mut out = vec![f32::NAN; cols * DOT_R];
                    dot_block(isa, rows, cols, k, &a, lda, &w, ldw, &mut out);
                    for r in 0..rows {
                        for c in 0..cols {
                            let (s, abs) = (0..k).fold((0.0f64, 0.0f64), |(s, t), p| {
                                let x = a[r * lda + p] as f64 * w[c * ldw + p] as f64;
                                (s + x, t + x.abs())
                            });
                            let tol = 1e-5 * (k as f64).sqrt() * abs;
                            let got = out[c * DOT_R + r] as f64;
                            assert!(
                                (got - s).abs() <= tol,
                                "{isa:?} rows={rows} k={k} [{r},{c}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
