//! `GzipMetrics` as a Prometheus `/metrics` endpoint, and an access-log line per response with its
//! compression ratio (like nginx's `$gzip_ratio`), on an axum 0.8 server.
//!
//! | route        | what it shows                                                                  |
//! |--------------|--------------------------------------------------------------------------------|
//! | `/json`      | a few KB of JSON: `gzip`, or `client_refused` without `Accept-Encoding: gzip`  |
//! | `/ndjson`    | NDJSON of unknown length, one line every 100 ms: `gzip`, flushed line by line  |
//! | `/sse`       | Server-Sent Events, one every 400 ms, compressed because this route's handler inserts `GzipOverride::on()` (SSE is on the default skip list) |
//! | `/image.png` | a PNG (already compressed): `media_type`, sent as is                           |
//! | `/metrics`   | the layer's counters in the Prometheus text format (0.0.4)                     |
//!
//! Run it with:
//!
//! ```text
//! cargo run --example metrics
//! ```
//!
//! and use the `curl` commands it prints. `PORT` changes the port (default 3003). Every response
//! prints one line to stdout when its body ends (or is dropped, e.g. when the client goes away):
//!
//! ```text
//! "GET /json" 200 outcome=gzip in=5842 out=509 ratio=11.48
//! "GET /sse" 200 outcome=gzip in=295 out=143 ratio=2.06
//! "GET /image.png" 200 outcome=media_type in=3137 out=3137 ratio=-
//! ```
//!
//! `/metrics` goes through the layer like every other route and is compressed: Prometheus sends
//! `Accept-Encoding: gzip` when it scrapes. A scrape is itself a response, counted when the layer
//! sees the response the handler has already rendered, so it shows in the next scrape's figures,
//! not in its own. The ratio over time is a PromQL query:
//! `rate(tower_gzip_input_bytes_total[5m]) / rate(tower_gzip_output_bytes_total[5m])`.

#![allow(dead_code)] // tests/example_metrics.rs includes this file as a module

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Extension, Router};
use futures_util::StreamExt;
use tokio_stream::wrappers::IntervalStream;
use tower_gzip::{GzipLayer, GzipMetrics, GzipOverride, Outcome, ResponseStats};

/// `/ndjson`: this many lines, one per interval (the first right away).
pub const NDJSON_LINES: usize = 10;
pub const NDJSON_INTERVAL: Duration = Duration::from_millis(100);
/// `/sse`: this many events, one per interval (the first right away).
pub const SSE_EVENTS: usize = 5;
pub const SSE_INTERVAL: Duration = Duration::from_millis(400);
/// Shorter than the default (1 s) so that the SSE stream's 400 ms pauses show in the hibernation
/// metrics: from its second event on, the stream drops its deflate state between events.
pub const HIBERNATE_AFTER: Duration = Duration::from_millis(250);

/// Where the access-log lines go: stdout in `main`, a buffer in the test.
pub type AccessLog = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: GzipMetrics,
    json: Bytes,
    png: Bytes,
}

/// The example's routes behind one `GzipLayer` that counts into `metrics` and writes one access-log
/// line per response to `log`.
pub fn app(metrics: GzipMetrics, log: AccessLog) -> Router {
    let layer = GzipLayer::new()
        .hibernate_after(HIBERNATE_AFTER)
        .metrics(metrics.clone())
        .on_response_end(move |stats| log(&access_line(stats)));
    let state = AppState {
        metrics,
        json: json_body(),
        png: png_image(),
    };
    Router::new()
        .route("/json", get(json))
        .route("/ndjson", get(ndjson))
        .route("/sse", get(sse))
        .route("/image.png", get(image))
        .route("/metrics", get(prometheus))
        .layer(layer)
        .with_state(state)
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT")
        .ok()
        .map(|port| port.parse::<u16>().expect("PORT must be a port number"))
        .unwrap_or(3003);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A real server would hand the line to its logger; one `write` per line keeps lines whole.
    let log: AccessLog = Arc::new(|line| {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    });
    let app = app(GzipMetrics::new(), log);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|err| panic!("failed to bind {addr}: {err}"))
        // Small writes (one line or event each) should not wait for Nagle's algorithm.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });

    let url = format!("http://{addr}");
    println!("tower-gzip metrics example listening on {url}");
    println!("  curl -s --compressed -o /dev/null {url}/json       # JSON, gzip");
    println!(
        "  curl -s -o /dev/null {url}/json                    # no Accept-Encoding: client_refused"
    );
    println!("  curl -sN --compressed {url}/ndjson                 # NDJSON, gzip, line by line");
    println!(
        "  curl -sN --compressed {url}/sse                    # SSE, gzip via GzipOverride::on()"
    );
    println!("  curl -s --compressed -o /dev/null {url}/image.png  # PNG: media_type, sent as is");
    println!("  curl -s --compressed {url}/metrics                 # Prometheus text format");
    println!("access log, one line per response when its body ends:");

    axum::serve(listener, app).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

async fn json(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.json).into_response()
}

/// `GET /ndjson`: a job's progress, one line per tick, of unknown length (no `Content-Length`).
async fn ndjson() -> Response {
    let lines = IntervalStream::new(tokio::time::interval(NDJSON_INTERVAL))
        .take(NDJSON_LINES)
        .enumerate()
        .map(|(seq, _)| Ok::<_, Infallible>(ndjson_line(seq)));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

pub fn ndjson_line(seq: usize) -> String {
    format!(
        "{{\"seq\":{seq},\"job\":\"report-2024-q3\",\"status\":\"{}\",\"progress\":{}}}\n",
        if seq + 1 == NDJSON_LINES {
            "done"
        } else {
            "running"
        },
        (seq + 1) * 100 / NDJSON_LINES
    )
}

/// `GET /sse`: `text/event-stream` is on the layer's skip list; this handler opts its own response
/// in with `GzipOverride::on()`, so no second layer (or `compress_sse(true)` for every route) is
/// needed.
async fn sse() -> impl IntoResponse {
    let events = IntervalStream::new(tokio::time::interval(SSE_INTERVAL))
        .take(SSE_EVENTS)
        .enumerate()
        .map(|(seq, _)| Ok::<_, Infallible>(Event::default().event("tick").data(sse_data(seq))));
    (Extension(GzipOverride::on()), Sse::new(events))
}

pub fn sse_data(seq: usize) -> String {
    format!(
        "{{\"seq\":{seq},\"queue\":\"exports\",\"pending\":{}}}",
        SSE_EVENTS - 1 - seq
    )
}

async fn image(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], state.png).into_response()
}

async fn prometheus(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&state.metrics),
    )
        .into_response()
}

/// The counters in the Prometheus text exposition format, version 0.0.4.
pub fn render_metrics(metrics: &GzipMetrics) -> String {
    fn family(out: &mut String, name: &str, kind: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    }
    let mut out = String::new();
    family(
        &mut out,
        "tower_gzip_responses_total",
        "counter",
        "Responses seen by the gzip layer, by what it decided.",
    );
    for outcome in Outcome::ALL {
        let _ = writeln!(
            out,
            "tower_gzip_responses_total{{outcome=\"{}\"}} {}",
            outcome.as_str(),
            metrics.responses(outcome)
        );
    }
    let single = [
        (
            "tower_gzip_input_bytes_total",
            "counter",
            "Bytes handed to the compressor (compressed responses only).",
            metrics.input_bytes(),
        ),
        (
            "tower_gzip_output_bytes_total",
            "counter",
            "Compressed bytes sent, gzip framing included.",
            metrics.output_bytes(),
        ),
        (
            "tower_gzip_hibernations_total",
            "counter",
            "Times an idle compressed stream dropped its deflate state.",
            metrics.hibernations(),
        ),
        (
            "tower_gzip_wakes_total",
            "counter",
            "Times a hibernated stream built a new deflate state.",
            metrics.wakes(),
        ),
        (
            "tower_gzip_live_streams",
            "gauge",
            "Compressed responses whose body has not ended yet.",
            metrics.live_streams(),
        ),
        (
            "tower_gzip_hibernated_streams",
            "gauge",
            "Compressed responses hibernating right now.",
            metrics.hibernated_streams(),
        ),
    ];
    for (name, kind, help, value) in single {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------------

/// The access-log line of one response: `ResponseStats` carries the request line and status, so
/// the callback needs nothing else.
fn access_line(stats: &ResponseStats) -> String {
    let ratio = stats
        .ratio()
        .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}"));
    format!(
        "\"{} {}\" {} outcome={} in={} out={} ratio={ratio}{}",
        stats.method,
        // HTTP/2 requests carry the full URI; the log shows the path and query, as for HTTP/1.1.
        stats
            .uri
            .path_and_query()
            .map_or(stats.uri.path(), |target| target.as_str()),
        stats.status.as_u16(),
        stats.outcome,
        stats.bytes_in,
        stats.bytes_out,
        if stats.completed { "" } else { " aborted" }
    )
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// About 6 KB of JSON: a page of an order list.
pub fn json_body() -> Bytes {
    let orders: Vec<serde_json::Value> = (0..24)
        .map(|id| {
            let status = ["pending", "shipped", "delivered"][id % 3];
            serde_json::json!({
                "id": 1000 + id,
                "customer": format!("customer-{}", id % 7),
                "status": status,
                "total_cents": 1999 + 250 * id,
                "currency": "EUR",
                "items": [{"sku": format!("SKU-{:04}", id * 13 % 97), "quantity": 1 + id % 4}],
            })
        })
        .collect();
    let page = serde_json::json!({"orders": orders, "page": 1, "per_page": 24, "total": 24});
    Bytes::from(serde_json::to_vec_pretty(&page).expect("JSON"))
}

/// A 32x32 RGB PNG of a noisy gradient, built at startup: its pixel data is already deflated, so
/// gzip would gain nothing, which is why `image/*` is on the default skip list.
pub fn png_image() -> Bytes {
    const SIZE: u32 = 32;
    let mut pixels = Vec::new();
    let mut seed = 0x2545_f491_u32;
    for y in 0..SIZE {
        pixels.push(0); // filter type: none
        for x in 0..SIZE {
            // xorshift32 noise on a gradient
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let [a, b, c, _] = seed.to_le_bytes();
            pixels.extend_from_slice(&[
                (x * 8) as u8 ^ (a & 0x3f),
                (y * 8) as u8 ^ (b & 0x3f),
                128 ^ (c & 0x3f),
            ]);
        }
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(&pixels).expect("in memory");
    let idat = zlib.finish().expect("in memory");

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&SIZE.to_be_bytes());
    ihdr.extend_from_slice(&SIZE.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, adaptive filters, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    Bytes::from(png)
}
