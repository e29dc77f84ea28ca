//! Memory per open compressed stream in the traffic shapes a streaming server sees, ours against
//! tower-http's `CompressionLayer` (same zlib-rs backend, same harness):
//!
//! 1. busy: a 150-event answer sent in quick succession (after its first event, which the stream
//!    has flushed at a stall of its own, as a stream mid-answer has), the stream still open;
//! 2. a burst, then silence for 4x `hibernate_after`, with nothing polling the body but its task;
//! 3. then one more event, and a short wait;
//! 4. the bytes that one event cost on the wire, against a stream that never slept.
//!
//! 2,000 opted-in SSE streams of OpenAI-style events (about 258 B each). Each response body is
//! driven by its own tokio task, as a server drives it (`frame().await` in a loop, counting the
//! bytes it is handed); the handler's body is fed by a channel. Live heap comes from a counting
//! allocator and is net of the harness's own cost per stream (the same tasks, channels and bodies
//! sent to a client that does not accept gzip). Every case runs in its own process.
//!
//! Run: `cargo bench --bench traffic_shapes` (full size); `--figures` prints `FIGURE` lines for
//! `scripts/figures.sh`; `--quick` runs 200 streams. Without `--bench` (`cargo test --bench
//! traffic_shapes`) it runs a small smoke test, which checks that every stream decodes.

mod common;

use std::convert::Infallible;
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{live_heap, openai_sse_events};
use http::{header, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::{Layer, Service, ServiceExt};
use tower_gzip::GzipLayer;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// The default `hibernate_after`.
const HIBERNATE_AFTER: Duration = Duration::from_secs(1);
const BURST: usize = 150;

type Tx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type Handler = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// One stream: the handler's side of its body, and what its driver task has received. Only the
/// first stream decodes what it receives (checked against what was sent): a decoder per stream
/// would be harness memory the identity baseline does not have.
struct Stream {
    tx: Tx,
    received: Arc<AtomicU64>,
    decoder: Option<Arc<std::sync::Mutex<flate2::write::GzDecoder<Vec<u8>>>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    Ours,
    OursNeverHibernate,
    TowerHttp,
    /// No compression (a client without gzip): the harness's own cost.
    Identity,
}

impl Stack {
    fn parse(name: &str) -> Self {
        match name {
            "ours" => Stack::Ours,
            "ours-never-hibernate" => Stack::OursNeverHibernate,
            "tower-http" => Stack::TowerHttp,
            "identity" => Stack::Identity,
            other => panic!("unknown stack {other}"),
        }
    }
}

fn handler_service(
) -> impl Service<Request<()>, Response = Response<Handler>, Error = Infallible> + Clone {
    tower::service_fn(|req: Request<()>| {
        let rx = req
            .extensions()
            .get::<Arc<std::sync::Mutex<Option<mpsc::Receiver<_>>>>>()
            .and_then(|slot| slot.lock().unwrap().take())
            .expect("the request carries its body's receiver");
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(StreamBody::new(ReceiverStream::new(rx)))
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

/// The layer every stream of a case goes through (one per process, as one per server).
fn ours_layer(stack: Stack) -> &'static GzipLayer {
    static LAYER: std::sync::OnceLock<GzipLayer> = std::sync::OnceLock::new();
    LAYER.get_or_init(|| {
        let layer = GzipLayer::new().compress_sse(true);
        if stack == Stack::OursNeverHibernate {
            layer.never_hibernate()
        } else {
            layer
        }
    })
}

/// Opens one stream through `stack` and spawns its driver task.
async fn open(stack: Stack, decode: bool) -> Stream {
    let (tx, rx) = mpsc::channel(BURST + 8);
    let slot = Arc::new(std::sync::Mutex::new(Some(rx)));
    let mut request = Request::builder();
    if stack != Stack::Identity {
        request = request.header(header::ACCEPT_ENCODING, "gzip");
    }
    let mut request = request.body(()).unwrap();
    request.extensions_mut().insert(slot);
    let received = Arc::new(AtomicU64::new(0));
    let decoder = (decode && stack != Stack::Identity).then(|| {
        Arc::new(std::sync::Mutex::new(flate2::write::GzDecoder::new(
            Vec::new(),
        )))
    });
    let (counter, sink) = (received.clone(), decoder.clone());
    macro_rules! drive {
        ($body:expr) => {{
            let mut body = $body;
            tokio::spawn(async move {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                        if let Some(sink) = &sink {
                            let mut decoder = sink.lock().unwrap();
                            decoder.write_all(&data).unwrap();
                            decoder.flush().unwrap();
                        }
                    }
                }
            });
        }};
    }
    match stack {
        // One layer serves every stream, as in a server (its reuse pool is shared).
        Stack::Ours | Stack::Identity | Stack::OursNeverHibernate => {
            let svc = ours_layer(stack).layer(handler_service());
            drive!(svc.oneshot(request).await.unwrap().into_body());
        }
        Stack::TowerHttp => {
            // Gzip only, level 6, and SSE compressed (its default predicate skips SSE).
            let svc = tower_http::compression::CompressionLayer::new()
                .no_br()
                .no_deflate()
                .no_zstd()
                .quality(tower_http::CompressionLevel::Precise(6))
                .compress_when(|_, _, _: &http::HeaderMap, _: &http::Extensions| true)
                .layer(handler_service());
            drive!(svc.oneshot(request).await.unwrap().into_body());
        }
    }
    Stream {
        tx,
        received,
        decoder,
    }
}

/// Sends `events` to every stream, then waits until every handler body has been drained by the
/// layer and every driver task has gone quiet (what a server sees once everything sent has been
/// flushed out); the first stream's decoded bytes must equal everything sent.
async fn send_and_settle(streams: &[Stream], events: &[Bytes], sent_so_far: &mut Vec<u8>) {
    for event in events {
        sent_so_far.extend_from_slice(event);
    }
    for stream in streams {
        for event in events {
            stream
                .tx
                .send(Ok(Frame::data(event.clone())))
                .await
                .unwrap();
        }
    }
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < give_up,
            "the streams never drained"
        );
        let drained = streams
            .iter()
            .all(|s| s.tx.capacity() == s.tx.max_capacity());
        let totals: Vec<u64> = streams
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quiet = streams
            .iter()
            .zip(&totals)
            .all(|(s, t)| s.received.load(Ordering::Relaxed) == *t);
        if drained && quiet {
            break;
        }
    }
    match &streams[0].decoder {
        Some(decoder) => assert_eq!(&decoder.lock().unwrap().get_ref()[..], &sent_so_far[..]),
        None => assert_eq!(
            streams[0].received.load(Ordering::Relaxed),
            sent_so_far.len() as u64
        ),
    }
}

/// One case in this process: prints `SHAPE <stack> <key> <value>` lines.
fn run_case(stack: Stack, n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let events = openai_sse_events(BURST + 1);
        let (burst, last) = events.split_at(BURST);
        let baseline = live_heap();
        let mut streams = Vec::with_capacity(n);
        for i in 0..n {
            streams.push(open(stack, i == 0).await);
        }
        let mut sent = Vec::new();
        // The answer's first event, then the rest: a stream mid-answer has stalled before. (With
        // 2,000 streams the layer is crowded, and a stream sleeps at the first stall after its
        // first data; one whose whole answer came before its first stall would be asleep here,
        // not busy.)
        send_and_settle(&streams, &burst[..1], &mut sent).await;
        send_and_settle(&streams, &burst[1..], &mut sent).await;
        let per_stream = |now: u64| (now.saturating_sub(baseline)) as f64 / n as f64;
        println!(
            "SHAPE {stack:?} busy_heap_per_stream {}",
            per_stream(live_heap())
        );
        let after_burst: Vec<u64> = streams
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .collect();
        // Silence: nothing is sent; only the streams' own tasks could poll them.
        tokio::time::sleep(HIBERNATE_AFTER * 4).await;
        println!(
            "SHAPE {stack:?} silent_heap_per_stream {}",
            per_stream(live_heap())
        );
        let before: Vec<u64> = streams
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .collect();
        // What the streams sent while silent (a stream falling asleep need send nothing).
        let silence_bytes: u64 = before.iter().zip(&after_burst).map(|(b, a)| b - a).sum();
        println!(
            "SHAPE {stack:?} silence_bytes {}",
            silence_bytes as f64 / n as f64
        );
        send_and_settle(&streams, last, &mut sent).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!(
            "SHAPE {stack:?} after_event_heap_per_stream {}",
            per_stream(live_heap())
        );
        let event_bytes: u64 = streams
            .iter()
            .zip(&before)
            .map(|(s, b)| s.received.load(Ordering::Relaxed) - b)
            .sum();
        println!(
            "SHAPE {stack:?} event_bytes {}",
            event_bytes as f64 / n as f64
        );
        let total_bytes: u64 = streams
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum();
        println!(
            "SHAPE {stack:?} total_bytes {}",
            total_bytes as f64 / n as f64
        );
        drop(streams);
    });
}

/// Runs one case in a child process (this binary) and parses its lines.
fn case_in_child(stack: &str, n: usize) -> Vec<(String, f64)> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args(["--case", stack, &n.to_string()])
        .output()
        .expect("run the case");
    assert!(
        output.status.success(),
        "case {stack} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next() == Some("SHAPE")).then(|| {
                let _stack = parts.next();
                let key = parts.next().unwrap().to_owned();
                let value: f64 = parts.next().unwrap().parse().unwrap();
                (key, value)
            })
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return run_case(Stack::parse(&args[i + 1]), args[i + 2].parse().unwrap());
    }
    let figures = common::figures_mode();
    let smoke = !figures && !args.iter().any(|a| a == "--bench");
    let n = if smoke {
        20
    } else if common::quick_mode() {
        200
    } else {
        2000
    };
    let get = |rows: &[(String, f64)], key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap()
    };
    let identity = case_in_child("identity", n);
    let mut table = Vec::new();
    for stack in ["ours", "ours-never-hibernate", "tower-http"] {
        let rows = case_in_child(stack, n);
        let net = |key: &str| (get(&rows, key) - get(&identity, key)) / 1024.0;
        table.push((
            stack,
            net("busy_heap_per_stream"),
            net("silent_heap_per_stream"),
            net("after_event_heap_per_stream"),
            get(&rows, "event_bytes"),
            get(&rows, "silence_bytes"),
            get(&rows, "total_bytes"),
        ));
    }
    println!(
        "{n} SSE streams; live heap per stream (KiB) net of the harness's own {:.1} KiB",
        get(&identity, "busy_heap_per_stream") / 1024.0
    );
    println!("stack                  busy   silent(4x)  after 1 event  bytes for that event  bytes while silent  bytes in all");
    for (stack, busy, silent, after, bytes, silence, total) in &table {
        println!("{stack:22} {busy:6.1} {silent:10.1} {after:14.1} {bytes:20.1} {silence:19.1} {total:12.1}");
    }
    if figures {
        for (stack, busy, silent, after, bytes, silence, total) in &table {
            let key = stack.replace('-', "_");
            common::figure(&format!("shapes.{key}.busy_kib"), *busy);
            common::figure(&format!("shapes.{key}.silent_kib"), *silent);
            common::figure(&format!("shapes.{key}.after_event_kib"), *after);
            common::figure(&format!("shapes.{key}.event_bytes"), *bytes);
            common::figure(&format!("shapes.{key}.silence_bytes"), *silence);
            common::figure(&format!("shapes.{key}.total_bytes"), *total);
        }
        let never = table[1].4;
        common::figure(
            "shapes.ours.event_bytes_over_never_slept",
            table[0].4 / never,
        );
        // tower-http sync-flushes every event.
        common::figure(
            "shapes.ours.event_bytes_over_tower_http",
            table[0].4 / table[2].4,
        );
    }
}
