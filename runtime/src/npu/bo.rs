//! Mapped BOs outside the heap: SHARE (data buffers) and CMD (command packets)
//! (npu-driver.md §2.6, §5 steps 9 and 10).
//!
//! Creation: CREATE_BO → GET_BO_INFO → mmap(map_offset) → GET_BO_INFO again; the device address
//! is `xdna_addr` when the driver reports one, else the mapping address (upstream reports none
//! for SHARE/CMD; in PASID mode the firmware uses the user VA). Drop: munmap, then GEM_CLOSE.

use std::sync::Arc;

use super::device::Device;
use super::driver::{release, retry_eintr, BoType, Driver};
use super::error::{ioctl_err, NpuError, Result};
use super::mapping::MappedRange;
use super::uapi::AMDXDNA_INVALID_ADDR;

/// Size of the command BOs we create (XRT's exec BO cache uses 4096).
pub const CMD_BO_SIZE: usize = 4096;

/// A SHARE or CMD BO with its CPU mapping.
pub struct MappedBo {
    driver: Arc<dyn Driver>,
    bo_type: BoType,
    handle: u32,
    map: Option<MappedRange>,
    len: usize,
    device_addr: u64,
}

impl std::fmt::Debug for MappedBo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedBo")
            .field("type", &self.bo_type)
            .field("handle", &self.handle)
            .field("len", &self.len)
            .field("device_addr", &format_args!("{:#x}", self.device_addr))
            .finish()
    }
}

impl MappedBo {
    /// Create and map a SHARE BO of `len` bytes, flushed once (fresh pages may hold dirty lines).
    pub fn share(device: &Device, len: usize) -> Result<Self> {
        let bo = Self::create(device, BoType::Share, len)?;
        bo.flush(0..len);
        Ok(bo)
    }

    /// Create and map a CMD BO of [`CMD_BO_SIZE`] bytes.
    pub fn command(device: &Device) -> Result<Self> {
        Self::create(device, BoType::Cmd, CMD_BO_SIZE)
    }

    fn create(device: &Device, bo_type: BoType, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(NpuError::InvalidRequest {
                what: format!("{bo_type:?} BO of 0 bytes"),
            });
        }
        let driver = device.driver().clone();
        let handle = retry_eintr(|| driver.create_bo(bo_type, len as u64))
            .map_err(ioctl_err("CREATE_BO"))?;
        let mut bo = Self {
            driver,
            bo_type,
            handle,
            map: None,
            len,
            device_addr: AMDXDNA_INVALID_ADDR,
        };
        let info = retry_eintr(|| bo.driver.bo_info(handle)).map_err(ioctl_err("GET_BO_INFO"))?;
        if info.map_offset == AMDXDNA_INVALID_ADDR {
            return Err(NpuError::Protocol {
                what: format!("{bo_type:?} BO {handle} has no map offset"),
            });
        }
        let map = retry_eintr(|| bo.driver.mmap(info.map_offset, len, 0))
            .map_err(ioctl_err("mmap(BO)"))?;
        let addr = map.addr() as u64;
        bo.map = Some(map);
        let info = retry_eintr(|| bo.driver.bo_info(handle)).map_err(ioctl_err("GET_BO_INFO"))?;
        bo.device_addr = if info.xdna_addr != AMDXDNA_INVALID_ADDR {
            info.xdna_addr
        } else {
            addr
        };
        Ok(bo)
    }

    /// GEM handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The address the device uses for this BO.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the BO is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mapping(&self) -> &MappedRange {
        self.map
            .as_ref()
            .expect("a MappedBo handed out is always mapped")
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping covers `len` bytes and is owned by this BO; `&self` excludes
        // `bytes_mut`.
        unsafe { self.mapping().bytes(0, self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { self.mapping().bytes_mut(0, self.len) }
    }

    /// The BO as u32 words (mappings are page aligned), writable.
    pub fn words_mut(&mut self) -> &mut [u32] {
        let m = self.mapping();
        // SAFETY: page-aligned mapping of `len` bytes owned by this BO; u32 has no invalid bit
        // patterns; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(m.ptr().as_ptr().cast::<u32>(), self.len / 4) }
    }

    /// Read word `i` with a volatile load (the driver writes command headers behind our back).
    pub fn read_word_volatile(&self, i: usize) -> u32 {
        assert!(i < self.len / 4, "word {i} outside a {}-byte BO", self.len);
        // SAFETY: in bounds (asserted) of a live, page-aligned mapping.
        unsafe {
            self.mapping()
                .ptr()
                .as_ptr()
                .cast::<u32>()
                .add(i)
                .read_volatile()
        }
    }

    /// Flush `range` of the BO (write back + invalidate) for or after device access.
    pub fn flush(&self, range: std::ops::Range<usize>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "{range:?} of {}",
            self.len
        );
        let p = self.mapping().ptr().as_ptr();
        // SAFETY: the range lies inside this BO's live mapping (asserted).
        unsafe { self.driver.cache_flush(p.add(range.start), range.len()) }
    }
}

impl Drop for MappedBo {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            let _ = release(|| self.driver.munmap(&m));
        }
        let _ = release(|| self.driver.gem_close(self.handle));
    }
}
