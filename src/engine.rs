//! The embedding API: a [`Model`] loaded once (backend chosen at run time and hidden), any
//! number of [`Session`]s over it, each transcribing on its own thread.

use std::path::Path;
use std::sync::Arc;

pub use amanuensis_model::checksum::Verification;
use amanuensis_model::config::{Dims, ModelConfig};
use amanuensis_model::decode::guards::SpeechGate;
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

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The best device available: today the CPU.
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The AMD Ryzen AI NPU (not available yet: [`Error::DeviceUnavailable`]).
    Npu,
    /// The emulated NPU (not available yet: [`Error::DeviceUnavailable`]).
    Emu,
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
    /// The requested device has no Whisper backend yet.
    #[error("device {device}: not available yet: {reason}")]
    DeviceUnavailable {
        /// `npu` or `emu`.
        device: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl From<amanuensis_model::audio::AudioError> for Error {
    fn from(e: amanuensis_model::audio::AudioError) -> Self {
        Error::Whisper(e.into())
    }
}

/// The reason [`Device::Npu`] and [`Device::Emu`] fail today.
pub const NPU_NOT_YET: &str = "the NPU Whisper backend is issue 14";

#[derive(Clone)]
enum Loaded {
    F32(Arc<Whisper<CpuBackend>>),
    Int8(Arc<Whisper<CpuInt8Backend>>),
}

/// A loaded model: weights, tokenizer and frontend on a backend chosen at load. Cheap to clone
/// (shared); `Send + Sync`: open sessions on it from any thread.
#[derive(Clone)]
pub struct Model {
    loaded: Loaded,
    threads: usize,
    watch: FileWatch,
    verification: Option<(Verification, std::time::Duration)>,
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
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model, Error> {
        match opts.device {
            Device::Auto | Device::Cpu => {}
            Device::Npu => {
                return Err(Error::DeviceUnavailable {
                    device: "npu",
                    reason: NPU_NOT_YET,
                })
            }
            Device::Emu => {
                return Err(Error::DeviceUnavailable {
                    device: "emu",
                    reason: NPU_NOT_YET,
                })
            }
        }
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
        let loaded: Result<Loaded, WhisperError> = if int8 {
            Whisper::from_file(&file, CpuInt8Backend::new(threads))
                .map(|w| Loaded::Int8(Arc::new(w)))
        } else {
            Whisper::from_file(&file, CpuBackend::new(threads)).map(|w| Loaded::F32(Arc::new(w)))
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
            watch,
            verification,
        })
    }

    /// What [`LoadOptions::verify`] found and how long it took (`None`: not asked).
    pub fn verification(&self) -> Option<(Verification, std::time::Duration)> {
        self.verification
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
            },
            threads,
            watch: self.watch.clone(),
        })
    }

    /// The backend's name (`cpu-f32`, `cpu-int8`).
    pub fn backend_name(&self) -> String {
        match &self.loaded {
            Loaded::F32(m) => m.backend_name(),
            Loaded::Int8(m) => m.backend_name(),
        }
    }

    /// The model's configuration (dimensions, special tokens, languages, alignment heads).
    pub fn config(&self) -> &ModelConfig {
        match &self.loaded {
            Loaded::F32(m) => &m.config,
            Loaded::Int8(m) => &m.config,
        }
    }

    /// The model's log-mel frontend.
    pub fn mel_frontend(&self) -> &MelFrontend {
        match &self.loaded {
            Loaded::F32(m) => &m.mel,
            Loaded::Int8(m) => &m.mel,
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

    /// Device submissions per encoder window and per decoded token on this model's backend.
    pub fn submissions(&self) -> Submissions {
        match &self.loaded {
            Loaded::F32(m) => m.submissions(),
            Loaded::Int8(m) => m.submissions(),
        }
    }
}

enum Inner {
    F32(Box<model_session::Session<CpuBackend>>),
    Int8(Box<model_session::Session<CpuInt8Backend>>),
}

/// One stream's state over a shared [`Model`]: everything a transcription writes, allocated
/// when the session opens. `Send`: move it to the thread that transcribes.
pub struct Session {
    inner: Inner,
    threads: usize,
    watch: FileWatch,
}

impl Session {
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
        };
        // A fault on the mapped model file read zeros: report it rather than the result.
        self.watch.check()?;
        Ok(result?)
    }

    /// Identifies the language from the first window (multilingual models).
    pub fn detect_language(&mut self, mel: &mut dyn MelWindows) -> Result<DetectedLanguage, Error> {
        let result = match &mut self.inner {
            Inner::F32(s) => s.detect_language(mel),
            Inner::Int8(s) => s.detect_language(mel),
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
    fn npu_and_emu_say_which_issue_brings_them() {
        for device in [Device::Npu, Device::Emu] {
            let opts = LoadOptions {
                device,
                ..Default::default()
            };
            match Model::load("/nonexistent", &opts) {
                Err(Error::DeviceUnavailable { reason, .. }) => assert_eq!(reason, NPU_NOT_YET),
                Err(e) => panic!("{device:?}: {e}"),
                Ok(_) => panic!("{device:?} loaded"),
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
