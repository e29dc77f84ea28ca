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

use std::sync::LazyLock;

use bytes::Bytes;
use http::Version;
use interop_support::browser::*;
use interop_support::*;

/// `?scenario=...`: reads its route with `EventSource`, a streaming `fetch` split into lines, or a
/// whole `fetch` parsed as JSON, and reports each step to `/report`.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    page(
        "tower-gzip interop",
        r#"const scenario = new URLSearchParams(location.search).get("scenario");

async function ndjson(path) {
  const response = await fetch(path);
  report("head", [response.status, response.headers.get("content-type"),
                  response.headers.get("content-encoding")].join(" "));
  await reportLines(response);
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

run({
  "sse": () => eventSource("/sse"),
  "sse-gzip": () => eventSource("/sse-gzip"),
  "sse-gzip-hibernating": () => eventSource("/sse-gzip-hibernating"),
  "ndjson": () => ndjson("/ndjson"),
  "ndjson-held": () => ndjson("/ndjson-held"),
  "large": () => large("/large.json"),
}, "scenario", scenario);
"#,
    )
});

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// `EventSource` on `path`: the head arrives before any event exists, then each event is
/// dispatched to the page before the next is produced, in order and intact.
async fn event_source_lockstep(path: &'static str, encoding: Option<&'static str>) {
    event_source_lockstep_with(path, encoding, &openai_events(&answer_tokens())).await;
}

async fn event_source_lockstep_with(
    path: &'static str,
    encoding: Option<&'static str>,
    events: &[String],
) {
    let mut server = TestServer::with_page(&PAGE).await;
    let feed = server.feed(path);
    let scenario = path.trim_start_matches('/');
    let browser = open(&server, &format!("scenario={scenario}")).await;
    let result = async {
        let server = &mut server;
        events_in_lockstep(server, feed, events).await?;
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

/// The same, with an answer three times as long: once the stream has a full 32 KiB window of
/// history, each woken deflate state starts at the bit where the stream stopped (the crate's
/// `splice` module) instead of after padding, and Chromium's inflater decodes every event on
/// arrival.
#[tokio::test]
async fn chromium_event_source_decodes_a_gzip_sse_stream_that_wakes_mid_byte_between_events() {
    let tokens: Vec<String> = (0..3).flat_map(|_| answer_tokens()).collect();
    let events = openai_events(&tokens);
    let bytes: usize = events.iter().map(String::len).sum();
    assert!(bytes > 40_000, "{bytes} bytes: more than a window");
    event_source_lockstep_with("/sse-gzip-hibernating", Some("gzip"), &events).await;
}

#[tokio::test]
async fn chromium_fetch_reader_decodes_gzip_ndjson_line_by_line_in_lockstep() {
    let mut server = TestServer::with_page(&PAGE).await;
    let feed = server.feed("/ndjson");
    let browser = open(&server, "scenario=ndjson").await;
    let result = async {
        let server = &mut server;
        let head = format!("200 {NDJSON} gzip");
        expect(server, "the response head", "head", &head).await?;
        lines_in_lockstep(server, feed, &ollama_lines(&answer_tokens())).await?;
        check_exchange(server, "/ndjson", Some("gzip"), Some(Version::HTTP_11))?;
        Ok(())
    }
    .await;
    verdict("ndjson", browser, result);
}

#[tokio::test]
async fn chromium_decodes_and_parses_a_large_gzip_json_body() {
    let mut server = TestServer::with_page(&PAGE).await;
    let browser = open(&server, "scenario=large").await;
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
    let mut server = TestServer::with_page(&PAGE).await;
    let feed = server.feed("/ndjson-held");
    let browser = open(&server, "scenario=ndjson-held").await;
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
