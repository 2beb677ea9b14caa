//! Whisper's convolution stem in INT8: im2col in f32 (as [`crate::cpu::conv1d_k3`]), then the
//! INT8 GEMM. The im2col rows (`3·c_in` values per output step) are quantized per row like any
//! activation, so the stem costs the same as a linear layer of that shape.

use super::gemm::{gemm_q8, Q8Scratch};
use super::layout::QuantMatrix;
use crate::cpu::conv::im2col;
use crate::cpu::{conv1d_k3_out_len, CpuPool, Epilogue};

/// `out[t, co] = epilogue(bias[co] + Σ_{ci, tap} w[co, ci·3 + tap] · x[t·stride + tap - 1, ci])`
/// with `x` zero outside `0..t_in`; `w` is the `[c_out, c_in·3]` weight quantized per output
/// channel. `cols` (f32 im2col) and `q8` are grown on first use and reused.
///
/// # Panics
/// If a slice length does not match the shape, `w.k()` is not a multiple of 3, or `stride`
/// is 0.
#[allow(clippy::too_many_arguments)] // mirrors cpu::conv1d_k3
pub fn conv1d_k3_q8(
    pool: &CpuPool,
    x: &[f32],
    t_in: usize,
    w: &QuantMatrix,
    bias: &[f32],
    stride: usize,
    epilogue: Epilogue,
    cols: &mut Vec<f32>,
    q8: &mut Q8Scratch,
    out: &mut [f32],
) {
    let k = w.k();
    assert_eq!(k % 3, 0, "conv1d_k3_q8: weight columns {k} not c_in·3");
    let c_in = k / 3;
    let t_out = conv1d_k3_out_len(t_in, stride);
    assert_eq!(x.len(), t_in * c_in, "conv1d_k3_q8: x is not t_in·c_in");
    assert_eq!(bias.len(), w.n_out(), "conv1d_k3_q8: bias is not c_out");
    assert_eq!(
        out.len(),
        t_out * w.n_out(),
        "conv1d_k3_q8: out is not t_out·c_out"
    );
    // im2col and GEMM a chunk of output rows at a time: the f32 column buffer holds
    // CHUNK_ROWS · 3·c_in values, not t_out · 3·c_in (9 MB for base's second conv). Rows are
    // independent (activations quantize per row), so the result is the same.
    let chunk = CHUNK_ROWS.min(t_out).max(1);
    if cols.len() < chunk * k {
        cols.resize(chunk * k, 0.0);
    }
    let n = w.n_out();
    for t0 in (0..t_out).step_by(chunk) {
        let m = chunk.min(t_out - t0);
        let rows = &mut cols[..m * k];
        im2col(pool, x, t_in, c_in, stride, t0..t0 + m, rows);
        let out = &mut out[t0 * n..(t0 + m) * n];
        gemm_q8(pool, rows, m, w, Some(bias), epilogue, q8, out);
    }
}

/// Output rows per im2col + GEMM round.
const CHUNK_ROWS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv1d_k3;
    use crate::cpu::testing::Rng;

    #[test]
    fn int8_conv_is_close_to_f32_conv() {
        let mut rng = Rng::new(51);
        let pool = CpuPool::new(2);
        let (mut cols, mut q8, mut f32_scratch) = (Vec::new(), Q8Scratch::new(), Vec::new());
        for (t_in, c_in, c_out, stride) in [
            (1, 1, 1, 1),
            (9, 4, 7, 1),
            (64, 80, 70, 1),
            (65, 70, 33, 2),
            (701, 8, 5, 1),
            (1201, 6, 4, 2),
        ] {
            let x = rng.vec(t_in * c_in, 1.0);
            let wf = rng.vec(c_out * c_in * 3, 0.3);
            let bias = rng.vec(c_out, 0.1);
            let w = QuantMatrix::quantize(&wf, c_out, c_in * 3);
            let t_out = conv1d_k3_out_len(t_in, stride);
            let mut got = vec![f32::NAN; t_out * c_out];
            let mut want = vec![f32::NAN; t_out * c_out];
            conv1d_k3_q8(
                &pool,
                &x,
                t_in,
                &w,
                &bias,
                stride,
                Epilogue::Gelu,
                &mut cols,
                &mut q8,
                &mut got,
            );
            conv1d_k3(
                &pool,
                &x,
                t_in,
                c_in,
                &wf,
                &bias,
                c_out,
                stride,
                Epilogue::Gelu,
                &mut f32_scratch,
                &mut want,
            );
            // Same error model as the GEMM test (≈ 7.4e-3/√k of Σ|x·w| rms): with
            // Σ|x·w| ≈ 3·c_in·0.5·0.15 and GELU's slope ≤ 1.13, 1e-2·(Σ|x·w| + 0.1) is a
            // safe bound for every element; an im2col indexing error is O(Σ|x·w|).
            let scale = 3.0 * c_in as f32 * 0.5 * 0.15 + 0.1;
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-2 * scale,
                    "{t_in} {c_in} {c_out} {stride}: {g} vs {w}"
                );
            }
        }
    }
}
