//! The TXN decoder and the shim-DMA replay on arbitrary words: a result or a typed error,
//! never a panic, a hang or an unbounded allocation.
#![no_main]

use amanuensis_aie::program::replay::run_shim;
use amanuensis_aie::txn::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = parse(&words);
    let (a, b, c) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
    let _ = run_shim(&words, &[&a, &b, &c]);
});
