//! The self-test walk on the emulated device (every driver profile, injected faults, fixture
//! xclbins) and on fake sysfs trees without an NPU.

use super::*;
use crate::npu::txn::tests::fixtures;

fn ops(s: &Step) -> Vec<&'static str> {
    s.calls.iter().map(|c| c.op).collect()
}

fn step<'a>(r: &'a Report, name: &str) -> &'a Step {
    r.steps.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn the_emulated_walk_passes_under_every_driver_profile() {
    for profile in DriverProfile::ALL {
        let r = run_emulated(profile, None, |_| {});
        let names: Vec<&str> = r.steps.iter().map(|s| s.name).collect();
        assert_eq!(names, STEPS, "{profile:?}");
        for s in &r.steps {
            assert_eq!(
                s.status,
                StepStatus::Ok,
                "{profile:?} {}: {}",
                s.name,
                s.message
            );
            assert!(s.calls.iter().all(|c| c.errno.is_none()), "{s:?}");
        }
        assert!(r.passed() && !r.no_device());
        assert_eq!(
            r.target,
            Target::Emulated {
                profile: profile.name()
            }
        );
        let d = r.device.as_ref().unwrap();
        assert_eq!(d.driver.major, profile.driver_version().0);
        assert_eq!(d.driver.minor, profile.driver_version().1);
        assert_eq!(d.force_cmdlist, profile.force_cmdlist());
        assert_eq!(
            ops(step(&r, "query device")),
            [
                "DRM_IOCTL_VERSION",
                "GET_INFO(AIE_VERSION)",
                "GET_INFO(AIE_METADATA)",
                "GET_INFO(FIRMWARE_VERSION)",
                "GET_INFO(CLOCK_METADATA)"
            ]
        );
        assert_eq!(
            ops(step(&r, "create heap")),
            ["CREATE_BO(DEV_HEAP)", "GET_BO_INFO", "mmap"]
        );
        assert_eq!(
            ops(step(&r, "allocate buffers")),
            [
                "CREATE_BO(DEV)",
                "GET_BO_INFO",
                "CREATE_BO(SHARE)",
                "GET_BO_INFO",
                "mmap",
                "GET_BO_INFO"
            ]
        );
        assert_eq!(ops(step(&r, "create context")), ["CREATE_HWCTX"]);
        assert_eq!(
            ops(step(&r, "configure CU")),
            ["CREATE_BO(DEV)", "GET_BO_INFO", "CONFIG_HWCTX(CONFIG_CU)"]
        );
        assert_eq!(
            ops(step(&r, "command ring")),
            ["CREATE_BO(CMD)", "GET_BO_INFO", "mmap", "GET_BO_INFO"]
        );
        let dispatch = step(&r, "dispatch");
        assert_eq!(ops(dispatch), ["EXEC_CMD", "SYNCOBJ_TIMELINE_WAIT"]);
        assert!(
            dispatch.message.contains("output verified"),
            "{}",
            dispatch.message
        );
        let teardown = ops(step(&r, "teardown"));
        assert_eq!(
            teardown,
            [
                "munmap",
                "GEM_CLOSE",
                "SYNCOBJ_DESTROY",
                "DESTROY_HWCTX",
                "GEM_CLOSE",
                "munmap",
                "GEM_CLOSE",
                "GEM_CLOSE",
                "munmap",
                "GEM_CLOSE"
            ],
            "CMD BO, context, PDI BO, arena SHARE + DEV BOs, heap"
        );
        let left = r.emu_after_teardown.clone().unwrap();
        assert_eq!(
            (
                left.live_bos,
                left.mapped_bos,
                left.live_hwctxs,
                left.live_syncobjs
            ),
            (0, 0, 0, 0)
        );
        assert_eq!((left.submitted, left.completed), (1, 1));
    }
}

#[test]
fn an_injected_fault_names_the_step_ioctl_and_errno_and_still_tears_down() {
    for profile in DriverProfile::ALL {
        let r = run_emulated(profile, None, |emu| {
            emu.fail_next("CREATE_HWCTX", Errno::NOMEM)
        });
        let f = r.first_failure().unwrap();
        assert_eq!(f.name, "create context");
        assert!(
            f.message.contains("CREATE_HWCTX failed: ENOMEM"),
            "{}",
            f.message
        );
        assert_eq!(f.calls[0].errno, Some(Errno::NOMEM));
        for name in ["configure CU", "command ring", "dispatch"] {
            let s = step(&r, name);
            assert_eq!(s.status, StepStatus::NotReached);
            assert_eq!(s.message, "not reached: step 'create context' failed");
        }
        let t = step(&r, "teardown");
        assert_eq!(t.status, StepStatus::Ok, "{}", t.message);
        assert_eq!(r.emu_after_teardown.as_ref().unwrap().live_bos, 0);
        assert!(!r.passed() && !r.no_device());
    }
    // A command ending in ERROR fails the dispatch step with the state.
    let r = run_emulated(DriverProfile::UpstreamCurrent, None, |emu| {
        emu.fail_exec(1, crate::npu::ert::CmdState::Error)
    });
    let f = r.first_failure().unwrap();
    assert_eq!(f.name, "dispatch");
    assert!(f.message.contains("ended in state Error"), "{}", f.message);
    // A failing munmap at teardown fails the teardown step, naming it.
    let clean = run_emulated(DriverProfile::UpstreamCurrent, None, |_| {});
    let before: usize = clean.steps[..STEPS.len() - 1]
        .iter()
        .map(|s| s.calls.len())
        .sum();
    let r = run_emulated(DriverProfile::UpstreamCurrent, None, |emu| {
        emu.fail_nth_call(before as u64 + 1, Errno::INVAL) // the first teardown call
    });
    let t = step(&r, "teardown");
    assert_eq!(t.status, StepStatus::Failed, "{r:#?}");
    assert!(t.message.contains("munmap failed: EINVAL"), "{}", t.message);
}

#[test]
fn fixture_xclbins_configure_on_the_emulator_or_say_why_not() {
    // Riallto (npu1, one column): the real PDI goes into CONFIG_HWCTX; no stream, no dispatch.
    let xclbin = std::fs::read(fixtures().join("riallto/color_threshold_v1_720p.xclbin")).unwrap();
    let p = WalkProgram {
        xclbin,
        insts: None,
        bytes: 4096,
        verify_copy: false,
    };
    let r = run_emulated(DriverProfile::UpstreamCurrent, Some(&p), |_| {});
    let cu = step(&r, "configure CU");
    assert_eq!(cu.status, StepStatus::Ok, "{}", cu.message);
    assert!(
        cu.message.contains("DPU kernel 0x201: PDI of 6416 B"),
        "{}",
        cu.message
    );
    assert!(cu.message.contains("cu_func 1"), "{}", cu.message);
    assert_eq!(
        step(&r, "allocate buffers").message,
        "3 buffers of 4096 B in one SHARE BO"
    );
    let d = step(&r, "dispatch");
    assert_eq!(d.status, StepStatus::Skipped);
    assert_eq!(d.message, "skipped: no instruction stream given (--insts)");
    assert_eq!(step(&r, "teardown").status, StepStatus::Ok);
    assert!(r.passed());
    // 1bit-MONSTER (npu2, 8 columns) does not fit the 5-column emulated NPU1.
    let xclbin =
        std::fs::read(fixtures().join("1bit-monster/final_i8_D_K512_N2048.xclbin")).unwrap();
    let p = WalkProgram { xclbin, ..p };
    let r = run_emulated(DriverProfile::UpstreamCurrent, Some(&p), |_| {});
    let f = r.first_failure().unwrap();
    assert_eq!(f.name, "create context");
    assert!(
        f.message == "invalid request: partition of 8 columns on a 5-column device",
        "{}",
        f.message
    );
}

fn temp_tree(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("amanuensis-selftest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn roots(root: &Path) -> SystemRoots {
    SystemRoots {
        sysfs_pci: root.join("sys/bus/pci/devices"),
        dev_accel: root.join("dev/accel"),
        module: root.join("sys/module/amdxdna"),
        proc_kernel: root.join("proc/sys/kernel"),
        firmware_dir: root.join("lib/firmware/amdnpu"),
    }
}

#[test]
fn without_an_npu_the_first_step_says_why() {
    let root = temp_tree("none");
    let r0 = roots(&root);
    std::fs::create_dir_all(&r0.sysfs_pci).unwrap();
    std::fs::create_dir_all(&r0.proc_kernel).unwrap();
    std::fs::write(r0.proc_kernel.join("osrelease"), "6.14.0-test\n").unwrap();
    let r = run_on_system(&r0, None);
    assert_eq!(r.system.kernel_release.as_deref(), Some("6.14.0-test"));
    assert!(!r.system.module.loaded);
    let f = r.first_failure().unwrap();
    assert_eq!(f.name, "find device node");
    assert!(
        f.message
            .starts_with("no /dev/accel/accel* node: no AMD NPU on the PCI bus")
            && f.message.contains("amdxdna module not loaded"),
        "{}",
        f.message
    );
    assert!(r.no_device());
    let names: Vec<&str> = r.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, STEPS);
    assert!(r.steps[1..]
        .iter()
        .all(|s| s.status == StepStatus::NotReached
            && s.message == "not reached: step 'find device node' failed"));

    // An NPU on the bus, module not loaded.
    let npu = r0.sysfs_pci.join("0000:c4:00.1");
    std::fs::create_dir_all(&npu).unwrap();
    std::fs::write(npu.join("vendor"), "0x1022\n").unwrap();
    std::fs::write(npu.join("device"), "0x17f0\n").unwrap();
    let r = run_on_system(&r0, None);
    assert_eq!(
        r.system.npu_pci,
        [("0000:c4:00.1".into(), "1022:17f0".into())]
    );
    let f = r.first_failure().unwrap();
    assert!(
        f.message
            .contains("is present but the amdxdna module is not loaded"),
        "{}",
        f.message
    );

    // The module loaded with parameters, a node in sysfs that is no DRM device.
    std::fs::create_dir_all(r0.module.join("parameters")).unwrap();
    std::fs::write(r0.module.join("parameters/force_cmdlist"), "Y\n").unwrap();
    std::fs::write(r0.module.join("parameters/timeout_in_sec"), "2\n").unwrap();
    std::fs::write(r0.module.join("version"), "2.19.0\n").unwrap();
    std::fs::create_dir_all(npu.join("accel/accel0")).unwrap();
    std::fs::create_dir_all(&r0.dev_accel).unwrap();
    let r = run_on_system(&r0, None);
    assert_eq!(
        r.system.module.params,
        [
            ("force_cmdlist".into(), "Y".into()),
            ("timeout_in_sec".into(), "2".into())
        ]
    );
    assert_eq!(r.system.module.version.as_deref(), Some("2.19.0"));
    let f = r.first_failure().unwrap();
    assert_eq!(f.name, "open");
    assert!(
        f.message.ends_with("accel0 does not exist"),
        "{}",
        f.message
    );
    assert_eq!(f.calls[0].errno, Some(Errno::NOENT));
    std::fs::write(r0.dev_accel.join("accel0"), b"").unwrap();
    let r = run_on_system(&r0, None);
    let f = r.first_failure().unwrap();
    assert_eq!(f.name, "identify driver");
    assert!(
        f.message
            .contains("is not a DRM device (DRM_IOCTL_VERSION: ENOTTY)"),
        "{}",
        f.message
    );
    assert_eq!(f.calls.len(), 1);
    assert_eq!(f.calls[0].op, "DRM_IOCTL_VERSION");
    assert!(r.no_device());
    let _ = std::fs::remove_dir_all(&root);
}
