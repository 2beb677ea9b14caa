//! Fuzzes the TXN instruction-stream validator (run before every submission): any words and any
//! argument sizes must give a plan or a typed error, never a panic, and an accepted stream's
//! DMA tasks must stay inside the buffers they name.
#![no_main]

use amanuensis_runtime::npu::txn::{check, validate, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: argument count (0-7) and whether the partition's columns are known; then one
    // u32 length per argument; the rest is the stream.
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n_args = (head & 7) as usize;
    if rest.len() < n_args * 4 {
        return;
    }
    let (lens, words) = rest.split_at(n_args * 4);
    let arg_lens: Vec<u64> = lens
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .collect();
    let words: Vec<u32> = words
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let limits = Limits {
        arg_lens: &arg_lens,
        partition_cols: (head & 8 != 0).then_some(1 + (head >> 4)),
    };
    if let Ok(plan) = validate(&words, &limits) {
        for task in &plan.tasks {
            if let Some(&len) = arg_lens.get(task.arg_idx) {
                assert!(task.offset <= len, "task offset past its buffer");
            }
        }
    }
    let _ = check(&words, &limits);
});
