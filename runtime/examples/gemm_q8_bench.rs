//! INT8 vs f32 GEMM throughput on Whisper-sized shapes, with the machine's INT8 peak estimate.
//!
//! `cargo run --release -p amanuensis-runtime --example gemm_q8_bench [clock_ghz]`
//!
//! Peak estimates per core (AVX2, no VNNI; ops = 2 per multiply-add):
//! - instruction peak: 2 × 256-bit `vpmaddubsw` per cycle × 32 multiply-adds = 64 MAC/cycle;
//! - ceiling of the kernel used here: 2 `vpmaddwd` per cycle × 16 MAC = 32 MAC/cycle (the
//!   `vpmaddubsw` sign trick would need 3 multiply-pipe ops per 32 MAC: 21 MAC/cycle).
//!
//! The clock defaults to 3.5 GHz, measured on the development VM with a dependent chain of
//! integer adds (3.2-3.5 GHz; /proc/cpuinfo shows the nominal 2.6 GHz); pass another value as
//! the first argument.

use amanuensis_runtime::cpu::{gemm_bt, CpuPool, Epilogue};
use amanuensis_runtime::q8::{gemm_q8, Q8Scratch, QuantMatrix};
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
        .map_or(3.5, |arg| arg.parse().expect("clock in GHz"))
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
    let peak_core = 64.0 * 2.0 * ghz; // G ops/s per core, vpmaddubsw peak
    let kernel_core = 32.0 * 2.0 * ghz; // vpmaddwd ceiling of this kernel
    println!(
        "INT8 peak per core at {ghz:.2} GHz: 2 vpmaddubsw/cycle × 32 MAC × 2 ops = {peak_core:.0} GOPS; \
         this kernel's vpmaddwd ceiling 2 × 16 MAC × 2 ops = {kernel_core:.0} GOPS"
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
            println!(
                "m={m:5} k={k:5} n={n:6} threads={threads}: int8 {:8.3} ms {g8:6.1} GOPS ({:4.1}% of peak, {:4.1}% of kernel ceiling) | f32 gemm_bt {:8.3} ms {:6.1} GFLOP/s | int8/f32 speed-up {:.2}x",
                t8 * 1e3,
                100.0 * g8 / (peak_core * threads as f64),
                100.0 * g8 / (kernel_core * threads as f64),
                t32 * 1e3,
                ops / t32 / 1e9,
                t32 / t8
            );
        }
    }
}
