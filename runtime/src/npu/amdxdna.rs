//! The real device: an open `/dev/accel/accelN` file descriptor, every [`Driver`] method one
//! ioctl (or mmap) on it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::driver::{Backend, BoInfo, BoType, Driver};
use super::ioctl::{self, DrmVersion};
use super::mapping::{self, MappedRange};
use super::uapi;

/// An open amdxdna device node.
#[derive(Debug)]
pub struct AmdxdnaDriver {
    fd: OwnedFd,
    path: PathBuf,
}

impl AmdxdnaDriver {
    /// `open(path, O_RDWR | O_CLOEXEC)`. Does not check which driver is behind the node; see
    /// [`super::device::Device::open`].
    pub fn open(path: &Path) -> Result<Self, Errno> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The node this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Driver for AmdxdnaDriver {
    fn backend(&self) -> Backend {
        Backend::Amdxdna
    }

    fn version(&self) -> Result<DrmVersion, Errno> {
        ioctl::drm_version(self.fd.as_fd())
    }

    fn query_aie_version(&self) -> Result<uapi::amdxdna_drm_query_aie_version, Errno> {
        ioctl::get_info(self.fd.as_fd())
    }

    fn query_aie_metadata(&self) -> Result<uapi::amdxdna_drm_query_aie_metadata, Errno> {
        ioctl::get_info(self.fd.as_fd())
    }

    fn query_firmware_version(&self) -> Result<uapi::amdxdna_drm_query_firmware_version, Errno> {
        ioctl::get_info(self.fd.as_fd())
    }

    fn query_clock_metadata(&self) -> Result<uapi::amdxdna_drm_query_clock_metadata, Errno> {
        ioctl::get_info(self.fd.as_fd())
    }

    fn create_bo(&self, bo_type: BoType, size: u64) -> Result<u32, Errno> {
        ioctl::create_bo(self.fd.as_fd(), bo_type.raw(), size)
    }

    fn bo_info(&self, handle: u32) -> Result<BoInfo, Errno> {
        ioctl::get_bo_info(self.fd.as_fd(), handle).map(BoInfo::from)
    }

    fn mmap(&self, map_offset: u64, len: usize, align: usize) -> Result<MappedRange, Errno> {
        mapping::map_fd_aligned(self.fd.as_fd(), map_offset, len, align)
    }

    fn munmap(&self, range: &MappedRange) -> Result<(), Errno> {
        mapping::unmap(range)
    }

    fn gem_close(&self, handle: u32) -> Result<(), Errno> {
        ioctl::gem_close(self.fd.as_fd(), handle)
    }

    fn create_hwctx(
        &self,
        qos: &[u8; uapi::QOS_BUFFER_SIZE],
        max_opc: u32,
        num_tiles: u32,
    ) -> Result<(u32, u32), Errno> {
        ioctl::create_hwctx(self.fd.as_fd(), qos, max_opc, num_tiles)
    }

    fn config_cu(&self, hwctx: u32, cus: &[uapi::amdxdna_cu_config]) -> Result<(), Errno> {
        ioctl::config_hwctx_cu(self.fd.as_fd(), hwctx, cus)
    }

    fn destroy_hwctx(&self, hwctx: u32) -> Result<(), Errno> {
        ioctl::destroy_hwctx(self.fd.as_fd(), hwctx)
    }

    fn syncobj_destroy(&self, syncobj: u32) -> Result<(), Errno> {
        ioctl::syncobj_destroy(self.fd.as_fd(), syncobj)
    }

    fn exec_cmd(&self, hwctx: u32, cmd_bo: u32, arg_bos: &[u32]) -> Result<u64, Errno> {
        ioctl::exec_cmd(self.fd.as_fd(), hwctx, cmd_bo, arg_bos)
    }

    fn timeline_wait(&self, syncobj: u32, point: u64, deadline_ns: i64) -> Result<(), Errno> {
        ioctl::syncobj_timeline_wait(self.fd.as_fd(), syncobj, point, deadline_ns)
    }
}
