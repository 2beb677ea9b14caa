//! A [`Driver`] wrapper that records every call: its C name, main argument, errno and duration.
//! `amanuensis npu selftest` walks the device life cycle through it to print each step's ioctls;
//! it adds one lock and two clock reads per call, so it is not for the dispatch hot path.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::io::Errno;

use super::driver::{Backend, BoInfo, BoType, Driver};
use super::ioctl::DrmVersion;
use super::mapping::MappedRange;
use super::uapi;

/// One recorded driver call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The ioctl (or mmap/munmap), e.g. `"CREATE_BO(DEV_HEAP)"`, `"EXEC_CMD"`.
    pub op: &'static str,
    /// Its main argument: a size, handle, offset or timeline point (0 when none).
    pub arg: u64,
    /// `None` on success, else the errno.
    pub errno: Option<Errno>,
    /// Wall time of the call, ns.
    pub ns: u64,
}

/// Records every call made through it, then forwards to the wrapped driver.
pub struct TracingDriver {
    inner: Arc<dyn Driver>,
    calls: Mutex<Vec<Call>>,
}

impl std::fmt::Debug for TracingDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingDriver")
            .field("backend", &self.inner.backend())
            .finish_non_exhaustive()
    }
}

impl TracingDriver {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Driver>) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls recorded since the last `take`, oldest first.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record<T>(
        &self,
        op: &'static str,
        arg: u64,
        f: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let t = Instant::now();
        let r = f();
        let ns = t.elapsed().as_nanos() as u64;
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Call {
                op,
                arg,
                errno: r.as_ref().err().copied(),
                ns,
            });
        r
    }
}

fn bo_op(bo_type: BoType) -> &'static str {
    match bo_type {
        BoType::Share => "CREATE_BO(SHARE)",
        BoType::DevHeap => "CREATE_BO(DEV_HEAP)",
        BoType::Dev => "CREATE_BO(DEV)",
        BoType::Cmd => "CREATE_BO(CMD)",
    }
}

impl Driver for TracingDriver {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn version(&self) -> Result<DrmVersion, Errno> {
        self.record("DRM_IOCTL_VERSION", 0, || self.inner.version())
    }

    fn query_aie_version(&self) -> Result<uapi::amdxdna_drm_query_aie_version, Errno> {
        self.record("GET_INFO(AIE_VERSION)", 0, || {
            self.inner.query_aie_version()
        })
    }

    fn query_aie_metadata(&self) -> Result<uapi::amdxdna_drm_query_aie_metadata, Errno> {
        self.record("GET_INFO(AIE_METADATA)", 0, || {
            self.inner.query_aie_metadata()
        })
    }

    fn query_firmware_version(&self) -> Result<uapi::amdxdna_drm_query_firmware_version, Errno> {
        self.record("GET_INFO(FIRMWARE_VERSION)", 0, || {
            self.inner.query_firmware_version()
        })
    }

    fn query_clock_metadata(&self) -> Result<uapi::amdxdna_drm_query_clock_metadata, Errno> {
        self.record("GET_INFO(CLOCK_METADATA)", 0, || {
            self.inner.query_clock_metadata()
        })
    }

    fn create_bo(&self, bo_type: BoType, size: u64) -> Result<u32, Errno> {
        self.record(bo_op(bo_type), size, || self.inner.create_bo(bo_type, size))
    }

    fn bo_info(&self, handle: u32) -> Result<BoInfo, Errno> {
        self.record("GET_BO_INFO", handle as u64, || self.inner.bo_info(handle))
    }

    fn mmap(&self, map_offset: u64, len: usize, align: usize) -> Result<MappedRange, Errno> {
        self.record("mmap", len as u64, || {
            self.inner.mmap(map_offset, len, align)
        })
    }

    fn munmap(&self, range: &MappedRange) -> Result<(), Errno> {
        let len = range.len() as u64;
        self.record("munmap", len, || self.inner.munmap(range))
    }

    fn gem_close(&self, handle: u32) -> Result<(), Errno> {
        self.record("GEM_CLOSE", handle as u64, || self.inner.gem_close(handle))
    }

    fn create_hwctx(
        &self,
        qos: &[u8; uapi::QOS_BUFFER_SIZE],
        max_opc: u32,
        num_tiles: u32,
    ) -> Result<(u32, u32), Errno> {
        self.record("CREATE_HWCTX", num_tiles as u64, || {
            self.inner.create_hwctx(qos, max_opc, num_tiles)
        })
    }

    fn config_cu(&self, hwctx: u32, cus: &[uapi::amdxdna_cu_config]) -> Result<(), Errno> {
        self.record("CONFIG_HWCTX(CONFIG_CU)", hwctx as u64, || {
            self.inner.config_cu(hwctx, cus)
        })
    }

    fn destroy_hwctx(&self, hwctx: u32) -> Result<(), Errno> {
        self.record("DESTROY_HWCTX", hwctx as u64, || {
            self.inner.destroy_hwctx(hwctx)
        })
    }

    fn syncobj_destroy(&self, syncobj: u32) -> Result<(), Errno> {
        self.record("SYNCOBJ_DESTROY", syncobj as u64, || {
            self.inner.syncobj_destroy(syncobj)
        })
    }

    fn exec_cmd(&self, hwctx: u32, cmd_bo: u32, arg_bos: &[u32]) -> Result<u64, Errno> {
        self.record("EXEC_CMD", cmd_bo as u64, || {
            self.inner.exec_cmd(hwctx, cmd_bo, arg_bos)
        })
    }

    fn timeline_wait(&self, syncobj: u32, point: u64, deadline_ns: i64) -> Result<(), Errno> {
        self.record("SYNCOBJ_TIMELINE_WAIT", point, || {
            self.inner.timeline_wait(syncobj, point, deadline_ns)
        })
    }

    unsafe fn cache_flush(&self, addr: *const u8, len: usize) {
        // SAFETY: forwarded with the caller's guarantee that the range is mapped.
        unsafe { self.inner.cache_flush(addr, len) }
    }

    fn module_param(&self, name: &str) -> Option<String> {
        self.inner.module_param(name)
    }
}
