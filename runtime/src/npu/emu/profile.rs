//! Driver profiles: the amdxdna versions a user may have, as far as they change what the runtime
//! sees (`npu-bringup.md` §1.2, §2; `npu-driver.md` §1.3, §2.3).
//!
//! | | 6.14-era upstream | current upstream | AMD out-of-tree (xdna-driver) |
//! |---|---|---|---|
//! | DRM driver version | 0.0 | 0.1 | 0.16 |
//! | scheduler timeout (TDR) | 60 s (`HWCTX_MAX_TIMEOUT`) | 60 s | 2 s (`tdr_timeout_ms`) |
//! | state of a timed-out job / of jobs cancelled with it | NEW / NEW (no state written, F1) | TIMEOUT / ABORT | TIMEOUT / ABORT |
//! | `force_cmdlist` parameter | present, `N` | absent (always chained commands) | present, `Y` |
//! | START_CU regmap over 19 words | silently truncated to 19 (cmdlist off) | accepted | accepted (refused, EINVAL, with cmdlist off) |
//! | DEV BO while the heap is unmapped | EINVAL | EINVAL | EAGAIN |
//! | `ERT_CMD_CHAIN` | accepted; slot fits if `4096 - (offset + payload) > 8` | accepted; fits if `offset + payload + 8 <= 4096` | accepted, modelled as current upstream |
//! | a failed chain's first sub-command payload | kept | filled with 0xFF | filled with 0xFF |
//!
//! The whole NPU test suite runs under each profile: `AMANUENSIS_EMU_PROFILE` (`6.14`,
//! `upstream`, `xdna`) selects the default of [`super::EmuConfig`]; tests of behaviour that
//! differs between profiles loop over [`DriverProfile::ALL`] themselves.

use std::time::Duration;

use crate::npu::ert::CmdState;
use rustix::io::Errno;

/// The environment variable that selects the default profile.
pub const PROFILE_ENV: &str = "AMANUENSIS_EMU_PROFILE";

/// An amdxdna driver version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverProfile {
    /// The first upstream driver (Linux 6.14 era), before the late-2025 timeout fix and the
    /// Feb-2026 "always use chained command" change.
    Upstream614,
    /// Current upstream: timed-out jobs marked TIMEOUT, cancelled ones ABORT; chained commands
    /// always.
    UpstreamCurrent,
    /// AMD's out-of-tree xdna-driver: `force_cmdlist` on by default, 2 s TDR, EAGAIN for an
    /// unmapped heap.
    AmdOutOfTree,
}

/// What the driver does with a START_CU regmap over 19 words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongRegmap {
    /// Sent in a chained command (4 KiB buffer): runs.
    Chained,
    /// Copied into the 19-word payload: the rest is lost.
    Truncated,
    /// Refused (EINVAL), the command ends in ERROR.
    Refused,
}

impl DriverProfile {
    /// Every profile.
    pub const ALL: [Self; 3] = [Self::Upstream614, Self::UpstreamCurrent, Self::AmdOutOfTree];

    /// The name `AMANUENSIS_EMU_PROFILE` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upstream614 => "6.14",
            Self::UpstreamCurrent => "upstream",
            Self::AmdOutOfTree => "xdna",
        }
    }

    /// Parse a name (see [`DriverProfile::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The profile `AMANUENSIS_EMU_PROFILE` names; current upstream when unset. An unknown name
    /// panics with the list of valid ones (a test-configuration error).
    pub fn from_env() -> Self {
        match std::env::var(PROFILE_ENV) {
            Ok(v) => Self::from_name(&v).unwrap_or_else(|| {
                panic!("{PROFILE_ENV}={v}: expected one of 6.14, upstream, xdna")
            }),
            Err(_) => Self::UpstreamCurrent,
        }
    }

    /// `DRM_IOCTL_VERSION` (major, minor, patch).
    pub fn driver_version(self) -> (i32, i32, i32) {
        match self {
            Self::Upstream614 => (0, 0, 0),
            Self::UpstreamCurrent => (0, 1, 0),
            Self::AmdOutOfTree => (0, 16, 0),
        }
    }

    /// The scheduler's job timeout.
    pub fn tdr(self) -> Duration {
        match self {
            Self::Upstream614 | Self::UpstreamCurrent => Duration::from_secs(60),
            Self::AmdOutOfTree => Duration::from_secs(2),
        }
    }

    /// `/sys/module/amdxdna/parameters/force_cmdlist` (`None`: no such parameter).
    pub fn force_cmdlist(self) -> Option<bool> {
        match self {
            Self::Upstream614 => Some(false),
            Self::UpstreamCurrent => None,
            Self::AmdOutOfTree => Some(true),
        }
    }

    /// What happens to a regmap over 19 words with `force_cmdlist` as set.
    pub fn long_regmap(self, force_cmdlist: Option<bool>) -> LongRegmap {
        match (self, force_cmdlist) {
            (Self::UpstreamCurrent, _) | (_, Some(true)) => LongRegmap::Chained,
            (Self::Upstream614, _) => LongRegmap::Truncated,
            (Self::AmdOutOfTree, _) => LongRegmap::Refused,
        }
    }

    /// The header state of a job the TDR ended.
    pub fn timed_out_state(self) -> CmdState {
        match self {
            Self::Upstream614 => CmdState::New,
            _ => CmdState::Timeout,
        }
    }

    /// The header state of a job cancelled by a timeout or a context teardown.
    pub fn cancelled_state(self) -> CmdState {
        match self {
            Self::Upstream614 => CmdState::New,
            _ => CmdState::Abort,
        }
    }

    /// CREATE_BO(DEV) while the heap is not mapped.
    pub fn unmapped_heap_errno(self) -> Errno {
        match self {
            Self::AmdOutOfTree => Errno::AGAIN,
            _ => Errno::INVAL,
        }
    }
}
