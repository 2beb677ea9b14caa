//! The embedding API: a [`Model`] loaded once (backend chosen at run time and hidden), any
//! number of [`Session`]s over it, each transcribing on its own thread.

use std::path::Path;
use std::sync::Arc;

pub use amanuensis_model::checksum::Verification;
use amanuensis_model::config::{Dims, ModelConfig};
use amanuensis_model::decode::guards::{SilenceMap, SpeechGate};
use amanuensis_model::error::WhisperError;
use amanuensis_model::mel::MelFrontend;
use amanuensis_model::mel_windows::MelWindows;
use amanuensis_model::session::{
    self as model_session, DetectedLanguage, Hooks, TranscribeOptions, Transcript, WindowDone,
};
use amanuensis_model::weights::{LoadError, Quantization, WeightsFile};
use amanuensis_model::whisper::{Submissions, Whisper};
use amanuensis_runtime::cpu_backend::CpuBackend;
use amanuensis_runtime::cpu_int8_backend::CpuInt8Backend;
use amanuensis_runtime::npu::discovery;
use amanuensis_runtime::npu_backend::{emulated_device, GemmProgramFiles, NpuBackend, NpuStats};

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The NPU when one is usable, its GEMM programs are present and load, and their self-test
    /// (`C == A·B` on fixed data) passes; else the CPU ([`Model::device_choice`] says which and
    /// why).
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The AMD Ryzen AI NPU: the INT8 path with the linears that have a device GEMM program
    /// ([`npu_program_dirs`]) on the NPU, the rest on the CPU.
    Npu,
    /// [`Device::Npu`] on the emulated device (the instruction streams run on its shim-DMA
    /// interpreter and an array model; slow, for tests).
    Emu,
}

impl Device {
    /// `auto`, `cpu`, `npu`, `emu`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Npu => "npu",
            Device::Emu => "emu",
        }
    }
}

/// Environment variable naming the directory of the NPU GEMM programs.
pub const NPU_PROGRAMS_ENV: &str = "AMANUENSIS_NPU_PROGRAMS";

/// Where the NPU GEMM programs (`final_*_K{k}_N{n}.xclbin` + `insts_*_K{k}_N{n}.txt`) are looked
/// for, in order: `$AMANUENSIS_NPU_PROGRAMS`, `~/.cache/amanuensis/npu`, and the fixture
/// directory of the source tree this binary was built from (`../shared/npu-fixtures/1bit-monster`).
pub fn npu_program_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(NPU_PROGRAMS_ENV) {
        dirs.push(d.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/amanuensis/npu"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/npu-fixtures/1bit-monster"));
    dirs
}

/// Which arithmetic runs the network's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// INT8 when the model file is INT8, else f32.
    #[default]
    Auto,
    /// f32 everywhere: the accuracy reference (INT8 files are dequantized).
    F32,
    /// INT8 matrices (an f16 file is quantized at load).
    Int8,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where the network runs.
    pub device: Device,
    /// Which arithmetic.
    pub precision: Precision,
    /// Threads each session computes on (its own pool; the calling thread counts as one).
    /// `None` or `Some(0)`: the machine's available parallelism; more than that is capped to it
    /// ([`resolve_threads`]; [`Model::threads`] says the count in use). With several sessions
    /// running at once, give each `cores / sessions` (see [`Model::session_with_threads`]).
    pub threads: Option<usize>,
    /// Check every tensor (and the metadata) against the file's CRC-32 checksums before
    /// building the model (reads the whole file once; README "Model files" gives the cost).
    /// A mismatch fails the load; a file without checksums loads ([`Model::verification`]
    /// says [`Verification::NoChecksums`]).
    pub verify: bool,
    /// Map the file (default) rather than read it whole into memory. A mapped file truncated
    /// while in use gives [`LoadError::ChangedWhileMapped`] (a SIGBUS handler guards the map;
    /// see `amanuensis_runtime::sigbus`); `false` reads the file into memory, where nothing done
    /// to the file can reach the model, for the file's size in RAM.
    pub mmap: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::default(),
            precision: Precision::default(),
            threads: None,
            verify: false,
            mmap: true,
        }
    }
}

/// The model file as the sessions see it: its path and the SIGBUS guard of its mapping, to
/// turn a fault on the mapping during a transcription into a named error.
#[derive(Debug, Clone)]
struct FileWatch {
    path: Arc<Path>,
    guard: Option<amanuensis_runtime::sigbus::Guard>,
}

impl FileWatch {
    fn check(&self) -> Result<(), Error> {
        match self.guard.and_then(amanuensis_runtime::sigbus::fault) {
            None => Ok(()),
            Some(offset) => Err(Error::Whisper(WhisperError::from(
                LoadError::ChangedWhileMapped {
                    path: self.path.to_path_buf(),
                    offset,
                },
            ))),
        }
    }
}

/// What can go wrong loading a model or transcribing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file, the audio, or a backend operation.
    #[error(transparent)]
    Whisper(#[from] WhisperError),
    /// The requested device could not be used; `step` names what failed.
    #[error("device {device}: {step} failed: {reason}")]
    DeviceFailed {
        /// `npu` or `emu`.
        device: &'static str,
        /// `precision`, `open device`, `find GEMM programs`, `load GEMM programs`, `self-test`.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<amanuensis_model::audio::AudioError> for Error {
    fn from(e: amanuensis_model::audio::AudioError) -> Self {
        Error::Whisper(e.into())
    }
}

#[derive(Clone)]
enum Loaded {
    F32(Arc<Whisper<CpuBackend>>),
    Int8(Arc<Whisper<CpuInt8Backend>>),
    Npu(Arc<Whisper<NpuBackend>>),
}

/// A loaded model: weights, tokenizer and frontend on a backend chosen at load. Cheap to clone
/// (shared); `Send + Sync`: open sessions on it from any thread.
#[derive(Clone)]
pub struct Model {
    loaded: Loaded,
    threads: usize,
    device: Device,
    choice: String,
    watch: FileWatch,
    verification: Option<(Verification, std::time::Duration)>,
}

/// The NPU backend for a model with these widths: the GEMM programs for its MLP shapes
/// `(d, 4d)` and `(4d, d)`, on the emulator or the first usable NPU, self-tested.
fn npu_backend(
    device: Device,
    dims: &Dims,
    threads: usize,
) -> Result<NpuBackend, (&'static str, String)> {
    let mut shapes = Vec::new();
    for d in [dims.n_audio_state, dims.n_text_state] {
        for s in [(d, 4 * d), (4 * d, d)] {
            if !shapes.contains(&s) {
                shapes.push(s);
            }
        }
    }
    let open_npu = || {
        discovery::discover()
            .first_usable()
            .map_err(|e| ("open device", e.to_string()))
    };
    // A real device first (cheap to rule out), then the programs.
    let real = if device == Device::Emu {
        None
    } else {
        Some(open_npu()?)
    };
    let mut tried = Vec::new();
    let mut programs = None;
    for dir in npu_program_dirs() {
        match GemmProgramFiles::find_in(&dir, &shapes) {
            Ok(p) => {
                programs = Some(p);
                break;
            }
            Err(e) => tried.push(e.to_string()),
        }
    }
    // The emulated device runs our own GEMM design for every linear it takes, so the fixture
    // programs (real compiled kernels, base's MLP shapes only) are used where they exist; a
    // real NPU has only them (no xclbin of our design has been built).
    let programs = match (programs, real.is_none()) {
        (Some(p), _) => p,
        (None, true) => Vec::new(),
        (None, false) => return Err(("find GEMM programs", tried.join("; "))),
    };
    let backend = match real {
        Some(dev) => NpuBackend::new(dev, &programs, threads)
            .map_err(|e| ("load GEMM programs", e.to_string()))?,
        None => {
            let (emu, dev) =
                emulated_device(&programs).map_err(|e| ("open device", e.to_string()))?;
            let b = NpuBackend::new(dev, &programs, threads)
                .map_err(|e| ("load GEMM programs", e.to_string()))?
                .with_emulated_designs(emu);
            if amanuensis_runtime::npu_attention::requested_by_env() {
                b.with_emulated_attention()
                    .map_err(|e| ("load the attention design", e.to_string()))?
            } else {
                b
            }
        }
    };
    backend
        .self_test()
        .map_err(|e| ("self-test", e.to_string()))?;
    Ok(backend)
}

/// The machine's available parallelism (1 if unknown): the CPUs this process may run on
/// (affinity mask and cgroup quota included).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The thread count a request gives: `None` or `0` mean all available cores; a request above
/// [`available_threads`] is capped to it (`capped_from` keeps the request, for a warning).
/// More threads than cores cannot compute more, and the pool's workers spin before they sleep,
/// so an oversubscribed pool only steals time from itself (README, "Threads").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCount {
    /// Threads to run on (at least 1).
    pub threads: usize,
    /// The request, when it was more than the available cores.
    pub capped_from: Option<usize>,
}

impl ThreadCount {
    /// The warning to print when the request was capped.
    pub fn warning(&self) -> Option<String> {
        self.capped_from.map(|n| {
            format!(
                "--threads {n} is more than the {} available cores: using {}",
                self.threads, self.threads
            )
        })
    }
}

/// [`ThreadCount`] for `requested` on this machine.
pub fn resolve_threads(requested: Option<usize>) -> ThreadCount {
    resolve_threads_on(requested, available_threads())
}

/// [`ThreadCount`] for `requested` with `available` cores.
pub fn resolve_threads_on(requested: Option<usize>, available: usize) -> ThreadCount {
    let available = available.max(1);
    match requested {
        None | Some(0) => ThreadCount {
            threads: available,
            capped_from: None,
        },
        Some(n) if n > available => ThreadCount {
            threads: available,
            capped_from: Some(n),
        },
        Some(n) => ThreadCount {
            threads: n,
            capped_from: None,
        },
    }
}

impl Model {
    /// Loads the model file at `path` with `opts`.
    ///
    /// [`Device::Npu`] and [`Device::Emu`] run INT8 (an f16/f32 file is quantized at load);
    /// with [`Precision::F32`] they are refused. [`Device::Auto`] takes the NPU when one is
    /// usable, its programs are found and load, and the precision is INT8; else the CPU, and
    /// [`Model::device_choice`] says why.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model, Error> {
        let threads = resolve_threads(opts.threads).threads;
        let file = WeightsFile::open_with(path.as_ref(), opts.mmap).map_err(WhisperError::from)?;
        let verification = if opts.verify {
            let t = std::time::Instant::now();
            let v = file.verify().map_err(WhisperError::from)?;
            Some((v, t.elapsed()))
        } else {
            None
        };
        let int8 = match opts.precision {
            Precision::Auto => file.quantization() == Quantization::Int8,
            Precision::F32 => false,
            Precision::Int8 => true,
        };
        let dims = file.config().dims;
        let mut choice = String::from("requested");
        let npu = |backend: NpuBackend| {
            Whisper::from_file(&file, backend).map(|w| Loaded::Npu(Arc::new(w)))
        };
        let cpu = || {
            if int8 {
                Whisper::from_file(&file, CpuInt8Backend::new(threads))
                    .map(|w| Loaded::Int8(Arc::new(w)))
            } else {
                Whisper::from_file(&file, CpuBackend::new(threads))
                    .map(|w| Loaded::F32(Arc::new(w)))
            }
        };
        let (loaded, device): (Result<Loaded, WhisperError>, Device) = match opts.device {
            Device::Cpu => (cpu(), Device::Cpu),
            Device::Npu | Device::Emu => {
                let name = opts.device.name();
                if opts.precision == Precision::F32 {
                    return Err(Error::DeviceFailed {
                        device: name,
                        step: "precision",
                        reason: "the NPU path is INT8; --precision f32 runs on the CPU".into(),
                    });
                }
                let backend =
                    npu_backend(opts.device, &dims, threads).map_err(|(step, reason)| {
                        Error::DeviceFailed {
                            device: name,
                            step,
                            reason,
                        }
                    })?;
                (npu(backend), opts.device)
            }
            Device::Auto if !int8 => {
                choice = "auto: the model runs in f32, the NPU path is INT8".into();
                (cpu(), Device::Cpu)
            }
            Device::Auto => match npu_backend(Device::Npu, &dims, threads) {
                Ok(backend) => {
                    choice =
                        "auto: NPU found, its GEMM programs loaded and passed the self-test".into();
                    (npu(backend), Device::Npu)
                }
                Err((step, reason)) => {
                    choice = format!("auto: NPU {step} failed: {reason}");
                    (cpu(), Device::Cpu)
                }
            },
        };
        // A mapping that faulted read zeros: that, not what the zeros caused, is the error.
        file.check_mapping().map_err(WhisperError::from)?;
        let loaded = loaded?;
        let watch = FileWatch {
            path: Arc::from(path.as_ref()),
            guard: file.map_guard(),
        };
        Ok(Model {
            loaded,
            threads,
            device,
            choice,
            watch,
            verification,
        })
    }

    /// The log-mel frontend of the model file at `path` (its mel filter bank, read through a
    /// memory map of its own), without loading the weights: the frontend [`Model::mel_frontend`]
    /// gives once the same file is loaded. Lets a caller read audio up to its first window
    /// while the model loads.
    pub fn read_mel_frontend(path: impl AsRef<Path>) -> Result<MelFrontend, Error> {
        let file = WeightsFile::open_with(path.as_ref(), true).map_err(WhisperError::from)?;
        let mel = amanuensis_model::whisper::mel_frontend(&file)?;
        file.check_mapping().map_err(WhisperError::from)?;
        Ok(mel)
    }

    /// What [`LoadOptions::verify`] found and how long it took (`None`: not asked).
    pub fn verification(&self) -> Option<(Verification, std::time::Duration)> {
        self.verification
    }

    /// The device the model runs on ([`Device::Cpu`], [`Device::Npu`] or [`Device::Emu`]).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Why this device (for [`Device::Auto`]: what was tried).
    pub fn device_choice(&self) -> &str {
        &self.choice
    }

    /// Device submissions, bytes and time so far, over every session (NPU and emulator only).
    pub fn npu_stats(&self) -> Option<NpuStats> {
        match &self.loaded {
            Loaded::Npu(m) => Some(m.encoder_backend.stats()),
            _ => None,
        }
    }

    /// On the emulated device: why any command ended in a state other than COMPLETED
    /// (validator refusals, array-model failures), oldest first. `None` on other devices.
    pub fn emulator_command_errors(&self) -> Option<Vec<String>> {
        match &self.loaded {
            Loaded::Npu(m) if self.device == Device::Emu => {
                Some(m.encoder_backend.emulator_command_errors())
            }
            _ => None,
        }
    }

    /// A new session on the threads given at load.
    pub fn session(&self) -> Result<Session, Error> {
        self.session_with_threads(self.threads)
    }

    /// A new session computing on its own pool of `threads` threads (`0`: all available cores;
    /// more than those is capped, see [`resolve_threads`]).
    pub fn session_with_threads(&self, threads: usize) -> Result<Session, Error> {
        let threads = resolve_threads(Some(threads)).threads;
        Ok(Session {
            inner: match &self.loaded {
                Loaded::F32(m) => Inner::F32(Box::new(model_session::Session::with_threads(
                    Arc::clone(m),
                    threads,
                )?)),
                Loaded::Int8(m) => Inner::Int8(Box::new(model_session::Session::with_threads(
                    Arc::clone(m),
                    threads,
                )?)),
                Loaded::Npu(m) => Inner::Npu(Box::new(model_session::Session::with_threads(
                    Arc::clone(m),
                    threads,
                )?)),
            },
            threads,
            watch: self.watch.clone(),
        })
    }

    /// The backend's name (`cpu-f32`, `cpu-int8`, `npu-int8`, `npu-emu-int8`).
    pub fn backend_name(&self) -> String {
        match &self.loaded {
            Loaded::F32(m) => m.backend_name(),
            Loaded::Int8(m) => m.backend_name(),
            Loaded::Npu(m) => m.backend_name(),
        }
    }

    /// The model's configuration (dimensions, special tokens, languages, alignment heads).
    pub fn config(&self) -> &ModelConfig {
        match &self.loaded {
            Loaded::F32(m) => &m.config,
            Loaded::Int8(m) => &m.config,
            Loaded::Npu(m) => &m.config,
        }
    }

    /// The model's log-mel frontend.
    pub fn mel_frontend(&self) -> &MelFrontend {
        match &self.loaded {
            Loaded::F32(m) => &m.mel,
            Loaded::Int8(m) => &m.mel,
            Loaded::Npu(m) => &m.mel,
        }
    }

    /// Whether the model is multilingual (else English-only).
    pub fn multilingual(&self) -> bool {
        self.config().multilingual
    }

    /// The model's language codes.
    pub fn languages(&self) -> Vec<String> {
        self.config()
            .languages
            .iter()
            .map(|(code, _)| code.clone())
            .collect()
    }

    /// The model's dimensions.
    pub fn dims(&self) -> Dims {
        self.config().dims
    }

    /// Threads a [`Model::session`] computes on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Does now, on the calling thread, the one-time work on the weights that the first
    /// transcription would otherwise do inside its first window (on the CPU INT8 backend: the
    /// per-channel code sums of every matrix, which also fault the mapped model file in),
    /// claiming matrices one at a time from `next` until none is left. Optional: it only moves
    /// that work earlier, e.g. onto a thread that would otherwise wait while a session is
    /// created or the audio is read; several threads may call it with the same counter
    /// (starting at 0) to share the work. Transcripts never depend on it.
    pub fn prepare_weights(&self, next: &std::sync::atomic::AtomicUsize) {
        match &self.loaded {
            Loaded::F32(m) => m.prepare_weights(next),
            Loaded::Int8(m) => m.prepare_weights(next),
            Loaded::Npu(m) => m.prepare_weights(next),
        }
    }

    /// Device submissions per encoder window and per decoded token on this model's backend.
    pub fn submissions(&self) -> Submissions {
        match &self.loaded {
            Loaded::F32(m) => m.submissions(),
            Loaded::Int8(m) => m.submissions(),
            Loaded::Npu(m) => m.submissions(),
        }
    }
}

enum Inner {
    F32(Box<model_session::Session<CpuBackend>>),
    Int8(Box<model_session::Session<CpuInt8Backend>>),
    Npu(Box<model_session::Session<NpuBackend>>),
}

/// One stream's state over a shared [`Model`]: everything a transcription writes, allocated
/// when the session opens. `Send`: move it to the thread that transcribes.
pub struct Session {
    inner: Inner,
    threads: usize,
    watch: FileWatch,
}

/// What one side (encoder or decoder) of a session submitted to the device so far: the sums of
/// its dispatch log ([`amanuensis_runtime::dispatch::DispatchLog::sum`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchTotals {
    /// Submissions.
    pub submissions: u64,
    /// Bytes the host wrote and flushed for the device (whole 128-row A tiles).
    pub bytes_to_device: u64,
    /// Bytes the host read back (the C rows it uses).
    pub bytes_from_device: u64,
    /// Host time before submission: quantizing the rows into A and flushing A and C, ns.
    pub flush_ns: u64,
    /// The EXEC_CMD ioctl, ns (on the emulator: includes running the program).
    pub submit_ns: u64,
    /// The completion wait, ns.
    pub wait_ns: u64,
    /// Invalidating C after completion, ns.
    pub invalidate_ns: u64,
    /// Multiply-accumulates the array computed (padding rows included).
    pub macs: u64,
}

impl std::ops::Sub for DispatchTotals {
    type Output = DispatchTotals;
    /// Field-wise difference (`after - before`).
    fn sub(self, o: DispatchTotals) -> DispatchTotals {
        DispatchTotals {
            submissions: self.submissions - o.submissions,
            bytes_to_device: self.bytes_to_device - o.bytes_to_device,
            bytes_from_device: self.bytes_from_device - o.bytes_from_device,
            flush_ns: self.flush_ns - o.flush_ns,
            submit_ns: self.submit_ns - o.submit_ns,
            wait_ns: self.wait_ns - o.wait_ns,
            invalidate_ns: self.invalidate_ns - o.invalidate_ns,
            macs: self.macs - o.macs,
        }
    }
}

impl DispatchTotals {
    /// Host time around the device per submission: quantize + flush + invalidate (not the
    /// ioctl and wait, which on the emulator run the program), ns.
    pub fn host_prep_ns(&self) -> u64 {
        self.flush_ns + self.invalidate_ns
    }

    fn of(log: Option<&amanuensis_runtime::dispatch::DispatchLog>) -> Self {
        let Some(log) = log else {
            return Self::default();
        };
        let s = log.sum();
        DispatchTotals {
            submissions: log.total(),
            bytes_to_device: s.bytes - s.bytes_out,
            bytes_from_device: s.bytes_out,
            flush_ns: s.flush_ns,
            submit_ns: s.submit_ns,
            wait_ns: s.wait_ns,
            invalidate_ns: s.invalidate_ns,
            macs: s.macs,
        }
    }
}

impl Session {
    /// The device submissions this session's encoder and decoder recorded so far (`None` on
    /// the CPU backends).
    pub fn dispatch_totals(&self) -> Option<(DispatchTotals, DispatchTotals)> {
        match &self.inner {
            Inner::Npu(s) => {
                let (e, d) = s.workspaces();
                Some((
                    DispatchTotals::of(e.scratch().dispatch_log()),
                    DispatchTotals::of(d.scratch().dispatch_log()),
                ))
            }
            _ => None,
        }
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<Transcript, Error> {
        self.transcribe_with(samples, opts, &mut Hooks::default())
    }

    /// [`Session::transcribe`] with a callback per decided segment, a progress callback and a
    /// cooperative abort flag (see [`Hooks`]).
    pub fn transcribe_with(
        &mut self,
        samples: &[f32],
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
    ) -> Result<Transcript, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => s.transcribe_with(samples, opts, hooks),
            Inner::Int8(s) => s.transcribe_with(samples, opts, hooks),
            Inner::Npu(s) => s.transcribe_with(samples, opts, hooks),
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Transcribes streamed (or in-memory) log-mel windows, calling `on_window` after each
    /// window with the segments it decided.
    pub fn transcribe_windows(
        &mut self,
        mel: &mut dyn MelWindows,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => s.transcribe_windows_with(mel, opts, hooks, on_window),
            Inner::Int8(s) => s.transcribe_windows_with(mel, opts, hooks, on_window),
            Inner::Npu(s) => s.transcribe_windows_with(mel, opts, hooks, on_window),
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Transcribes whole 16 kHz samples with the guards that read them: the speech gate from
    /// the VAD (`gate`) and the digital-silence guard, with hooks and a per-window callback.
    pub fn transcribe_guarded(
        &mut self,
        samples: &[f32],
        gate: Option<&SpeechGate>,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => s.transcribe_guarded(samples, gate, opts, hooks, on_window),
            Inner::Int8(s) => s.transcribe_guarded(samples, gate, opts, hooks, on_window),
            Inner::Npu(s) => s.transcribe_guarded(samples, gate, opts, hooks, on_window),
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Transcribes streamed (or in-memory) windows with the guards gathered while the input
    /// streamed past: the digital-silence map and the VAD's speech stretches
    /// ([`crate::guarded::open_streamed`] builds both without holding the samples).
    pub fn transcribe_windows_guarded(
        &mut self,
        mel: &mut dyn MelWindows,
        silence: Option<&SilenceMap>,
        gate: Option<&SpeechGate>,
        opts: &TranscribeOptions,
        hooks: &mut Hooks,
        on_window: &mut dyn FnMut(WindowDone<'_>),
    ) -> Result<Transcript, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => {
                s.transcribe_windows_guarded(mel, silence, gate, opts, hooks, on_window)
            }
            Inner::Int8(s) => {
                s.transcribe_windows_guarded(mel, silence, gate, opts, hooks, on_window)
            }
            Inner::Npu(s) => {
                s.transcribe_windows_guarded(mel, silence, gate, opts, hooks, on_window)
            }
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Identifies the language from the first window (multilingual models).
    pub fn detect_language(&mut self, mel: &mut dyn MelWindows) -> Result<DetectedLanguage, Error> {
        self.detect_language_at(mel, 0)
    }

    /// Identifies the language from the window at mel frame `seek` (with clip timestamps:
    /// `model::clips::language_detection_seek`).
    pub fn detect_language_at(
        &mut self,
        mel: &mut dyn MelWindows,
        seek: usize,
    ) -> Result<DetectedLanguage, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => s.detect_language_at(mel, seek),
            Inner::Int8(s) => s.detect_language_at(mel, seek),
            Inner::Npu(s) => s.detect_language_at(mel, seek),
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Decodes an audio file ([`crate::load_audio`]) and transcribes it.
    pub fn transcribe_file(
        &mut self,
        path: impl AsRef<Path>,
        opts: &TranscribeOptions,
    ) -> Result<Transcript, Error> {
        let samples = crate::load_audio(path.as_ref())?;
        self.transcribe(&samples, opts)
    }

    /// Threads this session computes on.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npu_failures_name_the_step() {
        let dims = Dims {
            n_mels: 80,
            n_audio_ctx: 1500,
            n_audio_state: 24,
            n_audio_head: 1,
            n_audio_layer: 1,
            n_vocab: 100,
            n_text_ctx: 448,
            n_text_state: 24,
            n_text_head: 1,
            n_text_layer: 1,
        };
        // No fixture program has K24×N96 anywhere: the emulated device loads without one (our
        // GEMM design takes the linears it can; the rest stay on the host).
        match npu_backend(Device::Emu, &dims, 1) {
            Ok(b) => assert!(b.shapes().is_empty(), "{:?}", b.shapes()),
            Err((step, reason)) => panic!("{step}: {reason}"),
        }
        // This machine has no NPU: opening it is the step that fails (unless it has one).
        if discovery::discover().first_usable().is_err() {
            match npu_backend(Device::Npu, &dims, 1) {
                Err((step, _)) => assert_eq!(step, "open device"),
                Ok(_) => panic!("an NPU backend without an NPU"),
            }
        }
    }

    #[test]
    fn thread_requests_are_capped_and_zero_means_all() {
        let t = |r, a| resolve_threads_on(r, a);
        assert_eq!((t(None, 8).threads, t(None, 8).capped_from), (8, None));
        assert_eq!(
            (t(Some(0), 8).threads, t(Some(0), 8).capped_from),
            (8, None)
        );
        assert_eq!(
            (t(Some(3), 8).threads, t(Some(3), 8).capped_from),
            (3, None)
        );
        assert_eq!(
            (t(Some(8), 8).threads, t(Some(8), 8).capped_from),
            (8, None)
        );
        let capped = t(Some(1000), 2);
        assert_eq!((capped.threads, capped.capped_from), (2, Some(1000)));
        assert!(capped.warning().unwrap().contains("--threads 1000"));
        assert_eq!(t(Some(3), 8).warning(), None);
        assert_eq!(t(None, 0).threads, 1);
    }

    #[test]
    fn model_and_session_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Model>();
        send::<Session>();
    }
}
