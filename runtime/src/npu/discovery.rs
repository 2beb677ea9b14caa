//! Find NPU device nodes: PCI devices with an `accel/accelN` entry in sysfs
//! (`/sys/bus/pci/devices/<BDF>/accel/accelN` → `/dev/accel/accelN`, as XRT's `get_dev_node`).

use std::path::{Path, PathBuf};

use super::device::Device;
use super::error::NpuError;

/// The sysfs directory that lists PCI devices.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// The directory of accel device nodes.
pub const DEV_ACCEL: &str = "/dev/accel";
/// Present when the amdxdna module is loaded.
pub const SYSFS_AMDXDNA_MODULE: &str = "/sys/module/amdxdna";
/// PCI ids of AMD NPUs (vendor 1022): 1502 = NPU1, 17f0 = NPU2/4/5/6, and the ids the
/// out-of-tree driver also binds (17f1–17f3, 1b0a–1b0c; xdna-driver `amdxdna_pci_drv.c`).
pub const NPU_PCI_IDS: &[&str] = &[
    "1022:1502",
    "1022:17f0",
    "1022:17f1",
    "1022:17f2",
    "1022:17f3",
    "1022:1b0a",
    "1022:1b0b",
    "1022:1b0c",
];

/// PCI devices with an NPU id (whether or not a driver is bound), as `(address, id)`.
pub fn find_npu_pci_devices(sysfs_pci: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(devices) = std::fs::read_dir(sysfs_pci) else {
        return out;
    };
    for dev in devices.flatten() {
        let dir = dev.path();
        if let Some(id) = read_id(&dir, "vendor")
            .zip(read_id(&dir, "device"))
            .map(|(v, d)| format!("{v}:{d}"))
        {
            if NPU_PCI_IDS.contains(&id.as_str()) {
                out.push((dev.file_name().to_string_lossy().into_owned(), id));
            }
        }
    }
    out.sort();
    out
}

/// One accel node found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelNode {
    /// PCI address (`0000:c4:00.1`).
    pub pci_address: String,
    /// PCI vendor:device (`1022:1502`), if sysfs has the ids.
    pub pci_id: Option<String>,
    /// The device node (`/dev/accel/accel0`).
    pub node: PathBuf,
}

fn read_id(dir: &Path, file: &str) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(file)).ok()?;
    Some(s.trim().trim_start_matches("0x").to_string())
}

/// All accel nodes under `sysfs_pci` (normally [`SYSFS_PCI_DEVICES`]), mapped into `dev_accel`
/// (normally [`DEV_ACCEL`]), sorted by node name. An unreadable sysfs gives an empty list.
pub fn find_accel_nodes(sysfs_pci: &Path, dev_accel: &Path) -> Vec<AccelNode> {
    let mut out = Vec::new();
    let Ok(devices) = std::fs::read_dir(sysfs_pci) else {
        return out;
    };
    for dev in devices.flatten() {
        let dir = dev.path();
        let Ok(entries) = std::fs::read_dir(dir.join("accel")) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("accel") {
                let pci_id = read_id(&dir, "vendor")
                    .zip(read_id(&dir, "device"))
                    .map(|(v, d)| format!("{v}:{d}"));
                out.push(AccelNode {
                    pci_address: dev.file_name().to_string_lossy().into_owned(),
                    pci_id,
                    node: dev_accel.join(&name),
                });
            }
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// The outcome of probing every node.
#[derive(Debug)]
pub struct Discovery {
    /// Each node with the opened device or the precise reason it is unusable.
    pub nodes: Vec<(AccelNode, Result<Device, NpuError>)>,
    /// Set when no node was found at all: why.
    pub none_found: Option<String>,
}

impl Discovery {
    /// The first usable device, or a [`NpuError::NoDevice`] summarising every reason.
    pub fn first_usable(self) -> Result<Device, NpuError> {
        let mut reasons = Vec::new();
        for (_, r) in self.nodes {
            match r {
                Ok(d) => return Ok(d),
                Err(NpuError::NoDevice { reason }) => reasons.push(reason),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if let Some(why) = self.none_found {
            reasons.push(why);
        }
        Err(NpuError::NoDevice {
            reason: reasons.join("; "),
        })
    }
}

/// Why there is no accel node: no PCI sysfs, no NPU on the bus, the amdxdna module not loaded,
/// or loaded without creating a node. Shared by `devices`, `profile-dispatch` and `npu selftest`.
pub fn why_no_node(sysfs_pci: &Path, module: &Path) -> String {
    if !sysfs_pci.is_dir() {
        return format!(
            "{} does not exist (no PCI sysfs on this system)",
            sysfs_pci.display()
        );
    }
    let npus = find_npu_pci_devices(sysfs_pci);
    let loaded = module.is_dir();
    match (npus.first(), loaded) {
        (Some((addr, id)), false) => format!(
            "NPU PCI device {addr} [{id}] is present but the amdxdna module is not loaded ({} absent)",
            module.display()
        ),
        (Some((addr, id)), true) => format!(
            "NPU PCI device {addr} [{id}] is present and amdxdna is loaded, but it created no accel node (probe failed? see dmesg)"
        ),
        (None, _) => format!(
            "no AMD NPU on the PCI bus (no device {} under {}; amdxdna module {})",
            NPU_PCI_IDS.join(" or "),
            sysfs_pci.display(),
            if loaded { "loaded" } else { "not loaded" }
        ),
    }
}

/// Probe the nodes found under the given roots; `module` is the amdxdna module's sysfs directory.
pub fn discover_in(sysfs_pci: &Path, dev_accel: &Path, module: &Path) -> Discovery {
    let found = find_accel_nodes(sysfs_pci, dev_accel);
    let none_found = found.is_empty().then(|| why_no_node(sysfs_pci, module));
    let nodes = found
        .into_iter()
        .map(|n| {
            let r = Device::open(&n.node);
            (n, r)
        })
        .collect();
    Discovery { nodes, none_found }
}

/// Probe the system's accel nodes.
pub fn discover() -> Discovery {
    discover_in(
        Path::new(SYSFS_PCI_DEVICES),
        Path::new(DEV_ACCEL),
        Path::new(SYSFS_AMDXDNA_MODULE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_tree(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("amanuensis-npu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_sysfs_is_explained() {
        let d = discover_in(
            Path::new("/nonexistent/sysfs"),
            Path::new("/nonexistent/dev"),
            Path::new("/nonexistent/module"),
        );
        assert!(d.nodes.is_empty());
        let e = d.first_usable().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/sysfs does not exist"), "{e}");
    }

    #[test]
    fn finds_nodes_and_explains_each_failure() {
        let root = temp_tree("disc");
        let sys = root.join("sys");
        let dev = root.join("dev");
        for (bdf, node) in [
            ("0000:c4:00.1", "accel0"),
            ("0000:c5:00.1", "accel1"),
            ("0000:00:02.0", ""),
        ] {
            let p = sys.join(bdf);
            std::fs::create_dir_all(p.join("accel").join(node)).unwrap();
            std::fs::write(p.join("vendor"), "0x1022\n").unwrap();
            std::fs::write(p.join("device"), "0x1502\n").unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        // accel0 exists but is a plain file (not a DRM device); accel1 is missing.
        std::fs::write(dev.join("accel0"), b"").unwrap();
        let nodes = find_accel_nodes(&sys, &dev);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].pci_address, "0000:c4:00.1");
        assert_eq!(nodes[0].pci_id.as_deref(), Some("1022:1502"));
        assert_eq!(nodes[1].node, dev.join("accel1"));
        let d = discover_in(&sys, &dev, &root.join("module"));
        let reasons: Vec<String> = d
            .nodes
            .iter()
            .map(|(_, r)| r.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            reasons[0].contains("is not a DRM device (DRM_IOCTL_VERSION: ENOTTY)"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("accel1 does not exist"),
            "{}",
            reasons[1]
        );
        let e = d.first_usable().unwrap_err().to_string();
        assert!(e.contains("ENOTTY") && e.contains("does not exist"), "{e}");
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let module = root.join("module");
        let e = discover_in(&empty, &dev, &module)
            .first_usable()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no AMD NPU on the PCI bus") && e.contains("not loaded"),
            "{e}"
        );
        // An NPU on the bus without the module, then with the module but no node.
        let bus = root.join("bus");
        std::fs::create_dir_all(bus.join("0000:c4:00.1")).unwrap();
        std::fs::write(bus.join("0000:c4:00.1/vendor"), "0x1022\n").unwrap();
        std::fs::write(bus.join("0000:c4:00.1/device"), "0x17f0\n").unwrap();
        let e = discover_in(&bus, &dev, &module)
            .first_usable()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0000:c4:00.1 [1022:17f0] is present but the amdxdna module is not loaded"),
            "{e}"
        );
        std::fs::create_dir_all(&module).unwrap();
        let e = discover_in(&bus, &dev, &module)
            .first_usable()
            .unwrap_err()
            .to_string();
        assert!(e.contains("created no accel node"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_non_amdxdna_drm_node_is_rejected_by_name() {
        // /dev/null is not DRM: the open succeeds and the version check refuses it; the name
        // comparison itself is tested in device.rs.
        let e = Device::open(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a DRM device"), "{e}");
    }
}
