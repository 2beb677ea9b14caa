//! End-to-end checks of the `amanuensis` binary: bad input gets a clear error and a non-zero
//! exit, never a panic; the output formats are well formed on real speech.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn amanuensis(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amanuensis"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running amanuensis")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        err.contains(needle),
        "stderr does not mention {needle:?}: {err}"
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn missing_model_prints_the_setup_command() {
    let empty_cache =
        std::env::temp_dir().join(format!("amanuensis-empty-cache-{}", std::process::id()));
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &["transcribe", wav.to_str().unwrap()],
        &[
            ("AMANUENSIS_CACHE", empty_cache.to_str().unwrap()),
            ("AMANUENSIS_MODEL", ""),
        ],
    );
    assert_clean_failure(&o, "scripts/setup-models.sh tiny.en.int8");
}

/// A cache folder holding links named `names` (`NAME.safetensors`) to the real cached files.
fn cache_with(test: &str, names: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-cache-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    for name in names {
        let real =
            amanuensis::model_path::resolve_model(Some(name)).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(real, dir.join(format!("models/{name}.safetensors"))).unwrap();
    }
    dir
}

/// The model file and backend the `--timings` load line names.
fn loaded(o: &Output) -> String {
    let err = stderr(o);
    assert!(o.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("load time")).unwrap();
    let (_, rest) = line.split_once('(').unwrap();
    rest.to_string()
}

#[test]
fn model_names_run_int8_by_default_and_f16_with_precision_f32() {
    let cache = cache_with("int8-default", &["tiny.en", "tiny.en.int8"]);
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let env = [
        ("AMANUENSIS_CACHE", cache.to_str().unwrap()),
        ("AMANUENSIS_MODEL", ""),
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["transcribe", "-q", "--timings"];
        args.extend_from_slice(extra);
        args.push(wav);
        loaded(&amanuensis(&args, &env))
    };
    for extra in [
        &[][..],
        &["-m", "tiny.en"],
        &["-m", "tiny.en.int8", "--precision", "f32"],
    ] {
        let got = run(extra);
        assert!(
            got.contains("models/tiny.en.int8.safetensors"),
            "{extra:?}: {got}"
        );
        if extra.is_empty() {
            assert!(got.contains("cpu-int8"), "{got}");
        }
    }
    for extra in [
        &["--precision", "f32"][..],
        &["-m", "tiny.en", "--precision", "f32"],
        &["-m", "tiny.en.f16"],
    ] {
        let got = run(extra);
        assert!(
            got.contains("models/tiny.en.safetensors"),
            "{extra:?}: {got}"
        );
        assert!(got.contains("cpu-f32"), "{extra:?}: {got}");
    }
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn precision_f32_without_the_f16_file_names_the_command() {
    let cache = cache_with("no-f16", &["tiny.en.int8"]);
    let wav = common::speech("jfk.wav");
    let env = [
        ("AMANUENSIS_CACHE", cache.to_str().unwrap()),
        ("AMANUENSIS_MODEL", ""),
    ];
    let o = amanuensis(
        &["transcribe", "--precision", "f32", wav.to_str().unwrap()],
        &env,
    );
    assert_clean_failure(&o, "models/tiny.en.safetensors");
    assert_clean_failure(
        &o,
        "--precision f32 (the exact reference) needs the f16 file",
    );
    assert_clean_failure(
        &o,
        "To fetch and convert it: scripts/setup-models.sh tiny.en\n",
    );
    // And the INT8 file missing: the default names its command.
    let cache2 = cache_with("no-int8", &["tiny.en"]);
    let o = amanuensis(
        &["transcribe", "-m", "tiny.en", wav.to_str().unwrap()],
        &[("AMANUENSIS_CACHE", cache2.to_str().unwrap())],
    );
    assert_clean_failure(&o, "scripts/setup-models.sh tiny.en.int8");
    assert_clean_failure(&o, "-m tiny.en.f16");
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_dir_all(&cache2).unwrap();
}

#[test]
fn corrupt_or_missing_audio_is_a_clear_error() {
    let bad = temp_file("bad.wav", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk");
    let o = amanuensis(&["transcribe", "-m", "tiny.en", bad.to_str().unwrap()], &[]);
    assert_clean_failure(&o, "bad.wav");
    let o = amanuensis(&["transcribe", "-m", "tiny.en", "/nonexistent/x.wav"], &[]);
    assert_clean_failure(&o, "/nonexistent/x.wav");
}

#[test]
fn truncated_model_file_is_a_clear_error() {
    let model =
        amanuensis::model_path::resolve_model(Some("tiny.en")).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&model).unwrap();
    let cut = temp_file("cut.safetensors", &bytes[..bytes.len() / 2]);
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            cut.to_str().unwrap(),
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert_clean_failure(&o, "cut.safetensors");

    // The VAD's load and the first input's reading start before the model's load, but their
    // errors keep their turn: a model that fails to load is reported alone, then the usage
    // errors that need the model, then the VAD's, and a bad first input when its turn comes.
    let bad = temp_file("bad-first.wav", b"RIFF\x04\0\0\0WAVE");
    let bad = bad.to_str().unwrap();
    let no_vad = ["--vad", "--vad-model", "/nonexistent/vad.onnx"];
    let run = |model: &str, extra: &[&str]| {
        let mut args = vec!["transcribe", "-m", model];
        args.extend(no_vad);
        args.extend(extra);
        args.push(bad);
        amanuensis(&args, &[])
    };
    let o = run(cut.to_str().unwrap(), &[]);
    assert_clean_failure(&o, "cut.safetensors");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("bad-first") && !err.contains("VAD"), "{err}");
    let o = run("tiny.en", &["-l", "fr"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("English-only"), "{err}");
    assert!(!err.contains("bad-first") && !err.contains("VAD"), "{err}");
    let o = run("tiny.en", &[]);
    assert_clean_failure(&o, "no VAD model at /nonexistent/vad.onnx");
    assert!(!stderr(&o).contains("bad-first"), "{}", stderr(&o));
}

#[test]
fn srt_and_json_outputs_on_real_speech() {
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "--precision",
            "f32",
            "--output-format",
            "srt",
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let srt = String::from_utf8(o.stdout).unwrap();
    assert!(
        srt.starts_with("1\n00:00:00,000 --> 00:00:07,740\nAnd so my fellow Americans"),
        "{srt}"
    );
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "--output-format",
            "json",
            "--no-timestamps",
            wav.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v["text"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
    // Without timestamps a window is one segment spanning the audio.
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
}

// ---- Inputs, batch semantics, outputs, standard output (issues 11 and 15) ----

fn jfk_bytes() -> Vec<u8> {
    std::fs::read(common::speech("jfk.wav")).unwrap()
}

/// A scratch folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// The offset of the `data` chunk's size field in jfk.wav.
fn data_size_offset(wav: &[u8]) -> usize {
    wav.windows(4).position(|w| w == b"data").unwrap() + 4
}

/// `-` reads standard input; the unknown-length header a pipe gets (0xFFFFFFFF) and a size of 0
/// decode the whole stream (the second with a warning), with the same transcript as the file.
#[test]
fn stdin_and_unknown_length_headers() {
    let wav = common::speech("jfk.wav");
    let file = amanuensis(&["transcribe", "-m", "tiny.en", wav.to_str().unwrap()], &[]);
    assert!(file.status.success(), "{}", stderr(&file));
    let at = data_size_offset(&jfk_bytes());
    for (size, warns) in [(None, false), (Some(u32::MAX), false), (Some(0u32), true)] {
        let mut bytes = jfk_bytes();
        if let Some(size) = size {
            bytes[at..at + 4].copy_from_slice(&size.to_le_bytes());
        }
        let o = run_with_stdin(&["transcribe", "-m", "tiny.en", "-"], &bytes);
        assert!(o.status.success(), "{size:?}: {}", stderr(&o));
        assert_eq!(o.stdout, file.stdout, "{size:?}");
        assert_eq!(
            stderr(&o).contains("warning"),
            warns,
            "{size:?}: {}",
            stderr(&o)
        );
    }
}

/// `good bad good`: the bad one is one line naming it, the others are transcribed, exit 1, and
/// a summary line; all good is exit 0.
#[test]
fn batch_continues_after_a_bad_input() {
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let dir = scratch("batch");
    let bad = dir.join("bad.wav");
    std::fs::write(&bad, b"RIFF\x04\0\0\0WAVE").unwrap();
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "-f",
            "txt",
            wav,
            bad.to_str().unwrap(),
            wav,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("ask not what your country").count(), 2, "{out}");
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.contains("bad.wav")).count(),
        2,
        "{err}"
    ); // error + summary
    assert!(err.contains("2 of 3 inputs transcribed; failed:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A bad first input (read while the session is created) is reported in its turn too.
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "-f",
            "txt",
            bad.to_str().unwrap(),
            wav,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("ask not what your country").count(), 1, "{out}");
    let err = stderr(&o);
    assert!(err.contains("1 of 2 inputs transcribed; failed:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Usage errors exit 2 before any work.
#[test]
fn usage_errors_exit_2() {
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let dir = scratch("usage");
    let (d1, d2) = (dir.join("d1"), dir.join("d2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::copy(wav, d1.join("a.wav")).unwrap();
    std::fs::copy(wav, d2.join("a.mp3")).unwrap();
    let out = dir.join("out");
    let (a1, a2) = (d1.join("a.wav"), d2.join("a.mp3"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "-o",
                out.to_str().unwrap(),
                a1.to_str().unwrap(),
                a2.to_str().unwrap(),
            ],
            "would both write",
        ),
        (vec!["-f", "all", wav], "give --output-dir"),
        (vec!["-l", "fr", wav], "English-only"),
        (vec!["--task", "translate", wav], "English-only"),
        (vec!["-", "-"], "only once"),
        (vec!["--no-such-flag", wav], "no-such-flag"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["transcribe", "-m", "tiny.en"];
        full.extend(args.iter().copied());
        let o = amanuensis(&full, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    // The collision was found before anything was written (or even created).
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// --output-dir: created (nested), DIR/NAME.EXT with NAME the whole file name minus its final
/// extension, `all` writes five formats, no temporary file is left.
#[test]
fn output_dir_names_and_formats() {
    let dir = scratch("outdir");
    let (a, b) = (dir.join("talk.part1.wav"), dir.join("talk.part2.wav"));
    std::fs::write(&a, jfk_bytes()).unwrap();
    std::fs::write(&b, jfk_bytes()).unwrap();
    let out = dir.join("new/nested");
    // The f32 reference: the segment times below are faster-whisper's.
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "--precision",
            "f32",
            "-q",
            "-f",
            "all",
            "-o",
            out.to_str().unwrap(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "--quiet with --output-dir prints nothing"
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = ["talk.part1", "talk.part2"]
        .iter()
        .flat_map(|s| ["json", "srt", "tsv", "txt", "vtt"].map(|e| format!("{s}.{e}")))
        .collect();
    want.sort();
    assert_eq!(names, want);
    let srt = std::fs::read_to_string(out.join("talk.part2.srt")).unwrap();
    assert!(
        srt.starts_with("1\n00:00:00,000 --> 00:00:07,740\n"),
        "{srt}"
    );
    let tsv = std::fs::read_to_string(out.join("talk.part1.tsv")).unwrap();
    assert!(tsv.starts_with("start\tend\ttext\n0\t7740\t"), "{tsv}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An output folder that cannot be created is an error before any audio is decoded (the bad
/// input's own error never shows).
#[test]
fn unusable_output_dir_fails_before_decoding() {
    let dir = scratch("unusable");
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = dir.join("bad.wav");
    std::fs::write(&bad, b"not audio").unwrap();
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "-o",
            blocker.join("sub").to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot create output folder"), "{err}");
    assert!(
        !err.contains("bad.wav"),
        "decoded before checking the folder: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Several inputs with json on stdout: one valid document per line.
#[test]
fn json_lines_on_stdout() {
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let o = amanuensis(
        &["transcribe", "-m", "tiny.en", "-f", "json", wav, wav],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let docs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    for d in docs {
        assert_eq!(d["task"], "transcribe");
        assert_eq!(d["language"], "en");
        assert_eq!(d["segments"][0]["id"], 0);
        assert!(d["segments"][0]["no_speech_prob"].is_f64());
    }
}

/// A reader that goes away (`| head -1`) ends the run quietly with status 141; `> /dev/full`
/// is a named error with status 1; never a panic.
#[test]
fn closed_or_full_stdout_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["transcribe", "-m", "tiny.en", wav, wav, wav])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader is dropped here: the pipe closes
    assert!(first.starts_with("==> "), "{first}");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
    // Only the device choice (`--device auto`) is said on stderr.
    let err = stderr(&o);
    assert!(
        err.lines().all(|l| l.starts_with("amanuensis: device ")),
        "not quiet: {err}"
    );

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(["transcribe", "-m", "tiny.en", wav])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot write to standard output") && err.contains("No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A full disk: the previous complete transcript stays intact and no fragment or temporary
/// file is left. Needs a small tmpfs (root with CAP_SYS_ADMIN, as CI runs); where mounting is
/// not allowed the test says so and checks nothing.
#[test]
fn full_disk_keeps_the_previous_transcript() {
    let dir = scratch("fulldisk");
    let mount = dir.join("mnt");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            mount.to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("full_disk_keeps_the_previous_transcript: cannot mount a tmpfs here; not tested");
        return;
    }
    let previous = "a complete earlier transcript\n";
    let target = mount.join("jfk.txt");
    std::fs::write(&target, previous).unwrap();
    // Fill the rest of the file system.
    let _ = std::fs::write(mount.join("filler"), vec![0u8; 64 * 1024]);
    let wav = common::speech("jfk.wav");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "-q",
            "-f",
            "txt",
            "-o",
            mount.to_str().unwrap(),
            wav.to_str().unwrap(),
        ],
        &[],
    );
    let kept = std::fs::read_to_string(&target).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&mount)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    let _ = Command::new("umount").arg(&mount).status();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No space left") || stderr(&o).contains("not writable"),
        "{}",
        stderr(&o)
    );
    assert_eq!(kept, previous, "the earlier transcript was damaged");
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Inputs that are not audio are refused at once (`/dev/zero` is not read until memory runs
/// out); a float WAV with a wild sample (1e20) is clipped and transcribed as the original.
#[test]
fn hostile_inputs() {
    let o = amanuensis(&["transcribe", "-m", "tiny.en", "/dev/zero"], &[]);
    assert_clean_failure(&o, "not a recognised audio format");
    let dir = scratch("hostile");
    let wav = common::speech("jfk.wav");
    let float = dir.join("float.wav");
    let status = Command::new("sox")
        .args([
            wav.to_str().unwrap(),
            "-e",
            "floating-point",
            "-b",
            "32",
            float.to_str().unwrap(),
        ])
        .status()
        .expect("sox is needed: apt-get install -y sox");
    assert!(status.success());
    let mut bytes = std::fs::read(&float).unwrap();
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    let at = data + 4 * 16000; // a sample 1 s in
    bytes[at..at + 4].copy_from_slice(&1e20f32.to_le_bytes());
    std::fs::write(&float, &bytes).unwrap();
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "tiny.en",
            "-f",
            "txt",
            float.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Multilingual: `--language auto` (the default for base) detects French and says so on stderr
/// and in the json; `--task translate` runs; an unknown model name lists the cached ones.
#[test]
fn language_detection_translate_and_model_names() {
    let fr = common::goldens_dir().join("languages/fr.flac");
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "base",
            "-f",
            "json",
            fr.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("detected language fr"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["language"], "fr");
    assert!(v["language_probability"].as_f64().unwrap() > 0.3);
    let o = amanuensis(
        &[
            "transcribe",
            "-m",
            "base",
            "-l",
            "fr",
            "--task",
            "translate",
            "-f",
            "json",
            fr.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"], "translate");
    let o = amanuensis(&["transcribe", "-m", "tiny", fr.to_str().unwrap()], &[]);
    assert_clean_failure(&o, "Cached models");
    assert!(
        stderr(&o).contains("can fetch: tiny.en, base"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("setup-models.sh tiny\n"),
        "{}",
        stderr(&o)
    );
}
