//! Buffers allocated once and touched when allocated (model working buffers, packed K/V).
//!
//! A large `vec![0.0; n]` is mapped lazily by the OS: every 4 KiB page faults on its first
//! write, which would otherwise happen inside the first use (for a model: its first encoder
//! window and decoded tokens). Touching each page here moves that cost to allocation time.
//!
//! Large buffers ([`Buffer::resident`]) go further: they are mapped 2 MiB-aligned, marked for
//! transparent huge pages (`madvise(MADV_HUGEPAGE)`, Linux) and faulted in by the kernel in one
//! call (`MADV_POPULATE_WRITE`, Linux 5.14; else a write per page), so a 2 MiB stretch costs
//! one fault instead of 512. Where huge pages are off or unavailable, the same code falls back
//! to 4 KiB pages (the advice is a hint).
//!
//! # Cold huge pages (virtual machines with free page reporting)
//!
//! A guest whose balloon device reports free memory to the host (virtio-balloon free page
//! reporting, Firecracker and QEMU VMs; `page_reporting_order` 9 = 2 MiB) hands every free
//! 2 MiB block back to the host a few seconds after it is freed; the next use of that block
//! makes the host fault its backing in again, 4 KiB at a time. The kernel keeps reported blocks
//! at the tail of its free lists, so a huge page comes from memory freed moments ago (by this
//! program's last run, say) while there is some, and from reported memory after that. Measured
//! on the 2-vCPU Zen 4 VM (Linux 6.18, THP `madvise`): a 2 MiB huge page faults in 0.17 ms when
//! recently freed and 4.4–4.6 ms when reported ("cold"), while 4 KiB pages (taken from the
//! small free fragments the kernel never reports) cost 0.6–0.9 ms per 2 MiB when populated.
//! Which of the two a process got varied from run to run, which made a tiny.en load take
//! either ~16 or ~50–100 ms.
//!
//! So the first huge page a process maps is a probe: when faulting it in takes longer than
//! [`COLD_HUGE_PAGE`] (several times a recently freed huge page, under a third of a cold one),
//! huge pages are taken as cold and later buffers are populated in 4 KiB pages
//! (`MADV_NOHUGEPAGE`), until a huge buffer is dropped (its pages are then recently freed
//! memory, and the next huge buffer probes again). A wrong guess (the probe preempted) costs only the
//! difference between the two page sizes; the contents and sizes of buffers never depend on it.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Faulting in one huge page slower than this marks huge pages cold for the process (see the
/// module docs: 0.17 ms recently freed, 4.4 ms cold on the VM measured).
pub const COLD_HUGE_PAGE: Duration = Duration::from_micros(1500);

/// Whether a huge page of this process took longer than [`COLD_HUGE_PAGE`] to fault in.
static HUGE_PAGES_COLD: AtomicBool = AtomicBool::new(false);

/// Whether huge pages were found cold (later buffers use 4 KiB pages) since a huge buffer was
/// last dropped.
pub fn huge_pages_cold() -> bool {
    HUGE_PAGES_COLD.load(Ordering::Relaxed)
}

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
        let mut b = Buffer {
            store: Store::Huge { map, offset, len },
        };
        // Populating part of a huge-page-advised stretch faults in the whole huge page.
        b.populate(offset, bytes, huge_bytes, &HUGE_PAGES_COLD);
        Some(b)
    }

    /// Makes `bytes` of the map from `offset` resident, the first `huge_bytes` of them in huge
    /// pages unless huge pages were found `cold` (the first huge page mapped while not `cold`
    /// probes it, and sets `cold` when it was slower than [`COLD_HUGE_PAGE`]).
    fn populate(&mut self, offset: usize, bytes: usize, huge_bytes: usize, cold: &AtomicBool) {
        let Store::Huge { map, .. } = &mut self.store else {
            return;
        };
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut done = 0;
        #[cfg(target_os = "linux")]
        if huge_bytes > 0 {
            use memmap2::Advice;
            // Advice is a hint: a refusal leaves 4 KiB pages, which are only slower.
            if cold.load(Ordering::Relaxed) {
                let _ = map.advise_range(Advice::NoHugePage, offset, huge_bytes);
            } else {
                let _ = map.advise_range(Advice::HugePage, offset, huge_bytes);
                let t = std::time::Instant::now();
                if map
                    .advise_range(Advice::PopulateWrite, offset, HUGE_PAGE)
                    .is_ok()
                {
                    done = HUGE_PAGE;
                    if t.elapsed() > COLD_HUGE_PAGE {
                        cold.store(true, Ordering::Relaxed);
                        if huge_bytes > HUGE_PAGE {
                            let _ = map.advise_range(
                                Advice::NoHugePage,
                                offset + HUGE_PAGE,
                                huge_bytes - HUGE_PAGE,
                            );
                        }
                    }
                }
            }
            if done >= bytes
                || map
                    .advise_range(Advice::PopulateWrite, offset + done, bytes - done)
                    .is_ok()
            {
                return;
            }
        }
        let _ = (huge_bytes, cold);
        // No populate (older kernel, other OS): a write per page.
        touch(&mut map[offset + done..offset + bytes]);
    }

    /// Whether the buffer lives in its own 2 MiB-aligned map (huge pages advised, unless
    /// [`huge_pages_cold`]).
    pub fn is_huge(&self) -> bool {
        matches!(self.store, Store::Huge { .. })
    }
}

impl<T: bytemuck::Pod + Default> Drop for Buffer<T> {
    fn drop(&mut self) {
        // The huge pages this frees are recently freed memory, which the next huge buffer of
        // the process likely gets: probe again rather than stay on 4 KiB pages.
        if self.is_huge() {
            HUGE_PAGES_COLD.store(false, Ordering::Relaxed);
        }
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
        // After huge pages were found cold: the same buffers, in 4 KiB pages.
        let cold = AtomicBool::new(true);
        for len in [2 * quarter, 5 * quarter + 3, 12 * quarter] {
            let bytes = len * 4;
            let mut b = Buffer::<f32> {
                store: Store::Huge {
                    map: memmap2::MmapMut::map_anon(bytes + HUGE_PAGE).unwrap(),
                    offset: 0,
                    len,
                },
            };
            b.populate(0, bytes, bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE, &cold);
            assert!(b.iter().all(|&x| x == 0.0), "{len}");
            b[len - 1] = 3.0;
            assert_eq!(b[len - 1], 3.0);
            assert!(cold.load(Ordering::Relaxed));
        }
        let mut words = Buffer::<u32>::resident(3 * quarter);
        assert!(words.is_huge() && words.iter().all(|&w| w == 0));
        words[3 * quarter - 1] = 7;
        assert_eq!(words[3 * quarter - 1], 7);
    }
}
