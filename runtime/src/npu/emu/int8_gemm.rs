//! The array model of a fixed-M INT8 GEMM design (`C[128×N] i32 = A[128×K] i8 · B[K×N] i8`),
//! as `../shared/npu-fixtures/README.md` §1.2 describes the 1bit-MONSTER v27 design the fixture
//! xclbins hold: 4 core rows × `cols` columns, each core computing 32×64×128 per kernel call;
//! A tiles (32×64, 8×8 blocks row-major) arrive on shim column `j` MM2S0 and feed core row `j`;
//! B tiles (64×128, same blocking) arrive on shim column `c` (MM2S1, or MM2S0 on columns 4–7 of
//! the 8-column design); each memtile joins its column's four 32×128 C tiles into one 128×128
//! tile (8×8 blocks of i32) sent on S2MM0. Groups: `N / (128·cols)` output tiles per column.
//!
//! The arithmetic is exact i32; a row of A that is zero over the whole K gives a zero row of C,
//! so such rows are not multiplied (the result is identical; it keeps the emulated decoder
//! steps, 1–5 live rows of 128, cheap).

use super::super::txn::ArrayIo;

/// The model for one design: K, N and the columns it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8GemmModel {
    /// Depth (a multiple of 64).
    pub k: usize,
    /// Output channels (a multiple of 128·cols).
    pub n: usize,
    /// Shim columns carrying B and C (4 or 8).
    pub cols: usize,
}

/// Rows of A and C per command.
pub const M: usize = 128;
const ROWS: usize = 4;
const TM: usize = 32;
const TK: usize = 64;
const TN: usize = 128;

impl Int8GemmModel {
    /// The model, if the shape fits the design's tiling.
    pub fn new(k: usize, n: usize, cols: usize) -> Option<Self> {
        let ok = k > 0
            && k.is_multiple_of(TK)
            && (cols == 4 || cols == 8)
            && n > 0
            && n.is_multiple_of(TN * cols);
        ok.then_some(Self { k, n, cols })
    }

    /// Turns the MM2S streams into the S2MM streams (see the module docs).
    pub fn run(&self, io: &mut ArrayIo) -> Result<(), String> {
        let n_k = self.k / TK;
        let groups = self.n / (TN * self.cols);
        let a_tile = TM * TK;
        let b_tile = TK * TN;
        // A, unblocked per core row: rows 32j.. of the 128, row-major [32][K], i16.
        let mut a = vec![0i32; M * self.k];
        let mut live = [false; M];
        for j in 0..ROWS {
            let s = io
                .input(j as u8, 0)
                .ok_or_else(|| format!("no A stream on shim column {j}"))?;
            if s.len() != groups * n_k * a_tile {
                return Err(format!(
                    "A stream {j}: {} bytes, the design reads {}",
                    s.len(),
                    groups * n_k * a_tile
                ));
            }
            // Every group re-sends the same rows; group 0 is what the cores multiply (the
            // others must be equal, as the streams read the same A bytes).
            let first = &s[..n_k * a_tile];
            if (1..groups).any(|g| &s[g * n_k * a_tile..(g + 1) * n_k * a_tile] != first) {
                return Err(format!("A stream {j}: groups differ"));
            }
            for t in 0..n_k {
                let tile = &first[t * a_tile..(t + 1) * a_tile];
                for (i, &v) in tile.iter().enumerate() {
                    let (blk, e) = (i / 64, i % 64);
                    let (rb, kb) = (blk / 8, blk % 8);
                    let r = TM * j + rb * 8 + e / 8;
                    a[r * self.k + t * TK + kb * 8 + e % 8] = v as i8 as i32;
                }
            }
        }
        for (r, l) in live.iter_mut().enumerate() {
            *l = a[r * self.k..(r + 1) * self.k].iter().any(|&v| v != 0);
        }
        let mut bt = vec![0i32; b_tile];
        let mut acc = vec![0i32; M * TN];
        let rows: Vec<usize> = (0..M).filter(|&r| live[r]).collect();
        for c in 0..self.cols {
            let chan = if c >= 4 { 0 } else { 1 };
            let b = io
                .input(c as u8, chan)
                .ok_or_else(|| format!("no B stream on shim column {c}"))?
                .to_vec();
            if b.len() != groups * n_k * b_tile {
                return Err(format!(
                    "B stream {c}: {} bytes, the design reads {}",
                    b.len(),
                    groups * n_k * b_tile
                ));
            }
            let out = io
                .output(c as u8, 0)
                .ok_or_else(|| format!("no C stream on shim column {c}"))?;
            if out.len() != groups * M * TN * 4 {
                return Err(format!(
                    "C stream {c}: {} bytes, the design writes {}",
                    out.len(),
                    groups * M * TN * 4
                ));
            }
            for g in 0..groups {
                acc.fill(0);
                for t in 0..n_k {
                    let tile = &b[(g * n_k + t) * b_tile..][..b_tile];
                    for (i, &v) in tile.iter().enumerate() {
                        let (blk, e) = (i / 64, i % 64);
                        let (kb, nb) = (blk / 16, blk % 16);
                        bt[(kb * 8 + e / 8) * TN + nb * 8 + e % 8] = v as i8 as i32;
                    }
                    for quad in rows.chunks(4) {
                        mul_tile(&a, self.k, t * TK, quad, &bt, &mut acc);
                    }
                }
                let base = g * M * TN * 4;
                for r in 0..M {
                    for col in 0..TN {
                        let at =
                            base + ((r / 8) * 16 + col / 8) * 256 + ((r % 8) * 8 + col % 8) * 4;
                        out[at..at + 4].copy_from_slice(&acc[r * TN + col].to_le_bytes());
                    }
                }
            }
        }
        Ok(())
    }
}

/// `acc[r, ..128] += a[r, k0..k0 + 64] · bt[64, 128]` for the (up to 4) rows `rows`, 16
/// columns at a time with the sums held in registers.
fn mul_tile(a: &[i32], k: usize, k0: usize, rows: &[usize], bt: &[i32], acc: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected at run time; the body is safe code.
            return unsafe { mul_tile_avx512(a, k, k0, rows, bt, acc) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 detected at run time; the body is safe code.
            return unsafe { mul_tile_avx2(a, k, k0, rows, bt, acc) };
        }
    }
    mul_tile_body(a, k, k0, rows, bt, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn mul_tile_avx512(
    a: &[i32],
    k: usize,
    k0: usize,
    rows: &[usize],
    bt: &[i32],
    acc: &mut [i32],
) {
    mul_tile_body(a, k, k0, rows, bt, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mul_tile_avx2(
    a: &[i32],
    k: usize,
    k0: usize,
    rows: &[usize],
    bt: &[i32],
    acc: &mut [i32],
) {
    mul_tile_body(a, k, k0, rows, bt, acc)
}

#[inline(always)]
fn mul_tile_body(a: &[i32], k: usize, k0: usize, rows: &[usize], bt: &[i32], acc: &mut [i32]) {
    let mut ar = [[0i32; TK]; 4];
    for (i, &r) in rows.iter().enumerate() {
        ar[i].copy_from_slice(&a[r * k + k0..r * k + k0 + TK]);
    }
    for cb in (0..TN).step_by(16) {
        let mut s = [[0i32; 16]; 4];
        for kk in 0..TK {
            let b: &[i32; 16] = bt[kk * TN + cb..kk * TN + cb + 16].try_into().expect("16");
            for (si, ai) in s.iter_mut().zip(&ar) {
                let x = ai[kk];
                for l in 0..16 {
                    si[l] += x * b[l];
                }
            }
        }
        for (i, &r) in rows.iter().enumerate() {
            let o = &mut acc[r * TN + cb..r * TN + cb + 16];
            for l in 0..16 {
                o[l] += s[i][l];
            }
        }
    }
}
