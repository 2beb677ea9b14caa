//! Whisper's convolution stem: 1-D convolution with kernel 3, padding 1, stride 1 or 2,
//! time-major (`[time, channels]`) input and output, computed as im2col + [`gemm_bt`].

use super::gemm::{gemm_bt, Epilogue};
use super::pool::{CpuPool, DisjointSlice};

/// Output length of [`conv1d_k3`]: `(t_in + 2·1 - 3) / stride + 1`.
///
/// # Panics
/// If `t_in == 0` or `stride == 0`.
pub fn conv1d_k3_out_len(t_in: usize, stride: usize) -> usize {
    assert!(
        t_in > 0 && stride > 0,
        "conv1d_k3: empty input or zero stride"
    );
    (t_in - 1) / stride + 1
}

/// Length of the im2col scratch [`conv1d_k3`] uses: `t_out · c_in · 3`.
pub fn conv1d_k3_scratch_len(t_in: usize, c_in: usize, stride: usize) -> usize {
    conv1d_k3_out_len(t_in, stride) * c_in * 3
}

/// Fills `cols` with the im2col rows `rows` of a kernel-3, padding-1 convolution:
/// `cols[t - rows.start, ci·3 + tap] = x[t·stride + tap - 1, ci]` (zero outside `0..t_in`),
/// matching a `[c_out, c_in, 3]` weight's `[ci, tap]` inner layout; blocks of rows in parallel.
///
/// # Panics
/// If `cols` is not `rows.len() · c_in · 3` long or `x` is shorter than `t_in · c_in`.
pub(crate) fn im2col(
    pool: &CpuPool,
    x: &[f32],
    t_in: usize,
    c_in: usize,
    stride: usize,
    rows: std::ops::Range<usize>,
    cols: &mut [f32],
) {
    let k = c_in * 3;
    assert_eq!(
        cols.len(),
        rows.len() * k,
        "im2col: cols is not rows·c_in·3"
    );
    assert!(
        x.len() >= t_in * c_in,
        "im2col: x is shorter than t_in·c_in"
    );
    const ROWS_PER_TASK: usize = 64;
    let first = rows.start;
    let cols_view = DisjointSlice::new(cols);
    pool.run(rows.len().div_ceil(ROWS_PER_TASK), |task| {
        let local = task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(rows.len());
        // SAFETY: each task fills its own rows of the im2col matrix.
        let block = unsafe { cols_view.range(local.start * k..local.end * k) };
        for (t, row) in (first + local.start..first + local.end).zip(block.chunks_exact_mut(k)) {
            for tap in 0..3 {
                match (t * stride + tap).checked_sub(1).filter(|&s| s < t_in) {
                    Some(s) => {
                        for (ci, &v) in x[s * c_in..(s + 1) * c_in].iter().enumerate() {
                            row[ci * 3 + tap] = v;
                        }
                    }
                    None => (0..c_in).for_each(|ci| row[ci * 3 + tap] = 0.0),
                }
            }
        }
    });
}

/// `out[t, co] = epilogue(bias[co] + Σ_{ci, tap} w[co, ci, tap] · x[t·stride + tap - 1, ci])`,
/// with `x` zero outside `0..t_in`.
///
/// `x`: `[t_in, c_in]`; `w`: `[c_out, c_in, 3]` (PyTorch's Conv1d layout); `out`:
/// `[t_out, c_out]` with `t_out = conv1d_k3_out_len(t_in, stride)`. `scratch` is grown to
/// [`conv1d_k3_scratch_len`] on first use and reused afterwards.
///
/// # Panics
/// If a slice length does not match the shape, or `stride` is 0.
#[allow(clippy::too_many_arguments)] // mirrors the layer's parameters one to one
pub fn conv1d_k3(
    pool: &CpuPool,
    x: &[f32],
    t_in: usize,
    c_in: usize,
    w: &[f32],
    bias: &[f32],
    c_out: usize,
    stride: usize,
    epilogue: Epilogue,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let t_out = conv1d_k3_out_len(t_in, stride);
    assert_eq!(x.len(), t_in * c_in, "conv1d_k3: x is not t_in·c_in");
    assert_eq!(
        w.len(),
        c_out * c_in * 3,
        "conv1d_k3: w is not c_out·c_in·3"
    );
    assert_eq!(bias.len(), c_out, "conv1d_k3: bias is not c_out");
    assert_eq!(
        out.len(),
        t_out * c_out,
        "conv1d_k3: out is not t_out·c_out"
    );
    let k = c_in * 3;
    if scratch.len() < t_out * k {
        scratch.resize(t_out * k, 0.0);
    }
    let cols = &mut scratch[..t_out * k];
    im2col(pool, x, t_in, c_in, stride, 0..t_out, cols);
    let cols = &scratch[..t_out * k];
    gemm_bt(pool, cols, t_out, k, w, c_out, Some(bias), epilogue, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::activation::reference::gelu_f64;
    use crate::cpu::testing::Rng;

    #[test]
    fn conv_matches_direct_f64() {
        let mut rng = Rng::new(6);
        let pool = CpuPool::new(2);
        let mut scratch = Vec::new();
        for (t_in, c_in, c_out, stride) in [
            (1, 1, 1, 1),
            (1, 3, 2, 2),
            (2, 5, 3, 2),
            (9, 4, 7, 1),
            (10, 80, 24, 1),
            (11, 24, 17, 2),
            (64, 40, 33, 2),
            (150, 8, 5, 1),  // several im2col tasks of 64 rows
            (301, 6, 20, 2), // odd length, stride 2, packed gemm path
        ] {
            for epilogue in [Epilogue::Store, Epilogue::Gelu] {
                let x = rng.vec(t_in * c_in, 1.0);
                let w = rng.vec(c_out * c_in * 3, 1.0);
                let bias = rng.vec(c_out, 1.0);
                let t_out = conv1d_k3_out_len(t_in, stride);
                let mut out = vec![f32::NAN; t_out * c_out];
                conv1d_k3(
                    &pool,
                    &x,
                    t_in,
                    c_in,
                    &w,
                    &bias,
                    c_out,
                    stride,
                    epilogue,
                    &mut scratch,
                    &mut out,
                );
                for t in 0..t_out {
                    for co in 0..c_out {
                        let (mut s, mut abs) = (bias[co] as f64, bias[co].abs() as f64);
                        for ci in 0..c_in {
                            for tap in 0..3 {
                                let pos = (t * stride + tap) as isize - 1;
                                if pos >= 0 && (pos as usize) < t_in {
                                    let p = w[(co * c_in + ci) * 3 + tap] as f64
                                        * x[pos as usize * c_in + ci] as f64;
                                    s += p;
                                    abs += p.abs();
                                }
                            }
                        }
                        let want = if epilogue == Epilogue::Gelu {
                            gelu_f64(s)
                        } else {
                            s
                        };
                        let got = out[t * c_out + co] as f64;
                        // Same bound as gemm: 1e-5·√k·Σ|terms| (+ GELU's 1e-7·(1+|x|)).
                        let tol = 1e-5 * ((3 * c_in) as f64).sqrt() * abs + 1e-7 * (1.0 + s.abs());
                        assert!(
                            (got - want).abs() <= tol,
                            "t_in={t_in} c_in={c_in} c_out={c_out} stride={stride} [{t},{co}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn out_len_matches_whisper() {
        assert_eq!(conv1d_k3_out_len(3000, 1), 3000);
        assert_eq!(conv1d_k3_out_len(3000, 2), 1500);
        assert_eq!(conv1d_k3_out_len(3001, 2), 1501);
    }
}
