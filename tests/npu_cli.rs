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
        out.contains("200 dispatches, 1024 B in + 1024 B out each, depth 1 (at most 1 in flight), output verified"),
        "{out}"
    );
    for stage in ["flush", "submit", "wait", "invalidate", "total"] {
        assert!(
            out.contains(&format!("  {stage} ")) && out.contains("p99"),
            "{out}"
        );
    }
    assert!(
        out.contains("per-dispatch host time (median of flush + submit + wait + invalidate): "),
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
    let (code, _, err) = run(&[
        "transcribe",
        "-m",
        "tiny.en",
        "--precision",
        "f32",
        "--device",
        "auto",
        wav,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with("amanuensis: device cpu (cpu-f32; auto: the model runs in f32"),
        "{err}"
    );
}

#[test]
fn selftest_without_an_npu_names_the_failing_step_and_why() {
    let (code, out, err) = run(&["npu", "selftest"]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("system\n  kernel          "), "{out}");
    assert!(out.contains("amdxdna module  "), "{out}");
    for step in ["find device node", "open", "dispatch", "teardown"] {
        assert!(out.contains(step), "{out}");
    }
    match code {
        // This machine (and CI): no NPU node, so the first step fails and says why.
        1 => {
            let last = out.lines().last().unwrap();
            assert!(
                last.starts_with(
                    "result: FAILED at step 'find device node': no /dev/accel/accel* node: "
                ) || last.starts_with("result: FAILED at step 'open': ")
                    || last.starts_with("result: FAILED at step 'identify driver': "),
                "{out}"
            );
            assert!(
                out.contains("not loaded")
                    || out.contains("no AMD NPU")
                    || out.contains("permission"),
                "{out}"
            );
        }
        0 | 3 => assert!(out.contains("query device      ok"), "{out}"),
        other => panic!("exit code {other}: {out}{err}"),
    }
    // The same as JSON on standard output.
    let (code2, json, _) = run(&["npu", "selftest", "--json", "-"]);
    assert_eq!(code2, code);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["tool"], "amanuensis npu selftest");
    assert_eq!(v["emulated"], false);
    assert_eq!(v["steps"].as_array().unwrap().len(), 11);
    assert!(v["system"]["kernel_release"].is_string(), "{v}");
    assert!(
        v["system"]["amdxdna_module"]["parameters"].is_object(),
        "{v}"
    );
    if code == 1 {
        assert_eq!(v["passed"], false);
        let first = v["first_failure"]["step"].as_str().unwrap();
        assert_eq!(v["steps"][0]["name"], "find device node");
        assert!(
            ["find device node", "open", "identify driver"].contains(&first),
            "{v}"
        );
    }
}

#[test]
fn selftest_walks_the_emulated_device_under_every_profile() {
    let dir = std::env::temp_dir().join(format!("amanuensis-selftest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for profile in ["6.14", "upstream", "xdna"] {
        let json = dir.join(format!("{profile}.json"));
        let (code, out, err) = run(&[
            "npu",
            "selftest",
            "--emu",
            "--profile",
            profile,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.starts_with(&format!(
                "npu selftest: EMULATED device (driver profile '{profile}')"
            )),
            "{out}"
        );
        assert!(out.contains("output verified"), "{out}");
        assert!(out.contains("        EXEC_CMD "), "{out}");
        assert!(out.contains("result: PASSED\n"), "{out}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["emulated"], true);
        assert_eq!(v["target"]["profile"], profile);
        assert_eq!(v["passed"], true);
        let steps = v["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 11);
        assert!(steps.iter().all(|s| s["status"] == "ok"), "{v}");
        let calls: usize = steps
            .iter()
            .map(|s| s["calls"].as_array().unwrap().len())
            .sum();
        assert!(calls > 30, "{calls}");
        assert_eq!(v["device"]["columns"], 5);
    }
    // A fixture xclbin configures its CU; without --insts the dispatch is skipped.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/npu-fixtures/riallto/color_threshold_v1_720p.xclbin"
    );
    let (code, out, err) = run(&["npu", "selftest", "--emu", "--xclbin", fixture]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("DPU kernel 0x201: PDI of 6416 B"), "{out}");
    assert!(
        out.contains("skipped: no instruction stream given (--insts)"),
        "{out}"
    );
    // Usage errors.
    let (code, _, err) = run(&["npu", "selftest", "--emu", "--profile", "nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["npu", "selftest", "--profile", "xdna"]);
    assert_eq!(code, 2, "--profile needs --emu: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_dispatch_depths_csv_and_histogram_under_every_profile() {
    let dir = std::env::temp_dir().join(format!("amanuensis-pd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for profile in ["6.14", "upstream", "xdna"] {
        for depth in 1..=4 {
            let csv = dir.join(format!("{profile}-{depth}.csv"));
            let d = depth.to_string();
            let (code, out, err) = run(&[
                "profile-dispatch",
                "-n",
                "60",
                "--bytes",
                "256",
                "--depth",
                &d,
                "--profile",
                profile,
                "--latency-us",
                "50",
                "--csv",
                csv.to_str().unwrap(),
                "--histogram",
            ]);
            assert_eq!(code, 0, "{out}{err}");
            assert!(
                out.starts_with(&format!(
                    "profile-dispatch: EMULATED device (driver profile '{profile}', command latency 50 us)"
                )),
                "{out}"
            );
            assert!(
                out.contains(&format!(
                    "depth {depth} (at most {depth} in flight), output verified"
                )),
                "{out}"
            );
            let text = std::fs::read_to_string(&csv).unwrap();
            let mut lines = text.lines();
            assert_eq!(
                lines.next(),
                Some("index,bytes,flush_ns,submit_ns,wait_ns,invalidate_ns,total_ns")
            );
            let rows: Vec<Vec<u64>> = lines
                .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
                .collect();
            assert_eq!(rows.len(), 60);
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(r.len(), 7);
                assert_eq!(r[0], i as u64);
                assert_eq!(r[1], 512, "in + out");
                assert_eq!(r[6], r[2] + r[3] + r[4] + r[5], "total = sum of the stages");
            }
            // Histogram rows: "[lo, hi) us count bar"; the counts sum to the sample count.
            let counts: u64 = out
                .lines()
                .filter(|l| l.trim_start().starts_with('[') && l.contains(") us"))
                .map(|l| {
                    l.split(") us")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum();
            assert!(
                out.contains("histogram of the per-dispatch total (60 samples):"),
                "{out}"
            );
            assert_eq!(counts, 60, "{out}");
        }
    }
    let (code, _, err) = run(&["profile-dispatch", "--depth", "5"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["profile-dispatch", "--profile", "nope"]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
