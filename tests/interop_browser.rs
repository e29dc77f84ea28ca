//! A real browser behind `GzipLayer`: headless Chromium (Debian's `chromium`, run as a plain
//! subprocess in its own headless mode, no driver) loads a page from a test server, and the page
//! reports what it receives with `fetch` POSTs to `/report`.
//!
//! The streamed scenarios run in lockstep: the server produces event `k + 1` only after the page
//! reported event `k`, so each event must have been decoded and dispatched by the browser while the
//! handler was paused. A generous timeout only detects failure. The server records each
//! exchange, which shows what was negotiated (an `EventSource` cannot see `Content-Encoding`).
//!
//! Chromium is installed by `.ci/run` when missing. Without it these tests fail, naming the package;
//! set `CHROMIUM` to use another Chromium or Chrome binary.

mod interop_support;

use bytes::Bytes;
use http::Version;
use interop_support::chromium::Chromium;
use interop_support::*;

/// One browser at a time: Chromium is heavy for a 2-core machine, and lockstep does not need
/// parallelism.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>tower-gzip interop</title></head>
<body>
<script>
"use strict";
const scenario = new URLSearchParams(location.search).get("scenario");

// Reports are POSTed one after another, so the server sees them in the order they were made.
let chain = Promise.resolve();
function report(kind, text) {
  const body = kind + "\n" + text;
  chain = chain.then(() => fetch("/report", { method: "POST", body }).then(() => {}, () => {}));
  return chain;
}
window.addEventListener("error", (e) => report("error", "uncaught: " + e.message));
window.addEventListener("unhandledrejection", (e) => report("error", "unhandled rejection: " + e.reason));

function eventSource(path) {
  const source = new EventSource(path);
  source.onopen = () => report("open", "");
  source.onmessage = (event) => {
    report("event", event.data);
    if (event.data === "[DONE]") {
      source.close();
      report("closed", "");
    }
  };
  source.onerror = () => {
    report("error", "EventSource error, readyState " + source.readyState);
    source.close();
  };
}

async function ndjson(path) {
  const response = await fetch(path);
  report("head", [response.status, response.headers.get("content-type"),
                  response.headers.get("content-encoding")].join(" "));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      report("line", buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
  }
  buffered += decoder.decode();
  report("end", buffered);
}

async function large(path) {
  const response = await fetch(path);
  const json = await response.json();
  let sum = 0;
  for (const item of json.items) sum += item.id;
  const last = json.items[json.items.length - 1];
  report("large", [response.headers.get("content-encoding"), json.items.length, sum, last.name,
                   last.description].join("\n"));
}

const scenarios = {
  "sse": () => eventSource("/sse"),
  "sse-gzip": () => eventSource("/sse-gzip"),
  "sse-gzip-hibernating": () => eventSource("/sse-gzip-hibernating"),
  "ndjson": () => ndjson("/ndjson"),
  "ndjson-held": () => ndjson("/ndjson-held"),
  "large": () => large("/large.json"),
};
if (scenarios[scenario]) {
  Promise.resolve().then(scenarios[scenario]).catch((e) => report("error", "failed: " + e));
} else {
  report("error", "unknown scenario " + scenario);
}
</script>
</body>
</html>
"#;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The next report from the page, as (kind, text); a page error or an unexpected request fails.
async fn next(server: &mut TestServer, waiting_for: &str) -> Result<(String, String), String> {
    next_within(server, WAIT, waiting_for).await
}

async fn next_within(
    server: &mut TestServer,
    wait: std::time::Duration,
    waiting_for: &str,
) -> Result<(String, String), String> {
    let report = server.next_report_within(wait, waiting_for).await?;
    let (kind, text) = report.split_once('\n').unwrap_or((&report, ""));
    match kind {
        "error" | "unexpected" => Err(format!(
            "while waiting for {waiting_for}, the page reported {kind}: {text}"
        )),
        _ => Ok((kind.to_owned(), text.to_owned())),
    }
}

async fn expect(
    server: &mut TestServer,
    waiting_for: &str,
    kind: &str,
    text: &str,
) -> Result<(), String> {
    let (got_kind, got_text) = next(server, waiting_for).await?;
    if got_kind != kind || got_text != text {
        return Err(format!(
            "waiting for {waiting_for}: expected {kind} {text:?}, the page reported {got_kind} {got_text:?}"
        ));
    }
    Ok(())
}

/// A Chromium showing the page for one scenario, holding the one-browser-at-a-time lock.
struct Browser {
    chromium: Chromium,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

async fn open(server: &TestServer, scenario: &str) -> Browser {
    let lock = BROWSER.lock().await;
    match Chromium::launch(&server.url(&format!("/page?scenario={scenario}"))) {
        Ok(chromium) => Browser {
            chromium,
            _one_at_a_time: lock,
        },
        Err(e) => panic!("{e}"),
    }
}

/// Fails the test with `result`'s error and the end of Chromium's log.
fn verdict(scenario: &str, browser: Browser, result: Result<(), String>) {
    if let Err(e) = result {
        panic!(
            "{scenario}: {e}\n--- end of chromium's log ---\n{}",
            browser.chromium.log_tail()
        );
    }
}

/// `EventSource` on `path`: the head arrives before any event exists, then each event is
/// dispatched to the page before the next is produced, in order and intact.
async fn event_source_lockstep(path: &'static str, encoding: Option<&'static str>) {
    let mut server = TestServer::with_page(PAGE).await;
    let feed = server.feed(path);
    let scenario = path.trim_start_matches('/');
    let browser = open(&server, scenario).await;
    let result = async {
        let server = &mut server;
        expect(server, "the stream to open", "open", "").await?;
        let events = openai_events(&answer_tokens());
        for (k, event) in events.iter().enumerate() {
            feed.send(Bytes::from(event.clone()))
                .await
                .map_err(|_| format!("the server dropped the body before event {k}"))?;
            expect(server, &format!("event {k}"), "event", event_data(event)).await?;
        }
        expect(server, "the page to close the stream", "closed", "").await?;
        drop(feed);
        let exchange = check_exchange(server, path, encoding, Some(Version::HTTP_11))?;
        if !exchange
            .accept_encoding()
            .is_some_and(|value| value.contains("gzip"))
        {
            return Err(format!(
                "Chromium did not offer gzip: {:?}",
                exchange.accept_encoding()
            ));
        }
        Ok(())
    }
    .await;
    verdict(scenario, browser, result);
}

#[tokio::test]
async fn chromium_event_source_gets_each_sse_event_in_lockstep_uncompressed_by_default() {
    event_source_lockstep("/sse", None).await;
}

#[tokio::test]
async fn chromium_event_source_gets_each_gzip_sse_event_in_lockstep_with_compress_sse() {
    event_source_lockstep("/sse-gzip", Some("gzip")).await;
}

/// The layer drops the deflate state at every stall (between events) and continues the same gzip
/// stream with a new one primed with the last window: the browser's one inflater sees one stream.
#[tokio::test]
async fn chromium_event_source_decodes_a_gzip_sse_stream_that_hibernates_and_wakes_between_events()
{
    event_source_lockstep("/sse-gzip-hibernating", Some("gzip")).await;
}

#[tokio::test]
async fn chromium_fetch_reader_decodes_gzip_ndjson_line_by_line_in_lockstep() {
    let mut server = TestServer::with_page(PAGE).await;
    let feed = server.feed("/ndjson");
    let browser = open(&server, "ndjson").await;
    let result = async {
        let server = &mut server;
        let head = format!("200 {NDJSON} gzip");
        expect(server, "the response head", "head", &head).await?;
        let lines = ollama_lines(&answer_tokens());
        for (k, line) in lines.iter().enumerate() {
            feed.send(Bytes::from(line.clone()))
                .await
                .map_err(|_| format!("the server dropped the body before line {k}"))?;
            expect(server, &format!("line {k}"), "line", line.trim_end()).await?;
        }
        drop(feed);
        expect(server, "the end of the body", "end", "").await?;
        check_exchange(server, "/ndjson", Some("gzip"), Some(Version::HTTP_11))?;
        Ok(())
    }
    .await;
    verdict("ndjson", browser, result);
}

#[tokio::test]
async fn chromium_decodes_and_parses_a_large_gzip_json_body() {
    let mut server = TestServer::with_page(PAGE).await;
    let browser = open(&server, "large").await;
    let result = async {
        let server = &mut server;
        let (json, count, sum) = large_json();
        assert!(json.len() > 1_000_000);
        let last = count - 1;
        let expected = format!(
            "gzip\n{count}\n{sum}\nitem-{last}\nItem number {last}, \"quoted\", caf\u{e9}."
        );
        expect(server, "the parsed large JSON", "large", &expected).await?;
        let exchange = check_exchange(server, "/large.json", Some("gzip"), None)?;
        if exchange
            .response
            .get(http::header::CONTENT_LENGTH)
            .is_some()
        {
            return Err("a compressed body kept its Content-Length".into());
        }
        Ok(())
    }
    .await;
    verdict("large", browser, result);
}

/// Control: when the server holds the body back (as a compressor that never flushes would), the
/// page cannot report line 0 before line 1 is produced, and the lockstep check fails.
#[tokio::test]
async fn control_chromium_lockstep_fails_when_the_server_holds_bytes_back() {
    let mut server = TestServer::with_page(PAGE).await;
    let feed = server.feed("/ndjson-held");
    let browser = open(&server, "ndjson-held").await;
    let result = async {
        let server = &mut server;
        expect(
            server,
            "the response head",
            "head",
            &format!("200 {NDJSON} gzip"),
        )
        .await?;
        let line = &ollama_lines(&answer_tokens())[0];
        feed.send(Bytes::from(line.clone()))
            .await
            .map_err(|_| "the server dropped the body".to_string())?;
        // Only the failure is expected here, so a short bound keeps the test fast.
        match next_within(server, std::time::Duration::from_secs(1), "line 0").await {
            Err(e) if e.starts_with("no report from the client") => Ok(()),
            other => Err(format!("the held-back line reached the page: {other:?}")),
        }
    }
    .await;
    verdict("ndjson-held", browser, result);
}
