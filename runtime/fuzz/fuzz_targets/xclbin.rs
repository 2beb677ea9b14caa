//! Fuzz the xclbin parser: every entry point may reject the input, none may panic.
#![no_main]

use amanuensis_runtime::npu::xclbin::{Xclbin, MLIR_AIE_DPU_KERNEL_ID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(x) = Xclbin::parse(data) {
        if let Ok(p) = x.aie_partition() {
            let _ = p.pdi_for_kernel(MLIR_AIE_DPU_KERNEL_ID);
        }
        let _ = x.ip_layout();
        if let Ok(kernels) = x.kernels() {
            for k in kernels {
                let _ = k.regmap_words();
            }
        }
    }
});
