//! Weight matrices repacked for the GEMM micro-kernel: `NR`-column panels, k-major.
//!
//! A weight `w[n, k]` (stored `[out, in]`) becomes `ceil(n/NR)` panels; panel `jp` holds
//! `w[jp·NR + c, p]` at `p·NR + c` (columns past `n` are zero). The kernel then reads one
//! contiguous `NR`-float vector pair per step of `p`.

use super::gemm_kernels::NR;
use super::pool::{CpuPool, DisjointSlice};

/// A weight matrix `[n, k]` in panel layout, prepared once (at model load) and reused by
/// [`super::gemm_packed`].
pub struct PackedWeights {
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedWeights {
    /// Packs the row-major `w[n, k]` (`[out_features, in_features]`).
    ///
    /// # Panics
    /// If `w.len() != n·k`.
    pub fn new(pool: &CpuPool, w: &[f32], n: usize, k: usize) -> PackedWeights {
        assert_eq!(w.len(), n * k, "PackedWeights::new: w is not n·k");
        let mut data = vec![0.0; packed_len(n, k)];
        pack_into(pool, w, n, k, &mut data);
        PackedWeights { data, n, k }
    }

    /// Output features (rows of the original matrix).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the original matrix).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Copies original row `j` (`w[j, ..]`, `k` floats) into `out`, e.g. for an embedding
    /// lookup from a tied output projection.
    ///
    /// # Panics
    /// If `j >= n` or `out.len() != k`.
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n, "PackedWeights::row_into: row {j} of {}", self.n);
        assert_eq!(out.len(), self.k, "PackedWeights::row_into: out is not k");
        let panel = &self.data[j / NR * self.k * NR..][..self.k * NR];
        for (p, o) in out.iter_mut().enumerate() {
            *o = panel[p * NR + j % NR];
        }
    }

    pub(crate) fn data(&self) -> &[f32] {
        &self.data
    }
}

/// Floats the packed form of an `[n, k]` matrix occupies.
pub(crate) fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Packs `w[n, k]` into `dst` (`packed_len(n, k)` floats), in parallel over panels.
pub(crate) fn pack_into(pool: &CpuPool, w: &[f32], n: usize, k: usize, dst: &mut [f32]) {
    assert_eq!(w.len(), n * k);
    assert_eq!(dst.len(), packed_len(n, k));
    let panel_len = k * NR;
    let panels = n.div_ceil(NR);
    // Several panels per task: packing one is too little work to schedule on its own.
    const PANELS_PER_TASK: usize = 8;
    let dst = DisjointSlice::new(dst);
    pool.run(panels.div_ceil(PANELS_PER_TASK), |task| {
        let first = task * PANELS_PER_TASK;
        for jp in first..(first + PANELS_PER_TASK).min(panels) {
            // SAFETY: each panel range is written by exactly one task.
            let panel = unsafe { dst.range(jp * panel_len..(jp + 1) * panel_len) };
            pack_panel(w, k, n, k, jp, panel);
        }
    });
}

/// Packs panel `jp` (rows `jp·NR..jp·NR + NR`, zero past `n`) of a matrix with `n` rows of
/// `k` used columns at row stride `ld` into `panel` (`k·NR` floats).
pub(crate) fn pack_panel(src: &[f32], ld: usize, n: usize, k: usize, jp: usize, panel: &mut [f32]) {
    assert_eq!(panel.len(), k * NR);
    for c in 0..NR {
        let j = jp * NR + c;
        if j < n {
            let row = &src[j * ld..j * ld + k];
            for (p, &x) in row.iter().enumerate() {
                panel[p * NR + c] = x;
            }
        } else {
            (0..k).for_each(|p| panel[p * NR + c] = 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::Rng;

    #[test]
    fn packing_round_trips_rows() {
        let mut rng = Rng::new(10);
        let pool = CpuPool::new(2);
        for (n, k) in [(1, 1), (15, 3), (16, 8), (17, 5), (300, 7)] {
            let w = rng.vec(n * k, 1.0);
            let packed = PackedWeights::new(&pool, &w, n, k);
            assert_eq!((packed.n(), packed.k()), (n, k));
            let mut row = vec![0.0; k];
            for j in 0..n {
                packed.row_into(j, &mut row);
                assert_eq!(row, &w[j * k..(j + 1) * k]);
            }
            // Padding columns are zero.
            let tail = n.div_ceil(NR) * NR - n;
            let last = &packed.data()[(n.div_ceil(NR) - 1) * k * NR..];
            for p in 0..k {
                assert!(last[p * NR + NR - tail..p * NR + NR]
                    .iter()
                    .all(|&x| x == 0.0));
            }
        }
    }
}
