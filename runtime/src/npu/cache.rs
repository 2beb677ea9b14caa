//! User-space cache maintenance. The NPU is not cache coherent: the host flushes a range before
//! the device reads it and again before reading what the device wrote (XRT's `clflush_data`,
//! npu-driver.md §2.6). `clflush` writes back and invalidates, so one function serves both
//! directions.

/// Cache line size used to step through a range (x86_64).
pub const CACHE_LINE: usize = 64;

/// Write back and invalidate every cache line of `bytes`, fenced on both sides.
pub fn flush(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_clflush, _mm_mfence};
        if bytes.is_empty() {
            return;
        }
        let start = bytes.as_ptr() as usize & !(CACHE_LINE - 1);
        let end = bytes.as_ptr() as usize + bytes.len();
        // SAFETY: clflush and mfence are baseline x86_64 instructions (SSE2). Every address
        // flushed lies in a cache line that overlaps `bytes`, which is mapped; clflush does not
        // modify memory contents.
        unsafe {
            _mm_mfence();
            let mut line = start;
            while line < end {
                _mm_clflush(line as *const u8);
                line += CACHE_LINE;
            }
            _mm_mfence();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No amdxdna device exists off x86_64; keep the ordering guarantee only.
        let _ = bytes;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_keeps_contents_for_any_alignment_and_length() {
        let mut v: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let copy = v.clone();
        for start in [0, 1, 63, 64, 65] {
            for len in [0, 1, 63, 64, 65, 900] {
                flush(&v[start..start + len]);
            }
        }
        v[999] ^= 0;
        assert_eq!(v, copy);
    }
}
