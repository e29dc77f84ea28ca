//! A test page in headless Chromium that reports what it receives to the [`TestServer`]: the
//! page's shared script, the one-browser-at-a-time lock, the waits on the page's reports, and the
//! lockstep runners for an `EventSource` and for a streaming `fetch` read line by line.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use tokio::sync::mpsc;

use super::chromium::Chromium;
use super::{event_data, TestServer, WAIT};

/// The start of every test page's script: `report(kind, text)` POSTs `kind\ntext` to `/report`
/// (uncaught errors are reported as `error`), `eventSource(path)` and `reportLines(response)`
/// report what the page receives, and `run(table, what, key)` starts `table[key]`.
const SCRIPT_HELPERS: &str = r#""use strict";

// Reports are POSTed one after another, so the server sees them in the order they were made.
let chain = Promise.resolve();
function report(kind, text) {
  const body = kind + "\n" + text;
  chain = chain.then(() => fetch("/report", { method: "POST", body }).then(() => {}, () => {}));
  return chain;
}
window.addEventListener("error", (e) => report("error", "uncaught: " + e.message));
window.addEventListener("unhandledrejection", (e) => report("error", "unhandled rejection: " + e.reason));

// Reads `path` with an EventSource: reports `open`, the data of each event, and `closed` after
// `[DONE]`; an error closes the source.
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

// Reads the body of a `fetch` response as it arrives: reports each `line`, then `end` with what
// followed the last newline.
async function reportLines(response) {
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

// Starts `table[key]`, reporting an error if it fails or if there is no such `what`.
function run(table, what, key) {
  if (table[key]) {
    Promise.resolve().then(table[key]).catch((e) => report("error", "failed: " + e));
  } else {
    report("error", "unknown " + what + " " + key);
  }
}
"#;

/// A page for [`TestServer::with_page`] titled `title`, whose script is [`SCRIPT_HELPERS`]
/// followed by `script`.
pub fn page(title: &str, script: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body>\n<script>\n{SCRIPT_HELPERS}\n{script}</script>\n</body>\n</html>\n"
    )
}

/// One browser at a time: Chromium is heavy for a 2-core machine, and lockstep does not need
/// parallelism.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Chromium showing the page, holding the one-browser-at-a-time lock.
pub struct Browser {
    chromium: Chromium,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// Opens `/page?{query}` once no other browser is open; register the feeds the page asks for at
/// once first. Fails the test if Chromium cannot start.
pub async fn open(server: &TestServer, query: &str) -> Browser {
    let lock = BROWSER.lock().await;
    match Chromium::launch(&server.url(&format!("/page?{query}"))) {
        Ok(chromium) => Browser {
            chromium,
            _one_at_a_time: lock,
        },
        Err(e) => panic!("{e}"),
    }
}

/// Fails the test with `result`'s error and the end of Chromium's log.
pub fn verdict(what: &str, browser: Browser, result: Result<(), String>) {
    if let Err(e) = result {
        panic!(
            "{what}: {e}\n--- end of chromium's log ---\n{}",
            browser.chromium.log_tail()
        );
    }
}

/// The next report from the page, as (kind, text); a page error or an unexpected request fails.
pub async fn next(server: &mut TestServer, waiting_for: &str) -> Result<(String, String), String> {
    next_within(server, WAIT, waiting_for).await
}

/// [`next`] with another bound than [`WAIT`].
pub async fn next_within(
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

/// Waits for the next report and checks that it is `kind` with `text`.
pub async fn expect(
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

/// Drives a page reading `feed`'s route with `eventSource`: waits for the stream to open, sends
/// each of `events` only after the page reported the one before, waits for the page to close the
/// stream after `[DONE]`, then closes the feed.
pub async fn events_in_lockstep(
    server: &mut TestServer,
    feed: mpsc::Sender<Bytes>,
    events: &[String],
) -> Result<(), String> {
    expect(server, "the stream to open", "open", "").await?;
    for (k, event) in events.iter().enumerate() {
        feed.send(Bytes::from(event.clone()))
            .await
            .map_err(|_| format!("the server dropped the body before event {k}"))?;
        expect(server, &format!("event {k}"), "event", event_data(event)).await?;
    }
    expect(server, "the page to close the stream", "closed", "").await?;
    drop(feed);
    Ok(())
}

/// Drives a page reading `feed`'s route with `reportLines`, after its response head was checked:
/// sends each of `lines` only after the page reported the one before, then closes the feed and
/// waits for the end of the body with nothing after the last newline.
pub async fn lines_in_lockstep(
    server: &mut TestServer,
    feed: mpsc::Sender<Bytes>,
    lines: &[String],
) -> Result<(), String> {
    for (k, line) in lines.iter().enumerate() {
        feed.send(Bytes::from(line.clone()))
            .await
            .map_err(|_| format!("the server dropped the body before line {k}"))?;
        expect(server, &format!("line {k}"), "line", line.trim_end()).await?;
    }
    drop(feed);
    expect(server, "the end of the body", "end", "").await
}
