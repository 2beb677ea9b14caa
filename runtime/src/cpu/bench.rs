//! Throughput measurements, run by hand (never asserted):
//! `cargo test -p amanuensis-runtime --lib cpu::bench -- --ignored --nocapture --test-threads=1`
//! (add `--release` for numbers without debug assertions).

use super::gemm::{gemm_bt, gemm_packed, Epilogue};
use super::packed::PackedWeights;
use super::pool::CpuPool;
use super::testing::Rng;
use std::time::Instant;

/// Minimum wall time of runs of `f` over about `budget` seconds (at least 3 runs), in seconds.
/// The machine is shared, so the minimum is the least noisy statistic.
fn min_time(budget: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: caches, page faults, pool wake-up
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

#[test]
#[ignore = "timing only; run by hand with --ignored --nocapture"]
fn gemm_throughput() {
    let mut rng = Rng::new(42);
    let shapes = [
        (1500, 384, 1536),
        (1500, 1536, 384),
        (1500, 384, 1152),
        (1, 384, 51_864),
        (4, 384, 51_864),
        (1, 384, 1536),
        (4, 384, 1536),
        (1, 384, 384),
        (3, 1536, 384),
    ];
    for (m, k, n) in shapes {
        let a = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 1.0);
        let bias = rng.vec(n, 1.0);
        let mut out = vec![0.0; m * n];
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            let packed = PackedWeights::new(&pool, &w, n, k);
            let flop = 2.0 * (m * n * k) as f64;
            let t = min_time(1.0, || {
                gemm_bt(
                    &pool,
                    &a,
                    m,
                    k,
                    &w,
                    n,
                    Some(&bias),
                    Epilogue::Store,
                    &mut out,
                )
            });
            let tp = min_time(1.0, || {
                gemm_packed(
                    &pool,
                    &a,
                    m,
                    &packed,
                    Some(&bias),
                    Epilogue::Store,
                    &mut out,
                )
            });
            println!(
                "m={m:5} k={k:5} n={n:6} threads={threads}: gemm_bt {:8.3} ms {:6.1} GFLOP/s | gemm_packed {:8.3} ms {:6.1} GFLOP/s",
                t * 1e3,
                flop / t / 1e9,
                tp * 1e3,
                flop / tp / 1e9
            );
        }
    }
}

#[test]
#[ignore = "timing only; run by hand with --ignored --nocapture"]
fn gelu_epilogue_and_attention_throughput() {
    use super::attention::{attention, attention_scratch_len, AttentionShape};
    let mut rng = Rng::new(44);
    let (m, k, n) = (1500, 384, 1536);
    let a = rng.vec(m * k, 1.0);
    let w = rng.vec(n * k, 1.0);
    let mut out = vec![0.0; m * n];
    for threads in [1, 2] {
        let pool = CpuPool::new(threads);
        let packed = PackedWeights::new(&pool, &w, n, k);
        for epilogue in [Epilogue::Store, Epilogue::Gelu] {
            let t = min_time(1.0, || {
                gemm_packed(&pool, &a, m, &packed, None, epilogue, &mut out)
            });
            println!(
                "gemm_packed 1500x384x1536 {epilogue:?} threads={threads}: {:.3} ms",
                t * 1e3
            );
        }
        for (q_len, kv_len, causal_offset) in
            [(1500, 1500, None), (1, 1500, None), (4, 224, Some(220))]
        {
            let shape = AttentionShape {
                heads: 6,
                head_dim: 64,
                q_len,
                kv_len,
                causal_offset,
            };
            let q = rng.vec(q_len * 384, 1.0);
            let kk = rng.vec(kv_len * 384, 1.0);
            let v = rng.vec(kv_len * 384, 1.0);
            let mut scratch = vec![0.0; attention_scratch_len(&pool, &shape)];
            let mut o = vec![0.0; q_len * 384];
            let t = min_time(1.0, || {
                attention(&pool, &shape, &q, &kk, &v, &mut scratch, &mut o)
            });
            let flop = 4.0 * (6 * 64 * q_len * kv_len) as f64;
            println!(
                "attention q={q_len} kv={kv_len} threads={threads}: {:.3} ms {:.1} GFLOP/s",
                t * 1e3,
                flop / t / 1e9
            );
            use super::attention_packed::{attention_packed, attention_packed_scratch_len};
            let mut scratch = vec![0.0; attention_packed_scratch_len(&pool, &shape)];
            let tk = min_time(1.0, || {
                attention_packed(&pool, &shape, &q, &kk, &v, &mut scratch, &mut o)
            });
            println!(
                "attention_packed q={q_len} kv={kv_len} threads={threads}: {:.3} ms {:.1} GFLOP/s (packing included)",
                tk * 1e3,
                flop / tk / 1e9
            );
            use super::attention_bf16::{attention_bf16, attention_bf16_scratch_len};
            let mut kv = super::Bf16KeyValues::new(6, 64, kv_len);
            let tp = min_time(1.0, || kv.pack(&pool, &kk, &v));
            let mut scratch = vec![0.0; attention_bf16_scratch_len(&pool, &shape)];
            let tb = min_time(1.0, || {
                attention_bf16(&pool, &shape, &q, &kv, &mut scratch, &mut o)
            });
            println!(
                "attention_bf16 q={q_len} kv={kv_len} threads={threads}: pack {:.3} ms + {:.3} ms {:.1} GFLOP/s",
                tp * 1e3,
                tb * 1e3,
                flop / tb / 1e9
            );
        }
    }
}

#[test]
#[ignore = "timing only"]
fn softmax_rows_throughput() {
    let mut rng = Rng::new(45);
    let mut rows = rng.vec(9000 * 1500, 5.0);
    let t = min_time(1.0, || {
        for r in rows.chunks_exact_mut(1500) {
            super::softmax::softmax_in_place(r);
        }
    });
    println!("softmax 9000 rows x 1500: {:.3} ms", t * 1e3);
}

#[test]
#[ignore = "timing only; run by hand with --ignored --nocapture"]
fn conv_stem_throughput() {
    use super::conv::{conv1d_k3, conv1d_k3_out_len};
    let mut rng = Rng::new(46);
    for (t_in, c_in, c_out, stride) in [(3000, 80, 384, 1), (3000, 384, 384, 2)] {
        let x = rng.vec(t_in * c_in, 1.0);
        let w = rng.vec(c_out * c_in * 3, 1.0);
        let bias = rng.vec(c_out, 1.0);
        let t_out = conv1d_k3_out_len(t_in, stride);
        let mut out = vec![0.0; t_out * c_out];
        let mut scratch = Vec::new();
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            let t = min_time(1.0, || {
                conv1d_k3(
                    &pool,
                    &x,
                    t_in,
                    c_in,
                    &w,
                    &bias,
                    c_out,
                    stride,
                    Epilogue::Gelu,
                    &mut scratch,
                    &mut out,
                )
            });
            let flop = 2.0 * (t_out * c_out * c_in * 3) as f64;
            println!(
                "conv1d_k3 t_in={t_in} c_in={c_in} c_out={c_out} stride={stride} threads={threads}: {:.3} ms {:.1} GFLOP/s",
                t * 1e3,
                flop / t / 1e9
            );
        }
    }
}

/// One decoder self-attention call over a key/value cache slot, f32 against bf16 storage
/// (attended in bf16, and in f32 by `attention_bf16_kv`): heads × 64, one query row (greedy)
/// at several cache lengths.
#[test]
#[ignore = "timing only; run by hand with --ignored --nocapture"]
fn cache_attention_f32_vs_bf16() {
    use super::attention::{attention_scratch_len, AttentionShape};
    use super::attention_bf16::attention_bf16_scratch_len;
    use super::kv_cache::{Bf16KeyValueCache, F32KeyValueCache};
    let mut rng = Rng::new(7);
    for heads in [6, 8] {
        let (d, positions) = (64, 448);
        let w = heads * d;
        let k = rng.vec(positions * w, 1.0);
        let v = rng.vec(positions * w, 1.0);
        let q = rng.vec(w, 1.0);
        let mut f = F32KeyValueCache::new(1, positions, w);
        let mut b = Bf16KeyValueCache::new(1, positions, heads, d);
        let mut bk = Bf16KeyValueCache::new(1, positions, heads, d).with_f32_arithmetic(true);
        f.write(0, 0, &k, &v);
        b.write(0, 0, &k, &v);
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            for kv_len in [16, 64, 200, 448] {
                let shape = AttentionShape {
                    heads,
                    head_dim: d,
                    q_len: 1,
                    kv_len,
                    causal_offset: Some(kv_len - 1),
                };
                b.write(0, 0, &k[..kv_len * w], &v[..kv_len * w]);
                bk.write(0, 0, &k[..kv_len * w], &v[..kv_len * w]);
                let mut scratch = vec![
                    0.0;
                    attention_scratch_len(&pool, &shape)
                        .max(attention_bf16_scratch_len(&pool, &shape))
                        .max(
                            super::attention_bf16_kv::attention_bf16_kv_scratch_len(&pool, &shape)
                        )
                ];
                let mut out = vec![0.0; w];
                let tf = min_time(0.3, || {
                    f.attention(&pool, &shape, &q, 0, &mut scratch, &mut out)
                });
                let tb = min_time(0.3, || {
                    b.attention(&pool, &shape, &q, 0, &mut scratch, &mut out)
                });
                let tk = min_time(0.3, || {
                    bk.attention(&pool, &shape, &q, 0, &mut scratch, &mut out)
                });
                println!(
                    "heads={heads} kv_len={kv_len:3} threads={threads}: f32 {:6.1} µs, bf16 {:6.1} µs, bf16 K/V f32 Q/P {:6.1} µs",
                    tf * 1e6,
                    tb * 1e6,
                    tk * 1e6
                );
            }
        }
    }
}

/// The encoder's self-attention (6 heads × 64, 1500 × 1500): the reference f32 kernel against
/// the packed one, alternating in rounds (min over rounds: the machine is shared).
#[test]
#[ignore = "timing only; run by hand with --ignored --nocapture"]
fn encoder_attention_reference_vs_packed() {
    use super::attention::{attention, attention_scratch_len, AttentionShape};
    use super::attention_packed::{attention_packed, attention_packed_scratch_len};
    let mut rng = Rng::new(47);
    let shape = AttentionShape {
        heads: 6,
        head_dim: 64,
        q_len: 1500,
        kv_len: 1500,
        causal_offset: None,
    };
    let q = rng.vec(1500 * 384, 1.0);
    let k = rng.vec(1500 * 384, 1.0);
    let v = rng.vec(1500 * 384, 1.0);
    let mut o = vec![0.0; 1500 * 384];
    for threads in [1, 2] {
        let pool = CpuPool::new(threads);
        let mut s1 = vec![0.0; attention_scratch_len(&pool, &shape)];
        let mut s2 = vec![0.0; attention_packed_scratch_len(&pool, &shape)];
        let (mut reference, mut packed) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..8 {
            reference = reference.min(min_time(0.3, || {
                attention(&pool, &shape, &q, &k, &v, &mut s1, &mut o)
            }));
            packed = packed.min(min_time(0.3, || {
                attention_packed(&pool, &shape, &q, &k, &v, &mut s2, &mut o)
            }));
        }
        println!(
            "encoder attention threads={threads}: reference {:.2} ms, packed {:.2} ms (packing included): {:.2}×",
            reference * 1e3,
            packed * 1e3,
            reference / packed
        );
    }
}
