//! The NPU layer's error type.

use super::ert::CmdState;
use super::txn::TxnError;
use super::xclbin::XclbinError;

pub use rustix::io::Errno;

/// Everything that can go wrong between us and the NPU.
#[derive(Debug, thiserror::Error)]
pub enum NpuError {
    /// An ioctl (or mmap/munmap) failed; `op` is its C name.
    #[error("{op} failed: {} ({errno})", errno_name(*errno))]
    Ioctl {
        /// Which call, e.g. `"EXEC_CMD"`, `"mmap(heap)"`.
        op: &'static str,
        /// The errno the kernel (or the emulator) returned.
        errno: Errno,
    },
    /// There is no usable NPU; the reason says exactly why.
    #[error("no usable NPU: {reason}")]
    NoDevice {
        /// Why (no node, permission denied, another driver, query failed …).
        reason: String,
    },
    /// A command did not complete before its deadline (the syncobj wait returned ETIME).
    #[error("command seq {seq} did not complete within {waited_ms} ms")]
    Timeout {
        /// The command's sequence number.
        seq: u64,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A command completed but its header state is not COMPLETED.
    #[error("command seq {seq} ended in state {state:?}")]
    CommandFailed {
        /// The command's sequence number.
        seq: u64,
        /// The state the driver wrote into the command header.
        state: CmdState,
    },
    /// An `ERT_CMD_CHAIN` ended in another state than COMPLETED; `index` is the chain's
    /// `error_index` (the failing sub-command when the state is ERROR or ABORT; 0 when the
    /// driver refused the chain and left the header NEW).
    #[error("command chain {seq} ended in state {state:?}, error_index {index}")]
    ChainFailed {
        /// The chain's sequence number.
        seq: u64,
        /// The state the driver wrote into the chain's header.
        state: CmdState,
        /// `error_index`.
        index: u32,
    },
    /// The driver returned something our rules say is impossible (e.g. a DEV BO outside the heap).
    #[error("driver returned an inconsistent value: {what}")]
    Protocol {
        /// What was inconsistent, with the values.
        what: String,
    },
    /// A caller asked for something the layer cannot do (sizes, counts, limits), with context.
    #[error("invalid request: {what}")]
    InvalidRequest {
        /// What was wrong, with the values.
        what: String,
    },
    /// A ticket was waited on twice, or does not belong to this ring.
    #[error("ticket for seq {seq} is not pending on this ring")]
    UnknownTicket {
        /// The ticket's sequence number.
        seq: u64,
    },
    /// The xclbin could not be parsed.
    #[error(transparent)]
    Xclbin(#[from] XclbinError),
    /// An instruction stream the validator refuses.
    #[error("instruction stream: {0}")]
    Txn(#[from] TxnError),
    /// Something this runtime deliberately does not do on real hardware, and why.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What, and why.
        what: String,
    },
}

/// Shorthand for results of this layer.
pub type Result<T, E = NpuError> = core::result::Result<T, E>;

/// Build the closure that maps an errno of `op` into [`NpuError::Ioctl`].
pub(crate) fn ioctl_err(op: &'static str) -> impl FnOnce(Errno) -> NpuError {
    move |errno| NpuError::Ioctl { op, errno }
}

/// The symbolic name of the errnos the amdxdna paths return (`"EINVAL"`), else `"errno N"`.
pub fn errno_name(errno: Errno) -> &'static str {
    const NAMES: &[(Errno, &str)] = &[
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::INTR, "EINTR"),
        (Errno::IO, "EIO"),
        (Errno::NXIO, "ENXIO"),
        (Errno::BADF, "EBADF"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::FAULT, "EFAULT"),
        (Errno::BUSY, "EBUSY"),
        (Errno::NODEV, "ENODEV"),
        (Errno::INVAL, "EINVAL"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::TIME, "ETIME"),
        (Errno::TIMEDOUT, "ETIMEDOUT"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::CANCELED, "ECANCELED"),
        (Errno::ALREADY, "EALREADY"),
    ];
    NAMES
        .iter()
        .find(|(e, _)| *e == errno)
        .map_or("errno", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_error_names_op_and_errno() {
        let e = NpuError::Ioctl {
            op: "EXEC_CMD",
            errno: Errno::BUSY,
        };
        let s = e.to_string();
        assert!(s.starts_with("EXEC_CMD failed: EBUSY ("), "{s}");
        assert_eq!(errno_name(Errno::TIME), "ETIME");
    }
}
