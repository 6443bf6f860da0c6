//! [`AtomicHistogram`]: a fixed-bucket histogram that threads record into with relaxed
//! atomics only (no lock, no allocation), for figures taken on hot paths (message sizes,
//! CommitLog msync times) and read by a metrics scrape.
//!
//! A scrape reads each bucket on its own, so a figure recorded during the read may show
//! in a bucket but not yet in the count (or the other way round): each value is off by at
//! most the records of that instant, and every counter only grows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of values at or below each upper bound (non-cumulative: each value lands in the
/// first bucket whose bound holds it, or in the overflow), and their sum.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds, ascending, in the unit values are recorded in.
    bounds: &'static [u64],
    /// One count per bound, then the overflow (above the last bound).
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// What a scrape reads of an [`AtomicHistogram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Non-cumulative, one per bound, then the overflow.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Values recorded in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl AtomicHistogram {
    /// A histogram with these upper bounds, which must ascend.
    pub fn new(bounds: &'static [u64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must ascend"
        );
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        static BOUNDS: [u64; 3] = [10, 100, 1000];
        let h = AtomicHistogram::new(&BOUNDS);
        for v in [0, 10, 11, 100, 101, 1000, 1001, 5000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2, 2]);
        assert_eq!(s.count(), 8);
        assert_eq!(s.sum, 10 + 11 + 100 + 101 + 1000 + 1001 + 5000);
    }
}
