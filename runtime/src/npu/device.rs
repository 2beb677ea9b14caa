//! A device: a [`Driver`] whose identity and geometry have been queried.

use std::path::Path;
use std::sync::Arc;

use super::amdxdna::AmdxdnaDriver;
use super::driver::{retry_eintr, Backend, Driver};
use super::error::{errno_name, ioctl_err, NpuError, Result};
use super::ioctl::DrmVersion;
use super::uapi;

/// What the driver reports about the NPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `DRM_IOCTL_VERSION`.
    pub driver: DrmVersion,
    /// GET_INFO(AIE_VERSION): AIE architecture major.minor.
    pub aie_version: (u32, u32),
    /// GET_INFO(AIE_METADATA).
    pub metadata: uapi::amdxdna_drm_query_aie_metadata,
    /// GET_INFO(FIRMWARE_VERSION) as (major, minor, patch, build), if the query succeeded.
    pub firmware: Option<(u32, u32, u32, u32)>,
    /// GET_INFO(CLOCK_METADATA) as (name, MHz) pairs, if the query succeeded.
    pub clocks: Vec<(String, u32)>,
    /// The amdxdna module parameter `force_cmdlist` (`None`: absent), which decides whether
    /// START_CU regmaps over 19 words survive (F2).
    pub force_cmdlist: Option<bool>,
}

impl DeviceInfo {
    /// Columns of the array.
    pub fn columns(&self) -> u16 {
        self.metadata.cols
    }

    /// Rows of the array (all tile kinds).
    pub fn rows(&self) -> u16 {
        self.metadata.rows
    }

    /// Compute-tile rows (`core.row_count`), the factor of CREATE_HWCTX `num_tiles`.
    pub fn core_rows(&self) -> u16 {
        self.metadata.core.row_count
    }
}

fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The [`NpuError::NoDevice`] for a failed `open` of `node`.
pub fn open_failure(node: &Path, errno: super::error::Errno) -> NpuError {
    let shown = node.display();
    NpuError::NoDevice {
        reason: match errno_name(errno) {
            "EACCES" | "EPERM" => format!(
                "permission denied opening {shown} (the user needs read/write access to the node, usually via the 'render' group)"
            ),
            "ENOENT" => format!("{shown} does not exist"),
            name => format!("cannot open {shown}: {name} ({errno})"),
        },
    }
}

/// Refuse a DRM node whose driver is not amdxdna (e.g. a GPU's render node).
pub fn check_driver_name(node: &Path, version: &DrmVersion) -> Result<()> {
    if version.name == uapi::AMDXDNA_DRIVER_NAME {
        return Ok(());
    }
    Err(NpuError::NoDevice {
        reason: format!(
            "{} is driven by '{}' {}.{}.{}, not '{}'",
            node.display(),
            version.name,
            version.major,
            version.minor,
            version.patchlevel,
            uapi::AMDXDNA_DRIVER_NAME
        ),
    })
}

/// A queried device; cheap to clone (shares the driver).
#[derive(Clone)]
pub struct Device {
    driver: Arc<dyn Driver>,
    info: DeviceInfo,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("backend", &self.driver.backend())
            .field("info", &self.info)
            .finish()
    }
}

impl Device {
    /// Open a device node, confirm the DRM driver is amdxdna, and query it. Every failure is a
    /// [`NpuError::NoDevice`] whose reason names the node and the cause.
    pub fn open(node: &Path) -> Result<Self> {
        let shown = node.display();
        let driver = AmdxdnaDriver::open(node).map_err(|e| open_failure(node, e))?;
        let version = driver.version().map_err(|e| NpuError::NoDevice {
            reason: format!(
                "{shown} is not a DRM device (DRM_IOCTL_VERSION: {})",
                errno_name(e)
            ),
        })?;
        check_driver_name(node, &version)?;
        Self::from_driver(Arc::new(driver)).map_err(|e| NpuError::NoDevice {
            reason: format!("{shown}: query failed: {e}"),
        })
    }

    /// Query an already opened driver (real or emulated).
    pub fn from_driver(driver: Arc<dyn Driver>) -> Result<Self> {
        let version = retry_eintr(|| driver.version()).map_err(ioctl_err("DRM_IOCTL_VERSION"))?;
        let aie = retry_eintr(|| driver.query_aie_version())
            .map_err(ioctl_err("GET_INFO(AIE_VERSION)"))?;
        let metadata = retry_eintr(|| driver.query_aie_metadata())
            .map_err(ioctl_err("GET_INFO(AIE_METADATA)"))?;
        if metadata.cols == 0 || metadata.core.row_count == 0 {
            return Err(NpuError::Protocol {
                what: format!(
                    "AIE_METADATA reports {} columns and {} core rows",
                    metadata.cols, metadata.core.row_count
                ),
            });
        }
        // Firmware version and clocks are informational: their absence does not make the
        // device unusable.
        let firmware = retry_eintr(|| driver.query_firmware_version())
            .ok()
            .map(|f| (f.major, f.minor, f.patch, f.build));
        let clocks = retry_eintr(|| driver.query_clock_metadata())
            .map(|c| {
                [c.mp_npu_clock, c.h_clock]
                    .iter()
                    .map(|k| (c_name(&k.name), k.freq_mhz))
                    .collect()
            })
            .unwrap_or_default();
        let force_cmdlist = driver
            .module_param("force_cmdlist")
            .map(|v| matches!(v.as_str(), "Y" | "y" | "1"));
        Ok(Self {
            driver,
            info: DeviceInfo {
                driver: version,
                aie_version: (aie.major, aie.minor),
                metadata,
                firmware,
                clocks,
                force_cmdlist,
            },
        })
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Which implementation is behind this device.
    pub fn backend(&self) -> Backend {
        self.driver.backend()
    }

    /// The queried information.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_say_why() {
        use super::super::error::Errno;
        let n = Path::new("/dev/accel/accel0");
        let e = open_failure(n, Errno::ACCESS).to_string();
        assert!(
            e.contains("permission denied opening /dev/accel/accel0") && e.contains("render"),
            "{e}"
        );
        assert!(open_failure(n, Errno::NOENT)
            .to_string()
            .ends_with("/dev/accel/accel0 does not exist"));
        assert!(open_failure(n, Errno::NXIO)
            .to_string()
            .contains("cannot open /dev/accel/accel0: ENXIO"));
    }

    #[test]
    fn another_drm_driver_is_named() {
        let v = DrmVersion {
            major: 3,
            minor: 61,
            patchlevel: 0,
            name: "amdgpu".into(),
        };
        let e = check_driver_name(Path::new("/dev/accel/accel0"), &v)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no usable NPU: /dev/accel/accel0 is driven by 'amdgpu' 3.61.0, not 'amdxdna_accel_driver'"
        );
        let ok = DrmVersion {
            name: "amdxdna_accel_driver".into(),
            ..v
        };
        assert!(check_driver_name(Path::new("x"), &ok).is_ok());
    }
}
