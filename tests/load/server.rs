//! The server side of the load tests, run in a child process (`load.rs` re-executes its own test
//! binary with `TOWER_GZIP_LOAD_CHILD=server`), so that its open files, its memory (RSS and live
//! heap bytes) and its panics are its own.
//!
//! A plain hyper server (hyper-util's auto builder, `TowerToHyperService`) with `GzipLayer` in
//! front of a handler with these routes:
//!
//! | route | body |
//! |---|---|
//! | `/sse?s=ID&n=N&ms=T&gate=G` | `text/event-stream`: N events, one every T ms; event 0 at once (after `/go0` if G=2), event 1 after `/go` if G>=1 |
//! | `/endless?s=ID&ms=T` | the same, without end |
//! | `/burst?s=ID&n=N` | `text/event-stream`: N events back to back, then silence without end |
//! | `/firehose?s=ID` | `application/x-ndjson`, 16 KiB chunks as fast as the body is polled, without end |
//! | `/stats` | counters, one `key=value` per word |
//! | `/go0`, `/go` | open the gates |
//! | `/trim` | `malloc_trim(0)`: returns freed heap pages to the kernel, so RSS shows what is in use |
//!
//! Every connection task is awaited by a reaper that counts panics (`JoinError::is_panic`) and the
//! connection results; a panic hook counts panics anywhere else. The process exits when its stdin
//! closes (the parent test ended or died).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};
use tower::{service_fn, ServiceBuilder};
use tower_gzip::{GzipLayer, GzipMetrics};

use super::{event_text, firehose_chunk, heap_bytes, now_micros, FIREHOSE_FAST_ID};

static LIVE_BODIES: AtomicI64 = AtomicI64::new(0);
static EVENTS_SENT: AtomicU64 = AtomicU64::new(0);
static PRODUCED_SLOW: AtomicU64 = AtomicU64::new(0);
static PRODUCED_FAST: AtomicU64 = AtomicU64::new(0);
static CONNS_OPEN: AtomicI64 = AtomicI64::new(0);
static CONNS_OK: AtomicU64 = AtomicU64::new(0);
static CONNS_ERR: AtomicU64 = AtomicU64::new(0);
static TASK_PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK_PANICS: AtomicU64 = AtomicU64::new(0);
static ERROR_KINDS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
/// Opened by `/go0`: event 0 of `gate=2` streams.
static GATE0: OnceLock<watch::Sender<bool>> = OnceLock::new();
/// Opened by `/go`: events 1.. of `gate=1` and `gate=2` streams.
static GATE: OnceLock<watch::Sender<bool>> = OnceLock::new();
/// The layer's counters (for `hibernated=` in `/stats`).
static METRICS: OnceLock<GzipMetrics> = OnceLock::new();

async fn wait_gate(gate: &OnceLock<watch::Sender<bool>>) {
    let mut gate = gate.get().expect("gates set up").subscribe();
    let _ = gate.wait_for(|open| *open).await;
}

/// Counts one live handler body; dropping it (the body ended or was dropped) uncounts it.
struct BodyGuard;

impl BodyGuard {
    fn new() -> Self {
        LIVE_BODIES.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        LIVE_BODIES.fetch_sub(1, Ordering::SeqCst);
    }
}

type ResBody = BoxBody<Bytes, Infallible>;

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Server-Sent Events: event 0 at once, then one every `interval` (after the gate, if gated),
/// `total` in all (`None`: without end). Each event is preceded by a real wait, so the compressor
/// sees a stall (and flushes) between any two events.
fn events(stream: u64, total: Option<u32>, interval: Duration, gates: u64) -> ResBody {
    struct State {
        stream: u64,
        next: u32,
        total: Option<u32>,
        interval: Duration,
        gates: u64,
        _guard: BodyGuard,
    }
    let state = State {
        stream,
        next: 0,
        total,
        interval,
        gates,
        _guard: BodyGuard::new(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.total.is_some_and(|total| st.next >= total) {
            return None;
        }
        if st.next == 0 && st.gates == 2 {
            wait_gate(&GATE0).await;
        } else if st.next == 1 && st.gates >= 1 {
            wait_gate(&GATE).await;
            // Spread the streams over one interval, so they do not all write at the same instant.
            let jitter = st.interval.as_micros() as u64 * (st.stream % 64) / 64;
            tokio::time::sleep(Duration::from_micros(jitter)).await;
        } else if st.next > 0 {
            tokio::time::sleep(st.interval).await;
        }
        let event = event_text(st.stream, st.next, now_micros());
        st.next += 1;
        EVENTS_SENT.fetch_add(1, Ordering::Relaxed);
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), st))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// A handler that would produce without end: a 16 KiB chunk every time it is polled, never
/// `Pending`. Only backpressure (the body not being polled) holds it back.
struct Firehose {
    stream: u64,
    next: u64,
    _guard: BodyGuard,
}

impl Body for Firehose {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = firehose_chunk(self.stream, self.next);
        self.next += 1;
        let counter = if self.stream >= FIREHOSE_FAST_ID {
            &PRODUCED_FAST
        } else {
            &PRODUCED_SLOW
        };
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

fn stats(layer: &GzipLayer) -> String {
    let kinds: Vec<String> = ERROR_KINDS
        .lock()
        .unwrap()
        .iter()
        .map(|(kind, n)| format!("{n}x{kind}"))
        .collect();
    format!(
        "live_streams={} hibernated={} bodies={} heap={} events={} produced_slow={} \
         produced_fast={} conns_open={} conns_ok={} conns_err={} task_panics={} hook_panics={} \
         errors={}",
        layer.live_streams(),
        METRICS.get().map_or(0, |m| m.hibernated_streams()),
        LIVE_BODIES.load(Ordering::SeqCst),
        heap_bytes(),
        EVENTS_SENT.load(Ordering::Relaxed),
        PRODUCED_SLOW.load(Ordering::Relaxed),
        PRODUCED_FAST.load(Ordering::Relaxed),
        CONNS_OPEN.load(Ordering::SeqCst),
        CONNS_OK.load(Ordering::SeqCst),
        CONNS_ERR.load(Ordering::SeqCst),
        TASK_PANICS.load(Ordering::SeqCst),
        HOOK_PANICS.load(Ordering::SeqCst),
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join("|")
        },
    )
}

fn respond(layer: &GzipLayer, req: Request<Incoming>) -> Response<ResBody> {
    let stream = query(&req, "s").unwrap_or(0);
    let interval = Duration::from_millis(query(&req, "ms").unwrap_or(200));
    let sse = |body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body)
            .unwrap()
    };
    let text = |s: String| Response::new(BodyExt::boxed(Full::new(Bytes::from(s))));
    match req.uri().path() {
        "/sse" => {
            let total = query(&req, "n").unwrap_or(20) as u32;
            let gates = query(&req, "gate").unwrap_or(0);
            sse(events(stream, Some(total), interval, gates))
        }
        "/endless" => sse(events(stream, None, interval, 0)),
        "/burst" => {
            let total = query(&req, "n").unwrap_or(50) as u32;
            let burst = futures_util::stream::iter((0..total).map(move |i| {
                EVENTS_SENT.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(Frame::data(Bytes::from(event_text(
                    stream,
                    i,
                    now_micros(),
                ))))
            }));
            let guard = BodyGuard::new();
            // Silence: the body stays open and never produces again (a chat answer, then an idle
            // connection; a notification channel after its snapshot).
            let silence = futures_util::stream::pending().map(move |item| {
                let _ = &guard;
                item
            });
            sse(BodyExt::boxed(StreamBody::new(burst.chain(silence))))
        }
        "/firehose" => Response::builder()
            .header("content-type", "application/x-ndjson")
            .body(BodyExt::boxed(Firehose {
                stream,
                next: 0,
                _guard: BodyGuard::new(),
            }))
            .unwrap(),
        "/stats" => text(stats(layer)),
        "/go0" => {
            GATE0.get().expect("gates set up").send_replace(true);
            text("open".to_owned())
        }
        "/go" => {
            GATE.get().expect("gates set up").send_replace(true);
            text("open".to_owned())
        }
        "/trim" => {
            // Hands freed heap memory back to the kernel, so RSS shows what is still in use.
            // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
            let released = unsafe { libc::malloc_trim(0) };
            text(format!("released={released}"))
        }
        _ => Response::builder()
            .status(404)
            .body(BodyExt::boxed(Full::new(Bytes::new())))
            .unwrap(),
    }
}

/// A short, stable name for a connection error: its message without numbers.
fn error_kind(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    message
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .take(80)
        .collect()
}

/// Runs the server until stdin closes. Settings come from the environment:
/// `TOWER_GZIP_LOAD_LEVEL` (gzip level), `TOWER_GZIP_LOAD_MAX_STREAMS` (stream budget),
/// `TOWER_GZIP_LOAD_NEVER_HIBERNATE` (keep every deflate state; the default hibernates after 1 s).
pub(crate) fn run() -> ! {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        HOOK_PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    // The parent holds our stdin open; when it goes away, so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    GATE0.get_or_init(|| watch::channel(false).0);
    GATE.get_or_init(|| watch::channel(false).0);

    let env_u64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut layer = GzipLayer::new()
        .compress_sse(true)
        .metrics(METRICS.get_or_init(GzipMetrics::new).clone());
    if let Some(level) = env_u64("TOWER_GZIP_LOAD_LEVEL") {
        layer = layer.level(level as u32);
    }
    if let Some(max) = env_u64("TOWER_GZIP_LOAD_MAX_STREAMS") {
        layer = layer.max_streams(max as usize);
    }
    if std::env::var_os("TOWER_GZIP_LOAD_NEVER_HIBERNATE").is_some() {
        layer = layer.never_hibernate();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8192).unwrap();
        let port = listener.local_addr().unwrap().port();

        let probe = layer.clone();
        let handler = service_fn(move |req: Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(respond(&probe, req)))
        });
        let svc = TowerToHyperService::new(ServiceBuilder::new().layer(layer).service(handler));

        // The reaper awaits every connection task and counts panics and results.
        let (tasks_tx, mut tasks_rx) =
            mpsc::unbounded_channel::<tokio::task::JoinHandle<Result<(), String>>>();
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    Some(handle) = tasks_rx.recv() => running.push(handle),
                    Some(result) = running.next(), if !running.is_empty() => match result {
                        Ok(Ok(())) => {
                            CONNS_OK.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Err(kind)) => {
                            CONNS_ERR.fetch_add(1, Ordering::SeqCst);
                            *ERROR_KINDS.lock().unwrap().entry(kind).or_default() += 1;
                        }
                        Err(join_error) => {
                            if join_error.is_panic() {
                                TASK_PANICS.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    },
                    else => break,
                }
            }
        });

        println!("LOADCTL port={port}");
        std::io::stdout().flush().unwrap();

        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    *ERROR_KINDS
                        .lock()
                        .unwrap()
                        .entry(format!("accept:{}", e.kind()))
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let svc = svc.clone();
            CONNS_OPEN.fetch_add(1, Ordering::SeqCst);
            let task = tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // Room for the HTTP/2 test's 1,000 streams per connection.
                builder.http2().max_concurrent_streams(2_048);
                let result = builder.serve_connection(TokioIo::new(stream), svc).await;
                CONNS_OPEN.fetch_sub(1, Ordering::SeqCst);
                result.map_err(|e| error_kind(&*e))
            });
            let _ = tasks_tx.send(task);
        }
    })
}
