//! The emulated device's buffer objects: host memory with the driver's address rules.
//!
//! - DEV_HEAP: one per client, ≤ 64 MiB, device address 0x4000000; its backing memory is the
//!   user's mapping (allocated at mmap with the requested alignment, as the firmware sees the
//!   heap's user VA).
//! - DEV: carved from the heap, size page-rounded, 32 KiB aligned; no mmap (`map_offset` =
//!   INVALID); `xdna_addr` = heap base + offset. Creating one needs the heap mapped (EINVAL).
//! - SHARE / CMD: anonymous host pages; `xdna_addr` = INVALID (upstream), so the device address
//!   is the mmap address, which is the backing address here.
//!
//! Non-coherent memory: SHARE BOs and the heap (so every DEV BO) have two copies, the host's
//! view (the user mapping: what the CPU caches hold) and the device's (`dram`, what DMA reads and
//! writes). They meet only in [`Memory::flush`], the model of `clflush`: a line the host changed
//! since the last flush ("dirty": it differs from the `synced` copy) is written back whole to
//! `dram`, then the host line is refilled from `dram`. A missing flush before submission leaves
//! the device reading stale data; a missing flush after completion leaves the host reading stale
//! data; a flush of a CPU-dirty output after the device wrote it overwrites the device's result
//! (F3). When the device writes a line the host holds clean, the host's copy of it becomes
//! [`STALE`] bytes ([`Memory::device_wrote`]): a stale line's contents are whatever the cache
//! held, so a host that reads it without a flush reads garbage, and a store into it is never a
//! store of the bytes it already holds (which the flush could not see: a real store dirties the
//! line whatever it writes). Limit: a store of [`STALE`] bytes into a stale line is invisible.
//! CMD BOs stay coherent: the driver, not the NPU, reads them.

use std::collections::BTreeMap;

use rustix::io::Errno;

use crate::npu::driver::{BoInfo, BoType};
use crate::npu::mapping::{self, page_round_up, MappedRange};
use crate::npu::uapi::AMDXDNA_INVALID_ADDR;

/// Device address of the heap (`AIE2_DEVM_BASE`).
pub const HEAP_DEVICE_BASE: u64 = 0x400_0000;
/// Heap size limit of this (UP-6.14-era) driver model: one heap of at most 64 MiB.
pub const HEAP_MAX: u64 = 64 << 20;
/// DEV BO alignment in the heap (`1 << dev_mem_buf_shift`).
pub const DEV_BO_ALIGN: u64 = 32 << 10;
const FAKE_OFFSET_BASE: u64 = 0x1_0000_0000;

#[derive(Debug)]
pub(super) struct EmuBo {
    pub(super) bo_type: BoType,
    pub(super) size: u64,
    /// SHARE/CMD: the pages. Heap: the user mapping once made.
    pub(super) backing: Option<MappedRange>,
    /// DEV: offset inside the heap.
    pub(super) heap_offset: u64,
    pub(super) mapped: bool,
    pub(super) closed: bool,
    /// SHARE and heap: the device's copy, and the host bytes as of the last flush.
    pub(super) dram: Option<(MappedRange, MappedRange)>,
}

/// Bytes per cache line of the coherence model.
pub const LINE: usize = 64;

/// What the host reads of a line the device wrote while the host held it clean, until the host
/// flushes it (a NaN in f32 and bf16, -1 in integers).
pub const STALE: u8 = 0xFF;

#[derive(Debug, Default)]
pub(super) struct Memory {
    next_handle: u32,
    pub(super) bos: BTreeMap<u32, EmuBo>,
    pub(super) heap: Option<u32>,
}

fn shadow(size: u64) -> Result<(MappedRange, MappedRange), Errno> {
    let dram = mapping::map_anonymous_aligned(size as usize, 0)?;
    match mapping::map_anonymous_aligned(size as usize, 0) {
        Ok(synced) => Ok((dram, synced)),
        Err(e) => {
            let _ = mapping::unmap(&dram);
            Err(e)
        }
    }
}

fn map_offset_of(handle: u32) -> u64 {
    FAKE_OFFSET_BASE + ((handle as u64) << 28)
}

impl Memory {
    pub(super) fn create(
        &mut self,
        bo_type: BoType,
        size: u64,
        unmapped_heap_errno: Errno,
    ) -> Result<u32, Errno> {
        if size == 0 {
            return Err(Errno::INVAL);
        }
        let mut bo = EmuBo {
            bo_type,
            size,
            backing: None,
            heap_offset: 0,
            mapped: false,
            closed: false,
            dram: None,
        };
        match bo_type {
            BoType::DevHeap => {
                if self.heap.is_some() {
                    return Err(Errno::BUSY);
                }
                if size > HEAP_MAX {
                    return Err(Errno::INVAL);
                }
                bo.dram = Some(shadow(size)?);
            }
            BoType::Dev => {
                let heap = self
                    .heap
                    .and_then(|h| self.bos.get(&h))
                    .ok_or(Errno::INVAL)?;
                if heap.backing.is_none() {
                    // Upstream "Invalid dev heap userptr" (EINVAL); XD "Heap is not mapped" (EAGAIN).
                    return Err(unmapped_heap_errno);
                }
                let size = page_round_up(size as usize) as u64;
                bo.size = size;
                // drm_mm_insert_node fails with ENOSPC when the heap is full.
                bo.heap_offset = self.heap_alloc(heap.size, size).ok_or(Errno::NOSPC)?;
            }
            BoType::Share => {
                bo.backing = Some(mapping::map_anonymous_aligned(size as usize, 0)?);
                bo.dram = Some(shadow(size)?);
            }
            BoType::Cmd => {
                bo.backing = Some(mapping::map_anonymous_aligned(size as usize, 0)?);
            }
        }
        self.next_handle += 1;
        let handle = self.next_handle;
        if bo_type == BoType::DevHeap {
            self.heap = Some(handle);
        }
        self.bos.insert(handle, bo);
        Ok(handle)
    }

    /// First fit over the live DEV BOs, 32 KiB aligned.
    fn heap_alloc(&self, heap_size: u64, size: u64) -> Option<u64> {
        let mut used: Vec<(u64, u64)> = self
            .bos
            .values()
            .filter(|b| b.bo_type == BoType::Dev && !b.closed)
            .map(|b| (b.heap_offset, b.size))
            .collect();
        used.sort_unstable();
        let mut at = 0u64;
        for (off, len) in used {
            if at + size <= off {
                return Some(at);
            }
            at = (off + len).next_multiple_of(DEV_BO_ALIGN);
        }
        (at + size <= heap_size).then_some(at)
    }

    fn live(&self, handle: u32) -> Result<&EmuBo, Errno> {
        self.bos
            .get(&handle)
            .filter(|b| !b.closed)
            .ok_or(Errno::NOENT)
    }

    pub(super) fn bo_type(&self, handle: u32) -> Result<BoType, Errno> {
        Ok(self.live(handle)?.bo_type)
    }

    fn heap_bo(&self) -> Option<&EmuBo> {
        self.bos.get(&self.heap?)
    }

    /// The heap mapping's address, if mapped.
    pub(super) fn heap_addr(&self) -> Option<usize> {
        self.heap_bo()?.backing.as_ref().map(|r| r.addr())
    }

    pub(super) fn info(&self, handle: u32) -> Result<BoInfo, Errno> {
        let bo = self.live(handle)?;
        let vaddr = |b: &EmuBo| {
            if b.mapped {
                b.backing.as_ref().map_or(0, |r| r.addr() as u64)
            } else {
                0
            }
        };
        Ok(match bo.bo_type {
            BoType::DevHeap => BoInfo {
                map_offset: map_offset_of(handle),
                vaddr: vaddr(bo),
                xdna_addr: HEAP_DEVICE_BASE,
            },
            BoType::Dev => BoInfo {
                map_offset: AMDXDNA_INVALID_ADDR,
                vaddr: self.heap_addr().map_or(0, |a| a as u64 + bo.heap_offset),
                xdna_addr: HEAP_DEVICE_BASE + bo.heap_offset,
            },
            BoType::Share | BoType::Cmd => BoInfo {
                map_offset: map_offset_of(handle),
                vaddr: vaddr(bo),
                xdna_addr: AMDXDNA_INVALID_ADDR,
            },
        })
    }

    pub(super) fn mmap(
        &mut self,
        map_offset: u64,
        len: usize,
        align: usize,
    ) -> Result<MappedRange, Errno> {
        let handle = self
            .bos
            .iter()
            .find(|(h, b)| {
                !b.closed && b.bo_type != BoType::Dev && map_offset_of(**h) == map_offset
            })
            .map(|(h, _)| *h)
            .ok_or(Errno::INVAL)?;
        let bo = self.bos.get_mut(&handle).expect("found above");
        if len as u64 > page_round_up(bo.size as usize) as u64 || bo.mapped {
            // One mapping per BO in this model (the runtime never maps a BO twice).
            return Err(Errno::INVAL);
        }
        if bo.bo_type == BoType::DevHeap {
            bo.backing = Some(mapping::map_anonymous_aligned(bo.size as usize, align)?);
        }
        bo.mapped = true;
        let r = bo.backing.as_ref().expect("backing exists once mapped");
        // SAFETY: the backing pages stay mapped until the BO is both unmapped and closed.
        Ok(unsafe { MappedRange::from_raw(r.ptr(), len) })
    }

    pub(super) fn munmap(&mut self, range: &MappedRange) -> Result<(), Errno> {
        let handle = self
            .bos
            .iter()
            .find(|(_, b)| b.mapped && b.backing.as_ref().is_some_and(|r| r.addr() == range.addr()))
            .map(|(h, _)| *h)
            .ok_or(Errno::INVAL)?;
        let bo = self.bos.get_mut(&handle).expect("found above");
        bo.mapped = false;
        if bo.bo_type == BoType::DevHeap {
            // The user mapping *is* the heap memory here: unmapping it loses the contents, as
            // the device would lose its view of them.
            if let Some(r) = bo.backing.take() {
                let _ = mapping::unmap(&r);
            }
        }
        self.reap(handle);
        Ok(())
    }

    pub(super) fn close(&mut self, handle: u32) -> Result<(), Errno> {
        let bo = self
            .bos
            .get_mut(&handle)
            .filter(|b| !b.closed)
            .ok_or(Errno::NOENT)?;
        if bo.bo_type == BoType::DevHeap
            && self
                .bos
                .values()
                .any(|b| b.bo_type == BoType::Dev && !b.closed)
        {
            // Upstream keeps the heap alive while DEV BOs reference it; model that as a busy
            // heap so a wrong teardown order is visible in tests.
            return Err(Errno::BUSY);
        }
        let bo = self.bos.get_mut(&handle).expect("checked");
        bo.closed = true;
        self.reap(handle);
        Ok(())
    }

    /// Drop a BO once it is closed and unmapped (GEM keeps mapped objects alive).
    fn reap(&mut self, handle: u32) {
        let done = self.bos.get(&handle).is_some_and(|b| b.closed && !b.mapped);
        if done {
            let bo = self.bos.remove(&handle).expect("present");
            if let Some(r) = bo.backing {
                let _ = mapping::unmap(&r);
            }
            if let Some((d, s)) = bo.dram {
                let _ = mapping::unmap(&d);
                let _ = mapping::unmap(&s);
            }
            if self.heap == Some(handle) {
                self.heap = None;
            }
        }
    }

    /// Host bytes behind device address `addr` up to the end of its BO: (pointer, length, handle).
    pub(super) fn resolve(&self, addr: u64) -> Option<(*mut u8, usize, u32)> {
        let heap = self.heap_bo();
        for (&h, b) in &self.bos {
            if b.closed {
                continue;
            }
            match b.bo_type {
                BoType::Dev => {
                    let base = HEAP_DEVICE_BASE + b.heap_offset;
                    if (base..base + b.size).contains(&addr) {
                        let heap = heap?;
                        heap.backing.as_ref()?; // the device reaches the heap through its mapping
                        let (dram, _) = heap.dram.as_ref()?;
                        let off = (addr - HEAP_DEVICE_BASE) as usize;
                        // SAFETY: in bounds of the heap's device copy (DEV BOs lie inside it).
                        let p = unsafe { dram.ptr().as_ptr().add(off) };
                        return Some((p, (base + b.size - addr) as usize, h));
                    }
                }
                BoType::Share => {
                    let r = b.backing.as_ref()?;
                    let (dram, _) = b.dram.as_ref()?;
                    let base = r.addr() as u64;
                    if b.mapped && (base..base + b.size).contains(&addr) {
                        let off = (addr - base) as usize;
                        // SAFETY: in bounds of the BO's device copy (same size as its pages).
                        let p = unsafe { dram.ptr().as_ptr().add(off) };
                        return Some((p, (b.size - off as u64) as usize, h));
                    }
                }
                BoType::Cmd | BoType::DevHeap => {}
            }
        }
        None
    }

    /// `clflush` of host bytes `addr..addr+len` (see the module doc). Ranges outside every
    /// non-coherent BO (CMD BOs, ordinary memory) are left alone, as a flush changes nothing
    /// there either.
    pub(super) fn flush(&self, addr: usize, len: usize) {
        if len == 0 {
            return;
        }
        for b in self.bos.values() {
            let (Some(host), Some((dram, synced))) = (b.backing.as_ref(), b.dram.as_ref()) else {
                continue;
            };
            if !b.mapped {
                continue;
            }
            let base = host.addr();
            let size = b.size as usize;
            let (start, end) = (addr.max(base), (addr + len).min(base + size));
            if start >= end {
                continue;
            }
            let first = (start - base) / LINE * LINE;
            let last = (end - base).div_ceil(LINE) * LINE;
            for line in (first..last.min(size)).step_by(LINE) {
                let n = LINE.min(size - line);
                // SAFETY: `line..line+n` is inside all three ranges (each `size` bytes, page
                // rounded). Raw copies, no references: the host may hold slices of its mapping
                // (as real DMA would change memory under them, invalidation does here).
                unsafe {
                    let h = host.ptr().as_ptr().add(line);
                    let d = dram.ptr().as_ptr().add(line);
                    let s = synced.ptr().as_ptr().add(line);
                    let dirty = (0..n).any(|i| h.add(i).read_volatile() != s.add(i).read());
                    if dirty {
                        std::ptr::copy_nonoverlapping(h, d, n);
                    }
                    std::ptr::copy_nonoverlapping(d, h, n);
                    std::ptr::copy_nonoverlapping(d, s, n);
                }
            }
        }
    }

    /// The device wrote `len` bytes at device address `addr`: every line of them the host holds
    /// clean (unchanged since its last flush) turns [`STALE`] in the host's copy (see the
    /// module doc); dirty lines stay as they are (their flush writes them over the device's
    /// bytes, F3).
    pub(super) fn device_wrote(&self, addr: u64, len: usize) {
        if len == 0 {
            return;
        }
        for b in self.bos.values() {
            let (Some(host), Some((_, synced))) = (b.backing.as_ref(), b.dram.as_ref()) else {
                continue;
            };
            if !b.mapped {
                continue;
            }
            // SHARE: the device address is the mapping's; the heap: DEV BOs' addresses.
            let base = match b.bo_type {
                BoType::Share => host.addr() as u64,
                BoType::DevHeap => HEAP_DEVICE_BASE,
                _ => continue,
            };
            let size = b.size as usize;
            let (start, end) = (addr.max(base), (addr + len as u64).min(base + size as u64));
            if start >= end {
                continue;
            }
            let first = (start - base) as usize / LINE * LINE;
            let last = ((end - base) as usize).div_ceil(LINE) * LINE;
            for line in (first..last.min(size)).step_by(LINE) {
                let n = LINE.min(size - line);
                // SAFETY: `line..line+n` is inside both ranges (each `size` bytes). Raw
                // accesses, as in `flush`.
                unsafe {
                    let h = host.ptr().as_ptr().add(line);
                    let s = synced.ptr().as_ptr().add(line);
                    let clean = (0..n).all(|i| h.add(i).read_volatile() == s.add(i).read());
                    if clean {
                        std::ptr::write_bytes(h, STALE, n);
                        std::ptr::write_bytes(s, STALE, n);
                    }
                }
            }
        }
    }

    /// The pages of a SHARE/CMD BO (mapped or not), for the firmware to read packets.
    pub(super) fn pages(&self, handle: u32) -> Option<(*mut u8, usize)> {
        let b = self.live(handle).ok()?;
        let r = b.backing.as_ref()?;
        matches!(b.bo_type, BoType::Share | BoType::Cmd)
            .then(|| (r.ptr().as_ptr(), b.size as usize))
    }

    pub(super) fn live_count(&self) -> usize {
        self.bos.values().filter(|b| !b.closed).count()
    }

    pub(super) fn mapped_count(&self) -> usize {
        self.bos.values().filter(|b| b.mapped).count()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        for (_, bo) in std::mem::take(&mut self.bos) {
            if let Some(r) = bo.backing {
                let _ = mapping::unmap(&r);
            }
            if let Some((d, s)) = bo.dram {
                let _ = mapping::unmap(&d);
                let _ = mapping::unmap(&s);
            }
        }
    }
}
