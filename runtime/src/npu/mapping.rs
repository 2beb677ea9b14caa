//! Memory mappings: the only `mmap`/`munmap` calls of the NPU layer.
//!
//! [`MappedRange`] is a plain description (pointer + length) handed between the driver trait and
//! the RAII owners in `heap.rs`/`bo.rs`; it does not unmap on drop by itself — its owner returns
//! it to the driver that created it, which knows how to undo it.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

/// A mapped, readable and writable range of process memory.
#[derive(Debug, PartialEq, Eq)]
pub struct MappedRange {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a MappedRange is an address range, not a reference; the owners that dereference it
// (heap/BO types) enforce exclusive access through `&mut self`.
unsafe impl Send for MappedRange {}
// SAFETY: as above; shared references only expose the address and length.
unsafe impl Sync for MappedRange {}

impl MappedRange {
    /// Describe an existing mapping.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be mapped readable and writable for as long as the value lives.
    pub(crate) unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Start pointer.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never, for ranges made here).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `offset..offset+len` of the range, read-only. Panics on an out-of-range request.
    ///
    /// # Safety
    /// No live mutable reference may alias those bytes for the returned lifetime.
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds of a live mapping (constructor contract); aliasing is the caller's.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    /// The bytes `offset..offset+len` of the range. Panics on an out-of-range request (callers
    /// check bounds first and report typed errors).
    ///
    /// # Safety
    /// No other live reference (including device DMA in progress) may alias those bytes for the
    /// returned lifetime.
    // Device-shared memory: exclusivity is the caller's contract (see # Safety), not `&mut self`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds of a live RW mapping (constructor contract); aliasing is the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) }
    }
}

fn page_size() -> usize {
    rustix::param::page_size()
}

/// Round `len` up to a multiple of the page size.
pub fn page_round_up(len: usize) -> usize {
    let p = page_size();
    len.div_ceil(p) * p
}

/// Reserve `len` bytes of address space at an `align`-aligned address (`align` a power of two ≥
/// the page size): map `len + align` bytes, then trim the unaligned head and the tail.
fn reserve_aligned(len: usize, align: usize, prot: ProtFlags) -> Result<NonNull<u8>, Errno> {
    let align = align.max(page_size());
    if !align.is_power_of_two() || len == 0 {
        return Err(Errno::INVAL);
    }
    let total = len.checked_add(align).ok_or(Errno::NOMEM)?;
    // SAFETY: a fresh private anonymous mapping at an address the kernel chooses; touches no
    // existing memory.
    let base = unsafe { mmap_anonymous(std::ptr::null_mut(), total, prot, MapFlags::PRIVATE) }?;
    let base = base as usize;
    let aligned = (base + align - 1) & !(align - 1);
    let head = aligned - base;
    let tail = total - head - len;
    // SAFETY: the head and tail ranges are parts of the mapping we just created and nothing
    // refers to them.
    unsafe {
        if head > 0 {
            munmap(base as *mut _, head)?;
        }
        if tail > 0 {
            munmap((aligned + len) as *mut _, tail)?;
        }
    }
    NonNull::new(aligned as *mut u8).ok_or(Errno::NOMEM)
}

/// A zeroed, private, read-write anonymous mapping of `len` bytes at an `align`-aligned address.
pub fn map_anonymous_aligned(len: usize, align: usize) -> Result<MappedRange, Errno> {
    let len = page_round_up(len);
    let ptr = reserve_aligned(len, align, ProtFlags::READ | ProtFlags::WRITE)?;
    // SAFETY: just mapped RW for `len` bytes; owned by the returned value's owner.
    Ok(unsafe { MappedRange::from_raw(ptr, len) })
}

/// `mmap(aligned, len, RW, MAP_SHARED|MAP_FIXED, fd, offset)` at an `align`-aligned address
/// reserved first (the XRT heap recipe, npu-driver.md §2.3 and §5 step 3).
pub fn map_fd_aligned(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: usize,
    align: usize,
) -> Result<MappedRange, Errno> {
    let len = page_round_up(len);
    let at = reserve_aligned(len, align, ProtFlags::empty())?;
    // SAFETY: MAP_FIXED replaces exactly the reservation we own (`at..at+len`), nothing else.
    let res = unsafe {
        mmap(
            at.as_ptr().cast(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::FIXED,
            fd,
            offset,
        )
    };
    match res {
        // SAFETY: mapped RW for `len` bytes at `p` (== `at`).
        Ok(p) => {
            Ok(unsafe { MappedRange::from_raw(NonNull::new(p.cast()).ok_or(Errno::NOMEM)?, len) })
        }
        Err(e) => {
            // SAFETY: release our own reservation.
            let _ = unsafe { munmap(at.as_ptr().cast(), len) };
            Err(e)
        }
    }
}

/// Unmap a range made by this module.
pub fn unmap(range: &MappedRange) -> Result<(), Errno> {
    // SAFETY: `range` came from one of the functions above and its owner unmaps it once (and
    // forgets it after success), so it is a whole mapping we own and nothing references it any
    // more.
    unsafe { munmap(range.ptr.as_ptr().cast(), range.len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_mapping_is_aligned_zeroed_and_writable() {
        const MIB64: usize = 64 << 20;
        let r = map_anonymous_aligned(MIB64, MIB64).unwrap();
        assert_eq!(r.addr() % MIB64, 0);
        assert_eq!(r.len(), MIB64);
        // SAFETY: we own the fresh mapping exclusively.
        let b = unsafe { r.bytes_mut(MIB64 - 4096, 4096) };
        assert!(b.iter().all(|&x| x == 0));
        b[4095] = 7;
        unmap(&r).unwrap();
    }

    #[test]
    fn bad_alignment_is_einval() {
        assert_eq!(
            map_anonymous_aligned(4096, 3 << 20).unwrap_err(),
            Errno::INVAL
        );
    }
}
