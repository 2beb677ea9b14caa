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

#[test]
fn setup_script_reconverts_files_of_an_older_format_version() {
    let script = std::fs::read_to_string(common::repo_root().join("scripts/setup-models.sh"))
        .expect("scripts/setup-models.sh");
    let line = script
        .lines()
        .find(|l| l.starts_with("FORMAT_VERSION="))
        .expect("FORMAT_VERSION= in setup-models.sh");
    assert_eq!(
        line.trim_start_matches("FORMAT_VERSION="),
        amanuensis::model::config::FORMAT_VERSION,
        "setup-models.sh must reconvert cached files older than what the converter writes"
    );
    assert!(script.contains("converting again"));
}

/// A scratch folder for one test.
fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("amanuensis-reliab-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// tiny.en converted by this tree (format_version 3, INT8) from the cached CTranslate2 files.
fn fresh_tiny_en_int8(dir: &std::path::Path) -> std::path::PathBuf {
    let ct2 = amanuensis::model_path::cache_dir()
        .join("ct2")
        .join("tiny.en");
    let out = dir.join("tiny.en.int8.safetensors");
    weights_tools::convert_with(
        &ct2,
        weights_tools::SourceKind::Ct2,
        weights_tools::Quantization::Int8,
        &out,
    )
    .unwrap_or_else(|e| panic!("{e} (run scripts/setup-models.sh tiny.en)"));
    out
}

/// A format_version 3 file rewritten as version 1: the tokenizer JSON back in the metadata, the
/// tokenizer tensors and the checksums dropped, the other tensors' data packed in file order.
fn as_version_1(bytes: &[u8]) -> Vec<u8> {
    use serde_json::Value;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let range = |v: &Value| {
        let o = &v["data_offsets"];
        o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize
    };
    let mut meta = header.remove("__metadata__").unwrap();
    let json = &data[range(&header["tokenizer.json"])];
    meta["tokenizer_json"] = Value::String(String::from_utf8(json.to_vec()).unwrap());
    meta["format_version"] = Value::String("1".into());
    let m = meta.as_object_mut().unwrap();
    m.remove("tensor_crc32");
    m.remove("metadata_crc32");
    let mut names: Vec<String> = header
        .keys()
        .filter(|k| !k.starts_with("tokenizer."))
        .cloned()
        .collect();
    names.sort_by_key(|k| range(&header[k]).start);
    let (mut out, mut packed) = (serde_json::Map::new(), Vec::new());
    for k in names {
        let mut t = header[&k].clone();
        let r = range(&t);
        t["data_offsets"] = serde_json::json!([packed.len(), packed.len() + r.len()]);
        packed.extend_from_slice(&data[r]);
        out.insert(k, t);
    }
    out.insert("__metadata__".into(), meta);
    let mut head = serde_json::to_vec(&out).unwrap();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(&packed);
    file
}

/// The first file offset of tensor `name`'s data.
fn tensor_offset(bytes: &[u8], name: &str) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize
}

#[test]
fn verify_model_checks_the_file_and_names_a_damaged_tensor() {
    let dir = scratch("verify");
    let model = fresh_tiny_en_int8(&dir);
    let wav = common::speech("jfk.wav");
    let wav = wav.to_str().unwrap();
    let o = amanuensis(&[
        "transcribe",
        "-m",
        model.to_str().unwrap(),
        "--verify-model",
        wav,
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("checksums verified (236 tensors"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout)
        .to_lowercase()
        .contains("ask not what your country"));

    // One bit of one weight: --verify-model refuses the file and names the tensor.
    let bytes = std::fs::read(&model).unwrap();
    let name = "decoder.blocks.2.mlp.0.weight";
    let mut bad = bytes.clone();
    bad[tensor_offset(&bytes, name) + 1000] ^= 0x10;
    let bad_path = dir.join("bit.safetensors");
    std::fs::write(&bad_path, &bad).unwrap();
    let o = amanuensis(&[
        "transcribe",
        "-m",
        bad_path.to_str().unwrap(),
        "--verify-model",
        wav,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&format!("tensor `{name}` fails its checksum"))
            && err.contains("scripts/setup-models.sh"),
        "{err}"
    );

    // A file from before checksums (format_version 1) loads, with a warning.
    let v1 = as_version_1(&bytes);
    let v1_path = dir.join("v1.safetensors");
    std::fs::write(&v1_path, &v1).unwrap();
    let o = amanuensis(&[
        "transcribe",
        "-m",
        v1_path.to_str().unwrap(),
        "--verify-model",
        wav,
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: --verify-model")
            && err.contains("no checksum in this file")
            && err.contains("re-run scripts/setup-models.sh"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the CLI on audio from standard input, truncates `model` once the model is loaded (the
/// `--timings` load line), then sends the audio. The model must never die of SIGBUS: either
/// the transcript (the weights were already copied out of the map, or read into memory), or
/// the named error.
fn truncate_after_load(model: &std::path::Path, extra: &[&str]) -> (Output, String) {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let mut args = vec!["transcribe", "-m", model.to_str().unwrap(), "--timings"];
    args.extend_from_slice(extra);
    args.push("-");
    let mut child = Command::new(env!("CARGO_BIN_EXE_amanuensis"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut err = String::new();
    for line in err_lines.by_ref() {
        let line = line.unwrap();
        err.push_str(&line);
        err.push('\n');
        if line.starts_with("load time = ") {
            break;
        }
    }
    assert!(err.contains("load time = "), "{err}");
    let len = std::fs::metadata(model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(model)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let audio = std::fs::read(common::speech("jfk.wav")).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&audio).unwrap();
    drop(stdin);
    for line in err_lines {
        err.push_str(&line.unwrap());
        err.push('\n');
    }
    let o = child.wait_with_output().unwrap();
    (o, err)
}

#[test]
fn a_model_truncated_while_in_use_is_a_named_error_not_a_signal() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("sigbus");
    let fresh = fresh_tiny_en_int8(&dir);
    for extra in [&[][..], &["--no-mmap"][..]] {
        let model = dir.join("in-use.safetensors");
        std::fs::copy(&fresh, &model).unwrap();
        let (o, err) = truncate_after_load(&model, extra);
        assert_eq!(
            o.status.signal(),
            None,
            "{extra:?}: killed by a signal: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
        if o.status.success() {
            assert!(text.contains("ask not what your country"), "{text}");
        } else {
            assert!(
                extra.is_empty(),
                "--no-mmap cannot see the file change: {err}"
            );
            assert!(err.contains("the model file changed while in use"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Deterministic form of the above, in-process: the file is opened (mapped, header checked),
/// then truncated before the weights are read, as `Model::load` reads them. Without the SIGBUS
/// guard this test binary dies of the signal.
#[test]
fn a_model_truncated_between_open_and_load_is_a_named_error() {
    use amanuensis::model::weights::{LoadError, WeightsFile};
    use amanuensis::model::whisper::Whisper;
    use amanuensis::runtime::cpu_int8_backend::CpuInt8Backend;
    let dir = scratch("open-then-cut");
    let model = fresh_tiny_en_int8(&dir);
    let header_end = {
        let b = std::fs::read(&model).unwrap();
        8 + u64::from_le_bytes(b[..8].try_into().unwrap())
    };
    let file = WeightsFile::open(&model).unwrap();
    // Cut at the end of the header: the first tensor read is past the end, so it faults (a
    // later cut could be seen by the size check after an earlier tensor, before any fault).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(header_end)
        .unwrap();
    let err = match Whisper::from_file(&file, CpuInt8Backend::new(1)) {
        Ok(_) => panic!("loaded from a truncated file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("the model file changed while in use"), "{err}");
    assert!(matches!(
        file.check_mapping(),
        Err(LoadError::ChangedWhileMapped { .. })
    ));
    // The same through the library with mmap off: the whole file is read at open, so a cut
    // afterwards changes nothing.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let model2 = fresh_tiny_en_int8(&other);
    let opts = amanuensis::LoadOptions {
        mmap: false,
        verify: true,
        threads: Some(1),
        ..Default::default()
    };
    let m = amanuensis::Model::load(&model2, &opts).unwrap();
    assert!(matches!(
        m.verification(),
        Some((amanuensis::Verification::Verified { tensors: 236, .. }, _))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
