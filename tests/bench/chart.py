#!/usr/bin/env python3
"""Draws the comparison's latency chart: the open-loop workload (pairs-rate) of every target,
acknowledgement and end-to-end latency at p50, p99, p99.9 and max, on a log scale, with the
filesystem's fdatasync p50 and p99 of the same run as the floor under any durable ack.

Usage: chart.py RESULTS_DIR "TARGETS" OUT.svg

Reads RESULTS_DIR/pairs-rate.{target}.{run}.json (median over runs per percentile) and
RESULTS_DIR/fsync.json, as written by tests/bench/compare.sh. Needs matplotlib (compare.sh
installs it into a venv under target/).
"""

import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

PERCENTILES = [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"), ("max_us", "max")]
KINDS = [("ack_latency", "ack", "-"), ("e2e_latency", "end to end", "--")]


def runs(results, target):
    out = []
    for path in sorted(glob.glob(os.path.join(results, f"pairs-rate.{target}.*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: chart.py RESULTS_DIR \"TARGETS\" OUT.svg")
    results, targets, out = sys.argv[1], sys.argv[2].split(), sys.argv[3]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    xs = list(range(len(PERCENTILES)))
    drawn = 0
    for i, target in enumerate(targets):
        reports = runs(results, target)
        if not reports:
            continue
        color = f"C{i}"
        for key, label, style in KINDS:
            ys = []
            for field, _ in PERCENTILES:
                vals = [r[key][field] / 1000.0 for r in reports if r.get(key)]
                ys.append(statistics.median(vals) if vals else float("nan"))
            if all(y != y for y in ys):  # every value NaN: no such latency for this target
                continue
            ax.plot(xs, ys, style, marker="o", color=color, label=f"{target}, {label}")
            drawn += 1
    if drawn == 0:
        sys.exit(f"error: no pairs-rate results in {results}")
    try:
        with open(os.path.join(results, "fsync.json")) as f:
            fs = json.load(f)
        ax.axhline(fs["p50_ms"], color="grey", linewidth=0.8, linestyle=":", label=f"fdatasync p50 ({fs['p50_ms']:.2f} ms)")
        ax.axhline(fs["p99_ms"], color="black", linewidth=0.8, linestyle=":", label=f"fdatasync p99 ({fs['p99_ms']:.2f} ms)")
    except (OSError, ValueError, KeyError) as e:
        print(f"warning: no fsync row: {e}", file=sys.stderr)
    rate = ""
    if reports := [r for t in targets for r in runs(results, t)]:
        rate = f", {reports[0].get('params', {}).get('rate', '?')} msg/s offered"
    ax.set_xticks(xs, [name for _, name in PERCENTILES])
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_title(f"pairs-rate (open loop{rate}): latency by percentile")
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None})
    print(f"latency chart: {out}")


if __name__ == "__main__":
    main()
