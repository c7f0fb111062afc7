#!/usr/bin/env python3
"""Turns a hyperfine export into a section of docs/benchmarks.md and a plot.

    benches/report.py NAME RESULT.json

The section between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in docs/benchmarks.md is
replaced (appended if missing) with a table of medians and ratios to each other command; the
plot goes to docs/bench-NAME.png (needs matplotlib; skipped with a note otherwise).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

name, path = sys.argv[1], sys.argv[2]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
data = json.load(open(path))["results"]
rows = []
for r in data:
    t = r["times"]
    rows.append((r["command"], statistics.median(t) * 1000, min(t) * 1000, statistics.quantiles(t, n=20)[18] * 1000, len(t)))

base = rows[0]
lines = [
    f"<!-- {name}:begin -->",
    f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
    f"({os.cpu_count()} cores, kernel {platform.release()}), command: `benches/{name}.sh`.",
    "",
    "| command | median (ms) | min (ms) | p95 (ms) | runs | " + " | ".join(f"ratio to {r[0]}" for r in rows[1:]) + " |",
    "|---|---:|---:|---:|---:|" + "---:|" * len(rows[1:]),
]
for r in rows:
    ratios = " | ".join(f"{r[1] / o[1]:.2f}" for o in rows[1:])
    lines.append(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]} | {ratios} |")
lines += ["", f"![{name}](bench-{name}.png)", f"<!-- {name}:end -->"]
section = "\n".join(lines)
print(section)

doc = os.path.join(root, "docs", "benchmarks.md")
text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
b, e = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
if b in text and e in text:
    text = text[: text.index(b)] + section + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w").write(text)

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
    sys.exit(0)
fig, ax = plt.subplots(figsize=(7, 3.2))
labels = [r["command"] for r in data]
_kw = "tick_labels" if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 9) else "labels"
ax.boxplot([[x * 1000 for x in r["times"]] for r in data], vert=False, showfliers=False, **{_kw: labels})
ax.set_xlabel("milliseconds (lower is better)")
ax.set_title(name)
ax.set_xlim(left=0)
fig.tight_layout()
fig.savefig(os.path.join(root, "docs", f"bench-{name}.png"), dpi=110)
