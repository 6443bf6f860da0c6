//! The report of a run: `summary.txt` (what a person reads first), `summary.json`
//! (the whole verdict, for scripts), and `timeline.svg`: acknowledgements per 100 ms
//! and send latency over time, failed and unknown sends marked, each fault shaded and
//! labeled.

use std::fmt::Write as _;
use std::path::Path;

use crate::checker::{RecoveryStats, Verdict};
use crate::history::Event;

/// Notes printed in the text summary (all are in the JSON).
const NOTES_MAX: usize = 12;
/// Width of one throughput bucket.
const BUCKET_US: u64 = 100_000;

fn stats_line(s: &RecoveryStats) -> String {
    format!(
        "{} faults, {} with failed/unknown sends, {} never recovered; recovery p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; longest ack gap p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        s.faults,
        s.disrupted,
        s.never_recovered,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.ack_gap_p50_ms,
        s.ack_gap_p99_ms,
        s.ack_gap_max_ms
    )
}

/// The text summary.
pub fn summary_text(v: &Verdict, header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    let _ = writeln!(
        s,
        "sends: {} invoked, {} values, {} acked, {} failed, {} unknown ({} of them stored, {} not)",
        v.sends_invoked,
        v.values,
        v.acked,
        v.failed,
        v.unknown,
        v.unknown_stored,
        v.unknown_not_stored
    );
    let _ = writeln!(
        s,
        "stored (drained): {}; received: {:?}",
        v.stored_messages, v.received
    );
    if v.foreign > 0 {
        let _ = writeln!(
            s,
            "received {} messages of earlier runs (another run's tag): not checked",
            v.foreign
        );
    }
    let _ = writeln!(
        s,
        "lost: {}  misplaced: {}  unexpected: {}  failed-but-stored: {}  divergent: {}  reordered: {}  ordered-key-moved: {}  acked-without-quorum: {}",
        v.lost.count,
        v.misplaced.count,
        v.unexpected.count,
        v.failed_but_stored.count,
        v.divergent.count,
        v.reordered.count,
        v.ordered_key_moved.count,
        v.acked_without_quorum.count
    );
    if v.expired > 0 || v.expired_early.count > 0 || v.snapshot_installs > 0 {
        let _ = writeln!(
            s,
            "retention: {} acknowledged values gone with expired segments (not checked for presence), {} gone too early; {} snapshots installed",
            v.expired, v.expired_early.count, v.snapshot_installs
        );
    }
    for (consumer, f) in &v.not_delivered {
        let _ = writeln!(s, "not delivered to {consumer}: {}", f.count);
    }
    let _ = writeln!(
        s,
        "timer messages ({} acknowledged): delivered before due {}, stored twice {}",
        v.delayed_acked, v.delivered_early.count, v.delayed_twice.count
    );
    if v.txn_acked > 0 {
        let _ = writeln!(
            s,
            "transactions ({} halves acknowledged): commit lost or stored twice {}, rolled back but stored {}",
            v.txn_acked, v.txn_commit_wrong.count, v.txn_rolled_back_stored.count
        );
    }
    if v.orderly_calls > 0 {
        let _ = writeln!(
            s,
            "orderly consumers ({} calls): overlapping {}, out of order {}, offsets taken again {}",
            v.orderly_calls,
            v.orderly_overlap.count,
            v.orderly_out_of_order.count,
            v.orderly_redelivered
        );
    }
    if v.retries_checked {
        let _ = writeln!(
            s,
            "retries ({} failed values checked): wrong {}, dead-letter queue wrong {}, tries seen twice {}, dead-lettered a try early by a fallback re-send {}",
            v.retried_values, v.retries_wrong.count, v.dead_letters_wrong.count, v.retries_repeated, v.dead_lettered_early
        );
    }
    let d = &v.duplicates;
    let _ = writeln!(
        s,
        "duplicates: stored twice by retry of unknown send {}, stored twice unexplained {}; re-delivered {:?}; received stored-twice {:?}",
        d.stored_by_retry_of_unknown, d.stored_unexplained.count, d.redelivered, d.received_stored_twice
    );
    let _ = writeln!(s, "faults: {:?}", v.faults_by_kind);
    let _ = writeln!(s, "recovery (all): {}", stats_line(&v.recovery_stats));
    for (kind, st) in &v.recovery_by_kind {
        let _ = writeln!(s, "recovery ({kind}): {}", stats_line(st));
    }
    for r in &v.replicas {
        let _ = writeln!(
            s,
            "replicas {}: CommitLog bytes from position {} {:?}: {}",
            r.group,
            r.from_position,
            r.lengths_bytes,
            if r.identical {
                "identical"
            } else if r.tail_only {
                "identical but for a missing tail"
            } else {
                "DIFFERENT"
            }
        );
    }
    for n in v.notes.iter().take(NOTES_MAX) {
        let _ = writeln!(s, "note: {n}");
    }
    if v.notes.len() > NOTES_MAX {
        let _ = writeln!(
            s,
            "note: ... {} more notes in summary.json",
            v.notes.len() - NOTES_MAX
        );
    }
    let failures = v.failures();
    if failures.is_empty() {
        let _ = writeln!(s, "VERDICT: PASS");
    } else {
        let _ = writeln!(s, "VERDICT: FAIL");
        for f in failures {
            let _ = writeln!(s, "  {f}");
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The timeline picture.
pub fn timeline_svg(events: &[Event]) -> String {
    let end_us = events.iter().map(Event::t_us).max().unwrap_or(0).max(1);
    let buckets = (end_us / BUCKET_US + 1) as usize;
    let mut acks = vec![0u32; buckets];
    let mut latencies: Vec<(u64, u64)> = Vec::new();
    let mut troubles: Vec<(u64, bool)> = Vec::new();
    let mut faults: Vec<(u32, String, String, u64, Option<u64>)> = Vec::new();
    for e in events {
        match e {
            Event::Ok {
                t_us, latency_us, ..
            } => {
                acks[(*t_us / BUCKET_US) as usize] += 1;
                latencies.push((*t_us, *latency_us));
            }
            Event::Fail { t_us, .. } => troubles.push((*t_us, false)),
            Event::Unknown { t_us, .. } => troubles.push((*t_us, true)),
            Event::FaultStart {
                t_us,
                id,
                fault,
                target,
            } => faults.push((*id, fault.clone(), target.clone(), *t_us, None)),
            Event::FaultEnd { t_us, id, .. } => {
                if let Some(f) = faults.iter_mut().rev().find(|f| f.0 == *id) {
                    f.4 = Some(*t_us);
                }
            }
            _ => {}
        }
    }
    let (left, width, panel) = (70.0, 1400.0, 220.0);
    let top1 = 40.0;
    let top2 = top1 + panel + 50.0;
    let height = top2 + panel + 60.0;
    let x = |t: u64| left + width * (t as f64 / end_us as f64);
    let max_acks = acks.iter().copied().max().unwrap_or(1).max(1) as f64;
    let max_lat_ms = latencies
        .iter()
        .map(|l| l.1 as f64 / 1000.0)
        .fold(1.0, f64::max);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        left + width + 30.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Faults: shaded windows with labels, across both panels.
    for (id, fault, target, start, end) in &faults {
        let (x0, x1) = (x(*start), x(end.unwrap_or(end_us)));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{top1}" width="{:.1}" height="{:.1}" fill="#f4a261" fill-opacity="0.25"/>"##,
            (x1 - x0).max(1.0),
            top2 + panel - top1
        );
        let _ = writeln!(
            svg,
            r##"<text x="{x0:.1}" y="{:.1}" transform="rotate(-90 {x0:.1} {:.1})" fill="#9c4a00">#{id} {} {}</text>"##,
            top1 + panel - 4.0,
            top1 + panel - 4.0,
            escape(fault),
            escape(target)
        );
    }
    for (top, title) in [
        (top1, format!("acks per 100 ms (max {max_acks:.0})")),
        (
            top2,
            format!("send latency of acked sends, ms (max {max_lat_ms:.0}); red: failed, purple: unknown"),
        ),
    ] {
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{width}" height="{panel}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(svg, r#"<text x="{left}" y="{:.1}">{}</text>"#, top - 6.0, escape(&title));
    }
    let mut path = String::new();
    for (i, n) in acks.iter().enumerate() {
        let px = x(i as u64 * BUCKET_US);
        let py = top1 + panel - panel * (*n as f64 / max_acks);
        let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
    }
    let _ = writeln!(
        svg,
        r##"<path d="{path}" fill="none" stroke="#1d3557" stroke-width="1"/>"##
    );
    // Latency points (at most 20k drawn, evenly thinned).
    let step = (latencies.len() / 20_000).max(1);
    for (t, lat) in latencies.iter().step_by(step) {
        let py = top2 + panel - panel * ((*lat as f64 / 1000.0) / max_lat_ms);
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{py:.1}" r="1" fill="#2a9d8f"/>"##,
            x(*t)
        );
    }
    for (t, unknown) in troubles.iter().take(20_000) {
        let color = if *unknown { "#7b2cbf" } else { "#d62828" };
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{color}"/>"##,
            x(*t),
            top2 + panel,
            top2 + panel + 8.0
        );
    }
    // Time axis: a tick every ~10% of the run.
    let tick_s = ((end_us as f64 / 1e6) / 10.0).ceil().max(1.0) as u64;
    let mut s = 0;
    while s * 1_000_000 <= end_us && s < 10_000 {
        let px = x(s * 1_000_000);
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"#,
            top2 + panel + 24.0
        );
        s += tick_s;
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

/// Writes summary.txt, summary.json and timeline.svg into `out`.
pub fn write(out: &Path, v: &Verdict, events: &[Event], header: &str) -> anyhow::Result<String> {
    let text = summary_text(v, header);
    std::fs::write(out.join("summary.txt"), &text)?;
    std::fs::write(out.join("summary.json"), serde_json::to_vec_pretty(v)?)?;
    std::fs::write(out.join("timeline.svg"), timeline_svg(events))?;
    Ok(text)
}
