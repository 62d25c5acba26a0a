#!/usr/bin/env python3
"""Draws docs/performance-summary.svg from docs/performance-summary.csv: every headline figure
of docs/performance.md as sluice's ratio to the reference it was measured against in the same
run (1.0: level with it), grouped by area, with the issue's target where it has one.

Usage: python3 docs/make-summary-plot.py > docs/performance-summary.svg"""
import csv
import os
import sys
from html import escape

rows = list(csv.DictReader(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "performance-summary.csv"))))
W, left, right, bar, gap, head = 980, 430, 60, 18, 6, 28
top = 50
scale_max = max(3.5, max(float(r["ratio"]) for r in rows) * 1.05)
plot_w = W - left - right
x = lambda v: left + plot_w * v / scale_max
y = top
out = []
group = None
for r in rows:
    if r["group"] != group:
        group = r["group"]
        y += 10
        out.append(f'<text x="10" y="{y + 14}" font-size="13" font-weight="bold">{escape(group)}</text>')
        y += head - 6
    v = float(r["ratio"])
    label = f'{r["figure"]} (vs {r["reference"]})'
    out.append(f'<text x="{left - 8}" y="{y + bar - 5}" font-size="11" text-anchor="end">{escape(label)}</text>')
    colour = "#3b7dd8" if v >= 1.0 else "#d8843b"
    out.append(f'<rect x="{left}" y="{y}" width="{x(v) - left:.1f}" height="{bar}" fill="{colour}"/>')
    out.append(f'<text x="{x(v) + 4:.1f}" y="{y + bar - 5}" font-size="11">{v:.2f}</text>')
    if r["target"]:
        t = float(r["target"])
        out.append(f'<line x1="{x(t):.1f}" y1="{y - 2}" x2="{x(t):.1f}" y2="{y + bar + 2}" stroke="#222" stroke-width="2" stroke-dasharray="3,2"/>')
    y += bar + gap
H = y + 40
axis = [f'<line x1="{x(1.0):.1f}" y1="{top}" x2="{x(1.0):.1f}" y2="{y}" stroke="#888" stroke-width="1"/>']
for t in range(0, int(scale_max) + 1):
    axis.append(f'<line x1="{x(t):.1f}" y1="{y}" x2="{x(t):.1f}" y2="{y + 5}" stroke="#444"/>')
    axis.append(f'<text x="{x(t):.1f}" y="{y + 18}" font-size="11" text-anchor="middle">{t}</text>')
print(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">')
print(f'<rect width="{W}" height="{H}" fill="white"/>')
print(f'<text x="{W / 2}" y="22" font-size="15" text-anchor="middle">sluice against the reference of each run (ratio; 1 = level; dashed: the issue\'s target)</text>')
print("\n".join(axis + out))
print(f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">figures and their scripts: docs/performance-summary.csv; method and limits: docs/performance.md</text>')
print("</svg>")
