//! Model file bytes → the loader's full validation: typed errors, no panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = amanuensis_model::weights::validate_model_bytes(data);
});
