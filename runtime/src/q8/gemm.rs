//! INT8 GEMM against a tile-major [`QuantMatrix`], with the f32 epilogues of the f32 GEMM:
//! `out[m, n] = epilogue(acc[m, n] as f32 · scale_x[m] · scale_w[n] + bias[n])` where
//! `acc = Σ_k qx[m, k] · qw[n, k]` in i32 and `qx` is `x` quantized per row at call time.
//!
//! Work split over the [`CpuPool`]:
//! - **many rows** (`m > SMALL_M`): tasks own blocks of rows; each quantizes its rows into
//!   its part of the scratch, then walks output-channel tiles (a tile's weights, `k_tiles`
//!   × 4 KB, stay in L2) × 4-row groups (in L1) × channel pairs, writing `out` directly;
//! - **few rows** (decoder): tasks own groups of channel tiles (the weight matrix is streamed
//!   once in total); i32 sums go to a channel-major scratch, and a second pass over rows
//!   dequantizes into `out`.

use super::kernels::{
    activation_row, activation_row_u8, dot_tile, dot_tile_u8, Isa, TileSums, MAX_R,
};
use super::layout::{QuantMatrix, TILE, TILE_BYTES};
use super::parts::{Parts, MAX_PARTS};
use crate::cpu::{gelu_f32_in_place, CpuPool, Epilogue};

/// k tiles per chunk on the AMX path.
#[cfg(target_arch = "x86_64")]
const AMX_K_TILES: usize = 6;

/// 32-row blocks that share each weight tile load on the AMX path.
#[cfg(target_arch = "x86_64")]
const AMX_GROUP: usize = 2;

/// Up to this many rows, parallelise over channel tiles instead of rows.
const SMALL_M: usize = 16;
/// Largest row block per task on the many-rows path (a multiple of `MAX_R`), unless more
/// rows are needed to stay within `MAX_PARTS` tasks.
const MAX_TASK_ROWS: usize = 64;

/// Reusable buffers of [`gemm_q8`]: quantized activations (`k_pad` per row: i16 codes, or
/// offset bytes on the VNNI path), their scales and (few-rows path) the i32 sums. Grows to the
/// largest call seen; never shrinks.
#[derive(Default)]
pub struct Q8Scratch {
    codes: Vec<i16>,
    bytes: Vec<u8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// The weights in the AMX second-source layout (AMX many-rows path only).
    amx_weights: Vec<i8>,
    /// Per-thread i32 sums of the AMX many-rows path's blocks (8 KB per 32-row block and
    /// channel tile held; grown on the first call of a shape, so warm-up allocates them).
    #[cfg(target_arch = "x86_64")]
    amx_sums: Vec<[[i32; TILE]; super::gemm_amx::BLOCK_ROWS]>,
}

impl Q8Scratch {
    /// An empty scratch (grows on first use).
    pub fn new() -> Q8Scratch {
        Q8Scratch::default()
    }

    /// Grows the buffers for a call with `m` rows against `w`, so that such calls (and smaller
    /// ones) allocate nothing.
    pub fn reserve(&mut self, m: usize, w: &QuantMatrix) {
        self.reserve_for(Isa::detect(), m, w);
    }

    /// [`Q8Scratch::reserve`] for the kernels of `isa`.
    pub fn reserve_for(&mut self, isa: Isa, m: usize, w: &QuantMatrix) {
        let kp = w.k_tiles() * TILE;
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Amx && m > SMALL_M {
            use super::gemm_amx::BLOCK_ROWS;
            grow(&mut self.bytes, m.next_multiple_of(BLOCK_ROWS) * kp, 0);
            grow(
                &mut self.amx_weights,
                w.n_tiles() * w.k_tiles() * TILE_BYTES,
                0,
            );
        }
        if uses_bytes(isa) {
            grow(&mut self.bytes, m * kp, 0);
        } else {
            grow(&mut self.codes, m * kp, 0);
        }
        grow(&mut self.scales, m, 0.0);
        grow(&mut self.sums, w.n_tiles() * TILE * m.min(SMALL_M), 0);
    }
}

/// Whether `isa`'s GEMM kernel reads offset activation bytes (VNNI) rather than i16 codes.
pub(super) fn uses_bytes(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512Vnni | Isa::AvxVnni | Isa::Amx) {
        return true;
    }
    let _ = isa;
    false
}

/// An activation code type of the GEMM kernels: i16 codes or VNNI's offset bytes.
trait ActCode: Copy + Default + Send + Sync {
    /// The scratch split into (this type's code buffer, scales, sums).
    fn split(s: &mut Q8Scratch) -> (&mut Vec<Self>, &mut Vec<f32>, &mut Vec<i32>);
    fn quantize(isa: Isa, x: &[f32], row: &mut [Self]) -> f32;
    #[allow(clippy::too_many_arguments)]
    fn dot_tile(
        isa: Isa,
        rows: usize,
        x: &[Self],
        w: &QuantMatrix,
        nt: usize,
        width: usize,
        out: &mut TileSums,
    );
}

impl ActCode for i16 {
    fn split(s: &mut Q8Scratch) -> (&mut Vec<i16>, &mut Vec<f32>, &mut Vec<i32>) {
        (&mut s.codes, &mut s.scales, &mut s.sums)
    }
    fn quantize(isa: Isa, x: &[f32], row: &mut [i16]) -> f32 {
        activation_row(isa, x, row)
    }
    fn dot_tile(
        isa: Isa,
        rows: usize,
        x: &[i16],
        w: &QuantMatrix,
        nt: usize,
        width: usize,
        out: &mut TileSums,
    ) {
        dot_tile(isa, rows, x, w.k_tiles(), w.n_tile(nt), width, out);
    }
}

/// Quantizes the rows of `x` (`k` wide) into `codes` (`kp` apart) and their scales, one per
/// row of `scales`.
fn quantize_rows<T: ActCode>(
    isa: Isa,
    x: &[f32],
    k: usize,
    codes: &mut [T],
    kp: usize,
    scales: &mut [f32],
) {
    for ((xr, qr), s) in x
        .chunks_exact(k)
        .zip(codes.chunks_exact_mut(kp))
        .zip(scales)
    {
        *s = T::quantize(isa, xr, qr);
    }
}

impl ActCode for u8 {
    fn split(s: &mut Q8Scratch) -> (&mut Vec<u8>, &mut Vec<f32>, &mut Vec<i32>) {
        (&mut s.bytes, &mut s.scales, &mut s.sums)
    }
    fn quantize(isa: Isa, x: &[f32], row: &mut [u8]) -> f32 {
        activation_row_u8(isa, x, row)
    }
    fn dot_tile(
        isa: Isa,
        rows: usize,
        x: &[u8],
        w: &QuantMatrix,
        nt: usize,
        width: usize,
        out: &mut TileSums,
    ) {
        let sums = &w.code_sums()[nt * TILE..(nt + 1) * TILE];
        dot_tile_u8(isa, rows, x, w.k_tiles(), w.n_tile(nt), sums, width, out);
    }
}

/// Grows `v` to at least `len` values, all zero. Nothing is kept (scratch is written before it
/// is read), so growing is a fresh zeroed allocation rather than `resize`: it copies and writes
/// nothing, the OS maps each page when a call first writes it, and pages no call reaches (rows
/// past those a greedy decoder pass uses) never become resident. `resize` zero-filled, so
/// faulted in, every page at reservation: ~2300 of a tiny.en session's faults.
fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        *v = Vec::new(); // the old block is free before the new one is taken
        *v = vec![fill; len];
    }
}

/// `out[m×n] = epilogue(dequant(quant(x[m×k]) · wᵀ) + bias[n])` with `n = w.n_out()`,
/// `k = w.k()`, on the fastest instruction set of this CPU. `scratch` is grown on first use.
///
/// # Panics
/// If a slice length does not match the shape (a programming error in the caller).
#[allow(clippy::too_many_arguments)] // mirrors cpu::gemm_bt
pub fn gemm_q8(
    pool: &CpuPool,
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    scratch: &mut Q8Scratch,
    out: &mut [f32],
) {
    gemm_q8_with(Isa::detect(), pool, x, m, w, bias, epilogue, scratch, out);
}

/// [`gemm_q8`] on a chosen instruction set (every `isa` gives bit-identical results).
///
/// # Panics
/// As [`gemm_q8`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_q8_with(
    isa: Isa,
    pool: &CpuPool,
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    scratch: &mut Q8Scratch,
    out: &mut [f32],
) {
    let (n, k) = (w.n_out(), w.k());
    assert_eq!(x.len(), m * k, "gemm_q8: x is not m·k");
    assert_eq!(out.len(), m * n, "gemm_q8: out is not m·n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "gemm_q8: bias is not n");
    }
    if m == 0 || n == 0 {
        return;
    }
    let job = Job {
        isa,
        w,
        bias,
        epilogue,
    };
    if k == 0 {
        // Empty product: every sum is 0, the output is the epilogue of the bias.
        let zeros = [0i32; TILE];
        for row in out.chunks_exact_mut(n) {
            for (t, part) in row.chunks_mut(TILE).enumerate() {
                job.finish_row(part, &zeros, 0.0, t * TILE);
            }
        }
        return;
    }
    scratch.reserve_for(isa, m, w);
    // Up to SMALL_M rows, AMX runs the 512-bit VNNI kernel: an AMX few-rows kernel (weights
    // as the first source, as the file holds them, 16 packed rows as the second) measured
    // 37.9 against 25.5 µs for 1×384×4096 and 61 against 71 µs for 5 rows on the Xeon: its
    // tile loads are not reused, so it is load-bound like the GEMV, at no gain.
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Amx && m > SMALL_M {
        return job.many_rows_amx(pool, x, m, scratch, out);
    }
    match (uses_bytes(isa), m <= SMALL_M) {
        (false, true) => job.few_rows::<i16>(pool, x, m, scratch, out),
        (false, false) => job.many_rows::<i16>(pool, x, m, scratch, out),
        (true, true) => job.few_rows::<u8>(pool, x, m, scratch, out),
        (true, false) => job.many_rows::<u8>(pool, x, m, scratch, out),
    }
}

/// The epilogue of one row of i32 sums, the only place an INT8 sum becomes f32:
/// `out[i] (=, +=, = gelu) acc[i] as f32 · scale_x · scale_w[i] + bias[i]`, in this order, so
/// every path that computes the sums elsewhere (an NPU) rounds exactly as [`gemm_q8`] does.
/// `out`, `acc`, `scale_w` and `bias` (when given) have one length.
///
/// # Panics
/// If the lengths differ (a programming error in the caller).
#[inline]
pub fn dequantize_into(
    out: &mut [f32],
    acc: &[i32],
    scale_x: f32,
    scale_w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) {
    let len = out.len();
    assert!(acc.len() == len && scale_w.len() == len && bias.is_none_or(|b| b.len() == len));
    let r = |i: usize| {
        let v = acc[i] as f32 * scale_x * scale_w[i];
        match bias {
            Some(b) => v + b[i],
            None => v + 0.0,
        }
    };
    match epilogue {
        Epilogue::Store => (0..len).for_each(|i| out[i] = r(i)),
        Epilogue::AddInto => (0..len).for_each(|i| out[i] += r(i)),
        Epilogue::Gelu => {
            // GELU in f32 (16 lanes on AVX-512), within 1e-6 of the exact one: far below
            // the INT8 error of its input.
            (0..len).for_each(|i| out[i] = r(i));
            gelu_f32_in_place(out);
        }
    }
}

/// The per-call constants shared by all tasks.
struct Job<'a> {
    isa: Isa,
    w: &'a QuantMatrix,
    bias: Option<&'a [f32]>,
    epilogue: Epilogue,
}

impl Job<'_> {
    /// The epilogue of `out.len()` (≤ `TILE`) consecutive outputs `j0..` of one row: the only
    /// place an INT8 sum becomes f32, `acc as f32 · scale_x · scale_w[j] + bias[j]` in this
    /// order, so every path rounds identically.
    #[inline]
    fn finish_row(&self, out: &mut [f32], acc: &[i32], scale_x: f32, j0: usize) {
        let len = out.len();
        let sw = &self.w.scales()[j0..j0 + len];
        let b = self.bias.map(|b| &b[j0..j0 + len]);
        dequantize_into(out, &acc[..len], scale_x, sw, b, self.epilogue);
    }

    fn many_rows<T: ActCode>(
        &self,
        pool: &CpuPool,
        x: &[f32],
        m: usize,
        s: &mut Q8Scratch,
        out: &mut [f32],
    ) {
        let (n, k) = (self.w.n_out(), self.w.k());
        let kp = self.w.k_tiles() * TILE;
        // ~4 tasks per thread for balance on a shared machine, at most MAX_PARTS.
        let want = m.div_ceil(4 * pool.threads()).next_multiple_of(MAX_R);
        let task_rows = want
            .min(MAX_TASK_ROWS)
            .max(m.div_ceil(MAX_PARTS).next_multiple_of(MAX_R));
        let (codes, scales, _) = T::split(s);
        let codes = Parts::new(&mut codes[..m * kp], task_rows * kp);
        let scales = Parts::new(&mut scales[..m], task_rows);
        let outs = Parts::new(out, task_rows * n);
        pool.run(codes.count(), |task| {
            let (codes, scales, out) = (codes.take(task), scales.take(task), outs.take(task));
            let rows = scales.len();
            let x = &x[task * task_rows * k..][..rows * k];
            quantize_rows::<T>(self.isa, x, k, codes, kp, scales);
            let mut tile: TileSums = [[0; TILE]; MAX_R];
            for nt in 0..self.w.n_tiles() {
                let j0 = nt * TILE;
                let width = TILE.min(n - j0);
                for r0 in (0..rows).step_by(MAX_R) {
                    let r_n = MAX_R.min(rows - r0);
                    let xq = &codes[r0 * kp..(r0 + r_n) * kp];
                    T::dot_tile(self.isa, r_n, xq, self.w, nt, width, &mut tile);
                    for (r, tile) in tile.iter().enumerate().take(r_n) {
                        let row = &mut out[(r0 + r) * n + j0..(r0 + r) * n + j0 + width];
                        self.finish_row(row, tile, scales[r0 + r], j0);
                    }
                }
            }
        });
    }

    /// The many-rows path on AMX: the weights are rearranged once into the tile layout
    /// (tasks own groups of channel tiles), then tasks own blocks of rows (multiples of
    /// [`BLOCK_ROWS`](super::gemm_amx::BLOCK_ROWS); the scratch is padded to whole blocks and
    /// the padding rows' sums are discarded), quantize them and walk channel tiles × 32-row
    /// blocks with [`gemm_amx::block`](super::gemm_amx::block).
    #[cfg(target_arch = "x86_64")]
    fn many_rows_amx(
        &self,
        pool: &CpuPool,
        x: &[f32],
        m: usize,
        s: &mut Q8Scratch,
        out: &mut [f32],
    ) {
        use super::gemm_amx::{block, pack_weights, Tiles, BLOCK_ROWS};
        let (n, k) = (self.w.n_out(), self.w.k());
        let (k_tiles, n_tiles) = (self.w.k_tiles(), self.w.n_tiles());
        let kp = k_tiles * TILE;
        let tile_bytes = k_tiles * TILE_BYTES;
        let packed = &mut s.amx_weights[..n_tiles * tile_bytes];
        {
            let per_task = n_tiles.div_ceil(4 * pool.threads()).max(1);
            let parts = Parts::new(&mut *packed, per_task * tile_bytes);
            pool.run(parts.count(), |task| {
                let dst = parts.take(task);
                for (t, dst) in dst.chunks_exact_mut(tile_bytes).enumerate() {
                    pack_weights(k_tiles, self.w.n_tile(task * per_task + t), dst);
                }
            });
        }
        let packed = &*packed;
        let m_pad = m.next_multiple_of(BLOCK_ROWS);
        let want = m.div_ceil(4 * pool.threads()).next_multiple_of(BLOCK_ROWS);
        let task_rows = want.max(m_pad.div_ceil(MAX_PARTS).next_multiple_of(BLOCK_ROWS));
        let chunked = k_tiles > AMX_K_TILES;
        let per_thread = AMX_GROUP * if chunked { n_tiles } else { 1 };
        grow(
            &mut s.amx_sums,
            pool.threads() * per_thread,
            [[0; TILE]; BLOCK_ROWS],
        );
        let thread_sums = Parts::new(&mut s.amx_sums[..pool.threads() * per_thread], per_thread);
        let codes = Parts::new(&mut s.bytes[..m_pad * kp], task_rows * kp);
        let scales = Parts::new(&mut s.scales[..m], task_rows);
        let outs = Parts::new(out, task_rows * n);
        pool.run_on_threads(codes.count(), |thread, task| {
            let (codes, scales, out) = (codes.take(task), scales.take(task), outs.take(task));
            let rows = scales.len();
            let x = &x[task * task_rows * k..][..rows * k];
            quantize_rows::<u8>(self.isa, x, k, codes, kp, scales);
            let tiles = Tiles::new();
            // Two 32-row blocks at a time take each weight tile from L2 once for both. k in
            // chunks of AMX_K_TILES tiles when it is longer: a chunk's activations (2 × 32 rows
            // × 384 bytes) stay in L1 while every channel tile's weights stream past, and each
            // (block, channel tile)'s partial sums wait in this thread's part of the scratch.
            {
                let mut held = thread_sums.lock(thread);
                let acc = held
                    .as_deref_mut()
                    .expect("a thread's AMX sums are never taken");
                for g0 in (0..rows).step_by(AMX_GROUP * BLOCK_ROWS) {
                    let blocks = (rows - g0).div_ceil(BLOCK_ROWS).min(AMX_GROUP);
                    let x = |b: usize| &codes[(g0 + b * BLOCK_ROWS) * kp..];
                    let block_rows = |b: usize| BLOCK_ROWS.min(rows - g0 - b * BLOCK_ROWS);
                    if !chunked {
                        for nt in 0..n_tiles {
                            let w = &packed[nt * tile_bytes..][..tile_bytes];
                            for (b, acc) in acc.iter_mut().enumerate().take(blocks) {
                                block(&tiles, x(b), kp, k_tiles, w, false, acc);
                                let r0 = g0 + b * BLOCK_ROWS;
                                let out = &mut out[r0 * n..];
                                self.finish_amx(acc, nt, block_rows(b), &scales[r0..], out);
                            }
                        }
                        continue;
                    }
                    for kc in (0..k_tiles).step_by(AMX_K_TILES) {
                        let kn = AMX_K_TILES.min(k_tiles - kc);
                        for nt in 0..n_tiles {
                            let w = &packed[nt * tile_bytes + kc * TILE_BYTES..][..kn * TILE_BYTES];
                            for b in 0..blocks {
                                let acc = &mut acc[b * n_tiles + nt];
                                block(&tiles, &x(b)[kc * TILE..], kp, kn, w, kc > 0, acc);
                            }
                        }
                    }
                    for b in 0..blocks {
                        let r0 = g0 + b * BLOCK_ROWS;
                        let out = &mut out[r0 * n..];
                        for nt in 0..n_tiles {
                            let acc = &acc[b * n_tiles + nt];
                            self.finish_amx(acc, nt, block_rows(b), &scales[r0..], out);
                        }
                    }
                }
            }
        });
    }

    /// The epilogue of one AMX block (`rows` rows from the first of `out`, channel tile `nt`).
    #[cfg(target_arch = "x86_64")]
    fn finish_amx(
        &self,
        acc: &[[i32; TILE]; super::gemm_amx::BLOCK_ROWS],
        nt: usize,
        rows: usize,
        scales: &[f32],
        out: &mut [f32],
    ) {
        let (n, j0) = (self.w.n_out(), nt * TILE);
        let width = TILE.min(n - j0);
        super::gemm_amx::finish_block(
            acc,
            rows,
            &self.w.code_sums()[j0..j0 + TILE],
            scales,
            &self.w.scales()[j0..j0 + width],
            self.bias.map(|b| &b[j0..j0 + width]),
            self.epilogue,
            out,
            n,
            j0,
            width,
        );
    }

    fn few_rows<T: ActCode>(
        &self,
        pool: &CpuPool,
        x: &[f32],
        m: usize,
        s: &mut Q8Scratch,
        out: &mut [f32],
    ) {
        let (n, k) = (self.w.n_out(), self.w.k());
        let kp = self.w.k_tiles() * TILE;
        let n_tiles = self.w.n_tiles();
        let (codes, scales, sums) = T::split(s);
        let codes = &mut codes[..m * kp];
        let scales = &mut scales[..m];
        quantize_rows::<T>(self.isa, x, k, codes, kp, scales);
        let (codes, scales) = (&*codes, &*scales);
        // sums[j·m + r]: channel-major so each task's channel tiles are one contiguous part.
        let tiles_per_task = n_tiles.div_ceil(MAX_PARTS).max(1);
        let all_sums = &mut sums[..n_tiles * TILE * m];
        {
            let sum_parts = Parts::new(&mut *all_sums, tiles_per_task * TILE * m);
            pool.run(sum_parts.count(), |task| {
                let sums = sum_parts.take(task);
                let mut tile: TileSums = [[0; TILE]; MAX_R];
                for (t, sums) in sums.chunks_exact_mut(TILE * m).enumerate() {
                    let nt = task * tiles_per_task + t;
                    let width = TILE.min(n - nt * TILE);
                    for r0 in (0..m).step_by(MAX_R) {
                        let r_n = MAX_R.min(m - r0);
                        let xq = &codes[r0 * kp..(r0 + r_n) * kp];
                        T::dot_tile(self.isa, r_n, xq, self.w, nt, width, &mut tile);
                        for (r, tile) in tile.iter().enumerate().take(r_n) {
                            for (c, &v) in tile.iter().enumerate().take(width) {
                                sums[c * m + r0 + r] = v;
                            }
                        }
                    }
                }
            });
        }
        let sums = &*all_sums;
        let rows = Parts::new(out, n);
        pool.run(m, |r| {
            let row = rows.take(r);
            let mut acc = [0i32; TILE];
            for (t, row) in row.chunks_mut(TILE).enumerate() {
                for (c, a) in acc.iter_mut().enumerate().take(row.len()) {
                    *a = sums[(t * TILE + c) * m + r];
                }
                self.finish_row(row, &acc, scales[r], t * TILE);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::reference::gemm_bt_f64;
    use crate::cpu::testing::Rng;
    use crate::q8::quant::code;

    /// Independent reference: quantize with the documented formulas from the logical
    /// (unpadded) matrix, integer dot products, then the documented dequantization.
    fn reference(
        x: &[f32],
        m: usize,
        w: &QuantMatrix,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        out: &mut [f32],
    ) {
        let (n, k) = (w.n_out(), w.k());
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let max = xr.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let (sx, inv) = if max > 0.0 {
                (max / 127.0, 127.0 / max)
            } else {
                (0.0, 0.0)
            };
            for j in 0..n {
                let acc: i32 = (0..k)
                    .map(|p| code(xr[p] * inv) as i32 * w.get(j, p) as i32)
                    .sum();
                let b = bias.map_or(0.0, |b| b[j]);
                let value = acc as f32 * sx * w.scales()[j] + b;
                if epilogue == Epilogue::Gelu {
                    // The INT8 epilogue's GELU is the f32 one.
                    let mut g = [value];
                    crate::cpu::gelu_f32_in_place(&mut g);
                    out[i * n + j] = g[0];
                } else {
                    epilogue.apply(&mut out[i * n + j], value);
                }
            }
        }
    }

    fn check(pool: &CpuPool, rng: &mut Rng, m: usize, k: usize, n: usize, scratch: &mut Q8Scratch) {
        let x = rng.vec(m * k, 1.0);
        let wf = rng.vec(n * k, 0.5);
        let w = QuantMatrix::quantize(&wf, n, k);
        let bias = rng.vec(n, 1.0);
        let init = rng.vec(m * n, 1.0);
        for epilogue in [Epilogue::Store, Epilogue::Gelu, Epilogue::AddInto] {
            for bias in [Some(&bias[..]), None] {
                let mut want = init.clone();
                reference(&x, m, &w, bias, epilogue, &mut want);
                for isa in Isa::available() {
                    let mut got = init.clone();
                    gemm_q8_with(isa, pool, &x, m, &w, bias, epilogue, scratch, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{isa:?} m={m} k={k} n={n} {epilogue:?} differs from reference"
                    );
                }
            }
        }
    }

    #[test]
    fn every_isa_is_bit_exact_against_the_reference() {
        let mut rng = Rng::new(31);
        let mut scratch = Q8Scratch::new();
        for threads in [1, 2, 3] {
            let pool = CpuPool::new(threads);
            for (m, k, n) in [
                (1, 1, 1),
                (1, 64, 64),
                (1, 384, 519),
                (3, 70, 130),
                (5, 65, 63),
                (16, 128, 200),
                (17, 100, 70),
                (33, 1536, 67),
                (67, 191, 129),
                (150, 64, 250),
            ] {
                check(&pool, &mut rng, m, k, n, &mut scratch);
            }
            for _ in 0..6 {
                let (m, k, n) = (rng.range(1, 80), rng.range(1, 300), rng.range(1, 300));
                check(&pool, &mut rng, m, k, n, &mut scratch);
            }
        }
    }

    #[test]
    fn empty_shapes_apply_the_epilogue_to_the_bias() {
        let pool = CpuPool::new(2);
        let mut scratch = Q8Scratch::new();
        let w = QuantMatrix::quantize(&[], 70, 0);
        let bias: Vec<f32> = (0..70).map(|j| j as f32 - 3.0).collect();
        let mut out = vec![1.0; 3 * 70];
        gemm_q8(
            &pool,
            &[],
            3,
            &w,
            Some(&bias),
            Epilogue::AddInto,
            &mut scratch,
            &mut out,
        );
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, 1.0 + bias[i % 70]);
        }
        let w = QuantMatrix::quantize(&[], 0, 5);
        gemm_q8(
            &pool,
            &[0.5; 10],
            2,
            &w,
            None,
            Epilogue::Store,
            &mut scratch,
            &mut [],
        );
    }

    #[test]
    fn int8_gemm_is_close_to_f32() {
        // Error model: each product x·w gets error δx·w + x·δw with |δ| ≤ scale/2 and scale =
        // max/127; for uniform inputs on [-a, a] the errors have random signs, so the sum's rms
        // error is ≈ √k·a_x·a_w·0.47/254, while Σ|x·w| ≈ k·a_x·a_w/4: a ratio ≈ 7.4e-3/√k
        // (9e-4 at k = 64; the maximum over ~10⁴ outputs is ~4σ ≈ 3.7e-3). Measured worst:
        // 2.3e-3 (k = 64) … 7.3e-4 (k = 1536). Asserting ≤ 1e-2 of Σ|x·w| keeps margin, yet
        // any indexing or scale error (O(1) relative) fails it.
        let mut rng = Rng::new(32);
        let pool = CpuPool::new(2);
        let mut scratch = Q8Scratch::new();
        for (m, k, n) in [(1, 64, 100), (7, 384, 300), (40, 1536, 70), (20, 200, 1000)] {
            let x = rng.vec(m * k, 1.0);
            let wf = rng.vec(n * k, 0.2);
            let bias = rng.vec(n, 0.1);
            let w = QuantMatrix::quantize(&wf, n, k);
            let mut got = vec![0.0; m * n];
            gemm_q8(
                &pool,
                &x,
                m,
                &w,
                Some(&bias),
                Epilogue::Store,
                &mut scratch,
                &mut got,
            );
            let zeros = vec![0.0; m * n];
            let (want, scale) = gemm_bt_f64(&x, m, k, &wf, n, Some(&bias), Epilogue::Store, &zeros);
            let mut worst = 0.0f64;
            for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                let rel = (*g as f64 - w).abs() / s;
                worst = worst.max(rel);
            }
            assert!(
                worst <= 1e-2,
                "m={m} k={k} n={n}: error {worst:e} of Σ|x·w|"
            );
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::cpu::testing::Rng;
    use std::time::Instant;

    /// Single-thread kernel throughput on cache-resident data, minimum of many short runs (robust
    /// on a shared machine): `cargo test -p amanuensis-runtime --release --lib q8::gemm::bench
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only"]
    fn kernel_throughput() {
        let mut rng = Rng::new(1);
        let pool = CpuPool::new(1);
        let x = rng.vec(64 * 1536, 1.0);
        let mut row = vec![0i16; 1536];
        let mut best = f64::INFINITY;
        for _ in 0..400 {
            let t = Instant::now();
            for xr in x.chunks_exact(1536) {
                std::hint::black_box(activation_row(Isa::detect(), xr, &mut row));
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "activation_row: {:.2} ns per value",
            best * 1e9 / x.len() as f64
        );
        // Then five beams' rows, and tiny.en's encoder fc1 and fc2 on a whole window.
        for (m, k, n) in [
            (64, 384, 256),
            (64, 1536, 64),
            (1, 384, 4096),
            (5, 384, 4096),
            (1500, 384, 1536),
            (1500, 1536, 384),
        ] {
            let skip =
                |var: &str, value: usize| std::env::var(var).is_ok_and(|v| v != value.to_string());
            if skip("AMANUENSIS_BENCH_M", m) || skip("AMANUENSIS_BENCH_K", k) {
                continue;
            }
            let reps = (400 * 64 * 384 * 256 / (m * k * n)).clamp(20, 400);
            let x = rng.vec(m * k, 1.0);
            let w = QuantMatrix::quantize(&rng.vec(n * k, 1.0), n, k);
            let mut out = vec![0.0; m * n];
            let mut scratch = Q8Scratch::new();
            let only = std::env::var("AMANUENSIS_BENCH_ISA").ok();
            for isa in Isa::available().into_iter().skip(1) {
                if only.as_deref().is_some_and(|o| o != isa.name()) {
                    continue;
                }
                let mut best = f64::INFINITY;
                for _ in 0..reps {
                    let t = Instant::now();
                    gemm_q8_with(
                        isa,
                        &pool,
                        &x,
                        m,
                        &w,
                        None,
                        Epilogue::Store,
                        &mut scratch,
                        &mut out,
                    );
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let gops = 2.0 * (m * n * k) as f64 / best / 1e9;
                println!(
                    "{isa:?} m={m} k={k} n={n}: {:.1} µs, {gops:.1} GOPS",
                    best * 1e6
                );
            }
        }
    }
}
