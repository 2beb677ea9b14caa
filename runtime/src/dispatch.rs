//! Dispatch accounting: every dispatch records the bytes it moved and four host-side stages:
//! cache flush of the views the device reads and writes, the EXEC_CMD ioctl, the completion wait
//! (syncobj wait + header state check) and the invalidation of the views the device wrote.
//! [`Dispatcher`] runs dispatches through a [`CommandRing`], up to its depth in flight, and keeps
//! a fixed-capacity [`DispatchLog`]; [`DispatchSummary`] gives min/median/p99 per stage.
//!
//! Outputs are flushed before submission as well as after completion (F3): a line the CPU
//! dirtied in an output view would otherwise be written back over the device's result by the
//! post-completion flush. Debug builds validate the instruction stream before every submission
//! ([`Program::check`]).
//!
//! Nothing here allocates per dispatch: the log is a preallocated ring of records.

use std::collections::VecDeque;
use std::time::Instant;

use crate::npu::arena::{BoArena, BufferId};
use crate::npu::program::Program;
use crate::npu::ring::{CommandRing, MAX_DEPTH};
use crate::npu::{NpuError, Result};

/// One dispatch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchRecord {
    /// Bytes of the input and output views flushed for this dispatch.
    pub bytes: u64,
    /// Of `bytes`, those the host reads back from the outputs (0 when not recorded).
    pub bytes_out: u64,
    /// Cache flush of inputs and outputs before submission, ns.
    pub flush_ns: u64,
    /// The EXEC_CMD ioctl (packet write included), ns.
    pub submit_ns: u64,
    /// Blocked in the completion wait for this command (syncobj wait + state check), ns.
    pub wait_ns: u64,
    /// Invalidation of the outputs after completion, ns.
    pub invalidate_ns: u64,
    /// Multiply-accumulates the array computes for this dispatch (padding rows included; 0
    /// when not a GEMM or not recorded): what a projection of its device time needs.
    pub macs: u64,
}

impl DispatchRecord {
    /// Host time of the four stages together.
    pub fn total_ns(&self) -> u64 {
        self.flush_ns + self.submit_ns + self.wait_ns + self.invalidate_ns
    }
}

/// The last `capacity` dispatch records, and the field-wise sum of every record since creation.
#[derive(Clone, Debug)]
pub struct DispatchLog {
    records: Vec<DispatchRecord>,
    next: usize,
    total: u64,
    sum: DispatchRecord,
}

impl DispatchLog {
    /// A log that keeps the most recent `capacity` (≥ 1) records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity.max(1)),
            next: 0,
            total: 0,
            sum: DispatchRecord::default(),
        }
    }

    /// Add a record (overwrites the oldest when full; never allocates after construction).
    pub fn record(&mut self, r: DispatchRecord) {
        if self.records.len() < self.records.capacity() {
            self.records.push(r);
        } else {
            self.records[self.next] = r;
        }
        self.next = (self.next + 1) % self.records.capacity();
        self.total += 1;
        let sum = &mut self.sum;
        sum.bytes += r.bytes;
        sum.bytes_out += r.bytes_out;
        sum.flush_ns += r.flush_ns;
        sum.submit_ns += r.submit_ns;
        sum.wait_ns += r.wait_ns;
        sum.invalidate_ns += r.invalidate_ns;
        sum.macs += r.macs;
    }

    /// Field-wise sum of every record since creation (overwritten ones included).
    pub fn sum(&self) -> DispatchRecord {
        self.sum
    }

    /// Forget every record (keeps the capacity).
    pub fn clear(&mut self) {
        self.records.clear();
        self.next = 0;
        self.total = 0;
        self.sum = DispatchRecord::default();
    }

    /// Records kept (at most the capacity): in dispatch order until the log wraps.
    pub fn records(&self) -> &[DispatchRecord] {
        &self.records
    }

    /// Dispatches recorded since creation (including overwritten ones).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Statistics over the kept records (allocates; call it outside the hot loop).
    pub fn summary(&self) -> DispatchSummary {
        let stage = |f: fn(&DispatchRecord) -> u64| {
            let mut v: Vec<u64> = self.records.iter().map(f).collect();
            StageStats::of(&mut v)
        };
        DispatchSummary {
            count: self.records.len(),
            flush: stage(|r| r.flush_ns),
            submit: stage(|r| r.submit_ns),
            wait: stage(|r| r.wait_ns),
            invalidate: stage(|r| r.invalidate_ns),
            total: stage(|r| r.total_ns()),
            bytes: stage(|r| r.bytes),
        }
    }
}

/// min / median / p99 / mean of one quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Smallest value.
    pub min: u64,
    /// Median (nearest rank, lower of the two middle values for even counts).
    pub median: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest value.
    pub max: u64,
    /// Arithmetic mean (rounded down).
    pub mean: u64,
}

impl StageStats {
    /// Statistics of `values` (sorted in place). All zero for an empty slice.
    pub fn of(values: &mut [u64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let n = values.len();
        // Nearest rank: the smallest value with at least p% of the values ≤ it.
        let rank = |p: u64| values[((p as usize * n).div_ceil(100)).clamp(1, n) - 1];
        Self {
            min: values[0],
            median: rank(50),
            p99: rank(99),
            max: values[n - 1],
            mean: (values.iter().map(|&v| v as u128).sum::<u128>() / n as u128) as u64,
        }
    }
}

/// The CSV header of [`write_csv`].
pub const CSV_HEADER: &str = "index,bytes,flush_ns,submit_ns,wait_ns,invalidate_ns,total_ns";

/// Write `records` as CSV: [`CSV_HEADER`], then one row per record in order (index from 0).
pub fn write_csv(mut out: impl std::io::Write, records: &[DispatchRecord]) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for (i, r) in records.iter().enumerate() {
        writeln!(
            out,
            "{i},{},{},{},{},{},{}",
            r.bytes,
            r.flush_ns,
            r.submit_ns,
            r.wait_ns,
            r.invalidate_ns,
            r.total_ns()
        )?;
    }
    out.flush()
}

/// A histogram with power-of-two buckets: bucket `[lo, hi)` with `hi = 2 lo` (the first bucket
/// is `[0, 2)`), from the smallest value's bucket to the largest's, empty buckets included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `(lo, hi, count)` per bucket, ascending.
    pub buckets: Vec<(u64, u64, u64)>,
}

impl Histogram {
    /// The log2 histogram of `values`; empty for no values.
    pub fn log2(values: impl IntoIterator<Item = u64>) -> Self {
        // Bucket k holds [2^k, 2^(k+1)); 0 and 1 go to bucket 0 ([0, 2)).
        let mut counts = [0u64; 64];
        let mut any = false;
        for v in values {
            counts[(63 - (v | 1).leading_zeros()) as usize] += 1;
            any = true;
        }
        if !any {
            return Self::default();
        }
        let first = counts.iter().position(|&c| c > 0).expect("any");
        let last = counts.iter().rposition(|&c| c > 0).expect("any");
        let buckets = (first..=last)
            .map(|k| {
                let lo = if k == 0 { 0 } else { 1u64 << k };
                let hi = if k == 63 { u64::MAX } else { 1u64 << (k + 1) };
                (lo, hi, counts[k])
            })
            .collect();
        Self { buckets }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.2).sum()
    }
}

/// Per-stage statistics of a [`DispatchLog`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchSummary {
    /// Records summarised.
    pub count: usize,
    /// Cache flush before submission, ns.
    pub flush: StageStats,
    /// EXEC_CMD, ns.
    pub submit: StageStats,
    /// Completion wait, ns.
    pub wait: StageStats,
    /// Invalidation after completion, ns.
    pub invalidate: StageStats,
    /// All four, ns.
    pub total: StageStats,
    /// Bytes moved per dispatch.
    pub bytes: StageStats,
}

/// Runs dispatches through a ring (up to its depth in flight) and records each one.
#[derive(Debug)]
pub struct Dispatcher {
    ring: CommandRing,
    log: DispatchLog,
    in_flight: VecDeque<DispatchRecord>,
}

fn ns(a: Instant, b: Instant) -> u64 {
    (b - a).as_nanos() as u64
}

impl Dispatcher {
    /// Wrap `ring`, keeping the last `log_capacity` records.
    pub fn new(ring: CommandRing, log_capacity: usize) -> Self {
        Self {
            ring,
            log: DispatchLog::with_capacity(log_capacity),
            in_flight: VecDeque::with_capacity(MAX_DEPTH),
        }
    }

    /// One synchronous dispatch: [`Dispatcher::submit`] then [`Dispatcher::complete_all`].
    pub fn dispatch(
        &mut self,
        arena: &BoArena,
        program: &Program,
        inputs: &[BufferId],
        outputs: &[BufferId],
    ) -> Result<()> {
        self.submit(arena, program, inputs, outputs)?;
        self.complete_all(arena, outputs)
    }

    /// Submit without waiting; when every ring slot is busy, first complete the oldest
    /// command (invalidating `outputs`). Debug builds validate the instruction stream first.
    pub fn submit(
        &mut self,
        arena: &BoArena,
        program: &Program,
        inputs: &[BufferId],
        outputs: &[BufferId],
    ) -> Result<()> {
        if !self.ring.has_free_slot() {
            self.complete_oldest(arena, outputs)?;
        }
        #[cfg(debug_assertions)]
        program.check(arena)?;
        let t0 = Instant::now();
        for &id in inputs.iter().chain(outputs) {
            arena.flush(id);
        }
        let t1 = Instant::now();
        self.ring.submit(&program.packet(), arena.handles())?;
        let t2 = Instant::now();
        let bytes = inputs
            .iter()
            .chain(outputs)
            .map(|&id| arena.len(id) as u64)
            .sum();
        let bytes_out = outputs.iter().map(|&id| arena.len(id) as u64).sum();
        self.in_flight.push_back(DispatchRecord {
            bytes,
            bytes_out,
            flush_ns: ns(t0, t1),
            submit_ns: ns(t1, t2),
            wait_ns: 0,
            invalidate_ns: 0,
            macs: 0,
        });
        Ok(())
    }

    /// Wait for the oldest command, invalidate `outputs` and record it. A failed command is not
    /// recorded.
    pub fn complete_oldest(&mut self, arena: &BoArena, outputs: &[BufferId]) -> Result<()> {
        let Some(ticket) = self.ring.oldest() else {
            return Ok(());
        };
        let mut rec = self.in_flight.pop_front().unwrap_or_default();
        let t0 = Instant::now();
        if let Err(e) = self.ring.wait(ticket) {
            if matches!(e, NpuError::Timeout { .. }) {
                self.in_flight.push_front(rec); // still pending
            }
            return Err(e);
        }
        let t1 = Instant::now();
        for &id in outputs {
            arena.flush(id);
        }
        let t2 = Instant::now();
        rec.wait_ns = ns(t0, t1);
        rec.invalidate_ns = ns(t1, t2);
        self.log.record(rec);
        Ok(())
    }

    /// Complete every command in flight, oldest first.
    pub fn complete_all(&mut self, arena: &BoArena, outputs: &[BufferId]) -> Result<()> {
        while self.ring.in_flight() > 0 {
            self.complete_oldest(arena, outputs)?;
        }
        Ok(())
    }

    /// Forget the records so far (e.g. after warm-up).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The records.
    pub fn log(&self) -> &DispatchLog {
        &self.log
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut CommandRing {
        &mut self.ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_statistics() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = StageStats::of(&mut v);
        assert_eq!(
            (s.min, s.median, s.p99, s.max, s.mean),
            (1, 50, 99, 100, 50)
        );
        let s = StageStats::of(&mut [7]);
        assert_eq!((s.min, s.median, s.p99, s.max), (7, 7, 7, 7));
        let s = StageStats::of(&mut [1, 2, 3, 1000]);
        assert_eq!((s.median, s.p99, s.mean), (2, 1000, 251));
        assert_eq!(StageStats::of(&mut []), StageStats::default());
    }

    #[test]
    fn csv_has_the_header_and_one_row_per_record() {
        let recs = [
            DispatchRecord {
                bytes: 8,
                bytes_out: 0,
                flush_ns: 1,
                submit_ns: 2,
                wait_ns: 3,
                invalidate_ns: 4,
                macs: 0,
            },
            DispatchRecord::default(),
        ];
        let mut out = Vec::new();
        write_csv(&mut out, &recs).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{CSV_HEADER}\n0,8,1,2,3,4,10\n1,0,0,0,0,0,0\n")
        );
    }

    #[test]
    fn log2_histogram_buckets_cover_every_value_once() {
        let h = Histogram::log2([0, 1, 2, 3, 4, 7, 8, 1000, u64::MAX]);
        assert_eq!(h.count(), 9);
        assert_eq!(h.buckets[0], (0, 2, 2));
        assert_eq!(h.buckets[1], (2, 4, 2));
        assert_eq!(h.buckets[2], (4, 8, 2));
        assert_eq!(h.buckets[3], (8, 16, 1));
        assert_eq!(h.buckets[9], (512, 1024, 1));
        assert_eq!(*h.buckets.last().unwrap(), (1 << 63, u64::MAX, 1));
        assert_eq!(h.buckets.len(), 64);
        // Contiguous, and every value inside its bucket.
        for w in h.buckets.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        let h = Histogram::log2([1500, 1600, 5000]);
        assert_eq!(
            h.buckets,
            [(1024, 2048, 2), (2048, 4096, 0), (4096, 8192, 1)]
        );
        assert_eq!(Histogram::log2([]), Histogram::default());
    }

    #[test]
    fn log_keeps_the_latest_records_without_growing() {
        let mut log = DispatchLog::with_capacity(3);
        for i in 0..5 {
            log.record(DispatchRecord {
                bytes: i,
                submit_ns: 10 * i,
                wait_ns: 1,
                ..DispatchRecord::default()
            });
        }
        assert_eq!(log.total(), 5);
        // The sum covers the overwritten records too.
        assert_eq!(log.sum().bytes, 10);
        assert_eq!(log.sum().submit_ns, 100);
        assert_eq!(log.sum().wait_ns, 5);
        let mut kept: Vec<u64> = log.records().iter().map(|r| r.bytes).collect();
        kept.sort();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(log.records().len(), 3);
        let s = log.summary();
        assert_eq!((s.count, s.submit.min, s.total.max), (3, 20, 41));
    }
}
