//! Residual add, LayerNorm and per-row INT8 quantization of a GEMM's input: the Rust model of
//! `aie/kernels/norm_quant.cc` (bit for bit on the host build, `tests/host_build.rs`).
//!
//! One call takes [`NQ_ROWS`] rows of width `d` (a multiple of 64) and
//! computes, per row,
//!
//! ```text
//! v      = x + r                      (add_norm_quant; norm_quant: v = x)   → x_out
//! mean   = lane_sum(v) / d
//! var    = lane_sum((v − mean)·(v − mean)) / d
//! inv    = 1 / sqrt(var + eps)
//! y[i]   = (v[i] − mean) · inv · gamma[i] + beta[i]
//! max    = max |y[i]|          scale = max / 127, codes = code(y[i] · 127/max)
//! ```
//!
//! which is exactly what the CPU INT8 path does between two GEMMs: the residual `*out += r` of
//! the `AddInto` epilogue, `amanuensis_runtime::cpu::layer_norm` (its 8-lane interleaved sums
//! `lanes[i % 8] += v`, then the lanes added in order starting from Rust's `-0.0` of
//! `Iterator::sum`), and `amanuensis_runtime::q8::quant::quantize_row` (max over |y|, `127 /
//! max`, round half away from zero, clamp ±127; scale 0 and zero codes for a row whose max is 0
//! or not finite). Same IEEE f32 operations in the same order, so the codes and the scale are
//! the CPU's bits (tested against those functions in this module, and against the C++ in
//! `tests/host_build.rs`). The 8 accumulator lanes are one `aie::vector<float, 8>` on the core
//! (each 16-lane vector added as two halves, which keeps the CPU's order); everything else is
//! lane-wise, so the kernel runs it 16 lanes at a time and computes the codes of a 4-row × 8
//! block at once (one 32-byte store), rounding without a float → int conversion
//! (`quant_codes_v`, equal to [`code`] on every f32: `tests/host_build.rs`). The operations
//! per element, and so the bits, are this model's.
//!
//! **The plain quantize** ([`quant`], `nq_quant`): the same per-row quantization without the
//! norm (`v = x`), for a GEMM whose input is another GEMM's f32 output (fc2 reads fc1's GELU
//! output): exactly `q8::quant::quantize_row`, written in the same layout.
//!
//! # L1 layout of the outputs
//!
//! The codes go out in the matmul kernel's A-object order ([`super::layout::a_offset`]): rows
//! `4·g .. 4·g + 4` of a 32-row A object are one contiguous 256-byte run (a `4 × 8` block row),
//! so a call writes, for each depth step `t < d / 64`, the 256 bytes of that run, then a 257th
//! run: the same rows of the **row-scale object** the matmul epilogue reads
//! ([`super::matmul::row_scale`]: `sx[m]` as f32 LE at `a_offset(m, 0)`, zeros elsewhere, as
//! [`super::matmul::put_row_scale`] then [`super::layout::block_a`] make it). The memory tile
//! joins 8 calls (one per 4-row group) into whole A objects; [`scatter_group`] is that join.
//!
//! The parameter object is `gamma[d]`, `beta[d]`, `eps` as f32 LE, zero-padded to
//! [`param_bytes`]. In the design it is the first object of the x stream (padded to one x
//! object); `nq_load_params` copies it into the kernel's own L1 array, and `nq_norm` /
//! `nq_add_norm` use that copy (an ObjectFifo object cannot be held while the fifo streams on).
//!
//! # L1 budget (of 64 KB; `crate::design::NormQuantDesign` checks it)
//!
//! x double-buffered, `r` and `x_out` double-buffered (with a residual), the codes
//! double-buffered, the parameter copy: `32·d + 2·(4·d + 256) + 8·d + 64` bytes without a
//! residual, `96·d + …` with one, plus the 2 KB stack reserve. d = 384: 18.6 / 42.6 KB;
//! d = 512: 24.6 / 56.6 KB (fit); d = 768 (whisper-small) fits without a residual (36.6 KB)
//! and not with one (84.6 KB: it would need 2-row groups, which the 4-row A blocks do not
//! allow, or single buffering). The plain quantize has no parameters and single-buffers x
//! (its rows are wide: fc2's input is `4·d_model`): `16·d + 2·(4·d + 256)` bytes, d = 1536
//! (tiny's fc2): 36.5 KB; d = 2048 (base): 48.5 KB.

use super::layout::{a_offset, TILE_K};

/// Rows per call: one `mmul` block row (`MMUL_R`) of an A object.
pub const NQ_ROWS: usize = 4;
/// Bytes of the run of one 4-row group in one A object.
pub const GROUP_BYTES: usize = NQ_ROWS * TILE_K;
/// Accumulator lanes of the sums (the CPU's `lane_sum`).
pub const LANES: usize = 8;
/// The largest code (`q8::quant::QMAX`).
const QMAX: f32 = 127.0;

/// Bytes a call writes: `d / 64` code runs and one row-scale run.
pub const fn codes_bytes(d: usize) -> usize {
    (d / TILE_K + 1) * GROUP_BYTES
}

/// Bytes of the parameter object: gamma, beta, eps (f32), zero padding to a multiple of 64.
pub const fn param_bytes(d: usize) -> usize {
    (8 * d + 4).div_ceil(64) * 64
}

/// The parameter object for `gamma`, `beta` (both `d` long) and `eps`.
pub fn param_object(gamma: &[f32], beta: &[f32], eps: f32) -> Vec<u8> {
    let d = gamma.len();
    let mut out = Vec::with_capacity(param_bytes(d));
    for v in gamma.iter().chain(beta).chain(std::iter::once(&eps)) {
        out.extend(v.to_le_bytes());
    }
    out.resize(param_bytes(d), 0);
    out
}

/// `lane_sum` of `amanuensis_runtime::cpu::layer_norm`: `lanes[i % 8] += v[i]` from `+0.0`,
/// then the lanes summed in order by `Iterator::sum` (which starts from `-0.0`).
#[inline]
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (i, v) in values.enumerate() {
        lanes[i % LANES] += v;
    }
    lanes.iter().sum()
}

/// `q8::quant::code`: `round_half_away_from_zero(y)` clamped to ±127 (NaN → 0).
#[inline]
pub fn code(y: f32) -> i8 {
    let y = y.clamp(-QMAX, QMAX);
    let t = y as i32;
    let frac = y - t as f32;
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8
}

/// LayerNorm of one row `v` into `y` (the CPU's operations in its order).
#[inline]
fn normalize(v: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let d = v.len();
    let mean = lane_sum(v.iter().copied()) / d as f32;
    let var = lane_sum(v.iter().map(|&a| (a - mean) * (a - mean))) / d as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &a), &g), &b) in y.iter_mut().zip(v).zip(gamma).zip(beta) {
        *o = (a - mean) * inv * g + b;
    }
}

/// Quantizes one normalized row: writes `code(y · 127/max)` through `put(k, code)` and returns
/// the scale (`max / 127`; 0 with all codes 0 when `max` is 0 or not finite).
#[inline]
fn quantize(y: &[f32], mut put: impl FnMut(usize, i8)) -> f32 {
    // Max is exact, so the lane split of `q8::quant::max_abs` does not matter; NaN is skipped
    // as `f32::max` skips it.
    let max = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !(max > 0.0 && max.is_finite()) {
        for k in 0..y.len() {
            put(k, 0);
        }
        return 0.0;
    }
    let (scale, inv) = (max / QMAX, QMAX / max);
    for (k, &v) in y.iter().enumerate() {
        put(k, code(v * inv));
    }
    scale
}

/// One call of the kernel on [`NQ_ROWS`] rows of width `d = gamma.len()`: `x` (and `residual`,
/// for `add_norm_quant`) row-major `4 × d`; writes `x_out = x + residual` (only with a
/// residual) and the codes / row-scale runs ([`codes_bytes`]) in A-object order. `y` is a
/// `d`-float scratch row (the C++ recomputes instead; the bits are the same).
///
/// # Panics
/// If a slice is shorter than its operand or `d` is not a multiple of 64.
#[allow(clippy::too_many_arguments)]
pub fn norm_quant(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    x_out: &mut [f32],
    codes: &mut [u8],
    y: &mut [f32],
) {
    let d = gamma.len();
    assert!(d.is_multiple_of(TILE_K) && d > 0, "norm_quant: d = {d}");
    let k_tiles = d / TILE_K;
    let scales_at = k_tiles * GROUP_BYTES;
    codes[scales_at..scales_at + GROUP_BYTES].fill(0);
    for m in 0..NQ_ROWS {
        let row = &x[m * d..(m + 1) * d];
        let v: &[f32] = match residual {
            Some(r) => {
                let out = &mut x_out[m * d..(m + 1) * d];
                for ((o, &a), &b) in out.iter_mut().zip(row).zip(&r[m * d..(m + 1) * d]) {
                    *o = a + b;
                }
                out
            }
            None => row,
        };
        normalize(v, gamma, beta, eps, &mut y[..d]);
        let scale = quantize(&y[..d], |k, c| {
            codes[(k / TILE_K) * GROUP_BYTES + a_offset(m, k % TILE_K)] = c as u8;
        });
        let at = scales_at + a_offset(m, 0);
        codes[at..at + 4].copy_from_slice(&scale.to_le_bytes());
    }
}

/// One call of the kernel's plain quantize (`nq_quant`, no LayerNorm, no residual) on
/// [`NQ_ROWS`] rows of width `d = x.len() / NQ_ROWS` (a multiple of 64): per row exactly
/// `q8::quant::quantize_row` (max over |x|, `127 / max`, codes; scale 0 and zero codes when the
/// max is 0 or not finite), written as [`norm_quant`] writes them (A-object runs, then the
/// row-scale run).
///
/// # Panics
/// If `x` is not `4·d` values with `d` a positive multiple of 64, or `codes` is shorter than
/// [`codes_bytes`].
pub fn quant(x: &[f32], codes: &mut [u8]) {
    let d = x.len() / NQ_ROWS;
    assert!(
        d.is_multiple_of(TILE_K) && d > 0 && x.len() == NQ_ROWS * d,
        "quant: {} values",
        x.len()
    );
    let scales_at = (d / TILE_K) * GROUP_BYTES;
    codes[scales_at..scales_at + GROUP_BYTES].fill(0);
    for (m, row) in x.chunks_exact(d).enumerate() {
        let scale = quantize(row, |k, c| {
            codes[(k / TILE_K) * GROUP_BYTES + a_offset(m, k % TILE_K)] = c as u8;
        });
        let at = scales_at + a_offset(m, 0);
        codes[at..at + 4].copy_from_slice(&scale.to_le_bytes());
    }
}

/// [`quant`]'s arithmetic on `rows` rows of width `d`, writing activation image rows (`d`
/// codes, then 64 bytes: the scale as f32 LE and zeros) as [`norm_quant_rows`] does: what the
/// quantize op leaves for the GEMM that reads it.
///
/// # Panics
/// If a slice is shorter than `rows` rows of its operand or `d` is not a multiple of 64.
pub fn quant_rows(x: &[f32], rows: usize, d: usize, image: &mut [u8]) {
    assert!(d.is_multiple_of(TILE_K) && d > 0, "quant_rows: d = {d}");
    let stride = d + TILE_K;
    for m in 0..rows {
        let row = &mut image[m * stride..(m + 1) * stride];
        let scale = quantize(&x[m * d..(m + 1) * d], |k, c| row[k] = c as u8);
        row[d..].fill(0);
        row[d..d + 4].copy_from_slice(&scale.to_le_bytes());
    }
}

/// The memory tile's join: copies the runs of the call for group `g` (rows `4·g ..`) into
/// the `d / 64 + 1` A objects `objects` (2048 bytes each, the last the row-scale object).
pub fn scatter_group(codes: &[u8], g: usize, objects: &mut [u8]) {
    let obj = TILE_K * super::layout::TILE_M;
    for (t, run) in codes.chunks_exact(GROUP_BYTES).enumerate() {
        objects[t * obj + g * GROUP_BYTES..t * obj + (g + 1) * GROUP_BYTES].copy_from_slice(run);
    }
}

/// The kernel's arithmetic on any number of rows, writing the GEMM design's **activation
/// image** rows (`d` codes, then 64 bytes: the scale as f32 LE and zeros; see
/// `crate::program::images`) instead of A objects: what a norm → GEMM chain leaves in the
/// device buffer the GEMM reads. `x` is updated in place (`x += residual`) when a residual is
/// given. `y` is a `d`-float scratch row.
///
/// # Panics
/// If a slice is shorter than `rows` rows of its operand or `d` is not a multiple of 64.
#[allow(clippy::too_many_arguments)]
pub fn norm_quant_rows(
    x: &mut [f32],
    residual: Option<&[f32]>,
    rows: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    image: &mut [u8],
    y: &mut [f32],
) {
    let d = gamma.len();
    assert!(
        d.is_multiple_of(TILE_K) && d > 0,
        "norm_quant_rows: d = {d}"
    );
    let stride = d + TILE_K;
    for m in 0..rows {
        let v = &mut x[m * d..(m + 1) * d];
        if let Some(r) = residual {
            for (a, &b) in v.iter_mut().zip(&r[m * d..(m + 1) * d]) {
                *a += b;
            }
        }
        normalize(v, gamma, beta, eps, &mut y[..d]);
        let row = &mut image[m * stride..(m + 1) * stride];
        let scale = quantize(&y[..d], |k, c| row[k] = c as u8);
        row[d..].fill(0);
        row[d..d + 4].copy_from_slice(&scale.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{block_a, A_BYTES, TILE_M};
    use super::super::matmul::{put_row_scale, row_scale};
    use super::*;
    use amanuensis_runtime::cpu::layer_norm;
    use amanuensis_runtime::q8::quant::quantize_row;

    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Rows exercising the edge cases: random at several magnitudes and offsets, all zero,
    /// all `-0.0`, constant (variance 0), one huge outlier, values whose squares overflow.
    fn test_rows(rng: &mut Rng, n: usize, d: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(n * d);
        for r in 0..n {
            for i in 0..d {
                x.push(match r % 8 {
                    0 => rng.f() * 3.0 + 10.0,
                    1 => 0.0,
                    2 => -0.0,
                    3 => 2.5,
                    4 if i == 17 => 6.0e4,
                    5 => rng.f() * 3.0e19,
                    6 => rng.f() * 1e-30,
                    _ => rng.f() * 40.0,
                });
            }
        }
        x
    }

    /// The CPU INT8 path's arithmetic: `*out += r`, `cpu::layer_norm`, `quantize_row`.
    fn cpu(x: &[f32], r: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) -> CpuRows {
        let d = gamma.len();
        let rows = x.len() / d;
        let mut v = x.to_vec();
        if let Some(r) = r {
            for (o, &b) in v.iter_mut().zip(r) {
                *o += b;
            }
        }
        let mut y = vec![0.0; v.len()];
        layer_norm(&v, rows, d, gamma, beta, eps, &mut y);
        let mut codes = vec![0i8; v.len()];
        let scales = y
            .chunks_exact(d)
            .zip(codes.chunks_exact_mut(d))
            .map(|(row, out)| quantize_row(row, out))
            .collect();
        CpuRows {
            x: v,
            codes,
            scales,
        }
    }

    struct CpuRows {
        x: Vec<f32>,
        codes: Vec<i8>,
        scales: Vec<f32>,
    }

    fn params(rng: &mut Rng, d: usize) -> (Vec<f32>, Vec<f32>) {
        let gamma = (0..d).map(|_| rng.f() * 2.0).collect();
        let beta = (0..d).map(|_| rng.f() * 0.5).collect();
        (gamma, beta)
    }

    #[test]
    fn the_image_rows_equal_the_cpu_int8_path_bit_for_bit() {
        let mut rng = Rng(3);
        for d in [64, 384, 512, 768] {
            let (gamma, mut beta) = params(&mut rng, d);
            if d == 768 {
                // beta = 0: a zero row normalizes to zeros (scale 0).
                beta.fill(0.0);
            }
            let rows = 24;
            let x = test_rows(&mut rng, rows, d);
            let r: Vec<f32> = (0..rows * d).map(|_| rng.f() * 5.0).collect();
            for residual in [None, Some(&r[..])] {
                let want = cpu(&x, residual, &gamma, &beta, 1e-5);
                let mut got_x = x.clone();
                let mut image = vec![0xAAu8; rows * (d + 64)];
                let mut y = vec![0.0; d];
                norm_quant_rows(
                    &mut got_x, residual, rows, &gamma, &beta, 1e-5, &mut image, &mut y,
                );
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got_x), bits(&want.x), "d {d}");
                for m in 0..rows {
                    let row = &image[m * (d + 64)..(m + 1) * (d + 64)];
                    let codes: Vec<i8> = row[..d].iter().map(|&b| b as i8).collect();
                    assert_eq!(codes, want.codes[m * d..(m + 1) * d], "d {d} row {m}");
                    let s = f32::from_le_bytes(row[d..d + 4].try_into().unwrap());
                    assert_eq!(s.to_bits(), want.scales[m].to_bits(), "d {d} row {m}");
                    assert!(row[d + 4..].iter().all(|&b| b == 0));
                }
                // The cases are live: with beta = 0 a zero row gives scale 0 (the
                // no-division branch), overflowing squares an infinite variance (y = beta).
                if d == 768 && residual.is_none() {
                    assert_eq!(want.scales[1], 0.0);
                }
                assert!(want.codes[..d].iter().any(|&c| c.abs() == 127));
            }
        }
    }

    #[test]
    fn eight_calls_joined_are_the_a_objects_the_matmul_reads() {
        let mut rng = Rng(9);
        for d in [384, 512] {
            let (gamma, beta) = params(&mut rng, d);
            let x = test_rows(&mut rng, TILE_M, d);
            let r: Vec<f32> = (0..TILE_M * d).map(|_| rng.f()).collect();
            let want = cpu(&x, Some(&r), &gamma, &beta, 1e-5);
            let k_tiles = d / TILE_K;
            let mut objects = vec![0u8; (k_tiles + 1) * A_BYTES];
            let mut x_out = vec![0.0; TILE_M * d];
            let mut codes = vec![0x55u8; codes_bytes(d)];
            let mut y = vec![0.0; d];
            for g in 0..TILE_M / NQ_ROWS {
                let rows = g * NQ_ROWS * d..(g + 1) * NQ_ROWS * d;
                norm_quant(
                    &x[rows.clone()],
                    Some(&r[rows.clone()]),
                    &gamma,
                    &beta,
                    1e-5,
                    &mut x_out[rows],
                    &mut codes,
                    &mut y,
                );
                scatter_group(&codes, g, &mut objects);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x_out), bits(&want.x));
            // What the host builds for the matmul today: row-major codes per depth step,
            // blocked; the scales through put_row_scale, blocked.
            let mut blocked = vec![0i8; A_BYTES];
            for t in 0..k_tiles {
                let rm: Vec<i8> = (0..TILE_M)
                    .flat_map(|m| want.codes[m * d + t * TILE_K..m * d + (t + 1) * TILE_K].to_vec())
                    .collect();
                block_a(&rm, &mut blocked);
                let got: Vec<i8> = objects[t * A_BYTES..(t + 1) * A_BYTES]
                    .iter()
                    .map(|&b| b as i8)
                    .collect();
                assert_eq!(got, blocked, "d {d} depth step {t}");
            }
            let mut rm = vec![0i8; A_BYTES];
            for m in 0..TILE_M {
                put_row_scale(&mut rm[m * TILE_K..(m + 1) * TILE_K], want.scales[m]);
            }
            block_a(&rm, &mut blocked);
            let got: Vec<i8> = objects[k_tiles * A_BYTES..]
                .iter()
                .map(|&b| b as i8)
                .collect();
            assert_eq!(got, blocked);
            assert_eq!(row_scale(&got, 5), want.scales[5]);
        }
    }

    #[test]
    fn the_plain_quantize_equals_quantize_row_bit_for_bit() {
        let mut rng = Rng(13);
        for d in [64, 1536, 2048] {
            // Edge rows (zero, -0.0, constant, outlier, huge, tiny), one with an infinity, one
            // with a NaN (its max skips it, as `max_abs` does), GELU-like rows.
            let mut x = test_rows(&mut rng, 16, d);
            x[8 * d + 5] = f32::INFINITY;
            x[9 * d + 7] = f32::NAN;
            for v in &mut x[10 * d..] {
                *v = if *v < 0.0 { *v * 0.01 } else { *v };
            }
            let rows = 16;
            let mut image = vec![0xAAu8; rows * (d + 64)];
            quant_rows(&x, rows, d, &mut image);
            let mut objects = vec![0u8; (d / TILE_K + 1) * A_BYTES];
            let mut codes = vec![0x55u8; codes_bytes(d)];
            for g in 0..rows / NQ_ROWS {
                quant(&x[g * NQ_ROWS * d..(g + 1) * NQ_ROWS * d], &mut codes);
                scatter_group(&codes, g, &mut objects);
            }
            let mut want = vec![0i8; d];
            let mut live = 0;
            for m in 0..rows {
                let scale = quantize_row(&x[m * d..(m + 1) * d], &mut want);
                live += usize::from(scale > 0.0 && want.iter().any(|&c| c.abs() == 127));
                let row = &image[m * (d + 64)..(m + 1) * (d + 64)];
                let got: Vec<i8> = row[..d].iter().map(|&b| b as i8).collect();
                assert_eq!(got, want, "d {d} row {m}");
                assert_eq!(row[d..d + 4], scale.to_le_bytes(), "d {d} row {m}");
                assert!(row[d + 4..].iter().all(|&b| b == 0));
                // The A-object runs of the kernel call hold the same codes and scale.
                let (obj, r) = (m / TILE_M, m % TILE_M);
                assert_eq!(obj, 0);
                for (k, &w) in want.iter().enumerate() {
                    let at = (k / TILE_K) * A_BYTES + a_offset(r, k % TILE_K);
                    assert_eq!(objects[at] as i8, w, "d {d} row {m} code {k}");
                }
                let scales: Vec<i8> = objects[(d / TILE_K) * A_BYTES..]
                    .iter()
                    .map(|&b| b as i8)
                    .collect();
                assert_eq!(row_scale(&scales, r).to_bits(), scale.to_bits());
            }
            // The infinite row and the zero rows quantize to scale 0; most rows are live.
            assert!(live >= 8, "d {d}: {live}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(codes_bytes(512), 9 * 256);
        assert_eq!(param_bytes(512), 4160);
        assert_eq!(param_bytes(384), 3136);
        let p = param_object(&[1.0; 64], &[2.0; 64], 1e-5);
        assert_eq!(p.len(), param_bytes(64));
        assert_eq!(&p[512..516], &1e-5f32.to_le_bytes());
    }
}
