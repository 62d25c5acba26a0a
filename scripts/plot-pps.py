#!/usr/bin/env python3
"""Plots bench-pps.sh results as an SVG bar chart: packets/s per forwarding mode, for each
worker count, next to dpdk-testpmd macswap on the same devices (standard library only).
Usage: plot-pps.py results.csv out.svg"""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
modes = list(dict.fromkeys(r["mode"] for r in rows))
workers = sorted({int(r["workers"]) for r in rows})
series = [(f"sluice, {w} worker{'s' if w > 1 else ''}", w, "sluice_pps") for w in workers]
series += [(f"testpmd macswap, {w} core{'s' if w > 1 else ''}", w, "testpmd_pps") for w in workers]
colours = ["#1f77b4", "#4a9fd8", "#9a9a9a", "#c8c8c8"]
value = {(r["mode"], int(r["workers"]), k): float(r[k]) for r in rows for k in ("sluice_pps", "testpmd_pps")}
top = max(value.values()) * 1.1 or 1
W, H, left, bottom, top_pad = 860, 420, 70, 60, 40
plot_w, plot_h = W - left - 20, H - bottom - top_pad
group = plot_w / max(len(modes), 1)
bar = group * 0.8 / len(series)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">packets/s per forwarding mode, 64-byte TCP, {rows[0]["flows"]} flows (net_pcap → net_null)</text>']
for i in range(6):
    v = top * i / 5
    y = top_pad + plot_h - plot_h * i / 5
    out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{W - 20}" y2="{y:.1f}" stroke="#eee"/>')
    out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v / 1e6:.0f}M</text>')
for gi, m in enumerate(modes):
    x0 = left + gi * group + group * 0.1
    for si, (name, w, key) in enumerate(series):
        v = value.get((m, w, key))
        if v is None:
            continue
        h = plot_h * v / top
        x = x0 + si * bar
        out.append(f'<rect x="{x:.1f}" y="{top_pad + plot_h - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" fill="{colours[si % len(colours)]}"><title>{name}, {m}: {v:,.0f} packets/s</title></rect>')
    out.append(f'<text x="{left + gi * group + group / 2:.1f}" y="{top_pad + plot_h + 18}" text-anchor="middle">{m}</text>')
for si, (name, _, _) in enumerate(series):
    x = left + si * 190
    out.append(f'<rect x="{x}" y="{H - 22}" width="12" height="12" fill="{colours[si % len(colours)]}"/><text x="{x + 16}" y="{H - 12}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
