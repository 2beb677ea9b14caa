//! CLOCK_MONOTONIC in nanoseconds: the clock of `drm_syncobj_timeline_wait.timeout_nsec`.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// Now, in CLOCK_MONOTONIC nanoseconds.
pub fn monotonic_ns() -> i64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as i64)
}

/// The absolute deadline `timeout` from now (saturating at `i64::MAX`, the "forever" value).
pub fn deadline_after(timeout: Duration) -> i64 {
    let ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    monotonic_ns().saturating_add(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_deadlines() {
        let a = monotonic_ns();
        let d = deadline_after(Duration::from_millis(5));
        assert!(d >= a + 5_000_000);
        assert_eq!(deadline_after(Duration::MAX), i64::MAX);
        assert!(monotonic_ns() >= a);
    }
}
