//! The history: every operation of a run, one JSON object per line, in the order they
//! happened. Sends are recorded as `invoke` then exactly one of `ok` (with the queue
//! and queue offset the broker named), `fail` (a definite refusal: nothing stored) or
//! `unknown` (a deadline passed or a connection dropped: it may be stored). Every
//! message a consumer receives is a `recv`; faults are `fault_start` / `fault_end`.
//! The checker reads only this file, so a history written by hand tests it.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How a value was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendKind {
    Sync,
    Async,
    Ordered,
    /// A sync send of a timer message (`TIMER_DELAY_MS`): stored in a schedule queue,
    /// delivered to its topic when due.
    Delayed,
    /// A transactional send: a half message, then the local transaction's decision
    /// ([`crate::checker::txn_decision`]); the acknowledgement is the half's.
    Transactional,
}

/// A place in a queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueRef {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

impl std::fmt::Display for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.broker_name, self.queue_id)
    }
}

/// One line of the history. `t_us` is microseconds since the run started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A send attempt began. `value` is unique per message (`<tag>.p<producer>-<seq>`);
    /// `attempt` > 1 is the workload retrying a value whose earlier attempt was unknown.
    Invoke {
        t_us: u64,
        value: String,
        topic: String,
        kind: SendKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sharding_key: Option<String>,
        attempt: u32,
    },
    Ok {
        t_us: u64,
        value: String,
        attempt: u32,
        queue: QueueRef,
        queue_offset: i64,
        latency_us: u64,
    },
    Fail {
        t_us: u64,
        value: String,
        attempt: u32,
        error: String,
        latency_us: u64,
    },
    Unknown {
        t_us: u64,
        value: String,
        attempt: u32,
        error: String,
        latency_us: u64,
    },
    /// A consumer received a message. `consumer` is `push`, `pull` or `drain`. A
    /// delivered scheduled message also names its due time and when it was stored in
    /// its topic (ms since the epoch).
    Recv {
        t_us: u64,
        consumer: String,
        queue: QueueRef,
        queue_offset: i64,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stored_ms: Option<i64>,
    },
    /// An orderly consumer's listener took the message at `queue_offset`: it ran from
    /// `start_us` to `t_us`. `consumer` names the client (several share one group).
    Processed {
        t_us: u64,
        start_us: u64,
        consumer: String,
        queue: QueueRef,
        queue_offset: i64,
        value: String,
        /// The listener suspended it (it must come again before anything after it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        suspended: bool,
    },
    /// The retry consumer group and `value`, with a RECONSUMETIMES: `place` is
    /// `consumer` (its listener got it), or after the run `retry` / `dlq` (a copy found in
    /// the group's retry topic or dead-letter queue).
    Retried {
        t_us: u64,
        value: String,
        place: String,
        reconsume_times: i32,
    },
    FaultStart {
        t_us: u64,
        id: u32,
        fault: String,
        target: String,
    },
    FaultEnd {
        t_us: u64,
        id: u32,
        fault: String,
    },
    /// The workload started; every value it sends begins with `<tag>.` (so values
    /// of earlier runs against the same cluster are told apart).
    Start {
        t_us: u64,
        tag: String,
    },
    /// A free-form note (skipped faults, phase changes).
    Note {
        t_us: u64,
        text: String,
    },
    /// The cluster keeps CommitLog segments only `retention_ms` (`--retention-seconds`),
    /// so a value sent long enough before the end may be gone.
    Retention {
        t_us: u64,
        retention_ms: u64,
    },
    /// The drain found `queue` starting at `min_offset`: retention deleted what was
    /// before it.
    QueueMin {
        t_us: u64,
        queue: QueueRef,
        min_offset: i64,
    },
}

impl Event {
    pub fn t_us(&self) -> u64 {
        match self {
            Event::Invoke { t_us, .. }
            | Event::Ok { t_us, .. }
            | Event::Fail { t_us, .. }
            | Event::Unknown { t_us, .. }
            | Event::Recv { t_us, .. }
            | Event::Processed { t_us, .. }
            | Event::Retried { t_us, .. }
            | Event::FaultStart { t_us, .. }
            | Event::FaultEnd { t_us, .. }
            | Event::Start { t_us, .. }
            | Event::Note { t_us, .. }
            | Event::Retention { t_us, .. }
            | Event::QueueMin { t_us, .. } => *t_us,
        }
    }
}

/// Appends events to the history file. Shared by every task of a run.
pub struct Recorder {
    start: Instant,
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Recorder {
            start: Instant::now(),
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Writes one event. The time is taken under the lock, so the file is in time
    /// order.
    pub fn record(&self, make: impl FnOnce(u64) -> Event) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let event = make(self.now_us());
        // A history that cannot be written makes the run worthless: stop loudly.
        serde_json::to_writer(&mut *out, &event).expect("history write");
        out.write_all(b"\n").expect("history write");
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush()?;
        Ok(())
    }
}

/// Reads a history file.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    Ok(events)
}
