//! `CpuInt8Backend` hot paths allocate nothing after warm-up: a counting global allocator
//! (this file is its own test binary, so the allocator sees only this test).

use amanuensis_runtime::backend::{AttentionShape, Epilogue, LayerKernels};
use amanuensis_runtime::cpu_int8_backend::CpuInt8Backend;
use amanuensis_runtime::stage::KeyValueCacheSpec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts every allocation and reallocation made by any thread.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// One test (not two) so no other test thread allocates while this one counts.
#[test]
fn int8_linear_conv_attention_allocate_nothing_after_warm_up() {
    for int8_attention in [true, false] {
        check(CpuInt8Backend::new(2).with_int8_attention(int8_attention));
    }
    // Encoder-sized attention calls on the packed f32 kernel (the default without AVX-512 BF16)
    // and on the reference f32 kernel.
    for packed in [true, false] {
        check(
            CpuInt8Backend::new(2)
                .with_bf16_attention(false)
                .with_packed_attention(packed),
        );
    }
    // Self-attention caches in bf16 (and f32): writes, attention over a slot, slot copies.
    for bf16 in [true, false] {
        check(CpuInt8Backend::new(2).with_bf16_self_key_values(bf16));
    }
    // bf16 caches attended in f32 (attention_bf16_kv).
    check(CpuInt8Backend::new(2).with_bf16_self_key_values_f32_arithmetic(true));
}

fn check(backend: CpuInt8Backend) {
    let (k, n) = (200, 300);
    let mut s = backend.scratch(2);
    let w = backend.matrix(values(n * k, 1), n, k);
    let bias = values(n, 2);
    let max_rows = 40;
    let x = values(max_rows * k, 3);
    let mut out = vec![0.0; max_rows * n];
    // Warm-up: the size hint, then one call (only the hint covers every smaller row count).
    backend.reserve_linear(&mut s, max_rows, &w);
    backend.linear(
        &mut s,
        &x,
        max_rows,
        &w,
        Some(&bias),
        Epilogue::Gelu,
        &mut out,
    );

    let (c_in, t_in) = (16, 50);
    let cw = backend.matrix(values(24 * c_in * 3, 4), 24, c_in * 3);
    let cb = values(24, 5);
    let xc = values(t_in * c_in, 6);
    let mut conv_out = vec![0.0; 25 * 24];
    backend.conv1d_k3(
        &mut s,
        &xc,
        t_in,
        &cw,
        &cb,
        2,
        Epilogue::Gelu,
        &mut conv_out,
    );

    let shape = AttentionShape {
        heads: 2,
        head_dim: 64,
        q_len: 32,
        kv_len: 48,
        causal_offset: None,
    };
    let mut attn_scratch = vec![0.0; backend.reserve_attention(&mut s, &shape)];
    let qkv = values(48 * 128, 7);
    let mut attn_out = vec![0.0; 32 * 128];

    let ids = [5u32, 0, 299];
    let mut gathered = vec![0.0; 3 * k];

    let spec = KeyValueCacheSpec {
        name: "self k/v",
        heads: 2,
        head_dim: 64,
        slots: 3,
        positions: 48,
    };
    let mut cache = backend.key_value_cache(&spec);
    let cache_shape = AttentionShape {
        q_len: 32,
        kv_len: 48,
        causal_offset: Some(16),
        ..shape
    };
    let mut cache_scratch = vec![0.0; backend.reserve_cache_attention(&mut s, &cache_shape)];

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..3 {
        for rows in [1, 2, 3, 4, 5, 16, 17, 33, max_rows] {
            for epilogue in [Epilogue::Store, Epilogue::Gelu, Epilogue::AddInto] {
                backend.linear(
                    &mut s,
                    &x[..rows * k],
                    rows,
                    &w,
                    Some(&bias),
                    epilogue,
                    &mut out[..rows * n],
                );
            }
        }
        backend.conv1d_k3(
            &mut s,
            &xc,
            t_in,
            &cw,
            &cb,
            2,
            Epilogue::Gelu,
            &mut conv_out,
        );
        backend.attention(
            &mut s,
            &shape,
            &qkv[..32 * 128],
            &qkv,
            &qkv,
            &mut attn_scratch,
            &mut attn_out,
        );
        // A smaller (decoder-like, f32 path) and a causal INT8 call fit the same buffers.
        let small = AttentionShape { q_len: 1, ..shape };
        backend.attention(
            &mut s,
            &small,
            &qkv[..128],
            &qkv,
            &qkv,
            &mut attn_scratch,
            &mut attn_out[..128],
        );
        let causal = AttentionShape {
            q_len: 20,
            kv_len: 40,
            causal_offset: Some(20),
            ..shape
        };
        backend.attention(
            &mut s,
            &causal,
            &qkv[..20 * 128],
            &qkv[..40 * 128],
            &qkv[..40 * 128],
            &mut attn_scratch,
            &mut attn_out[..20 * 128],
        );
        backend.gather_rows(&w, &ids, &mut gathered);
        // A 20-row prompt into slot 0, forks into slots 1 and 2, then one row per slot and
        // position to the end of the cache.
        backend.cache_write(&mut cache, 0, 0, &qkv[..20 * 128], &qkv[..20 * 128]);
        let prompt = AttentionShape {
            q_len: 20,
            kv_len: 20,
            causal_offset: Some(0),
            ..shape
        };
        backend.cache_attention(
            &mut s,
            &prompt,
            &qkv[..20 * 128],
            &cache,
            0,
            &mut cache_scratch,
            &mut attn_out[..20 * 128],
        );
        backend.cache_copy_slot(&mut cache, 0, 1, 20);
        backend.cache_copy_slot(&mut cache, 0, 2, 20);
        for pos in 20..48 {
            for slot in [1, 2] {
                let row = &qkv[pos * 128..(pos + 1) * 128];
                backend.cache_write(&mut cache, slot, pos, row, row);
                let step = AttentionShape {
                    q_len: 1,
                    kv_len: pos + 1,
                    causal_offset: Some(pos),
                    ..shape
                };
                backend.cache_attention(
                    &mut s,
                    &step,
                    row,
                    &cache,
                    slot,
                    &mut cache_scratch,
                    &mut attn_out[..128],
                );
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations after warm-up");
    assert!(out.iter().all(|v| v.is_finite()));
}
