//! The command-line and library clients the `interop_*` tests drive in lockstep: curl
//! (`--compressed`, HTTP/1.1 or HTTP/2 prior knowledge), CPython's `http.client` with `zlib`, and
//! reqwest with its `gzip` feature. Each runner starts from a [`TestServer`] route and fails,
//! naming the chunk, when a chunk is not shown decoded before the next one is produced.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Version;
use tokio::process::Command;
use tokio::time::timeout;

use super::{check_exchange, lockstep_lines, TestServer, WAIT};

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

pub fn curl(url: &str, http2: bool) -> Command {
    let mut command = Command::new("curl");
    command.args([
        "--silent",
        "--show-error",
        "--fail",
        "--no-buffer",
        "--compressed",
        "--noproxy",
        "*",
        "--max-time",
        "120",
        "--dump-header",
        "/dev/stderr",
    ]);
    if http2 {
        command.arg("--http2-prior-knowledge");
    } else {
        command.arg("--http1.1");
    }
    command.arg(url);
    command
}

/// curl's view of the response head (it printed the headers to stderr).
pub fn curl_saw_header(stderr: &str, header: &str) -> bool {
    stderr
        .lines()
        .any(|line| line.trim().eq_ignore_ascii_case(header))
}

pub async fn curl_lockstep(
    path: &str,
    http2: bool,
    chunks: Vec<String>,
    encoding: Option<&str>,
) -> Result<(), String> {
    let server = TestServer::start().await;
    let feed = server.feed(path);
    let stderr = lockstep_lines(curl(&server.url(path), http2), feed, &chunks, WAIT).await?;
    let version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    check_exchange(&server, path, encoding, Some(version))?;
    if let Some(encoding) = encoding {
        if !curl_saw_header(&stderr, &format!("content-encoding: {encoding}")) {
            return Err(format!(
                "curl did not see content-encoding: {encoding}:\n{stderr}"
            ));
        }
    } else if stderr.to_ascii_lowercase().contains("content-encoding") {
        return Err(format!("curl saw a content-encoding:\n{stderr}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Python: http.client + zlib
// ---------------------------------------------------------------------------------------------

/// Reads `path` with `http.client`, decodes each piece with `zlib.decompressobj(16 + MAX_WBITS)`
/// as it arrives (`read1` returns what one socket read delivered) and writes it to stdout at once.
/// Headers go to stderr. Fails when the gzip member is incomplete or followed by garbage.
pub const PYTHON_CLIENT: &str = r#"
import http.client, sys, zlib
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection(host, port, timeout=120)
conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
resp = conn.getresponse()
encoding = resp.getheader("Content-Encoding", "")
sys.stderr.write("status: %d\ncontent-encoding: %s\n" % (resp.status, encoding))
sys.stderr.flush()
if resp.status != 200:
    sys.exit("unexpected status %d" % resp.status)
decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
out = sys.stdout.buffer
while True:
    data = resp.read1(65536)
    if not data:
        break
    out.write(decoder.decompress(data) if decoder else data)
    out.flush()
if decoder:
    out.write(decoder.flush())
    out.flush()
    if not decoder.eof:
        sys.exit("the gzip member is incomplete")
    if decoder.unused_data:
        sys.exit("bytes after the gzip member")
"#;

pub async fn python_lockstep(
    path: &str,
    chunks: Vec<String>,
    encoding: Option<&str>,
) -> Result<(), String> {
    let server = TestServer::start().await;
    let feed = server.feed(path);
    let mut command = Command::new("python3");
    command
        .args(["-c", PYTHON_CLIENT, "127.0.0.1"])
        .arg(server.addr.port().to_string())
        .arg(path);
    let stderr = lockstep_lines(command, feed, &chunks, WAIT).await?;
    check_exchange(&server, path, encoding, Some(Version::HTTP_11))?;
    let expected = format!("content-encoding: {}", encoding.unwrap_or(""));
    if !stderr.lines().any(|line| line == expected) {
        return Err(format!("python saw other headers:\n{stderr}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// reqwest (gzip feature: decodes transparently, drops Content-Encoding)
// ---------------------------------------------------------------------------------------------

pub fn reqwest_client(http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

pub async fn reqwest_lockstep(path: &str, http2: bool, chunks: Vec<String>) -> Result<(), String> {
    let server = TestServer::start().await;
    reqwest_lockstep_on(&server, path, http2, chunks, WAIT).await
}

pub async fn reqwest_lockstep_on(
    server: &TestServer,
    path: &str,
    http2: bool,
    chunks: Vec<String>,
    wait: Duration,
) -> Result<(), String> {
    let feed = server.feed(path);
    let response = timeout(WAIT, reqwest_client(http2).get(server.url(path)).send())
        .await
        .map_err(|_| "the response head did not arrive before chunk 0 was produced".to_string())?
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let full: String = chunks.concat();
    let mut decoded: Vec<u8> = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        feed.send(Bytes::from(chunk.clone()))
            .await
            .map_err(|_| format!("the server dropped the body before chunk {k}"))?;
        let expected_len = full.len() - chunks[k + 1..].iter().map(String::len).sum::<usize>();
        while decoded.len() < expected_len {
            match timeout(wait, stream.next()).await {
                Err(_) => {
                    return Err(format!(
                    "chunk {k} never came out of reqwest's decoder ({} of {expected_len} bytes)",
                    decoded.len()
                ))
                }
                Ok(None) => return Err(format!("the body ended while waiting for chunk {k}")),
                Ok(Some(Err(e))) => return Err(format!("body error at chunk {k}: {e}")),
                Ok(Some(Ok(bytes))) => decoded.extend_from_slice(&bytes),
            }
            if decoded.len() > expected_len || decoded[..] != full.as_bytes()[..decoded.len()] {
                return Err(format!(
                    "decoded output diverges from the chunks at chunk {k}"
                ));
            }
        }
    }
    drop(feed);
    match timeout(WAIT, stream.next()).await {
        Ok(None) => {}
        Ok(Some(Ok(extra))) if extra.is_empty() => {}
        Ok(Some(Ok(extra))) => return Err(format!("extra bytes after the last chunk: {extra:?}")),
        Ok(Some(Err(e))) => return Err(format!("body error at the end (bad gzip trailer?): {e}")),
        Err(_) => return Err("the body did not end".into()),
    }
    let version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let exchange = check_exchange(server, path, Some("gzip"), Some(version))?;
    if !exchange
        .accept_encoding()
        .is_some_and(|value| value.contains("gzip"))
    {
        return Err(format!(
            "reqwest did not ask for gzip: {:?}",
            exchange.accept_encoding()
        ));
    }
    Ok(())
}
