//! The NPU subcommands as a user runs them: `amanuensis devices` and `amanuensis profile-dispatch`.
//! Exit codes are documented in `src/npu_cmd.rs` (0 ok, 1 no usable NPU, 2 usage, 3 failed run).

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().expect("exited, not killed by a signal");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn devices_lists_or_explains_and_exits_cleanly() {
    let (code, out, err) = run(&["devices"]);
    assert!(!err.contains("panicked"), "{err}");
    match code {
        0 => assert!(
            out.contains("AIE version") && out.contains("columns"),
            "{out}"
        ),
        1 => {
            assert!(out.ends_with("no usable NPU\n"), "{out}");
            // Either a node with a reason, or why there is no node at all.
            assert!(
                out.contains("unusable: no usable NPU: ") || out.contains("no NPU device node: "),
                "{out}"
            );
        }
        other => panic!("exit code {other}: {out}{err}"),
    }
}

#[test]
fn profile_dispatch_on_the_emulator_is_labelled_and_verified() {
    let (code, out, err) = run(&[
        "profile-dispatch",
        "--backend",
        "emu",
        "-n",
        "200",
        "--bytes",
        "1024",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("profile-dispatch: EMULATED device"),
        "{out}"
    );
    assert!(
        out.contains("200 dispatches, 1024 B in + 1024 B out each, output verified"),
        "{out}"
    );
    for stage in ["submit", "wait", "total"] {
        assert!(
            out.contains(&format!("  {stage} ")) && out.contains("p99"),
            "{out}"
        );
    }
    assert!(
        out.contains("per-dispatch overhead (median submit + wait): "),
        "{out}"
    );
}

#[test]
fn profile_dispatch_usage_errors() {
    let (code, _, err) = run(&["profile-dispatch", "-n", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&[
        "profile-dispatch",
        "--backend",
        "emu",
        "--xclbin",
        "x.xclbin",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("apply to --backend npu only"), "{err}");
    let (code, out, err) = run(&["profile-dispatch", "--backend", "npu"]);
    // No NPU: 1 with the reason; an NPU but no program given: 2.
    assert!(
        code == 1 && out.contains("no usable NPU") || code == 2 && err.contains("--xclbin"),
        "{code} {out}{err}"
    );
}

/// `transcribe --device`: `auto` says on stderr which device it took and why; `npu` without a
/// usable NPU is a named error saying which step failed, status 1, no panic.
#[test]
fn transcribe_device_choice_is_said_and_npu_failures_name_the_step() {
    let wav = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/speech/jfk.wav");
    let wav = wav.to_str().unwrap();
    let has_npu = run(&["devices"]).0 == 0;
    let (code, out, err) = run(&["transcribe", "-m", "base.int8", "--device", "auto", wav]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ask not what your country"), "{out}");
    let first = err.lines().next().unwrap_or_default();
    if has_npu {
        assert!(first.starts_with("amanuensis: device "), "{err}");
    } else {
        assert!(
            first.starts_with(
                "amanuensis: device cpu (cpu-int8; auto: NPU open device failed: no usable NPU: "
            ),
            "{err}"
        );
        let (code, out, err) = run(&["transcribe", "-m", "base.int8", "--device", "npu", wav]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("amanuensis: device npu: open device failed: no usable NPU: "),
            "{err}"
        );
    }
    // f32 stays on the CPU under auto, and says so.
    let (code, _, err) = run(&["transcribe", "-m", "tiny.en", "--device", "auto", wav]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with("amanuensis: device cpu (cpu-f32; auto: the model runs in f32"),
        "{err}"
    );
}
