//! Shared by the `interop_*` tests: a real axum server whose streamed routes are fed chunk by chunk
//! by the test, the LLM-style test data, and a lockstep runner for command-line clients
//! ([`clients`] has the clients themselves, [`browser`] a test page in headless Chromium).
//!
//! Every streamed route takes its body from a channel the test registered with
//! [`TestServer::feed`] before the client asked for it; the test sends chunk `k + 1` only after
//! the client showed that it decoded chunk `k`. The server also records the request and response
//! heads of every exchange, so a test can check what was negotiated on the wire (a browser's
//! `EventSource` cannot see `Content-Encoding`, and reqwest drops it after decoding).
#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod chromium;
pub mod clients;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode, Version};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tower_gzip::{FlushPolicy, GzipLayer};

/// Upper bound of every single wait. Reaching it means the test failed; nothing measures time.
pub const WAIT: Duration = Duration::from_secs(30);

pub const NDJSON: &str = "application/x-ndjson";
pub const SSE: &str = "text/event-stream";

/// The `random_padding` bound of the `*-padded*` routes.
pub const PADDING: u16 = 64;

/// One request/response pair as the server saw it (the response head after `GzipLayer`).
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub status: StatusCode,
    pub request: HeaderMap,
    pub response: HeaderMap,
}

impl Exchange {
    pub fn content_encoding(&self) -> Option<&str> {
        self.response
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
    }

    pub fn accept_encoding(&self) -> Option<&str> {
        self.request
            .get(http::header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    feeds: Mutex<HashMap<String, mpsc::Receiver<Bytes>>>,
    exchanges: Mutex<Vec<Exchange>>,
    reports: mpsc::UnboundedSender<String>,
    page: &'static str,
    large_json: Bytes,
}

/// A test server on `127.0.0.1:<ephemeral>`, aborted on drop.
///
/// | route                 | layer                                   | body                       |
/// |-----------------------|-----------------------------------------|----------------------------|
/// | `/ndjson`             | `GzipLayer::new()`                      | fed, `application/x-ndjson` |
/// | `/ndjson-every-frame` | `.flush_policy(FlushPolicy::EveryFrame)`| fed, `application/x-ndjson` |
/// | `/sse`                | `GzipLayer::new()` (SSE skipped)        | fed, `text/event-stream`    |
/// | `/sse-gzip`           | `GzipLayer::new().compress_sse(true)`   | fed, `text/event-stream`    |
/// | `/sse-gzip-hibernating` | `.compress_sse(true).hibernate_after(ZERO)`: drops and rebuilds the deflate state at every stall | fed, `text/event-stream` |
/// | `/ndjson-held`        | `GzipLayer::new()`                      | fed, but held until the feed closes (control) |
/// | `/ndjson-padded`, `/sse-gzip-padded` | `.random_padding(PADDING)` (SSE: `.compress_sse(true)` too) | fed, as their unpadded twins |
/// | `/sse-gzip-padded-hibernating` | `.compress_sse(true).hibernate_after(ZERO).random_padding(PADDING)` | fed, `text/event-stream` |
/// | `/large-padded.json`  | `.random_padding(PADDING)`              | [`large_json`]              |
/// | `/large.json`         | `GzipLayer::new()`                      | [`large_json`]              |
/// | `/page`               | `GzipLayer::new()`                      | the HTML page given         |
/// | `POST /report`        | none                                    | body forwarded to [`TestServer::next_report`] |
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    reports: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_page("<!doctype html><title>no page</title>").await
    }

    pub async fn with_page(page: &'static str) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            feeds: Mutex::new(HashMap::new()),
            exchanges: Mutex::new(Vec::new()),
            reports: reports_tx,
            page,
            large_json: large_json().0,
        });

        let default_routes = Router::new()
            .route("/ndjson", get(fed_ndjson))
            .route("/sse", get(fed_sse))
            .route("/ndjson-held", get(fed_held))
            .route("/large.json", get(large))
            .route("/page", get(page_handler))
            .layer(GzipLayer::new());
        let every_frame = Router::new()
            .route("/ndjson-every-frame", get(fed_ndjson))
            .layer(GzipLayer::new().flush_policy(FlushPolicy::EveryFrame));
        let sse_gzip = Router::new()
            .route("/sse-gzip", get(fed_sse))
            .layer(GzipLayer::new().compress_sse(true));
        let sse_gzip_hibernating = Router::new()
            .route("/sse-gzip-hibernating", get(fed_sse))
            .layer(
                GzipLayer::new()
                    .compress_sse(true)
                    .hibernate_after(std::time::Duration::ZERO),
            );
        let padded = Router::new()
            .route("/ndjson-padded", get(fed_ndjson))
            .route("/large-padded.json", get(large))
            .layer(GzipLayer::new().random_padding(PADDING));
        let sse_gzip_padded = Router::new()
            .route("/sse-gzip-padded", get(fed_sse))
            .layer(GzipLayer::new().compress_sse(true).random_padding(PADDING));
        let sse_gzip_padded_hibernating = Router::new()
            .route("/sse-gzip-padded-hibernating", get(fed_sse))
            .layer(
                GzipLayer::new()
                    .compress_sse(true)
                    .hibernate_after(std::time::Duration::ZERO)
                    .random_padding(PADDING),
            );
        let app = Router::new()
            .merge(default_routes)
            .merge(padded)
            .merge(sse_gzip_padded)
            .merge(sse_gzip_padded_hibernating)
            .merge(every_frame)
            .merge(sse_gzip)
            .merge(sse_gzip_hibernating)
            .route("/report", post(report))
            .layer(middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            shared,
            reports,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Registers the body of the next request to `path`: one data frame per chunk sent, ending when
    /// the sender is dropped.
    pub fn feed(&self, path: &str) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(4);
        self.shared
            .feeds
            .lock()
            .unwrap()
            .insert(path.to_owned(), rx);
        tx
    }

    /// Every exchange on `path` so far.
    pub fn exchanges(&self, path: &str) -> Vec<Exchange> {
        self.shared
            .exchanges
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.path == path)
            .cloned()
            .collect()
    }

    /// The one exchange on `path`; `Err` if there were none or several (a reconnecting client).
    pub fn only_exchange(&self, path: &str) -> Result<Exchange, String> {
        let mut all = self.exchanges(path);
        match all.len() {
            1 => Ok(all.pop().unwrap()),
            n => Err(format!(
                "expected exactly one request to {path}, saw {n}: {all:?}"
            )),
        }
    }

    /// The next body POSTed to `/report` (or a note about an unexpected request), in order.
    pub async fn next_report(&mut self, waiting_for: &str) -> Result<String, String> {
        self.next_report_within(WAIT, waiting_for).await
    }

    /// [`next_report`](Self::next_report) with another bound than [`WAIT`].
    pub async fn next_report_within(
        &mut self,
        wait: Duration,
        waiting_for: &str,
    ) -> Result<String, String> {
        match timeout(wait, self.reports.recv()).await {
            Ok(Some(report)) => Ok(report),
            Ok(None) => Err("the report channel closed".into()),
            Err(_) => Err(format!(
                "no report from the client within {wait:?} while waiting for {waiting_for}"
            )),
        }
    }
}

async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let version = request.version();
    let request_headers = request.headers().clone();
    let response = next.run(request).await;
    shared.exchanges.lock().unwrap().push(Exchange {
        method,
        path,
        version,
        status: response.status(),
        request: request_headers,
        response: response.headers().clone(),
    });
    response
}

fn take_feed(shared: &Shared, path: &str) -> Option<mpsc::Receiver<Bytes>> {
    let feed = shared.feeds.lock().unwrap().remove(path);
    if feed.is_none() {
        let _ = shared.reports.send(format!(
            "unexpected\nrequest to {path} with no feed registered"
        ));
    }
    feed
}

fn fed(shared: &Shared, path: &str, content_type: &'static str) -> Response {
    let Some(rx) = take_feed(shared, path) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no feed registered").into_response();
    };
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

async fn fed_ndjson(State(shared): State<Arc<Shared>>, uri: http::Uri) -> Response {
    fed(&shared, uri.path(), NDJSON)
}

/// Control: everything the test feeds is held back until the feed closes, then sent at once, as a
/// compressor that never flushes would. The lockstep runners must fail on this route.
async fn fed_held(State(shared): State<Arc<Shared>>, uri: http::Uri) -> Response {
    let Some(mut rx) = take_feed(&shared, uri.path()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no feed registered").into_response();
    };
    let all = futures_util::stream::once(async move {
        let mut all = Vec::new();
        while let Some(chunk) = rx.recv().await {
            all.extend_from_slice(&chunk);
        }
        Ok::<_, Infallible>(Bytes::from(all))
    });
    ([(CONTENT_TYPE, NDJSON)], Body::from_stream(all)).into_response()
}

async fn fed_sse(State(shared): State<Arc<Shared>>, uri: http::Uri) -> Response {
    fed(&shared, uri.path(), SSE)
}

async fn large(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        shared.large_json.clone(),
    )
        .into_response()
}

async fn page_handler(State(shared): State<Arc<Shared>>) -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], shared.page).into_response()
}

async fn report(State(shared): State<Arc<Shared>>, body: String) -> StatusCode {
    let _ = shared.reports.send(body);
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// A model's answer, one token per word (with its leading space), about 120 tokens.
pub const ANSWER: &str = "Gzip compression of a token stream works because every event repeats \
    the same JSON envelope: the id, the object type, the model name, the choice index and the \
    finish reason. Only the few characters of the token itself change from one event to the \
    next. A deflate window of 32 KiB remembers the previous events, so after the first few the \
    compressor encodes each new event as a handful of back references plus the new token. The \
    price is one compressor per open stream, held for as long as the stream is open, and a \
    small amount of CPU per event. Whether that is worth it depends on how long the answers \
    are, how many clients read them at once, and what the bandwidth costs. \"Quotes\", \
    back\\slashes and unicode (caf\u{e9}, \u{1f980}) must survive the trip.";

pub fn answer_tokens() -> Vec<String> {
    let mut tokens = Vec::new();
    for (i, word) in ANSWER.split(' ').filter(|w| !w.is_empty()).enumerate() {
        tokens.push(if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    tokens
}

/// Escapes `text` as the contents of a JSON string.
pub fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The `data:` payload of an OpenAI chat-completion chunk carrying `token` (about 240 bytes, so
/// the whole SSE event is about 250-260 bytes, like OpenAI's).
pub fn openai_chunk_json(token: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012","object":"chat.completion.chunk","created":1732473600,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{{"index":0,"delta":{{"content":"{}"}},"logprobs":null,"finish_reason":null}}]}}"#,
        json_escape(token)
    )
}

/// OpenAI-style SSE events, one per token of `tokens`, then `data: [DONE]`. Each element is one
/// complete event (`data: ...\n\n`).
pub fn openai_events(tokens: &[String]) -> Vec<String> {
    let mut events: Vec<String> = tokens
        .iter()
        .map(|token| format!("data: {}\n\n", openai_chunk_json(token)))
        .collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// The `data` field of each event of [`openai_events`] (what `EventSource` hands to the page).
pub fn event_data(event: &str) -> &str {
    event
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .expect("a single-line data event")
}

/// Ollama `/api/chat`-style NDJSON lines (about 100 bytes each), then the final `done` line.
pub fn ollama_lines(tokens: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = tokens
        .iter()
        .map(|token| {
            format!(
                "{{\"model\":\"llama3.2\",\"created_at\":\"2024-11-24T20:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"done\":false}}\n",
                json_escape(token)
            )
        })
        .collect();
    lines.push(
        "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-24T20:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"eval_count\":120}\n"
            .to_owned(),
    );
    lines
}

/// About 1.5 MB of JSON: `{"items":[{"id":0,...},...]}`. Returns the document, the item count and
/// the sum of the ids (for the client to prove it parsed everything).
pub fn large_json() -> (Bytes, usize, u64) {
    let mut json = String::from("{\"items\":[");
    let mut id: u64 = 0;
    while json.len() < 1_500_000 {
        if id > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            r#"{{"id":{id},"name":"item-{id}","price":{}.{:02},"in_stock":{},"description":"Item number {id}, \"quoted\", caf\u00e9."}}"#,
            id % 997,
            id % 100,
            id % 3 != 0,
        );
        id += 1;
    }
    json.push_str("]}");
    let sum = id * (id - 1) / 2;
    (Bytes::from(json), id as usize, sum)
}

// ---------------------------------------------------------------------------------------------
// Lockstep over a child process's stdout lines
// ---------------------------------------------------------------------------------------------

/// Runs `command` (a client that prints the decoded body to stdout as it arrives) in lockstep:
/// sends chunk `k` to `feed`, then reads stdout lines until every line of chunk `k` was printed,
/// comparing each, and only then sends chunk `k + 1`. Every chunk must end with `\n`. After the
/// last chunk the feed is closed and the client must reach end of output and exit 0. Returns the
/// client's stderr. `wait` bounds each wait (normally [`WAIT`]).
pub async fn lockstep_lines(
    mut command: tokio::process::Command,
    feed: mpsc::Sender<Bytes>,
    chunks: &[String],
    wait: Duration,
) -> Result<String, String> {
    let program = format!("{:?}", command.as_std());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e} (CI installs it in .ci/run)"))?;
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let result = async {
        for (k, chunk) in chunks.iter().enumerate() {
            assert!(chunk.ends_with('\n'), "chunk {k} must end with a newline");
            feed.send(Bytes::from(chunk.clone()))
                .await
                .map_err(|_| format!("the server dropped the body before chunk {k}"))?;
            for expected in chunk.split_terminator('\n') {
                let line = match timeout(wait, lines.next_line()).await {
                    Err(_) => {
                        return Err(format!(
                            "chunk {k} was produced but the client did not print {expected:?} \
                             within {wait:?}: it was held back (not flushed, or buffered by the client)"
                        ))
                    }
                    Ok(Err(e)) => return Err(format!("reading the client's output: {e}")),
                    Ok(Ok(None)) => {
                        return Err(format!("the client's output ended while waiting for chunk {k}"))
                    }
                    Ok(Ok(Some(line))) => line,
                };
                if line != expected {
                    return Err(format!(
                        "chunk {k}: the client printed {line:?}, expected {expected:?}"
                    ));
                }
            }
        }
        drop(feed);
        match timeout(WAIT, lines.next_line()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(line))) => return Err(format!("unexpected extra output {line:?}")),
            Ok(Err(e)) => return Err(format!("reading the client's output: {e}")),
            Err(_) => return Err("the client did not finish after the body ended".into()),
        }
        let status = timeout(WAIT, child.wait())
            .await
            .map_err(|_| "the client did not exit after the body ended".to_string())?
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("the client exited with {status}"));
        }
        Ok(())
    }
    .await;

    if result.is_err() {
        let _ = child.start_kill();
    }
    let stderr = timeout(WAIT, stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    match result {
        Ok(()) => Ok(stderr),
        Err(e) => Err(format!("{program}: {e}\n--- client stderr ---\n{stderr}")),
    }
}

/// Checks the recorded exchange on `path`: one request, status 200, `Content-Encoding` as expected
/// (`Some("gzip")` or `None`), and, when compressed, `Vary: Accept-Encoding`.
pub fn check_exchange(
    server: &TestServer,
    path: &str,
    encoding: Option<&str>,
    version: Option<Version>,
) -> Result<Exchange, String> {
    let exchange = server.only_exchange(path)?;
    if exchange.status != StatusCode::OK {
        return Err(format!("{path}: status {}", exchange.status));
    }
    if exchange.content_encoding() != encoding {
        return Err(format!(
            "{path}: expected content-encoding {encoding:?}, the server sent {:?} (request \
             accept-encoding {:?})",
            exchange.content_encoding(),
            exchange.accept_encoding()
        ));
    }
    if encoding.is_some() {
        let vary = exchange
            .response
            .get(http::header::VARY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !vary.to_ascii_lowercase().contains("accept-encoding") {
            return Err(format!("{path}: compressed without Vary: Accept-Encoding"));
        }
    }
    if let Some(version) = version {
        if exchange.version != version {
            return Err(format!(
                "{path}: expected {version:?}, the request came as {:?}",
                exchange.version
            ));
        }
    }
    Ok(exchange)
}
