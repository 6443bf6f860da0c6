#!/usr/bin/env python3
"""Prints bench/compare.sh's markdown table from the JSON files of one run.

Usage: table.py OUT_DIR "async sync" CONSUME_N

Reads OUT_DIR/<pairing>-<system>-r<replicas>-<workload>.json as written by
`rocketraft bench ... --json` and `bench-nats ... --json`. A missing file (a run that
failed or was not run) shows as "n/a". Ratios are rocketraft / NATS: above 1 is better
for msg/s, below 1 is better for latency.
"""

import json
import os
import sys

PAIRING = {
    "async": "ASYNC_FLUSH vs NATS default",
    "sync": "SYNC_FLUSH vs `sync_interval: always`",
    "defaults": "defaults: SYNC_FLUSH vs NATS default",
}
LEGEND = {
    "async": "rocketraft ASYNC_FLUSH (a quorum holds the entry in memory; flushed every 500 ms)"
    " vs NATS default (a quorum holds it; NATS fsyncs every 2 minutes)",
    "sync": "rocketraft SYNC_FLUSH (a quorum has fsync'd the entry before the ack)"
    " vs NATS `sync_interval: always` (every write fsync'd before the ack)",
    "defaults": "each system as it ships: rocketraft SYNC_FLUSH (a quorum has fsync'd the entry"
    " before the ack) vs NATS default (a quorum holds it; NATS fsyncs every 2 minutes)",
}


def load(out, name):
    path = os.path.join(out, name + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(doc, *keys):
    for k in keys:
        if doc is None:
            return None
        doc = doc.get(k)
    return doc


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "msg/s":
        return f"{v:,.0f}"
    return f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def main():
    out, pairings, consume_n = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
    rows = []
    notes = []
    for p in pairings:
        for r in (3, 1):
            for what, key, unit, label in (
                ("throughput", ("msg_per_s",), "msg/s", "1 KiB, 256 in flight: msg/s"),
                ("latency", ("latency_ms", "p50"), "ms", "1 KiB, 1 in flight: p50 ack ms"),
                ("latency", ("latency_ms", "p99"), "ms", "1 KiB, 1 in flight: p99 ack ms"),
            ):
                rr = load(out, f"{p}-rocketraft-r{r}-{what}")
                nats = load(out, f"{p}-nats-r{r}-{what}")
                a, b = get(rr, *key), get(nats, *key)
                rows.append((p, f"R{r}", label, fmt(a, unit), fmt(b, unit), ratio(a, b)))
        rr = load(out, f"{p}-rocketraft-r3-consume")
        nats = load(out, f"{p}-nats-r3-consume")
        a, b = get(rr, "msg_per_s"), get(nats, "msg_per_s")
        label = f"catch-up consume of {consume_n:,} stored: msg/s"
        if rr is None and nats is None and p != "async":
            rows.append((p, "R3", label, "not run", "not run", "-"))
        else:
            rows.append((p, "R3", label, fmt(a, "msg/s"), fmt(b, "msg/s"), ratio(a, b)))
        # The replication tax: R3 throughput as a share of R1's, per system.
        for system in ("rocketraft", "nats"):
            r3 = get(load(out, f"{p}-{system}-r3-throughput"), "msg_per_s")
            r1 = get(load(out, f"{p}-{system}-r1-throughput"), "msg_per_s")
            notes.append((p, system, ratio(r3, r1)))
        # Never hide unknown outcomes, failures or short reads.
        for name in sorted(os.listdir(out)):
            if not name.startswith(p + "-") or not name.endswith(".json"):
                continue
            doc = load(out, name[:-5])
            bad = {k: doc.get(k) for k in ("unknown", "failed", "errors") if doc and doc.get(k)}
            if doc and doc.get("bench") == "consume" and doc.get("received", 0) < doc.get("requested", 0):
                bad["short read"] = f"{doc.get('received')} of {doc.get('requested')}"
            if bad:
                notes.append((p, name[:-5], ", ".join(f"{k} {v}" for k, v in bad.items())))

    print("| durability pairing | replicas | workload | rocketraft | NATS JetStream | rocketraft/NATS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p, r, label, a, b, q in rows:
        print(f"| {PAIRING[p]} | {r} | {label} | {a} | {b} | {q} |")
    print()
    print("Ratios are rocketraft / NATS: above 1 is better for msg/s, below 1 is better for latency.")
    print("Durability pairings:")
    print()
    for p in pairings:
        print(f"- {PAIRING[p]}: {LEGEND[p]}")
    print()
    for n in notes:
        if n[1] in ("rocketraft", "nats"):
            print(f"- {n[0]}: {n[1]} R3 throughput / R1 throughput = {n[2]}")
        else:
            print(f"- {n[0]}: {n[1]}: {n[2]}")


if __name__ == "__main__":
    main()
