//! Matrix multiply against a transposed weight matrix, with a fused bias + epilogue.
//!
//! `out[m×n] = epilogue(a[m×k] · w[n×k]ᵀ + bias[n])`: `w` is stored `[out_features,
//! in_features]`, the layout of Whisper's linear layers, so every output element is a dot
//! product of two contiguous rows.

use super::activation::{gelu_erf, gelu_slice};
use super::gemm_kernels::{dot_block, packed_tile, Isa, Tile, DOT_R, MR, NR};
use super::packed::{pack_into, packed_len, PackedWeights};
use super::pool::{CpuPool, DisjointSlice};
use std::cell::RefCell;

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

/// Up to this many rows, `gemm_bt` computes dot products against `w` as stored (no packing):
/// the weight matrix is streamed once and packing would cost as much as the product.
const DOT_MAX_M: usize = 8;
/// Largest weight `gemm_bt` packs per call (8 M floats, 32 MB: Whisper's largest layer weight,
/// large-v3's 5120 × 1280 MLP, is 6.6 M). Bigger ones (the 51 864-row vocabulary projection)
/// take the dot path at any `m`, so the per-thread pack buffer stays bounded.
const MAX_PACK_FLOATS: usize = 8 << 20;
/// Weight rows (output columns) per dot-block call on the dot path.
const DOT_CHUNK: usize = 64;
/// Least work (multiply-adds) worth a task of its own: ~5 µs, several thread wake-ups.
const MIN_TASK_MACS: usize = 1 << 17;
/// Rows of `a` per task on the packed path (a multiple of `MR`).
const TASK_ROWS: usize = 16 * MR;
/// Packed panels per task on the packed path when there are enough rows (256 columns).
const TASK_PANELS: usize = 16;
/// Depth of one k block: a `KC × NR` weight panel (16 KB) stays in L1 across row tiles.
const KC: usize = 256;

/// `out[m×n] (row-major) = epilogue(a[m×k] · w[n×k]ᵀ + bias[n])`; `w` is a weight matrix stored
/// `[out, in]`.
///
/// Up to 8 rows (or for weights over 32 MB) it streams `w` with register-tiled dot products;
/// otherwise it packs `w` into panels (in a per-thread buffer grown once and reused) and runs
/// the packed micro-kernel. For weights used many times, prefer [`PackedWeights`] +
/// [`gemm_packed`] (no per-call packing; faster at every `m` when the weights are hot).
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
    gemm_bt_with(Isa::detect(), pool, a, m, k, w, n, bias, epilogue, out);
}

/// [`gemm_bt`] with weights packed beforehand (any `m`; no packing per call).
///
/// # Panics
/// If a slice length does not match `m`, `w.k()`, `w.n()`.
pub fn gemm_packed(
    pool: &CpuPool,
    a: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    gemm_packed_with(Isa::detect(), pool, a, m, w, bias, epilogue, out);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed_with(
    isa: Isa,
    pool: &CpuPool,
    a: &[f32],
    m: usize,
    w: &PackedWeights,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let (k, n) = (w.k(), w.n());
    check_shapes("gemm_packed", a, m, k, n, bias, out);
    if k == 0 {
        return bias_only(m, n, bias, epilogue, out);
    }
    let shape = Shape { m, k, n };
    packed_driver(isa, pool, a, shape, w.data(), bias, epilogue, out);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_bt_with(
    isa: Isa,
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
    check_shapes("gemm_bt", a, m, k, n, bias, out);
    assert_eq!(w.len(), n * k, "gemm_bt: w is not n·k");
    if k == 0 {
        return bias_only(m, n, bias, epilogue, out);
    }
    let shape = Shape { m, k, n };
    if m <= DOT_MAX_M || packed_len(n, k) > MAX_PACK_FLOATS {
        return dot_driver(isa, pool, a, shape, w, bias, epilogue, out);
    }
    thread_local! {
        /// Packed copy of the current call's weights; grown to the largest size seen, reused.
        static PACK_BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    PACK_BUFFER.with(|buffer| {
        let mut local = Vec::new();
        let mut guard = buffer.try_borrow_mut();
        // Re-entrant use on this thread (not expected) falls back to a fresh buffer.
        let buffer: &mut Vec<f32> = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut local,
        };
        let len = packed_len(n, k);
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        let packed = &mut buffer[..len];
        pack_into(pool, w, n, k, packed);
        packed_driver(isa, pool, a, shape, packed, bias, epilogue, out);
    });
}

#[derive(Clone, Copy)]
struct Shape {
    m: usize,
    k: usize,
    n: usize,
}

fn check_shapes(
    what: &str,
    a: &[f32],
    m: usize,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) {
    assert_eq!(a.len(), m * k, "{what}: a is not m·k");
    assert_eq!(out.len(), m * n, "{what}: out is not m·n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "{what}: bias is not n");
    }
}

/// `k == 0`: the product is empty, `r = bias`.
fn bias_only(m: usize, n: usize, bias: Option<&[f32]>, epilogue: Epilogue, out: &mut [f32]) {
    if n == 0 {
        return;
    }
    for row in out.chunks_exact_mut(n).take(m) {
        for (j, o) in row.iter_mut().enumerate() {
            epilogue.apply(o, bias.map_or(0.0, |b| b[j]));
        }
    }
}

/// Small `m`: each task owns a run of whole `DOT_CHUNK`-column chunks of every row, at least
/// `MIN_TASK_MACS` of work, so decoder-sized products do not pay a thread wake-up per chunk.
#[allow(clippy::too_many_arguments)]
fn dot_driver(
    isa: Isa,
    pool: &CpuPool,
    a: &[f32],
    Shape { m, k, n }: Shape,
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let chunk_macs = m * k * DOT_CHUNK;
    let chunks_per_task = MIN_TASK_MACS.div_ceil(chunk_macs).max(1);
    let task_cols = chunks_per_task * DOT_CHUNK;
    let out = DisjointSlice::new(out);
    pool.run(n.div_ceil(task_cols), |task| {
        let task_end = ((task + 1) * task_cols).min(n);
        let mut sums = [0.0f32; DOT_CHUNK * DOT_R];
        for start in (task * task_cols..task_end).step_by(DOT_CHUNK) {
            let cols = start..(start + DOT_CHUNK).min(task_end);
            let w_block = &w[cols.start * k..cols.end * k];
            for i in (0..m).step_by(DOT_R) {
                let rows = DOT_R.min(m - i);
                let a_rows = &a[i * k..(i + rows) * k];
                dot_block(isa, rows, cols.len(), k, a_rows, k, w_block, k, &mut sums);
                for r in 0..rows {
                    let at = (i + r) * n;
                    // SAFETY: this task owns columns task·task_cols..task_end of every row.
                    let o = unsafe { out.range(at + cols.start..at + cols.end) };
                    let partial: [f32; DOT_CHUNK] = std::array::from_fn(|c| sums[c * DOT_R + r]);
                    let bias = bias.map(|b| &b[cols.clone()]);
                    write_back(isa, o, &partial[..cols.len()], true, true, bias, epilogue);
                }
            }
        }
    });
}

/// Many rows: tasks own (row block × panel block) rectangles; within one, k is walked in
/// `KC` blocks so the weight panel stays in L1 while every row tile of the block uses it.
#[allow(clippy::too_many_arguments)]
fn packed_driver(
    isa: Isa,
    pool: &CpuPool,
    a: &[f32],
    Shape { m, k, n }: Shape,
    packed: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    debug_assert_eq!(packed.len(), packed_len(n, k));
    let panels = n.div_ceil(NR);
    let row_blocks = m.div_ceil(TASK_ROWS);
    // At least ~4 tasks per thread for load balance on a shared machine, but none smaller
    // than MIN_TASK_MACS (decoder-sized products would pay a thread wake-up per panel).
    let macs_per_panel = m.min(TASK_ROWS) * NR * k;
    let max_tasks = (m.min(TASK_ROWS) * n * k).div_ceil(MIN_TASK_MACS.max(macs_per_panel));
    let want_tasks = (4 * pool.threads()).min(max_tasks.max(1));
    let panel_blocks = panels
        .div_ceil(TASK_PANELS)
        .max(want_tasks.div_ceil(row_blocks))
        .min(panels);
    let panels_per_task = panels.div_ceil(panel_blocks);
    let panel_blocks = panels.div_ceil(panels_per_task);
    // With a single row tile each weight panel is used once: no point blocking k, and reading
    // panels whole keeps the weight stream sequential.
    let kc = if m <= MR {
        k
    } else {
        k.div_ceil(k.div_ceil(KC))
    };
    let out = DisjointSlice::new(out);
    pool.run(row_blocks * panel_blocks, |task| {
        let (rb, pb) = (task / panel_blocks, task % panel_blocks);
        let rows = rb * TASK_ROWS..((rb + 1) * TASK_ROWS).min(m);
        let panel_range = pb * panels_per_task..((pb + 1) * panels_per_task).min(panels);
        let mut tile: Tile = [[0.0; NR]; MR];
        for p0 in (0..k).step_by(kc) {
            let depth = kc.min(k - p0);
            let (first, last) = (p0 == 0, p0 + depth == k);
            for jp in panel_range.clone() {
                let panel = &packed[jp * k * NR + p0 * NR..jp * k * NR + (p0 + depth) * NR];
                let j = jp * NR;
                let cols = NR.min(n - j);
                let bias = bias.map(|b| &b[j..j + cols]);
                for i in rows.clone().step_by(MR) {
                    let tile_rows = MR.min(rows.end - i);
                    packed_tile(
                        isa,
                        tile_rows,
                        depth,
                        &a[i * k + p0..],
                        k,
                        panel,
                        NR,
                        &mut tile,
                    );
                    for (r, tile_row) in tile.iter().enumerate().take(tile_rows) {
                        let at = (i + r) * n + j;
                        // SAFETY: this task owns rows `rows` × the columns of `panel_range`.
                        let o = unsafe { out.range(at..at + cols) };
                        write_back(isa, o, &tile_row[..cols], first, last, bias, epilogue);
                    }
                }
            }
        }
    });
}

/// Merges one k block's partial sums into `out`: the first block overwrites (unless
/// `AddInto`), later ones add, the last adds the bias and applies the epilogue.
#[inline]
fn write_back(
    isa: Isa,
    out: &mut [f32],
    partial: &[f32],
    first: bool,
    last: bool,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) {
    if first && epilogue != Epilogue::AddInto {
        out.copy_from_slice(partial);
    } else {
        out.iter_mut().zip(partial).for_each(|(o, p)| *o += p);
    }
    if last {
        if let Some(b) = bias {
            out.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        }
        if epilogue == Epilogue::Gelu {
            gelu_slice(isa, out);
        }
    }
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

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::detect());
        }
        v
    }

    /// Checks `gemm_bt` (every ISA) and `gemm_packed` against the f64 reference.
    fn check(pool: &CpuPool, rng: &mut Rng, m: usize, k: usize, n: usize, epilogue: Epilogue) {
        let a = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0);
        let bias = rng.vec(n, 1.0);
        let init = rng.vec(m * n, 1.0);
        let packed = PackedWeights::new(pool, &w, n, k);
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bias[..]);
            let (want, scale) = gemm_bt_f64(&a, m, k, &w, n, bias, epilogue, &init);
            for isa in isas() {
                let mut out = init.clone();
                gemm_bt_with(isa, pool, &a, m, k, &w, n, bias, epilogue, &mut out);
                let what =
                    format!("gemm_bt {isa:?} m={m} k={k} n={n} {epilogue:?} bias={with_bias}");
                assert_close(&out, &want, &scale, k, &what);
                let mut out = init.clone();
                gemm_packed_with(isa, pool, &a, m, &packed, bias, epilogue, &mut out);
                let what =
                    format!("gemm_packed {isa:?} m={m} k={k} n={n} {epilogue:?} bias={with_bias}");
                assert_close(&out, &want, &scale, k, &what);
            }
        }
    }

    #[test]
    fn gemm_matches_f64_on_random_shapes() {
        let mut rng = Rng::new(4);
        for threads in 1..=3 {
            let pool = CpuPool::new(threads);
            for _ in 0..12 {
                let m = rng.range(1, 120);
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
            (8, 384, 200),
            (9, 384, 200),
            (37, 1500, 19),
            (67, 384, 130),
            (13, 1, 17),
            (100, 1536, 40),
            (200, 600, 33),
        ] {
            check(&pool, &mut rng, m, k, n, Epilogue::Store);
            check(&pool, &mut rng, m, k, n, Epilogue::AddInto);
        }
        check(&pool, &mut rng, 29, 384, 200, Epilogue::Gelu);
        // Weight over MAX_PACK_FLOATS with m > 8: gemm_bt's dot path at large m.
        check(&pool, &mut rng, 12, 64, 131_100, Epilogue::AddInto);
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
        // k = 0 with many rows (packed path): r = bias.
        let mut out = vec![7.0; 20 * 2];
        gemm_bt(
            &pool,
            &[],
            20,
            0,
            &[],
            2,
            Some(&[1.0, 2.0]),
            Epilogue::Store,
            &mut out,
        );
        assert!(out.chunks_exact(2).all(|r| r == [1.0, 2.0]));
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
