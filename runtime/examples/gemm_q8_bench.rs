//! INT8 vs f32 GEMM throughput on Whisper-sized shapes, with the machine's INT8 peak estimate.
//!
//! `cargo run --release -p amanuensis-runtime --example gemm_q8_bench [clock_ghz]`
//!
//! Peak per core (ops = 2 per multiply-add): 2 × 256-bit `vpdpbusd` (AVX-512 VNNI) or
//! `vpmaddubsw` (AVX2) per cycle × 32 multiply-adds = 64 MAC/cycle. The AVX2 fallback kernel
//! (`vpmaddwd` on i16) tops out at half of that, 32 MAC/cycle.
//!
//! The clock defaults to 3.7 GHz: the L1-resident `vpdpbusd` micro-benchmark on the development
//! machine (Zen 4 EPYC VM) saturates at 236 G MAC/s = 64 MAC/cycle × 3.69 GHz, and a dependent
//! add chain measured 3.2-3.5 GHz under load (/proc/cpuinfo shows the nominal 2.6 GHz). Pass
//! another value as the first argument.

use amanuensis_runtime::cpu::{gemm_bt, CpuPool, Epilogue};
use amanuensis_runtime::q8::{gemm_q8, gemm_q8_with, Isa, Q8Scratch, QuantMatrix};
use std::time::Instant;

/// Minimum wall time over about `budget` seconds (at least 3 runs): the least noisy statistic
/// on a shared machine.
fn min_time(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

fn clock_ghz() -> f64 {
    std::env::args()
        .nth(1)
        .map_or(3.7, |arg| arg.parse().expect("clock in GHz"))
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn main() {
    let ghz = clock_ghz();
    let isa = Isa::detect();
    let peak_core = 64.0 * 2.0 * ghz; // G ops/s per core
    let kernel_core = match format!("{isa:?}").as_str() {
        "Avx512Vnni" | "AvxVnni" => peak_core,
        "Avx2" => peak_core / 2.0,
        _ => f64::NAN,
    };
    println!(
        "kernel {isa:?}; INT8 peak per core at {ghz:.2} GHz: 2 × 32 MAC × 2 ops = {peak_core:.0} GOPS; \
         this kernel's ceiling {kernel_core:.0} GOPS"
    );
    for (m, k, n) in [(1500, 384, 1536), (1500, 1536, 384), (1, 384, 51_864)] {
        let x = values(m * k, 1);
        let wf = values(n * k, 2);
        let bias = values(n, 3);
        let w = QuantMatrix::quantize(&wf, n, k);
        let mut out = vec![0.0; m * n];
        let mut scratch = Q8Scratch::new();
        let ops = 2.0 * (m * n * k) as f64;
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            let t8 = min_time(1.5, || {
                gemm_q8(
                    &pool,
                    &x,
                    m,
                    &w,
                    Some(&bias),
                    Epilogue::Store,
                    &mut scratch,
                    &mut out,
                )
            });
            // The AVX2 (vpmaddwd) fallback on the same data, when the detected kernel is VNNI.
            let t_avx2 = Isa::available()
                .into_iter()
                .find(|i| format!("{i:?}") == "Avx2" && *i != isa)
                .map(|avx2| {
                    min_time(1.0, || {
                        gemm_q8_with(
                            avx2,
                            &pool,
                            &x,
                            m,
                            &w,
                            Some(&bias),
                            Epilogue::Store,
                            &mut scratch,
                            &mut out,
                        )
                    })
                });
            let t32 = min_time(1.5, || {
                gemm_bt(
                    &pool,
                    &x,
                    m,
                    k,
                    &wf,
                    n,
                    Some(&bias),
                    Epilogue::Store,
                    &mut out,
                )
            });
            let g8 = ops / t8 / 1e9;
            // The same GEMM with the GELU epilogue (the encoder's fc1): its extra cost.
            let t_gelu = min_time(1.0, || {
                gemm_q8(
                    &pool,
                    &x,
                    m,
                    &w,
                    Some(&bias),
                    Epilogue::Gelu,
                    &mut scratch,
                    &mut out,
                )
            });
            println!(
                "m={m:5} k={k:5} n={n:6} threads={threads}: int8 with GELU epilogue {:8.3} ms (+{:.3} ms)",
                t_gelu * 1e3,
                (t_gelu - t8) * 1e3
            );
            println!(
                "m={m:5} k={k:5} n={n:6} threads={threads}: int8 {:8.3} ms {g8:6.1} GOPS ({:4.1}% of peak) | f32 gemm_bt {:8.3} ms {:6.1} GFLOP/s | int8/f32 speed-up {:.2}x{}",
                t8 * 1e3,
                100.0 * g8 / (peak_core * threads as f64),
                t32 * 1e3,
                ops / t32 / 1e9,
                t32 / t8,
                t_avx2.map_or(String::new(), |t| format!(
                    " | AVX2 fallback {:.3} ms {:.1} GOPS",
                    t * 1e3,
                    ops / t / 1e9
                ))
            );
        }
    }
}
