//! Clients this project did not write decode responses padded by `GzipLayer::random_padding`
//! (an RFC 1952 FEXTRA field of random length in the gzip header): curl (`--compressed`, HTTP/1.1
//! and HTTP/2), CPython's `http.client` with `zlib.decompressobj(wbits=31)` fed piece by piece,
//! reqwest with its `gzip` feature (HTTP/1.1 and HTTP/2), and headless Chromium (`EventSource`
//! and a streaming `fetch`).
//!
//! Streams run in lockstep (see `interop_support`): the server produces chunk `k + 1` only after
//! the client showed chunk `k` decoded, so the padded header must not hold anything back. The
//! hibernating route drops the deflate state at every stall and wakes with a new one. The first
//! test reads each padded route without decoding, to prove the bytes on the wire are padded.
//!
//! curl, python3 and chromium are installed by `.ci/run` when missing; a missing one fails.

mod interop_support;

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use interop_support::browser::*;
use interop_support::clients::*;
use interop_support::*;
use tokio::time::timeout;

const NDJSON_PADDED: &str = "/ndjson-padded";
const SSE_PADDED: &str = "/sse-gzip-padded";
const SSE_PADDED_HIBERNATING: &str = "/sse-gzip-padded-hibernating";
const LARGE_PADDED: &str = "/large-padded.json";

/// The padding length of a gzip member's header (`None`: no extra field), checking its layout.
fn padding_of(member: &[u8]) -> Result<Option<usize>, String> {
    if member.len() < 18 || member[..3] != [0x1f, 0x8b, 8] {
        return Err(format!(
            "not a gzip member: {:02x?}",
            &member[..member.len().min(16)]
        ));
    }
    match member[3] {
        0 => Ok(None),
        0x04 => {
            let xlen = usize::from(u16::from_le_bytes([member[10], member[11]]));
            let len = usize::from(u16::from_le_bytes([member[14], member[15]]));
            if &member[12..14] != b"TP" || xlen != 4 + len {
                return Err(format!("unexpected extra field: {:02x?}", &member[10..16]));
            }
            Ok(Some(len))
        }
        flags => Err(format!("unexpected FLG {flags:#04x}")),
    }
}

/// The raw (not decoded) body of `path`, fed with `chunks`, as a gzip-accepting client gets it.
async fn raw_body(server: &TestServer, path: &str, chunks: &[String]) -> Bytes {
    let feed = server.feed(path);
    let client = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .http1_only()
        .build()
        .unwrap();
    let response = timeout(
        WAIT,
        client
            .get(server.url(path))
            .header("accept-encoding", "gzip")
            .send(),
    )
    .await
    .expect("the head arrives")
    .expect("the request succeeds");
    assert_eq!(response.headers()["content-encoding"], "gzip", "{path}");
    for chunk in chunks {
        feed.send(Bytes::from(chunk.clone())).await.unwrap();
    }
    drop(feed);
    timeout(WAIT, response.bytes())
        .await
        .expect("the body ends")
        .expect("the body arrives")
}

#[tokio::test]
async fn the_padded_routes_send_padded_gzip_and_the_plain_route_does_not() {
    let server = TestServer::start().await;
    let lines = ollama_lines(&answer_tokens());
    for path in [NDJSON_PADDED, SSE_PADDED, SSE_PADDED_HIBERNATING] {
        let mut paddings = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let raw = raw_body(&server, path, &lines[..3]).await;
            let padding = padding_of(&raw).unwrap().expect("padded");
            assert!(padding <= usize::from(PADDING), "{path}: {padding}");
            paddings.insert(padding);
        }
        assert!(paddings.len() > 1, "{path}: the padding varies");
    }
    let raw = raw_body(&server, NDJSON_PADDED, &[]).await;
    let padding = padding_of(&raw)
        .unwrap()
        .expect("the empty member is padded too");
    assert_eq!(raw.len(), 20 + 6 + padding, "an empty member");
    let raw = raw_body(&server, "/ndjson", &lines[..3]).await;
    assert_eq!(
        padding_of(&raw).unwrap(),
        None,
        "the default layer does not pad"
    );
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

async fn curl_padded(path: &str, http2: bool, chunks: Vec<String>) {
    if let Err(e) = curl_lockstep(path, http2, chunks, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http1_decodes_padded_gzip_ndjson_line_by_line_in_lockstep() {
    curl_padded(NDJSON_PADDED, false, ollama_lines(&answer_tokens())).await;
}

#[tokio::test]
async fn curl_http1_decodes_a_padded_sse_stream_that_hibernates_between_events_in_lockstep() {
    let events = openai_events(&answer_tokens());
    curl_padded(SSE_PADDED_HIBERNATING, false, events).await;
}

#[tokio::test]
async fn curl_http1_decodes_a_padded_empty_body() {
    curl_padded(NDJSON_PADDED, false, Vec::new()).await;
}

#[tokio::test]
async fn curl_http2_decodes_padded_gzip_sse_event_by_event_in_lockstep() {
    curl_padded(SSE_PADDED, true, openai_events(&answer_tokens())).await;
}

#[tokio::test]
async fn curl_http2_decodes_a_padded_sse_stream_that_hibernates_between_events_in_lockstep() {
    let events = openai_events(&answer_tokens());
    curl_padded(SSE_PADDED_HIBERNATING, true, events).await;
}

#[tokio::test]
async fn curl_http2_decodes_a_padded_empty_body() {
    curl_padded(NDJSON_PADDED, true, Vec::new()).await;
}

// ---------------------------------------------------------------------------------------------
// Python: http.client + zlib.decompressobj(wbits=31), piece by piece
// ---------------------------------------------------------------------------------------------

async fn python_padded(path: &str, chunks: Vec<String>) {
    if let Err(e) = python_lockstep(path, chunks, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn python_zlib_decodes_padded_gzip_ndjson_line_by_line_in_lockstep() {
    python_padded(NDJSON_PADDED, ollama_lines(&answer_tokens())).await;
}

#[tokio::test]
async fn python_zlib_decodes_a_padded_sse_stream_that_hibernates_between_events_in_lockstep() {
    python_padded(SSE_PADDED_HIBERNATING, openai_events(&answer_tokens())).await;
}

#[tokio::test]
async fn python_zlib_decodes_a_padded_empty_body() {
    python_padded(NDJSON_PADDED, Vec::new()).await;
}

// ---------------------------------------------------------------------------------------------
// reqwest (gzip feature)
// ---------------------------------------------------------------------------------------------

async fn reqwest_padded(path: &str, http2: bool, chunks: Vec<String>) {
    if let Err(e) = reqwest_lockstep(path, http2, chunks).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reqwest_http1_decodes_padded_gzip_ndjson_line_by_line_in_lockstep() {
    reqwest_padded(NDJSON_PADDED, false, ollama_lines(&answer_tokens())).await;
}

#[tokio::test]
async fn reqwest_http1_decodes_a_padded_sse_stream_that_hibernates_between_events_in_lockstep() {
    let events = openai_events(&answer_tokens());
    reqwest_padded(SSE_PADDED_HIBERNATING, false, events).await;
}

#[tokio::test]
async fn reqwest_http2_decodes_padded_gzip_sse_event_by_event_in_lockstep() {
    reqwest_padded(SSE_PADDED, true, openai_events(&answer_tokens())).await;
}

#[tokio::test]
async fn reqwest_http2_decodes_a_padded_empty_body() {
    reqwest_padded(NDJSON_PADDED, true, Vec::new()).await;
}

#[tokio::test]
async fn reqwest_decodes_a_large_padded_json_body_whole() {
    let server = TestServer::start().await;
    let (expected, _, _) = large_json();
    let body = timeout(Duration::from_secs(60), async {
        reqwest_client(false)
            .get(server.url(LARGE_PADDED))
            .send()
            .await?
            .bytes()
            .await
    })
    .await
    .expect("the large body arrives")
    .expect("the large body decodes");
    assert!(body == expected, "the decoded body differs");
    check_exchange(&server, LARGE_PADDED, Some("gzip"), None).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------------------------

/// `?mode=events|lines|large&path=...`: reads `path` with `EventSource`, a streaming `fetch`
/// split into lines, or a whole `fetch` parsed as JSON, and reports each step to `/report`.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    page(
        "tower-gzip padding interop",
        r#"const params = new URLSearchParams(location.search);
const mode = params.get("mode"), path = params.get("path");

async function lines() {
  const response = await fetch(path);
  report("head", [response.status, response.headers.get("content-encoding")].join(" "));
  await reportLines(response);
}

async function large() {
  const response = await fetch(path);
  const json = await response.json();
  let sum = 0;
  for (const item of json.items) sum += item.id;
  report("large", [response.headers.get("content-encoding"), json.items.length, sum].join("\n"));
}

run({ events: () => eventSource(path), lines, large }, "mode", mode);
"#,
    )
});

/// Opens the page in `mode` on `path`; register the feed of `path` first, the page asks for it at
/// once.
async fn open_page(server: &TestServer, mode: &str, path: &str) -> Browser {
    open(server, &format!("mode={mode}&path={path}")).await
}

async fn event_source_lockstep(path: &'static str) {
    let mut server = TestServer::with_page(&PAGE).await;
    let feed = server.feed(path);
    let browser = open_page(&server, "events", path).await;
    let result = async {
        let server = &mut server;
        events_in_lockstep(server, feed, &openai_events(&answer_tokens())).await?;
        check_exchange(server, path, Some("gzip"), Some(Version::HTTP_11))?;
        Ok(())
    }
    .await;
    verdict(path, browser, result);
}

#[tokio::test]
async fn chromium_event_source_decodes_padded_gzip_sse_event_by_event_in_lockstep() {
    event_source_lockstep(SSE_PADDED).await;
}

#[tokio::test]
async fn chromium_event_source_decodes_a_padded_sse_stream_that_hibernates_between_events() {
    event_source_lockstep(SSE_PADDED_HIBERNATING).await;
}

/// A streaming `fetch` of `/ndjson-padded`, fed `lines` in lockstep.
async fn fetch_lines_lockstep(lines: Vec<String>) {
    let mut server = TestServer::with_page(&PAGE).await;
    let feed = server.feed(NDJSON_PADDED);
    let browser = open_page(&server, "lines", NDJSON_PADDED).await;
    let result = async {
        let server = &mut server;
        expect(server, "the response head", "head", "200 gzip").await?;
        lines_in_lockstep(server, feed, &lines).await?;
        check_exchange(server, NDJSON_PADDED, Some("gzip"), Some(Version::HTTP_11))?;
        Ok(())
    }
    .await;
    verdict(NDJSON_PADDED, browser, result);
}

#[tokio::test]
async fn chromium_fetch_reader_decodes_padded_gzip_ndjson_line_by_line_in_lockstep() {
    fetch_lines_lockstep(ollama_lines(&answer_tokens())).await;
}

#[tokio::test]
async fn chromium_fetch_decodes_a_padded_empty_body() {
    fetch_lines_lockstep(Vec::new()).await;
}

#[tokio::test]
async fn chromium_decodes_and_parses_a_large_padded_json_body() {
    let mut server = TestServer::with_page(&PAGE).await;
    let browser = open_page(&server, "large", LARGE_PADDED).await;
    let result = async {
        let server = &mut server;
        let (_, count, sum) = large_json();
        let expected = format!("gzip\n{count}\n{sum}");
        expect(server, "the parsed large JSON", "large", &expected).await?;
        check_exchange(server, LARGE_PADDED, Some("gzip"), None)?;
        Ok(())
    }
    .await;
    verdict(LARGE_PADDED, browser, result);
}
