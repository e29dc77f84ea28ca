//! LLM-style token streaming behind `tower_gzip::GzipLayer`, with an axum 0.8 server.
//!
//! Every route is behind a `GzipLayer`, and streamed responses still reach the client token by
//! token: the compressor is flushed whenever the handler pauses between tokens.
//!
//! | route         | what it shows                                                            |
//! |---------------|--------------------------------------------------------------------------|
//! | `/`           | an HTML page that reads `/sse` (or `/sse-gzip`) with `EventSource` and `/ndjson` with `fetch`, printing each token with its arrival time |
//! | `/sse`        | Server-Sent Events with OpenAI-style chat-completion chunks; not compressed (SSE is on the default skip list) |
//! | `/sse-gzip`   | the same events behind `GzipLayer::new().compress_sse(true)`: compressed, each event still on time |
//! | `/ndjson`     | `application/x-ndjson`, one JSON line per token; compressed by default and flushed when the handler stalls |
//! | `/large.json` | a ~1 MB JSON document, compressed                                        |
//!
//! Run it with:
//!
//! ```text
//! cargo run --example sse
//! ```
//!
//! then open <http://127.0.0.1:3000/> or use the `curl` commands it prints. Environment variables:
//! `PORT` (default 3000), `ADDR` (a full socket address, overrides `PORT`, e.g. `0.0.0.0:8080`) and
//! `TOKEN_DELAY_MS` (pause between tokens, default 150).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use tower_gzip::GzipLayer;

/// The "model output": about 40 tokens, streamed one at a time.
const TOKENS: &[&str] = &[
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    " Meanwhile",
    ",",
    " the",
    " server",
    " compresses",
    " every",
    " token",
    " with",
    " gzip",
    " and",
    " flushes",
    " the",
    " compressor",
    " whenever",
    " the",
    " handler",
    " pauses",
    ",",
    " so",
    " each",
    " word",
    " reaches",
    " your",
    " screen",
    " the",
    " moment",
    " it",
    " is",
    " generated",
    ".",
];

#[derive(Clone)]
struct AppState {
    token_delay: Duration,
    large_json: Bytes,
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = match std::env::var("ADDR") {
        Ok(addr) => addr
            .parse()
            .expect("ADDR must be a socket address like 127.0.0.1:3000"),
        Err(_) => {
            let port = std::env::var("PORT")
                .ok()
                .map(|port| port.parse::<u16>().expect("PORT must be a port number"))
                .unwrap_or(3000);
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    let token_delay = Duration::from_millis(
        std::env::var("TOKEN_DELAY_MS")
            .ok()
            .map(|ms| {
                ms.parse()
                    .expect("TOKEN_DELAY_MS must be a number of milliseconds")
            })
            .unwrap_or(150),
    );

    let state = Arc::new(AppState {
        token_delay,
        large_json: large_json(),
    });

    // The default layer: compresses HTML, JSON and NDJSON, leaves `text/event-stream` alone.
    let default_routes = Router::new()
        .route("/", get(index))
        .route("/sse", get(sse))
        .route("/ndjson", get(ndjson))
        .route("/large.json", get(large))
        .layer(GzipLayer::new());

    // Opt in to compressed Server-Sent Events for this route only.
    let gzip_sse_routes = Router::new()
        .route("/sse-gzip", get(sse))
        .layer(GzipLayer::new().compress_sse(true));

    let app = default_routes.merge(gzip_sse_routes).with_state(state);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("failed to bind {addr}: {err}"))
        // Small writes (one token each) should not wait for Nagle's algorithm.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });

    let url = format!("http://{addr}");
    println!("tower-gzip SSE example listening on {url}");
    println!("  open {url}/ in a browser");
    println!("  curl -N --compressed {url}/sse          # SSE, not compressed (default skip list)");
    println!("  curl -N --compressed {url}/sse-gzip     # SSE compressed, still token by token");
    println!("  curl -N --compressed {url}/ndjson       # NDJSON, gzip, flushed per token");
    println!("  curl -sN --compressed -D - {url}/ndjson # the same, with the response headers");
    println!("  # raw gzip bytes on the wire, with arrival times (one small frame per token):");
    println!(
        "  curl -sN -H 'accept-encoding: gzip' --trace-time --trace-ascii - -o /dev/null {url}/ndjson | grep --line-buffered 'Recv data'"
    );
    println!(
        "  curl --compressed -s -o /dev/null -w '%{{size_download}} bytes\\n' {url}/large.json"
    );
    println!("token delay: {} ms", token_delay.as_millis());

    axum::serve(listener, app).await.unwrap();
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// The tokens, one per `delay` (the first right away).
fn tokens(delay: Duration) -> impl Stream<Item = &'static str> {
    stream::unfold(0usize, move |i| async move {
        let token = TOKENS.get(i)?;
        if i > 0 {
            tokio::time::sleep(delay).await;
        }
        Some((*token, i + 1))
    })
}

/// Escapes `text` as the contents of a JSON string.
fn json_escape(text: &str) -> String {
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

/// `GET /sse` and `GET /sse-gzip`: OpenAI-style chat-completion chunks, then `data: [DONE]`.
async fn sse(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let delay = state.token_delay;
    let chunks = tokens(delay).map(|token| {
        let json = format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"{}"}}}}]}}"#,
            json_escape(token)
        );
        Ok(Event::default().data(json))
    });
    let done = stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok(Event::default().data("[DONE]"))
    });
    Sse::new(chunks.chain(done)).keep_alive(KeepAlive::default())
}

/// `GET /ndjson`: one JSON object per line and per token.
async fn ndjson(State(state): State<Arc<AppState>>) -> Response {
    let delay = state.token_delay;
    let lines = tokens(delay).enumerate().map(|(index, token)| {
        Ok::<_, Infallible>(format!(
            "{{\"index\":{index},\"token\":\"{}\"}}\n",
            json_escape(token)
        ))
    });
    let done = stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok("{\"done\":true}\n".to_owned())
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines.chain(done)),
    )
        .into_response()
}

/// `GET /large.json`: about 1 MB of JSON, generated once at startup.
async fn large(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.large_json.clone(),
    )
        .into_response()
}

fn large_json() -> Bytes {
    let mut json = String::from("{\"items\":[");
    let mut id = 0u32;
    while json.len() < 1_000_000 {
        if id > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            r#"{{"id":{id},"name":"item-{id}","price":{}.{:02},"in_stock":{},"tags":["{}","{}"],"description":"Item number {id}, generated by the tower-gzip SSE example."}}"#,
            id % 997,
            id % 100,
            id % 3 != 0,
            TOKENS[id as usize % TOKENS.len()].trim(),
            TOKENS[(id as usize * 7) % TOKENS.len()].trim(),
        );
        id += 1;
    }
    json.push_str("]}");
    Bytes::from(json)
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tower-gzip streaming demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
  .out { font-size: 1.2rem; min-height: 2rem; padding: .5rem; background: #f4f4f4; white-space: pre-wrap; }
  .log { font-family: ui-monospace, monospace; font-size: .85rem; height: 16rem; overflow: auto;
         background: #111; color: #ddd; padding: .5rem; white-space: pre; }
  button { margin-right: .5rem; }
</style>
</head>
<body>
<h1>tower-gzip: streamed responses, compressed, never delayed</h1>
<p>Each token below is printed the moment it arrives, with the time since the request started.
Check the response headers in your browser's network tab: <code>/sse-gzip</code> and
<code>/ndjson</code> are sent with <code>content-encoding: gzip</code>.</p>

<h2>Server-Sent Events (EventSource)</h2>
<button id="sse">Stream /sse (not compressed)</button>
<button id="sse-gzip">Stream /sse-gzip (gzip)</button>
<div id="sse-out" class="out"></div>
<div id="sse-log" class="log"></div>

<h2>NDJSON (fetch + ReadableStream)</h2>
<button id="ndjson">Stream /ndjson (gzip)</button>
<div id="ndjson-out" class="out"></div>
<div id="ndjson-log" class="log"></div>

<script>
function stamp(start) {
  return ("+" + (performance.now() - start).toFixed(0) + " ms").padStart(10);
}
function logLine(log, text) {
  log.textContent += text + "\n";
  log.scrollTop = log.scrollHeight;
}

let source = null;
function streamSse(url) {
  if (source) source.close();
  const out = document.getElementById("sse-out");
  const log = document.getElementById("sse-log");
  out.textContent = "";
  log.textContent = "";
  const start = performance.now();
  logLine(log, stamp(start) + "  GET " + url);
  source = new EventSource(url);
  source.onmessage = (event) => {
    if (event.data === "[DONE]") {
      logLine(log, stamp(start) + "  [DONE]");
      source.close();
      return;
    }
    const token = JSON.parse(event.data).choices[0].delta.content;
    out.textContent += token;
    logLine(log, stamp(start) + "  " + JSON.stringify(token));
  };
  source.onerror = () => { logLine(log, stamp(start) + "  error, closing"); source.close(); };
}
document.getElementById("sse").onclick = () => streamSse("/sse");
document.getElementById("sse-gzip").onclick = () => streamSse("/sse-gzip");

document.getElementById("ndjson").onclick = async () => {
  const out = document.getElementById("ndjson-out");
  const log = document.getElementById("ndjson-log");
  out.textContent = "";
  log.textContent = "";
  const start = performance.now();
  logLine(log, stamp(start) + "  GET /ndjson");
  const response = await fetch("/ndjson");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line);
      if (message.token !== undefined) out.textContent += message.token;
      logLine(log, stamp(start) + "  " + line);
    }
  }
  logLine(log, stamp(start) + "  end of body");
};
</script>
</body>
</html>
"#;
