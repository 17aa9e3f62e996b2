#!/usr/bin/env python3
"""Draws bench/results.json (from scripts/bench-compare.py) as bench/ratios.png: ferrite's
speed as a multiple of llama.cpp's per file and test (1.0 = parity), for the kernel level
of the first row (the default one) or for --level L.
    usage: scripts/bench-chart.py [--level L] [RESULTS.json [OUT.png]]"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--level", default="")
ap.add_argument("results", nargs="?", default=f"{ROOT}/bench/results.json")
ap.add_argument("out", nargs="?", default=f"{ROOT}/bench/ratios.png")
a = ap.parse_args()
everything = json.load(open(a.results))
level = a.level or everything[0]["kernels"]
rows = [r for r in everything if r["kernels"] == level]
labels = [f"{r['model'].replace('.gguf', '')}\n{r['test']}" for r in rows]
ratios = [r["ratio"] for r in rows]
fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4.5))
colors = ["#2a7" if x >= 1 else "#c44" for x in ratios]
ax.bar(range(len(rows)), ratios, color=colors)
ax.axhline(1.0, color="black", linewidth=0.8)
ax.set_xticks(range(len(rows)))
ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
ax.set_ylabel("ferrite / llama.cpp (tokens/s)")
ax.set_title(f"ferrite ({level} kernels) vs llama.cpp, same files, same threads")
for i, x in enumerate(ratios):
    ax.text(i, x + 0.02, f"{x:.2f}", ha="center", fontsize=7)
fig.tight_layout()
fig.savefig(a.out, dpi=110)
print(f"wrote {a.out}")
