//! Clients this project did not write read streamed responses through `GzipLayer` incrementally:
//! curl (`-N --compressed`, HTTP/1.1 and HTTP/2 prior knowledge), CPython's `http.client` with
//! `zlib.decompressobj(16 + zlib.MAX_WBITS)`, and reqwest with its `gzip` feature.
//!
//! Every test runs in lockstep: the server produces chunk `k + 1` only after the client has shown
//! chunk `k` decoded (a line printed on its stdout, or bytes out of reqwest's decoder). A chunk
//! that stayed in a compressor, a proxy buffer or a client buffer makes the wait time out and the
//! test fail naming the chunk. The server records each exchange, so the tests also check that the
//! body really was gzip on the wire (reqwest hides `Content-Encoding` after decoding).
//!
//! curl and python3 are installed by `.ci/run` when missing; a missing program fails the test.

mod interop_support;

use std::time::Duration;

use interop_support::clients::*;
use interop_support::*;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curl_http1_gzip_ndjson_each_line_printed_before_the_next_is_produced() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = curl_lockstep("/ndjson", false, lines, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http1_gzip_ndjson_every_frame_policy_each_line_printed_in_lockstep() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = curl_lockstep("/ndjson-every-frame", false, lines, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http1_sse_skipped_by_default_each_event_printed_in_lockstep() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = curl_lockstep("/sse", false, events, None).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http1_compressed_sse_each_event_printed_before_the_next_is_produced() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = curl_lockstep("/sse-gzip", false, events, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http2_gzip_ndjson_each_line_printed_before_the_next_is_produced() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = curl_lockstep("/ndjson", true, lines, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn curl_http2_compressed_sse_each_event_printed_before_the_next_is_produced() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = curl_lockstep("/sse-gzip", true, events, Some("gzip")).await {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Python: http.client + zlib
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn python_http_client_zlib_gzip_ndjson_each_line_decoded_before_the_next_is_produced() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = python_lockstep("/ndjson", lines, Some("gzip")).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn python_http_client_zlib_compressed_sse_each_event_decoded_before_the_next_is_produced() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = python_lockstep("/sse-gzip", events, Some("gzip")).await {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// reqwest (gzip feature: decodes transparently, drops Content-Encoding)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reqwest_http1_gzip_ndjson_each_line_decoded_before_the_next_is_produced() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = reqwest_lockstep("/ndjson", false, lines).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reqwest_http1_compressed_sse_each_event_decoded_before_the_next_is_produced() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = reqwest_lockstep("/sse-gzip", false, events).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reqwest_http2_gzip_ndjson_each_line_decoded_before_the_next_is_produced() {
    let lines = ollama_lines(&answer_tokens());
    if let Err(e) = reqwest_lockstep("/ndjson", true, lines).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reqwest_http2_compressed_sse_each_event_decoded_before_the_next_is_produced() {
    let events = openai_events(&answer_tokens());
    if let Err(e) = reqwest_lockstep("/sse-gzip", true, events).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reqwest_large_json_is_gzip_on_the_wire_and_decodes_whole() {
    let server = TestServer::start().await;
    let (expected, _, _) = large_json();
    let body = timeout(Duration::from_secs(60), async {
        reqwest_client(false)
            .get(server.url("/large.json"))
            .send()
            .await?
            .bytes()
            .await
    })
    .await
    .expect("the large body arrives")
    .expect("the large body decodes");
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the decoded body differs");
    check_exchange(&server, "/large.json", Some("gzip"), None).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Controls: the runners fail when the server holds the body back
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn control_curl_lockstep_fails_when_the_server_holds_bytes_back() {
    let server = TestServer::start().await;
    let feed = server.feed("/ndjson-held");
    let lines = ollama_lines(&answer_tokens());
    let curl = curl(&server.url("/ndjson-held"), false);
    // Only the failure is expected here, so a short bound keeps the test fast.
    let error = lockstep_lines(curl, feed, &lines, Duration::from_millis(500))
        .await
        .expect_err("a body held back until the end must fail the lockstep check");
    assert!(
        error.contains("chunk 0 was produced"),
        "unexpected failure: {error}"
    );
}

#[tokio::test]
async fn control_reqwest_lockstep_fails_when_the_server_holds_bytes_back() {
    let server = TestServer::start().await;
    let lines = ollama_lines(&answer_tokens());
    let error = reqwest_lockstep_on(
        &server,
        "/ndjson-held",
        false,
        lines,
        Duration::from_millis(500),
    )
    .await
    .expect_err("a body held back until the end must fail the lockstep check");
    assert!(
        error.starts_with("chunk 0 never came out"),
        "unexpected failure: {error}"
    );
}
