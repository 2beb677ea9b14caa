//! The device heap and the DEV BOs carved from it (npu-driver.md §2.3, §2.6, §5 steps 3 and 6).
//!
//! One 64 MiB DEV_HEAP BO per device fd, mapped at a 64 MiB-aligned address for its whole life.
//! A DEV BO has no mapping of its own: its CPU address is `heap_va + (xdna_addr − heap_xdna)`.
//! Owners hold an `Arc<Heap>`, so the heap is unmapped and closed only after every DEV BO.

use std::sync::Arc;

use super::device::Device;
use super::driver::{release, retry_eintr, BoType, Driver};
use super::error::{ioctl_err, NpuError, Result};
use super::mapping::MappedRange;
use super::uapi::AMDXDNA_INVALID_ADDR;

/// Heap size (`AIE2_DEVM_SIZE`) and the alignment of its mapping.
pub const HEAP_SIZE: usize = 64 << 20;

/// The device heap: DEV_HEAP BO + its 64 MiB-aligned mapping.
pub struct Heap {
    driver: Arc<dyn Driver>,
    handle: u32,
    map: Option<MappedRange>,
    xdna_addr: u64,
}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heap")
            .field("handle", &self.handle)
            .field("cpu_addr", &format_args!("{:#x}", self.cpu_addr()))
            .field("xdna_addr", &format_args!("{:#x}", self.xdna_addr))
            .finish()
    }
}

impl Heap {
    /// CREATE_BO(DEV_HEAP, 64 MiB) → GET_BO_INFO → mmap at a 64 MiB-aligned address.
    pub fn create(device: &Device) -> Result<Arc<Self>> {
        let driver = device.driver().clone();
        let handle = retry_eintr(|| driver.create_bo(BoType::DevHeap, HEAP_SIZE as u64))
            .map_err(ioctl_err("CREATE_BO(DEV_HEAP)"))?;
        // From here on, Drop closes the handle on any early return.
        let mut heap = Self {
            driver,
            handle,
            map: None,
            xdna_addr: AMDXDNA_INVALID_ADDR,
        };
        let info =
            retry_eintr(|| heap.driver.bo_info(handle)).map_err(ioctl_err("GET_BO_INFO(heap)"))?;
        if info.map_offset == AMDXDNA_INVALID_ADDR || info.xdna_addr == AMDXDNA_INVALID_ADDR {
            return Err(NpuError::Protocol {
                what: format!("heap BO info without map offset or device address: {info:?}"),
            });
        }
        heap.xdna_addr = info.xdna_addr;
        let map = retry_eintr(|| heap.driver.mmap(info.map_offset, HEAP_SIZE, HEAP_SIZE))
            .map_err(ioctl_err("mmap(heap)"))?;
        if map.addr() % HEAP_SIZE != 0 || map.len() < HEAP_SIZE {
            let what = format!(
                "heap mapped at {:#x}+{:#x}, not 64 MiB aligned",
                map.addr(),
                map.len()
            );
            let _ = release(|| heap.driver.munmap(&map));
            return Err(NpuError::Protocol { what });
        }
        heap.map = Some(map);
        Ok(Arc::new(heap))
    }

    /// Device address of the heap's first byte (0x4000000 on aie2).
    pub fn device_addr(&self) -> u64 {
        self.xdna_addr
    }

    /// CPU address of the heap's first byte.
    pub fn cpu_addr(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.addr())
    }

    fn mapping(&self) -> &MappedRange {
        self.map
            .as_ref()
            .expect("a Heap handed out is always mapped")
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // munmap before GEM_CLOSE (npu-driver.md §2.9). Errors cannot be reported from Drop; the
        // kernel releases everything when the fd closes in any case.
        if let Some(m) = self.map.take() {
            let _ = release(|| self.driver.munmap(&m));
        }
        let _ = release(|| self.driver.gem_close(self.handle));
    }
}

/// A BO carved from the heap (instruction streams, PDIs).
pub struct DevBo {
    heap: Arc<Heap>,
    handle: u32,
    len: usize,
    offset: usize,
    xdna_addr: u64,
}

impl std::fmt::Debug for DevBo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevBo")
            .field("handle", &self.handle)
            .field("len", &self.len)
            .field("xdna_addr", &format_args!("{:#x}", self.xdna_addr))
            .finish()
    }
}

impl DevBo {
    /// CREATE_BO(DEV, len) → GET_BO_INFO → check the address lies inside the heap.
    pub fn create(heap: &Arc<Heap>, len: usize) -> Result<Self> {
        if len == 0 || len > HEAP_SIZE {
            return Err(NpuError::InvalidRequest {
                what: format!("DEV BO of {len} bytes (heap is {HEAP_SIZE})"),
            });
        }
        let driver = &heap.driver;
        let handle = retry_eintr(|| driver.create_bo(BoType::Dev, len as u64))
            .map_err(ioctl_err("CREATE_BO(DEV)"))?;
        let mut bo = Self {
            heap: heap.clone(),
            handle,
            len,
            offset: 0,
            xdna_addr: AMDXDNA_INVALID_ADDR,
        };
        let info = retry_eintr(|| driver.bo_info(handle)).map_err(ioctl_err("GET_BO_INFO(DEV)"))?;
        let offset = info.xdna_addr.checked_sub(heap.xdna_addr);
        match offset {
            Some(off) if off.checked_add(len as u64).is_some_and(|end| end <= HEAP_SIZE as u64) => {
                bo.offset = off as usize;
                bo.xdna_addr = info.xdna_addr;
                Ok(bo)
            }
            _ => Err(NpuError::Protocol {
                what: format!(
                    "DEV BO {handle} at device address {:#x}+{len:#x} is outside the heap {:#x}+{HEAP_SIZE:#x}",
                    info.xdna_addr, heap.xdna_addr
                ),
            }),
        }
    }

    /// GEM handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Device address.
    pub fn device_addr(&self) -> u64 {
        self.xdna_addr
    }

    /// CPU address: heap VA + (xdna_addr − heap xdna_addr).
    pub fn cpu_addr(&self) -> usize {
        self.heap.cpu_addr() + self.offset
    }

    /// Length in bytes (as requested; the driver rounds the allocation up to a page).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the BO is empty (never: creation refuses 0 bytes).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: offset+len lies inside the heap mapping (checked at creation); the driver
        // never hands out overlapping DEV BOs, so no other DevBo aliases these bytes, and `&self`
        // excludes a concurrent `bytes_mut`.
        unsafe { self.heap.mapping().bytes(self.offset, self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { self.heap.mapping().bytes_mut(self.offset, self.len) }
    }

    /// Flush `range` of the BO (write back + invalidate) for or after device access.
    pub fn flush(&self, range: std::ops::Range<usize>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "{range:?} of {}",
            self.len
        );
        let p = self.heap.mapping().ptr().as_ptr();
        // SAFETY: offset + range lies inside the heap's live mapping (checked at creation and
        // asserted here).
        unsafe {
            self.heap
                .driver
                .cache_flush(p.add(self.offset + range.start), range.len())
        }
    }
}

impl Drop for DevBo {
    fn drop(&mut self) {
        let _ = release(|| self.heap.driver.gem_close(self.handle));
    }
}
