//! Buffers allocated once and touched when allocated (model working buffers, packed K/V).
//!
//! A large `vec![0.0; n]` is mapped lazily by the OS: every 4 KiB page faults on its first
//! write, which would otherwise happen inside the first use (for a model: its first encoder
//! window and decoded tokens). Touching each page here moves that cost to allocation time.

/// A zeroed buffer of `len` values whose pages are all resident.
pub fn zeroed<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v = vec![T::default(); len];
    let per_page = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for x in v.iter_mut().step_by(per_page) {
        // black_box: the store must happen even though the value is already zero.
        *x = std::hint::black_box(T::default());
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_is_zero_and_sized() {
        let v: Vec<f32> = super::zeroed(10_000);
        assert_eq!(v.len(), 10_000);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(super::zeroed::<u32>(0).is_empty());
    }
}
