//! CTranslate2 `model.bin` bytes → parser and CT2 → Amanuensis mapping: typed errors, no panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weights_tools::ct2::parse(data);
    let _ = weights_tools::from_ct2::ct2_tensors(Path::new("fuzz"), data);
});
