//! Output files: named from the input, checked for collisions across the batch before any work,
//! written to a temporary name in the same folder, synced and renamed, so an interrupted or
//! failed run leaves the previous file intact and never a fragment.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use amanuensis::model::audio::AudioInput;
use amanuensis::output::FileFormat;

/// The output name's stem: the input's file name minus only its final extension
/// (`talk.part1.wav` → `talk.part1`, as openai-whisper's `os.path.splitext`); `stdin` for `-`.
pub fn output_stem(input: &AudioInput) -> OsString {
    match input {
        AudioInput::Stdin => "stdin".into(),
        AudioInput::File(path) => path
            .file_stem()
            .map_or_else(|| "transcript".into(), |s| s.to_os_string()),
    }
}

/// `DIR/STEM.EXT` for every input and format.
pub fn plan(dir: &Path, inputs: &[AudioInput], formats: &[FileFormat]) -> Vec<Vec<PathBuf>> {
    inputs
        .iter()
        .map(|input| {
            let stem = output_stem(input);
            formats
                .iter()
                .map(|f| {
                    let mut name = stem.clone();
                    name.push(".");
                    name.push(f.extension());
                    dir.join(name)
                })
                .collect()
        })
        .collect()
}

/// Two inputs that would write the same file: an error naming both (rather than renaming one,
/// which would make the output names depend on the order of the arguments).
pub fn find_collision(inputs: &[AudioInput], plan: &[Vec<PathBuf>]) -> Option<String> {
    let mut seen: std::collections::HashMap<&Path, usize> = std::collections::HashMap::new();
    for (i, outputs) in plan.iter().enumerate() {
        for path in outputs {
            if let Some(&j) = seen.get(path.as_path()) {
                if j != i {
                    return Some(format!(
                        "{} and {} would both write {}: rename one, or run them with different \
                         --output-dir folders",
                        inputs[j].name().display(),
                        inputs[i].name().display(),
                        path.display()
                    ));
                }
            }
            seen.insert(path, i);
        }
    }
    None
}

/// Creates the output folder and proves it writable (a probe file is created, synced and
/// removed), before any audio is decoded.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create output folder {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".amanuensis-probe-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| format!("output folder {} is not writable: {e}", dir.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (same folder, so the rename
/// stays within one file system), `fsync`, rename over `path`, then `fsync` of the folder. On any
/// error the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(names: &[&str]) -> Vec<AudioInput> {
        names
            .iter()
            .map(|n| AudioInput::from_arg(Path::new(n)))
            .collect()
    }

    #[test]
    fn stems_keep_everything_but_the_final_extension() {
        let plan = plan(
            Path::new("out"),
            &inputs(&[
                "talk.part1.wav",
                "interview 2024.01.15.wav",
                "d1/a.mp3",
                "-",
                ".hidden.wav",
            ]),
            &[FileFormat::Srt],
        );
        let names: Vec<_> = plan.iter().map(|p| p[0].clone()).collect();
        assert_eq!(
            names,
            [
                "out/talk.part1.srt",
                "out/interview 2024.01.15.srt",
                "out/a.srt",
                "out/stdin.srt",
                "out/.hidden.srt"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn collisions_name_both_inputs() {
        let ins = inputs(&["talk.part1.wav", "talk.part2.wav", "d1/a.wav", "d2/a.wav"]);
        let p = plan(Path::new("o"), &ins, &[FileFormat::Txt, FileFormat::Json]);
        let msg = find_collision(&ins, &p).unwrap();
        assert!(msg.contains("d1/a.wav") && msg.contains("d2/a.wav") && msg.contains("o/a.txt"));
        let ins = inputs(&["talk.part1.wav", "talk.part2.wav"]);
        assert!(find_collision(&ins, &plan(Path::new("o"), &ins, &[FileFormat::Txt])).is_none());
    }

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("amanuensis-atomic-{}", std::process::id()));
        prepare_dir(&dir).unwrap();
        let path = dir.join("x.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("x.txt")]);
        // A failing write (the target is a folder) leaves no temporary file behind.
        std::fs::create_dir(dir.join("d.txt")).unwrap();
        assert!(write_atomic(&dir.join("d.txt"), b"x").is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
