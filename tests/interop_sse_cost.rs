//! What compressed SSE costs and saves, measured (run with `-- --nocapture` to see the tables;
//! the figures the docs quote come from `scripts/figures.sh`, see FIGURES.md).
//!
//! - Bytes per event, in lockstep: event `k` is handed to the layer, and the body is read until an
//!   independent decoder (flate2) has all of event `k`; only then is event `k + 1` produced. So
//!   every figure is for an event that was decodable on arrival, i.e. latency unchanged. Measured
//!   for OpenAI-style SSE events (~250 B) and Ollama-style NDJSON lines (~110 B), compressed at
//!   levels 1 and 6, next to the uncompressed size; `h1` adds HTTP/1.1 chunked framing (one chunk
//!   per flush), which applies to both.
//! - Memory per open compressed stream: the process's RSS grows by this much per stream that has
//!   a compressor (N streams held open after their first event, and again after 120 events),
//!   minus the same N streams sent uncompressed.
//!
//! The assertions are loose sanity bounds; the printed figures are the measurement.

mod interop_support;

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use interop_support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_gzip::{BoxError, GzipBody, GzipLayer};

/// RSS measurements must not overlap with the other test of this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type ChannelBody = StreamBody<
    futures_util::stream::Map<ReceiverStream<Bytes>, fn(Bytes) -> Result<Frame<Bytes>, Infallible>>,
>;

fn to_frame(bytes: Bytes) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(bytes))
}

/// A response of `content_type` whose body is fed through the returned sender, passed through
/// `layer` for a client that accepts gzip.
async fn open_stream(
    layer: &GzipLayer,
    content_type: &'static str,
) -> (mpsc::Sender<Bytes>, GzipBody<ChannelBody>) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let body: ChannelBody = StreamBody::new(
        ReceiverStream::new(rx).map(to_frame as fn(Bytes) -> Result<Frame<Bytes>, Infallible>),
    );
    let mut body = Some(body);
    let mut svc = layer.layer(service_fn(move |_request: Request<()>| {
        let body = body.take().expect("one request per stream");
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("content-type", content_type)
                    .body(body)
                    .unwrap(),
            )
        }
    }));
    let request = Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    (tx, response.into_body())
}

/// Per event: bytes of the response body and the number of body frames (flushes) it took.
struct Run {
    payload: Vec<usize>,
    frames: Vec<usize>,
    input: Vec<usize>,
    compressed: bool,
}

impl Run {
    fn h1_wire(&self, k: usize) -> usize {
        // HTTP/1.1 chunked: "<hex size>\r\n<data>\r\n" per frame. Each frame of event k is counted
        // with the event's average frame size, which is exact for the usual single frame.
        let frames = self.frames[k].max(1);
        let per_frame = self.payload[k] / frames;
        self.payload[k] + frames * (format!("{per_frame:x}").len() + 4)
    }
}

async fn lockstep_sizes(layer: GzipLayer, content_type: &'static str, events: &[String]) -> Run {
    let (tx, mut body) = open_stream(&layer, content_type).await;
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut identity = Vec::new();
    let mut compressed = None;
    let mut run = Run {
        payload: Vec::new(),
        frames: Vec::new(),
        input: Vec::new(),
        compressed: false,
    };
    let mut expected = 0;
    for (k, event) in events.iter().enumerate() {
        tx.send(Bytes::from(event.clone())).await.unwrap();
        expected += event.len();
        let (mut bytes, mut frames) = (0, 0);
        loop {
            let decoded = if compressed == Some(true) {
                decoder.get_ref().len()
            } else {
                identity.len()
            };
            if decoded >= expected {
                break;
            }
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .unwrap_or_else(|_| panic!("event {k} was not flushed"))
                .expect("the body goes on")
                .expect("no body error");
            let data = frame.into_data().expect("data frames only");
            let is_gzip = *compressed.get_or_insert(data.starts_with(&[0x1f, 0x8b]));
            bytes += data.len();
            frames += 1;
            if is_gzip {
                decoder.write_all(&data).unwrap();
                decoder.flush().unwrap();
            } else {
                identity.extend_from_slice(&data);
            }
        }
        run.payload.push(bytes);
        run.frames.push(frames);
        run.input.push(event.len());
    }
    drop(tx);
    // The gzip trailer (and nothing else) follows the last event.
    let mut tail = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        tail += data.len();
        decoder.write_all(&data).unwrap();
    }
    run.compressed = compressed == Some(true);
    if run.compressed {
        assert_eq!(
            decoder.finish().unwrap(),
            events.concat().into_bytes(),
            "decodes to the events"
        );
        *run.payload.last_mut().unwrap() += tail;
    } else {
        assert_eq!(identity, events.concat().into_bytes());
    }
    run
}

fn mean(values: &[usize]) -> f64 {
    values.iter().sum::<usize>() as f64 / values.len().max(1) as f64
}

fn backend() -> &'static str {
    if cfg!(feature = "zlib-rs") {
        "zlib-rs"
    } else {
        "miniz_oxide"
    }
}

/// Returns (mean input bytes per event, mean body bytes per event for events 10.., total body).
fn report(name: &str, run: &Run) -> (f64, f64, usize) {
    let n = run.payload.len();
    let steady = mean(&run.payload[10.min(n)..]);
    let h1: Vec<usize> = (0..n).map(|k| run.h1_wire(k)).collect();
    let total: usize = run.payload.iter().sum();
    println!(
        "{name:<34} events {n:>4}  in {:>6.1} B/event  body: first {:>4} B, mean {:>6.1}, \
         events 10.. {:>6.1} B/event (h1 wire {:>6.1}), total {:>6} B, {} flush(es) per event",
        mean(&run.input),
        run.payload[0],
        mean(&run.payload),
        steady,
        mean(&h1[10.min(n)..]),
        total,
        run.frames.iter().max().unwrap_or(&0),
    );
    (mean(&run.input), steady, total)
}

#[tokio::test]
async fn compressed_sse_bytes_per_event_openai_and_ollama_style_in_lockstep() {
    let _serial = SERIAL.lock().await;
    let tokens = answer_tokens();
    let openai = openai_events(&tokens);
    let ollama = ollama_lines(&tokens);
    println!("backend: {}", backend());

    let plain = lockstep_sizes(GzipLayer::new(), SSE, &openai).await;
    assert!(!plain.compressed, "SSE is skipped by default");
    let (openai_in, plain_steady, plain_total) = report("OpenAI SSE, not compressed", &plain);
    for level in [1, 6] {
        let layer = GzipLayer::new().compress_sse(true).level(level);
        let run = lockstep_sizes(layer, SSE, &openai).await;
        assert!(run.compressed);
        let (_, steady, total) = report(&format!("OpenAI SSE, compress_sse, level {level}"), &run);
        println!(
            "    -> {:.1}x fewer body bytes per event after the first 10, {:.1}x over the stream \
             ({:.0} B events)",
            plain_steady / steady,
            plain_total as f64 / total as f64,
            openai_in
        );
        assert!(
            steady < plain_steady / 4.0,
            "compressed events should be much smaller"
        );
    }

    let plain = lockstep_sizes(GzipLayer::new().skip_media_type(NDJSON), NDJSON, &ollama).await;
    assert!(!plain.compressed);
    let (ollama_in, plain_steady, plain_total) = report("Ollama NDJSON, not compressed", &plain);
    for level in [1, 6] {
        let layer = GzipLayer::new().level(level);
        let run = lockstep_sizes(layer, NDJSON, &ollama).await;
        assert!(run.compressed);
        let (_, steady, total) = report(&format!("Ollama NDJSON, gzip, level {level}"), &run);
        println!(
            "    -> {:.1}x fewer body bytes per event after the first 10, {:.1}x over the stream \
             ({:.0} B lines)",
            plain_steady / steady,
            plain_total as f64 / total as f64,
            ollama_in
        );
        assert!(steady < plain_steady / 2.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory per open stream
// ---------------------------------------------------------------------------------------------

fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type OpenStreams = Vec<(mpsc::Sender<Bytes>, GzipBody<ChannelBody>)>;

/// Opens `n` SSE streams through `layer` and has each produce `events` events (read back, so
/// each stream's compressor, if any, has seen them). Returns the streams, still open.
async fn open_many(layer: &GzipLayer, n: usize, events: &[String]) -> OpenStreams {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, body) = open_stream(layer, SSE).await;
        streams.push((tx, body));
    }
    feed_many(&mut streams, events).await;
    streams
}

async fn feed_many(streams: &mut OpenStreams, events: &[String]) {
    for (tx, body) in streams.iter_mut() {
        for event in events {
            tx.send(Bytes::from(event.clone())).await.unwrap();
            let frame: Result<Frame<Bytes>, BoxError> = body.frame().await.unwrap();
            assert!(frame.unwrap().is_data());
        }
    }
}

#[tokio::test]
async fn memory_per_open_compressed_stream() {
    let _serial = SERIAL.lock().await;
    let Some(_) = rss_kib() else {
        println!("no /proc/self/status: memory not measured");
        return;
    };
    const N: usize = 200;
    let openai = openai_events(&answer_tokens());
    let (first, rest) = openai.split_at(1);
    let input: usize = openai.iter().map(String::len).sum();
    println!("backend: {}", backend());

    // Every stream stays open until the end, so no measurement reuses memory freed by another.
    // Baseline: the same streams, not compressed (SSE is skipped by default).
    let before = rss_kib().unwrap();
    let plain = open_many(&GzipLayer::new(), N, first).await;
    let plain_delta = rss_kib().unwrap().saturating_sub(before);
    println!(
        "{N} open SSE streams, not compressed: RSS +{plain_delta} KiB ({:.1} KiB/stream)",
        plain_delta as f64 / N as f64
    );
    let per_stream = |delta: usize| delta.saturating_sub(plain_delta) as f64 / N as f64;

    let mut held = Vec::new();
    let mut figures = Vec::new();
    for (name, layer) in [
        ("compress_sse(true)", GzipLayer::new().compress_sse(true)),
        (
            "compress_sse(true).window_bits(12)",
            GzipLayer::new().compress_sse(true).window_bits(12),
        ),
    ] {
        let before = rss_kib().unwrap();
        let mut streams = open_many(&layer, N, first).await;
        let after_first = rss_kib().unwrap().saturating_sub(before);
        assert_eq!(
            layer.live_streams(),
            N,
            "each open stream holds a compressor"
        );
        feed_many(&mut streams, rest).await;
        let after_all = rss_kib().unwrap().saturating_sub(before);
        println!(
            "{N} open streams, {name}: after 1 event RSS +{after_first} KiB ({:.1} KiB/stream above \
             uncompressed); after {} events ({input} B each) +{after_all} KiB ({:.1} KiB/stream)",
            per_stream(after_first),
            openai.len(),
            per_stream(after_all)
        );
        figures.push(per_stream(after_all));
        held.push((layer, streams));
    }
    for (layer, streams) in held {
        drop(streams);
        assert_eq!(
            layer.live_streams(),
            0,
            "dropping the bodies frees the compressors"
        );
    }
    drop(plain);
    // Loose bounds: a deflate state is hundreds of KiB at most, and more than nothing.
    assert!(figures[0] < 2048.0 && figures[0] > 16.0, "{figures:?}");
}
