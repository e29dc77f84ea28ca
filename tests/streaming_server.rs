//! End-to-end streaming tests through a real server on loopback.
//!
//! Every test runs in lockstep: the handler's body is fed from a channel the test controls. The test
//! sends chunk `k`, then reads response frames from its own client connection into an independent
//! incremental gzip decoder (flate2) until the decoded output equals chunks `0..=k`; only then does
//! it send chunk `k + 1`. A chunk that never becomes decodable makes the wait time out and the test
//! fail, naming the chunk. Timeouts only detect failure; nothing here measures time.
//!
//! Matrix: server (axum, plain hyper) x protocol (HTTP/1.1, HTTP/2 prior knowledge) x flush policy
//! (OnStall, EveryFrame), plus SSE (skipped by default, compressed when opted in), identity for a
//! client without `Accept-Encoding`, and headers sent before the first chunk exists.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, VARY};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tower::{service_fn, ServiceBuilder};
use tower_gzip::{BoxError, FlushPolicy, GzipLayer};

/// Upper bound of every single wait; reaching it means the test failed.
const WAIT: Duration = Duration::from_secs(10);
/// Capacity of the chunk channel. The test never has more than one chunk in flight.
const CHANNEL_CAPACITY: usize = 4;
const NDJSON: &str = "application/x-ndjson";
const SSE: &str = "text/event-stream";

#[derive(Clone, Copy, Debug)]
enum Server {
    Axum,
    Hyper,
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    Http2,
}

/// What the response must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `Content-Encoding: gzip`; the body is one gzip member.
    Gzip,
    /// No `Content-Encoding`; the body is the chunks, byte for byte.
    Identity,
}

struct Case {
    layer: GzipLayer,
    content_type: &'static str,
    accept_gzip: bool,
    chunks: Vec<Bytes>,
    expect: Expect,
    /// Assert that `Vary` lists `Accept-Encoding`.
    expect_vary: bool,
    /// Control only: wrap the layer's output in a body that holds everything back until the end.
    buffer_until_end: bool,
    /// The handler yields each chunk as frames of at most this many bytes, all ready back to back
    /// (then it stalls until the next chunk); `None`: one frame per chunk.
    frame_len: Option<usize>,
    wait: Duration,
}

impl Case {
    fn ndjson(layer: GzipLayer) -> Self {
        Self {
            layer,
            content_type: NDJSON,
            accept_gzip: true,
            chunks: ndjson_chunks(),
            expect: Expect::Gzip,
            expect_vary: true,
            buffer_until_end: false,
            frame_len: None,
            wait: WAIT,
        }
    }

    fn sse(layer: GzipLayer, expect: Expect) -> Self {
        Self {
            layer,
            content_type: SSE,
            accept_gzip: true,
            chunks: sse_events(),
            expect,
            expect_vary: expect == Expect::Gzip,
            buffer_until_end: false,
            frame_len: None,
            wait: WAIT,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random hex (xorshift64), so the big chunk compresses only about 2:1 and its
/// compressed form still spans several internal and HTTP/2 frames.
fn pseudo_random_hex(len: usize, mut seed: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.push(HEX[(seed & 15) as usize] as char);
    }
    out
}

/// About 20 NDJSON-like chunks of varied sizes: tiny ones, a line split across two chunks, medium
/// repetitive ones and one of about 100 KB (larger than the layer's 64 KiB poll budget and 32 KiB
/// frame target, and than HTTP/2's 16 KiB frames).
fn ndjson_chunks() -> Vec<Bytes> {
    let mut chunks: Vec<String> = vec![
        "{\"seq\":0,\"event\":\"start\"}\n".into(),
        "{\"i\":1}\n".into(),
        "{\"seq\":2,\"par".into(),
        "tial\":true}\n".into(),
        format!(
            "{{\"seq\":4,\"rows\":[{}]}}\n",
            "{\"a\":1,\"b\":\"xyz\"},".repeat(300)
        ),
        "\n".into(),
        format!(
            "{{\"seq\":6,\"blob\":\"{}\"}}\n",
            pseudo_random_hex(100 * 1024, 0x9E37_79B9_7F4A_7C15)
        ),
        "{\"i\":7}\n".into(),
    ];
    for seq in 8..19 {
        let token = "tok".repeat(seq * 7);
        chunks.push(format!("{{\"seq\":{seq},\"token\":\"{token}\"}}\n"));
    }
    chunks.push("{\"seq\":19,\"event\":\"done\"}\n".into());
    chunks.into_iter().map(Bytes::from).collect()
}

/// About 15 Server-Sent Events, one per chunk.
fn sse_events() -> Vec<Bytes> {
    let mut events = vec![Bytes::from_static(b": stream opened\n\n")];
    for i in 1..14 {
        let text = "word ".repeat(i * 3);
        events.push(Bytes::from(format!(
            "id: {i}\nevent: token\ndata: {{\"i\":{i},\"text\":\"{text}\"}}\n\n"
        )));
    }
    events.push(Bytes::from(format!(
        "event: big\ndata: {}\n\n",
        pseudo_random_hex(40 * 1024, 42)
    )));
    events.push(Bytes::from_static(b"event: done\ndata: [DONE]\n\n"));
    events
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// The handler's side of the test channel: taken by the (single) request.
type Slot = Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>;

/// The handler's body: whatever the test sends, one data frame per chunk, or frames of at most
/// `frame_len` bytes each, ready one after another; it ends when the test drops the sender.
fn channel_body(
    rx: mpsc::Receiver<Bytes>,
    frame_len: Option<usize>,
) -> StreamBody<
    impl futures_util::stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Unpin,
> {
    StreamBody::new(ReceiverStream::new(rx).flat_map(move |chunk| {
        let len = frame_len.unwrap_or(chunk.len()).max(1);
        let frames: Vec<_> = (0..chunk.len())
            .step_by(len)
            .map(|at| Ok(Frame::data(chunk.slice(at..chunk.len().min(at + len)))))
            .collect();
        futures_util::stream::iter(frames)
    }))
}

fn take_receiver(slot: &Slot) -> mpsc::Receiver<Bytes> {
    slot.lock()
        .unwrap()
        .take()
        .expect("each test server serves exactly one streaming request")
}

struct Running {
    addr: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

async fn spawn_server(server: Server, case: &Case) -> Running {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let slot: Slot = Arc::new(Mutex::new(Some(rx)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let content_type = case.content_type;
    let frame_len = case.frame_len;
    let layer = case.layer.clone();

    let task = match server {
        Server::Axum => {
            assert!(!case.buffer_until_end, "the control runs on hyper only");
            let app = Router::new()
                .route(
                    "/stream",
                    get(move || {
                        let rx = take_receiver(&slot);
                        async move {
                            Response::builder()
                                .header(CONTENT_TYPE, content_type)
                                .body(axum::body::Body::new(channel_body(rx, frame_len)))
                                .unwrap()
                        }
                    }),
                )
                .layer(layer);
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            })
        }
        Server::Hyper => {
            let handler = service_fn(move |_request: Request<Incoming>| {
                let rx = take_receiver(&slot);
                async move {
                    let response = Response::builder()
                        .header(CONTENT_TYPE, content_type)
                        .body(channel_body(rx, frame_len))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            if case.buffer_until_end {
                let svc = ServiceBuilder::new()
                    .map_response(|response: Response<_>| response.map(BufferUntilEnd::new))
                    .layer(layer)
                    .service(handler);
                tokio::spawn(serve_hyper(listener, TowerToHyperService::new(svc)))
            } else {
                let svc = ServiceBuilder::new().layer(layer).service(handler);
                tokio::spawn(serve_hyper(listener, TowerToHyperService::new(svc)))
            }
        }
    };
    Running { addr, tx, task }
}

/// Accepts connections and serves each with hyper-util's auto builder (HTTP/1.1, or HTTP/2 when the
/// client starts with the prior-knowledge preface). Aborting this task drops the `JoinSet` and with
/// it every connection task.
async fn serve_hyper<S, B>(listener: TcpListener, svc: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = svc.clone();
        connections.spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

struct Client {
    response: Response<Incoming>,
    connection: JoinHandle<()>,
}

/// Opens a connection, sends `GET /stream` and waits for the response head.
async fn request(
    addr: SocketAddr,
    proto: Proto,
    accept_gzip: bool,
    wait: Duration,
) -> Result<Client, String> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let mut builder = Request::builder().header(HOST, addr.to_string());
    if accept_gzip {
        builder = builder.header(ACCEPT_ENCODING, "gzip");
    }
    let (response, connection) = match proto {
        Proto::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = builder.uri("/stream").body(Empty::<Bytes>::new()).unwrap();
            (
                timeout(wait, sender.send_request(request)).await,
                connection,
            )
        }
        Proto::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = builder
                .uri(format!("http://{addr}/stream"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            (
                timeout(wait, sender.send_request(request)).await,
                connection,
            )
        }
    };
    match response {
        Ok(Ok(response)) => Ok(Client {
            response,
            connection,
        }),
        Ok(Err(e)) => {
            connection.abort();
            Err(format!("request failed: {e}"))
        }
        Err(_) => {
            connection.abort();
            Err("the response head did not arrive before chunk 0 was produced: headers are held back \
                 waiting for the body"
                .into())
        }
    }
}

fn header_lists(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn check_head(case: &Case, headers: &HeaderMap) -> Result<(), String> {
    match case.expect {
        Expect::Gzip => {
            let encoding = headers
                .get(CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap_or("<non-utf8>"));
            if encoding != Some("gzip") {
                return Err(format!(
                    "expected content-encoding: gzip, got {encoding:?} ({headers:?})"
                ));
            }
        }
        Expect::Identity => {
            if let Some(encoding) = headers.get(CONTENT_ENCODING) {
                return Err(format!("expected no content-encoding, got {encoding:?}"));
            }
        }
    }
    if case.expect_vary && !header_lists(headers, VARY, "accept-encoding") {
        return Err(format!(
            "expected vary to list Accept-Encoding, got {:?}",
            headers.get_all(VARY)
        ));
    }
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        return Err(format!(
            "a streamed response must not have content-length, got {length:?}"
        ));
    }
    if headers.get(CONTENT_TYPE).map(|v| v.as_bytes()) != Some(case.content_type.as_bytes()) {
        return Err(format!(
            "content-type changed: {:?}",
            headers.get(CONTENT_TYPE)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lockstep runner
// ---------------------------------------------------------------------------------------------

/// The client's view of the body so far: decoded with an independent incremental decoder, or raw.
enum Decoded {
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    Identity(Vec<u8>),
}

impl Decoded {
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            Decoded::Gzip(decoder) => {
                decoder
                    .write_all(data)
                    .and_then(|()| decoder.flush())
                    .map_err(|e| format!("the client's gzip decoder rejected the stream: {e}"))?;
            }
            Decoded::Identity(buffer) => buffer.extend_from_slice(data),
        }
        Ok(())
    }

    fn so_far(&self) -> &[u8] {
        match self {
            Decoded::Gzip(decoder) => decoder.get_ref(),
            Decoded::Identity(buffer) => buffer,
        }
    }
}

/// Runs one lockstep exchange. `Err` describes the first failure.
async fn lockstep(server: Server, proto: Proto, case: Case) -> Result<(), String> {
    let Running { addr, tx, task } = spawn_server(server, &case).await;
    let client = match request(addr, proto, case.accept_gzip, case.wait).await {
        Ok(client) => client,
        Err(e) => {
            task.abort();
            return Err(e);
        }
    };
    let result = exchange(&case, tx, client.response).await;
    client.connection.abort();
    task.abort();
    result
}

async fn exchange(
    case: &Case,
    tx: mpsc::Sender<Bytes>,
    response: Response<Incoming>,
) -> Result<(), String> {
    // The head arrived and the test has not produced any chunk yet.
    assert_eq!(
        tx.capacity(),
        tx.max_capacity(),
        "no chunk may be sent before the head arrives"
    );
    check_head(case, response.headers())?;

    let mut body = response.into_body();
    let mut decoded = match case.expect {
        Expect::Gzip => Decoded::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
        Expect::Identity => Decoded::Identity(Vec::new()),
    };
    let full: Vec<u8> = case.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut raw = Vec::new();
    let mut expected_len = 0;

    for (k, chunk) in case.chunks.iter().enumerate() {
        tx.send(chunk.clone())
            .await
            .map_err(|_| format!("the handler's body was dropped before chunk {k} was sent"))?;
        expected_len += chunk.len();
        while decoded.so_far().len() < expected_len {
            let frame = match timeout(case.wait, body.frame()).await {
                Err(_) => {
                    return Err(format!(
                        "chunk {k} ({} bytes) never became decodable: the client has {} of {expected_len} \
                         bytes after {} raw body bytes",
                        chunk.len(),
                        decoded.so_far().len(),
                        raw.len()
                    ))
                }
                Ok(None) => return Err(format!("the body ended while waiting for chunk {k}")),
                Ok(Some(Err(e))) => return Err(format!("body error while waiting for chunk {k}: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            let data = frame
                .into_data()
                .map_err(|_| format!("unexpected non-data frame while waiting for chunk {k}"))?;
            raw.extend_from_slice(&data);
            decoded.feed(&data)?;
            let so_far = decoded.so_far();
            if so_far.len() > expected_len || so_far != &full[..so_far.len()] {
                return Err(format!(
                    "decoded output diverges from the chunks sent (at chunk {k}, {} bytes decoded)",
                    so_far.len()
                ));
            }
        }
    }

    // End the handler's stream, then drain the body to its end.
    drop(tx);
    loop {
        match timeout(case.wait, body.frame()).await {
            Err(_) => return Err("the body did not end after the handler's stream ended".into()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("body error after the last chunk: {e}")),
            Ok(Some(Ok(frame))) => {
                let data = frame
                    .into_data()
                    .map_err(|_| "unexpected non-data frame after the last chunk".to_string())?;
                raw.extend_from_slice(&data);
                decoded.feed(&data)?;
            }
        }
    }

    match decoded {
        Decoded::Identity(buffer) => {
            if buffer != full {
                return Err("the raw body differs from the concatenated chunks".into());
            }
        }
        Decoded::Gzip(decoder) => {
            let incremental = decoder
                .finish()
                .map_err(|e| format!("incomplete gzip stream: {e}"))?;
            if incremental != full {
                return Err("the incrementally decoded body differs from the chunks".into());
            }
            check_complete_gzip_member(&raw, &full)?;
        }
    }
    Ok(())
}

/// The raw body is exactly one complete gzip member of `full`: it decodes in one go (which checks
/// the CRC) and ends with the trailer of `full`, with nothing after it.
fn check_complete_gzip_member(raw: &[u8], full: &[u8]) -> Result<(), String> {
    if raw.len() < 18 || raw[..2] != [0x1f, 0x8b] {
        return Err(format!("not a gzip member ({} bytes)", raw.len()));
    }
    let mut whole = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut whole)
        .map_err(|e| format!("the collected body is not a complete gzip stream: {e}"))?;
    if whole != full {
        return Err("the collected body decodes to something else than the chunks".into());
    }
    let mut trailer = crc32fast::hash(full).to_le_bytes().to_vec();
    trailer.extend_from_slice(&(full.len() as u32).to_le_bytes());
    if raw[raw.len() - 8..] != trailer[..] {
        return Err(
            "the body does not end with the gzip trailer (CRC32, ISIZE) of the chunks".into(),
        );
    }
    Ok(())
}

async fn run(server: Server, proto: Proto, case: Case) {
    if let Err(e) = lockstep(server, proto, case).await {
        panic!("{server:?} {proto:?}: {e}");
    }
}

fn on_stall() -> GzipLayer {
    GzipLayer::new()
}

fn every_frame() -> GzipLayer {
    GzipLayer::new().flush_policy(FlushPolicy::EveryFrame)
}

// ---------------------------------------------------------------------------------------------
// NDJSON matrix: server x protocol x flush policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn axum_http1_on_stall_each_chunk_decodes_before_next_is_sent() {
    run(Server::Axum, Proto::Http1, Case::ndjson(on_stall())).await;
}

#[tokio::test]
async fn axum_http1_every_frame_each_chunk_decodes_before_next_is_sent() {
    run(Server::Axum, Proto::Http1, Case::ndjson(every_frame())).await;
}

#[tokio::test]
async fn axum_http2_on_stall_each_chunk_decodes_before_next_is_sent() {
    run(Server::Axum, Proto::Http2, Case::ndjson(on_stall())).await;
}

#[tokio::test]
async fn axum_http2_every_frame_each_chunk_decodes_before_next_is_sent() {
    run(Server::Axum, Proto::Http2, Case::ndjson(every_frame())).await;
}

#[tokio::test]
async fn hyper_http1_on_stall_each_chunk_decodes_before_next_is_sent() {
    run(Server::Hyper, Proto::Http1, Case::ndjson(on_stall())).await;
}

#[tokio::test]
async fn hyper_http1_every_frame_each_chunk_decodes_before_next_is_sent() {
    run(Server::Hyper, Proto::Http1, Case::ndjson(every_frame())).await;
}

#[tokio::test]
async fn hyper_http2_on_stall_each_chunk_decodes_before_next_is_sent() {
    run(Server::Hyper, Proto::Http2, Case::ndjson(on_stall())).await;
}

#[tokio::test]
async fn hyper_http2_every_frame_each_chunk_decodes_before_next_is_sent() {
    run(Server::Hyper, Proto::Http2, Case::ndjson(every_frame())).await;
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events: raw by default, compressed when opted in
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn axum_http1_sse_is_not_compressed_by_default_and_each_event_arrives_raw() {
    run(
        Server::Axum,
        Proto::Http1,
        Case::sse(GzipLayer::new(), Expect::Identity),
    )
    .await;
}

#[tokio::test]
async fn axum_http2_sse_is_not_compressed_by_default_and_each_event_arrives_raw() {
    run(
        Server::Axum,
        Proto::Http2,
        Case::sse(GzipLayer::new(), Expect::Identity),
    )
    .await;
}

#[tokio::test]
async fn hyper_http1_sse_is_not_compressed_by_default_and_each_event_arrives_raw() {
    run(
        Server::Hyper,
        Proto::Http1,
        Case::sse(GzipLayer::new(), Expect::Identity),
    )
    .await;
}

#[tokio::test]
async fn hyper_http2_sse_is_not_compressed_by_default_and_each_event_arrives_raw() {
    run(
        Server::Hyper,
        Proto::Http2,
        Case::sse(GzipLayer::new(), Expect::Identity),
    )
    .await;
}

#[tokio::test]
async fn axum_http1_compressed_sse_each_event_decodes_before_next_is_sent() {
    run(
        Server::Axum,
        Proto::Http1,
        Case::sse(GzipLayer::new().compress_sse(true), Expect::Gzip),
    )
    .await;
}

#[tokio::test]
async fn axum_http2_compressed_sse_each_event_decodes_before_next_is_sent() {
    run(
        Server::Axum,
        Proto::Http2,
        Case::sse(GzipLayer::new().compress_sse(true), Expect::Gzip),
    )
    .await;
}

#[tokio::test]
async fn hyper_http1_compressed_sse_each_event_decodes_before_next_is_sent() {
    run(
        Server::Hyper,
        Proto::Http1,
        Case::sse(GzipLayer::new().compress_sse(true), Expect::Gzip),
    )
    .await;
}

#[tokio::test]
async fn hyper_http2_compressed_sse_every_frame_each_event_decodes_before_next_is_sent() {
    let layer = GzipLayer::new()
        .compress_sse(true)
        .flush_policy(FlushPolicy::EveryFrame);
    run(Server::Hyper, Proto::Http2, Case::sse(layer, Expect::Gzip)).await;
}

// ---------------------------------------------------------------------------------------------
// Tiny frames: each chunk arrives as a run of ready 1- or 7-byte frames
// ---------------------------------------------------------------------------------------------

/// Each chunk as frames of `frame_len` bytes, ready back to back: the staging fast path takes
/// every frame, the 100 KiB chunk spends several polls' input budget (16 KiB, 256 frames per
/// poll), and the chunk must still be decodable as a whole when the handler stalls.
fn tiny_frames(case: Case, frame_len: usize) -> Case {
    Case {
        frame_len: Some(frame_len),
        ..case
    }
}

#[tokio::test]
async fn axum_http1_chunks_in_7_byte_frames_each_decode_before_next_is_sent() {
    run(
        Server::Axum,
        Proto::Http1,
        tiny_frames(Case::ndjson(on_stall()), 7),
    )
    .await;
}

#[tokio::test]
async fn hyper_http2_chunks_in_7_byte_frames_each_decode_before_next_is_sent() {
    run(
        Server::Hyper,
        Proto::Http2,
        tiny_frames(Case::ndjson(on_stall()), 7),
    )
    .await;
}

#[tokio::test]
async fn hyper_http1_sse_events_in_1_byte_frames_each_decode_before_next_is_sent() {
    run(
        Server::Hyper,
        Proto::Http1,
        tiny_frames(
            Case::sse(GzipLayer::new().compress_sse(true), Expect::Gzip),
            1,
        ),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Headers are not held back by the first chunk
// ---------------------------------------------------------------------------------------------

/// The handler returns its head at once; its first chunk is produced only after the client has
/// that head (the runner awaits the head, asserts no chunk was sent yet, then sends chunk 0). A
/// layer that waited for the first chunk before passing the head on would deadlock and time out.
fn head_first_case() -> Case {
    Case {
        chunks: vec![
            Bytes::from_static(b"{\"first\":true}\n"),
            Bytes::from_static(b"{\"second\":true}\n"),
        ],
        ..Case::ndjson(GzipLayer::new())
    }
}

#[tokio::test]
async fn axum_http1_headers_arrive_before_first_chunk_is_produced() {
    run(Server::Axum, Proto::Http1, head_first_case()).await;
}

#[tokio::test]
async fn axum_http2_headers_arrive_before_first_chunk_is_produced() {
    run(Server::Axum, Proto::Http2, head_first_case()).await;
}

#[tokio::test]
async fn hyper_http1_headers_arrive_before_first_chunk_is_produced() {
    run(Server::Hyper, Proto::Http1, head_first_case()).await;
}

#[tokio::test]
async fn hyper_http2_headers_arrive_before_first_chunk_is_produced() {
    run(Server::Hyper, Proto::Http2, head_first_case()).await;
}

// ---------------------------------------------------------------------------------------------
// A client without Accept-Encoding gets identity, with Vary
// ---------------------------------------------------------------------------------------------

fn identity_case() -> Case {
    Case {
        accept_gzip: false,
        expect: Expect::Identity,
        expect_vary: true,
        ..Case::ndjson(GzipLayer::new())
    }
}

#[tokio::test]
async fn axum_http1_without_accept_encoding_gets_identity_with_vary_chunk_by_chunk() {
    run(Server::Axum, Proto::Http1, identity_case()).await;
}

#[tokio::test]
async fn axum_http2_without_accept_encoding_gets_identity_with_vary_chunk_by_chunk() {
    run(Server::Axum, Proto::Http2, identity_case()).await;
}

#[tokio::test]
async fn hyper_http1_without_accept_encoding_gets_identity_with_vary_chunk_by_chunk() {
    run(Server::Hyper, Proto::Http1, identity_case()).await;
}

#[tokio::test]
async fn hyper_http2_without_accept_encoding_gets_identity_with_vary_chunk_by_chunk() {
    run(Server::Hyper, Proto::Http2, identity_case()).await;
}

// ---------------------------------------------------------------------------------------------
// Control: the harness fails when a server holds compressed bytes back
// ---------------------------------------------------------------------------------------------

/// A body that passes nothing on until its inner body ends, then everything in one frame: what a
/// compressor that never flushes looks like from the client.
struct BufferUntilEnd<B> {
    inner: B,
    buffer: BytesMut,
    done: bool,
}

impl<B> BufferUntilEnd<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            buffer: BytesMut::new(),
            done: false,
        }
    }
}

impl<B> Body for BufferUntilEnd<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Some(Ok(Frame::data(this.buffer.split().freeze()))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test]
async fn control_lockstep_fails_when_the_server_holds_bytes_back() {
    let case = Case {
        buffer_until_end: true,
        // Only the failure is expected here, so a short bound keeps the test fast.
        wait: Duration::from_millis(500),
        ..Case::ndjson(GzipLayer::new())
    };
    let error = lockstep(Server::Hyper, Proto::Http1, case)
        .await
        .expect_err("a server that buffers the whole body must fail the lockstep check");
    assert!(error.starts_with("chunk 0 "), "unexpected failure: {error}");
}
