//! The only place that issues ioctls. One safe function per ioctl: each builds the uAPI struct
//! from Rust values, keeps every user pointer it embeds alive for the duration of the call, and
//! returns the raw errno (callers attach the op name to make a [`super::NpuError::Ioctl`]).

use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::ioctl::{ioctl, Opcode, Updater};

use super::uapi::*;

/// `Updater` for a request number from [`super::uapi`] (read-write or write-only: both pass a
/// pointer to the struct and let the kernel copy in/out according to the encoded direction).
macro_rules! updater {
    ($req:expr, $arg:expr) => {
        Updater::<{ $req as Opcode }, _>::new($arg)
    };
}

/// A GET_INFO output struct, tagged with its `param` value.
pub trait InfoQuery: Copy + Default {
    /// The `DRM_AMDXDNA_QUERY_*` parameter that fills this struct.
    const PARAM: u32;
}
impl InfoQuery for amdxdna_drm_query_aie_version {
    const PARAM: u32 = DRM_AMDXDNA_QUERY_AIE_VERSION;
}
impl InfoQuery for amdxdna_drm_query_aie_metadata {
    const PARAM: u32 = DRM_AMDXDNA_QUERY_AIE_METADATA;
}
impl InfoQuery for amdxdna_drm_query_clock_metadata {
    const PARAM: u32 = DRM_AMDXDNA_QUERY_CLOCK_METADATA;
}
impl InfoQuery for amdxdna_drm_query_firmware_version {
    const PARAM: u32 = DRM_AMDXDNA_QUERY_FIRMWARE_VERSION;
}

/// What `DRM_IOCTL_VERSION` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrmVersion {
    /// Driver major version.
    pub major: i32,
    /// Driver minor version (amdxdna: ≥ 1 ⇔ GET_ARRAY exists).
    pub minor: i32,
    /// Driver patch level.
    pub patchlevel: i32,
    /// DRM driver name (`amdxdna_accel_driver`).
    pub name: String,
}

/// `DRM_IOCTL_VERSION`, called twice: once to learn the name length, once to fill it.
pub fn drm_version(fd: BorrowedFd<'_>) -> Result<DrmVersion, Errno> {
    let mut v = drm_version::default();
    // SAFETY: request and struct match (drm.h); all lengths are 0 so the kernel writes no strings.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_VERSION, &mut v))? };
    let mut name = vec![0u8; v.name_len.min(4096) as usize];
    let mut v2 = drm_version {
        name_len: name.len() as u64,
        name: name.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `name` is a live buffer of exactly `name_len` bytes; date/desc lengths are 0.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_VERSION, &mut v2))? };
    name.truncate((v2.name_len as usize).min(name.len()));
    Ok(DrmVersion {
        major: v2.version_major,
        minor: v2.version_minor,
        patchlevel: v2.version_patchlevel,
        name: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// `GET_INFO` for one of the fixed-size query structs.
pub fn get_info<Q: InfoQuery>(fd: BorrowedFd<'_>) -> Result<Q, Errno> {
    let mut out = Q::default();
    let mut arg = amdxdna_drm_get_info {
        param: Q::PARAM,
        buffer_size: core::mem::size_of::<Q>() as u32,
        buffer: &mut out as *mut Q as u64,
    };
    // SAFETY: `buffer` points at `out`, a live `Q` of `buffer_size` bytes, which is the struct the
    // kernel copies for `Q::PARAM` (upstream copies exactly sizeof, which equals ours).
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_GET_INFO, &mut arg))? };
    Ok(out)
}

/// `CREATE_BO{flags=0, vaddr=0, size, type}` → handle.
pub fn create_bo(fd: BorrowedFd<'_>, bo_type: u32, size: u64) -> Result<u32, Errno> {
    let mut arg = amdxdna_drm_create_bo {
        size,
        r#type: bo_type,
        ..Default::default()
    };
    // SAFETY: request and struct match; no embedded pointers (vaddr = 0).
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_CREATE_BO, &mut arg))? };
    Ok(arg.handle)
}

/// `GET_BO_INFO{handle}`.
pub fn get_bo_info(fd: BorrowedFd<'_>, handle: u32) -> Result<amdxdna_drm_get_bo_info, Errno> {
    let mut arg = amdxdna_drm_get_bo_info {
        handle,
        ..Default::default()
    };
    // SAFETY: request and struct match; no embedded pointers.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_GET_BO_INFO, &mut arg))? };
    Ok(arg)
}

/// `SYNC_BO{handle, direction, offset, size}` (kernel-side clflush of a BO range).
pub fn sync_bo(
    fd: BorrowedFd<'_>,
    handle: u32,
    direction: u32,
    offset: u64,
    size: u64,
) -> Result<(), Errno> {
    let mut arg = amdxdna_drm_sync_bo {
        handle,
        direction,
        offset,
        size,
    };
    // SAFETY: request and struct match; no embedded pointers.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_SYNC_BO, &mut arg)) }
}

/// `DRM_IOCTL_GEM_CLOSE{handle}`.
pub fn gem_close(fd: BorrowedFd<'_>, handle: u32) -> Result<(), Errno> {
    let mut arg = drm_gem_close { handle, pad: 0 };
    // SAFETY: request (IOW) and struct match; no embedded pointers.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_GEM_CLOSE, &mut arg)) }
}

/// `CREATE_HWCTX{qos_p, max_opc, num_tiles}` → (hwctx handle, syncobj handle).
pub fn create_hwctx(
    fd: BorrowedFd<'_>,
    qos: &[u8; QOS_BUFFER_SIZE],
    max_opc: u32,
    num_tiles: u32,
) -> Result<(u32, u32), Errno> {
    let mut arg = amdxdna_drm_create_hwctx {
        qos_p: qos.as_ptr() as u64,
        max_opc,
        num_tiles,
        ..Default::default()
    };
    // SAFETY: `qos_p` points at a live 32-byte buffer; the kernel reads at most 32 bytes from it
    // (24 upstream, 32 in the out-of-tree layout) and writes nothing through it.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_CREATE_HWCTX, &mut arg))? };
    Ok((arg.handle, arg.syncobj_handle))
}

/// `CONFIG_HWCTX{handle, CONFIG_CU, param_val = {num_cus, pad, cu_configs[]}}`.
pub fn config_hwctx_cu(
    fd: BorrowedFd<'_>,
    hwctx: u32,
    cus: &[amdxdna_cu_config],
) -> Result<(), Errno> {
    // The parameter buffer: 8-byte header then the configs, as u64 words for alignment.
    let n = cus.len();
    let mut buf = vec![0u64; 1 + n];
    let bytes = 8 + 8 * n;
    {
        // SAFETY: `buf` is 8·(1+n) bytes, u64-aligned (≥ the 4-byte alignment of the structs);
        // we write the header and `n` configs inside it. Plain-old-data, no invalid values.
        let base = buf.as_mut_ptr().cast::<u8>();
        unsafe {
            base.cast::<amdxdna_hwctx_param_config_cu>()
                .write(amdxdna_hwctx_param_config_cu {
                    num_cus: n as u16,
                    ..Default::default()
                });
            for (i, cu) in cus.iter().enumerate() {
                base.add(8 + 8 * i).cast::<amdxdna_cu_config>().write(*cu);
            }
        }
    }
    let mut arg = amdxdna_drm_config_hwctx {
        handle: hwctx,
        param_type: DRM_AMDXDNA_HWCTX_CONFIG_CU,
        param_val: buf.as_ptr() as u64,
        param_val_size: bytes as u32,
        pad: 0,
    };
    // SAFETY: `param_val` points at `buf`, live and `param_val_size` bytes long; the kernel only
    // reads it.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_CONFIG_HWCTX, &mut arg)) }
}

/// `DESTROY_HWCTX{handle}` (the driver waits for the context's outstanding jobs).
pub fn destroy_hwctx(fd: BorrowedFd<'_>, hwctx: u32) -> Result<(), Errno> {
    let mut arg = amdxdna_drm_destroy_hwctx {
        handle: hwctx,
        pad: 0,
    };
    // SAFETY: request and struct match; no embedded pointers.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_DESTROY_HWCTX, &mut arg)) }
}

/// `DRM_IOCTL_SYNCOBJ_DESTROY{handle}`.
pub fn syncobj_destroy(fd: BorrowedFd<'_>, syncobj: u32) -> Result<(), Errno> {
    let mut arg = drm_syncobj_destroy {
        handle: syncobj,
        pad: 0,
    };
    // SAFETY: request and struct match; no embedded pointers.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_SYNCOBJ_DESTROY, &mut arg)) }
}

/// `EXEC_CMD{hwctx, type=0, cmd_handles=cmd_bo, args=&arg_bos, cmd_count=1}` → seq.
pub fn exec_cmd(
    fd: BorrowedFd<'_>,
    hwctx: u32,
    cmd_bo: u32,
    arg_bos: &[u32],
) -> Result<u64, Errno> {
    let mut arg = amdxdna_drm_exec_cmd {
        hwctx,
        r#type: AMDXDNA_CMD_SUBMIT_EXEC_BUF,
        cmd_handles: cmd_bo as u64,
        args: arg_bos.as_ptr() as u64,
        cmd_count: 1,
        arg_count: arg_bos.len() as u32,
        ..Default::default()
    };
    // SAFETY: `args` points at `arg_bos`, live for the call, `arg_count` u32s long; the kernel
    // only reads it. With `cmd_count == 1`, `cmd_handles` is the handle value, not a pointer.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_AMDXDNA_EXEC_CMD, &mut arg))? };
    Ok(arg.seq)
}

/// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT` on one (syncobj, point) with an absolute CLOCK_MONOTONIC
/// deadline in ns and `WAIT_FOR_SUBMIT`. ETIME means the deadline passed.
pub fn syncobj_timeline_wait(
    fd: BorrowedFd<'_>,
    syncobj: u32,
    point: u64,
    deadline_ns: i64,
) -> Result<(), Errno> {
    let handles = [syncobj];
    let points = [point];
    let mut arg = drm_syncobj_timeline_wait {
        handles: handles.as_ptr() as u64,
        points: points.as_ptr() as u64,
        timeout_nsec: deadline_ns,
        count_handles: 1,
        flags: DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
        ..Default::default()
    };
    // SAFETY: `handles` and `points` are live one-element arrays matching `count_handles`; the
    // kernel only reads them.
    unsafe { ioctl(fd, updater!(DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, &mut arg)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// On a file that is not a DRM node the generic ioctls fail with ENOTTY, proving the calls
    /// reach the kernel with our request numbers and return the errno untouched.
    #[test]
    fn non_drm_fd_gives_enotty() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(drm_version(f.as_fd()).unwrap_err(), Errno::NOTTY);
        assert_eq!(gem_close(f.as_fd(), 1).unwrap_err(), Errno::NOTTY);
        assert_eq!(
            get_info::<amdxdna_drm_query_aie_version>(f.as_fd()).unwrap_err(),
            Errno::NOTTY
        );
    }
}
