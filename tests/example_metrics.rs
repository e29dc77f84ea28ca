//! `examples/metrics.rs`, tested in process through a real server: the example file is compiled
//! into this test as a module (`#[path]`, as `tests/interop_llm_proxy.rs` does), so its own app,
//! access log and `/metrics` renderer run here without spawning `cargo run`.
//!
//! The clients never decode (`tests/wire_support`: a raw HTTP/1.1 reader and hyper's HTTP/2
//! client); gzip bodies are checked with flate2. `/metrics` is parsed as Prometheus text and every
//! figure in it must equal what the wire showed: responses per outcome, bytes into the compressor
//! (the handler's bytes) and out of it (the body bytes the client received), and no live stream
//! once every body has ended. Each access-log line must match its response exactly.

#[path = "../examples/metrics.rs"]
mod metrics_example;

mod wire_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use metrics_example::{
    app, json_body, ndjson_line, png_image, sse_data, AccessLog, NDJSON_LINES, SSE_EVENTS,
};
use tower_gzip::{GzipMetrics, Outcome};
use wire_support::{check_gzip_member, exchange, serve_axum, Framing, Proto, Wire, HANG};

/// What the server must have counted and logged, from the responses the clients received.
#[derive(Default)]
struct Expected {
    responses: BTreeMap<&'static str, u64>,
    input_bytes: u64,
    output_bytes: u64,
    /// Access-log lines.
    log: Vec<String>,
}

impl Expected {
    /// Records one response: `handler_bytes` is what the handler produced, `wire` what arrived.
    fn record(&mut self, proto: Proto, path: &str, wire: &Wire, outcome: Outcome, handler: u64) {
        *self.responses.entry(outcome.as_str()).or_default() += 1;
        let out = wire.body.len() as u64;
        let ratio = if outcome == Outcome::Gzip {
            self.input_bytes += handler;
            self.output_bytes += out;
            format!("{:.2}", handler as f64 / out as f64)
        } else {
            assert_eq!(handler, out, "{path}: an identity body arrives as produced");
            "-".to_owned()
        };
        let _ = proto;
        self.log.push(format!(
            "\"GET {path}\" {} outcome={outcome} in={handler} out={out} ratio={ratio}",
            wire.status
        ));
    }
}

fn header(wire: &Wire, name: &str) -> Option<String> {
    match wire.values(name).as_slice() {
        [] => None,
        [value] => Some(String::from_utf8_lossy(value).into_owned()),
        values => panic!("{} {name} fields: {values:?}", values.len()),
    }
}

fn gunzip(raw: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut decoded)
        .expect("flate2 decodes the body");
    decoded
}

async fn get(proto: Proto, addr: std::net::SocketAddr, path: &str, ae: Option<&str>) -> Wire {
    let wire = exchange(proto, addr, &Method::GET, path, ae)
        .await
        .unwrap_or_else(|err| panic!("{proto:?} GET {path}: {err}"));
    assert_eq!(wire.status, 200, "{proto:?} GET {path}");
    assert!(
        !matches!(wire.framing, Framing::Invalid(_)),
        "{proto:?} GET {path}: {:?}",
        wire.framing
    );
    wire
}

/// A compressed response: `content-encoding: gzip`, `vary`, and one gzip member of `expected`.
fn assert_gzip(wire: &Wire, path: &str, content_type: &str, expected: &[u8]) {
    assert_eq!(
        header(wire, "content-encoding").as_deref(),
        Some("gzip"),
        "{path}"
    );
    assert_eq!(
        header(wire, "vary").as_deref(),
        Some("Accept-Encoding"),
        "{path}"
    );
    assert_eq!(
        header(wire, "content-type").as_deref(),
        Some(content_type),
        "{path}"
    );
    check_gzip_member(&wire.body, expected).unwrap_or_else(|err| panic!("{path}: {err}"));
}

/// One `/metrics` body, parsed: each series (name plus labels) with its value. Every series must
/// follow one `# HELP` and one `# TYPE` line of its family, and appear once.
fn parse_prometheus(text: &str) -> BTreeMap<String, u64> {
    let mut families: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').expect("HELP name text");
            assert!(!text.is_empty(), "{line}");
            let family = families.entry(name.to_owned()).or_default();
            assert!(!family.0, "second HELP for {name}");
            family.0 = true;
        } else if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').expect("TYPE name kind");
            let family = families.entry(name.to_owned()).or_default();
            assert!(family.1.is_none(), "second TYPE for {name}");
            family.1 = Some(kind.to_owned());
        } else {
            let (key, value) = line.rsplit_once(' ').expect("a sample: series value");
            let name = key.split('{').next().unwrap();
            let family = families
                .get(name)
                .unwrap_or_else(|| panic!("{line}: no HELP/TYPE before it"));
            let kind = family.1.as_deref();
            assert!(family.0, "{line}: no HELP before it");
            let expected_kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert_eq!(kind, Some(expected_kind), "{line}");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("{line}: not an integer"));
            assert!(
                series.insert(key.to_owned(), value).is_none(),
                "{key} twice"
            );
        }
    }
    series
}

/// Checks a scrape against what was received before it. The scrape itself is not in its own
/// figures: the layer counts a response once the handler has rendered it.
fn assert_scrape(series: &BTreeMap<String, u64>, expected: &Expected, metrics: &GzipMetrics) {
    let responses: BTreeSet<&str> = series
        .keys()
        .filter(|key| key.starts_with("tower_gzip_responses_total"))
        .map(String::as_str)
        .collect();
    let per_outcome: BTreeSet<String> = Outcome::ALL
        .iter()
        .map(|outcome| format!("tower_gzip_responses_total{{outcome=\"{outcome}\"}}"))
        .collect();
    assert_eq!(
        responses,
        per_outcome.iter().map(String::as_str).collect(),
        "one series per outcome"
    );
    for outcome in Outcome::ALL {
        let key = format!("tower_gzip_responses_total{{outcome=\"{outcome}\"}}");
        let want = expected
            .responses
            .get(outcome.as_str())
            .copied()
            .unwrap_or(0);
        assert_eq!(series[&key], want, "{key}");
    }
    assert_eq!(series["tower_gzip_input_bytes_total"], expected.input_bytes);
    assert_eq!(
        series["tower_gzip_output_bytes_total"],
        expected.output_bytes
    );
    // Not moved by a scrape: equal to the counters read now.
    assert_eq!(
        series["tower_gzip_hibernations_total"],
        metrics.hibernations()
    );
    assert_eq!(series["tower_gzip_wakes_total"], metrics.wakes());
    assert_eq!(series.len(), Outcome::ALL.len() + 6, "{series:?}");
}

#[tokio::test]
async fn the_metrics_example_counts_and_logs_what_the_wire_shows() {
    let metrics = GzipMetrics::new();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log: AccessLog = {
        let lines = lines.clone();
        Arc::new(move |line| lines.lock().unwrap().push(line.to_owned()))
    };
    let server = serve_axum(app(metrics.clone(), log)).await;
    let addr = server.addr;
    let mut expected = Expected::default();

    let json = json_body();
    let png = png_image();
    for proto in [Proto::H1Raw, Proto::H2] {
        let wire = get(proto, addr, "/json", Some("gzip")).await;
        assert_gzip(&wire, "/json", "application/json", &json);
        expected.record(proto, "/json", &wire, Outcome::Gzip, json.len() as u64);

        let wire = get(proto, addr, "/json", None).await;
        assert_eq!(header(&wire, "content-encoding"), None);
        assert_eq!(header(&wire, "vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(wire.body, json);
        let n = json.len() as u64;
        expected.record(proto, "/json", &wire, Outcome::ClientRefused, n);

        let wire = get(proto, addr, "/image.png", Some("gzip")).await;
        assert_eq!(header(&wire, "content-encoding"), None);
        assert_eq!(header(&wire, "vary"), None);
        assert_eq!(header(&wire, "content-type").as_deref(), Some("image/png"));
        assert!(wire.body.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(wire.body, png);
        let n = png.len() as u64;
        expected.record(proto, "/image.png", &wire, Outcome::MediaType, n);
    }

    // The streams, over both protocols at once.
    let (ndjson_h1, ndjson_h2, sse_h1, sse_h2) = tokio::join!(
        get(Proto::H1Raw, addr, "/ndjson", Some("gzip")),
        get(Proto::H2, addr, "/ndjson", Some("gzip")),
        get(Proto::H1Raw, addr, "/sse", Some("gzip")),
        get(Proto::H2, addr, "/sse", Some("gzip")),
    );
    let ndjson: String = (0..NDJSON_LINES).map(ndjson_line).collect();
    let sse: String = (0..SSE_EVENTS)
        .map(|seq| format!("event: tick\ndata: {}\n\n", sse_data(seq)))
        .collect();
    for (proto, path, wire, content_type, text) in [
        (
            Proto::H1Raw,
            "/ndjson",
            &ndjson_h1,
            "application/x-ndjson",
            &ndjson,
        ),
        (
            Proto::H2,
            "/ndjson",
            &ndjson_h2,
            "application/x-ndjson",
            &ndjson,
        ),
        (Proto::H1Raw, "/sse", &sse_h1, "text/event-stream", &sse),
        (Proto::H2, "/sse", &sse_h2, "text/event-stream", &sse),
    ] {
        assert_gzip(wire, path, content_type, text.as_bytes());
        if let Framing::H1Chunked { chunks } = wire.framing {
            // Sent in pieces as the handler produced them, not buffered to the end.
            assert!(chunks > 1, "{path}: {chunks} chunk");
        }
        expected.record(proto, path, wire, Outcome::Gzip, text.len() as u64);
    }

    // Scrape until no compressed stream is live (every body above has ended, so the first scrape
    // should already show 0); each scrape must match everything received before it, earlier
    // scrapes included.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let wire = get(Proto::H1Raw, addr, "/metrics", Some("gzip")).await;
        assert_eq!(header(&wire, "content-encoding").as_deref(), Some("gzip"));
        assert_eq!(
            header(&wire, "content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(gunzip(&wire.body)).expect("UTF-8");
        let series = parse_prometheus(&text);
        assert_scrape(&series, &expected, &metrics);
        let n = text.len() as u64;
        expected.record(Proto::H1Raw, "/metrics", &wire, Outcome::Gzip, n);
        if series["tower_gzip_live_streams"] == 0 {
            assert_eq!(series["tower_gzip_hibernated_streams"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live streams never returned to 0: {series:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The SSE streams pause 400 ms between events, longer than the example's `hibernate_after`.
    assert!(metrics.hibernations() > 0, "{metrics:?}");
    assert!(metrics.wakes() <= metrics.hibernations(), "{metrics:?}");

    // A scrape without gzip: the earlier scrapes are in it, and it is counted as client_refused.
    let wire = get(Proto::H2, addr, "/metrics", None).await;
    assert_eq!(header(&wire, "content-encoding"), None);
    let text = String::from_utf8(wire.body.clone()).expect("UTF-8");
    let series = parse_prometheus(&text);
    assert_scrape(&series, &expected, &metrics);
    assert_eq!(series["tower_gzip_live_streams"], 0);
    let n = text.len() as u64;
    expected.record(Proto::H2, "/metrics", &wire, Outcome::ClientRefused, n);
    assert_eq!(metrics.responses(Outcome::ClientRefused), 3);

    // One access-log line per response, written when its body ended (before its last bytes were
    // handed to the server, so they are all there by now; waited for anyway, bounded).
    let deadline = tokio::time::Instant::now() + HANG;
    while lines.lock().unwrap().len() < expected.log.len() && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut logged: Vec<String> = lines.lock().unwrap().iter().cloned().collect();
    logged.sort();
    expected.log.sort();
    assert_eq!(logged, expected.log);
}

#[tokio::test]
async fn a_client_that_goes_away_is_logged_once_as_aborted() {
    let metrics = GzipMetrics::new();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log: AccessLog = {
        let lines = lines.clone();
        Arc::new(move |line| lines.lock().unwrap().push(line.to_owned()))
    };
    let server = serve_axum(app(metrics.clone(), log)).await;

    let (connection, head) = wire_support::h1_open_stream(server.addr, "/sse", "gzip")
        .await
        .unwrap();
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(metrics.live_streams(), 1);
    drop(connection); // mid-stream: the server drops the body when it notices

    let deadline = tokio::time::Instant::now() + HANG;
    while metrics.live_streams() != 0 || lines.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped stream was never reported: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = lines.lock().unwrap().clone();
    let [line] = lines.as_slice() else {
        panic!("{} lines: {lines:?}", lines.len());
    };
    // Logged from the body's drop, still with its request.
    assert!(
        line.starts_with("\"GET /sse\" 200 outcome=gzip in="),
        "{line}"
    );
    assert!(line.ends_with(" aborted"), "{line}");
    assert_eq!(metrics.responses(Outcome::Gzip), 1);
    assert_eq!(metrics.hibernated_streams(), 0);
}
