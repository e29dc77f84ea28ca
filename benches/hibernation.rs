//! Hibernation measurements (issue: idle streams cost almost nothing).
//!
//! `cargo bench --bench hibernation` prints:
//! 1. resident memory per stalled compressed stream, hibernated vs never hibernating;
//! 2. bytes on the wire per OpenAI-style token event when the stream wakes before every event,
//!    vs a stream that never sleeps;
//! 3. CPU per wake (allocate a deflate state and prime it with a 32 KiB dictionary).
//!
//! Streams are driven in-process (no network) through the public service API with a body that
//! yields one event, then `Pending`, like an SSE handler waiting for its next event.
//!
//! `--figures` (used by `scripts/figures.sh`) measures idle streams as a server holds them, under
//! the default settings: every response body is driven by its own tokio task (as hyper drives
//! each connection), the handler's body is fed by a channel, and each stream sends a 150-event
//! answer and then goes silent. Nothing polls a silent stream but its own task, woken by the
//! layer's idle timer at the `hibernate_after` deadline; the harness measures once every stream has
//! been silent for longer than that (and waits for the streams to report that they let go of their
//! deflate state). Live heap (a counting allocator, exact) and RSS per stream are taken net of the
//! harness's own cost: the same streams sent to a client without gzip. Each configuration runs in
//! its own process.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::{GzipBody, GzipLayer};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// A body that yields its queued events only as the bench releases them, like an SSE handler
/// waiting for its next event; it stays open (pending) once the queue is empty.
struct Events {
    /// Index of the next event, and how many events the body has.
    next: usize,
    total: usize,
    released: usize,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.released == 0 {
            return Poll::Pending;
        }
        self.released -= 1;
        if self.next == self.total {
            return Poll::Pending;
        }
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(event(self.next - 1)))))
    }
}

fn event(i: usize) -> Bytes {
    const WORDS: &[&str] = &[
        " the", " model", " streams", " tokens", ",", " one", " at", " a", " time", ".",
    ];
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-AbC123xyz\",\"object\":\"chat.completion.chunk\",\"created\":1732400000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        WORDS[i % WORDS.len()]
    ))
}

fn open_stream(layer: &GzipLayer, events: usize) -> GzipBody<Events> {
    let body = Events {
        next: 0,
        total: events,
        released: 0,
    };
    let mut body = Some(body);
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(body.take().expect("called once"))
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    }));
    let request = Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let response = futures_util::FutureExt::now_or_never(svc.oneshot(request))
        .unwrap()
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    response.into_body()
}

/// Releases the next event and polls until the body stalls; returns the bytes it yielded.
fn drain_until_stall(body: &mut GzipBody<Events>) -> usize {
    body.get_mut().released += 1;
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut bytes = 0;
    loop {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => bytes += frame.into_data().map_or(0, |d| d.len()),
            Poll::Ready(Some(Err(e))) => panic!("{e}"),
            Poll::Ready(None) | Poll::Pending => return bytes,
        }
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Resident bytes per stream for `n` streams that each sent `events` events and then stalled.
/// With 150 events of about 250 B, each stream has sent more than a 32 KiB window of input.
fn memory_per_stream(layer: &GzipLayer, n: usize, events: usize) -> (f64, usize) {
    let before = rss_bytes();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut body = open_stream(layer, events);
        for _ in 0..events {
            drain_until_stall(&mut body);
        }
        streams.push(body);
    }
    let holding = streams.iter().filter(|b| b.holds_compressor()).count();
    let per_stream = (rss_bytes().saturating_sub(before)) as f64 / n as f64;
    drop(streams);
    (per_stream, holding)
}

/// Bytes per event on the wire for events 10.. of a 500-event stream.
fn bytes_per_event(layer: &GzipLayer) -> f64 {
    let total_events = 500;
    let mut body = open_stream(layer, total_events);
    let mut bytes = 0;
    for i in 0..total_events {
        let n = drain_until_stall(&mut body);
        if i >= 10 {
            bytes += n;
        }
    }
    bytes as f64 / (total_events - 10) as f64
}

/// Time per event for a 2,000-event stream.
fn time_per_event(layer: &GzipLayer) -> Duration {
    let total_events = 2000;
    let mut body = open_stream(layer, total_events);
    let start = Instant::now();
    for _ in 0..total_events {
        drain_until_stall(&mut body);
    }
    start.elapsed() / total_events as u32
}

/// The layers compared, by name.
fn layer(name: &str) -> GzipLayer {
    let sse = GzipLayer::new().compress_sse(true);
    match name {
        "never_hibernate()" => sse.never_hibernate(),
        "hibernated (32 KiB window)" => sse.hibernate_after(Duration::ZERO),
        "hibernated, window_bits(12)" => sse.hibernate_after(Duration::ZERO).window_bits(12),
        other => panic!("unknown layer {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Figures mode: idle streams, each driven by its own task
// ---------------------------------------------------------------------------------------------

/// Per-stream counters shared by the handler's body, the task driving the response body, and the
/// harness.
struct Probe {
    /// Events the handler's body has handed to the layer.
    consumed: AtomicUsize,
    /// `consumed` as of the response body's last `Pending`.
    stalled_at: AtomicUsize,
    /// Whether the response body held a deflate state at that `Pending`.
    holding: AtomicBool,
}

/// The handler's body: events from a channel, as an SSE handler fed by other tasks.
struct ChannelBody {
    rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    probe: Arc<Probe>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.probe.consumed.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a server's connection task does with a response body: poll it until it ends, sending
/// each frame on (here: dropping it), and sleep whenever it is `Pending`.
async fn drive<B>(body: B, probe: Arc<Probe>)
where
    B: Body<Data = Bytes>,
    B: HoldsCompressor,
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| {
            let poll = body.as_mut().poll_frame(cx);
            if poll.is_pending() {
                let holding = body.as_ref().get_ref().holds();
                probe.holding.store(holding, Ordering::SeqCst);
                let consumed = probe.consumed.load(Ordering::SeqCst);
                probe.stalled_at.store(consumed, Ordering::SeqCst);
            }
            poll
        })
        .await;
        match frame {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("body error: {e:?}"),
            None => return,
        }
    }
}

/// Whether a response body holds a deflate state (the harness reads it at every stall).
trait HoldsCompressor {
    fn holds(&self) -> bool;
}

impl<B> HoldsCompressor for GzipBody<B> {
    fn holds(&self) -> bool {
        self.holds_compressor()
    }
}

/// One open stream: the handler's sender, its probe, the task driving the response body.
type OpenStream = (
    tokio::sync::mpsc::UnboundedSender<Bytes>,
    Arc<Probe>,
    tokio::task::JoinHandle<()>,
);

/// Waits until every stream has stalled after handing `target` events to the layer.
async fn wait_stalled(streams: &[OpenStream], target: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !streams
        .iter()
        .all(|(_, probe, _)| probe.stalled_at.load(Ordering::SeqCst) == target)
    {
        assert!(
            Instant::now() < deadline,
            "streams did not stall after event {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many streams held a deflate state at their last stall.
fn holding(streams: &[OpenStream]) -> usize {
    streams
        .iter()
        .filter(|(_, probe, _)| probe.holding.load(Ordering::SeqCst))
        .count()
}

/// Per-stream figures of one configuration (bytes; raw, not net of the harness).
#[derive(Debug, Default)]
struct IdleRow {
    busy_heap: f64,
    busy_rss: f64,
    busy_holding: usize,
    idle_heap: f64,
    idle_rss: f64,
    idle_holding: usize,
    end_heap: f64,
}

/// Opens `n` streams through `layer`, each driven by its own task; sends each an `answer`-event
/// answer; measures; lets them be silent for `gap` (and, if `hibernates`, until none holds a
/// deflate state any more); measures again.
async fn idle_streams(
    layer: &GzipLayer,
    gzip: bool,
    n: usize,
    answer: usize,
    gap: Duration,
    hibernates: bool,
) -> IdleRow {
    let events: Vec<Bytes> = (0..answer).map(event).collect();
    let heap0 = common::live_heap() as f64;
    let rss0 = common::rss_bytes() as f64;
    let mut streams: Vec<OpenStream> = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let probe = Arc::new(Probe {
            consumed: AtomicUsize::new(0),
            stalled_at: AtomicUsize::new(usize::MAX),
            holding: AtomicBool::new(false),
        });
        let mut body = Some(ChannelBody {
            rx,
            probe: probe.clone(),
        });
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            let response = Response::builder()
                .header("content-type", "text/event-stream")
                .body(body.take().expect("called once"))
                .unwrap();
            std::future::ready(Ok::<_, Infallible>(response))
        }));
        let mut request = Request::builder();
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let response = svc.oneshot(request.body(()).unwrap()).await.unwrap();
        assert_eq!(response.headers().contains_key("content-encoding"), gzip);
        let task = tokio::spawn(drive(response.into_body(), probe.clone()));
        streams.push((tx, probe, task));
    }
    // The answer, event by event, to every stream.
    for event in &events[..answer] {
        for (tx, _, _) in &streams {
            tx.send(event.clone()).unwrap();
        }
    }
    wait_stalled(&streams, answer).await;
    let busy = (
        common::live_heap() as f64,
        common::rss_bytes() as f64,
        holding(&streams),
    );

    // Silence longer than `hibernate_after`: each stream's task is woken by the layer's idle
    // timer, polls its body once more, and the body lets go of its deflate state.
    tokio::time::sleep(gap).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hibernates && holding(&streams) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = (
        common::live_heap() as f64,
        common::rss_bytes() as f64,
        holding(&streams),
    );

    for (tx, _, task) in streams {
        drop(tx);
        task.await.unwrap();
    }
    let n = n as f64;
    IdleRow {
        busy_heap: (busy.0 - heap0) / n,
        busy_rss: (busy.1 - rss0) / n,
        busy_holding: busy.2,
        idle_heap: (idle.0 - heap0) / n,
        idle_rss: (idle.1 - rss0) / n,
        idle_holding: idle.2,
        end_heap: common::live_heap() as f64 - heap0,
    }
}

/// The configurations measured for `FIGURES.md`: (name, layer, client accepts gzip, whether the
/// streams are expected to hibernate).
fn idle_config(name: &str) -> (GzipLayer, bool, bool) {
    let sse = GzipLayer::new().compress_sse(true);
    match name {
        "identity" => (sse, false, false),
        "default" => (sse, true, true),
        "never" => (sse.never_hibernate(), true, false),
        "wb12" => (sse.window_bits(12), true, true),
        other => panic!("unknown configuration {other}"),
    }
}

const ANSWER_EVENTS: usize = 150;

/// Child process: one configuration, printed as a `ROW` line.
fn idle_child(name: &str, n: usize) {
    let (layer, gzip, hibernates) = idle_config(name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Larger than the default `hibernate_after` (1 s), which every configuration keeps.
    let gap = Duration::from_millis(1200);
    let row = runtime.block_on(async {
        // Warm-up: the runtime, the allocator and the code paths, before the baseline.
        idle_streams(&layer, gzip, 16, ANSWER_EVENTS, Duration::ZERO, false).await;
        idle_streams(&layer, gzip, n, ANSWER_EVENTS, gap, hibernates).await
    });
    println!(
        "ROW {} {} {} {} {} {} {}",
        row.busy_heap,
        row.busy_rss,
        row.busy_holding,
        row.idle_heap,
        row.idle_rss,
        row.idle_holding,
        row.end_heap
    );
}

fn run_idle_child(name: &str, n: usize, mmap_threshold: bool) -> IdleRow {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--bench", "--figures"])
        .env("HIBERNATION_IDLE_CHILD", name)
        .env("HIBERNATION_IDLE_STREAMS", n.to_string());
    if mmap_threshold {
        cmd.env("MALLOC_MMAP_THRESHOLD_", "131072");
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "idle child {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ROW "))
        .expect("a ROW line");
    let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    IdleRow {
        busy_heap: v[0],
        busy_rss: v[1],
        busy_holding: v[2] as usize,
        idle_heap: v[3],
        idle_rss: v[4],
        idle_holding: v[5] as usize,
        end_heap: v[6],
    }
}

/// On-CPU µs per event of a 2,000-event stream (as [`time_per_event`], in thread CPU time).
fn cpu_us_per_event(layer: &GzipLayer) -> f64 {
    let total_events = 2000;
    let mut body = open_stream(layer, total_events);
    let cpu = common::thread_cpu_time_ns();
    for _ in 0..total_events {
        drain_until_stall(&mut body);
    }
    (common::thread_cpu_time_ns() - cpu) as f64 / 1e3 / total_events as f64
}

/// On-CPU µs of the second event of each of `n` new streams, its first event sent and stalled on
/// first. Under `hibernate_after(Duration::ZERO)` the stream slept at that stall, as a token stream
/// in a crowded layer does: the second event pays the wake of a young stream (a state from the
/// layer's pool, primed with one event).
fn second_event_cpu_us(layer: &GzipLayer, n: usize) -> f64 {
    let mut total_ns = 0;
    for _ in 0..n {
        let mut body = open_stream(layer, 2);
        drain_until_stall(&mut body);
        let cpu = common::thread_cpu_time_ns();
        drain_until_stall(&mut body);
        total_ns += common::thread_cpu_time_ns() - cpu;
    }
    total_ns as f64 / 1e3 / n as f64
}

/// Figures mode (see the module docs).
fn figures() {
    let quick = common::quick_mode();
    let n = if quick { 100 } else { 2000 };
    if let Ok(name) = std::env::var("HIBERNATION_IDLE_CHILD") {
        let n = std::env::var("HIBERNATION_IDLE_STREAMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n);
        idle_child(&name, n);
        return;
    }
    let kib = |bytes: f64| bytes / 1024.0;
    let harness = run_idle_child("identity", n, false);
    common::figure("idle.harness.heap_kib", kib(harness.idle_heap));
    for (name, mmap) in [
        ("default", false),
        ("default", true),
        ("never", false),
        ("wb12", false),
    ] {
        let row = run_idle_child(name, n, mmap);
        let key = if mmap {
            format!("idle.{name}_mmap128k")
        } else {
            format!("idle.{name}")
        };
        // On a loaded machine the first streams can finish their answer, and hibernate, before
        // the last ones have theirs; the busy figures are then a mix, so only `never` asserts.
        if name == "never" {
            assert_eq!(row.busy_holding, n, "{key}: every stream busy");
        }
        common::figure(&format!("{key}.busy_holding"), row.busy_holding as f64);
        common::figure(
            &format!("{key}.busy_heap_kib"),
            kib(row.busy_heap - harness.busy_heap),
        );
        common::figure(
            &format!("{key}.busy_rss_kib"),
            kib(row.busy_rss - harness.busy_rss),
        );
        common::figure(
            &format!("{key}.idle_heap_kib"),
            kib(row.idle_heap - harness.idle_heap),
        );
        common::figure(
            &format!("{key}.idle_rss_kib"),
            kib(row.idle_rss - harness.idle_rss),
        );
        common::figure(&format!("{key}.idle_holding"), row.idle_holding as f64);
        common::figure(
            &format!("{key}.end_heap_bytes"),
            row.end_heap - harness.end_heap,
        );
    }

    // A wake: what a stream pays for the first event after hibernating. Interleaved rounds of a
    // stream that wakes before every event and one that never sleeps.
    let rounds = if quick { 1 } else { 7 };
    let awake = layer("never_hibernate()");
    let asleep = layer("hibernated (32 KiB window)");
    let mut extra_us = Vec::new();
    let mut ratio = Vec::new();
    let mut plain_us = Vec::new();
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = cpu_us_per_event(&awake);
            (a, cpu_us_per_event(&asleep))
        } else {
            let b = cpu_us_per_event(&asleep);
            (cpu_us_per_event(&awake), b)
        };
        extra_us.push(b - a);
        ratio.push(b / a);
        plain_us.push(a);
    }
    common::figure("idle.wake_us", common::median(&mut extra_us));
    common::figure(
        "idle.wake_event_over_plain_event",
        common::median(&mut ratio),
    );
    common::figure("idle.plain_event_us", common::median(&mut plain_us));
    // The wake of a young stream: what a token stream in a crowded layer pays once.
    let streams = if quick { 50 } else { 500 };
    let mut young_extra_us = Vec::new();
    let mut young_ratio = Vec::new();
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = second_event_cpu_us(&awake, streams);
            (a, second_event_cpu_us(&asleep, streams))
        } else {
            let b = second_event_cpu_us(&asleep, streams);
            (second_event_cpu_us(&awake, streams), b)
        };
        young_extra_us.push(b - a);
        young_ratio.push(b / a);
    }
    common::figure("idle.young_wake_us", common::median(&mut young_extra_us));
    common::figure(
        "idle.young_wake_event_over_plain_event",
        common::median(&mut young_ratio),
    );
    common::figure(
        "idle.bytes_after_wake_over_never",
        bytes_per_event(&asleep) / bytes_per_event(&awake),
    );
}

fn main() {
    if common::figures_mode() {
        figures();
        return;
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) do a tiny smoke run.
    let quick =
        !std::env::args().any(|a| a == "--bench") || std::env::var_os("TOWER_GZIP_QUICK").is_some();
    let streams = if quick { 20 } else { 2000 };

    // Each memory figure comes from a fresh process, so memory freed by one configuration (and
    // kept by the allocator) cannot hide the growth of the next.
    if let Some(name) = std::env::var_os("HIBERNATION_MEMORY_CHILD") {
        let (per_stream, holding) = memory_per_stream(&layer(name.to_str().unwrap()), streams, 150);
        println!("{per_stream} {holding}");
        return;
    }

    println!(
        "## Memory per stalled compressed stream ({streams} streams, 150 events each, then idle)"
    );
    println!("| layer | resident per stream | streams holding a deflate state |");
    println!("|---|---|---|");
    for name in [
        "never_hibernate()",
        "hibernated (32 KiB window)",
        "hibernated, window_bits(12)",
    ] {
        if quick {
            // Smoke run: in-process (the figures mean little at this size anyway).
            let (per_stream, holding) = memory_per_stream(&layer(name), streams, 5);
            println!(
                "| {name} | {:.1} KiB | {holding} of {streams} |",
                per_stream / 1024.0
            );
            continue;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("HIBERNATION_MEMORY_CHILD", name)
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let mut fields = text.split_whitespace();
        let per_stream: f64 = fields.next().unwrap().parse().unwrap();
        let holding = fields.next().unwrap();
        println!(
            "| {name} | {:.1} KiB | {holding} of {streams} |",
            per_stream / 1024.0
        );
    }
    let awake = layer("never_hibernate()");
    let asleep = layer("hibernated (32 KiB window)");

    println!();
    println!(
        "## Bytes on the wire per token event (events 10..500, OpenAI-style, {} B each)",
        event(0).len()
    );
    println!("| layer | bytes per event | vs never hibernating |");
    println!("|---|---|---|");
    let reference = bytes_per_event(&awake);
    for (name, layer) in [
        ("never_hibernate()", &awake),
        ("wakes before every event", &asleep),
    ] {
        let b = bytes_per_event(layer);
        println!("| {name} | {b:.2} B | {:.3}x |", b / reference);
    }

    println!();
    println!("## CPU per event (2,000 events, median of 5 runs)");
    println!("| layer | time per event |");
    println!("|---|---|");
    let mut medians = Vec::new();
    for (name, layer) in [
        ("never_hibernate()", &awake),
        ("wakes before every event", &asleep),
    ] {
        let mut runs: Vec<Duration> = (0..5).map(|_| time_per_event(layer)).collect();
        runs.sort();
        println!("| {name} | {:.1} µs |", runs[2].as_secs_f64() * 1e6);
        medians.push(runs[2]);
    }
    println!();
    println!(
        "CPU per wake (allocate + prime a 32 KiB dictionary, plus dropping the state again): {:.1} µs",
        (medians[1].as_secs_f64() - medians[0].as_secs_f64()) * 1e6
    );
}
