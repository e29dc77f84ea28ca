#!/usr/bin/env python3
"""Regenerates FIGURES.md, the one place every published figure of tower-gzip lives.

README.md, BENCHMARKS.md, RELIABILITY.md and the API docs quote no figure themselves: they link to
a section of FIGURES.md. This script measures every figure FIGURES.md holds, several times, and
writes each as the median over the runs with the min-max range over the runs, the number of runs,
the commit, the date, the machine and the command. Run it through `scripts/figures.sh`.

What runs (all in release builds, through the crate's public API, default settings unless a row
says otherwise):

- the six bench binaries in `benches/` with `--figures` (each prints `FIGURE <key> <value>` lines;
  one process = one run), built once and copied to `target/figures/bin/` so that builds by others
  in the same tree cannot swap them mid-run; runs are interleaved across benches, so background
  load on a shared machine falls on all of them alike;
- `benches/compression.rs`, `streams.rs` and `memory.rs` once more, built on the miniz_oxide
  backend (`--no-default-features --features miniz`): tower-http's default build uses it, and
  flate2's backend features unify across a build, so that comparison needs a second binary. Each
  zlib-rs run is followed directly by its miniz run, and cross-build ratios pair those two.
- `--load`: only the load-test section: `tests/load.rs` at full size (`TOWER_GZIP_LOAD=full`,
  debug build, as the tests run), plus the hibernation-under-load runs. It takes several minutes
  per run, so it is its own command; the section keeps its own stamp, and a run without `--load`
  keeps the last load section as it is.

Options: `--quick` (smoke run: small sizes, fewer runs, writes target/figures/FIGURES.quick.md,
never FIGURES.md), `--runs N` (runs per bench, default 5 for the cheap benches and 3 for the
others), `--out PATH`.

Standard library only.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIG_DIR = os.path.join(ROOT, "target", "figures")
BIN_DIR = os.path.join(FIG_DIR, "bin")
REPO_URL = "https://github.com/tower-gzip/tower-gzip/blob/main"

# (bench, runs in a full run, runs in a quick run)
BENCHES = [
    ("fairness", 9, 2),
    ("compression", 5, 1),
    ("streams", 5, 1),
    ("small_responses", 5, 1),
    ("memory", 3, 1),
    ("hibernation", 5, 1),
    ("traffic_shapes", 3, 1),
    ("observability", 3, 1),
]
MINIZ_BENCHES = {"compression", "streams", "memory"}
LOAD_RUNS = 3

LOAD_BEGIN = "<!-- load section: begin (written by scripts/figures.sh --load) -->"
LOAD_END = "<!-- load section: end -->"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def sh(args, **kw):
    return subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True, **kw).stdout


def log(msg):
    print(f"[figures {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git_stamp(paths):
    """(short commit, with "+dirty" if the tree has uncommitted changes; the changed files among
    `paths`, the code the figures are measured from; how many other files changed)."""
    head = sh(["git", "rev-parse", "--short", "HEAD"]).strip()
    changed = [
        line[3:]
        for line in sh(["git", "status", "--porcelain", "--untracked-files=all"]).splitlines()
        if line.strip()
    ]
    measured = [c for c in changed if any(c == p or c.startswith(p.rstrip("/") + "/") for p in paths)]
    return head + ("+dirty" if changed else ""), measured, len(changed) - len(measured)


MEASURED_PATHS = ["src", "benches", "Cargo.toml", "Cargo.lock"]
LOAD_PATHS = MEASURED_PATHS + ["tests/load.rs", "tests/load"]


def source_fingerprint(paths):
    """The committed and uncommitted contents of everything the measured binaries are built from
    (only those paths: a commit that touches nothing else, a doc, leaves it unchanged)."""
    committed = sh(["git", "ls-tree", "-r", "HEAD", "--"] + paths)
    diff = sh(["git", "diff", "HEAD", "--"] + paths)
    untracked = sh(["git", "ls-files", "--others", "--exclude-standard", "--"] + paths)
    h = hashlib.sha256((committed + diff + untracked).encode())
    for path in sorted(untracked.split()):
        try:
            with open(os.path.join(ROOT, path), "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    return h.hexdigest()[:12]


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    rustc = sh(["rustc", "--version"]).strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "rustc": rustc,
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return float("nan")


def build(features, benches):
    """Builds the bench binaries; returns {bench: path of a private copy}."""
    args = ["cargo", "bench", "--no-run", "--message-format=json"]
    suffix = "zlib-rs"
    if features:
        args += ["--no-default-features", "--features", features]
        suffix = features
    for b in benches:
        args += ["--bench", b]
    log(f"building benches ({suffix}): {' '.join(args[:3])} ...")
    proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"the build failed ({' '.join(args)}); nothing was measured")
    out = proc.stdout
    os.makedirs(BIN_DIR, exist_ok=True)
    paths = {}
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            name = msg["target"]["name"]
            if name in benches:
                dest = os.path.join(BIN_DIR, f"{name}-{suffix}")
                shutil.copy2(msg["executable"], dest)
                paths[name] = dest
    missing = set(benches) - set(paths)
    if missing:
        sys.exit(f"build produced no executable for {sorted(missing)}")
    return paths


def run_bench(path, quick):
    args = [path, "--bench", "--figures"] + (["--quick"] if quick else [])
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"{os.path.basename(path)} --figures failed ({proc.returncode})")
    figures, meta = {}, {}
    for line in proc.stdout.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "FIGURE" and len(parts) == 3:
            figures[parts[1]] = float(parts[2])
        elif parts[0] == "META" and len(parts) == 3:
            meta[parts[1]] = parts[2]
    return figures, meta, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# The catalogue: every figure FIGURES.md shows, by section
# ---------------------------------------------------------------------------------------------

# Formats: ratio (2 decimals + "x"), ratio3, pct (a ratio shown as +x.xx%), ms, us, kib, bytes,
# b1 (bytes with 1 decimal), b2, count.
CHUNKS = [("7", "7 B chunks"), ("64", "64 B chunks"), ("1024", "1 KiB chunks"), ("16384", "16 KiB chunks"), ("one-chunk", "the whole body in one chunk")]

SECTIONS = [
    {
        "id": "longest-poll",
        "title": "Longest `poll_frame` (executor fairness)",
        "source": "benches/fairness.rs",
        "about": "One ready 16,000,000-byte JSON chunk through `GzipLayer::new()` (level 6), the "
        "response body polled to its end with every `poll_frame` timed (wall clock). A run is one "
        "pass; its figure is that pass's longest poll, as a server thread would experience it "
        "(preemption by other processes included); on a shared machine that is mostly scheduling, "
        "so the on-CPU time of each run's longest poll (what the layer itself did in that poll) is "
        "shown beside it. The reference is flate2's `GzEncoder` "
        "compressing the same 16 MB in one call, in the same run: how long a middleware that "
        "compresses a whole chunk in one go holds its thread.",
        "rows": [
            ("longest poll (ours, level 6)", "fairness.ours.max_poll_ms", "ms"),
            ("99th-percentile poll (ours)", "fairness.ours.p99_poll_ms", "ms"),
            ("median poll (ours)", "fairness.ours.median_poll_ms", "ms"),
            ("on-CPU time of the longest poll, i.e. without preemption (ours)", "fairness.ours.max_poll_cpu_ms", "ms"),
            ("polls to send the body (ours)", "fairness.ours.polls", "count"),
            ("whole body, all polls (ours)", "fairness.ours.total_ms", "ms1"),
            ("flate2 one call on the same 16 MB (blocks its thread this long)", "fairness.oneshot_ms", "ms1"),
            ("longest poll / flate2 one call", "fairness.ours.max_poll_over_oneshot", "ratio3"),
            ("longest poll, tower-http `CompressionLayer` (level 6)", "fairness.tower_http.max_poll_ms", "ms"),
        ],
    },
    {
        "id": "bulk",
        "title": "Bulk compression (~1 MiB of JSON)",
        "source": "benches/compression.rs",
        "about": "1,048,634 bytes of generated API-style JSON through `GzipLayer::new()` (level 6), "
        "the handler's body yielding ready chunks of the given size, polled to the end. Speed "
        "ratios are ratios of on-CPU time per body (thread CPU time, so a call preempted by another "
        "process does not count as slower), taken within each round of a run (every contender once "
        "per round, rotating order; 11 rounds; the run's figure is the median per-round ratio): "
        "above 1 means faster than the reference. References: flate2's `GzEncoder` with the whole body in one "
        "`write_all` (the ceiling), and tower-http's `CompressionLayer` (gzip, level 6) on the "
        "same flate2 backend. tower-http's default build (miniz_oxide) is a separate binary: that "
        "ratio pairs each zlib-rs run with the miniz run made right after it and compares on-CPU "
        "time per body (thread CPU time, median over the rounds of each), which does not depend on "
        "what else the machine ran during either process. Sizes are deterministic.",
        "rows": [(f"speed vs flate2 one call, {label}", f"bulk.{c}.ours_over_flate2", "ratio") for c, label in CHUNKS]
        + [(f"speed vs tower-http (same zlib-rs build), {label}", f"bulk.{c}.ours_over_tower_http", "ratio") for c, label in CHUNKS]
        + [(f"speed vs tower-http default build (miniz_oxide), {label}", f"derived.bulk.{c}.ours_over_tower_http_miniz", "ratio") for c, label in CHUNKS]
        + [(f"output size vs flate2 one call, {label}", f"bulk.{c}.size_over_flate2", "pct") for c, label in CHUNKS]
        + [
            ("tower-http output size vs flate2 one call, 7 B chunks", "bulk.7.tower_http_size_over_flate2", "pct"),
            ("the frames' own cost: speed of flate2 one call plus draining the 7 B frames with no layer, vs flate2 one call (the most any layer could reach)", "bulk.7.frames_only_over_flate2", "ratio"),
            ("output at level 1 vs level 6 (one chunk)", "bulk.level1_size_over_level6", "pct"),
            ("ours, MB/s (10^6 B/s), one chunk (absolute: machine-dependent)", "bulk.one-chunk.ours_mbps", "n1"),
        ],
    },
    {
        "id": "small-responses",
        "title": "Small responses (4 KB JSON)",
        "source": "benches/small_responses.rs",
        "about": "A 4,280-byte JSON response. Allocations: one request through the service "
        "in-process, body polled to the end (deterministic). CPU time: on-CPU time in process, interleaved "
        "rounds (11 rounds of 100 calls); the reference is a raw deflate that creates a state and "
        "compresses the body in one call, which any gzip middleware has to do. Loopback: a hyper "
        "1.x HTTP/1.1 server on one thread with three listeners (no layer, ours, tower-http), "
        "loaded by `wrk -t1 -c32` (or, without `wrk` on the PATH, an in-process hyper client with "
        "32 connections; the stamp above says which) for 2 s per stack, 3 rounds per run; ratios "
        "within a round; "
        "server CPU from the server thread's schedstat.",
        "rows": [
            ("allocations per response, ours (gzip)", "small.allocs.ours.gzip", "count"),
            ("allocations per response, ours (client without gzip)", "small.allocs.ours.identity", "count"),
            ("allocations per response, no layer", "small.allocs.none.gzip", "count"),
            ("allocations per response, tower-http (gzip)", "small.allocs.tower_http.gzip", "count"),
            ("allocations per response, ours minus tower-http (gzip)", "small.allocs.ours_minus_tower_http", "count"),
            ("CPU time per response, ours / raw deflate (below 1: ours is faster)", "small.ours_over_raw_deflate", "ratio"),
            ("CPU time per response, ours / tower-http (below 1: ours is faster)", "small.ours_over_tower_http", "ratio"),
            ("CPU time per response, ours, level 6 (absolute)", "small.ours.L6.us", "us1"),
            ("CPU time per response, ours, level 1 (absolute)", "small.ours.L1.us", "us1"),
            ("loopback requests/s, ours / no layer", "small.loopback.rps_ours_over_none", "ratio"),
            ("loopback server capacity (CPU per request), no layer / ours", "small.loopback.cpu_none_over_ours", "ratio"),
            ("loopback requests/s, ours / tower-http", "small.loopback.rps_ours_over_tower_http", "ratio"),
        ],
    },
    {
        "id": "streams",
        "title": "Token streams (SSE and NDJSON)",
        "source": "benches/streams.rs",
        "about": "500 OpenAI-style chat-completion SSE events and 500 Ollama-style NDJSON lines, "
        "the handler pausing (`Pending`) after every event, so each event is flushed on its own "
        "(`GzipLayer::new().compress_sse(true)`, `.level(n)` where stated). Bytes per event = "
        "the whole response body / 500 (gzip header and trailer included); \"HTTP/1.1\" adds "
        "the chunked framing of one chunk per flush. Byte counts are deterministic. CPU: on-CPU "
        "time of whole 500-event streams including the compressor's creation, 21 interleaved "
        "rounds per run.",
        "rows": [
            ("SSE event size, uncompressed", "stream.sse.event_bytes", "b1"),
            ("SSE bytes per event, level 6 (default)", "stream.sse.L6.bytes_per_event", "b2"),
            ("SSE bytes per event, level 1", "stream.sse.L1.bytes_per_event", "b2"),
            ("SSE bytes per event, level 9", "stream.sse.L9.bytes_per_event", "b2"),
            ("SSE on HTTP/1.1 per event, level 6", "stream.sse.L6.h1_bytes_per_event", "b2"),
            ("SSE on HTTP/1.1 per event, uncompressed", "stream.sse.identity.h1_bytes_per_event", "b1"),
            ("SSE whole stream, uncompressed / compressed (level 6)", "stream.sse.L6.input_over_output", "ratio1"),
            ("SSE bytes per event, bursts of 5 events, level 6", "stream.sse.L6.burst5_bytes_per_event", "b2"),
            ("SSE bytes per event, events 10.. (window warmed up), level 1", "stream.sse.L1.steady_bytes_per_event", "b2"),
            ("the same, tower-http `CompressionLayer`, level 1 (same run)", "stream.sse.L1.tower_http_steady_bytes_per_event", "b2"),
            ("SSE bytes per event, events 10.., level 6", "stream.sse.L6.steady_bytes_per_event", "b2"),
            ("the same, tower-http, level 6", "stream.sse.L6.tower_http_steady_bytes_per_event", "b2"),
            ("SSE bytes per event, events 10.., level 9", "stream.sse.L9.steady_bytes_per_event", "b2"),
            ("the same, tower-http, level 9", "stream.sse.L9.tower_http_steady_bytes_per_event", "b2"),
            ("SSE bytes per event, raw deflate with a sync flush per event (for comparison; the layer never ends events with sync flushes)", "stream.sse.L6.raw_sync_flush_bytes_per_event", "b2"),
            ("raw zlib-rs, bench JSON in 384 B events: fixed codes + `Z_BLOCK` / dynamic codes + partial flush (bytes)", "stream.json384.fixed_over_dynamic", "ratio3"),
            ("the same in 512 B events (the layer's switch point)", "stream.json512.fixed_over_dynamic", "ratio3"),
            ("the same in 2 KiB events", "stream.json2048.fixed_over_dynamic", "ratio3"),
            ("the layer on 2 KiB JSON events (it switches to dynamic codes) / raw dynamic codes + partial flush, + gzip framing (bytes)", "stream.json2048.ours_over_raw_dynamic", "ratio3"),
            ("SSE bytes per event, level 6, miniz_oxide backend", "miniz.stream.sse.L6.bytes_per_event", "b2"),
            ("NDJSON line size, uncompressed", "stream.ndjson.event_bytes", "b1"),
            ("NDJSON bytes per line, level 6", "stream.ndjson.L6.bytes_per_event", "b2"),
            ("NDJSON bytes per line, level 1", "stream.ndjson.L1.bytes_per_event", "b2"),
            ("NDJSON on HTTP/1.1 per line, level 6", "stream.ndjson.L6.h1_bytes_per_event", "b2"),
            ("NDJSON whole stream, uncompressed / compressed (level 6)", "stream.ndjson.L6.input_over_output", "ratio1"),
            ("NDJSON bytes per line, raw deflate with a sync flush per line (for comparison)", "stream.ndjson.L6.raw_sync_flush_bytes_per_event", "b2"),
            ("NDJSON bytes per line, level 6, miniz_oxide backend", "miniz.stream.ndjson.L6.bytes_per_event", "b2"),
            ("CPU per SSE event, level 6 / level 1", "stream.sse.cpu_L6_over_L1", "ratio1"),
            ("CPU per SSE event, level 6 (absolute)", "stream.sse.L6.cpu_us_per_event", "us2"),
            ("CPU per SSE event, level 1 (absolute)", "stream.sse.L1.cpu_us_per_event", "us2"),
            ("CPU per SSE event, client without gzip (absolute)", "stream.sse.identity.cpu_us_per_event", "us3"),
        ],
    },
    {
        "id": "busy-stream-memory",
        "title": "Memory of a busy compressed stream",
        "source": "benches/memory.rs",
        "about": "2,000 SSE responses through `GzipLayer::new().compress_sse(true)` (or the stated "
        "setting), each paused mid-body (its handler stalls) while holding its deflate state, "
        "after a stall before it (a stream mid-answer: with 2,000 streams the layer is crowded, "
        "and a stream paused at its very first stall would hibernate); one process per case. The "
        "deflate state rows: live heap of one state, ours and flate2's. Heap = live bytes of a counting allocator (exact); RSS = `VmRSS` "
        "growth. Per stream = growth / 2,000. \"After\" rows: heap above the baseline once every "
        "body ended (all 2,000 streams together), then once the service and the layer are "
        "dropped as well.",
        "rows": [
            ("one deflate state, zlib-rs at memory level 7 (what this crate creates)", "memory.deflate_state.ours_kib", "kib"),
            ("one deflate state, flate2 (memory level 8, what tower-http gets)", "memory.deflate_state.flate2_kib", "kib"),
            ("resident per stream, paused mid-answer (two events, a stall between)", "memory.default.rss_kib", "kib"),
            ("heap per stream, paused mid-answer (two events, a stall between)", "memory.default.heap_kib", "kib"),
            ("resident per stream, paused after a 150-event answer (a stall after the first event)", "memory.default_150_events.rss_kib", "kib"),
            ("heap per stream, paused after a 150-event answer", "memory.default_150_events.heap_kib", "kib"),
            ("resident per stream, `window_bits(12)`", "memory.wb12.rss_kib", "kib"),
            ("heap per stream, `window_bits(12)`", "memory.wb12.heap_kib", "kib"),
            ("resident per stream, miniz_oxide backend", "miniz.memory.default.rss_kib", "kib"),
            ("heap per stream, miniz_oxide backend", "miniz.memory.default.heap_kib", "kib"),
            ("heap above baseline after all bodies ended, the layer still alive (the reset deflate states it keeps for reuse, and the hibernation timer's queue)", "memory.default.heap_after_end_bytes", "bytes"),
            ("heap above baseline once the layer is dropped too (the process-wide hibernation timer's queue)", "memory.default.heap_after_drop_bytes", "bytes"),
            ("the same, per stream", "memory.default.heap_after_drop_bytes_per_stream", "b1"),
            ("heap per response, client without gzip", "memory.identity.heap_bytes", "bytes"),
            ("heap per response, skipped media type (SSE not opted in)", "memory.skipped.heap_bytes", "bytes"),
            ("`window_bits(12)`: 1 MiB JSON output vs window 15", "memory.wb12.json_bytes_over_wb15", "pct"),
            ("`window_bits(12)`: SSE bytes per event vs window 15", "memory.wb12.sse_bytes_over_wb15", "pct"),
        ],
    },
    {
        "id": "idle-stream-memory",
        "title": "Memory of an idle (hibernated) stream",
        "source": "benches/hibernation.rs",
        "about": "2,000 SSE streams through `GzipLayer::new().compress_sse(true)` (default "
        "`hibernate_after`, 1 s), each response body driven by its own tokio task as a server "
        "drives it, the handler's body fed by a channel. Each stream sends a 150-event answer and "
        "goes silent; nothing polls it but its own task, which the layer's idle timer wakes at "
        "the `hibernate_after` deadline. Idle figures are taken after 1.2 s of silence, once every "
        "stream has let go of its deflate state (the row below counts any that had not). All "
        "figures are net of the harness's own cost (the same 2,000 tasks, channels and bodies "
        "sent to a client without gzip, measured in its own process, also shown). One process "
        "per configuration.",
        "rows": [
            ("live heap per idle stream", "idle.default.idle_heap_kib", "kib"),
            ("streams still holding a deflate state when measured (of 2,000)", "idle.default.idle_holding", "count"),
            ("resident per idle stream, glibc malloc defaults", "idle.default.idle_rss_kib", "kib"),
            ("resident per idle stream, `MALLOC_MMAP_THRESHOLD_=131072`", "idle.default_mmap128k.idle_rss_kib", "kib"),
            ("live heap per idle stream, `window_bits(12)`", "idle.wb12.idle_heap_kib", "kib"),
            ("live heap per stream, `never_hibernate()` (keeps its deflate state while silent)", "idle.never.idle_heap_kib", "kib"),
            ("resident per stream, `never_hibernate()`", "idle.never.idle_rss_kib", "kib"),
            ("the harness's own heap per stream (subtracted above)", "idle.harness.heap_kib", "kib"),
        ],
    },
    {
        "id": "traffic-shapes",
        "title": "Memory per stream in each shape of traffic, against tower-http",
        "source": "benches/traffic_shapes.rs",
        "about": "2,000 opted-in SSE streams of OpenAI-style events (about 258 B each), each "
        "response body driven by its own tokio task as a server drives it, the handler's body fed "
        "by a channel; live heap from a counting allocator, net of the harness's own cost per "
        "stream (the same tasks, channels and bodies sent to a client without gzip). Shapes: "
        "busy (a 150-event answer sent in quick succession after its first event, which each stream "
        "flushed at a stall of its own, as a stream mid-answer has; the stream still open); silent (then "
        "4x `hibernate_after` of silence, nothing polling the body but its own task); after one "
        "more event and a 100 ms wait; and the bytes that one event cost on the wire. Ours under "
        "the defaults, ours with `never_hibernate()`, and tower-http's `CompressionLayer` (gzip, "
        "level 6, SSE compressed, same zlib-rs backend). One process per case.",
        "rows": [
            ("busy: live heap per stream, ours", "shapes.ours.busy_kib", "kib"),
            ("busy: ours, `never_hibernate()`", "shapes.ours_never_hibernate.busy_kib", "kib"),
            ("busy: tower-http", "shapes.tower_http.busy_kib", "kib"),
            ("silent after a burst: live heap per stream, ours", "shapes.ours.silent_kib", "kib"),
            ("silent after a burst: tower-http", "shapes.tower_http.silent_kib", "kib"),
            ("after one more event: live heap per stream, ours", "shapes.ours.after_event_kib", "kib"),
            ("after one more event: tower-http", "shapes.tower_http.after_event_kib", "kib"),
            ("bytes for that event, ours (it slept, and woke at the bit where it stopped)", "shapes.ours.event_bytes", "b1"),
            ("bytes for that event, ours, `never_hibernate()`", "shapes.ours_never_hibernate.event_bytes", "b1"),
            ("bytes for that event, tower-http", "shapes.tower_http.event_bytes", "b1"),
            ("bytes for that event, slept / never slept", "shapes.ours.event_bytes_over_never_slept", "ratio3"),
            ("bytes sent during the silence, per stream, ours (falling asleep sends nothing)", "shapes.ours.silence_bytes", "b1"),
            ("bytes for the whole exchange (burst, silence, one more event), per stream, ours", "shapes.ours.total_bytes", "b1"),
            ("bytes for the whole exchange, ours, `never_hibernate()`", "shapes.ours_never_hibernate.total_bytes", "b1"),
            ("bytes for the whole exchange, tower-http", "shapes.tower_http.total_bytes", "b1"),
            ("bytes for that event, slept / tower-http (which ends each event with a sync flush)", "shapes.ours.event_bytes_over_tower_http", "ratio3"),
        ],
    },
    {
        "id": "observability",
        "title": "Cost of metrics and the per-response callback",
        "source": "benches/observability.rs",
        "about": "The same layer with `.metrics(..)`, and with `.metrics(..)` plus "
        "`.on_response_end(..)` (which also times the compressor), against neither, on a ~1 MiB "
        "JSON body, a 4 KB JSON body and a 300-event SSE stream (one event per stall). Wall-clock "
        "time of each variant in interleaved rounds (15 per run, rotating order); the run's figure "
        "is the median per-round ratio: 1.00 means no measurable cost.",
        "rows": [
            ("bulk, metrics / off", "observability_bulk_metrics_vs_off", "ratio3"),
            ("bulk, metrics + callback / off", "observability_bulk_metrics_callback_vs_off", "ratio3"),
            ("4 KB, metrics / off", "observability_small_metrics_vs_off", "ratio3"),
            ("4 KB, metrics + callback / off", "observability_small_metrics_callback_vs_off", "ratio3"),
            ("token stream, metrics / off", "observability_token_stream_metrics_vs_off", "ratio3"),
            ("token stream, metrics + callback / off", "observability_token_stream_metrics_callback_vs_off", "ratio3"),
        ],
    },
    {
        "id": "wake-cost",
        "title": "Cost of waking a hibernated stream",
        "source": "benches/hibernation.rs",
        "about": "A 2,000-event OpenAI-style SSE stream, one event per stall, through "
        "`compress_sse(true).hibernate_after(Duration::ZERO)` (so it hibernates at every stall "
        "and wakes for every event: allocate a deflate state, prime it with the last 32 KiB) "
        "against `compress_sse(true).never_hibernate()`, on-CPU time, in alternating rounds (7 per "
        "run). A "
        "stream under the defaults pays this only on the first event after an idle gap longer "
        "than `hibernate_after`.",
        "rows": [
            ("CPU per wake (extra time of a waking event)", "idle.wake_us", "us1"),
            ("CPU of a waking event / an ordinary event", "idle.wake_event_over_plain_event", "ratio1"),
            ("CPU of an ordinary event (absolute)", "idle.plain_event_us", "us2"),
            ("a young stream's wake: CPU of its second event, having slept after its first (as a token stream in a crowded layer does), minus that of a stream that kept its state (500 streams per round)", "idle.young_wake_us", "us1"),
            ("the same, as a ratio: second event after sleeping / second event", "idle.young_wake_event_over_plain_event", "ratio1"),
            ("bytes per event, hibernating and waking around every event / never hibernating (each sleep ends the stream with a partial flush's empty block, or pads it to a byte while it has less than a window of history)", "idle.bytes_after_wake_over_never", "ratio3"),
        ],
    },
]

# Performance targets of the project (issue 4): (target, key, format, test).
TARGETS = [
    ("bulk ≥ 0.95x flate2 one call, one chunk", "bulk.one-chunk.ours_over_flate2", "ratio", lambda v: v >= 0.95),
    ("bulk ≥ 0.95x flate2 one call, 16 KiB chunks", "bulk.16384.ours_over_flate2", "ratio", lambda v: v >= 0.95),
    ("bulk ≥ 0.95x flate2 one call, 7 B chunks", "bulk.7.ours_over_flate2", "ratio", lambda v: v >= 0.95),
    ("bulk ≥ 2x tower-http default build (miniz_oxide), one chunk", "derived.bulk.one-chunk.ours_over_tower_http_miniz", "ratio", lambda v: v >= 2.0),
    ("bulk ≥ 2x tower-http default build (miniz_oxide), 7 B chunks", "derived.bulk.7.ours_over_tower_http_miniz", "ratio", lambda v: v >= 2.0),
    ("bulk ≥ 1.0x tower-http on the same zlib-rs build, one chunk", "bulk.one-chunk.ours_over_tower_http", "ratio", lambda v: v >= 1.0),
    ("bulk ≥ 1.0x tower-http on the same zlib-rs build, 7 B chunks", "bulk.7.ours_over_tower_http", "ratio", lambda v: v >= 1.0),
    ("output within 1% of flate2 one call, one chunk", "bulk.one-chunk.size_over_flate2", "pct", lambda v: v <= 1.01),
    ("4 KB JSON ≥ 0.8x the requests/s of no layer (loopback)", "small.loopback.rps_ours_over_none", "ratio", lambda v: v >= 0.8),
    ("≤ 15 B per ~258 B SSE event, default level and flush policy", "stream.sse.L6.bytes_per_event", "b2", lambda v: v <= 15),
    ("≤ 320 KiB resident per live (busy) stream", "memory.default.rss_kib", "kib", lambda v: v <= 320),
    ("~0 heap per skipped or identity response", "memory.identity.heap_bytes", "bytes", lambda v: v <= 64),
    ("heap back to baseline once the bodies and the layer are gone (≤ 64 B per stream left)", "memory.default.heap_after_drop_bytes_per_stream", "b1", lambda v: v <= 64),
    ("longest `poll_frame` on a 16 MB ready chunk ≤ 2 ms", "fairness.ours.max_poll_ms", "ms", lambda v: v <= 2.0),
    # Issue 11.
    ("longest `poll_frame` on a 16 MB ready chunk ≤ 1 ms", "fairness.ours.max_poll_ms", "ms", lambda v: v <= 1.0),
    ("4 KB JSON ≥ 1.0x tower-http's speed: our CPU time / tower-http's ≤ 1.0", "small.ours_over_tower_http", "ratio", lambda v: v <= 1.0),
    ("4 KB JSON ≥ 0.97x raw deflate's speed: our CPU time / raw deflate's ≤ 1.03", "small.ours_over_raw_deflate", "ratio", lambda v: v <= 1 / 0.97),
    ("4 KB JSON: no more allocations than tower-http", "small.allocs.ours_minus_tower_http", "count", lambda v: v <= 0),
    ("≤ 10 B per SSE event (events 10.., level 6)", "stream.sse.L6.steady_bytes_per_event", "b2", lambda v: v <= 10),
    ("busy stream ≤ 400 KiB live heap", "shapes.ours.busy_kib", "kib", lambda v: v <= 400),
    ("silent after a burst ≤ 40 KiB live heap (stretch: ≤ 8 KiB)", "shapes.ours.silent_kib", "kib", lambda v: v <= 40),
    ("idle after one more event ≤ 36 KiB live heap (stretch: ≤ 8 KiB)", "shapes.ours.after_event_kib", "kib", lambda v: v <= 36),
    ("7 B chunks ≥ 0.85x flate2 one call", "bulk.7.ours_over_flate2", "ratio", lambda v: v >= 0.85),
    ("bytes for the first event after waking within 10% of a stream that never slept", "shapes.ours.event_bytes_over_never_slept", "ratio3", lambda v: v <= 1.10),
    # Issue 12.
    ("metrics cost ≤ 1% (4 KB JSON)", "observability_small_metrics_vs_off", "ratio3", lambda v: v <= 1.01),
    ("metrics cost ≤ 1% (token stream)", "observability_token_stream_metrics_vs_off", "ratio3", lambda v: v <= 1.01),
    ("metrics + callback (which times the compressor) cost ≤ 1% (4 KB JSON)", "observability_small_metrics_callback_vs_off", "ratio3", lambda v: v <= 1.01),
    ("metrics + callback (which times the compressor) cost ≤ 1% (token stream)", "observability_token_stream_metrics_callback_vs_off", "ratio3", lambda v: v <= 1.01),
]


def fmt(value, kind):
    if value != value:  # NaN
        return "n/a"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "ratio1":
        return f"{value:.1f}x"
    if kind == "ratio3":
        return f"{value:.3f}x"
    if kind == "pct":
        return f"{(value - 1) * 100:+.2f}%"
    if kind == "ms":
        return f"{value:.2f} ms"
    if kind == "ms1":
        return f"{value:.1f} ms"
    if kind == "us1":
        return f"{value:.1f} µs"
    if kind == "us2":
        return f"{value:.2f} µs"
    if kind == "us3":
        return f"{value:.3f} µs"
    if kind == "kib":
        return f"{value:.1f} KiB"
    if kind == "bytes":
        return f"{value:,.0f} B"
    if kind == "b1":
        return f"{value:.1f} B"
    if kind == "b2":
        return f"{value:.2f} B"
    if kind == "count":
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    if kind == "n1":
        return f"{value:.1f}"
    if kind == "mib1":
        return f"{value:,.1f} MiB"
    if kind == "s1":
        return f"{value:.1f} s"
    return f"{value:g}"


def summary(values, kind):
    """(median, range text, runs)."""
    if not values:
        return "n/a", "not measured", 0
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    if fmt(lo, kind) == fmt(hi, kind):
        rng = "same in every run"
    else:
        rng = f"{fmt(lo, kind)} – {fmt(hi, kind)}"
    return fmt(med, kind), rng, len(values)


# ---------------------------------------------------------------------------------------------
# Bench runs
# ---------------------------------------------------------------------------------------------


def measure(quick, runs_override):
    fp_before = source_fingerprint(MEASURED_PATHS)
    zlib = build(None, [b for b, _, _ in BENCHES])
    miniz = build("miniz", sorted(MINIZ_BENCHES))
    fp_built = source_fingerprint(MEASURED_PATHS)

    plan = []
    for bench, full_runs, quick_runs in BENCHES:
        runs = runs_override or (quick_runs if quick else full_runs)
        plan.append((bench, runs))
    values = {}
    meta = {}
    timings = {}
    max_runs = max(r for _, r in plan)
    for run in range(max_runs):
        for bench, runs in plan:
            if run >= runs:
                continue
            log(f"run {run + 1}/{runs}: {bench}")
            figs, m, secs = run_bench(zlib[bench], quick)
            timings.setdefault(bench, []).append(secs)
            meta.update(m)
            for key, v in figs.items():
                values.setdefault(key, []).append(v)
            if bench in MINIZ_BENCHES:
                log(f"run {run + 1}/{runs}: {bench} (miniz_oxide build)")
                mfigs, _, msecs = run_bench(miniz[bench], quick)
                timings.setdefault(bench + " (miniz)", []).append(msecs)
                for key, v in mfigs.items():
                    values.setdefault("miniz." + key, []).append(v)
                if bench == "compression":
                    # Two processes run one after the other: compare on-CPU time per body, which
                    # does not depend on what else the machine ran at either moment.
                    for chunk, _ in CHUNKS:
                        ours = figs[f"bulk.{chunk}.ours_cpu_ms"]
                        theirs = mfigs[f"bulk.{chunk}.tower_http_cpu_ms"]
                        key = f"derived.bulk.{chunk}.ours_over_tower_http_miniz"
                        values.setdefault(key, []).append(theirs / ours)
    return values, meta, timings, (fp_before, fp_built)


# ---------------------------------------------------------------------------------------------
# Load tests (--load)
# ---------------------------------------------------------------------------------------------

NUM = r"([0-9][0-9,]*\.?[0-9]*)"


def parse_num(text):
    return float(text.replace(",", ""))


def load_patterns():
    """(key, section header, regex with one group, scale) for every load figure."""
    return [
        ("load.sse.events_delivered", "SSE load", r"events delivered intact and decoded: " + NUM, 1),
        ("load.sse.events_total", "SSE load", r"events delivered intact and decoded: [0-9,]+ of " + NUM, 1),
        ("load.sse.failures", "SSE load", r"events delivered intact and decoded: [0-9,]+ of [0-9,]+ \(" + NUM + " failures", 1),
        ("load.sse.latency_p50_ms", "SSE load", r"p50 " + NUM + " ms", 1),
        ("load.sse.latency_p99_ms", "SSE load", r"p99 " + NUM + " ms", 1),
        ("load.sse.latency_max_ms", "SSE load", r"max " + NUM + " ms", 1),
        ("load.sse.heap_kib_per_stream", "SSE load", r"server live heap: baseline [^(]*\(" + NUM + " KiB/stream", 1),
        ("load.sse.heap_kib_compressor", "SSE load", r"KiB connection \+ handler \+ slot, " + NUM + " KiB compressor", 1),
        ("load.sse.rss_kib_per_stream", "SSE load", r"all streams open and compressing \(" + NUM + " KiB/stream", 1),
        ("load.sse.heap_after_mib", "SSE load", r"KiB compressor\), " + NUM + " MiB after", 1),
        ("load.sse.rss_trimmed_mib", "SSE load", r"MiB after they ended, " + NUM + " MiB after malloc_trim", 1),
        ("load.sse.mid_heap_kib", "SSE load", r"mid-stream \(events flowing\): [0-9,]+ live compressors, heap " + NUM + " KiB/stream", 1),
        ("load.sse.task_panics", "SSE load", r"task panics " + NUM, 1),
        ("load.disc.release_ms", "Disconnects", r"within ([0-9.]+(?:ns|µs|ms|s)) of the last", 1),
        ("load.disc.heap_left_kib", "Disconnects", r"after \(([-+][0-9.]+) KiB vs baseline", 1),
        ("load.disc.rss_trimmed_mib", "Disconnects", r"\(" + NUM + " MiB after malloc_trim", 1),
        ("load.disc.task_panics", "Disconnects", r"task panics " + NUM, 1),
        ("load.slow.produced_mid_mib", "Slow readers", r"produced per slow stream: " + NUM + " MiB", 1),
        ("load.slow.produced_end_mib", "Slow readers", r"checked from [^)]*\), " + NUM + " MiB", 1),
        ("load.slow.heap_kib_per_stream", "Slow readers", r"server live heap per stream while stalled: " + NUM + " KiB", 1),
        ("load.burst.hibernated", "Burst then silence", r"\(hibernate_after 1 s\): " + NUM, 1),
        ("load.burst.clients", "Burst then silence", r"\(hibernate_after 1 s\): [0-9,]+ of " + NUM, 1),
        ("load.burst.slept_after_ms", "Burst then silence", r"all hibernated ([0-9.]+(?:ns|µs|ms|s)) into the silence", 1),
        ("load.burst.heap_busy_kib", "Burst then silence", r"server live heap per stream: " + NUM + " KiB after the burst", 1),
        ("load.burst.heap_silent_kib", "Burst then silence", r"server live heap per stream: [-0-9.]+ KiB after the burst -> " + NUM + " KiB", 1),
        ("load.burst.rss_busy_kib", "Burst then silence", r"server RSS per stream: " + NUM + " KiB after the burst", 1),
        ("load.burst.rss_silent_kib", "Burst then silence", r"server RSS per stream: [-0-9.]+ KiB after the burst -> " + NUM + " KiB", 1),
        ("load.h2idle.hibernated", "Idle HTTP/2 streams", r"- hibernated: " + NUM, 1),
        ("load.h2idle.streams", "Idle HTTP/2 streams", r"- hibernated: [0-9,]+ of " + NUM, 1),
        ("load.h2idle.rss_growth_mib", "Idle HTTP/2 streams", r"server RSS growth \(after malloc_trim\(0\)\): " + NUM + " MiB", 1),
        ("load.h2idle.rss_kib_per_stream", "Idle HTTP/2 streams", r"streams \(" + NUM + " KiB/stream\)", 1),
        ("load.h2idle.heap_kib_per_stream", "Idle HTTP/2 streams", r"server live heap per stream: " + NUM + " KiB", 1),
    ]


def parse_duration_ms(text):
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)$", text)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return {"ns": v / 1e6, "µs": v / 1000, "us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def sections_of(output):
    """Splits the load test output into its report blocks, by header (text before '[')."""
    blocks = {}
    current = None
    for line in output.splitlines():
        header = re.match(r"^(SSE load|Disconnects|Slow readers|Burst then silence|Idle HTTP/2 streams|Errors|Budget) \[", line)
        if header:
            current = header.group(1)
            blocks[current] = line + "\n"
        elif current and line.startswith("- "):
            blocks[current] += line + "\n"
        elif current and line.strip() and not line.startswith(" "):
            current = None
    return blocks


def run_load_test(path, env, filters):
    full_env = dict(os.environ)
    full_env.update(env)
    args = [path, "--nocapture", "--test-threads=1"] + filters
    start = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=full_env)
    secs = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-6000:])
        sys.exit(f"load test failed ({proc.returncode}) with {env}")
    return proc.stdout + "\n" + proc.stderr, secs


def measure_load(quick, runs_override):
    log("building tests/load.rs (debug, as `cargo test` builds it)")
    proc = subprocess.run(
        ["cargo", "test", "--no-run", "--test", "load", "--message-format=json"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    if proc.returncode != 0:
        sys.exit("the build of tests/load.rs failed; nothing was measured")
    out = proc.stdout
    exe = None
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "load":
            exe = msg["executable"]
    if not exe:
        sys.exit("no executable for tests/load.rs")
    os.makedirs(BIN_DIR, exist_ok=True)
    path = os.path.join(BIN_DIR, "load-test")
    shutil.copy2(exe, path)

    size = {} if quick else {"TOWER_GZIP_LOAD": "full"}
    runs = runs_override or (1 if quick else LOAD_RUNS)
    values = {}
    timings = {}
    patterns = load_patterns()
    for run in range(runs):
        log(f"load run {run + 1}/{runs}: all load tests")
        text, secs = run_load_test(path, size, [])
        timings.setdefault("all load tests", []).append(secs)
        blocks = sections_of(text)
        for key, header, pattern, scale in patterns:
            block = blocks.get(header, "")
            m = re.search(pattern, block)
            if not m:
                sys.exit(f"load output: {key} not found (pattern {pattern!r}) in:\n{block or text[-3000:]}")
            durations = ("load.disc.release_ms", "load.burst.slept_after_ms")
            v = parse_duration_ms(m.group(1)) if key in durations else parse_num(m.group(1)) * scale
            values.setdefault(key, []).append(v)
        wall = re.search(r"wall time ([0-9.]+(?:ns|µs|ms|s))", blocks.get("SSE load", ""))
        if wall:
            values.setdefault("load.sse.wall_s", []).append(parse_duration_ms(wall.group(1)) / 1000)
        for mode, extra in [("hib", {}), ("never", {"TOWER_GZIP_LOAD_NEVER_HIBERNATE": "1"})]:
            log(f"load run {run + 1}/{runs}: SSE streams with 2 s gaps ({mode})")
            env = dict(size, TOWER_GZIP_LOAD_INTERVAL_MS="2000", **extra)
            text, secs = run_load_test(path, env, ["sse_streams_all_events_arrive_intact"])
            timings.setdefault(f"SSE with 2 s gaps ({mode})", []).append(secs)
            block = sections_of(text).get("SSE load", "")
            m = re.search(r"server RSS: baseline " + NUM + " MiB -> " + NUM + " MiB", block)
            peak = re.search(r"peak \(VmHWM\) " + NUM + " MiB", block)
            heap = re.search(r"mid-stream \(events flowing\): [0-9,]+ live compressors, heap " + NUM + " KiB/stream", block)
            delivered = re.search(r"events delivered intact and decoded: " + NUM + " of " + NUM, block)
            lat = re.search(r"p50 " + NUM + " ms, p99 " + NUM + " ms", block)
            if not (m and peak and heap and delivered and lat):
                sys.exit(f"load output (2 s gaps, {mode}) not understood:\n{block or text[-3000:]}")
            base, held = parse_num(m.group(1)), parse_num(m.group(2))
            values.setdefault(f"load.gap.{mode}.growth_mib", []).append(held - base)
            values.setdefault(f"load.gap.{mode}.peak_growth_mib", []).append(parse_num(peak.group(1)) - base)
            values.setdefault(f"load.gap.{mode}.mid_heap_kib", []).append(parse_num(heap.group(1)))
            values.setdefault(f"load.gap.{mode}.delivered", []).append(parse_num(delivered.group(1)))
            values.setdefault(f"load.gap.{mode}.total", []).append(parse_num(delivered.group(2)))
            values.setdefault(f"load.gap.{mode}.p99_ms", []).append(parse_num(lat.group(2)))
    g_h, g_n = values.get("load.gap.hib.growth_mib", []), values.get("load.gap.never.growth_mib", [])
    values["derived.load.gap.never_over_hib"] = [n / h for n, h in zip(g_n, g_h) if h > 0]
    return values, timings


LOAD_SECTION = {
    "id": "load",
    "title": "Under load (`tests/load.rs`)",
    "source": "tests/load.rs",
    "rows": [
        ("SSE: events delivered intact and decoded", "load.sse.events_delivered", "count"),
        ("SSE: events sent", "load.sse.events_total", "count"),
        ("SSE: event latency, production to decoding, p50", "load.sse.latency_p50_ms", "ms1"),
        ("SSE: event latency, p99", "load.sse.latency_p99_ms", "ms1"),
        ("SSE: event latency, max", "load.sse.latency_max_ms", "ms1"),
        ("SSE: server live heap per stream, all streams open, after their first event", "load.sse.heap_kib_per_stream", "kib"),
        ("SSE: of which came with the first event (the compressor, less any state dropped by then)", "load.sse.heap_kib_compressor", "kib"),
        ("SSE: server RSS per stream, all streams open, after their first event", "load.sse.rss_kib_per_stream", "kib"),
        ("SSE: server live heap per stream mid-stream (events flowing)", "load.sse.mid_heap_kib", "kib"),
        ("SSE: server live heap after all streams ended", "load.sse.heap_after_mib", "mib1"),
        ("SSE: server RSS after the end and `malloc_trim(0)`", "load.sse.rss_trimmed_mib", "mib1"),
        ("SSE: connection task panics", "load.sse.task_panics", "count"),
        ("SSE: wall time of the test", "load.sse.wall_s", "s1"),
        ("disconnects: `live_streams()` back to 0 after the last client left, within", "load.disc.release_ms", "ms1"),
        ("disconnects: server live heap after, vs baseline", "load.disc.heap_left_kib", "kib"),
        ("disconnects: server RSS after `malloc_trim(0)`", "load.disc.rss_trimmed_mib", "mib1"),
        ("disconnects: connection task panics", "load.disc.task_panics", "count"),
        ("slow readers: produced per stalled stream, half-way through the stall", "load.slow.produced_mid_mib", "mib1"),
        ("slow readers: produced per stalled stream, at the end of the stall", "load.slow.produced_end_mib", "mib1"),
        ("slow readers: server live heap per stalled stream", "load.slow.heap_kib_per_stream", "kib"),
        ("burst then silence: streams hibernated with no further event", "load.burst.hibernated", "count"),
        ("burst then silence: of streams", "load.burst.clients", "count"),
        ("burst then silence: all hibernated this long into the silence (`hibernate_after` 1 s)", "load.burst.slept_after_ms", "ms1"),
        ("burst then silence: server live heap per stream, right after the burst (10,000 streams crowd the layer, so each sleeps at its first stall, here the end of its burst; `benches/traffic_shapes.rs` stalls after the first event and shows the timer path)", "load.burst.heap_busy_kib", "kib"),
        ("burst then silence: server live heap per stream, silent", "load.burst.heap_silent_kib", "kib"),
        ("burst then silence: server RSS per stream, right after the burst", "load.burst.rss_busy_kib", "kib"),
        ("burst then silence: server RSS per stream, silent (after `malloc_trim(0)`)", "load.burst.rss_silent_kib", "kib"),
        ("idle HTTP/2 streams: hibernated", "load.h2idle.hibernated", "count"),
        ("idle HTTP/2 streams: of streams (1,000 per connection, 5 events each, then silence, held open)", "load.h2idle.streams", "count"),
        ("idle HTTP/2 streams: server RSS growth, all hibernated (after `malloc_trim(0)`)", "load.h2idle.rss_growth_mib", "mib1"),
        ("idle HTTP/2 streams: server RSS per stream", "load.h2idle.rss_kib_per_stream", "kib"),
        ("idle HTTP/2 streams: server live heap per stream", "load.h2idle.heap_kib_per_stream", "kib"),
        ("2 s gaps, hibernating (default): server RSS growth, all streams open", "load.gap.hib.growth_mib", "mib1"),
        ("2 s gaps, hibernating: server RSS peak growth (VmHWM)", "load.gap.hib.peak_growth_mib", "mib1"),
        ("2 s gaps, hibernating: live heap per stream mid-stream", "load.gap.hib.mid_heap_kib", "kib"),
        ("2 s gaps, hibernating: events delivered intact", "load.gap.hib.delivered", "count"),
        ("2 s gaps, hibernating: event latency p99", "load.gap.hib.p99_ms", "ms1"),
        ("2 s gaps, `never_hibernate()`: server RSS growth, all streams open", "load.gap.never.growth_mib", "mib1"),
        ("2 s gaps, `never_hibernate()`: live heap per stream mid-stream", "load.gap.never.mid_heap_kib", "kib"),
        ("2 s gaps, `never_hibernate()`: events delivered intact", "load.gap.never.delivered", "count"),
        ("2 s gaps: RSS growth, `never_hibernate()` / hibernating", "derived.load.gap.never_over_hib", "ratio1"),
    ],
}


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def stamp_table(command, commit, dirty, others, date, mach, duration, load_start, load_end, fps, extra=()):
    changes = []
    if dirty:
        changes.append("uncommitted changes in the measured code: " + ", ".join(f"`{d}`" for d in dirty))
    if others:
        changes.append(f"{others} other changed files (docs, tests, CI)")
    lines = [
        "| | |",
        "|---|---|",
        f"| command | `{command}` |",
        f"| commit | `{commit}`" + (f" ({'; '.join(changes)})" if changes else "") + " |",
        f"| date (UTC) | {date} |",
        f"| machine | {mach['nproc']} CPUs (`nproc`), {mach['cpu']}, {mach['mem']}, {mach['kernel']}; shared with other jobs |",
        f"| toolchain | {mach['rustc']} |",
        f"| duration | {duration} |",
        f"| load average (1 min) | {load_start:.2f} at the start, {load_end:.2f} at the end |",
    ]
    if fps[0] != fps[1]:
        lines.append("| note | the source changed while the binaries were being built: they may mix two states of the tree |")
    lines += list(extra)
    return "\n".join(lines)


def render_section(section, values):
    out = [f"## <a id=\"{section['id']}\"></a>{section['title']}", ""]
    if section.get("about"):
        out += [section["about"] + f" Source: [`{section['source']}`]({section['source']}).", ""]
    out += ["| figure | median | range over runs (min – max) | runs |", "|---|---|---|---|"]
    for label, key, kind in section["rows"]:
        med, rng, n = summary(values.get(key, []), kind)
        out.append(f"| {label} | **{med}** | {rng} | {n} |")
    out.append("")
    return "\n".join(out)


def render_targets(values):
    out = [
        "## <a id=\"targets\"></a>Performance targets",
        "",
        "The project's targets, judged on the median; \"borderline\" when the range over runs "
        "crosses the target. The rows link to the sections with the method.",
        "",
        "| target | median | range over runs | status |",
        "|---|---|---|---|",
    ]
    for label, key, kind, ok in TARGETS:
        vs = values.get(key, [])
        med, rng, _ = summary(vs, kind)
        if not vs:
            status = "not measured"
        else:
            m = ok(statistics.median(vs))
            mixed = ok(min(vs)) != ok(max(vs))
            status = ("met" if m else "**missed**") + (" (borderline)" if mixed else "")
        section = next((s["id"] for s in SECTIONS if any(r[1] == key for r in s["rows"])), "")
        out.append(f"| [{label}](#{section}) | {med} | {rng} | {status} |")
    out.append("")
    return "\n".join(out)


def render_timings(timings):
    parts = []
    for name, secs in timings.items():
        parts.append(f"{name} {statistics.median(secs):.0f} s × {len(secs)}")
    return "; ".join(parts)


HEADER = """# Figures

<!-- Generated by scripts/figures.sh from the measurements it runs. Do not edit by hand: re-run it. -->

Every figure that [README.md](README.md), [BENCHMARKS.md](BENCHMARKS.md),
[RELIABILITY.md](RELIABILITY.md) and the API docs quote lives here, and only here; they link to
the sections below. Each figure is the **median over runs**, with the **range over runs** (the
smallest and the largest run) as its noise, and the number of runs. A run is one process; where a
run repeats a measurement internally (interleaved rounds), the run's figure is its median. All
measurements go through the crate's public API, with the default settings unless a row says
otherwise, in release builds (the load tests: debug builds, as `cargo test` runs them). Speed
figures are ratios against a reference measured in the same run; absolute times are shown only
as context and depend on the machine. Byte counts are deterministic. BENCHMARKS.md explains the
method of each bench and what the figures mean.

Regenerate the bench sections with `scripts/figures.sh`, the load-test section with
`scripts/figures.sh --load` (far longer: the full load tests, three times), or do a smoke run with
`scripts/figures.sh --quick` (writes `target/figures/FIGURES.quick.md`). Each stamp records how
long its run took.
"""


def existing_load_section(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if LOAD_BEGIN in text and LOAD_END in text:
        return text[text.index(LOAD_BEGIN): text.index(LOAD_END) + len(LOAD_END)]
    return None


def existing_main_part(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if LOAD_BEGIN in text:
        return text[: text.index(LOAD_BEGIN)].rstrip() + "\n"
    return None


def placeholder_load_section():
    return "\n".join([
        LOAD_BEGIN,
        "## <a id=\"load\"></a>Under load (`tests/load.rs`)",
        "",
        "Not generated yet: run `scripts/figures.sh --load`.",
        LOAD_END,
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run; writes target/figures/FIGURES.quick.md")
    ap.add_argument("--load", action="store_true", help="regenerate only the load-test section")
    ap.add_argument("--runs", type=int, default=0, help="runs per bench (default: per bench)")
    ap.add_argument("--out", default=None, help="output file")
    args = ap.parse_args()

    out_path = args.out or (os.path.join(FIG_DIR, "FIGURES.quick.md") if args.quick else os.path.join(ROOT, "FIGURES.md"))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    command = "scripts/figures.sh" + "".join(
        f" {a}" for a in sys.argv[1:]
    )
    commit, dirty, others = git_stamp(LOAD_PATHS if args.load else MEASURED_PATHS)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    load_start = loadavg()
    t0 = time.monotonic()

    if args.load:
        fp_before = source_fingerprint(LOAD_PATHS)
        values, timings = measure_load(args.quick, args.runs)
        fps = (fp_before, source_fingerprint(LOAD_PATHS))
        duration = f"{(time.monotonic() - t0) / 60:.1f} min ({render_timings(timings)})"
        section = LOAD_SECTION
        body = [
            LOAD_BEGIN,
            f"## <a id=\"{section['id']}\"></a>{section['title']}",
            "",
            "Generated by its own command (it takes far longer than the benches); its stamp:",
            "",
            stamp_table(command, commit, dirty, others, date, mach, duration, load_start, loadavg(), fps,
                        ["| build | debug (`cargo test --test load`), default features |",
                         "| sizes | " + ("reduced (CI) sizes" if args.quick else "`TOWER_GZIP_LOAD=full`: 10,000 SSE streams of 20 events (one every 500 ms), 10,000 disconnecting clients, 100 slow readers, 10,000 burst-then-silence streams (50 events, then silence), 100,000 idle streams on 100 HTTP/2 connections (5 events, then silence); then 10,000 streams with an event every 2 s (`TOWER_GZIP_LOAD_INTERVAL_MS=2000`), hibernating and with `TOWER_GZIP_LOAD_NEVER_HIBERNATE=1`") + " |"]),
            "",
            "A real hyper server in a child process; the test process is the client and decodes "
            "with flate2. Live heap = the server's counting allocator; RSS = its `VmRSS`; per "
            "stream = (value with the streams open − baseline) / streams. What each test checks: "
            "[RELIABILITY.md](RELIABILITY.md#load-and-fault-tests-testsloadrs). Source: "
            "[`tests/load.rs`](tests/load.rs).",
            "",
            "| figure | median | range over runs (min – max) | runs |",
            "|---|---|---|---|",
        ]
        for label, key, kind in section["rows"]:
            med, rng, n = summary(values.get(key, []), kind)
            body.append(f"| {label} | **{med}** | {rng} | {n} |")
        body.append(LOAD_END)
        load_text = "\n".join(body)
        main_text = existing_main_part(out_path) or HEADER + "\nThe bench sections are not generated yet: run `scripts/figures.sh`.\n"
        with open(out_path, "w") as f:
            f.write(main_text + "\n" + load_text + "\n")
        log(f"wrote {os.path.relpath(out_path, ROOT)}")
        return

    values, meta, timings, fps = measure(args.quick, args.runs)
    duration = f"{(time.monotonic() - t0) / 60:.1f} min, builds included"
    parts = [
        HEADER,
        ("**Quick (smoke) run: small sizes and few runs; not for publishing.**\n" if args.quick else ""),
        stamp_table(command, commit, dirty, others, date, mach, duration, load_start, loadavg(), fps,
                    [f"| build | release (`bench` profile); zlib-rs (default features) unless a row says miniz_oxide |",
                     f"| loopback load generator | {meta.get('small.loopback.load', 'n/a')} |",
                     f"| time per bench run (median × runs) | {render_timings(timings)} |"]),
        "",
        render_targets(values),
    ]
    for section in SECTIONS:
        parts.append(render_section(section, values))
    load = existing_load_section(out_path) if not args.quick else None
    parts.append(load or placeholder_load_section())
    with open(out_path, "w") as f:
        f.write("\n".join(parts).rstrip() + "\n")
    # The raw values, for anyone who wants to look at every run.
    with open(os.path.join(FIG_DIR, "figures-raw.json" if not args.quick else "figures-raw.quick.json"), "w") as f:
        json.dump({"commit": commit, "date": date, "values": values, "timings": timings}, f, indent=1)
    log(f"wrote {os.path.relpath(out_path, ROOT)} in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
