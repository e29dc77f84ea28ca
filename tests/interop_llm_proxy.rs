//! `examples/llm_proxy.rs`, tested in process: the example file is compiled into this test as a
//! module (`#[path]`), so these tests run the example's own proxy and relay code without spawning
//! `cargo run` or depending on a prebuilt example binary (which `cargo test --tests` does not
//! build).
//!
//! The streaming tests run in lockstep, like the other interop tests: the test plays the model
//! server (an OpenAI-style SSE or Ollama NDJSON upstream on loopback) and produces upstream item
//! `k + 1` only after the client has shown what item `k` must produce: a raw HTTP client that
//! decodes the gzip body with flate2, event by event, or the example's chat page in headless
//! Chromium, whose assistant bubble must show the answer so far. A token held back anywhere (in
//! the relay, the compressor, the server or the client) makes the wait time out and the test
//! fail naming the token; a timeout only detects that failure. The controls run the same steps
//! through the same proxy behind a layer that buffers the response body, as a buffering reverse
//! proxy would, and must fail: token 0 never shows while token 1 is withheld.
//!
//! The example's built-in mock upstream (timer-paced, for running the example offline) is run
//! too, with no timing claims: its whole answer must arrive intact, and its error switch must
//! become a 502.

#[path = "../examples/llm_proxy.rs"]
mod llm_proxy;

mod interop_support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use interop_support::chromium::Chromium;
use interop_support::{answer_tokens, event_data, ollama_lines, openai_chunk_json, WAIT};
use llm_proxy::{proxy_app, spawn_mock_upstream, Upstream};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;

/// The bound of a control's wait for token 0, which is expected to expire (short, to keep the
/// controls fast; the browser gets twice as long).
const CONTROL_WAIT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// The upstream, played by the test
// ---------------------------------------------------------------------------------------------

/// One item of an upstream body: a chunk of bytes, or a failure that breaks the body off.
enum Item {
    Chunk(String),
    Break,
}

/// A request the upstream received, and the sender that feeds its response body: each item sent
/// is written to the proxy as one chunk; dropping the sender ends the body.
struct UpstreamCall {
    path: String,
    headers: HeaderMap,
    body: Value,
    feed: mpsc::Sender<Item>,
}

/// An OpenAI-compatible (`POST /v1/chat/completions`, SSE) and Ollama (`POST /api/chat`, NDJSON)
/// model server on loopback whose answers the test writes item by item. Aborted on drop.
struct FedUpstream {
    addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<UpstreamCall>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FedUpstream {
    async fn start() -> Self {
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let app = Router::new()
            .route("/v1/chat/completions", post(fed_answer))
            .route("/api/chat", post(fed_answer))
            .with_state(calls_tx);
        let (addr, task) = spawn(app).await;
        Self { addr, calls, task }
    }

    fn openai(&self) -> Upstream {
        Upstream::OpenAi {
            base_url: format!("http://{}/v1", self.addr),
            api_key: Some("sk-test".into()),
            default_model: "gpt-4o-mini".into(),
        }
    }

    fn ollama(&self) -> Upstream {
        Upstream::Ollama {
            url: format!("http://{}", self.addr),
            default_model: "llama3.2".into(),
        }
    }

    /// The next request the proxy sent upstream.
    async fn next_call(&mut self) -> UpstreamCall {
        timeout(WAIT, self.calls.recv())
            .await
            .expect("the proxy sends the chat request upstream")
            .expect("the upstream runs")
    }
}

async fn fed_answer(
    State(calls): State<mpsc::UnboundedSender<UpstreamCall>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (feed, items) = mpsc::channel::<Item>(4);
    let path = uri.path().to_owned();
    let content_type = if path == "/api/chat" {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    let _ = calls.send(UpstreamCall {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        feed,
    });
    let body = ReceiverStream::new(items).map(|item| match item {
        Item::Chunk(text) => Ok(Bytes::from(text)),
        Item::Break => Err(std::io::Error::other(
            "the test broke the upstream body off",
        )),
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------------

struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(app: Router) -> Self {
        let (addr, task) = spawn(app).await;
        Self { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn spawn(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(llm_proxy::serve(listener, app)))
}

/// Control: the response head passes at once, but the body is held until it ends and then sent
/// whole, as a reverse proxy with response buffering (nginx's `proxy_buffering on`) would. The
/// lockstep checks must fail behind it.
async fn hold_body_until_end(request: Request, next: Next) -> Response {
    let (head, body) = next.run(request).await.into_parts();
    let whole = futures_util::stream::once(axum::body::to_bytes(body, usize::MAX));
    Response::from_parts(head, Body::from_stream(whole))
}

/// Where the proxy under test sends its responses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    /// Through [`hold_body_until_end`] (the controls).
    Buffering,
}

fn proxy_routes(upstream: Upstream, path: Path) -> Router {
    let app = proxy_app(upstream, None);
    match path {
        Path::Direct => app,
        Path::Buffering => app.layer(middleware::from_fn(hold_body_until_end)),
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client: gzip decoded with flate2, event by event
// ---------------------------------------------------------------------------------------------

/// A client that sees the wire: it asks for gzip itself and decodes with flate2.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .build()
        .unwrap()
}

async fn post_chat(proxy: &Proxy, body: &Value) -> reqwest::Response {
    timeout(
        WAIT,
        raw_client()
            .post(proxy.url("/chat/stream"))
            .header("content-type", "application/json")
            .header("accept-encoding", "gzip")
            .body(body.to_string())
            .send(),
    )
    .await
    .expect("the response head arrives")
    .expect("the request succeeds")
}

fn chat(prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "messages": [{ "role": "user", "content": prompt }],
        "stream": true,
    });
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    body
}

/// Reads SSE events from a gzip body: each `next_event` decodes what has arrived so far and
/// returns the next complete event, without waiting for the end of the stream.
struct Events {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: flate2::write::GzDecoder<Vec<u8>>,
    consumed: usize,
    raw_bytes: usize,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(
            headers.get("content-encoding").map(|v| v.to_str().unwrap()),
            Some("gzip"),
            "compress_sse(true): the event stream is gzip on the wire"
        );
        assert_eq!(headers["x-accel-buffering"], "no");
        assert!(headers.get("content-length").is_none());
        Self {
            body: response.bytes_stream().boxed(),
            decoder: flate2::write::GzDecoder::new(Vec::new()),
            consumed: 0,
            raw_bytes: 0,
        }
    }

    /// The next event as (event type, data), `None` at the end of the body, or `Err` when no
    /// complete event could be decoded within `wait`.
    async fn next_event(&mut self, wait: Duration) -> Result<Option<(String, String)>, String> {
        loop {
            let decoded = &self.decoder.get_ref()[self.consumed..];
            if let Some(end) = decoded.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(decoded[..end].to_vec()).expect("UTF-8 events");
                self.consumed += end + 2;
                let mut event = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        event = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    }
                }
                return Ok(Some((event, data.join("\n"))));
            }
            let next = timeout(wait, self.body.next()).await.map_err(|_| {
                format!(
                    "no complete event decoded within {wait:?} ({} bytes received, {} decoded)",
                    self.raw_bytes,
                    self.decoder.get_ref().len()
                )
            })?;
            match next {
                None => {
                    if self.consumed != self.decoder.get_ref().len() {
                        return Err("the body ended inside an event".into());
                    }
                    return Ok(None);
                }
                Some(Err(e)) => return Err(format!("body error: {e}")),
                Some(Ok(bytes)) => {
                    self.raw_bytes += bytes.len();
                    self.decoder.write_all(&bytes).unwrap();
                    self.decoder.flush().unwrap();
                }
            }
        }
    }

    /// The body ended, as one complete gzip member.
    fn finish(self) {
        self.decoder
            .finish()
            .expect("the gzip member is complete (trailer written)");
    }
}

fn chunk(data: &str) -> Value {
    let chunk: Value = serde_json::from_str(data).expect("each data is JSON");
    assert_eq!(chunk["object"], "chat.completion.chunk");
    chunk
}

/// What the client must show for one upstream item.
#[derive(Debug)]
enum Expect {
    /// An event whose data is exactly this (an OpenAI upstream's events are relayed as they are).
    Data(String),
    /// A chunk carrying this token (the proxy's own chunk, translated from Ollama).
    Token(String),
    /// The final chunk, with this finish reason.
    Finish(&'static str),
    /// `data: [DONE]`.
    Done,
}

impl Expect {
    fn check(&self, kind: &str, data: &str) -> Result<(), String> {
        if kind != "message" {
            return Err(format!("a {kind} event: {data}"));
        }
        let ok = match self {
            Expect::Data(expected) => data == expected,
            Expect::Token(token) => {
                let chunk = chunk(data);
                chunk["choices"][0]["delta"]["content"] == token.as_str()
                    && chunk["model"] == "llama3.2"
            }
            Expect::Finish(reason) => {
                let chunk = chunk(data);
                chunk["choices"][0]["finish_reason"] == *reason
                    && chunk["choices"][0]["delta"] == json!({})
            }
            Expect::Done => data == "[DONE]",
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {data}"))
        }
    }
}

/// An OpenAI upstream's answer: one SSE event per token, the finish chunk, `[DONE]`; and what
/// the client must show for each.
fn openai_script(tokens: &[String], reason: &'static str) -> Vec<(String, Vec<Expect>)> {
    let mut events: Vec<String> = tokens
        .iter()
        .map(|token| format!("data: {}\n\n", openai_chunk_json(token)))
        .collect();
    let last = openai_chunk_json("").replace(
        r#""delta":{"content":""},"logprobs":null,"finish_reason":null"#,
        &format!(r#""delta":{{}},"logprobs":null,"finish_reason":"{reason}""#),
    );
    assert!(last.contains(r#""finish_reason":""#), "{last}");
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".to_owned());
    events
        .into_iter()
        .map(|event| {
            let data = event_data(&event).to_owned();
            (event, vec![Expect::Data(data)])
        })
        .collect()
}

/// An Ollama upstream's answer: one NDJSON line per token, then the `done` line (which the proxy
/// turns into the finish chunk and `[DONE]`).
fn ollama_script(tokens: &[String]) -> Vec<(String, Vec<Expect>)> {
    let lines = ollama_lines(tokens);
    let (done, token_lines) = lines.split_last().unwrap();
    let mut script: Vec<(String, Vec<Expect>)> = token_lines
        .iter()
        .zip(tokens)
        .map(|(line, token)| (line.clone(), vec![Expect::Token(token.clone())]))
        .collect();
    script.push((done.clone(), vec![Expect::Finish("stop"), Expect::Done]));
    script
}

/// Feeds `script` upstream in lockstep: item `k + 1` only after the client decoded every event
/// item `k` must produce. Each wait is bounded by `wait`; reaching it fails, naming the item.
async fn lockstep(
    feed: &mpsc::Sender<Item>,
    events: &mut Events,
    script: &[(String, Vec<Expect>)],
    wait: Duration,
) -> Result<(), String> {
    for (k, (item, expects)) in script.iter().enumerate() {
        feed.send(Item::Chunk(item.clone()))
            .await
            .map_err(|_| format!("the proxy dropped the upstream answer before item {k}"))?;
        for expect in expects {
            match events.next_event(wait).await {
                Err(e) => {
                    return Err(format!(
                        "upstream item {k} was produced but the client did not show it (item \
                         {} is withheld until it does): {e}",
                        k + 1
                    ))
                }
                Ok(None) => return Err(format!("the response ended at upstream item {k}")),
                Ok(Some((kind, data))) => expect
                    .check(&kind, &data)
                    .map_err(|e| format!("upstream item {k}: {e}"))?,
            }
        }
    }
    Ok(())
}

/// The answer streams through as gzip SSE in lockstep, token by token, and ends with the finish
/// chunk, `[DONE]` and a complete gzip member; the request went upstream as the client sent it,
/// completed with the defaults.
async fn relays_in_lockstep(ollama: bool) {
    let mut upstream = FedUpstream::start().await;
    let target = if ollama {
        upstream.ollama()
    } else {
        upstream.openai()
    };
    let proxy = Proxy::start(proxy_routes(target, Path::Direct)).await;
    let request = chat("Hello from the test", json!({"max_tokens": 150}));
    let mut events = Events::new(post_chat(&proxy, &request).await);
    let call = upstream.next_call().await;

    let mut expected_request = request.clone();
    let headers = &call.headers;
    if ollama {
        assert_eq!(call.path, "/api/chat");
        expected_request["model"] = json!("llama3.2");
        assert!(headers.get("authorization").is_none());
    } else {
        assert_eq!(call.path, "/v1/chat/completions");
        expected_request["model"] = json!("gpt-4o-mini");
        assert_eq!(headers["authorization"], "Bearer sk-test");
        assert_eq!(headers["accept"], "text/event-stream");
    }
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        call.body, expected_request,
        "the request forwarded upstream"
    );

    let tokens = answer_tokens();
    let script = if ollama {
        ollama_script(&tokens)
    } else {
        openai_script(&tokens, "stop")
    };
    if let Err(e) = lockstep(&call.feed, &mut events, &script, WAIT).await {
        panic!("{e}");
    }
    drop(call.feed);
    let end = events.next_event(WAIT).await;
    assert_eq!(end, Ok(None), "nothing after [DONE]");
    let (raw, decoded) = (events.raw_bytes, events.decoder.get_ref().len());
    events.finish();
    assert!(
        raw * 4 < decoded,
        "compressed SSE should be much smaller: {raw} body bytes for {decoded} bytes of events"
    );
}

#[tokio::test]
async fn openai_upstream_is_relayed_as_gzip_sse_in_lockstep() {
    relays_in_lockstep(false).await;
}

#[tokio::test]
async fn ollama_ndjson_upstream_is_translated_to_gzip_openai_sse_in_lockstep() {
    relays_in_lockstep(true).await;
}

/// Control: the same steps through a proxy whose response body is buffered must fail, because
/// token 0 never shows while token 1 is withheld. Then the rest of the answer is produced and
/// arrives whole, so the failure was the buffering, not a broken proxy.
#[tokio::test]
async fn control_lockstep_fails_when_the_proxy_buffers() {
    let mut upstream = FedUpstream::start().await;
    let proxy = Proxy::start(proxy_routes(upstream.openai(), Path::Buffering)).await;
    let mut events = Events::new(post_chat(&proxy, &chat("Hi", json!({}))).await);
    let call = upstream.next_call().await;
    let script = openai_script(&answer_tokens(), "stop");

    let error = lockstep(&call.feed, &mut events, &script, CONTROL_WAIT)
        .await
        .expect_err("a buffered body must fail the lockstep check");
    assert!(
        error.starts_with("upstream item 0 was produced but the client did not show it"),
        "unexpected failure: {error}"
    );

    for (item, _) in &script[1..] {
        call.feed.send(Item::Chunk(item.clone())).await.unwrap();
    }
    drop(call.feed);
    for (k, (_, expects)) in script.iter().enumerate() {
        let (kind, data) = events.next_event(WAIT).await.unwrap().expect("an event");
        expects[0]
            .check(&kind, &data)
            .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    assert_eq!(events.next_event(WAIT).await, Ok(None));
    events.finish();
}

async fn stats_json(proxy: &Proxy) -> Value {
    let text = raw_client()
        .get(proxy.url("/debug/stats"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Polls `condition` until it holds; reaching [`WAIT`] fails the test.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    let waited = timeout(WAIT, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let mut upstream = FedUpstream::start().await;
    let proxy = Proxy::start(proxy_routes(upstream.openai(), Path::Direct)).await;
    let request = chat("A very long answer, please", json!({}));
    let mut events = Events::new(post_chat(&proxy, &request).await);
    let call = upstream.next_call().await;
    let script = openai_script(&answer_tokens(), "stop");
    if let Err(e) = lockstep(&call.feed, &mut events, &script[..5], WAIT).await {
        panic!("{e}");
    }
    let open = stats_json(&proxy).await;
    assert_eq!(open["compressed_streams_open"], 1, "{open}");
    assert!(
        !call.feed.is_closed(),
        "the upstream answer is still wanted"
    );

    // The client goes away mid-answer: the proxy drops its upstream request, which closes the
    // upstream's response body (the receiving end of the feed).
    drop(events);
    timeout(WAIT, call.feed.closed())
        .await
        .expect("the upstream request is cancelled when the client goes away");
    wait_until("the compressed stream is released", || async {
        stats_json(&proxy).await["compressed_streams_open"] == 0
    })
    .await;
}

/// The upstream breaks off after three tokens, each shown by the client in lockstep before the
/// next was produced: the client gets an `error` event and a complete gzip body.
#[tokio::test]
async fn upstream_breaking_off_mid_stream_ends_with_an_error_event_and_a_complete_gzip_body() {
    let mut upstream = FedUpstream::start().await;
    let proxy = Proxy::start(proxy_routes(upstream.openai(), Path::Direct)).await;
    let mut events = Events::new(post_chat(&proxy, &chat("Hi", json!({}))).await);
    let call = upstream.next_call().await;
    let script = openai_script(&answer_tokens(), "stop");
    if let Err(e) = lockstep(&call.feed, &mut events, &script[..3], WAIT).await {
        panic!("{e}");
    }
    call.feed.send(Item::Break).await.unwrap();
    let (kind, data) = events
        .next_event(WAIT)
        .await
        .unwrap()
        .expect("an error event");
    assert_eq!(kind, "error");
    let error: Value = serde_json::from_str(&data).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream stream failed"),
        "{data}"
    );
    assert_eq!(error["error"]["type"], "upstream_error");
    assert_eq!(events.next_event(WAIT).await, Ok(None));
    events.finish();
}

#[tokio::test]
async fn invalid_chat_requests_are_rejected_with_400_and_never_sent_upstream() {
    let mut upstream = FedUpstream::start().await;
    let proxy = Proxy::start(proxy_routes(upstream.openai(), Path::Direct)).await;
    for body in ["not json", "[1,2]", r#"{"messages":"hello"}"#] {
        let response = raw_client()
            .post(proxy.url("/chat/stream"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
    // Every response came back, so any upstream request would have been made by now.
    assert!(
        upstream.calls.try_recv().is_err(),
        "a request went upstream"
    );
}

#[tokio::test]
async fn unreachable_upstream_becomes_a_502_with_a_json_error() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::OpenAi {
        base_url: format!("http://{closed}/v1"),
        api_key: None,
        default_model: "gpt-4o-mini".into(),
    };
    let proxy = Proxy::start(proxy_routes(upstream, Path::Direct)).await;
    let response = raw_client()
        .post(proxy.url("/chat/stream"))
        .body(chat("Hi", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let error: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream unreachable"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// The example's built-in mock upstream, as `cargo run --example llm_proxy` runs it
// ---------------------------------------------------------------------------------------------

/// The example with its timer-paced mock: the whole answer arrives intact as gzip SSE and the
/// mock counts its stream as completed. No timing is claimed (the lockstep tests above do that).
#[tokio::test]
async fn builtin_mock_answer_arrives_whole_as_gzip_sse() {
    let mock = spawn_mock_upstream(Duration::from_millis(2)).await;
    let stats = mock.stats.clone();
    let upstream = Upstream::OpenAi {
        base_url: mock.base_url(),
        api_key: Some("sk-mock".into()),
        default_model: "mock-1".into(),
    };
    let proxy = Proxy::start(proxy_app(upstream, Some(stats.clone()))).await;
    let request = chat("Hello from the test", json!({"max_tokens": 40}));
    let mut events = Events::new(post_chat(&proxy, &request).await);
    let mut answer = String::new();
    let mut tokens = 0;
    let mut reasons = Vec::new();
    loop {
        let (kind, data) = events
            .next_event(WAIT)
            .await
            .unwrap()
            .expect("more events before [DONE]");
        assert_eq!(kind, "message", "{data}");
        if data == "[DONE]" {
            break;
        }
        let chunk = chunk(&data);
        match chunk["choices"][0]["delta"]["content"].as_str() {
            Some(token) => {
                answer.push_str(token);
                tokens += 1;
            }
            None => reasons.push(chunk["choices"][0]["finish_reason"].clone()),
        }
    }
    assert_eq!(events.next_event(WAIT).await, Ok(None));
    events.finish();
    assert_eq!(tokens, 40);
    assert_eq!(reasons, [json!("length")]);
    assert!(
        answer.starts_with("You said: \"Hello from the test\". I am the built-in mock model"),
        "{answer}"
    );
    assert_eq!(
        stats.last_authorization.lock().unwrap().as_deref(),
        Some("Bearer sk-mock"),
        "the API key is forwarded as a bearer token"
    );
    wait_until("the mock counts its stream as completed", || async {
        stats.completed.load(Ordering::SeqCst) == 1 && stats.active.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn upstream_error_status_becomes_a_502_with_a_json_error() {
    let mock = spawn_mock_upstream(Duration::from_millis(2)).await;
    let upstream = Upstream::OpenAi {
        base_url: mock.base_url(),
        api_key: None,
        default_model: "mock-1".into(),
    };
    let proxy = Proxy::start(proxy_app(upstream, Some(mock.stats.clone()))).await;
    let response = post_chat(&proxy, &chat("Hi", json!({"model": "mock-error"}))).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let error: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("500"), "{message}");
    assert_eq!(error["error"]["type"], "upstream_error");
}

// ---------------------------------------------------------------------------------------------
// The chat page in a real browser
// ---------------------------------------------------------------------------------------------

/// Loads the example's chat page in an iframe (same origin), types a prompt, clicks Send, and
/// reports every change of the assistant's bubble, then the final state.
const DRIVER: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>driver</title></head>
<body>
<iframe id="app" src="/" style="width: 800px; height: 600px"></iframe>
<script>
"use strict";
let chain = Promise.resolve();
function report(kind, text) {
  const body = kind + "\n" + text;
  chain = chain.then(() => fetch("/report", { method: "POST", body }).then(() => {}, () => {}));
}
window.addEventListener("error", (e) => report("error", "uncaught: " + e.message));
const frame = document.getElementById("app");
frame.onload = () => {
  const doc = frame.contentDocument;
  frame.contentWindow.addEventListener("error", (e) => report("error", "page: " + e.message));
  const send = doc.getElementById("send");
  let last = null;
  let started = false;
  const observer = new MutationObserver(() => {
    const bubbles = doc.querySelectorAll("#log .msg");
    const bubble = bubbles[bubbles.length - 1];
    if (bubble && bubble.classList.contains("assistant") && bubble.textContent !== last) {
      last = bubble.textContent;
      if (last) report("text", last);
    }
    if (send.disabled) started = true;
    if (started && !send.disabled) {
      observer.disconnect();
      const classes = Array.from(bubbles).map((b) => b.className).join(",");
      report("done", classes + "\n" + (bubble ? bubble.textContent : ""));
    }
  });
  observer.observe(doc.body, { subtree: true, childList: true, characterData: true, attributes: true });
  doc.getElementById("prompt").value = "Hello from Chromium";
  send.click();
};
</script>
</body></html>
"##;

/// One browser at a time: Chromium is heavy for a 2-core machine, and lockstep needs no
/// parallelism.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The proxy (and the driver page) with Chromium showing the driver, which sends one chat.
struct ChatPage {
    reports: mpsc::UnboundedReceiver<String>,
    /// `Content-Encoding` of each `/chat/stream` response, as sent on the wire.
    encodings: Arc<Mutex<Vec<Option<String>>>>,
    browser: Chromium,
    _proxy: Proxy,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl ChatPage {
    async fn open(upstream: Upstream, path: Path) -> Self {
        let lock = BROWSER.lock().await;
        let (reports_tx, reports) = mpsc::unbounded_channel::<String>();
        let encodings: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = encodings.clone();
        let app = proxy_routes(upstream, path)
            .merge(
                Router::new()
                    .route("/driver", get(|| async { axum::response::Html(DRIVER) }))
                    .route(
                        "/report",
                        post(move |body: String| async move {
                            let _ = reports_tx.send(body);
                        }),
                    ),
            )
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                let seen = seen.clone();
                async move {
                    let chat = request.uri().path() == "/chat/stream";
                    let response: Response = next.run(request).await;
                    if chat {
                        let encoding = response.headers().get("content-encoding");
                        seen.lock()
                            .unwrap()
                            .push(encoding.map(|v| v.to_str().unwrap().to_owned()));
                    }
                    response
                }
            }));
        let proxy = Proxy::start(app).await;
        let browser = Chromium::launch(&proxy.url("/driver")).unwrap_or_else(|e| panic!("{e}"));
        Self {
            reports,
            encodings,
            browser,
            _proxy: proxy,
            _one_at_a_time: lock,
        }
    }

    /// The next report as (kind, text); a page error fails.
    async fn next_report(&mut self, wait: Duration) -> Result<(String, String), String> {
        let report = timeout(wait, self.reports.recv())
            .await
            .map_err(|_| format!("no report from the page within {wait:?}"))?
            .ok_or("the report channel closed")?;
        let (kind, text) = report.split_once('\n').unwrap_or((&report, ""));
        if kind == "error" {
            return Err(format!("the page reported an error: {text}"));
        }
        Ok((kind.to_owned(), text.to_owned()))
    }

    /// Fails the test with `result`'s error and the end of Chromium's log.
    fn verdict(self, result: Result<(), String>) {
        if let Err(e) = result {
            panic!(
                "{e}\n--- end of chromium's log ---\n{}",
                self.browser.log_tail()
            );
        }
    }
}

fn openai_event(token: &str) -> Item {
    Item::Chunk(format!("data: {}\n\n", openai_chunk_json(token)))
}

/// The end of an OpenAI answer: the finish chunk and `[DONE]`.
fn openai_end() -> Vec<Item> {
    openai_script(&[], "stop")
        .into_iter()
        .map(|(event, _)| Item::Chunk(event))
        .collect()
}

/// Feeds `tokens` upstream in lockstep with the page: token `k + 1` only after the assistant's
/// bubble showed the answer up to token `k`. Each wait is bounded by `wait`.
async fn page_lockstep(
    page: &mut ChatPage,
    feed: &mpsc::Sender<Item>,
    tokens: &[String],
    wait: Duration,
) -> Result<(), String> {
    let mut shown = String::new();
    for (k, token) in tokens.iter().enumerate() {
        feed.send(openai_event(token))
            .await
            .map_err(|_| format!("the proxy dropped the upstream answer before token {k}"))?;
        shown.push_str(token);
        let (kind, text) = page.next_report(wait).await.map_err(|e| {
            format!(
                "token {k} ({token:?}) was produced but the page did not show it (token {} is \
                 withheld until it does): {e}",
                k + 1
            )
        })?;
        if kind != "text" || text != shown {
            return Err(format!(
                "after token {k}: the page reported {kind} {text:?}, expected the answer so far \
                 {shown:?}"
            ));
        }
    }
    Ok(())
}

/// Ends the answer and waits for the page to finish: the bubbles and the final answer.
async fn page_finishes(
    page: &mut ChatPage,
    feed: mpsc::Sender<Item>,
    answer: &str,
) -> Result<(), String> {
    for item in openai_end() {
        feed.send(item)
            .await
            .map_err(|_| "the proxy dropped the upstream answer before its end".to_string())?;
    }
    drop(feed);
    let final_text = loop {
        match page.next_report(WAIT).await? {
            (kind, text) if kind == "done" => break text,
            // Text changes that arrived together (the controls) are reported as they come.
            (kind, _) if kind == "text" => {}
            (kind, text) => return Err(format!("the page reported {kind}: {text}")),
        }
    };
    let (classes, text) = final_text.split_once('\n').unwrap_or((&final_text, ""));
    if classes != "msg user,msg assistant" || text != answer {
        return Err(format!(
            "the page ended with bubbles {classes:?} and answer {text:?}, expected {answer:?}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn chromium_chat_page_shows_each_token_before_the_next_is_produced() {
    let mut upstream = FedUpstream::start().await;
    let mut page = ChatPage::open(upstream.openai(), Path::Direct).await;
    let call = upstream.next_call().await;
    let result = async {
        let expected = json!({
            "messages": [{ "role": "user", "content": "Hello from Chromium" }],
            "stream": true,
            "model": "gpt-4o-mini",
        });
        if call.body != expected {
            return Err(format!("the page's request went upstream as {}", call.body));
        }
        let tokens = answer_tokens();
        page_lockstep(&mut page, &call.feed, &tokens, WAIT).await?;
        page_finishes(&mut page, call.feed, &tokens.concat()).await?;
        let encodings = page.encodings.lock().unwrap().clone();
        if encodings != [Some("gzip".to_owned())] {
            return Err(format!(
                "/chat/stream was sent with content-encoding {encodings:?}"
            ));
        }
        Ok(())
    }
    .await;
    page.verdict(result);
}

/// Control: behind a proxy that buffers the response body, the page cannot show token 0 while
/// token 1 is withheld, so the lockstep check fails; once the answer ends, the page shows it
/// whole (the failure was the buffering, not a broken page).
#[tokio::test]
async fn control_chromium_lockstep_fails_when_the_proxy_buffers() {
    let mut upstream = FedUpstream::start().await;
    let mut page = ChatPage::open(upstream.openai(), Path::Buffering).await;
    let call = upstream.next_call().await;
    let result = async {
        let tokens = answer_tokens();
        // Only the failure is expected here, so a short bound keeps the test fast.
        match page_lockstep(&mut page, &call.feed, &tokens, CONTROL_WAIT * 2).await {
            Err(e) if e.starts_with("token 0 ") && e.contains("no report from the page") => {}
            other => return Err(format!("the buffered token 0 reached the page: {other:?}")),
        }
        for token in &tokens[1..] {
            call.feed.send(openai_event(token)).await.unwrap();
        }
        page_finishes(&mut page, call.feed, &tokens.concat()).await
    }
    .await;
    page.verdict(result);
}
