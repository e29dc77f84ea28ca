#!/usr/bin/env python3
"""Throughput vs chunk size for the bulk benchmark (benches/compression.rs).

By default reads the interleaved-round results the bench writes to
target/bench-results/bulk_ratios_<backend>.csv (median MB/s per contender and chunk size, all
contenders measured in the same rounds, so background load hits them alike); with
`--source criterion` reads criterion's output under target/criterion/bulk_json_1MiB/ instead
(benchmark.json for the input size, estimates.json's median for the time; contenders measured
one after another). Prints a Markdown table of MB/s (10^6 bytes per second) with ratios, and
writes docs/throughput.svg. Standard library only.

    cargo bench --bench compression
    cargo bench --no-default-features --features miniz --bench compression   # tower-http default build
    python3 scripts/plot_throughput.py [--source interleaved|criterion] [--out docs/throughput.svg]
"""

import argparse
import csv
import json
import math
import os
import sys

GROUP = "bulk_json_1MiB"
CHUNKS = ["7", "64", "1024", "16384", "one-chunk"]
CHUNK_LABELS = {"7": "7 B", "64": "64 B", "1024": "1 KiB", "16384": "16 KiB", "one-chunk": "1 MiB (whole body)"}
# Position on the log axis of the "one chunk" case: the body size.
CHUNK_X = {"7": 7, "64": 64, "1024": 1024, "16384": 16384, "one-chunk": 1048634}

# (criterion function id, legend, colour, dash pattern)
SERIES = [
    ("ours-zlib-rs", "tower-gzip (zlib-rs)", "#d62728", None),
    ("tower-http-zlib-rs", "tower-http, same zlib-rs build", "#1f77b4", None),
    ("tower-http-miniz", "tower-http, default build (miniz_oxide; separate run)", "#1f77b4", "6,4"),
    ("flate2-writes-zlib-rs", "flate2 GzEncoder fed the same chunks (zlib-rs)", "#2ca02c", "2,3"),
]
CEILING = ("flate2-oneshot-zlib-rs", "ceiling: flate2 GzEncoder, whole body in one call (zlib-rs)", "#555555", "8,3,2,3")


def load(root):
    """{function_id: {chunk: MB/s}} from criterion's files."""
    base = os.path.join(root, GROUP)
    out = {}
    if not os.path.isdir(base):
        return out
    for func in sorted(os.listdir(base)):
        fdir = os.path.join(base, func)
        if not os.path.isdir(fdir) or func == "report":
            continue
        for chunk in os.listdir(fdir):
            new = os.path.join(fdir, chunk, "new")
            try:
                with open(os.path.join(new, "benchmark.json")) as f:
                    bench = json.load(f)
                with open(os.path.join(new, "estimates.json")) as f:
                    est = json.load(f)
            except (OSError, ValueError):
                continue
            size = bench.get("throughput", {}).get("Bytes")
            ns = est["median"]["point_estimate"]
            if size and ns:
                out.setdefault(func, {})[chunk] = size / (ns / 1e9) / 1e6
    return out


def load_interleaved(results):
    """{function_id: {chunk: MB/s}} from bulk_ratios_<backend>.csv."""
    columns = [
        ("ours_mbps", "ours"),
        ("ours_never_hibernate_mbps", "ours-never-hibernate"),
        ("tower_http_mbps", "tower-http"),
        ("flate2_writes_mbps", "flate2-writes"),
        ("flate2_oneshot_mbps", "flate2-oneshot"),
    ]
    out = {}
    for backend in ("zlib-rs", "miniz"):
        path = os.path.join(results, f"bulk_ratios_{backend}.csv")
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            continue
        oneshot = []
        for row in rows:
            for column, func in columns:
                value = float(row[column])
                if func == "flate2-oneshot":
                    # Measured in every chunk size's rounds: one ceiling, the median of them.
                    oneshot.append(value)
                else:
                    out.setdefault(f"{func}-{backend}", {})[row["chunk"]] = value
        if oneshot:
            oneshot.sort()
            out[f"flate2-oneshot-{backend}"] = {"one-chunk": oneshot[len(oneshot) // 2]}
    return out


def table(data):
    cols = [
        ("ours-zlib-rs", "ours"),
        ("ours-never-hibernate-zlib-rs", "ours, never_hibernate"),
        ("tower-http-zlib-rs", "tower-http (zlib-rs)"),
        ("flate2-writes-zlib-rs", "flate2 chunked writes"),
        ("no-layer", "no layer (drain only)"),
        ("tower-http-miniz", "tower-http (miniz)"),
        ("ours-miniz", "ours (miniz)"),
    ]
    cols = [c for c in cols if c[0] in data]
    ceiling = data.get("flate2-oneshot-zlib-rs", {}).get("one-chunk")
    raw = data.get("deflate-oneshot-zlib-rs", {}).get("one-chunk")
    lines = []
    if ceiling:
        lines.append(f"flate2 one call (GzEncoder, whole body, zlib-rs): {ceiling:.1f} MB/s")
    if raw:
        lines.append(f"raw deflate one call + crc32fast: {raw:.1f} MB/s")
    lines.append("")
    header = "| chunk | " + " | ".join(name for _, name in cols)
    ratio_cols = []
    if ceiling and "ours-zlib-rs" in data:
        ratio_cols.append("ours / flate2 one call")
    if "tower-http-zlib-rs" in data and "ours-zlib-rs" in data:
        ratio_cols.append("ours / tower-http (zlib-rs)")
    if "tower-http-miniz" in data and "ours-zlib-rs" in data:
        ratio_cols.append("ours / tower-http (miniz, cross-run)")
    header += "".join(" | " + r for r in ratio_cols) + " |"
    lines.append(header)
    lines.append("|" + "---|" * (1 + len(cols) + len(ratio_cols)))
    for chunk in CHUNKS:
        row = [CHUNK_LABELS[chunk]]
        for func, _ in cols:
            v = data[func].get(chunk)
            row.append(f"{v:.1f}" if v else "-")
        ours = data.get("ours-zlib-rs", {}).get(chunk)
        for r in ratio_cols:
            if r.startswith("ours / flate2"):
                ref = ceiling
            elif "zlib-rs" in r:
                ref = data["tower-http-zlib-rs"].get(chunk)
            else:
                ref = data["tower-http-miniz"].get(chunk)
            row.append(f"{ours / ref:.2f}x" if ours and ref else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def svg(data, path):
    width, height = 760, 500
    left, right, top, bottom = 70, 60, 40, 190
    pw, ph = width - left - right, height - top - bottom
    xs = [CHUNK_X[c] for c in CHUNKS]
    xmin, xmax = math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15
    values = [v for f, *_ in SERIES + [CEILING] for v in data.get(f, {}).values()]
    ymax = max(values) * 1.1 if values else 1
    step = 20 if ymax <= 200 else 50
    ymax = math.ceil(ymax / step) * step

    def px(x):
        return left + (math.log10(x) - xmin) / (xmax - xmin) * pw

    def py(y):
        return top + ph - y / ymax * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">'
        "gzip level 6 throughput vs chunk size, ~1 MiB of JSON</text>",
    ]
    y = 0
    while y <= ymax:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    for c in CHUNKS:
        x = px(CHUNK_X[c])
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{CHUNK_LABELS[c]}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{top + ph + 38}" text-anchor="middle">'
        "chunk size (frame size of the response body; log scale)</text>"
    )
    out.append(
        f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "MB/s (10^6 B/s of input)</text>"
    )
    legend = []
    ceiling = data.get(CEILING[0], {}).get("one-chunk")
    if ceiling:
        yy = py(ceiling)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{CEILING[2]}" '
            f'stroke-width="1.5" stroke-dasharray="{CEILING[3]}"/>'
        )
        legend.append((f"{CEILING[1]} = {ceiling:.0f} MB/s", CEILING[2], CEILING[3], False))
    for func, name, colour, dash in SERIES:
        points = [(CHUNK_X[c], data.get(func, {}).get(c)) for c in CHUNKS]
        points = [(x, v) for x, v in points if v]
        if not points:
            continue
        d = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for x, v in points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
        legend.append((name, colour, dash, True))
    ly = top + ph + 60
    for i, (name, colour, dash, marker) in enumerate(legend):
        lx = left
        yy = ly + i * 20
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 28:.1f}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        if marker:
            out.append(f'<circle cx="{lx + 14:.1f}" cy="{yy}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{lx + 34:.1f}" y="{yy + 4}">{name}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["interleaved", "criterion"], default="interleaved")
    parser.add_argument("--criterion", default=os.path.join(repo, "target", "criterion"))
    parser.add_argument("--results", default=os.path.join(repo, "target", "bench-results"))
    parser.add_argument("--out", default=os.path.join(repo, "docs", "throughput.svg"))
    args = parser.parse_args()
    if args.source == "interleaved":
        data = load_interleaved(args.results)
        where = f"{args.results}/bulk_ratios_*.csv"
    else:
        data = load(args.criterion)
        where = f"{args.criterion}/{GROUP}"
    if not data:
        sys.exit(f"no results under {where}; run `cargo bench --bench compression` first")
    print(f"source: {where}\n")
    print(table(data))
    svg(data, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
