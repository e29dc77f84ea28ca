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

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::{GzipBody, GzipLayer};

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

fn main() {
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
