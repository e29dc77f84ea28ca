//! A streaming LLM chat proxy behind `tower_gzip::GzipLayer`: the browser posts a chat request, the
//! proxy forwards it to an OpenAI-compatible streaming API and relays the token stream back as
//! Server-Sent Events, compressed, each token flushed to the browser as soon as it arrives.
//!
//! | route               | what it does                                                           |
//! |---------------------|------------------------------------------------------------------------|
//! | `GET /`             | a small chat page: a textarea, a send button, tokens appended as they stream in (`fetch` + `getReader`) |
//! | `POST /chat/stream` | OpenAI chat-completions request body (`{"model":..,"messages":[..],"stream":true}`); answers `text/event-stream` with OpenAI `chat.completion.chunk` events and `data: [DONE]` |
//! | `GET /debug/stats`  | open compressed streams, and the mock upstream's stream counters        |
//!
//! Run it with:
//!
//! ```text
//! cargo run --example llm_proxy
//! ```
//!
//! By default the upstream is a built-in mock (an OpenAI-style SSE generator on its own loopback
//! port, one token every 20-60 ms), so it runs offline. Environment variables:
//!
//! - `OPENAI_BASE_URL` (e.g. `http://localhost:11434/v1` for Ollama's OpenAI-compatible API, vLLM,
//!   llama.cpp's server, LM Studio, LiteLLM): use that upstream, `POST {base}/chat/completions`;
//!   `OPENAI_API_KEY` is sent as a bearer token, `OPENAI_MODEL` is the model when the request has
//!   none (default `gpt-4o-mini`). This example's reqwest is built without a TLS backend, so an
//!   `https://` upstream (api.openai.com) needs `"rustls"` added to reqwest's features in
//!   `[dev-dependencies]`.
//! - `OLLAMA_URL` (e.g. `http://localhost:11434`): use Ollama's native `POST /api/chat` (NDJSON),
//!   translated to OpenAI-style SSE; `OLLAMA_MODEL` is the default model (default `llama3.2`).
//! - `PORT` (default 3002) or `ADDR` (a full socket address, e.g. `0.0.0.0:8080`).
//! - `MOCK_TOKEN_DELAY_MS`: the mock's mean pause between tokens (default 40).
//!
//! The mock understands a few test switches: `"max_tokens": N` makes the answer exactly N tokens
//! long, `"model": "mock-error"` makes it answer HTTP 500, `"model": "mock-broken"` makes its
//! stream break off after a few tokens.
//!
//! Errors: an unreachable upstream or a non-2xx answer becomes a `502` with an OpenAI-style JSON
//! error before any event is sent; a stream that fails or ends without `[DONE]` once started ends
//! with an `event: error` SSE event. When the browser goes away, hyper drops the response body,
//! which owns the upstream response stream: dropping it cancels the upstream request (the mock
//! logs each cancelled stream and counts open ones).

#![allow(dead_code)] // tests/interop_llm_proxy.rs includes this file as a module

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::{json, Value};
use tower_gzip::GzipLayer;

/// Most compressed streams open at once. Each holds a deflate state while it is busy (measured sizes:
/// FIGURES.md, "Memory of a busy compressed stream"); past this many, further responses are sent
/// uncompressed instead of allocating more.
const MAX_COMPRESSED_STREAMS: usize = 2_000;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Where chat requests go.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// An OpenAI-compatible API: `POST {base_url}/chat/completions` with `"stream": true`, answered
    /// with SSE `data: {chunk}` events and `data: [DONE]`.
    OpenAi {
        base_url: String,
        api_key: Option<String>,
        default_model: String,
    },
    /// Ollama's native API: `POST {url}/api/chat`, answered with NDJSON lines.
    Ollama { url: String, default_model: String },
}

impl Upstream {
    fn describe(&self) -> String {
        match self {
            Upstream::OpenAi { base_url, .. } => {
                format!("{base_url}/chat/completions (OpenAI SSE)")
            }
            Upstream::Ollama { url, .. } => format!("{url}/api/chat (Ollama NDJSON)"),
        }
    }

    /// Whether the upstream is on this machine (`localhost`, `127.0.0.0/8`, `::1`): the built-in
    /// mock, a local Ollama, a test's own server.
    fn is_loopback(&self) -> bool {
        let url = match self {
            Upstream::OpenAi { base_url, .. } => base_url,
            Upstream::Ollama { url, .. } => url,
        };
        reqwest::Url::parse(url)
            .ok()
            .and_then(|url| {
                let host = url
                    .host_str()?
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                Some(host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
            })
            .unwrap_or(false)
    }

    fn default_model(&self) -> &str {
        match self {
            Upstream::OpenAi { default_model, .. } | Upstream::Ollama { default_model, .. } => {
                default_model
            }
        }
    }
}

pub struct ProxyState {
    upstream: Upstream,
    client: reqwest::Client,
    /// A clone of the route's layer, to report how many compressors are held right now.
    layer: GzipLayer,
    /// The built-in mock's counters, when it is the upstream.
    mock: Option<Arc<MockStats>>,
    relays: AtomicUsize,
}

/// The layer in front of the proxy's routes.
///
/// `compress_sse(true)`: `/chat/stream` answers `text/event-stream`, which `GzipLayer` leaves alone
/// by default. A token stream is the best case for gzip: every OpenAI chunk repeats the same
/// ~200-byte JSON envelope around a few characters of token, and the 32 KiB window remembers the
/// previous events, so after the first few each event costs a small fraction of its size on
/// the wire (figures in docs/streaming-llm.md). Latency is unchanged: the layer flushes whenever
/// the handler waits for the next token, so each event is decodable as soon as it is sent.
/// The costs: one compressor per open stream (bounded by `max_streams`), and BREACH: the
/// response reflects the user's prompt, so it must not also carry secrets (session tokens, API
/// keys, other users' data) an attacker could guess byte by byte from compressed sizes. This
/// proxy streams only model output, so compressing is safe here.
pub fn layer() -> GzipLayer {
    GzipLayer::new()
        .compress_sse(true)
        .max_streams(MAX_COMPRESSED_STREAMS)
}

/// The proxy's routes, behind [`layer`].
pub fn proxy_app(upstream: Upstream, mock: Option<Arc<MockStats>>) -> Router {
    let layer = layer();
    let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if mock.is_some() || upstream.is_loopback() {
        // The mock, or another upstream on loopback: never send it through an HTTP proxy from the
        // environment.
        client = client.no_proxy();
    }
    let state = Arc::new(ProxyState {
        upstream,
        client: client.build().expect("a reqwest client"),
        layer: layer.clone(),
        mock,
        relays: AtomicUsize::new(0),
    });
    Router::new()
        .route("/", get(index))
        .route("/chat/stream", post(chat_stream))
        .route("/debug/stats", get(stats))
        .layer(layer)
        .with_state(state)
}

/// Serves `app` on `listener` with `TCP_NODELAY`, so one-token writes are not held back by Nagle's
/// algorithm waiting for the previous segment's ACK.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("the server runs");
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match env("ADDR") {
        Some(addr) => addr
            .parse()
            .expect("ADDR must be a socket address like 127.0.0.1:3002"),
        None => {
            let port = env("PORT")
                .map(|port| port.parse::<u16>().expect("PORT must be a port number"))
                .unwrap_or(3002);
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };

    let (upstream, mock) = if let Some(url) = env("OLLAMA_URL") {
        let url = url.trim_end_matches('/').to_owned();
        let default_model = env("OLLAMA_MODEL").unwrap_or_else(|| "llama3.2".into());
        (Upstream::Ollama { url, default_model }, None)
    } else if let Some(base_url) = env("OPENAI_BASE_URL") {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if base_url.starts_with("https://") {
            println!(
                "note: {base_url} is https; this example's reqwest has no TLS backend unless \"rustls\" \
                 is added to its features in Cargo.toml [dev-dependencies]"
            );
        }
        let api_key = env("OPENAI_API_KEY");
        let default_model = env("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into());
        let upstream = Upstream::OpenAi {
            base_url,
            api_key,
            default_model,
        };
        (upstream, None)
    } else {
        let delay = Duration::from_millis(
            env("MOCK_TOKEN_DELAY_MS")
                .map(|ms| ms.parse().expect("MOCK_TOKEN_DELAY_MS must be a number"))
                .unwrap_or(40),
        );
        let mock = spawn_mock_upstream(delay).await;
        let upstream = Upstream::OpenAi {
            base_url: mock.base_url(),
            api_key: Some("sk-mock".into()),
            default_model: "mock-1".into(),
        };
        println!(
            "upstream: built-in mock at {} ({}-{} ms per token)",
            mock.base_url(),
            delay.as_millis() / 2,
            delay.as_millis() * 3 / 2
        );
        (upstream, Some(mock.stats))
    };
    println!("upstream: {}", upstream.describe());

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("failed to bind {addr}: {err}"));
    let url = format!("http://{}", listener.local_addr().unwrap());
    println!("llm_proxy listening on {url}");
    println!("  open {url}/ in a browser, or:");
    println!(
        "  curl -N --compressed {url}/chat/stream -H 'content-type: application/json' \
         -d '{{\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"stream\":true}}'"
    );
    println!("  curl -s {url}/debug/stats");
    serve(listener, proxy_app(upstream, mock)).await;
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn stats(State(state): State<Arc<ProxyState>>) -> Response {
    let mock = state.mock.as_ref().map(|stats| stats.to_json());
    let body = json!({
        "compressed_streams_open": state.layer.live_streams(),
        "relays_started": state.relays.load(Ordering::Relaxed),
        "mock_upstream": mock,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An OpenAI-style error object as a JSON response.
fn json_error(status: StatusCode, message: impl Into<String>, kind: &str) -> Response {
    let body = json!({ "error": { "message": message.into(), "type": kind } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /chat/stream`: validate, forward, relay.
async fn chat_stream(State(state): State<Arc<ProxyState>>, body: Bytes) -> Response {
    let mut request: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object",
                "invalid_request_error",
            )
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON: {e}"),
                "invalid_request_error",
            )
        }
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`messages` must be an array of {role, content}",
            "invalid_request_error",
        );
    }
    request["stream"] = Value::Bool(true);
    if !request.get("model").is_some_and(Value::is_string) {
        request["model"] = Value::String(state.upstream.default_model().to_owned());
    }
    let model = request["model"].as_str().unwrap_or_default().to_owned();

    let (url, builder) = match &state.upstream {
        Upstream::OpenAi {
            base_url, api_key, ..
        } => {
            let url = format!("{base_url}/chat/completions");
            let mut builder = state.client.post(&url);
            if let Some(key) = api_key {
                builder = builder.bearer_auth(key);
            }
            (url, builder.header(header::ACCEPT, "text/event-stream"))
        }
        Upstream::Ollama { url, .. } => {
            let url = format!("{url}/api/chat");
            (url.clone(), state.client.post(&url))
        }
    };
    let sent = builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(request.to_string())
        .send()
        .await;
    let upstream = match sent {
        Ok(response) => response,
        Err(e) => {
            let e = error_chain(&e);
            let hint = if url.starts_with("https://") && e.contains("scheme is not http") {
                " (this build of reqwest has no TLS backend: add \"rustls\" to its features)"
            } else {
                ""
            };
            eprintln!("proxy: upstream {url} unreachable: {e}{hint}");
            return json_error(
                StatusCode::BAD_GATEWAY,
                format!("upstream unreachable: {e}{hint}"),
                "upstream_error",
            );
        }
    };
    if !upstream.status().is_success() {
        let status = upstream.status();
        let text = upstream.text().await.unwrap_or_default();
        let text: String = text.chars().take(2000).collect();
        eprintln!("proxy: upstream {url} answered {status}: {text}");
        return json_error(
            StatusCode::BAD_GATEWAY,
            format!("upstream answered {status}: {text}"),
            "upstream_error",
        );
    }

    let id = state.relays.fetch_add(1, Ordering::Relaxed) + 1;
    let format = match state.upstream {
        Upstream::OpenAi { .. } => Format::OpenAiSse,
        Upstream::Ollama { .. } => Format::OllamaNdjson,
    };
    let relay = Relay {
        id,
        format,
        model,
        upstream: upstream.bytes_stream().boxed(),
        buffer: Vec::new(),
        out: VecDeque::new(),
        finished: false,
        events: 0,
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    headers.insert(header::CACHE_CONTROL, "no-cache".parse().unwrap());
    // Tells nginx not to buffer this response (its proxy_buffering would hold tokens back).
    headers.insert("x-accel-buffering", "no".parse().unwrap());
    (headers, Body::from_stream(relay.into_stream())).into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    OpenAiSse,
    OllamaNdjson,
}

/// The state of one relayed stream. It owns the upstream response's byte stream: when hyper drops
/// the response body (the browser went away), this is dropped, and with it the upstream request.
struct Relay {
    id: usize,
    format: Format,
    model: String,
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Upstream bytes not yet parsed into a whole event or line.
    buffer: Vec<u8>,
    /// SSE events ready for the browser.
    out: VecDeque<Bytes>,
    finished: bool,
    events: usize,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.finished {
            eprintln!(
                "proxy: relay #{} dropped after {} events (client went away); the upstream request \
                 is cancelled with it",
                self.id, self.events
            );
        }
    }
}

/// `error` and its sources: reqwest's own message ("error decoding response body") says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn sse_data(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn sse_error(message: &str) -> Bytes {
    let data = json!({ "error": { "message": message, "type": "upstream_error" } });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

impl Relay {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        stream::unfold(self, |mut relay| async move {
            loop {
                if let Some(event) = relay.out.pop_front() {
                    relay.events += 1;
                    return Some((Ok(event), relay));
                }
                if relay.finished {
                    return None;
                }
                match relay.upstream.next().await {
                    Some(Ok(bytes)) => {
                        relay.buffer.extend_from_slice(&bytes);
                        relay.parse();
                    }
                    Some(Err(e)) => {
                        let e = error_chain(&e);
                        eprintln!("proxy: relay #{}: upstream stream failed: {e}", relay.id);
                        relay
                            .out
                            .push_back(sse_error(&format!("upstream stream failed: {e}")));
                        relay.finish();
                    }
                    None => {
                        eprintln!(
                            "proxy: relay #{}: upstream ended without finishing the answer",
                            relay.id
                        );
                        relay
                            .out
                            .push_back(sse_error("upstream ended before the answer was complete"));
                        relay.finish();
                    }
                }
            }
        })
    }

    /// Done with the upstream: drop its stream now (releasing the connection), emit what is queued.
    fn finish(&mut self) {
        self.finished = true;
        self.upstream = stream::empty().boxed();
    }

    fn parse(&mut self) {
        match self.format {
            Format::OpenAiSse => self.parse_sse(),
            Format::OllamaNdjson => self.parse_ndjson(),
        }
    }

    /// Relays each upstream SSE event's `data` as is; stops after `data: [DONE]`.
    fn parse_sse(&mut self) {
        // CR LF and lone CR end lines too; JSON data never contains a raw CR.
        self.buffer.retain(|&b| b != b'\r');
        while let Some(end) = find(&self.buffer, b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if data.is_empty() {
                continue; // a comment or keep-alive
            }
            let data = data.join("\n");
            self.out.push_back(sse_data(&data));
            if data == "[DONE]" {
                self.finish();
                return;
            }
        }
    }

    /// Translates Ollama's NDJSON lines into OpenAI chunks; ends with `data: [DONE]`.
    fn parse_ndjson(&mut self) {
        while let Some(end) = find(&self.buffer, b"\n") {
            let line: Vec<u8> = self.buffer.drain(..end + 1).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let message: Value = match serde_json::from_str(line) {
                Ok(message) => message,
                Err(e) => {
                    self.out
                        .push_back(sse_error(&format!("invalid line from upstream: {e}")));
                    self.finish();
                    return;
                }
            };
            if let Some(error) = message.get("error") {
                let text = error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned);
                self.out.push_back(sse_error(&text));
                self.finish();
                return;
            }
            let content = message["message"]["content"].as_str().unwrap_or_default();
            if !content.is_empty() {
                let delta = json!({ "content": content });
                self.out
                    .push_back(sse_data(&openai_chunk(self.id, &self.model, delta, None)));
            }
            if message["done"].as_bool() == Some(true) {
                let reason = message["done_reason"].as_str().unwrap_or("stop").to_owned();
                let chunk = openai_chunk(self.id, &self.model, json!({}), Some(&reason));
                self.out.push_back(sse_data(&chunk));
                self.out.push_back(sse_data("[DONE]"));
                self.finish();
                return;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One OpenAI `chat.completion.chunk`, fields in OpenAI's order.
fn openai_chunk(id: usize, model: &str, delta: Value, finish_reason: Option<&str>) -> String {
    format!(
        r#"{{"id":"chatcmpl-{id:024}","object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":"fp_mock","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{}}}]}}"#,
        unix_time(),
        Value::String(model.to_owned()),
        finish_reason.map_or(Value::Null, |r| Value::String(r.to_owned())),
    )
}

// ---------------------------------------------------------------------------------------------
// The built-in mock upstream
// ---------------------------------------------------------------------------------------------

/// Counters of the mock's streams, shared with the proxy's `/debug/stats`.
#[derive(Debug, Default)]
pub struct MockStats {
    pub opened: AtomicUsize,
    pub active: AtomicUsize,
    pub completed: AtomicUsize,
    /// Streams dropped before their end: the proxy went away, so the request was cancelled.
    pub cancelled: AtomicUsize,
    /// Streams that broke off on purpose (`"model": "mock-broken"`).
    pub broken: AtomicUsize,
    /// The `Authorization` header of the last request.
    pub last_authorization: Mutex<Option<String>>,
}

impl MockStats {
    pub fn to_json(&self) -> Value {
        json!({
            "opened": self.opened.load(Ordering::SeqCst),
            "active": self.active.load(Ordering::SeqCst),
            "completed": self.completed.load(Ordering::SeqCst),
            "cancelled": self.cancelled.load(Ordering::SeqCst),
            "broken": self.broken.load(Ordering::SeqCst),
        })
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
}

impl MockUpstream {
    /// The OpenAI-style base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Ollama-style URL (`http://127.0.0.1:PORT`).
    pub fn ollama_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct MockState {
    delay: Duration,
    stats: Arc<MockStats>,
}

/// Starts the mock on `127.0.0.1:<ephemeral>`: `POST /v1/chat/completions` (OpenAI SSE) and
/// `POST /api/chat` (Ollama NDJSON), one token every `delay / 2 ..= delay * 3 / 2`.
pub async fn spawn_mock_upstream(delay: Duration) -> MockUpstream {
    let stats = Arc::new(MockStats::default());
    let state = Arc::new(MockState {
        delay,
        stats: stats.clone(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(mock_openai))
        .route("/api/chat", post(mock_ollama))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock upstream");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app));
    MockUpstream { addr, stats }
}

/// What the mock was asked: the model, the answer's tokens, and how it should misbehave.
struct MockRequest {
    /// The stream's number, used in the chunk ids.
    id: usize,
    model: String,
    tokens: Vec<String>,
    finish_reason: &'static str,
}

fn mock_request(body: &[u8], default_model: &str) -> Result<MockRequest, Box<Response>> {
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON: {e}"),
            "invalid_request_error",
        ))
    })?;
    let model = request["model"]
        .as_str()
        .unwrap_or(default_model)
        .to_owned();
    if model == "mock-error" {
        return Err(Box::new(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the mock upstream failed, as asked",
            "server_error",
        )));
    }
    let prompt = request["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
        })
        .unwrap_or("(nothing)");
    let answer = format!(
        "You said: \"{prompt}\". I am the built-in mock model of the tower-gzip llm_proxy example. \
         I stream this answer one token at a time, paced like a real model, as OpenAI-style \
         chat.completion.chunk events. The proxy relays each event to your browser through \
         GzipLayer with compressed SSE, and every token is flushed the moment it is produced."
    );
    let words: Vec<&str> = answer.split(' ').collect();
    let mut tokens: Vec<String> = Vec::new();
    let (count, finish_reason) = match request["max_tokens"].as_u64() {
        Some(max) => (max as usize, "length"),
        None => (words.len(), "stop"),
    };
    for i in 0..count {
        let word = words[i % words.len()];
        tokens.push(if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    Ok(MockRequest {
        id: 0,
        model,
        tokens,
        finish_reason,
    })
}

/// One open mock stream; its drop is how the mock learns the proxy went away.
struct MockStream {
    stats: Arc<MockStats>,
    id: usize,
    sent: usize,
    total: usize,
    done: bool,
    broken: bool,
}

impl MockStream {
    fn open(stats: &Arc<MockStats>, total: usize) -> Self {
        let id = stats.opened.fetch_add(1, Ordering::SeqCst) + 1;
        let active = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
        eprintln!("mock upstream: stream #{id} opened ({total} tokens; active streams: {active})");
        Self {
            stats: stats.clone(),
            id,
            sent: 0,
            total,
            done: false,
            broken: false,
        }
    }
}

impl Drop for MockStream {
    fn drop(&mut self) {
        let active = self.stats.active.fetch_sub(1, Ordering::SeqCst) - 1;
        if self.broken {
            self.stats.broken.fetch_add(1, Ordering::SeqCst);
            eprintln!(
                "mock upstream: stream #{} broke off after {} tokens, as asked (active streams: {active})",
                self.id, self.sent
            );
        } else if self.done {
            self.stats.completed.fetch_add(1, Ordering::SeqCst);
            eprintln!(
                "mock upstream: stream #{} completed ({} tokens; active streams: {active})",
                self.id, self.sent
            );
        } else {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
            eprintln!(
                "mock upstream: stream #{} cancelled after {} of {} tokens (active streams: {active})",
                self.id, self.sent, self.total
            );
        }
    }
}

/// A deterministic 20-60 ms (for 40) pause before token `i`.
fn pause(delay: Duration, i: usize) -> Duration {
    let jitter = (i.wrapping_mul(2_654_435_761) >> 7) % 1001; // 0..=1000
    delay / 2 + delay * jitter as u32 / 1000
}

/// The mock's output, one `Bytes` per event or line; `Err` to break the stream off.
fn mock_stream(
    state: &MockState,
    request: MockRequest,
    render: fn(&MockRequest, Option<&str>, usize) -> String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let delay = state.delay;
    let broken = request.model == "mock-broken";
    let stream = MockStream::open(&state.stats, request.tokens.len());
    let mut request = request;
    request.id = stream.id;
    stream::unfold(
        (stream, request, 0usize),
        move |(mut stream, request, i)| async move {
            if i == usize::MAX || i > request.tokens.len() {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(pause(delay, i)).await;
            }
            if broken && i == 3 {
                // After a pause, so the tokens before it have been written out: hyper drops
                // what it has not written yet when a body fails.
                stream.broken = true;
                let error = std::io::Error::other("the mock upstream broke off, as asked");
                return Some((Err(error), (stream, request, usize::MAX)));
            }
            let item = if i < request.tokens.len() {
                render(&request, Some(&request.tokens[i]), i)
            } else {
                stream.done = true;
                render(&request, None, i)
            };
            stream.sent = (i + 1).min(request.tokens.len());
            Some((Ok(Bytes::from(item)), (stream, request, i + 1)))
        },
    )
}

async fn mock_openai(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *state.stats.last_authorization.lock().unwrap() = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request = match mock_request(&body, "mock-1") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    fn render(request: &MockRequest, token: Option<&str>, _i: usize) -> String {
        match token {
            Some(token) => {
                let chunk = openai_chunk(
                    request.id,
                    &request.model,
                    json!({ "content": token }),
                    None,
                );
                format!("data: {chunk}\n\n")
            }
            None => {
                let last = openai_chunk(
                    request.id,
                    &request.model,
                    json!({}),
                    Some(request.finish_reason),
                );
                format!("data: {last}\n\ndata: [DONE]\n\n")
            }
        }
    }
    let events = mock_stream(&state, request, render);
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

async fn mock_ollama(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let request = match mock_request(&body, "llama3.2") {
        Ok(request) => request,
        Err(response) => return *response,
    };
    fn render(request: &MockRequest, token: Option<&str>, _i: usize) -> String {
        let line = match token {
            Some(token) => json!({
                "model": request.model,
                "created_at": "2024-11-24T20:00:00Z",
                "message": { "role": "assistant", "content": token },
                "done": false,
            }),
            None => json!({
                "model": request.model,
                "created_at": "2024-11-24T20:00:01Z",
                "message": { "role": "assistant", "content": "" },
                "done": true,
                "done_reason": request.finish_reason,
            }),
        };
        format!("{line}\n")
    }
    let lines = mock_stream(&state, request, render);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The chat page
// ---------------------------------------------------------------------------------------------

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tower-gzip LLM proxy</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  #log { display: flex; flex-direction: column; gap: .5rem; margin-bottom: 1rem; }
  .msg { padding: .5rem .75rem; border-radius: .5rem; white-space: pre-wrap; }
  .user { background: #dbeafe; align-self: flex-end; }
  .assistant { background: #f3f4f6; }
  .error { background: #fee2e2; }
  textarea { width: 100%; box-sizing: border-box; font: inherit; }
  #status { color: #666; font-size: .85rem; margin-left: .5rem; }
</style>
</head>
<body>
<h1>LLM proxy behind tower-gzip</h1>
<p>The answer streams from <code>POST /chat/stream</code> as gzip-compressed Server-Sent Events;
each token appears when the model produces it.</p>
<div id="log"></div>
<textarea id="prompt" rows="3" placeholder="Ask something (Ctrl+Enter sends)">Tell me about gzip and token streams.</textarea>
<p><button id="send">Send</button><button id="stop" disabled>Stop</button><span id="status"></span></p>
<script>
"use strict";
const log = document.getElementById("log");
const prompt = document.getElementById("prompt");
const send = document.getElementById("send");
const stop = document.getElementById("stop");
const status = document.getElementById("status");
const messages = [];
let controller = null;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  return div;
}

async function chat() {
  const text = prompt.value.trim();
  if (!text || controller) return;
  prompt.value = "";
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  controller = new AbortController();
  send.disabled = true;
  stop.disabled = false;
  const start = performance.now();
  let tokens = 0, first = null, answer = "";
  const ms = () => (performance.now() - start).toFixed(0) + " ms";
  try {
    const response = await fetch("/chat/stream", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, stream: true }),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error(response.status + ": " + ((error.error && error.error.message) || "request failed"));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    read: for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        const payload = data.join("\n");
        if (payload === "[DONE]") break read;
        const chunk = JSON.parse(payload);
        if (event === "error" || chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = ms();
          tokens += 1;
          answer += delta.content;
          out.textContent = answer;
          status.textContent = tokens + " tokens, first after " + first + ", " + ms();
        }
      }
    }
    messages.push({ role: "assistant", content: answer });
  } catch (e) {
    if (answer) messages.push({ role: "assistant", content: answer });
    const aborted = e.name === "AbortError";
    bubble(aborted ? "assistant" : "error", aborted ? "(stopped)" : String(e.message || e));
  } finally {
    controller = null;
    send.disabled = false;
    stop.disabled = true;
  }
}

send.onclick = chat;
stop.onclick = () => controller && controller.abort();
prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.ctrlKey) chat(); });
</script>
</body>
</html>
"#;
