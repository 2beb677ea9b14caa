//! Issue 15, items 3 and 4, through the `amanuensis` binary: `--threads` is capped at the
//! available cores with a warning and `0` means all of them (`--timings` prints the count in
//! use); model files carry checksums that `--verify-model` checks; a model file truncated while
//! mapped is a named error, not a SIGBUS death.

mod common;

use std::process::{Command, Output};

fn amanuensis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(args)
        .output()
        .expect("running amanuensis")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The thread count of the `--timings` load line: `load time = X ms (PATH, N threads, BACKEND)`.
fn timings_threads(err: &str) -> usize {
    let line = err
        .lines()
        .find(|l| l.starts_with("load time = "))
        .unwrap_or_else(|| panic!("no load-time line: {err}"));
    let before = line
        .split(" threads")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .unwrap_or_else(|| panic!("no thread count: {line}"));
    before
        .parse()
        .unwrap_or_else(|e| panic!("{before:?}: {e} in {line}"))
}

#[test]
fn threads_are_capped_at_the_cores_and_zero_means_all() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let run = |threads: &str| {
        let o = amanuensis(&[
            "transcribe",
            "-m",
            "tiny.en.int8",
            "--threads",
            threads,
            "--timings",
            "-q",
            wav,
        ]);
        assert!(o.status.success(), "--threads {threads}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
        assert!(text.contains("ask not what your country"), "{text}");
        stderr(&o)
    };
    let err = run("1000");
    assert!(
        err.contains(&format!(
            "warning: --threads 1000 is more than the {cores} available cores: using {cores}"
        )),
        "{err}"
    );
    assert_eq!(timings_threads(&err), cores, "{err}");

    let err = run("0");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(timings_threads(&err), cores, "{err}");

    let err = run("1");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(timings_threads(&err), 1, "{err}");
}
