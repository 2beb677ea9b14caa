//! Disjoint mutable parts of one slice handed to pool tasks, without `unsafe` and without
//! allocating: a fixed array of `Mutex<Option<&mut [T]>>` on the caller's stack; task `i`
//! takes part `i` once.

use std::sync::{Mutex, MutexGuard};

/// Most parts a slice can be split into (bounds the stack array: 256 × 24 bytes).
pub(crate) const MAX_PARTS: usize = 256;

/// A slice split into consecutive parts of `chunk` elements (the last may be shorter).
pub(crate) struct Parts<'a, T> {
    parts: [Mutex<Option<&'a mut [T]>>; MAX_PARTS],
    count: usize,
}

impl<'a, T> Parts<'a, T> {
    /// Splits `slice` into parts of `chunk` elements.
    ///
    /// # Panics
    /// If that makes more than [`MAX_PARTS`] parts or `chunk == 0` with a non-empty slice.
    pub(crate) fn new(slice: &'a mut [T], chunk: usize) -> Parts<'a, T> {
        let count = if slice.is_empty() {
            0
        } else {
            slice.len().div_ceil(chunk)
        };
        assert!(count <= MAX_PARTS, "Parts: {count} parts > {MAX_PARTS}");
        let mut it = slice.chunks_mut(chunk.max(1));
        let parts = std::array::from_fn(|_| Mutex::new(it.next()));
        Parts { parts, count }
    }

    /// Number of parts.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Takes part `i` (each part can be taken once).
    ///
    /// # Panics
    /// If `i >= count()` or the part was taken before.
    pub(crate) fn take(&self, i: usize) -> &'a mut [T] {
        assert!(i < self.count, "Parts::take: part {i} of {}", self.count);
        self.parts[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("Parts::take: part taken twice")
    }
}

impl<'a, T> Parts<'a, T> {
    /// Locks part `i` for use without taking it (e.g. a per-thread buffer reused by every task
    /// of that thread; uncontended when each thread locks only its own part).
    ///
    /// # Panics
    /// If `i >= count()`.
    pub(crate) fn lock(&self, i: usize) -> MutexGuard<'_, Option<&'a mut [T]>> {
        assert!(i < self.count, "Parts::lock: part {i} of {}", self.count);
        self.parts[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuPool;

    #[test]
    fn parts_cover_the_slice_once() {
        let pool = CpuPool::new(2);
        let mut data = vec![0u32; 1000];
        let parts = Parts::new(&mut data, 7);
        assert_eq!(parts.count(), 143);
        pool.run(parts.count(), |i| {
            parts.take(i).iter_mut().for_each(|x| *x += i as u32 + 1);
        });
        assert!(data
            .iter()
            .enumerate()
            .all(|(j, &x)| x == (j / 7) as u32 + 1));
        assert_eq!(Parts::<u8>::new(&mut [], 3).count(), 0);
    }
}
