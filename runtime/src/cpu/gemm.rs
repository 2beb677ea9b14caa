//! Matrix multiply against a transposed weight matrix, with a fused bias + epilogue.
//!
//! `out[m×n] = epilogue(a[m×k] · w[n×k]ᵀ + bias[n])`: `w` is stored `[out_features,
//! in_features]`, the layout of Whisper's linear layers, so every output element is a dot
//! product of two contiguous rows.

use super::activation::gelu_erf;
use super::pool::{CpuPool, DisjointSlice};

/// What to do with `r = a·wᵀ + bias` for each output element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = r`
    Store,
    /// `out = gelu_erf(r)`
    Gelu,
    /// `out += r` (residual connection)
    AddInto,
}

impl Epilogue {
    #[inline]
    pub(crate) fn apply(self, out: &mut f32, r: f32) {
        match self {
            Epilogue::Store => *out = r,
            Epilogue::Gelu => *out = gelu_erf(r),
            Epilogue::AddInto => *out += r,
        }
    }
}

/// Rows of `a` per task.
const TASK_ROWS: usize = 16;
/// Columns of `out` (rows of `w`) per task.
const TASK_COLS: usize = 128;

/// `out[m×n] (row-major) = epilogue(a[m×k] · w[n×k]ᵀ + bias[n])`; `w` is a weight matrix stored
/// `[out, in]`.
///
/// # Panics
/// If a slice length does not match the shape (a programming error in the caller).
#[allow(clippy::too_many_arguments)] // mirrors the BLAS-style signature the model code uses
pub fn gemm_bt(
    pool: &CpuPool,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    assert_eq!(a.len(), m * k, "gemm_bt: a is not m·k");
    assert_eq!(w.len(), n * k, "gemm_bt: w is not n·k");
    assert_eq!(out.len(), m * n, "gemm_bt: out is not m·n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "gemm_bt: bias is not n");
    }
    if m == 0 || n == 0 {
        return;
    }
    let row_blocks = m.div_ceil(TASK_ROWS);
    let col_blocks = n.div_ceil(TASK_COLS);
    let out = DisjointSlice::new(out);
    pool.run(row_blocks * col_blocks, |task| {
        let (rb, cb) = (task / col_blocks, task % col_blocks);
        let rows = rb * TASK_ROWS..((rb + 1) * TASK_ROWS).min(m);
        let cols = cb * TASK_COLS..((cb + 1) * TASK_COLS).min(n);
        for i in rows {
            // SAFETY: tasks cover disjoint (row, column-block) rectangles of `out`.
            let out_row = unsafe { out.range(i * n + cols.start..i * n + cols.end) };
            let a_row = &a[i * k..(i + 1) * k];
            for (o, j) in out_row.iter_mut().zip(cols.clone()) {
                let r = dot(a_row, &w[j * k..(j + 1) * k]) + bias.map_or(0.0, |b| b[j]);
                epilogue.apply(o, r);
            }
        }
    });
}

/// Dot product with 8 interleaved accumulators (vectorises; error ~ √(k/8)·ε·Σ|aᵢbᵢ|).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let quads = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
}

#[cfg(test)]
pub(crate) mod reference {
    use super::Epilogue;
    use crate::cpu::activation::reference::gelu_f64;

    /// f64 reference for `gemm_bt`; also returns, per element, `Σ|a·w| + |bias| (+ |out|)`, the
    /// scale that f32 rounding error is proportional to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_bt_f64(
        a: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut want = vec![0.0; m * n];
        let mut scale = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let t = a[i * k + p] as f64 * w[j * k + p] as f64;
                    s += t;
                    abs += t.abs();
                }
                if let Some(b) = bias {
                    s += b[j] as f64;
                    abs += (b[j] as f64).abs();
                }
                let prev = out[i * n + j] as f64;
                want[i * n + j] = match epilogue {
                    Epilogue::Store => s,
                    Epilogue::Gelu => gelu_f64(s),
                    Epilogue::AddInto => prev + s,
                };
                scale[i * n + j] = abs
                    + match epilogue {
                        Epilogue::AddInto => prev.abs(),
                        _ => 0.0,
                    };
            }
        }
        (want, scale)
    }

    /// Asserts `got` within tolerance of `want`: f32 accumulation of k products has rounding
    /// error ≈ ε·√k·Σ|aᵢwᵢ| for blocked/pairwise sums (ε = 6e-8); 1e-5·√k·scale gives ~100×
    /// margin yet any indexing error (an O(1) relative difference) fails it. GELU adds its own
    /// 1e-7·(1+|x|) absolute error.
    pub(crate) fn assert_close(got: &[f32], want: &[f64], scale: &[f64], k: usize, what: &str) {
        for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
            let tol = 1e-5 * (k.max(1) as f64).sqrt() * s + 1e-7 * (1.0 + w.abs());
            assert!(
                (g as f64 - w).abs() <= tol,
                "{what}: element {idx}: got {g}, want {w}, tol {tol:e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{assert_close, gemm_bt_f64};
    use super::*;
    use crate::cpu::testing::Rng;

    fn check(pool: &CpuPool, rng: &mut Rng, m: usize, k: usize, n: usize, epilogue: Epilogue) {
        let a = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0);
        let bias = rng.vec(n, 1.0);
        let init = rng.vec(m * n, 1.0);
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bias[..]);
            let (want, scale) = gemm_bt_f64(&a, m, k, &w, n, bias, epilogue, &init);
            let mut out = init.clone();
            gemm_bt(pool, &a, m, k, &w, n, bias, epilogue, &mut out);
            let what = format!("m={m} k={k} n={n} {epilogue:?} bias={with_bias}");
            assert_close(&out, &want, &scale, k, &what);
        }
    }

    #[test]
    fn gemm_matches_f64_on_random_shapes() {
        let mut rng = Rng::new(4);
        for threads in 1..=3 {
            let pool = CpuPool::new(threads);
            for _ in 0..12 {
                let m = rng.range(1, 40);
                let k = rng.range(1, 70);
                let n = rng.range(1, 300);
                for e in [Epilogue::Store, Epilogue::Gelu, Epilogue::AddInto] {
                    check(&pool, &mut rng, m, k, n, e);
                }
            }
        }
    }

    #[test]
    fn gemm_matches_f64_on_whisper_like_shapes() {
        let mut rng = Rng::new(5);
        let pool = CpuPool::new(2);
        // Decoder-like single rows, a long k (cross-attention-like length), odd sizes.
        for (m, k, n) in [
            (1, 384, 1031),
            (3, 384, 384),
            (4, 1536, 97),
            (37, 1500, 19),
            (67, 384, 130),
            (13, 1, 17),
        ] {
            check(&pool, &mut rng, m, k, n, Epilogue::Store);
            check(&pool, &mut rng, m, k, n, Epilogue::AddInto);
        }
        check(&pool, &mut rng, 29, 384, 200, Epilogue::Gelu);
    }

    #[test]
    fn gemm_empty_shapes_are_no_ops() {
        let pool = CpuPool::new(2);
        let mut out = vec![];
        gemm_bt(
            &pool,
            &[],
            0,
            5,
            &[0.0; 15],
            3,
            None,
            Epilogue::Store,
            &mut out,
        );
        let mut out = vec![7.0; 6];
        gemm_bt(&pool, &[], 2, 0, &[], 3, None, Epilogue::AddInto, &mut out);
        assert_eq!(out, vec![7.0; 6]);
    }

    #[test]
    #[should_panic(expected = "w is not n·k")]
    fn gemm_rejects_wrong_lengths() {
        let pool = CpuPool::new(1);
        let mut out = vec![0.0; 4];
        gemm_bt(
            &pool,
            &[0.0; 6],
            2,
            3,
            &[0.0; 5],
            2,
            None,
            Epilogue::Store,
            &mut out,
        );
    }
}
