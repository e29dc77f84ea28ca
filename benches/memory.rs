//! Issue 4, benchmark 4 (memory): resident bytes per live compressed stream, per skipped or
//! identity response, and after all bodies end; and what smaller windows cost in ratio.
//!
//! [`measure`] takes a `GzipLayer` and a [`Schedule`] and does, with `STREAMS` (10,000) bodies:
//! 1. baseline: `VmRSS` of /proc/self/status and live heap bytes (a counting global allocator);
//! 2. creates every response through the service and polls each body until it returns `Pending`
//!    (the handler yields the schedule's frames, then stalls): every stream is paused mid-body;
//! 3. optionally waits `idle` and polls every body once more (the handler still stalled), which
//!    is when `hibernate_after` lets a stream drop its deflate state;
//! 4. ends every body (the handler returns `None`; the gzip trailer is polled out) or drops them
//!    mid-body (a client that went away), and measures again.
//!
//! A new memory knob is measured by adding one `Case` (a layer and a schedule) to `cases()`.
//! Results: printed, and written to `target/bench-results/memory_<backend>.csv` and
//! `memory_window_cost_<backend>.csv`.
//!
//! `--figures` (used by `scripts/figures.sh`): the cases `FIGURES.md` quotes, 2,000 streams each,
//! as `FIGURE` lines. Idle (hibernated) streams are measured by `benches/hibernation.rs`, with
//! each body driven by its own task as a server would.
//!
//! Run: `cargo bench --bench memory` (about a minute; peaks near 3.5 GiB resident).
//! `MEMORY_STREAMS` overrides the number of streams. Without `--bench` on the command line
//! (`cargo test --benches`) it runs with 200 streams.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    call, drain, gunzip, handler, json_document, live_heap, noop_waker, openai_sse_events, request,
    rss_bytes, write_csv, Chunked, Stalling, BACKEND,
};
use http_body::{Body, Frame, SizeHint};
use tower::Layer;
use tower_gzip::{GzipBody, GzipLayer};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// A handler body that yields `frames` (`None`: a stall, `Pending` once), then stalls until
/// `finish` is set, then ends.
#[derive(Debug)]
struct Paused {
    frames: Arc<[Option<Bytes>]>,
    next: usize,
    finish: Arc<AtomicBool>,
}

impl Body for Paused {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(step) = self.frames.get(self.next).cloned() {
            self.next += 1;
            return match step {
                Some(frame) => Poll::Ready(Some(Ok(Frame::data(frame)))),
                None => Poll::Pending,
            };
        }
        if self.finish.load(Ordering::Relaxed) {
            Poll::Ready(None)
        } else {
            // A real handler would be woken by its channel; the harness re-polls by itself.
            Poll::Pending
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// How the streams are driven before and while paused.
#[derive(Clone)]
struct Schedule {
    name: &'static str,
    content_type: &'static str,
    /// Frames the handler yields before it pauses, `None` where it stalls in between. A stream
    /// measured as busy has stalled before it pauses, as one mid-answer has: in a layer whose
    /// streams hold many deflate states, a stream sleeps at its first stall (see
    /// `GzipLayer::hibernate_after`), so one paused at its first stall would not hold one.
    frames: Arc<[Option<Bytes>]>,
    /// After pausing, wait this long and poll every body again (`None`: skip the step).
    idle: Option<Duration>,
    /// End the bodies normally (`true`) or drop them mid-body (`false`).
    end: bool,
}

struct Case {
    name: &'static str,
    layer: GzipLayer,
    accept_gzip: bool,
    schedule: Schedule,
}

#[derive(Debug)]
struct Row {
    case: &'static str,
    schedule: &'static str,
    streams: usize,
    live_streams: usize,
    holding: usize,
    /// Bytes on the wire per stream (header, frames, trailer).
    wire_bytes: usize,
    rss_per_stream: f64,
    heap_per_stream: f64,
    /// After the idle step (if any): holding compressors, RSS and heap per stream.
    after_idle: Option<(usize, f64, f64)>,
    /// After all bodies ended or were dropped: RSS and heap above the baseline, in bytes.
    rss_after_end: i64,
    heap_after_end: i64,
    /// Heap above the baseline once the service and the layer are dropped too (what the layer
    /// keeps for reuse is gone then; what is left belongs to the process).
    heap_after_drop: i64,
    /// Time to create and pause all the streams.
    setup_ms: f64,
}

fn poll_once<B>(body: &mut GzipBody<B>, cx: &mut Context<'_>) -> Poll<Option<usize>>
where
    B: Body + Unpin,
    B::Error: Into<tower_gzip::BoxError>,
{
    match Pin::new(body).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(frame.data_ref().map_or(0, Bytes::len))),
        Poll::Ready(Some(Err(e))) => panic!("body error: {e}"),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// Measures `n` streams of `case`. See the module docs for the steps. Takes the case by value so
/// that its layer can be dropped for the last measurement.
fn measure(case: Case, n: usize) -> Row {
    let schedule = &case.schedule;
    let finish = Arc::new(AtomicBool::new(false));
    let (frames, flag) = (schedule.frames.clone(), finish.clone());
    let probe = case.layer.clone();
    let mut svc = case
        .layer
        .layer(handler(schedule.content_type, move || Paused {
            frames: frames.clone(),
            next: 0,
            finish: flag.clone(),
        }));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut bodies = Vec::with_capacity(n);

    // Settle the allocator and the page cache of the code paths once before the baseline.
    for _ in 0..3 {
        let mut body = call(&mut svc, request(case.accept_gzip)).into_body();
        while let Poll::Ready(Some(_)) = poll_once(&mut body, &mut cx) {}
    }
    let rss0 = rss_bytes();
    let heap0 = live_heap();

    let start = Instant::now();
    let mut wire_bytes = 0;
    for _ in 0..n {
        let mut body = call(&mut svc, request(case.accept_gzip)).into_body();
        while let Poll::Ready(Some(len)) = poll_once(&mut body, &mut cx) {
            wire_bytes += len;
        }
        bodies.push(body);
    }
    let setup_ms = start.elapsed().as_secs_f64() * 1e3;
    let rss1 = rss_bytes();
    let heap1 = live_heap();
    let live_streams = probe.live_streams();
    let holding = bodies.iter().filter(|b| b.holds_compressor()).count();

    let after_idle = schedule.idle.map(|idle| {
        std::thread::sleep(idle);
        for body in &mut bodies {
            while let Poll::Ready(Some(len)) = poll_once(body, &mut cx) {
                wire_bytes += len;
            }
        }
        let holding = bodies.iter().filter(|b| b.holds_compressor()).count();
        (
            holding,
            (rss_bytes() as f64 - rss0 as f64) / n as f64,
            (live_heap() as f64 - heap0 as f64) / n as f64,
        )
    });

    if schedule.end {
        finish.store(true, Ordering::Relaxed);
        for body in &mut bodies {
            while let Poll::Ready(Some(len)) = poll_once(body, &mut cx) {
                wire_bytes += len;
            }
        }
    }
    // `clear` drops every body but keeps the vector's allocation, which predates the baseline.
    bodies.clear();
    let rss2 = rss_bytes();
    let heap2 = live_heap();
    assert_eq!(probe.live_streams(), 0, "every permit released");
    let (name, schedule) = (case.name, case.schedule.name);
    drop((svc, probe, case));
    let heap3 = live_heap();

    Row {
        case: name,
        schedule,
        streams: n,
        live_streams,
        holding,
        wire_bytes: wire_bytes / n,
        rss_per_stream: (rss1 as f64 - rss0 as f64) / n as f64,
        heap_per_stream: (heap1 as f64 - heap0 as f64) / n as f64,
        after_idle,
        rss_after_end: rss2 as i64 - rss0 as i64,
        heap_after_end: heap2 as i64 - heap0 as i64,
        heap_after_drop: heap3 as i64 - heap0 as i64,
        setup_ms,
    }
}

fn cases(events: &[Bytes], json_16k: &Bytes) -> Vec<Case> {
    let sse = |idle: Option<Duration>, end: bool| Schedule {
        name: "2 SSE events (about 257 B each), a stall between, paused",
        content_type: "text/event-stream",
        frames: vec![Some(events[4].clone()), None, Some(events[5].clone())].into(),
        idle,
        end,
    };
    let half = json_16k.len() / 2;
    let json = Schedule {
        name: "16 KiB JSON in two halves, a stall between, paused",
        content_type: "application/json",
        frames: vec![
            Some(json_16k.slice(..half)),
            None,
            Some(json_16k.slice(half..)),
        ]
        .into(),
        idle: None,
        end: true,
    };
    let sse_layer = || GzipLayer::new().compress_sse(true);
    let hibernate_idle = Some(Duration::from_millis(1100));
    vec![
        Case {
            name: "default (L6, wb15, hibernate_after 1 s)",
            layer: sse_layer(),
            accept_gzip: true,
            schedule: sse(hibernate_idle, true),
        },
        Case {
            name: "default, dropped mid-body",
            layer: sse_layer(),
            accept_gzip: true,
            schedule: sse(None, false),
        },
        Case {
            name: "never_hibernate (L6, wb15)",
            layer: sse_layer().never_hibernate(),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "hibernate_after(0)",
            layer: sse_layer().hibernate_after(Duration::ZERO),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "level 1, wb15",
            layer: sse_layer().level(1),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "window_bits 12",
            layer: sse_layer().window_bits(12),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "window_bits 10",
            layer: sse_layer().window_bits(10),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "window_bits 9",
            layer: sse_layer().window_bits(9),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "default",
            layer: GzipLayer::new(),
            accept_gzip: true,
            schedule: json.clone(),
        },
        Case {
            name: "never_hibernate",
            layer: GzipLayer::new().never_hibernate(),
            accept_gzip: true,
            schedule: json.clone(),
        },
        Case {
            name: "window_bits 9",
            layer: GzipLayer::new().window_bits(9),
            accept_gzip: true,
            schedule: json.clone(),
        },
        Case {
            name: "identity: client without gzip",
            layer: GzipLayer::new(),
            accept_gzip: false,
            schedule: json,
        },
        Case {
            name: "skipped: SSE not opted in",
            layer: GzipLayer::new(),
            accept_gzip: true,
            schedule: sse(None, true),
        },
        Case {
            name: "default (L6, wb15, hibernate_after 1 s)",
            layer: sse_layer(),
            accept_gzip: true,
            schedule: Schedule {
                name: "150 SSE events back to back (a stall after the first), paused",
                content_type: "text/event-stream",
                frames: std::iter::once(Some(events[1].clone()))
                    .chain([None])
                    .chain(events[2..151].iter().cloned().map(Some))
                    .collect::<Vec<_>>()
                    .into(),
                idle: None,
                end: true,
            },
        },
    ]
}

/// Case indices `FIGURES.md` quotes, with their figure names.
const FIGURE_CASES: [(usize, &str); 5] = [
    (0, "default"),
    (13, "default_150_events"),
    (5, "wb12"),
    (11, "identity"),
    (12, "skipped"),
];

/// Figures mode: every quoted case in its own child process (a fresh heap), as `FIGURE` lines.
/// The heap one deflate state takes: zlib-rs at the memory level this crate uses
/// (`MEMORY_LEVEL` in src/deflate.rs, 7), and flate2's (level 8, what flate2 and so tower-http
/// always create), both raw deflate, level 6, 32 KiB window.
#[cfg(feature = "zlib-rs")]
fn deflate_state_sizes() {
    let before = live_heap();
    let ours = zlib_rs::Deflate::new_with_config(zlib_rs::DeflateConfig {
        level: 6,
        window_bits: -15,
        mem_level: 7,
        ..zlib_rs::DeflateConfig::default()
    });
    let ours_bytes = live_heap() - before;
    let before = live_heap();
    let flate2_state =
        flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, 15);
    let flate2_bytes = live_heap() - before;
    drop((ours, flate2_state));
    common::figure("memory.deflate_state.ours_kib", ours_bytes as f64 / 1024.0);
    common::figure(
        "memory.deflate_state.flate2_kib",
        flate2_bytes as f64 / 1024.0,
    );
}

fn figures() {
    #[cfg(feature = "zlib-rs")]
    deflate_state_sizes();
    let quick = common::quick_mode();
    let n: usize = if quick { 200 } else { 2000 };
    let exe = std::env::current_exe().expect("current exe");
    for (index, name) in FIGURE_CASES {
        // miniz_oxide ignores `window_bits`, and the uncompressed cases do not depend on it.
        if BACKEND == "miniz" && !name.starts_with("default") {
            continue;
        }
        let output = std::process::Command::new(&exe)
            .args(["--bench", "--memory-case", &index.to_string()])
            .env("MEMORY_STREAMS", n.to_string())
            .output()
            .expect("run a memory case");
        assert!(output.status.success(), "memory case {index} failed");
        let text = String::from_utf8_lossy(&output.stdout);
        let csv = text
            .lines()
            .find_map(|l| l.strip_prefix("CSV:"))
            .expect("a CSV line");
        let field = |column: &str| -> f64 {
            let i = CSV_HEADER.iter().position(|c| *c == column).unwrap();
            csv.split(',').nth(i).unwrap().parse().unwrap()
        };
        let key = format!("memory.{name}");
        if name.starts_with("default") || name == "wb12" {
            assert_eq!(field("holding_compressor") as usize, n, "every stream busy");
            common::figure(&format!("{key}.rss_kib"), field("rss_per_stream") / 1024.0);
            common::figure(
                &format!("{key}.heap_kib"),
                field("heap_per_stream") / 1024.0,
            );
            common::figure(
                &format!("{key}.heap_after_end_bytes"),
                field("heap_after_end"),
            );
            common::figure(
                &format!("{key}.heap_after_drop_bytes"),
                field("heap_after_drop"),
            );
            common::figure(
                &format!("{key}.heap_after_drop_bytes_per_stream"),
                field("heap_after_drop") / n as f64,
            );
        } else {
            assert_eq!(field("live_streams"), 0.0, "no compressor");
            common::figure(&format!("{key}.heap_bytes"), field("heap_per_stream"));
            common::figure(&format!("{key}.rss_bytes"), field("rss_per_stream"));
        }
    }
    if BACKEND == "miniz" {
        return;
    }
    // What the smaller window costs in output size (deterministic).
    let json = json_document(1 << 20);
    let events: Arc<[Bytes]> = openai_sse_events(500).into();
    let sizes = |layer: GzipLayer| {
        let data = json.clone();
        let mut json_svc = layer.layer(handler("application/json", move || {
            Chunked::new(data.clone(), usize::MAX)
        }));
        let evs = events.clone();
        let mut sse_svc = layer
            .compress_sse(true)
            .layer(handler("text/event-stream", move || {
                Stalling::new(evs.clone(), 1, true)
            }));
        let json_out = common::collect(call(&mut json_svc, request(true)).into_body());
        let sse_out = common::collect(call(&mut sse_svc, request(true)).into_body());
        assert_eq!(gunzip(&json_out), json[..]);
        (json_out.len() as f64, sse_out.len() as f64)
    };
    let (json15, sse15) = sizes(GzipLayer::new());
    let (json12, sse12) = sizes(GzipLayer::new().window_bits(12));
    common::figure("memory.wb12.json_bytes_over_wb15", json12 / json15);
    common::figure("memory.wb12.sse_bytes_over_wb15", sse12 / sse15);
}

const CSV_HEADER: [&str; 17] = [
    "backend",
    "case",
    "schedule",
    "allocator",
    "streams",
    "live_streams",
    "holding_compressor",
    "rss_per_stream",
    "heap_per_stream",
    "idle_holding",
    "idle_rss_per_stream",
    "idle_heap_per_stream",
    "rss_after_end",
    "heap_after_end",
    "heap_after_drop",
    "wire_bytes_per_stream",
    "setup_ms",
];

/// Runs one case in this (fresh) process and prints its table line and its CSV row.
fn run_case(index: usize, n: usize, allocator: &str) {
    let events = openai_sse_events(500);
    let json_16k = json_document(16 * 1024).slice(..16 * 1024);
    let case = cases(&events, &json_16k).swap_remove(index);
    let row = measure(case, n);
    let kib = |bytes: f64| bytes / 1024.0;
    let idle = row.after_idle.map_or(String::from("-"), |(h, rss, heap)| {
        format!("{h} hold {:.1}/{:.1}", kib(rss), kib(heap))
    });
    println!(
        "{:<40} {:<28} {:<9} {:>6} {:>7} {:>8.1} {:>8.1} {:>26} {:>9.1} {:>9.1}",
        row.case,
        row.schedule,
        allocator,
        row.live_streams,
        row.holding,
        kib(row.rss_per_stream),
        kib(row.heap_per_stream),
        idle,
        kib(kib(row.rss_after_end as f64)),
        kib(kib(row.heap_after_end as f64)),
    );
    let (ih, ir, ihp) = row.after_idle.map_or(
        (String::new(), String::new(), String::new()),
        |(h, r, hp)| (h.to_string(), format!("{r:.0}"), format!("{hp:.0}")),
    );
    let csv = [
        BACKEND.to_string(),
        // CSV fields: no quoting needed once commas are gone.
        row.case.replace(',', ";"),
        row.schedule.replace(',', ";"),
        allocator.to_string(),
        row.streams.to_string(),
        row.live_streams.to_string(),
        row.holding.to_string(),
        format!("{:.0}", row.rss_per_stream),
        format!("{:.0}", row.heap_per_stream),
        ih,
        ir,
        ihp,
        row.rss_after_end.to_string(),
        row.heap_after_end.to_string(),
        row.heap_after_drop.to_string(),
        row.wire_bytes.to_string(),
        format!("{:.0}", row.setup_ms),
    ];
    println!("CSV:{}", csv.join(","));
}

/// Runs every case in its own child process (a fresh heap each: the allocator keeps freed pages
/// for reuse, so cases measured one after another in one process would see each other's pages).
/// The default cases run a second time with glibc's mmap threshold pinned at 128 KiB
/// (`MALLOC_MMAP_THRESHOLD_=131072`), so that each deflate state is its own mapping and freeing
/// it returns its pages to the OS at once.
fn memory_report(n: usize) {
    let exe = std::env::current_exe().expect("current exe");
    let events = openai_sse_events(500);
    let json_16k = json_document(16 * 1024).slice(..16 * 1024);
    let count = cases(&events, &json_16k).len();
    println!(
        "\nmemory per paused stream, {n} streams per case, one process per case, backend {BACKEND}"
    );
    println!("(KiB = 1024 B per stream; RSS from VmRSS, heap from a counting allocator; end = all bodies ended or dropped, MiB above baseline)");
    println!(
        "{:<40} {:<28} {:<9} {:>6} {:>7} {:>8} {:>8} {:>26} {:>9} {:>9}",
        "case",
        "schedule",
        "allocator",
        "live",
        "holding",
        "RSS KiB",
        "heap KiB",
        "after idle: RSS/heap KiB",
        "end RSS",
        "end heap"
    );
    let mut rows = vec![CSV_HEADER.map(String::from).to_vec()];
    let runs = (0..count)
        .map(|i| (i, false))
        .chain([(0, true), (1, true), (2, true)]);
    for (index, pinned) in runs {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--bench", "--memory-case", &index.to_string()])
            .env("MEMORY_STREAMS", n.to_string());
        if pinned {
            cmd.env("MALLOC_MMAP_THRESHOLD_", "131072")
                .env("MEMORY_ALLOCATOR", "mmap128K");
        }
        let output = cmd.output().expect("run a memory case");
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines() {
            match line.strip_prefix("CSV:") {
                Some(csv) => rows.push(csv.split(',').map(String::from).collect()),
                None => println!("{line}"),
            }
        }
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        }
    }
    println!();
    write_csv(&format!("memory_{BACKEND}.csv"), &rows);
}

/// Ratio and CPU cost of each memory setting: 1 MiB JSON in one chunk, and the 500-event SSE
/// stream with a stall after every event.
fn window_cost_report(smoke: bool) {
    let json = json_document(1 << 20);
    let events: Arc<[Bytes]> = openai_sse_events(500).into();
    let reps = if smoke { 1 } else { 21 };
    let mut rows = vec![[
        "backend",
        "setting",
        "json_bytes",
        "json_ratio",
        "json_ms",
        "sse_bytes_per_event",
        "sse_us_per_event",
    ]
    .map(String::from)
    .to_vec()];
    println!("ratio and CPU per memory setting (level 6; times: median of {reps} interleaved rounds), backend {BACKEND}");
    println!(
        "{:<26} {:>10} {:>8} {:>9} {:>10} {:>10}",
        "setting", "1MiB JSON", "ratio", "JSON ms", "SSE B/ev", "SSE us/ev"
    );
    let settings: Vec<(&str, GzipLayer)> = vec![
        ("wb15 (default)", GzipLayer::new()),
        ("wb15 never_hibernate", GzipLayer::new().never_hibernate()),
        ("wb12", GzipLayer::new().window_bits(12)),
        ("wb10", GzipLayer::new().window_bits(10)),
        ("wb9", GzipLayer::new().window_bits(9)),
        (
            "wb15 hibernate_after(0)",
            GzipLayer::new().hibernate_after(Duration::ZERO),
        ),
        (
            "wb12 hibernate_after(0)",
            GzipLayer::new()
                .window_bits(12)
                .hibernate_after(Duration::ZERO),
        ),
    ];
    // Sizes (deterministic), then times in interleaved rounds: every round runs each setting's
    // JSON body and SSE stream once, in rotating order.
    let expected: Vec<u8> = events.iter().flat_map(|e| e.to_vec()).collect();
    let mut json_svcs = Vec::new();
    let mut sse_svcs = Vec::new();
    let mut sizes = Vec::new();
    for (_, layer) in &settings {
        let layer = layer.clone().compress_sse(true);
        let data = json.clone();
        let mut json_svc = layer.layer(handler("application/json", move || {
            Chunked::new(data.clone(), usize::MAX)
        }));
        let evs = events.clone();
        let mut sse_svc = layer.layer(handler("text/event-stream", move || {
            Stalling::new(evs.clone(), 1, true)
        }));
        let json_out = common::collect(call(&mut json_svc, request(true)).into_body());
        assert_eq!(gunzip(&json_out), json[..]);
        let sse_out = common::collect(call(&mut sse_svc, request(true)).into_body());
        assert_eq!(gunzip(&sse_out), expected);
        sizes.push((json_out.len(), sse_out.len()));
        json_svcs.push(json_svc);
        sse_svcs.push(sse_svc);
    }
    let n = settings.len();
    let mut json_ms: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut sse_us: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..reps {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            drain(call(&mut json_svcs[i], request(true)).into_body());
            json_ms[i].push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            drain(call(&mut sse_svcs[i], request(true)).into_body());
            sse_us[i].push(start.elapsed().as_secs_f64() * 1e6 / events.len() as f64);
        }
    }
    for (i, (name, _)) in settings.iter().enumerate() {
        let (json_bytes, sse_bytes) = sizes[i];
        let json_ms = common::median(&mut json_ms[i]);
        let sse_us = common::median(&mut sse_us[i]);
        let per_event = sse_bytes as f64 / events.len() as f64;
        println!(
            "{name:<26} {json_bytes:>10} {:>8.4} {json_ms:>9.2} {per_event:>10.2} {sse_us:>10.2}",
            json_bytes as f64 / json.len() as f64
        );
        rows.push(vec![
            BACKEND.to_string(),
            name.to_string(),
            json_bytes.to_string(),
            format!("{:.4}", json_bytes as f64 / json.len() as f64),
            format!("{json_ms:.2}"),
            format!("{per_event:.2}"),
            format!("{sse_us:.2}"),
        ]);
    }
    println!();
    write_csv(&format!("memory_window_cost_{BACKEND}.csv"), &rows);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let n = std::env::var("MEMORY_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 200 } else { 10_000 });
    if let Some(i) = args.iter().position(|a| a == "--memory-case") {
        let index = args[i + 1].parse().expect("case index");
        let allocator = std::env::var("MEMORY_ALLOCATOR").unwrap_or_else(|_| "glibc".into());
        run_case(index, n, &allocator);
        return;
    }
    if common::figures_mode() {
        figures();
        return;
    }
    memory_report(n);
    window_cost_report(smoke);
}
