//! Rate-limited warnings: a flood of refused connections or requests must not become a flood
//! of log lines (or a way to fill the disk).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Admits one event per period, and counts those left out in between.
pub struct Throttle {
    last_ms: AtomicU64,
    left_out: AtomicU64,
    every_ms: u64,
}

impl Throttle {
    pub const fn new(every_ms: u64) -> Self {
        Throttle {
            last_ms: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
            every_ms,
        }
    }

    /// `Some(n)` if this event is to be logged, `n` being how many were left out since the
    /// last one logged; `None` if it is to be left out.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_per_period_and_counts_the_rest() {
        let t = Throttle::new(60_000);
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        t.last_ms.store(0, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(2));
    }
}
