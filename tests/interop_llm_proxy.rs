//! `examples/llm_proxy.rs`, tested in process: the example file is compiled into this test as a
//! module (`#[path]`), so these tests run the example's own proxy, relay and mock upstream code
//! without spawning `cargo run` or depending on a prebuilt example binary (which `cargo test
//! --tests` does not build).
//!
//! The mock upstream is paced by a timer here (5-15 ms per token), so "token by token" is checked
//! with generous pacing, not lockstep: the first token must be decoded by the client while the
//! upstream is still producing a 150-token answer (about 1.5 s of margin), and every event must
//! be decodable on its own from the gzip stream when it arrives.

#[path = "../examples/llm_proxy.rs"]
mod llm_proxy;

mod interop_support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use interop_support::chromium::Chromium;
use interop_support::WAIT;
use llm_proxy::{proxy_app, spawn_mock_upstream, MockUpstream, Upstream};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The mock's mean pause between tokens in these tests (it varies between half and 1.5 times).
const TOKEN_DELAY: Duration = Duration::from_millis(10);

struct Proxy {
    addr: SocketAddr,
    mock: MockUpstream,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn spawn(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(llm_proxy::serve(listener, app)))
}

/// The example's proxy in front of its mock, as `OpenAI` (`ollama == false`) or Ollama upstream.
async fn start(ollama: bool) -> Proxy {
    let mock = spawn_mock_upstream(TOKEN_DELAY).await;
    let upstream = if ollama {
        Upstream::Ollama {
            url: mock.ollama_url(),
            default_model: "llama3.2".into(),
        }
    } else {
        Upstream::OpenAi {
            base_url: mock.base_url(),
            api_key: Some("sk-test".into()),
            default_model: "mock-1".into(),
        }
    };
    let (addr, task) = spawn(proxy_app(upstream, Some(mock.stats.clone()))).await;
    Proxy { addr, mock, task }
}

/// A client that sees the wire: it asks for gzip itself and decodes with flate2, event by event.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .build()
        .unwrap()
}

async fn post_chat(proxy: &Proxy, body: Value) -> reqwest::Response {
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

    /// The next event as (event type, data), or `None` at the end of the body.
    async fn next_event(&mut self) -> Option<(String, String)> {
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
                return Some((event, data.join("\n")));
            }
            match timeout(WAIT, self.body.next())
                .await
                .expect("the next event arrives in time")
            {
                None => {
                    assert_eq!(
                        self.consumed,
                        self.decoder.get_ref().len(),
                        "the body ended inside an event"
                    );
                    return None;
                }
                Some(Err(e)) => panic!("body error: {e}"),
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

fn content(data: &str) -> Option<String> {
    let chunk: Value = serde_json::from_str(data).expect("each data is JSON");
    assert_eq!(chunk["object"], "chat.completion.chunk");
    chunk["choices"][0]["delta"]["content"]
        .as_str()
        .map(str::to_owned)
}

fn finish_reason(data: &str) -> Value {
    let chunk: Value = serde_json::from_str(data).expect("each data is JSON");
    chunk["choices"][0]["finish_reason"].clone()
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let waited = timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// The answer streams through as gzip SSE, each event decodable on arrival, the first one
/// while the upstream is still generating; the stream ends with the finish chunk and `[DONE]`.
async fn relays_token_by_token(ollama: bool) {
    let proxy = start(ollama).await;
    let stats = proxy.mock.stats.clone();
    let response = post_chat(
        &proxy,
        chat("Hello from the test", json!({"max_tokens": 150})),
    )
    .await;
    let mut events = Events::new(response);

    let (kind, data) = events.next_event().await.expect("a first event");
    assert_eq!(kind, "message");
    assert_eq!(content(&data).as_deref(), Some("You"));
    assert_eq!(
        (
            stats.completed.load(Ordering::SeqCst),
            stats.active.load(Ordering::SeqCst)
        ),
        (0, 1),
        "the first token reached the client while the upstream was still generating"
    );

    let mut answer = "You".to_owned();
    let mut tokens = 1;
    let mut reasons = Vec::new();
    loop {
        let (kind, data) = events
            .next_event()
            .await
            .expect("more events before [DONE]");
        assert_eq!(kind, "message", "unexpected {kind} event: {data}");
        if data == "[DONE]" {
            break;
        }
        match content(&data) {
            Some(token) if !token.is_empty() => {
                answer.push_str(&token);
                tokens += 1;
            }
            _ => reasons.push(finish_reason(&data)),
        }
    }
    assert!(events.next_event().await.is_none(), "nothing after [DONE]");
    let (raw, decoded) = (events.raw_bytes, events.decoder.get_ref().len());
    events.finish();
    assert_eq!(tokens, 150);
    assert_eq!(reasons, [json!("length")]);
    assert!(
        answer.starts_with("You said: \"Hello from the test\". I am the built-in mock model"),
        "{answer}"
    );
    assert!(
        raw * 4 < decoded,
        "compressed SSE should be much smaller: {raw} body bytes for {decoded} bytes of events"
    );
    wait_until("the mock counts the stream as completed", || {
        stats.completed.load(Ordering::SeqCst) == 1 && stats.active.load(Ordering::SeqCst) == 0
    })
    .await;
    if !ollama {
        assert_eq!(
            stats.last_authorization.lock().unwrap().as_deref(),
            Some("Bearer sk-test"),
            "the API key is forwarded as a bearer token"
        );
    }
}

#[tokio::test]
async fn openai_upstream_is_relayed_as_gzip_sse_token_by_token() {
    relays_token_by_token(false).await;
}

#[tokio::test]
async fn ollama_ndjson_upstream_is_translated_to_gzip_openai_sse_token_by_token() {
    relays_token_by_token(true).await;
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

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let proxy = start(false).await;
    let stats = proxy.mock.stats.clone();
    let response = post_chat(
        &proxy,
        chat("A very long answer, please", json!({"max_tokens": 100_000})),
    )
    .await;
    let mut events = Events::new(response);
    for _ in 0..5 {
        let (_, data) = events.next_event().await.unwrap();
        assert!(content(&data).is_some());
    }
    assert_eq!(stats.active.load(Ordering::SeqCst), 1);
    assert_eq!(stats_json(&proxy).await["compressed_streams_open"], 1);

    // The client goes away mid-answer.
    drop(events);

    wait_until("the mock sees its stream cancelled", || {
        stats.active.load(Ordering::SeqCst) == 0 && stats.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(stats.completed.load(Ordering::SeqCst), 0);
    let after = stats_json(&proxy).await;
    assert_eq!(after["compressed_streams_open"], 0, "{after}");
    assert_eq!(after["mock_upstream"]["cancelled"], 1, "{after}");
}

#[tokio::test]
async fn upstream_error_status_becomes_a_502_with_a_json_error() {
    let proxy = start(false).await;
    let response = post_chat(&proxy, chat("Hi", json!({"model": "mock-error"}))).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let error: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("500"), "{message}");
    assert_eq!(error["error"]["type"], "upstream_error");
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
    let (addr, task) = spawn(proxy_app(upstream, None)).await;
    let response = raw_client()
        .post(format!("http://{addr}/chat/stream"))
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
    task.abort();
}

#[tokio::test]
async fn upstream_breaking_off_mid_stream_ends_with_an_error_event_and_a_complete_gzip_body() {
    let proxy = start(false).await;
    let response = post_chat(&proxy, chat("Hi", json!({"model": "mock-broken"}))).await;
    let mut events = Events::new(response);
    for _ in 0..3 {
        let (kind, data) = events.next_event().await.unwrap();
        assert_eq!(kind, "message");
        assert!(content(&data).is_some());
    }
    let (kind, data) = events.next_event().await.expect("an error event");
    assert_eq!(kind, "error");
    let error: Value = serde_json::from_str(&data).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream stream failed"),
        "{data}"
    );
    assert!(events.next_event().await.is_none());
    events.finish();
    assert_eq!(proxy.mock.stats.broken.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_chat_requests_are_rejected_with_400() {
    let proxy = start(false).await;
    for body in ["not json", "[1,2]", r#"{"messages":"hello"}"#] {
        let response = raw_client()
            .post(proxy.url("/chat/stream"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    assert_eq!(proxy.mock.stats.opened.load(Ordering::SeqCst), 0);
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

#[tokio::test]
async fn chromium_chat_page_appends_tokens_while_the_answer_streams() {
    // Paced like a real model (20-60 ms per token): the whole answer takes about 2 s, a generous
    // margin for the first token to show up in the page before the upstream has finished.
    let mock = spawn_mock_upstream(Duration::from_millis(40)).await;
    let stats = mock.stats.clone();
    let upstream = Upstream::OpenAi {
        base_url: mock.base_url(),
        api_key: None,
        default_model: "mock-1".into(),
    };
    let (reports_tx, mut reports) = mpsc::unbounded_channel::<String>();
    let encodings: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = encodings.clone();
    let app = proxy_app(upstream, Some(stats.clone()))
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
    let (addr, task) = spawn(app).await;
    // The page sends no max_tokens: the mock's whole answer, about 55 tokens.
    let browser =
        Chromium::launch(&format!("http://{addr}/driver")).unwrap_or_else(|e| panic!("{e}"));

    let result: Result<(), String> = async {
        let mut texts: Vec<String> = Vec::new();
        let mut first_seen_while_streaming = None;
        let final_text = loop {
            let report = timeout(WAIT, reports.recv())
                .await
                .map_err(|_| format!("no report from the page within {WAIT:?}"))?
                .ok_or("report channel closed")?;
            let (kind, text) = report.split_once('\n').unwrap_or((&report, ""));
            match kind {
                "text" => {
                    if first_seen_while_streaming.is_none() {
                        first_seen_while_streaming = Some(
                            stats.completed.load(Ordering::SeqCst) == 0
                                && stats.active.load(Ordering::SeqCst) == 1,
                        );
                    }
                    if let Some(previous) = texts.last() {
                        if !text.starts_with(previous.as_str()) {
                            return Err(format!(
                                "the answer was rewritten: {previous:?} -> {text:?}"
                            ));
                        }
                    }
                    texts.push(text.to_owned());
                }
                "done" => break text.to_owned(),
                _ => return Err(format!("the page reported {kind}: {text}")),
            }
        };
        let (classes, text) = final_text.split_once('\n').unwrap_or((&final_text, ""));
        if classes != "msg user,msg assistant" {
            return Err(format!("unexpected bubbles {classes:?} (last: {text:?})"));
        }
        if !text.starts_with("You said: \"Hello from Chromium\". I am the built-in mock model")
            || !text.ends_with("the moment it is produced.")
        {
            return Err(format!("unexpected answer {text:?}"));
        }
        if texts.last().map(String::as_str) != Some(text) {
            return Err("the last update differs from the final answer".into());
        }
        if first_seen_while_streaming != Some(true) {
            return Err("the first token appeared only after the upstream had finished".into());
        }
        if texts.len() < 2 {
            return Err(format!(
                "the answer appeared in {} update(s), not token by token",
                texts.len()
            ));
        }
        let encodings = encodings.lock().unwrap().clone();
        if encodings != [Some("gzip".to_owned())] {
            return Err(format!(
                "/chat/stream was sent with content-encoding {encodings:?}"
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e}\n--- end of chromium's log ---\n{}", browser.log_tail());
    }
    drop(browser);
    task.abort();
}
