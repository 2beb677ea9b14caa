//! Buffers allocated once and touched when allocated (model working buffers, packed K/V).
//!
//! A large `vec![0.0; n]` is mapped lazily by the OS: every 4 KiB page faults on its first
//! write, which would otherwise happen inside the first use (for a model: its first encoder
//! window and decoded tokens). Touching each page here moves that cost to allocation time.
//!
//! Large buffers ([`Buffer::resident`]) go further: they are mapped 2 MiB-aligned and marked
//! for transparent huge pages (`madvise(MADV_HUGEPAGE)`, Linux), so a 2 MiB stretch costs one
//! fault instead of 512. On the 2-vCPU Zen 4 VM this was measured on (Linux 6.18, THP
//! `madvise` mode), a 4 KiB fault costs 4–9 µs (most of a session's creation time) and
//! touching 16 MiB took 37 ms in 4 KiB pages against 1.6 ms in huge pages. Where huge pages
//! are off or unavailable, the same code falls back to 4 KiB pages (the advice is a hint).

use std::ops::{Deref, DerefMut};

/// A zeroed buffer of `len` values whose pages are all resident.
pub fn zeroed<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v = vec![T::default(); len];
    touch(&mut v);
    v
}

/// Writes a zero (default) value per 4 KiB page of the zeroed `v`, so every page is resident.
/// A write only: reading first would map the shared zero page, then fault again on the write.
fn touch<T: Copy + Default>(v: &mut [T]) {
    let per_page = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for x in v.iter_mut().step_by(per_page) {
        // black_box: the store must happen even though the value is already zero.
        *x = std::hint::black_box(T::default());
    }
}

/// Bytes of a transparent huge page (x86-64; aarch64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// A working buffer of `T` (f32 by default): a plain heap vector, or for a resident buffer of
/// at least half a huge page an anonymous map 2 MiB-aligned with huge pages advised. Derefs to
/// `[T]`.
pub struct Buffer<T: bytemuck::Pod + Default = f32> {
    store: Store<T>,
}

enum Store<T> {
    Heap(Vec<T>),
    /// `len` values from byte `offset` of `map` (2 MiB-aligned).
    Huge {
        map: memmap2::MmapMut,
        offset: usize,
        len: usize,
    },
}

impl<T: bytemuck::Pod + Default> Default for Buffer<T> {
    fn default() -> Self {
        Buffer {
            store: Store::Heap(Vec::new()),
        }
    }
}

impl<T: bytemuck::Pod + Default> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("huge", &self.is_huge())
            .finish()
    }
}

impl<T: bytemuck::Pod + Default> Buffer<T> {
    /// `len` zeros, mapped lazily (each page on its first write).
    pub fn lazy(len: usize) -> Buffer<T> {
        Buffer {
            store: Store::Heap(vec![T::default(); len]),
        }
    }

    /// `len` zeros, every page resident: in huge pages when the buffer is at least half a huge
    /// page (whole huge pages cover it, and a last partial one when at least half of it is
    /// used: at most 1 MiB resident beyond the buffer), else a heap vector touched page by page.
    pub fn resident(len: usize) -> Buffer<T> {
        let bytes = len * std::mem::size_of::<T>();
        if bytes >= HUGE_PAGE / 2 {
            if let Some(b) = Self::huge(len) {
                return b;
            }
        }
        Buffer {
            store: Store::Heap(zeroed(len)),
        }
    }

    fn huge(len: usize) -> Option<Buffer<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let whole = bytes / HUGE_PAGE * HUGE_PAGE;
        let huge_bytes = if bytes - whole >= HUGE_PAGE / 2 {
            whole + HUGE_PAGE
        } else {
            whole
        };
        // Room to align the start to a huge page.
        let map_len = huge_bytes.max(bytes).checked_add(HUGE_PAGE)?;
        // Anonymous memory is zero and owned by this value alone.
        let map = memmap2::MmapMut::map_anon(map_len).ok()?;
        let offset = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
        #[cfg(target_os = "linux")]
        if huge_bytes > 0 {
            // A hint: without THP the pages stay 4 KiB, which is only slower.
            let _ = map.advise_range(memmap2::Advice::HugePage, offset, huge_bytes);
        }
        let mut b = Buffer {
            store: Store::Huge { map, offset, len },
        };
        touch(&mut b);
        Some(b)
    }

    /// Whether the buffer lives in a huge-page-advised map.
    pub fn is_huge(&self) -> bool {
        matches!(self.store, Store::Huge { .. })
    }
}

impl<T: bytemuck::Pod + Default> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.store {
            Store::Heap(v) => v,
            Store::Huge { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + len * std::mem::size_of::<T>()])
            }
        }
    }
}

impl<T: bytemuck::Pod + Default> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.store {
            Store::Heap(v) => v,
            Store::Huge { map, offset, len } => bytemuck::cast_slice_mut(
                &mut map[*offset..*offset + *len * std::mem::size_of::<T>()],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_zero_and_sized() {
        let v: Vec<f32> = zeroed(10_000);
        assert_eq!(v.len(), 10_000);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(zeroed::<u32>(0).is_empty());
    }

    #[test]
    fn buffers_of_every_size_are_zero_writable_and_sized() {
        // Around the half-huge-page switch, whole huge pages, and a partial last one on either
        // side of half.
        let quarter = HUGE_PAGE / 4 / 4; // values in a quarter of a huge page
        for len in [
            0,
            1,
            1000,
            2 * quarter - 1,
            2 * quarter,
            4 * quarter,
            5 * quarter + 3,
            7 * quarter,
            12 * quarter,
        ] {
            for mut b in [Buffer::<f32>::resident(len), Buffer::lazy(len)] {
                assert_eq!(b.len(), len);
                assert!(b.iter().all(|&x| x == 0.0), "{len}");
                for (i, x) in b.iter_mut().enumerate() {
                    *x = i as f32;
                }
                assert!(b.iter().enumerate().all(|(i, &x)| x == i as f32));
                if let Store::Huge { map, offset, .. } = &b.store {
                    assert_eq!((map.as_ptr() as usize + offset) % HUGE_PAGE, 0);
                }
            }
            assert_eq!(
                Buffer::<f32>::resident(len).is_huge(),
                len >= 2 * quarter,
                "{len}"
            );
        }
        assert!(Buffer::<f32>::default().is_empty());
        let mut words = Buffer::<u32>::resident(3 * quarter);
        assert!(words.is_huge() && words.iter().all(|&w| w == 0));
        words[3 * quarter - 1] = 7;
        assert_eq!(words[3 * quarter - 1], 7);
    }
}
