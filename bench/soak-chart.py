#!/usr/bin/env python3
"""Draws the samples of `kilat bench soak --samples FILE.csv` as an SVG: one small panel per
sampled quantity over time (linear axes from zero, so growth looks like what it is), with the
warm-up shaded.

    python3 bench/soak-chart.py soak.csv docs/img/soak-1h.svg --warmup 300 --title "..."
"""
import argparse
import csv
import math

PANELS = [
    ("rss_kib", "RSS (MiB)", 1 / 1024),
    ("open_fds", "open file descriptors", 1),
    ("sessions", "sessions", 1),
    ("subscriptions", "subscriptions", 1),
    ("presence_entries", "presence entries", 1),
    ("channels", "channels", 1),
    ("runtime_tasks", "tokio tasks alive", 1),
    ("background_tasks", "node background tasks", 1),
]
COLOR = "#29335c"


def nice_max(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of warm-up to shade")
    ap.add_argument("--title", default="kilat bench soak")
    a = ap.parse_args()
    with open(a.csv) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t_s"]) / 60 for r in rows]
    panels = []
    for key, label, scale in PANELS:
        pts = [(x, float(r[key]) * scale) for x, r in zip(t, rows) if r.get(key)]
        if pts:
            panels.append((label, pts))
    cols, pw, ph, gap = 2, 430, 150, 40
    rows_n = (len(panels) + cols - 1) // cols
    w = cols * pw + (cols + 1) * gap
    h = 50 + rows_n * (ph + 55)
    xmax = max(t) if t else 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="#fff"/>',
           f'<text x="{w / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{a.title}</text>']
    for i, (label, pts) in enumerate(panels):
        ox = gap + (i % cols) * (pw + gap)
        oy = 50 + (i // cols) * (ph + 55)
        ymax = nice_max(max(y for _, y in pts) * 1.1)

        def px(x):
            return ox + pw * x / xmax

        def py(y):
            return oy + ph - ph * y / ymax
        out.append(f'<text x="{ox}" y="{oy - 8}" font-weight="bold">{label}</text>')
        if a.warmup > 0:
            out.append(f'<rect x="{ox}" y="{oy}" width="{px(a.warmup / 60) - ox:.1f}" height="{ph}" fill="#eee"/>')
        for k in range(5):
            yv = ymax * k / 4
            out.append(f'<line x1="{ox}" x2="{ox + pw}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{ox - 4}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:g}</text>')
        step = nice_max(xmax / 6)
        x = 0.0
        while x <= xmax + 1e-9:
            out.append(f'<text x="{px(x):.1f}" y="{oy + ph + 14}" text-anchor="middle">{x:g}</text>')
            x += step
        out.append(f'<text x="{ox + pw / 2}" y="{oy + ph + 28}" text-anchor="middle">minutes</text>')
        d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
        out.append(f'<path d="{d}" fill="none" stroke="{COLOR}" stroke-width="1.5"/>')
    out.append("</svg>")
    with open(a.svg, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
