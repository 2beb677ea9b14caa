//! Which bytes of a device input buffer may be non-zero, so that a region's padding (rows a
//! device program computes but nobody reads) is kept zero by clearing only what an earlier
//! use left there, not the whole padding every time. Fixed capacity: no allocation after
//! construction (when full, the ranges merge into one covering them all: more clearing, never
//! less).

use std::ops::Range;

/// Byte ranges of a buffer that may hold non-zero bytes (everything else is zero).
#[derive(Debug, Clone)]
pub struct DirtyRanges {
    ranges: Vec<Range<usize>>,
}

impl DirtyRanges {
    /// A buffer of `len` bytes whose contents are unknown (all of it possibly non-zero), with
    /// room for `capacity` ranges.
    pub fn unknown(len: usize, capacity: usize) -> Self {
        let mut ranges = Vec::with_capacity(capacity.max(2));
        ranges.push(0..len);
        Self { ranges }
    }

    /// `buf[region.start..region.start + used]` is about to be written and the rest of
    /// `region` must read zero: clears the bytes of `region` past `used` that may be non-zero
    /// and records the region's new state. Returns the end of what was cleared or written
    /// (flush `region.start..end`).
    pub fn prepare(&mut self, buf: &mut [u8], region: Range<usize>, used: usize) -> usize {
        let written = region.start..region.start + used;
        let pad = written.end..region.end;
        let mut end = written.end;
        for r in &self.ranges {
            let (s, e) = (r.start.max(pad.start), r.end.min(pad.end));
            if s < e {
                buf[s..e].fill(0);
                end = end.max(e);
            }
        }
        // Drop the region from every range (splitting one that straddles it), add `written`.
        let mut i = 0;
        while i < self.ranges.len() {
            let r = self.ranges[i].clone();
            if r.end <= region.start || r.start >= region.end {
                i += 1;
                continue;
            }
            let (left, right) = (r.start..region.start, region.end..r.end);
            match (left.is_empty(), right.is_empty()) {
                (true, true) => {
                    self.ranges.swap_remove(i);
                    continue;
                }
                (false, true) => self.ranges[i] = left,
                (true, false) => self.ranges[i] = right,
                (false, false) => {
                    self.ranges[i] = left;
                    self.push(right);
                }
            }
            i += 1;
        }
        if !written.is_empty() {
            self.push(written);
        }
        end
    }

    fn push(&mut self, r: Range<usize>) {
        if self.ranges.len() == self.ranges.capacity() {
            // Full: one range covering everything (a superset of the dirty bytes).
            let start = self.ranges.iter().map(|x| x.start).min().unwrap_or(r.start);
            let end = self.ranges.iter().map(|x| x.end).max().unwrap_or(r.end);
            self.ranges.clear();
            self.ranges.push(start.min(r.start)..end.max(r.end));
        } else {
            self.ranges.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `used` bytes of 0xAB into `region` through the tracker; checks the region's
    /// padding reads zero.
    fn write(d: &mut DirtyRanges, buf: &mut [u8], region: Range<usize>, used: usize) -> usize {
        let end = d.prepare(buf, region.clone(), used);
        buf[region.start..region.start + used].fill(0xAB);
        assert!(buf[region.start + used..region.end].iter().all(|&b| b == 0));
        end
    }

    #[test]
    fn padding_reads_zero_and_only_dirty_bytes_are_cleared() {
        let mut buf = vec![0x55u8; 1000];
        let mut d = DirtyRanges::unknown(buf.len(), 4);
        // Unknown contents: the first use clears its whole padding.
        assert_eq!(write(&mut d, &mut buf, 0..100, 10), 100);
        // Fewer bytes than last time: clears what the last use wrote past them.
        assert_eq!(write(&mut d, &mut buf, 0..100, 4), 10);
        // The same again: nothing to clear past the written bytes.
        assert_eq!(write(&mut d, &mut buf, 0..100, 4), 4);
        // A region over bytes another region wrote (and over never-cleared bytes).
        write(&mut d, &mut buf, 200..300, 50);
        assert_eq!(write(&mut d, &mut buf, 180..320, 5), 320);
        // Outside every region the contents are untouched.
        assert!(buf[400..].iter().all(|&b| b == 0x55));
        // Capacity exhausted: ranges merge, padding still reads zero.
        for i in 0..20 {
            write(&mut d, &mut buf, 400 + 20 * i..410 + 20 * i, 3);
        }
        write(&mut d, &mut buf, 400..1000, 1);
        assert!(buf[401..1000].iter().all(|&b| b == 0));
    }
}
