//! The ioctl-level device interface: one method per driver operation we use. The real device
//! ([`super::amdxdna::AmdxdnaDriver`]) and the emulated one ([`super::emu::EmuDriver`]) implement
//! it; everything above (heap, BOs, contexts, the submission ring) is written once against it.
//!
//! Methods return the raw errno; the safe owners attach the operation name.

use rustix::io::Errno;

use super::ioctl::DrmVersion;
use super::mapping::MappedRange;
use super::uapi;

/// EINTRs retried in a row before the error is returned (F6).
pub const MAX_EINTR_RETRIES: usize = 100;
/// Attempts of a release call (munmap, GEM_CLOSE, SYNCOBJ_DESTROY, DESTROY_HWCTX) before its
/// resource is given up.
pub const RELEASE_ATTEMPTS: usize = 3;

/// Call `f` again while it fails with EINTR (a signal arrived before the call did anything;
/// libdrm's `drmIoctl` does the same), at most [`MAX_EINTR_RETRIES`] times (F6).
pub fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    let mut retries = 0;
    loop {
        match f() {
            Err(e) if e == Errno::INTR && retries < MAX_EINTR_RETRIES => retries += 1,
            r => return r,
        }
    }
}

/// A release call from a `Drop`, which cannot return its error: tried up to
/// [`RELEASE_ATTEMPTS`] times whatever the errno (EINTR always again, as [`retry_eintr`]), so
/// a transient failure leaks nothing. The last error is returned for callers that can use it.
pub fn release(mut f: impl FnMut() -> Result<(), Errno>) -> Result<(), Errno> {
    let mut last = Ok(());
    for _ in 0..RELEASE_ATTEMPTS {
        last = retry_eintr(&mut f);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Which implementation is behind a [`Driver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The amdxdna kernel driver on a real NPU.
    Amdxdna,
    /// The in-process emulated device.
    Emulated,
}

/// Buffer object types (`AMDXDNA_BO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoType {
    /// Host memory shared with the device (SHMEM/SHARE = 1), mmapped.
    Share,
    /// The device heap (2): one 64 MiB BO that DEV BOs are carved from.
    DevHeap,
    /// A BO inside the heap (3): no mmap; CPU address derived from the heap mapping.
    Dev,
    /// A command BO (4) holding an ERT packet, mmapped.
    Cmd,
}

impl BoType {
    /// The uAPI value.
    pub fn raw(self) -> u32 {
        match self {
            Self::Share => uapi::AMDXDNA_BO_SHARE,
            Self::DevHeap => uapi::AMDXDNA_BO_DEV_HEAP,
            Self::Dev => uapi::AMDXDNA_BO_DEV,
            Self::Cmd => uapi::AMDXDNA_BO_CMD,
        }
    }
}

/// What GET_BO_INFO returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoInfo {
    /// The DRM fake offset to mmap, or `AMDXDNA_INVALID_ADDR` (DEV BOs).
    pub map_offset: u64,
    /// The user VA the driver knows for the BO (its mmap address once mapped), or 0.
    pub vaddr: u64,
    /// The device address, or `AMDXDNA_INVALID_ADDR` (SHARE/CMD BOs upstream).
    pub xdna_addr: u64,
}

impl From<uapi::amdxdna_drm_get_bo_info> for BoInfo {
    fn from(i: uapi::amdxdna_drm_get_bo_info) -> Self {
        Self {
            map_offset: i.map_offset,
            vaddr: i.vaddr,
            xdna_addr: i.xdna_addr,
        }
    }
}

/// The driver operations the runtime uses.
pub trait Driver: Send + Sync {
    /// Which implementation this is.
    fn backend(&self) -> Backend;
    /// `DRM_IOCTL_VERSION`.
    fn version(&self) -> Result<DrmVersion, Errno>;
    /// GET_INFO(AIE_VERSION).
    fn query_aie_version(&self) -> Result<uapi::amdxdna_drm_query_aie_version, Errno>;
    /// GET_INFO(AIE_METADATA).
    fn query_aie_metadata(&self) -> Result<uapi::amdxdna_drm_query_aie_metadata, Errno>;
    /// GET_INFO(FIRMWARE_VERSION).
    fn query_firmware_version(&self) -> Result<uapi::amdxdna_drm_query_firmware_version, Errno>;
    /// GET_INFO(CLOCK_METADATA).
    fn query_clock_metadata(&self) -> Result<uapi::amdxdna_drm_query_clock_metadata, Errno>;
    /// CREATE_BO → handle.
    fn create_bo(&self, bo_type: BoType, size: u64) -> Result<u32, Errno>;
    /// GET_BO_INFO.
    fn bo_info(&self, handle: u32) -> Result<BoInfo, Errno>;
    /// mmap `len` bytes at the DRM offset `map_offset`, at an `align`-aligned address.
    fn mmap(&self, map_offset: u64, len: usize, align: usize) -> Result<MappedRange, Errno>;
    /// Undo [`Driver::mmap`]. The caller forgets `range` only after success (a failed
    /// release is retried, [`release`]).
    fn munmap(&self, range: &MappedRange) -> Result<(), Errno>;
    /// `DRM_IOCTL_GEM_CLOSE`.
    fn gem_close(&self, handle: u32) -> Result<(), Errno>;
    /// CREATE_HWCTX → (context handle, timeline syncobj handle).
    fn create_hwctx(
        &self,
        qos: &[u8; uapi::QOS_BUFFER_SIZE],
        max_opc: u32,
        num_tiles: u32,
    ) -> Result<(u32, u32), Errno>;
    /// CONFIG_HWCTX(CONFIG_CU).
    fn config_cu(&self, hwctx: u32, cus: &[uapi::amdxdna_cu_config]) -> Result<(), Errno>;
    /// DESTROY_HWCTX.
    fn destroy_hwctx(&self, hwctx: u32) -> Result<(), Errno>;
    /// `DRM_IOCTL_SYNCOBJ_DESTROY`.
    fn syncobj_destroy(&self, syncobj: u32) -> Result<(), Errno>;
    /// EXEC_CMD with one command BO and the handles of every BO it references → seq.
    fn exec_cmd(&self, hwctx: u32, cmd_bo: u32, arg_bos: &[u32]) -> Result<u64, Errno>;
    /// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT` for `point` until the absolute CLOCK_MONOTONIC
    /// `deadline_ns` (WAIT_FOR_SUBMIT). `Err(ETIME)` when the deadline passes.
    fn timeline_wait(&self, syncobj: u32, point: u64, deadline_ns: i64) -> Result<(), Errno>;

    /// Write back and invalidate the CPU cache lines of `addr..addr+len` (`clflush`): before
    /// the device reads host writes, and before the host reads device writes. The real device
    /// flushes in user space ([`super::cache::flush`]); the emulated one moves bytes between its
    /// host and device copies.
    ///
    /// # Safety
    /// `addr..addr+len` must be mapped memory for the duration of the call.
    unsafe fn cache_flush(&self, addr: *const u8, len: usize) {
        // SAFETY: the caller guarantees the range is mapped.
        super::cache::flush(unsafe { std::slice::from_raw_parts(addr, len) });
    }

    /// A parameter of the amdxdna module, `/sys/module/amdxdna/parameters/<name>`, trimmed;
    /// `None` when the module or the parameter does not exist.
    fn module_param(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(format!("/sys/module/amdxdna/parameters/{name}"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}
