//! The batch: every input is transcribed independently; a bad one is reported in one line
//! (file and reason) and the others go on. Exit status: 0 when all succeeded, 1 when any input
//! failed (or the model could not be loaded, or stdout failed), 2 for a usage error (found before
//! any work: bad flags, colliding output names, a language the model cannot do), 141 when the
//! reader of standard output went away.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amanuensis::guarded::{self, VadMode};
use amanuensis::model::audio::{AudioInput, AudioStream};
use amanuensis::model::clips::language_detection_seek;
use amanuensis::model::decode::guards::{SilenceMap, SpeechGate};
use amanuensis::model::mel::{LogMel, MelFrontend};
use amanuensis::model::mel_windows::{MelWindows, StreamedLogMel};
use amanuensis::model::session::WindowDone;
use amanuensis::model::session::{TranscribeOptions, Transcript};
use amanuensis::model::vad::Vad;
use amanuensis::model_path::resolve_model_for;
use amanuensis::output::{
    render_format, render_json, FileFormat, JsonMeta, OutputFormat, SegmentWriter,
};
use amanuensis::{LoadOptions, Model, Session};

use super::args::{Task, TranscribeArgs};
use super::decoding::DecodeArgs;
use super::outputs::{find_collision, plan, prepare_dir, write_atomic};
use super::progress::Progress;
use super::stdio::{note, out, StdoutError};

/// Exit status of a usage error (as clap's).
const USAGE: u8 = 2;

fn usage(message: &str) -> ExitCode {
    note(&format!("amanuensis: {message}"));
    ExitCode::from(USAGE)
}

/// Why one input failed, or that the whole run must stop.
enum Failure {
    Input(String),
    Stdout(StdoutError),
}

impl From<StdoutError> for Failure {
    fn from(e: StdoutError) -> Self {
        Failure::Stdout(e)
    }
}

/// Runs `amanuensis transcribe`.
pub fn run(args: &TranscribeArgs) -> ExitCode {
    let inputs: Vec<AudioInput> = args.files.iter().map(|f| AudioInput::from_arg(f)).collect();
    if inputs.iter().filter(|i| **i == AudioInput::Stdin).count() > 1 {
        return usage("standard input (-) can be given only once");
    }
    let timestamps = !args.no_timestamps;
    let formats = args.output_format.formats(timestamps);
    let dir = args.output_dir.as_deref();
    if dir.is_none() && args.output_format == OutputFormat::All {
        return usage("--output-format all writes files: give --output-dir");
    }
    let outputs = match dir {
        Some(dir) => {
            let p = plan(dir, &inputs, &formats);
            if let Some(message) = find_collision(&inputs, &p) {
                return usage(&message);
            }
            if let Err(message) = prepare_dir(dir) {
                note(&format!("amanuensis: {message}"));
                return ExitCode::FAILURE;
            }
            Some(p)
        }
        None => None,
    };

    let model_path = match resolve_model_for(args.model.as_deref(), args.precision.into()) {
        Ok(p) => p,
        Err(e) => {
            note(&format!("amanuensis: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let count = amanuensis::resolve_threads(args.threads);
    if let Some(warning) = count.warning() {
        note(&format!("amanuensis: warning: {warning}"));
    }
    let threads = count.threads;
    // The VAD's load and the first input's reading need nothing of the model but its mel filter
    // bank: they start now, on a thread of their own, while the model loads. Unless a usage
    // error is already known (it is reported below, in its turn, and nothing should run).
    let early = (args.decoding.validate(args.beam_size).is_ok()
        && args.subtitles().is_ok()
        && !(args.clip_timestamps.is_some() && args.decoding.vad))
        .then(|| start_early(args, &model_path, inputs.first()))
        .flatten();
    let t = Instant::now();
    let load = LoadOptions {
        device: args.device.into(),
        precision: args.precision.into(),
        threads: Some(threads),
        verify: args.verify_model,
        mmap: !args.no_mmap,
    };
    let engine = match Model::load(&model_path, &load) {
        Ok(m) => m,
        Err(e) => {
            note(&format!("amanuensis: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let model_time = t.elapsed();
    if !args.quiet && load.device != amanuensis::Device::Cpu {
        note(&format!(
            "amanuensis: device {} ({}; {})",
            engine.device().name(),
            engine.backend_name(),
            engine.device_choice()
        ));
    }
    match engine.verification() {
        Some((amanuensis::Verification::NoChecksums, _)) => note(&format!(
            "amanuensis: warning: --verify-model: {}: {}",
            model_path.display(),
            amanuensis::model::checksum::NO_CHECKSUMS
        )),
        Some((amanuensis::Verification::Verified { tensors, bytes }, time))
            if args.timings || !args.quiet =>
        {
            note(&format!(
                "amanuensis: {}: checksums verified ({tensors} tensors, {bytes} bytes, {:.1} ms)",
                model_path.display(),
                time.as_secs_f64() * 1e3
            ))
        }
        _ => {}
    }

    // Usage errors that need the model (its languages), before any audio is read.
    if let Err(message) = args.decoding.validate(args.beam_size) {
        return usage(&message);
    }
    if let Err(message) = args.subtitles() {
        return usage(&message);
    }
    if args.clip_timestamps.is_some() && args.decoding.vad {
        // faster-whisper silently drops vad_filter when clip_timestamps are given.
        return usage("--clip-timestamps and --vad cannot be combined");
    }
    let multilingual = engine.multilingual();
    let language = args
        .language
        .clone()
        .unwrap_or_else(|| if multilingual { "auto" } else { "en" }.to_string());
    if !multilingual {
        if language != "en" && language != "auto" {
            return usage(&format!(
                "--language {language}: {} is an English-only model; use a multilingual model \
                 (e.g. -m base) for other languages",
                model_path.display()
            ));
        }
        if args.task == Task::Translate {
            return usage(&format!(
                "--task translate: {} is an English-only model; use a multilingual model \
                 (e.g. -m base)",
                model_path.display()
            ));
        }
    } else if language != "auto" && !engine.languages().contains(&language) {
        return usage(&format!(
            "unknown language {language:?}; this model knows: {}",
            engine.languages().join(" ")
        ));
    }

    let ready = match prepare(&engine, args, inputs.first(), early) {
        Ok(r) => r,
        Err(e) => {
            note(&format!("amanuensis: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let Ready {
        mut session,
        vad,
        vad_remark,
        mut first,
        session_time,
    } = ready;
    if args.timings {
        let load_time = model_time + session_time;
        note(&format!(
            "load time = {:.1} ms ({}, {} threads, {})",
            load_time.as_secs_f64() * 1e3,
            model_path.display(),
            engine.threads(),
            engine.backend_name()
        ));
        note(&format!(
            "load parts = model {:.1} ms + session {:.1} ms (pool, pre-touched buffers; huge pages {}); \
             ready {:.1} ms (alongside: VAD, first input's first pass, weights prepared)",
            model_time.as_secs_f64() * 1e3,
            session_time.as_secs_f64() * 1e3,
            if amanuensis::runtime::resident::huge_pages_cold() {
                "cold, 4 KiB pages used"
            } else {
                "advised"
            },
            t.elapsed().as_secs_f64() * 1e3,
        ));
    }
    if let Some(remark) = vad_remark.filter(|_| !args.quiet) {
        note(&format!("amanuensis: {remark}"));
    }

    let mut failed: Vec<String> = Vec::new();
    let many = inputs.len() > 1;
    for (index, input) in inputs.iter().enumerate() {
        let name = input.name().display().to_string();
        let outputs = outputs.as_ref().map(|o| &o[index]);
        let result = transcribe_one(
            &engine,
            &mut session,
            vad.as_ref(),
            args,
            input,
            if index == 0 { first.take() } else { None },
            &name,
            &language,
            &formats,
            outputs,
            many && dir.is_none(),
        );
        match result {
            Ok(()) => {}
            Err(Failure::Input(reason)) => {
                note(&format!("amanuensis: {reason}"));
                failed.push(name);
            }
            Err(Failure::Stdout(e)) => return e.exit(),
        }
    }
    if many && !args.quiet {
        let ok = inputs.len() - failed.len();
        if failed.is_empty() {
            note(&format!(
                "amanuensis: {ok} of {} inputs transcribed",
                inputs.len()
            ));
        } else {
            note(&format!(
                "amanuensis: {ok} of {} inputs transcribed; failed: {}",
                inputs.len(),
                failed.join(", ")
            ));
        }
    }
    // The process ends here, and the kernel frees its whole address space at exit in one go:
    // dropping the model and the session first (a munmap per buffer and for the model's map, a
    // wake-and-join per pool thread) would only delay the exit. Outputs are written and flushed.
    std::mem::forget((engine, session, vad));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the batch needs besides the model: the session, the VAD, and the first input opened.
struct Ready {
    session: Session,
    vad: Option<Vad>,
    /// Why the VAD gate is off (no VAD model), to print unless `--quiet`.
    vad_remark: Option<String>,
    /// The first input, when it is a file.
    first: Option<Result<OpenedInput, String>>,
    /// Time creating the session took (on the calling thread).
    session_time: Duration,
}

/// What the thread started before the model's load ([`start_early`]) did: the VAD loaded, and
/// the first input read up to its first window (`None`: not read there, the input is read in
/// its turn or by [`prepare`]).
struct EarlyRead {
    vad: Option<Vad>,
    vad_remark: Option<String>,
    first: Option<Result<OpenedInput, String>>,
}

/// Starts, on a thread of its own, the VAD's load and the reading of the first input up to its
/// first window, with the mel frontend read from the model file at `model_path` (a map of its
/// own, the filter bank only): the model's load on the calling thread does not wait for them,
/// nor they for it. Standard input is not read here (nothing should wait on it before its turn),
/// nor with `--no-mmap` (the frontend would cost a second copy of the file). Prints nothing: a
/// VAD error is reported after the model's load and the usage checks, an input's error and
/// warnings in its turn, as without this thread. `None` if no thread could be started.
fn start_early(
    args: &TranscribeArgs,
    model_path: &std::path::Path,
    first: Option<&AudioInput>,
) -> Option<JoinHandle<Result<EarlyRead, String>>> {
    let decoding = args.decoding.clone();
    let first = first
        .filter(|i| **i != AudioInput::Stdin && !args.no_mmap)
        .cloned();
    let model_path = model_path.to_path_buf();
    std::thread::Builder::new()
        .name("early-read".into())
        .spawn(move || {
            // One thread: the VAD's GEMMs are too small to gain from a second (jfk.wav, best
            // of 15 in one process: 6.4-6.8 ms on 1 or 2 threads, same bits), and a pool of
            // its own would wake a worker per block on the cores the model loads on.
            let (vad, vad_remark) = decoding.load_vad(1)?;
            // A model file whose filter bank cannot be read fails its load, which is reported
            // first; should it load after all, the input is read in its turn as usual.
            let first = first.and_then(|input| {
                let frontend = Model::read_mel_frontend(&model_path).ok()?;
                Some(open_input(&frontend, vad.as_ref(), &decoding, &input))
            });
            Ok(EarlyRead {
                vad,
                vad_remark,
                first,
            })
        })
        .ok()
}

/// Creates the session (its pool and pre-touched buffers) on this thread while another takes
/// the early thread's work ([`start_early`]; without one, it loads the VAD and reads the first
/// input, a file, up to its first window itself); whichever is done first then prepares the
/// weights ([`Model::prepare_weights`]: code sums, the mapped file's page faults) that the first
/// window would otherwise prepare. Work a process pays once, spread over two cores instead of
/// done one part after another; what is computed is the same.
fn prepare(
    engine: &Model,
    args: &TranscribeArgs,
    first: Option<&AudioInput>,
    early: Option<JoinHandle<Result<EarlyRead, String>>>,
) -> Result<Ready, String> {
    let first = first.filter(|i| **i != AudioInput::Stdin);
    let weights = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let read = match early {
                Some(early) => early
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                None => {
                    let (vad, vad_remark) = args.decoding.load_vad(1)?;
                    EarlyRead {
                        vad,
                        vad_remark,
                        first: None,
                    }
                }
            };
            let first = read.first.or_else(|| {
                first.map(|i| {
                    open_input(engine.mel_frontend(), read.vad.as_ref(), &args.decoding, i)
                })
            });
            engine.prepare_weights(&weights);
            Ok::<_, String>(EarlyRead { first, ..read })
        });
        let session = engine.session();
        let session_time = started.elapsed();
        if session.is_ok() {
            engine.prepare_weights(&weights);
        }
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let session = session.map_err(|e| e.to_string())?;
        let EarlyRead {
            vad,
            vad_remark,
            first,
        } = read?;
        Ok(Ready {
            session,
            vad,
            vad_remark,
            first,
            session_time,
        })
    })
}

/// An input read up to its first window: the audio decoded whole with its log-mel (`--vad`),
/// or streamed with the guards gathered in the log-mel's first pass.
struct OpenedInput {
    /// The whole input (only under `--vad`, which cuts the audio itself).
    samples: Option<Vec<f32>>,
    mel: OpenedMel,
    /// The digital-silence map, the VAD's speech stretches and the VAD's time (streamed,
    /// guards on).
    guards: Option<(SilenceMap, Option<SpeechGate>, Duration)>,
    /// Decoder warnings, printed when the input's turn comes.
    warnings: Vec<String>,
    /// Wall time the opening took.
    time: Duration,
}

enum OpenedMel {
    InMemory(LogMel),
    Streamed(StreamedLogMel),
}

/// `name: text` unless the text (an audio error) already names the input.
fn input_error(name: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains(name) {
        text
    } else {
        format!("{name}: {text}")
    }
}

/// Reads `input` up to its first window. The input streams window by window; the guards
/// (digital silence, the VAD's speech stretches) are gathered in the log-mel's first pass.
/// Only `--vad`, which cuts the audio itself, decodes the input whole. Prints nothing (it may
/// run on another thread while the session is created): the caller prints the warnings.
fn open_input(
    frontend: &MelFrontend,
    vad: Option<&Vad>,
    decoding: &DecodeArgs,
    input: &AudioInput,
) -> Result<OpenedInput, String> {
    let started = Instant::now();
    let name = input.name().display().to_string();
    let error = |e: &dyn std::fmt::Display| input_error(&name, e);
    let mode = decoding.vad_mode();
    if decoding.whole_input() {
        let mut stream = AudioStream::open(input).map_err(|e| error(&e))?;
        let mut samples = Vec::new();
        while stream.read(&mut samples).map_err(|e| error(&e))? {}
        let mel = frontend.compute(&samples);
        return Ok(OpenedInput {
            samples: Some(samples),
            mel: OpenedMel::InMemory(mel),
            guards: None,
            warnings: stream.warnings(),
            time: started.elapsed(),
        });
    }
    let (mel, guards) = if mode == VadMode::Off {
        (
            StreamedLogMel::open(input, frontend).map_err(|e| error(&e))?,
            None,
        )
    } else {
        let s = guarded::open_streamed(input, frontend, vad, mode).map_err(|e| error(&e))?;
        (s.mel, Some((s.silence, s.gate, s.vad_time)))
    };
    Ok(OpenedInput {
        samples: None,
        warnings: mel.warnings().to_vec(),
        mel: OpenedMel::Streamed(mel),
        guards,
        time: started.elapsed(),
    })
}

/// Transcribes one input (opened already, or opened here) and writes or prints its outputs.
#[allow(clippy::too_many_arguments)]
fn transcribe_one(
    engine: &Model,
    session: &mut Session,
    vad: Option<&Vad>,
    args: &TranscribeArgs,
    input: &AudioInput,
    opened: Option<Result<OpenedInput, String>>,
    name: &str,
    language: &str,
    formats: &[FileFormat],
    outputs: Option<&Vec<PathBuf>>,
    header: bool,
) -> Result<(), Failure> {
    let started = Instant::now();
    let input_error = |e: &dyn std::fmt::Display| Failure::Input(input_error(name, e));
    let mode = args.decoding.vad_mode();
    let opened = opened
        .unwrap_or_else(|| open_input(engine.mel_frontend(), vad, &args.decoding, input))
        .map_err(Failure::Input)?;
    // Time for this input: its opening (perhaps done earlier, on another thread) and the rest.
    let open_time = opened.time;
    let started = started.checked_sub(open_time).unwrap_or(started);
    for warning in &opened.warnings {
        note(&format!("amanuensis: warning: {name}: {warning}"));
    }
    let samples = opened.samples;
    let guards = opened.guards;
    let mut in_memory;
    let mut streamed;
    let mel: &mut dyn MelWindows = match opened.mel {
        OpenedMel::InMemory(m) => {
            in_memory = m;
            &mut in_memory
        }
        OpenedMel::Streamed(m) => {
            streamed = m;
            &mut streamed
        }
    };
    if let (true, Some((_, _, vad_time))) = (args.timings, &guards) {
        note(&format!(
            "{name}: vad {:.1} ms",
            vad_time.as_secs_f64() * 1e3
        ));
    }
    let clips = args
        .clip_timestamps
        .as_ref()
        .map_or_else(Vec::new, |c| c.0.clone());
    let (language, probability) = if language == "auto" {
        let seek = language_detection_seek(&clips, mel.content_frames());
        let detected = session
            .detect_language_at(mel, seek)
            .map_err(|e| input_error(&e))?;
        if !args.quiet {
            note(&format!(
                "amanuensis: {name}: detected language {} (probability {:.2})",
                detected.code, detected.probability
            ));
        }
        (detected.code, Some(detected.probability))
    } else {
        (language.to_string(), None)
    };
    let opts = args.decoding.apply(TranscribeOptions {
        language: language.clone(),
        without_timestamps: args.no_timestamps,
        initial_prompt: args.initial_prompt.clone(),
        beam_size: args.beam_size,
        translate: args.task == Task::Translate,
        word_timestamps: args.word_timestamps,
        hallucination_silence_threshold: args.hallucination_silence_threshold,
        clip_timestamps: clips,
        ..Default::default()
    });
    let subtitles = args.subtitles().unwrap_or_default();

    // Live output: the line formats go to stdout as segments are decided; with --output-dir
    // the console view goes to stdout unless --quiet.
    let live_format = match outputs {
        None => formats.first().copied().filter(|f| *f != FileFormat::Json),
        Some(_) if !args.quiet => Some(FileFormat::Console {
            timestamps: !args.no_timestamps,
        }),
        Some(_) => None,
    };
    if header && live_format.is_some() {
        out(&format!("==> {name} <==\n"))?;
    }
    let mut writer = live_format.map(|f| SegmentWriter::with_subtitles(f, subtitles));
    if let Some(w) = &writer {
        out(w.header())?;
    }
    let progress = Progress::new(!args.quiet, name, mel.duration());
    let mut stdout_error: Option<StdoutError> = None;
    let mut hooks = amanuensis::Hooks::default();
    // Under --vad the windows' segments are on the speech-only timeline: printed once mapped.
    let live = mode != VadMode::Filter;
    let mut on_window = |done: WindowDone<'_>| {
        progress.update(done.done, done.duration);
        if let Some(w) = writer.as_mut().filter(|_| live) {
            for segment in done.segments {
                if stdout_error.is_none() {
                    let line = w.segment(segment);
                    if let Err(e) = progress.suspend(|| out(&line)) {
                        stdout_error = Some(e);
                    }
                }
            }
        }
    };
    let result = match &samples {
        Some(samples) => guarded::transcribe(
            session,
            vad,
            mode,
            samples,
            &opts,
            &mut hooks,
            &mut on_window,
        )
        .map(|(t, vad_time)| {
            if args.timings {
                note(&format!(
                    "{name}: vad {:.1} ms",
                    vad_time.as_secs_f64() * 1e3
                ));
            }
            t
        }),
        None => match &guards {
            Some((silence, gate, _)) => session.transcribe_windows_guarded(
                mel,
                Some(silence),
                gate.as_ref(),
                &opts,
                &mut hooks,
                &mut on_window,
            ),
            None => session.transcribe_windows(mel, &opts, &mut hooks, &mut on_window),
        },
    };
    progress.finish();
    if let Some(e) = stdout_error {
        return Err(Failure::Stdout(e));
    }
    let transcript = result.map_err(|e| input_error(&e))?;
    if !live {
        if let Some(w) = writer.as_mut() {
            for segment in &transcript.segments {
                let line = w.segment(segment);
                out(&line)?;
            }
        }
    }
    // The last word cue of srt/vtt by words.
    if let Some(w) = writer.as_mut() {
        out(&w.finish())?;
    }
    let meta = JsonMeta {
        file: name.to_string(),
        task: match args.task {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        }
        .into(),
        language,
        language_probability: probability,
        subtitles,
    };
    match outputs {
        Some(paths) => {
            for (format, path) in formats.iter().zip(paths) {
                let text = render_format(&transcript, *format, &meta);
                write_atomic(path, text.as_bytes())
                    .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
                if !args.quiet {
                    note(&format!("amanuensis: wrote {}", path.display()));
                }
            }
        }
        None => {
            if formats.first() == Some(&FileFormat::Json) {
                out(&render_json(&transcript, &meta))?;
            }
        }
    }
    if args.timings {
        report_timings(name, &transcript, started);
        if let Some(s) = engine.npu_stats() {
            note(&format!(
                "{name}: NPU (totals so far): {} submissions for {} linears, {:.1} MB to the device, {:.1} MB back, {:.1} MB of weights uploaded at load, {:.3} s in submit + wait",
                s.submissions,
                s.device_linears,
                s.bytes_to_device as f64 / 1e6,
                s.bytes_from_device as f64 / 1e6,
                s.weight_bytes as f64 / 1e6,
                s.device_ns as f64 / 1e9
            ));
        }
    }
    Ok(())
}

fn report_timings(name: &str, transcript: &Transcript, started: Instant) {
    let total = started.elapsed().as_secs_f64();
    let tm = &transcript.timings;
    note(&format!(
        "{name}: {:.2} s audio in {:.3} s ({:.1}x realtime) | mel {:.1} ms | encode {}x {:.1} ms | decode {} passes {:.1} ms ({:.2} ms/pass){}",
        transcript.duration,
        total,
        transcript.duration / total,
        tm.mel.as_secs_f64() * 1e3,
        tm.windows,
        tm.encode.as_secs_f64() * 1e3 / tm.windows.max(1) as f64,
        tm.decoder_passes,
        tm.decode.as_secs_f64() * 1e3,
        tm.decode.as_secs_f64() * 1e3 / tm.decoder_passes.max(1) as f64,
        if tm.words.is_zero() {
            String::new()
        } else {
            format!(" | of which words {:.1} ms", tm.words.as_secs_f64() * 1e3)
        },
    ));
}
