#!/usr/bin/env python3
"""Summarises the JSON reports of tests/bench/compare.sh into one table.

Usage: summarize.py RESULTS_DIR "WORKLOADS" "TARGETS"

Reads RESULTS_DIR/{workload}.{target}.{run}.json (as written by `relaybox bench --json`) and
prints, per workload metric, the median over runs for every target and the relaybox/peer
ratios. A run counts only if the generator stayed under 90% CPU; a median that had to use
runs above that is marked with `!`. Then which peers acknowledge before the data is on disk,
and the runs to be wary of.
"""

import glob
import json
import os
import statistics
import sys

GENERATOR_LIMIT_PERCENT = 90.0


NO_ACK = float("inf")


def p(report, key, field):
    pct = report.get(key)
    if pct is None and key == "ack_latency" and report.get("sent") and not report.get("acked"):
        # Sends went out but none was acknowledged within the window: longer than the run.
        return NO_ACK
    return None if pct is None else pct[field] / 1000.0


def show(fmt, v):
    return "no ack" if v == NO_ACK else fmt.format(v)


# (workloads, label, extract, higher is better, format)
METRICS = [
    (("pairs", "pairs-rate", "group"), "msg/s", lambda r: r["delivered_per_s"] if r["delivered"] else None, True, "{:.0f}"),
    (("pairs", "pairs-rate", "group"), "server CPU-µs/msg", lambda r: r.get("server_cpu_us_per_msg"), False, "{:.1f}"),
    (("pairs", "pairs-rate", "group"), "ack p50 ms", lambda r: p(r, "ack_latency", "p50_us"), False, "{:.2f}"),
    (("pairs", "pairs-rate", "group"), "ack p99 ms", lambda r: p(r, "ack_latency", "p99_us"), False, "{:.2f}"),
    (("pairs", "pairs-rate", "group"), "e2e p50 ms", lambda r: p(r, "e2e_latency", "p50_us"), False, "{:.2f}"),
    (("pairs", "pairs-rate", "group"), "e2e p99 ms", lambda r: p(r, "e2e_latency", "p99_us"), False, "{:.2f}"),
    (("pairs", "pairs-rate", "group"), "server CPU %", lambda r: r.get("server_cpu_percent"), None, "{:.0f}"),
    (("handshake",), "handshakes/s", lambda r: r.get("handshakes_per_s"), True, "{:.0f}"),
    (("handshake",), "IK logins/s (relaybox)", lambda r: (r.get("params") or {}).get("ik_logins_per_s"), True, "{:.0f}"),
    (("handshake",), "server CPU-µs/conn", lambda r: r.get("server_cpu_us_per_msg"), False, "{:.1f}"),
    (("handshake",), "connect p50 ms", lambda r: p(r, "e2e_latency", "p50_us"), False, "{:.2f}"),
    (("idle",), "KiB/idle conn", lambda r: None if r.get("rss_bytes_per_idle_connection") is None else r["rss_bytes_per_idle_connection"] / 1024, False, "{:.2f}"),
]

# Ratio columns: relaybox / peer.
BASE = "relaybox"


def load(results, workload, target):
    runs = []
    for path in sorted(glob.glob(os.path.join(results, f"{workload}.{target}.*.json"))):
        try:
            with open(path) as f:
                runs.append((os.path.basename(path), json.load(f)))
        except (OSError, ValueError) as e:
            print(f"warning: cannot read {path}: {e}", file=sys.stderr)
    return runs


def counted(report):
    g = report.get("generator_cpu_percent")
    return g is None or g <= GENERATOR_LIMIT_PERCENT


def median_of(runs, extract):
    """Median over counted runs; over all runs (flagged) when none counted."""
    good = [v for _, r in runs if counted(r) for v in [extract(r)] if v is not None]
    if good:
        return statistics.median(good), False
    every = [v for _, r in runs for v in [extract(r)] if v is not None]
    if every:
        return statistics.median(every), True
    return None, False


def main():
    results, workloads, targets = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
    data = {(w, t): load(results, w, t) for w in workloads for t in targets}
    peers = [t for t in targets if t != BASE] if BASE in targets else []

    header = ["workload", "metric", "better"] + targets + [f"{BASE}/{t}" for t in peers]
    rows = []
    for w in workloads:
        for wls, label, extract, higher, fmt in METRICS:
            if w not in wls:
                continue
            cells, values = [], {}
            for t in targets:
                v, flagged = median_of(data[(w, t)], extract)
                values[t] = v
                cells.append("-" if v is None else show(fmt, v) + ("!" if flagged else ""))
            if all(c == "-" for c in cells):
                continue
            for t in peers:
                b, v = values.get(BASE), values.get(t)
                ok = b is not None and v and NO_ACK not in (b, v)
                cells.append(f"{b / v:.2f}x" if ok else "-")
            better = {True: "higher", False: "lower", None: ""}[higher]
            rows.append([w, label, better] + cells)

    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else []
    line = lambda cols: "  ".join(
        (str(c).ljust(wd) if i < 3 else str(c).rjust(wd)) for i, (c, wd) in enumerate(zip(cols, widths))
    )
    if rows:
        print(line(header))
        print(line(["-" * wd for wd in widths]))
        for r in rows:
            print(line(r))
    else:
        print("no results")
    try:
        f = json.load(open(os.path.join(results, "fsync.json")))
        print(f"fsync: this filesystem's fdatasync of a 256-byte append takes p50 {f['p50_ms']:.2f} ms, "
              f"p99 {f['p99_ms']:.2f} ms (the floor under any durable ack, measured in this session)")
    except (OSError, ValueError, KeyError):
        print("fsync: not measured")
    print("(medians; ratios are relaybox / peer: above 1x is better for 'higher' rows, below 1x for 'lower' rows;"
          " '!' = every run of that cell had the generator above 90% CPU, so it does not count;"
          " 'no ack' = sends went out but none was acknowledged within the window)")

    print()
    print("What an acknowledgement means:")
    early = []
    for t in targets:
        means = next((r.get("ack_means") for w in workloads for _, r in data[(w, t)] if r.get("ack_means")), None)
        if means is None:
            continue
        print(f"  {t:14} {means}")
        if "not durable" in means:
            early.append(t)
    if early:
        print(f"Acknowledge before the data is on disk: {', '.join(early)}.")
    durable = [t for t in targets if t not in early and any(data[(w, t)] for w in workloads)]
    if durable:
        print(f"Acknowledge after the data is on disk (fsync): {', '.join(durable)}.")

    warnings = []
    for (w, t), runs in data.items():
        for name, r in runs:
            g = r.get("generator_cpu_percent")
            if g is not None and g > GENERATOR_LIMIT_PERCENT:
                warnings.append(f"{name}: generator at {g:.0f}% CPU (does not count)")
            if r.get("errors"):
                warnings.append(f"{name}: {r['errors']} errors")
            if r.get("sent") and not r.get("acked"):
                warnings.append(f"{name}: {r['sent']} sent, none acknowledged within the window")
        missing = int(os.environ.get("RUNS", "0") or 0) - len(runs)
        if missing > 0:
            warnings.append(f"{w} {t}: {missing} run(s) failed")
    if warnings:
        print()
        print("Runs to be wary of:")
        for x in sorted(warnings):
            print(f"  {x}")


if __name__ == "__main__":
    main()
