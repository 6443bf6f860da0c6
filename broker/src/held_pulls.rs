//! Pulls held by long polling, counted against `maxHeldPulls` (this node) and
//! `maxHeldPullsPerConnection`.
//!
//! A held pull costs a task and a timer and nothing else, but nothing else bounds how many
//! a client may leave waiting: they do not count against a connection's concurrent
//! requests (see [`remoting::connection::release_request_slot`]), since a consumer holds
//! one per queue it reads and may read thousands. A pull past either cap is answered at
//! once with SYSTEM_BUSY, which RocketMQ clients retry after their back-off (3 s in Java).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Counts {
    total: usize,
    /// Connection id -> pulls it holds; absent when none.
    per_connection: HashMap<u64, usize>,
}

pub struct HeldPulls {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_connection: usize,
}

/// One held pull's place; given back when dropped.
pub struct HeldPull<'a> {
    pulls: &'a HeldPulls,
    conn: u64,
}

impl HeldPulls {
    pub fn new(max_total: usize, max_per_connection: usize) -> Self {
        HeldPulls {
            counts: Mutex::default(),
            max_total,
            max_per_connection,
        }
    }

    /// A place for one more pull held for connection `conn`, or why there is none.
    pub fn hold(&self, conn: u64) -> Result<HeldPull<'_>, String> {
        let mut counts = self.counts.lock().unwrap();
        if counts.total >= self.max_total {
            return Err(format!(
                "[HELD_PULLS_FULL] this broker holds maxHeldPulls={} pulls; try again later",
                self.max_total
            ));
        }
        let mine = counts.per_connection.entry(conn).or_insert(0);
        if *mine >= self.max_per_connection {
            return Err(format!(
                "[HELD_PULLS_FULL] this connection holds maxHeldPullsPerConnection={} pulls; \
                 try again later",
                self.max_per_connection
            ));
        }
        *mine += 1;
        counts.total += 1;
        Ok(HeldPull { pulls: self, conn })
    }

    /// Pulls held now, in all.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap().total
    }
}

impl Drop for HeldPull<'_> {
    fn drop(&mut self) {
        let mut counts = self.pulls.counts.lock().unwrap();
        counts.total -= 1;
        if let Some(mine) = counts.per_connection.get_mut(&self.conn) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_connection.remove(&self.conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_connection_and_free_on_drop() {
        let pulls = HeldPulls::new(3, 2);
        let a1 = pulls.hold(1).unwrap();
        let _a2 = pulls.hold(1).unwrap();
        let refused = pulls.hold(1).err().unwrap();
        assert!(refused.contains("maxHeldPullsPerConnection=2"), "{refused}");
        let _b1 = pulls.hold(2).unwrap();
        let refused = pulls.hold(3).err().unwrap();
        assert!(refused.contains("maxHeldPulls=3"), "{refused}");
        assert_eq!(pulls.total(), 3);
        drop(a1);
        assert_eq!(pulls.total(), 2);
        let _c1 = pulls.hold(3).unwrap();
        assert!(pulls.hold(1).is_err(), "the total is full again");
    }
}
