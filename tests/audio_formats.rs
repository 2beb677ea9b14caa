//! Every input format decodes to the samples faster-whisper would see: files made here from
//! jfk.wav with sox and ffmpeg (apt-get install sox libsox-fmt-all ffmpeg; nothing committed).
//! Lossless ones (FLAC, float WAV, 24-bit stereo) and G.711 (against sox's own expansion) must be
//! exact; lossy ones (MP3, Ogg Vorbis, AAC) are compared with FFmpeg's decode of the same file
//! (what faster-whisper uses, resampled by FFmpeg's swr to 16 kHz s16): same length within
//! 0.5 %, and an SNR above 60 dB (measured 78-84 dB: the decoders agree to about the s16
//! quantisation; a one-sample misalignment or a wrong scale drops it below 30 dB).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use amanuensis::model::audio::load_wav;

fn workdir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("amanuensis-formats-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs an encoder; a missing tool is a failure that says how to install it.
fn run(tool: &str, args: &[&str]) {
    let status = Command::new(tool).args(args).status().unwrap_or_else(|e| {
        panic!("{tool} is needed ({e}): apt-get install -y sox libsox-fmt-all ffmpeg")
    });
    assert!(status.success(), "{tool} {args:?} failed");
}

fn ffmpeg(input: &Path, extra: &[&str], output: &Path) {
    let mut args = vec!["-loglevel", "error", "-y", "-i", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(output.to_str().unwrap());
    run("ffmpeg", &args);
}

fn sox(args: &[&Path], effects: &[&str]) {
    let (input, output) = (args[0].to_str().unwrap(), args[1].to_str().unwrap());
    // sox IN [output options] OUT: options go before the output name.
    let mut v = vec![input];
    v.extend_from_slice(effects);
    v.push(output);
    run("sox", &v);
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn lossless_and_g711_inputs_are_exact() {
    let dir = workdir("lossless");
    let jfk = common::speech("jfk.wav");
    let reference = load_wav(&jfk).unwrap();

    let flac = dir.join("a.flac");
    ffmpeg(&jfk, &[], &flac);
    assert_eq!(bits(&load_wav(&flac).unwrap()), bits(&reference), "flac");

    let float = dir.join("float.wav");
    sox(&[&jfk, &float], &["-e", "floating-point", "-b", "32"]);
    assert_eq!(
        bits(&load_wav(&float).unwrap()),
        bits(&reference),
        "float wav"
    );

    let extensible = dir.join("ext24.wav");
    sox(&[&jfk, &extensible], &["-b", "24", "-c", "2"]);
    assert_eq!(
        bits(&load_wav(&extensible).unwrap()),
        bits(&reference),
        "24-bit stereo"
    );

    for encoding in ["mu-law", "a-law"] {
        let g711 = dir.join(format!("{encoding}.wav"));
        let expanded = dir.join(format!("{encoding}-s16.wav"));
        sox(&[&jfk, &g711], &["-e", encoding]);
        sox(&[&g711, &expanded], &["-e", "signed-integer", "-b", "16"]);
        assert_eq!(
            bits(&load_wav(&g711).unwrap()),
            bits(&load_wav(&expanded).unwrap()),
            "{encoding}: our expansion differs from sox's"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lossy_inputs_match_ffmpeg_decodes() {
    let dir = workdir("lossy");
    let jfk = common::speech("jfk.wav");
    // Known difference: symphonia 0.5 does not apply the M4A edit list, so the AAC encoder's
    // 1024 priming samples (64 ms at 16 kHz) stay at the start where FFmpeg drops them.
    for (name, codec, lead) in [
        ("a.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"][..], 0),
        ("a.ogg", &["-c:a", "libvorbis"][..], 0),
        ("a.m4a", &["-c:a", "aac", "-b:a", "64k"][..], 1024),
        (
            "b.mp3",
            &["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame"][..],
            0,
        ),
    ] {
        let encoded = dir.join(name);
        ffmpeg(&jfk, codec, &encoded);
        let decoded = dir.join(format!("{name}.wav"));
        ffmpeg(
            &encoded,
            &["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"],
            &decoded,
        );
        let ours = load_wav(&encoded).unwrap()[lead..].to_vec();
        let theirs = load_wav(&decoded).unwrap();
        let ratio = ours.len() as f64 / theirs.len() as f64;
        assert!(
            (ratio - 1.0).abs() < 0.005,
            "{name}: {} vs {} samples",
            ours.len(),
            theirs.len()
        );
        let n = ours.len().min(theirs.len());
        let signal: f64 = theirs[..n].iter().map(|&v| (v as f64).powi(2)).sum();
        let noise: f64 = ours[..n]
            .iter()
            .zip(&theirs[..n])
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let snr = 10.0 * (signal / noise).log10();
        assert!(
            snr > 60.0,
            "{name}: SNR {snr:.1} dB against FFmpeg's decode"
        );
        eprintln!(
            "{name}: {} samples (FFmpeg {}), SNR {snr:.1} dB",
            ours.len(),
            theirs.len()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
