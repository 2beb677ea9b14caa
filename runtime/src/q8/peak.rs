//! The machine's INT8 multiply-accumulate peak, measured rather than looked up: every pool
//! thread runs twelve independent register-only `vpdpbusd` chains (256-bit EVEX, the
//! instruction the VNNI GEMM uses: 32 multiply-accumulates each), long enough that the clock
//! settles; the rate is total MACs over wall time. It is the ceiling the GEMMs are compared to
//! in `amanuensis bench` (no loads, no quantization, no epilogue: unreachable by a real GEMM).

use super::gemm::gemm_q8;
use super::layout::QuantMatrix;
use super::Q8Scratch;
use crate::cpu::{CpuPool, Epilogue};
use std::time::Instant;

/// MACs of one loop iteration: 12 `vpdpbusd` × 8 lanes × 4 byte products.
#[cfg(target_arch = "x86_64")]
const MACS_PER_ITER: f64 = 12.0 * 32.0;

/// Measured INT8 peak of `pool` in GMAC/s (`iters` loop iterations per thread; 2·10⁶ take
/// ~5 ms on a 2.6 GHz Zen 4), or `None` without AVX-512 VNNI + VL.
pub fn vnni_peak_gmacs(pool: &CpuPool, iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")) {
            return None;
        }
        // One untimed round to wake the threads and the vector units.
        pool.run(pool.threads(), |_| {
            // SAFETY: AVX-512 VNNI + VL checked above.
            unsafe { vpdpbusd_chains(iters / 10 + 1) }
        });
        let t = Instant::now();
        pool.run(pool.threads(), |_| {
            // SAFETY: as above.
            unsafe { vpdpbusd_chains(iters) }
        });
        let secs = t.elapsed().as_secs_f64();
        Some(pool.threads() as f64 * iters as f64 * MACS_PER_ITER / secs / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pool, iters);
        None
    }
}

/// Achieved rate of the INT8 GEMM on `[m, k] × [n, k]ᵀ` (random data, store epilogue), best
/// of `reps` calls, in GMAC/s.
pub fn gemm_q8_gmacs(pool: &CpuPool, m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
    let w = QuantMatrix::quantize(&w, n, k);
    let mut scratch = Q8Scratch::new();
    scratch.reserve(m, &w);
    let mut out = vec![0.0; m * n];
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        gemm_q8(
            pool,
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
    (m * k * n) as f64 / best / 1e9
}

/// `iters` rounds of twelve independent `vpdpbusd ymm` (registers only).
///
/// # Safety
/// The CPU must support AVX-512 VNNI and AVX-512 VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vpdpbusd_chains(iters: u64) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    let a = _mm256_set1_epi8(3);
    let b = _mm256_set1_epi8(-2);
    let z = _mm256_setzero_si256();
    let mut acc = [z; 12];
    // SAFETY: register-only loop; the caller guarantees the CPU features; `n` counts down to 0.
    unsafe {
        asm!(
            "2:",
            "vpdpbusd {a0}, {x}, {y}",
            "vpdpbusd {a1}, {x}, {y}",
            "vpdpbusd {a2}, {x}, {y}",
            "vpdpbusd {a3}, {x}, {y}",
            "vpdpbusd {a4}, {x}, {y}",
            "vpdpbusd {a5}, {x}, {y}",
            "vpdpbusd {a6}, {x}, {y}",
            "vpdpbusd {a7}, {x}, {y}",
            "vpdpbusd {a8}, {x}, {y}",
            "vpdpbusd {a9}, {x}, {y}",
            "vpdpbusd {a10}, {x}, {y}",
            "vpdpbusd {a11}, {x}, {y}",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters.max(1) => _,
            x = in(ymm_reg) a,
            y = in(ymm_reg) b,
            a0 = inout(ymm_reg) acc[0],
            a1 = inout(ymm_reg) acc[1],
            a2 = inout(ymm_reg) acc[2],
            a3 = inout(ymm_reg) acc[3],
            a4 = inout(ymm_reg) acc[4],
            a5 = inout(ymm_reg) acc[5],
            a6 = inout(ymm_reg) acc[6],
            a7 = inout(ymm_reg) acc[7],
            a8 = inout(ymm_reg) acc[8],
            a9 = inout(ymm_reg) acc[9],
            a10 = inout(ymm_reg) acc[10],
            a11 = inout(ymm_reg) acc[11],
            options(nomem, nostack),
        );
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_and_gemm_rates_are_finite_and_positive() {
        // Rates only (timings are not pass/fail); this runs both paths once.
        let pool = CpuPool::new(2);
        let gemm = gemm_q8_gmacs(&pool, 64, 128, 128, 2);
        assert!(gemm.is_finite() && gemm > 0.0);
        if let Some(peak) = vnni_peak_gmacs(&pool, 20_000) {
            assert!(peak.is_finite() && peak > 0.0);
        }
    }
}
