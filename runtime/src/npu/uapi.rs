//! `#[repr(C)]` copies of the amdxdna uAPI (`include/uapi/drm/amdxdna_accel.h`) and of the generic
//! DRM structs we use (`drm.h`), with their request numbers.
//!
//! Layouts follow `../shared/docs/npu-driver.md` §1.1–1.2 (measured on x86_64 against the real
//! headers). Every struct has a `const` size assertion here, and the unit tests compare the whole
//! table (size, alignment, every field offset and size, every request number) with the doc.
//! [`layout_table`] prints the table so it can be diffed against the headers on a machine that
//! has them ([`c_program`] generates a C program that prints the same format from the headers;
//! both are behind the `amdxdna-uapi-table` binary).
//!
//! Names keep the C spelling so they can be grepped in the headers.

#![allow(non_camel_case_types)]

use core::mem::{align_of, offset_of, size_of};

// ---------------------------------------------------------------------------------------------
// Request numbers (`_IOC` encoding of asm-generic/ioctl.h: dir<<30 | size<<16 | type<<8 | nr).
// ---------------------------------------------------------------------------------------------

/// The DRM ioctl type byte (`DRM_IOCTL_BASE`, `'d'`).
pub const DRM_IOCTL_BASE: u8 = b'd';
/// First driver-private ioctl number (`DRM_COMMAND_BASE`).
pub const DRM_COMMAND_BASE: u8 = 0x40;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, 'd', nr, size)`.
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    assert!(
        size < (1 << 14),
        "ioctl argument too large for the size field"
    );
    (dir << 30) | ((size as u32) << 16) | ((DRM_IOCTL_BASE as u32) << 8) | nr as u32
}

/// `DRM_IOWR('d', nr, T)`.
pub const fn iowr<T>(nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, size_of::<T>())
}

/// `DRM_IOW('d', nr, T)`.
pub const fn iow<T>(nr: u8) -> u32 {
    ioc(IOC_WRITE, nr, size_of::<T>())
}

/// Driver-private command numbers (`DRM_AMDXDNA_*`), relative to [`DRM_COMMAND_BASE`].
pub mod cmd {
    /// `DRM_AMDXDNA_CREATE_HWCTX`.
    pub const CREATE_HWCTX: u8 = 0;
    /// `DRM_AMDXDNA_DESTROY_HWCTX`.
    pub const DESTROY_HWCTX: u8 = 1;
    /// `DRM_AMDXDNA_CONFIG_HWCTX`.
    pub const CONFIG_HWCTX: u8 = 2;
    /// `DRM_AMDXDNA_CREATE_BO`.
    pub const CREATE_BO: u8 = 3;
    /// `DRM_AMDXDNA_GET_BO_INFO`.
    pub const GET_BO_INFO: u8 = 4;
    /// `DRM_AMDXDNA_SYNC_BO`.
    pub const SYNC_BO: u8 = 5;
    /// `DRM_AMDXDNA_EXEC_CMD`.
    pub const EXEC_CMD: u8 = 6;
    /// `DRM_AMDXDNA_GET_INFO`.
    pub const GET_INFO: u8 = 7;
    /// `DRM_AMDXDNA_SET_STATE` (root only).
    pub const SET_STATE: u8 = 8;
    /// `DRM_AMDXDNA_WAIT_CMD` (out-of-tree driver only; see npu-driver.md §1.3).
    pub const WAIT_CMD: u8 = 9;
    /// `DRM_AMDXDNA_GET_ARRAY` (driver minor ≥ 1).
    pub const GET_ARRAY: u8 = 10;
}

/// `DRM_IOCTL_AMDXDNA_CREATE_HWCTX`.
pub const DRM_IOCTL_AMDXDNA_CREATE_HWCTX: u32 =
    iowr::<amdxdna_drm_create_hwctx>(DRM_COMMAND_BASE + cmd::CREATE_HWCTX);
/// `DRM_IOCTL_AMDXDNA_DESTROY_HWCTX`.
pub const DRM_IOCTL_AMDXDNA_DESTROY_HWCTX: u32 =
    iowr::<amdxdna_drm_destroy_hwctx>(DRM_COMMAND_BASE + cmd::DESTROY_HWCTX);
/// `DRM_IOCTL_AMDXDNA_CONFIG_HWCTX`.
pub const DRM_IOCTL_AMDXDNA_CONFIG_HWCTX: u32 =
    iowr::<amdxdna_drm_config_hwctx>(DRM_COMMAND_BASE + cmd::CONFIG_HWCTX);
/// `DRM_IOCTL_AMDXDNA_CREATE_BO`.
pub const DRM_IOCTL_AMDXDNA_CREATE_BO: u32 =
    iowr::<amdxdna_drm_create_bo>(DRM_COMMAND_BASE + cmd::CREATE_BO);
/// `DRM_IOCTL_AMDXDNA_GET_BO_INFO`.
pub const DRM_IOCTL_AMDXDNA_GET_BO_INFO: u32 =
    iowr::<amdxdna_drm_get_bo_info>(DRM_COMMAND_BASE + cmd::GET_BO_INFO);
/// `DRM_IOCTL_AMDXDNA_SYNC_BO`.
pub const DRM_IOCTL_AMDXDNA_SYNC_BO: u32 =
    iowr::<amdxdna_drm_sync_bo>(DRM_COMMAND_BASE + cmd::SYNC_BO);
/// `DRM_IOCTL_AMDXDNA_EXEC_CMD`.
pub const DRM_IOCTL_AMDXDNA_EXEC_CMD: u32 =
    iowr::<amdxdna_drm_exec_cmd>(DRM_COMMAND_BASE + cmd::EXEC_CMD);
/// `DRM_IOCTL_AMDXDNA_GET_INFO`.
pub const DRM_IOCTL_AMDXDNA_GET_INFO: u32 =
    iowr::<amdxdna_drm_get_info>(DRM_COMMAND_BASE + cmd::GET_INFO);
/// `DRM_IOCTL_AMDXDNA_SET_STATE` (`DRM_ROOT_ONLY`: EACCES without CAP_SYS_ADMIN).
pub const DRM_IOCTL_AMDXDNA_SET_STATE: u32 =
    iowr::<amdxdna_drm_set_state>(DRM_COMMAND_BASE + cmd::SET_STATE);
/// `DRM_IOCTL_AMDXDNA_WAIT_CMD` as the kernel-module copy of the header declares it (`DRM_IOW`).
/// Not present upstream (EINVAL there); we never call it.
pub const DRM_IOCTL_AMDXDNA_WAIT_CMD: u32 =
    iow::<amdxdna_drm_wait_cmd>(DRM_COMMAND_BASE + cmd::WAIT_CMD);
/// `DRM_IOCTL_AMDXDNA_GET_ARRAY` (driver version minor ≥ 1 only).
pub const DRM_IOCTL_AMDXDNA_GET_ARRAY: u32 =
    iowr::<amdxdna_drm_get_array>(DRM_COMMAND_BASE + cmd::GET_ARRAY);

/// `DRM_IOCTL_VERSION`.
pub const DRM_IOCTL_VERSION: u32 = iowr::<drm_version>(0x00);
/// `DRM_IOCTL_GEM_CLOSE`.
pub const DRM_IOCTL_GEM_CLOSE: u32 = iow::<drm_gem_close>(0x09);
/// `DRM_IOCTL_PRIME_HANDLE_TO_FD`.
pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: u32 = iowr::<drm_prime_handle>(0x2D);
/// `DRM_IOCTL_PRIME_FD_TO_HANDLE`.
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: u32 = iowr::<drm_prime_handle>(0x2E);
/// `DRM_IOCTL_SYNCOBJ_CREATE`.
pub const DRM_IOCTL_SYNCOBJ_CREATE: u32 = iowr::<drm_syncobj_create>(0xBF);
/// `DRM_IOCTL_SYNCOBJ_DESTROY`.
pub const DRM_IOCTL_SYNCOBJ_DESTROY: u32 = iowr::<drm_syncobj_destroy>(0xC0);
/// `DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`.
pub const DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD: u32 = iowr::<drm_syncobj_handle>(0xC1);
/// `DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`.
pub const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: u32 = iowr::<drm_syncobj_handle>(0xC2);
/// `DRM_IOCTL_SYNCOBJ_WAIT`.
pub const DRM_IOCTL_SYNCOBJ_WAIT: u32 = iowr::<drm_syncobj_wait>(0xC3);
/// `DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`.
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: u32 = iowr::<drm_syncobj_timeline_wait>(0xCA);
/// `DRM_IOCTL_SYNCOBJ_QUERY`.
pub const DRM_IOCTL_SYNCOBJ_QUERY: u32 = iowr::<drm_syncobj_timeline_array>(0xCB);
/// `DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`.
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: u32 = iowr::<drm_syncobj_timeline_array>(0xCD);

/// Every request number with its C name, in the order the table prints them.
pub const REQUESTS: &[(&str, u32)] = &[
    (
        "DRM_IOCTL_AMDXDNA_CREATE_HWCTX",
        DRM_IOCTL_AMDXDNA_CREATE_HWCTX,
    ),
    (
        "DRM_IOCTL_AMDXDNA_DESTROY_HWCTX",
        DRM_IOCTL_AMDXDNA_DESTROY_HWCTX,
    ),
    (
        "DRM_IOCTL_AMDXDNA_CONFIG_HWCTX",
        DRM_IOCTL_AMDXDNA_CONFIG_HWCTX,
    ),
    ("DRM_IOCTL_AMDXDNA_CREATE_BO", DRM_IOCTL_AMDXDNA_CREATE_BO),
    (
        "DRM_IOCTL_AMDXDNA_GET_BO_INFO",
        DRM_IOCTL_AMDXDNA_GET_BO_INFO,
    ),
    ("DRM_IOCTL_AMDXDNA_SYNC_BO", DRM_IOCTL_AMDXDNA_SYNC_BO),
    ("DRM_IOCTL_AMDXDNA_EXEC_CMD", DRM_IOCTL_AMDXDNA_EXEC_CMD),
    ("DRM_IOCTL_AMDXDNA_GET_INFO", DRM_IOCTL_AMDXDNA_GET_INFO),
    ("DRM_IOCTL_AMDXDNA_SET_STATE", DRM_IOCTL_AMDXDNA_SET_STATE),
    ("DRM_IOCTL_AMDXDNA_WAIT_CMD", DRM_IOCTL_AMDXDNA_WAIT_CMD),
    ("DRM_IOCTL_AMDXDNA_GET_ARRAY", DRM_IOCTL_AMDXDNA_GET_ARRAY),
    ("DRM_IOCTL_VERSION", DRM_IOCTL_VERSION),
    ("DRM_IOCTL_GEM_CLOSE", DRM_IOCTL_GEM_CLOSE),
    ("DRM_IOCTL_PRIME_HANDLE_TO_FD", DRM_IOCTL_PRIME_HANDLE_TO_FD),
    ("DRM_IOCTL_PRIME_FD_TO_HANDLE", DRM_IOCTL_PRIME_FD_TO_HANDLE),
    ("DRM_IOCTL_SYNCOBJ_CREATE", DRM_IOCTL_SYNCOBJ_CREATE),
    ("DRM_IOCTL_SYNCOBJ_DESTROY", DRM_IOCTL_SYNCOBJ_DESTROY),
    (
        "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD",
        DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD,
    ),
    (
        "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE",
        DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE,
    ),
    ("DRM_IOCTL_SYNCOBJ_WAIT", DRM_IOCTL_SYNCOBJ_WAIT),
    (
        "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
        DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT,
    ),
    ("DRM_IOCTL_SYNCOBJ_QUERY", DRM_IOCTL_SYNCOBJ_QUERY),
    (
        "DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL",
        DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL,
    ),
];

// ---------------------------------------------------------------------------------------------
// Enum values (npu-driver.md §1.2).
// ---------------------------------------------------------------------------------------------

/// `AMDXDNA_INVALID_ADDR` (`~0UL`): "no device address" in `get_bo_info`.
pub const AMDXDNA_INVALID_ADDR: u64 = u64::MAX;
/// BO type `AMDXDNA_BO_SHMEM` / `AMDXDNA_BO_SHARE`.
pub const AMDXDNA_BO_SHARE: u32 = 1;
/// BO type `AMDXDNA_BO_DEV_HEAP`.
pub const AMDXDNA_BO_DEV_HEAP: u32 = 2;
/// BO type `AMDXDNA_BO_DEV` (carved from the heap).
pub const AMDXDNA_BO_DEV: u32 = 3;
/// BO type `AMDXDNA_BO_CMD`.
pub const AMDXDNA_BO_CMD: u32 = 4;
/// `exec_cmd.type` `AMDXDNA_CMD_SUBMIT_EXEC_BUF` (the only value the driver accepts).
pub const AMDXDNA_CMD_SUBMIT_EXEC_BUF: u32 = 0;
/// CONFIG_HWCTX `param_type` `DRM_AMDXDNA_HWCTX_CONFIG_CU`.
pub const DRM_AMDXDNA_HWCTX_CONFIG_CU: u32 = 0;
/// `sync_bo.direction` `SYNC_DIRECT_TO_DEVICE`.
pub const SYNC_DIRECT_TO_DEVICE: u32 = 0;
/// `sync_bo.direction` `SYNC_DIRECT_FROM_DEVICE` (beware: EINVAL after flushing on recent kernels).
pub const SYNC_DIRECT_FROM_DEVICE: u32 = 1;
/// GET_INFO param `DRM_AMDXDNA_QUERY_AIE_STATUS`.
pub const DRM_AMDXDNA_QUERY_AIE_STATUS: u32 = 0;
/// GET_INFO param `DRM_AMDXDNA_QUERY_AIE_METADATA`.
pub const DRM_AMDXDNA_QUERY_AIE_METADATA: u32 = 1;
/// GET_INFO param `DRM_AMDXDNA_QUERY_AIE_VERSION`.
pub const DRM_AMDXDNA_QUERY_AIE_VERSION: u32 = 2;
/// GET_INFO param `DRM_AMDXDNA_QUERY_CLOCK_METADATA`.
pub const DRM_AMDXDNA_QUERY_CLOCK_METADATA: u32 = 3;
/// GET_INFO param `DRM_AMDXDNA_QUERY_SENSORS`.
pub const DRM_AMDXDNA_QUERY_SENSORS: u32 = 4;
/// GET_INFO param `DRM_AMDXDNA_QUERY_HW_CONTEXTS`.
pub const DRM_AMDXDNA_QUERY_HW_CONTEXTS: u32 = 5;
/// GET_INFO param `DRM_AMDXDNA_QUERY_FIRMWARE_VERSION`.
pub const DRM_AMDXDNA_QUERY_FIRMWARE_VERSION: u32 = 8;
/// GET_INFO param `DRM_AMDXDNA_GET_POWER_MODE`.
pub const DRM_AMDXDNA_GET_POWER_MODE: u32 = 9;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL`.
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL: u32 = 1;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT`.
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT: u32 = 2;
/// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE`.
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE: u32 = 4;
/// The DRM driver name the amdxdna module registers.
pub const AMDXDNA_DRIVER_NAME: &str = "amdxdna_accel_driver";
/// Size of the QoS buffer we hand to CREATE_HWCTX: the 32-byte out-of-tree layout, a superset of
/// the 24-byte upstream one (npu-driver.md §1.3 item 3).
pub const QOS_BUFFER_SIZE: usize = 32;
/// `USER_START_COL_NOT_REQUESTED`, written at byte 24 of the QoS buffer.
pub const USER_START_COL_NOT_REQUESTED: u32 = 0xFF;

// ---------------------------------------------------------------------------------------------
// amdxdna structs.
// ---------------------------------------------------------------------------------------------

/// `struct amdxdna_qos_info` (upstream layout, 24 B).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_qos_info {
    pub gops: u32,
    pub fps: u32,
    pub dma_bandwidth: u32,
    pub latency: u32,
    pub frame_exec_time: u32,
    pub priority: u32,
}

/// `struct amdxdna_drm_create_hwctx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_create_hwctx {
    pub ext: u64,
    pub ext_flags: u64,
    /// User pointer to the QoS buffer.
    pub qos_p: u64,
    pub umq_bo: u32,
    pub log_buf_bo: u32,
    pub max_opc: u32,
    pub num_tiles: u32,
    pub mem_size: u32,
    pub umq_doorbell: u32,
    pub handle: u32,
    pub syncobj_handle: u32,
}

/// `struct amdxdna_drm_destroy_hwctx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_destroy_hwctx {
    pub handle: u32,
    pub pad: u32,
}

/// `struct amdxdna_cu_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_cu_config {
    pub cu_bo: u32,
    pub cu_func: u8,
    pub pad: [u8; 3],
}

/// `struct amdxdna_hwctx_param_config_cu` (fixed part; `cu_configs[]` follows at offset 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_hwctx_param_config_cu {
    pub num_cus: u16,
    pub pad: [u16; 3],
    pub cu_configs: [amdxdna_cu_config; 0],
}

/// `struct amdxdna_drm_config_hwctx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_config_hwctx {
    pub handle: u32,
    pub param_type: u32,
    /// User pointer to the parameter buffer.
    pub param_val: u64,
    pub param_val_size: u32,
    pub pad: u32,
}

/// `struct amdxdna_drm_create_bo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_create_bo {
    pub flags: u64,
    pub vaddr: u64,
    pub size: u64,
    pub r#type: u32,
    pub handle: u32,
}

/// `struct amdxdna_drm_get_bo_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_bo_info {
    pub ext: u64,
    pub ext_flags: u64,
    pub handle: u32,
    pub pad: u32,
    pub map_offset: u64,
    pub vaddr: u64,
    pub xdna_addr: u64,
}

/// `struct amdxdna_drm_sync_bo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_sync_bo {
    pub handle: u32,
    pub direction: u32,
    pub offset: u64,
    pub size: u64,
}

/// `struct amdxdna_drm_exec_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_exec_cmd {
    pub ext: u64,
    pub ext_flags: u64,
    pub hwctx: u32,
    pub r#type: u32,
    /// The command BO handle itself when `cmd_count == 1`, else a user pointer to u32[].
    pub cmd_handles: u64,
    /// User pointer to u32[] of every BO handle the command references.
    pub args: u64,
    pub cmd_count: u32,
    pub arg_count: u32,
    pub seq: u64,
}

/// `struct amdxdna_drm_wait_cmd` (out-of-tree driver only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_wait_cmd {
    pub hwctx: u32,
    pub timeout: u32,
    pub seq: u64,
}

/// `struct amdxdna_drm_get_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_info {
    pub param: u32,
    pub buffer_size: u32,
    /// User pointer to the output struct.
    pub buffer: u64,
}

/// `struct amdxdna_drm_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_set_state {
    pub param: u32,
    pub buffer_size: u32,
    pub buffer: u64,
}

/// `struct amdxdna_drm_query_aie_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_version {
    pub major: u32,
    pub minor: u32,
}

/// `struct amdxdna_drm_query_aie_tile_metadata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_tile_metadata {
    pub row_count: u16,
    pub row_start: u16,
    pub dma_channel_count: u16,
    pub lock_count: u16,
    pub event_reg_count: u16,
    pub pad: [u16; 3],
}

/// `struct amdxdna_drm_query_aie_metadata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_metadata {
    pub col_size: u32,
    pub cols: u16,
    pub rows: u16,
    pub version: amdxdna_drm_query_aie_version,
    pub core: amdxdna_drm_query_aie_tile_metadata,
    pub mem: amdxdna_drm_query_aie_tile_metadata,
    pub shim: amdxdna_drm_query_aie_tile_metadata,
}

/// `struct amdxdna_drm_query_clock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_clock {
    pub name: [u8; 16],
    pub freq_mhz: u32,
    pub pad: u32,
}

/// `struct amdxdna_drm_query_clock_metadata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_clock_metadata {
    pub mp_npu_clock: amdxdna_drm_query_clock,
    pub h_clock: amdxdna_drm_query_clock,
}

/// `struct amdxdna_drm_query_firmware_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_firmware_version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub build: u32,
}

/// `struct amdxdna_drm_query_aie_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_status {
    pub buffer: u64,
    pub buffer_size: u32,
    pub cols_filled: u32,
}

/// `struct amdxdna_drm_query_sensor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct amdxdna_drm_query_sensor {
    pub label: [u8; 64],
    pub input: u32,
    pub max: u32,
    pub average: u32,
    pub highest: u32,
    pub status: [u8; 64],
    pub units: [u8; 16],
    pub unitm: i8,
    pub r#type: u8,
    pub pad: [u8; 6],
}

/// `struct amdxdna_drm_query_hwctx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_hwctx {
    pub context_id: u32,
    pub start_col: u32,
    pub num_col: u32,
    pub pad: u32,
    pub pid: i64,
    pub command_submissions: u64,
    pub command_completions: u64,
    pub migrations: u64,
    pub preemptions: u64,
    pub errors: u64,
}

/// `struct amdxdna_drm_get_power_mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_power_mode {
    pub power_mode: u8,
    pub pad: [u8; 7],
}

/// `struct amdxdna_drm_set_power_mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_set_power_mode {
    pub power_mode: u8,
    pub pad: [u8; 7],
}

/// `struct amdxdna_drm_attribute_state` (not in the 6.14 header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_attribute_state {
    pub state: u8,
    pub pad: [u8; 7],
}

/// `struct amdxdna_drm_va_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_va_entry {
    pub vaddr: u64,
    pub len: u64,
}

/// `struct amdxdna_drm_va_tbl` (fixed part; `va_entries[]` follows at offset 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_va_tbl {
    pub dmabuf_fd: i32,
    pub num_entries: u32,
    pub va_entries: [amdxdna_drm_va_entry; 0],
}

/// `struct amdxdna_drm_get_array` (driver minor ≥ 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_array {
    pub param: u32,
    pub element_size: u32,
    pub num_element: u32,
    pub pad: u32,
    pub buffer: u64,
}

/// `struct amdxdna_drm_hwctx_entry` (upstream layout, 144 B; the out-of-tree one adds `name[16]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_hwctx_entry {
    pub context_id: u32,
    pub start_col: u32,
    pub num_col: u32,
    pub hwctx_id: u32,
    pub pid: i64,
    pub command_submissions: u64,
    pub command_completions: u64,
    pub migrations: u64,
    pub preemptions: u64,
    pub errors: u64,
    pub priority: u64,
    pub heap_usage: u64,
    pub suspensions: u64,
    pub state: u32,
    pub pasid: u32,
    pub gops: u32,
    pub fps: u32,
    pub dma_bandwidth: u32,
    pub latency: u32,
    pub frame_exec_time: u32,
    pub txn_op_idx: u32,
    pub ctx_pc: u32,
    pub fatal_error_type: u32,
    pub fatal_error_exception_type: u32,
    pub fatal_error_exception_pc: u32,
    pub fatal_error_app_module: u32,
    pub pad: u32,
}

/// `struct amdxdna_drm_get_resource_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_resource_info {
    pub npu_clk_max: u64,
    pub npu_tops_max: u64,
    pub npu_task_max: u64,
    pub npu_tops_curr: u64,
    pub npu_task_curr: u64,
}

/// `struct amdxdna_async_error`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_async_error {
    pub err_code: u64,
    pub ts_us: u64,
    pub ex_err_code: u64,
}

/// `struct amdxdna_drm_bo_usage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_bo_usage {
    pub pid: i64,
    pub total_usage: u64,
    pub internal_usage: u64,
    pub heap_usage: u64,
}

/// `struct amdxdna_drm_query_telemetry_header` (fixed part; `map[]` of u32 follows at 16).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_telemetry_header {
    pub major: u32,
    pub minor: u32,
    pub r#type: u32,
    pub map_num_elements: u32,
    pub map: [u32; 0],
}

// ---------------------------------------------------------------------------------------------
// Generic DRM structs (drm.h).
// ---------------------------------------------------------------------------------------------

/// `struct drm_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_version {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: u64,
    pub name: u64,
    pub date_len: u64,
    pub date: u64,
    pub desc_len: u64,
    pub desc: u64,
}

/// `struct drm_gem_close`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_gem_close {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_prime_handle`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_prime_handle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
}

/// `struct drm_syncobj_create`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_create {
    pub handle: u32,
    pub flags: u32,
}

/// `struct drm_syncobj_destroy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_destroy {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_handle`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_handle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
    pub pad: u32,
}

/// `struct drm_syncobj_wait`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_wait {
    pub handles: u64,
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_timeline_wait`. `timeout_nsec` is an absolute CLOCK_MONOTONIC time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_timeline_wait {
    /// User pointer to u32[] of syncobj handles.
    pub handles: u64,
    /// User pointer to u64[] of timeline points.
    pub points: u64,
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_timeline_array` (SYNCOBJ_QUERY, SYNCOBJ_TIMELINE_SIGNAL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_timeline_array {
    pub handles: u64,
    pub points: u64,
    pub count_handles: u32,
    pub flags: u32,
}

// Compile-time size checks (the tests also check alignment and every field).
/// The payload of an `ERT_CMD_CHAIN` command (not in the uapi header: the kernel's
/// `amdxdna_ctx.h`; XRT's `ert_cmd_chain_data`): the sub-commands' GEM handles follow as
/// `u64 data[command_count]`. Built by [`super::ert::CmdChain`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct amdxdna_cmd_chain {
    pub command_count: u32,
    pub submit_index: u32,
    pub error_index: u32,
    pub reserved: [u32; 3],
    pub data: [u64; 0],
}

const _: () = assert!(size_of::<amdxdna_cmd_chain>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_create_hwctx>() == 56);
const _: () = assert!(size_of::<amdxdna_drm_destroy_hwctx>() == 8);
const _: () = assert!(size_of::<amdxdna_drm_config_hwctx>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_create_bo>() == 32);
const _: () = assert!(size_of::<amdxdna_drm_get_bo_info>() == 48);
const _: () = assert!(size_of::<amdxdna_drm_sync_bo>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_exec_cmd>() == 56);
const _: () = assert!(size_of::<amdxdna_drm_get_info>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_query_aie_metadata>() == 64);
const _: () = assert!(size_of::<drm_syncobj_timeline_wait>() == 40);
const _: () = assert!(size_of::<drm_version>() == 64);

// ---------------------------------------------------------------------------------------------
// The printable layout table.
// ---------------------------------------------------------------------------------------------

/// One field of a [`StructLayout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// C field name.
    pub name: &'static str,
    /// Byte offset (`offsetof`).
    pub offset: usize,
    /// Byte size (`sizeof` of the member; 0 for a flexible array).
    pub size: usize,
}

/// Size, alignment and fields of one uAPI struct as Rust lays it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// C struct name.
    pub name: &'static str,
    /// `sizeof`.
    pub size: usize,
    /// `_Alignof`.
    pub align: usize,
    /// Fields in declaration order.
    pub fields: Vec<FieldLayout>,
}

fn field_size<T, F>(_project: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        StructLayout {
            name: stringify!($t),
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: vec![$(FieldLayout {
                name: stringify!($f).trim_start_matches("r#"),
                offset: offset_of!($t, $f),
                size: field_size::<$t, _>(|s| &s.$f),
            }),*],
        }
    };
}

/// The layout of every struct in this module, in header order.
pub fn struct_layouts() -> Vec<StructLayout> {
    vec![
        layout!(amdxdna_qos_info {
            gops,
            fps,
            dma_bandwidth,
            latency,
            frame_exec_time,
            priority
        }),
        layout!(amdxdna_drm_create_hwctx {
            ext,
            ext_flags,
            qos_p,
            umq_bo,
            log_buf_bo,
            max_opc,
            num_tiles,
            mem_size,
            umq_doorbell,
            handle,
            syncobj_handle
        }),
        layout!(amdxdna_drm_destroy_hwctx { handle, pad }),
        layout!(amdxdna_cu_config {
            cu_bo,
            cu_func,
            pad
        }),
        layout!(amdxdna_hwctx_param_config_cu {
            num_cus,
            pad,
            cu_configs
        }),
        layout!(amdxdna_drm_config_hwctx {
            handle,
            param_type,
            param_val,
            param_val_size,
            pad
        }),
        layout!(amdxdna_drm_create_bo {
            flags,
            vaddr,
            size,
            r#type,
            handle
        }),
        layout!(amdxdna_drm_get_bo_info {
            ext,
            ext_flags,
            handle,
            pad,
            map_offset,
            vaddr,
            xdna_addr
        }),
        layout!(amdxdna_drm_sync_bo {
            handle,
            direction,
            offset,
            size
        }),
        layout!(amdxdna_drm_exec_cmd {
            ext,
            ext_flags,
            hwctx,
            r#type,
            cmd_handles,
            args,
            cmd_count,
            arg_count,
            seq
        }),
        layout!(amdxdna_drm_wait_cmd {
            hwctx,
            timeout,
            seq
        }),
        layout!(amdxdna_drm_get_info {
            param,
            buffer_size,
            buffer
        }),
        layout!(amdxdna_drm_set_state {
            param,
            buffer_size,
            buffer
        }),
        layout!(amdxdna_drm_query_aie_version { major, minor }),
        layout!(amdxdna_drm_query_aie_tile_metadata {
            row_count,
            row_start,
            dma_channel_count,
            lock_count,
            event_reg_count,
            pad
        }),
        layout!(amdxdna_drm_query_aie_metadata {
            col_size,
            cols,
            rows,
            version,
            core,
            mem,
            shim
        }),
        layout!(amdxdna_drm_query_clock {
            name,
            freq_mhz,
            pad
        }),
        layout!(amdxdna_drm_query_clock_metadata {
            mp_npu_clock,
            h_clock
        }),
        layout!(amdxdna_drm_query_firmware_version {
            major,
            minor,
            patch,
            build
        }),
        layout!(amdxdna_drm_query_aie_status {
            buffer,
            buffer_size,
            cols_filled
        }),
        layout!(amdxdna_drm_query_sensor {
            label,
            input,
            max,
            average,
            highest,
            status,
            units,
            unitm,
            r#type,
            pad
        }),
        layout!(amdxdna_drm_query_hwctx {
            context_id,
            start_col,
            num_col,
            pad,
            pid,
            command_submissions,
            command_completions,
            migrations,
            preemptions,
            errors
        }),
        layout!(amdxdna_drm_get_power_mode { power_mode, pad }),
        layout!(amdxdna_drm_set_power_mode { power_mode, pad }),
        layout!(amdxdna_drm_attribute_state { state, pad }),
        layout!(amdxdna_drm_va_entry { vaddr, len }),
        layout!(amdxdna_drm_va_tbl {
            dmabuf_fd,
            num_entries,
            va_entries
        }),
        layout!(amdxdna_drm_get_array {
            param,
            element_size,
            num_element,
            pad,
            buffer
        }),
        layout!(amdxdna_drm_hwctx_entry {
            context_id,
            start_col,
            num_col,
            hwctx_id,
            pid,
            command_submissions,
            command_completions,
            migrations,
            preemptions,
            errors,
            priority,
            heap_usage,
            suspensions,
            state,
            pasid,
            gops,
            fps,
            dma_bandwidth,
            latency,
            frame_exec_time,
            txn_op_idx,
            ctx_pc,
            fatal_error_type,
            fatal_error_exception_type,
            fatal_error_exception_pc,
            fatal_error_app_module,
            pad
        }),
        layout!(amdxdna_drm_get_resource_info {
            npu_clk_max,
            npu_tops_max,
            npu_task_max,
            npu_tops_curr,
            npu_task_curr
        }),
        layout!(amdxdna_async_error {
            err_code,
            ts_us,
            ex_err_code
        }),
        layout!(amdxdna_drm_bo_usage {
            pid,
            total_usage,
            internal_usage,
            heap_usage
        }),
        layout!(amdxdna_drm_query_telemetry_header {
            major,
            minor,
            r#type,
            map_num_elements,
            map
        }),
        layout!(drm_version {
            version_major,
            version_minor,
            version_patchlevel,
            name_len,
            name,
            date_len,
            date,
            desc_len,
            desc
        }),
        layout!(drm_gem_close { handle, pad }),
        layout!(drm_prime_handle { handle, flags, fd }),
        layout!(drm_syncobj_create { handle, flags }),
        layout!(drm_syncobj_destroy { handle, pad }),
        layout!(drm_syncobj_handle {
            handle,
            flags,
            fd,
            pad
        }),
        layout!(drm_syncobj_wait {
            handles,
            timeout_nsec,
            count_handles,
            flags,
            first_signaled,
            pad
        }),
        layout!(drm_syncobj_timeline_wait {
            handles,
            points,
            timeout_nsec,
            count_handles,
            flags,
            first_signaled,
            pad
        }),
        layout!(drm_syncobj_timeline_array {
            handles,
            points,
            count_handles,
            flags
        }),
    ]
}

/// The whole table as text: per struct a line `name size`, then one line `field offset size` per
/// field; then one line `NAME = 0x........` per request number. Diffable against the output of
/// [`c_program`] compiled with the real headers.
pub fn layout_table() -> String {
    layout_table_part(TablePart::All)
}

/// Structs the 6.14 upstream header lacks (printed only when `DRM_IOCTL_AMDXDNA_GET_ARRAY` is
/// defined), and `wait_cmd` (only with `DRM_IOCTL_AMDXDNA_WAIT_CMD`).
const NOT_IN_6_14: &[&str] = &[
    "amdxdna_drm_va_entry",
    "amdxdna_drm_va_tbl",
    "amdxdna_drm_get_array",
    "amdxdna_drm_hwctx_entry",
    "amdxdna_drm_get_resource_info",
    "amdxdna_drm_attribute_state",
    "amdxdna_drm_query_telemetry_header",
    "amdxdna_async_error",
    "amdxdna_drm_bo_usage",
];

/// Which part of the table to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TablePart {
    /// Everything.
    All,
    /// Only the generic DRM structs and request numbers (`drm.h`).
    GenericDrm,
}

impl TablePart {
    fn has_struct(self, name: &str) -> bool {
        self == Self::All || name.starts_with("drm_")
    }

    fn has_request(self, name: &str) -> bool {
        self == Self::All || !name.contains("AMDXDNA")
    }
}

/// [`layout_table`] restricted to `part`.
pub fn layout_table_part(part: TablePart) -> String {
    use core::fmt::Write;
    let mut out = String::new();
    for s in struct_layouts()
        .into_iter()
        .filter(|s| part.has_struct(s.name))
    {
        let _ = writeln!(out, "{} {}", s.name, s.size);
        for f in &s.fields {
            let _ = writeln!(out, "{} {} {}", f.name, f.offset, f.size);
        }
    }
    for (name, value) in REQUESTS.iter().filter(|(n, _)| part.has_request(n)) {
        let _ = writeln!(out, "{name} = 0x{value:08X}");
    }
    out
}

/// A C program that prints [`layout_table_part`]'s format from the real headers
/// (`<drm/drm.h>` and `<drm/amdxdna_accel.h>`; for [`TablePart::GenericDrm`] only libdrm's
/// `<drm.h>`), so the outputs can be diffed on a machine that has them:
/// `cc -I<include dir> t.c && ./a.out | diff - <(amdxdna-uapi-table)`.
pub fn c_program(part: TablePart) -> String {
    use core::fmt::Write;
    let includes = match part {
        TablePart::All => "#include <drm/drm.h>\n#include <drm/amdxdna_accel.h>\n",
        TablePart::GenericDrm => "#include <drm.h>\n",
    };
    let mut c = format!(
        "/* Generated by amdxdna-uapi-table --c: prints the uAPI layout table from the headers. */\n\
         #include <stddef.h>\n#include <stdio.h>\n{includes}\
         #define S(t) printf(\"%s %zu\\n\", #t, sizeof(struct t))\n\
         #define F(t, f) printf(\"%s %zu %zu\\n\", #f, offsetof(struct t, f), sizeof(((struct t *)0)->f))\n\
         #define FX(t, f) printf(\"%s %zu 0\\n\", #f, offsetof(struct t, f))\n\
         #define R(r) printf(\"%s = 0x%08X\\n\", #r, (unsigned)(r))\n\
         int main(void) {{\n"
    );
    for s in struct_layouts()
        .into_iter()
        .filter(|s| part.has_struct(s.name))
    {
        let guard = if s.name == "amdxdna_drm_wait_cmd" {
            Some("DRM_IOCTL_AMDXDNA_WAIT_CMD")
        } else if NOT_IN_6_14.contains(&s.name) {
            Some("DRM_IOCTL_AMDXDNA_GET_ARRAY")
        } else {
            None
        };
        if let Some(g) = guard {
            let _ = writeln!(c, "#ifdef {g}");
        }
        let _ = writeln!(c, "  S({});", s.name);
        for f in &s.fields {
            let m = if f.size == 0 { "FX" } else { "F" };
            let _ = writeln!(c, "  {m}({}, {});", s.name, f.name);
        }
        if guard.is_some() {
            let _ = writeln!(c, "#endif");
        }
    }
    for (name, _) in REQUESTS.iter().filter(|(n, _)| part.has_request(n)) {
        let _ = writeln!(
            c,
            "#ifdef {name}\n  R({name});\n#else\n  printf(\"{name} = absent\\n\");\n#endif"
        );
    }
    c.push_str("  return 0;\n}\n");
    c
}

#[cfg(test)]
#[path = "uapi_tests.rs"]
mod tests;
