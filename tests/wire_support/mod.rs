//! Wire-level helpers for `tests/wire_rules.rs`: real axum and hyper servers on loopback, and two
//! clients that never decode anything: a raw HTTP/1.1 reader over a `TcpStream` (request bytes
//! written by hand, status line, header lines and body framing parsed here exactly as received)
//! and hyper's low-level HTTP/2 client (`hyper::client::conn::http2`, h2c prior knowledge), which
//! passes `content-encoding` and the DATA bytes through untouched. Bodies are checked with flate2
//! (an independent gzip decoder) and crc32fast, never with this crate's code.

#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tower::{Service, ServiceExt};
use tower_gzip::BoxError;

/// Upper bound of one exchange. Reaching it means a hang, never a timing assertion.
pub const HANG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `axum::serve` with `Router::layer(GzipLayer)`.
    Axum,
    /// hyper-util's auto connection builder serving `ServiceBuilder::layer(GzipLayer)`.
    Hyper,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// The hand-written HTTP/1.1 reader.
    H1Raw,
    /// hyper's HTTP/2 client connection, prior knowledge.
    H2,
}

/// How the response body was delimited on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: no body could follow (HEAD, 1xx, 204, 304); nothing came after the header block.
    H1NoBody,
    /// HTTP/1.1: `content-length` bytes, and nothing after them.
    H1Length(u64),
    /// HTTP/1.1: `transfer-encoding: chunked`, this many non-empty chunks, last-chunk, no trailer
    /// fields, nothing after.
    H1Chunked { chunks: usize },
    /// HTTP/1.1: no length, no chunking: the body ran until the server closed the connection.
    H1Close,
    /// HTTP/2: DATA frames; `trailers` if a trailing HEADERS frame came.
    H2 { trailers: bool },
    /// The head parsed, but the bytes after it do not fit its framing (the reason); `body` holds
    /// every byte after the header block.
    Invalid(String),
}

/// One response as the client saw it on the wire.
#[derive(Clone, Debug)]
pub struct Wire {
    pub status: u16,
    /// Every header field line in the order received, name and value byte for byte (HTTP/1.1: the
    /// name exactly as written, which is lowercase for hyper; the value without surrounding
    /// whitespace).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes after removing the framing only (de-chunked), never decoded.
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Wire {
    /// The values of every field line named `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1: a raw reader
// ---------------------------------------------------------------------------------------------

/// Sends one request with `Connection: close`, reads until the server closes the connection, and
/// parses the bytes exactly as received.
pub async fn h1_raw(
    addr: SocketAddr,
    method: &Method,
    path: &str,
    accept_encoding: Option<&str>,
) -> Result<Wire, String> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
    if let Some(ae) = accept_encoding {
        request.push_str(&format!("accept-encoding: {ae}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");

    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    match timeout(HANG, stream.read_to_end(&mut raw)).await {
        Err(_) => return Err(format!("hang: no EOF after {} bytes", raw.len())),
        Ok(Err(e)) => return Err(format!("read: {e} after {} bytes", raw.len())),
        Ok(Ok(_)) => {}
    }
    parse_h1_response(&raw, method == Method::HEAD)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Parses one complete HTTP/1.1 response that is all of `raw` (the connection was closed after
/// it): status line, header lines, then the body as its framing says, with nothing left over.
pub fn parse_h1_response(raw: &[u8], head_request: bool) -> Result<Wire, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no end of the header block in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(400)])
        )
    })?;
    // Every line of the head, each ending in CRLF; a bare CR or LF inside a line is malformed.
    let head = &raw[..end + 2];
    let rest = &raw[end + 4..];
    let mut lines = head
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty())
        .map(|line| match line.strip_suffix(b"\r") {
            Some(line) if !line.contains(&b'\r') => Ok(line),
            _ => Err(format!("a head line not ending in CRLF: {line:?}")),
        });
    let status_line = lines.next().ok_or("empty response")??;
    let status_text = String::from_utf8_lossy(status_line).into_owned();
    let mut parts = status_text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" {
        return Err(format!("status line {status_text:?}: not HTTP/1.1"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("status line {status_text:?}: no status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let line = line?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
        let name = String::from_utf8(line[..colon].to_vec())
            .map_err(|_| format!("non-UTF-8 header name: {line:?}"))?;
        if name.is_empty() || name.bytes().any(|b| b == b' ' || b == b'\t') {
            return Err(format!("malformed header name {name:?}"));
        }
        headers.push((name, trim_ows(&line[colon + 1..]).to_vec()));
    }
    let mut wire = Wire {
        status,
        headers,
        body: Vec::new(),
        framing: Framing::H1NoBody,
    };

    wire.framing = body_framing(&wire, rest, head_request).unwrap_or_else(Framing::Invalid);
    wire.body = match &wire.framing {
        Framing::H1Chunked { .. } => dechunk(rest).map(|(body, _)| body).unwrap_or_default(),
        _ => rest.to_vec(),
    };
    Ok(wire)
}

/// How the bytes after the header block are delimited, or why they do not fit the head.
fn body_framing(wire: &Wire, rest: &[u8], head_request: bool) -> Result<Framing, String> {
    let status = wire.status;
    let bodiless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if bodiless {
        if !rest.is_empty() {
            return Err(format!(
                "{} bytes after the header block of a response that has no body ({})",
                rest.len(),
                if head_request {
                    "HEAD".to_string()
                } else {
                    format!("status {status}")
                }
            ));
        }
        return Ok(Framing::H1NoBody);
    }
    let te = wire.values("transfer-encoding");
    let cl = wire.values("content-length");
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => Ok(Framing::H1Close),
        ([], [len]) => {
            let len: u64 = std::str::from_utf8(len)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("malformed content-length {len:?}"))?;
            if rest.len() as u64 != len {
                return Err(format!(
                    "content-length: {len} but {} body bytes before the connection closed",
                    rest.len()
                ));
            }
            Ok(Framing::H1Length(len))
        }
        ([b"chunked"], []) => dechunk(rest).map(|(_, chunks)| Framing::H1Chunked { chunks }),
        (te, cl) => Err(format!(
            "unusable framing: transfer-encoding {:?}, content-length {:?}",
            te.iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>(),
            cl.iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>(),
        )),
    }
}

/// Removes chunked framing (RFC 9112 §7.1); the input must end exactly after the last-chunk and
/// an empty trailer section. Returns the body and the number of data chunks.
fn dechunk(mut rest: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut body = Vec::new();
    let mut chunks = 0;
    loop {
        let line_end = find(rest, b"\r\n").ok_or("chunk-size line without CRLF")?;
        let line = &rest[..line_end];
        let size_field = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size_field)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| format!("malformed chunk-size line {line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            if rest != b"\r\n" {
                return Err(format!(
                    "after the last-chunk expected an empty trailer section (CRLF) and the end, got \
                     {} bytes: {:?}",
                    rest.len(),
                    String::from_utf8_lossy(&rest[..rest.len().min(200)])
                ));
            }
            return Ok((body, chunks));
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(format!(
                "chunk of {size} bytes truncated or not followed by CRLF"
            ));
        }
        body.extend_from_slice(&rest[..size]);
        chunks += 1;
        rest = &rest[size + 2..];
    }
}

/// Opens a request that the server answers with a stream it never ends, and returns the
/// connection (keep it to hold the stream open) and the response head as received.
pub async fn h1_open_stream(
    addr: SocketAddr,
    path: &str,
    accept_encoding: &str,
) -> Result<(TcpStream, Wire), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept-encoding: {accept_encoding}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&raw, b"\r\n\r\n").is_none() {
        let n = match timeout(HANG, stream.read(&mut buf)).await {
            Err(_) => return Err("hang: the held stream's head never arrived".into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(0)) => return Err("the held stream's connection closed".into()),
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&buf[..n]);
    }
    let end = find(&raw, b"\r\n\r\n").unwrap_or_default() + 4;
    // Parse the head alone, as if it were a HEAD response.
    let wire = parse_h1_response(&raw[..end], true)?;
    Ok((stream, wire))
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: hyper's client connection, which does not decode content-encoding
// ---------------------------------------------------------------------------------------------

pub async fn h2(
    addr: SocketAddr,
    method: &Method,
    path: &str,
    accept_encoding: Option<&str>,
) -> Result<Wire, String> {
    match timeout(HANG, h2_inner(addr, method, path, accept_encoding)).await {
        Err(_) => Err("hang: the HTTP/2 exchange did not finish".into()),
        Ok(result) => result,
    }
}

async fn h2_inner(
    addr: SocketAddr,
    method: &Method,
    path: &str,
    accept_encoding: Option<&str>,
) -> Result<Wire, String> {
    let io = TokioIo::new(
        TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    );
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method.clone())
        .uri(format!("http://{addr}{path}"));
    if let Some(ae) = accept_encoding {
        request = request.header("accept-encoding", ae);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("h2 request: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let mut body = response.into_body();
        let mut data = Vec::new();
        let mut trailers = false;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| format!("h2 body error after {} DATA bytes: {e:?}", data.len()))?;
            match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(_) => trailers = true,
            }
        }
        Ok(Wire {
            status,
            headers,
            body: data,
            framing: Framing::H2 { trailers },
        })
    }
    .await;
    connection.abort();
    result
}

pub async fn exchange(
    proto: Proto,
    addr: SocketAddr,
    method: &Method,
    path: &str,
    accept_encoding: Option<&str>,
) -> Result<Wire, String> {
    match proto {
        Proto::H1Raw => h1_raw(addr, method, path, accept_encoding).await,
        Proto::H2 => h2(addr, method, path, accept_encoding).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A server task; dropping it aborts the accept loop (and, for hyper, every connection).
pub struct Running {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve_axum(app: axum::Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Running { addr, task }
}

/// Serves `svc` with hyper-util's auto builder: HTTP/1.1, or HTTP/2 when the client starts with
/// the prior-knowledge preface.
pub async fn serve_hyper<S, B>(svc: S) -> Running
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            connections.spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Running { addr, task }
}

/// The outermost layer of the plain hyper stack: the body of a response to an HTTP/2 `HEAD`
/// yields no frames, while its size hint and end-of-stream flag stay those of the inner body.
///
/// hyper's HTTP/1.1 server never writes a body for `HEAD` but derives its framing headers from
/// the body's size hint; its HTTP/2 server sends the body as DATA frames, which hyper's HTTP/2
/// client then rejects for a `HEAD` (h2 allows no DATA on a HEAD response). This wrapper makes
/// HTTP/2 treat `HEAD` as hyper's HTTP/1.1 server does: `content-length` from the size hint when
/// exact, no body. It changes no header and does nothing for HTTP/1.1 or other methods.
#[derive(Clone, Debug)]
pub struct StripH2HeadBody<S>(pub S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for StripH2HeadBody<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    ReqB: Send + 'static,
    ResB: 'static,
{
    type Response = Response<H2HeadBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Readiness is awaited per call on a clone (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let strip = request.method() == Method::HEAD && request.version() == Version::HTTP_2;
        let inner = self.0.clone();
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            Ok(response.map(|body| H2HeadBody { inner: body, strip }))
        })
    }
}

/// See [`StripH2HeadBody`].
pub struct H2HeadBody<B> {
    inner: B,
    strip: bool,
}

impl<B> Body for H2HeadBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        if self.strip {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body type every handler in the table returns.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// Fixed JSON lines cut to exactly `len` bytes: compressible, like an API response.
pub fn json_body(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"name\":\"user{}\",\"active\":{}}}\n",
                i % 97,
                i % 3 == 0
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Decodes `raw` as exactly one complete gzip member of `expected` with flate2, and checks that it
/// ends with the member's trailer (CRC32 and ISIZE of `expected`), so nothing follows it.
pub fn check_gzip_member(raw: &[u8], expected: &[u8]) -> Result<(), String> {
    if raw.len() < 18 || raw[..3] != [0x1f, 0x8b, 0x08] {
        return Err(format!(
            "not a gzip member: {} bytes starting {:02x?}",
            raw.len(),
            &raw[..raw.len().min(8)]
        ));
    }
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut decoded)
        .map_err(|e| format!("flate2 rejects the body ({} bytes): {e}", raw.len()))?;
    if decoded != expected {
        return Err(format!(
            "decodes to {} bytes that differ from the handler's {} bytes",
            decoded.len(),
            expected.len()
        ));
    }
    let mut trailer = crc32fast::hash(expected).to_le_bytes().to_vec();
    trailer.extend_from_slice(&(expected.len() as u32).to_le_bytes());
    if raw[raw.len() - 8..] != trailer[..] {
        return Err("the body does not end with the member's CRC32/ISIZE trailer".into());
    }
    Ok(())
}

/// A short printable view of some bytes for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{} bytes {:?}…", bytes.len(), String::from_utf8_lossy(head))
    } else {
        format!("{} bytes {head:02x?}…", bytes.len())
    }
}
