//! Errors of the device-program side: a design or a transfer that the hardware cannot express.

/// What went wrong building a device program or an instruction stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AieError {
    /// A BD field does not fit its register field (names the field, the value and the limit).
    #[error("shim BD {bd}: {field} = {value} exceeds the hardware limit {limit}")]
    BdField {
        /// BD id.
        bd: u8,
        /// Field name as in npu-instruction-stream.md §6.
        field: &'static str,
        /// Requested value (as the hardware counts it, before any minus-one).
        value: u64,
        /// Largest allowed value.
        limit: u64,
    },
    /// A matmul shape the design does not take (names the dimension).
    #[error("matmul {what} = {value}: {reason}")]
    Shape {
        /// `m`, `k` or `n`.
        what: &'static str,
        /// The value given.
        value: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A row width the LayerNorm + quantize design does not take.
    #[error("norm/quantize design: row width d = {d}: {reason}")]
    NormWidth {
        /// The width given.
        d: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A tile's buffers exceed its memory.
    #[error("{tile} needs {need} bytes, has {have}")]
    Budget {
        /// Which memory (compute tile L1, memory tile L2).
        tile: &'static str,
        /// Bytes the design allocates there.
        need: usize,
        /// Bytes the tile has.
        have: usize,
    },
}
