//! The README's rules table and header rewrites, checked on the wire.
//!
//! Every row of the table below is served by two real servers, axum (`Router::layer(GzipLayer)`)
//! and plain hyper (hyper-util's auto builder over `ServiceBuilder::layer(GzipLayer)`), and read by
//! two clients that decode nothing: a hand-written HTTP/1.1 reader over a `TcpStream` and hyper's
//! low-level HTTP/2 client (h2c prior knowledge). Each row is requested with `GET` and `HEAD`, so a
//! row is 2 servers x 2 protocols x 2 methods = 8 exchanges. Per exchange:
//!
//! 1. the handler ran exactly once;
//! 2. the status is the handler's;
//! 3. the header set on the wire is exactly the row's `expect` list plus the framing headers the
//!    server writes itself (see [`expected_content_length`] and [`expected_chunked`]), ignoring only
//!    `date`: names and values, every field line;
//! 4. the body framing is well formed and is the expected one (HTTP/1.1: no bytes after a bodiless
//!    response, `content-length` bytes exactly, or chunks ending in the last-chunk; HTTP/2: no
//!    trailers, DATA length equal to `content-length`);
//! 5. the body: for `GET` one complete gzip member that flate2 decodes to exactly the handler's
//!    bytes when `content-encoding: gzip`, else the handler's bytes byte for byte; for `HEAD` none.
//!
//! and per server and protocol: 6. `HEAD` has the same header set as `GET` (HTTP/1.1: ignoring
//! `transfer-encoding`, which hyper does not write on a `HEAD` response; `content-length` must
//! match exactly, except the one difference hyper's HTTP/1.1 server makes by itself on a body that
//! ends at once, see [`hyper_h1_head_quirk`]). The stream-budget rows add, per server, 7. the held
//! stream is gzip and 8. `live_streams()` is 1 while it is held.
//!
//! The plain hyper stack is `StripH2HeadBody(ServiceBuilder::new().layer(GzipLayer).service(..))`:
//! hyper's HTTP/2 server sends a `HEAD` response's body as DATA (which hyper's own HTTP/2 client
//! then resets with PROTOCOL_ERROR), so the outermost wrapper drops the body of an HTTP/2 `HEAD`
//! while keeping its size hint, as hyper's HTTP/1.1 server does. It touches no header. Status 1xx
//! is not a row: neither server can send a 1xx as the final response of a handler.
//!
//! Bodies are fixed JSON text; nothing is timed (a timeout only detects a hang). Failures name the
//! row, server, protocol and method, with what the wire showed. `cargo test --test wire_rules --
//! --nocapture` prints the size of the table (rows and checks) per test and in total.

mod wire_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tower::{service_fn, ServiceBuilder};
use tower_gzip::GzipLayer;
use wire_support::{
    check_gzip_member, exchange, h1_open_stream, json_body, preview, serve_axum, serve_hyper,
    Framing, Proto, Server, StripH2HeadBody, TestBody, Wire,
};

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// The test function a row belongs to (each is named after the rule or the bug it anchors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    StatusBodiless,
    StatusRanges,
    ContentEncoding,
    NoTransform,
    Digests,
    HeadLength,
    MinSize,
    EmptyBody,
    MediaTypes,
    Predicate,
    Vary,
    Etag,
    AcceptRanges,
    ClientRefuses,
    StreamBudget,
}

const GROUPS: [Group; 15] = [
    Group::StatusBodiless,
    Group::StatusRanges,
    Group::ContentEncoding,
    Group::NoTransform,
    Group::Digests,
    Group::HeadLength,
    Group::MinSize,
    Group::EmptyBody,
    Group::MediaTypes,
    Group::Predicate,
    Group::Vary,
    Group::Etag,
    Group::AcceptRanges,
    Group::ClientRefuses,
    Group::StreamBudget,
];

/// The handler's body.
#[derive(Clone, Copy, Debug)]
enum BodySpec {
    /// `Full`: one frame, exact size hint.
    Full(usize),
    /// A stream of `STREAM_CHUNK`-byte frames with an unknown size hint.
    Stream(usize),
    /// `Full` of nothing: ends at once, exact size hint 0.
    Empty,
}

impl BodySpec {
    fn len(self) -> usize {
        match self {
            BodySpec::Full(len) | BodySpec::Stream(len) => len,
            BodySpec::Empty => 0,
        }
    }

    /// The body's exact size hint, as the servers see it.
    fn exact(self) -> Option<u64> {
        match self {
            BodySpec::Full(len) => Some(len as u64),
            BodySpec::Empty => Some(0),
            BodySpec::Stream(_) => None,
        }
    }

    fn is_end_stream(self) -> bool {
        matches!(self, BodySpec::Empty)
    }
}

const STREAM_CHUNK: usize = 700;
const BIG: usize = 2000;
const JSON: &str = "application/json";

type Headers = &'static [(&'static str, &'static str)];

#[derive(Clone, Copy)]
struct Case {
    group: Group,
    name: &'static str,
    layer: fn() -> GzipLayer,
    /// The request's `Accept-Encoding` (the same for GET and HEAD).
    accept_encoding: Option<&'static str>,
    status: u16,
    /// Response headers set by the handler.
    headers: Headers,
    body: BodySpec,
    /// Before the row's requests, open and hold a compressed stream from the same layer.
    hold_stream: bool,
    /// The expected outcome: `content-encoding: gzip` and a gzip body.
    gzip: bool,
    /// Every header expected on the wire except `date` and the framing headers
    /// (`content-length`, `transfer-encoding`), which [`framing_headers`] adds.
    expect: Headers,
}

const JSON_ONLY: Headers = &[("content-type", JSON)];
const GZIP_JSON: Headers = &[
    ("content-type", JSON),
    ("content-encoding", "gzip"),
    ("vary", "Accept-Encoding"),
];
const IDENTITY_JSON: Headers = &[("content-type", JSON), ("vary", "Accept-Encoding")];

/// The default row: a 2000-byte JSON `Full` body for a client accepting gzip; compressed.
const CASE: Case = Case {
    group: Group::StatusRanges,
    name: "",
    layer: GzipLayer::new,
    accept_encoding: Some("gzip, deflate, br"),
    status: 200,
    headers: JSON_ONLY,
    body: BodySpec::Full(BIG),
    hold_stream: false,
    gzip: true,
    expect: GZIP_JSON,
};

/// Untouched: what the handler wrote, nothing added.
const fn untouched(group: Group, name: &'static str, headers: Headers) -> Case {
    Case {
        group,
        name,
        headers,
        gzip: false,
        expect: headers,
        ..CASE
    }
}

fn cases() -> Vec<Case> {
    use Group::*;
    vec![
        // --- status codes (1xx cannot be a final response through axum or hyper: not served) ---
        Case {
            status: 204,
            ..untouched(StatusBodiless, "204 with a 2000-byte json body", JSON_ONLY)
        },
        Case {
            status: 304,
            ..untouched(
                StatusBodiless,
                "304 with a strong etag and a 2000-byte json body",
                &[("content-type", JSON), ("etag", "\"v1\"")],
            )
        },
        Case {
            group: StatusRanges,
            name: "200 json is gzip",
            ..CASE
        },
        Case {
            group: StatusRanges,
            name: "404 html page is gzip",
            status: 404,
            headers: &[("content-type", "text/html; charset=utf-8")],
            expect: &[
                ("content-type", "text/html; charset=utf-8"),
                ("content-encoding", "gzip"),
                ("vary", "Accept-Encoding"),
            ],
            ..CASE
        },
        Case {
            status: 205,
            ..untouched(StatusRanges, "205 with a 2000-byte json body", JSON_ONLY)
        },
        Case {
            status: 206,
            ..untouched(
                StatusRanges,
                "206 with content-range and accept-ranges",
                &[
                    ("content-type", JSON),
                    ("content-range", "bytes 0-1999/5000"),
                    ("accept-ranges", "bytes"),
                ],
            )
        },
        untouched(
            StatusRanges,
            "200 with content-range",
            &[("content-type", JSON), ("content-range", "bytes */5000")],
        ),
        // --- an existing Content-Encoding ---
        untouched(
            ContentEncoding,
            "content-encoding br",
            &[("content-type", JSON), ("content-encoding", "br")],
        ),
        untouched(
            ContentEncoding,
            "content-encoding identity",
            &[("content-type", JSON), ("content-encoding", "identity")],
        ),
        // --- Cache-Control: no-transform ---
        untouched(
            NoTransform,
            "no-transform with a strong etag",
            &[
                ("content-type", JSON),
                ("cache-control", "public, no-transform"),
                ("etag", "\"v1\""),
            ],
        ),
        Case {
            group: NoTransform,
            name: "no-transform ignored with respect_no_transform(false)",
            layer: || GzipLayer::new().respect_no_transform(false),
            headers: &[("content-type", JSON), ("cache-control", "no-transform")],
            expect: &[
                ("content-type", JSON),
                ("cache-control", "no-transform"),
                ("content-encoding", "gzip"),
                ("vary", "Accept-Encoding"),
            ],
            ..CASE
        },
        // --- digests ---
        untouched(
            Digests,
            "content-digest",
            &[
                ("content-type", JSON),
                (
                    "content-digest",
                    "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
                ),
            ],
        ),
        untouched(
            Digests,
            "repr-digest",
            &[
                ("content-type", JSON),
                (
                    "repr-digest",
                    "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
                ),
            ],
        ),
        untouched(
            Digests,
            "content-md5",
            &[
                ("content-type", JSON),
                ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            ],
        ),
        // --- large bodies: HEAD must not carry the identity length of a gzip GET ---
        Case {
            group: HeadLength,
            name: "1,000,027-byte json, exact size hint only",
            body: BodySpec::Full(1_000_027),
            ..CASE
        },
        Case {
            group: HeadLength,
            name: "2000-byte json with its content-length header",
            headers: &[("content-type", JSON), ("content-length", "2000")],
            ..CASE
        },
        Case {
            group: HeadLength,
            name: "2000-byte json streamed with a content-length header",
            headers: &[("content-type", JSON), ("content-length", "2000")],
            body: BodySpec::Stream(BIG),
            ..CASE
        },
        Case {
            group: HeadLength,
            name: "2000-byte json streamed, unknown length",
            body: BodySpec::Stream(BIG),
            ..CASE
        },
        // --- minimum size (256): by content-length header, by exact size hint, unknown length ---
        Case {
            body: BodySpec::Full(2),
            ..untouched(MinSize, "2-byte body, exact size hint only", JSON_ONLY)
        },
        Case {
            body: BodySpec::Full(100),
            ..untouched(MinSize, "100-byte body, exact size hint only", JSON_ONLY)
        },
        Case {
            body: BodySpec::Stream(100),
            expect: JSON_ONLY,
            ..untouched(
                MinSize,
                "100-byte body streamed with a content-length header only",
                &[("content-type", JSON), ("content-length", "100")],
            )
        },
        Case {
            body: BodySpec::Full(255),
            ..untouched(MinSize, "255-byte body, exact size hint only", JSON_ONLY)
        },
        Case {
            group: MinSize,
            name: "256-byte body, exact size hint only, is gzip",
            body: BodySpec::Full(256),
            ..CASE
        },
        Case {
            group: MinSize,
            name: "100-byte streamed body of unknown length is gzip",
            body: BodySpec::Stream(100),
            ..CASE
        },
        Case {
            layer: || GzipLayer::new().min_size(5000),
            ..untouched(MinSize, "2000-byte body under min_size(5000)", JSON_ONLY)
        },
        // --- empty body ---
        Case {
            body: BodySpec::Empty,
            ..untouched(EmptyBody, "empty body", JSON_ONLY)
        },
        Case {
            body: BodySpec::Empty,
            layer: || GzipLayer::new().min_size(0),
            ..untouched(EmptyBody, "empty body with min_size(0)", JSON_ONLY)
        },
        Case {
            group: EmptyBody,
            name: "1-byte body with min_size(0) is gzip",
            layer: || GzipLayer::new().min_size(0),
            body: BodySpec::Full(1),
            ..CASE
        },
        // --- media types ---
        Case {
            body: BodySpec::Stream(BIG),
            ..untouched(
                MediaTypes,
                "sse is skipped by default",
                &[("content-type", "text/event-stream")],
            )
        },
        untouched(MediaTypes, "image/png", &[("content-type", "image/png")]),
        untouched(
            MediaTypes,
            "application/grpc",
            &[("content-type", "application/grpc")],
        ),
        untouched(
            MediaTypes,
            "application/grpc+proto",
            &[("content-type", "application/grpc+proto")],
        ),
        Case {
            group: MediaTypes,
            name: "sse with compress_sse(true) is gzip",
            layer: || GzipLayer::new().compress_sse(true),
            headers: &[("content-type", "text/event-stream")],
            body: BodySpec::Stream(BIG),
            expect: &[
                ("content-type", "text/event-stream"),
                ("content-encoding", "gzip"),
                ("vary", "Accept-Encoding"),
            ],
            ..CASE
        },
        // --- custom predicates ---
        Case {
            layer: || GzipLayer::new().compress_when(|_req, _res| false),
            ..untouched(Predicate, "compress_when says no", JSON_ONLY)
        },
        Case {
            group: Predicate,
            name: "compress_when says yes",
            layer: || {
                GzipLayer::new().compress_when(|req, res| {
                    req.uri().path() == "/case" && res.status == StatusCode::OK
                })
            },
            ..CASE
        },
        Case {
            layer: || GzipLayer::new().compress_when(|_req, _res| true),
            ..untouched(
                Predicate,
                "compress_when cannot re-enable sse",
                &[("content-type", "text/event-stream")],
            )
        },
        // --- Vary ---
        Case {
            group: Vary,
            name: "vary origin gets accept-encoding appended",
            headers: &[("content-type", JSON), ("vary", "Origin")],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "Origin, Accept-Encoding"),
            ],
            ..CASE
        },
        Case {
            group: Vary,
            name: "two vary lines are merged into one",
            headers: &[
                ("content-type", JSON),
                ("vary", "Origin"),
                ("vary", "Cookie"),
            ],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "Origin, Cookie, Accept-Encoding"),
            ],
            ..CASE
        },
        Case {
            group: Vary,
            name: "vary star stays alone",
            headers: &[("content-type", JSON), ("vary", "*")],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "*"),
            ],
            ..CASE
        },
        Case {
            group: Vary,
            name: "vary already listing accept-encoding is not duplicated",
            headers: &[("content-type", JSON), ("vary", "accept-encoding, origin")],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "accept-encoding, origin"),
            ],
            ..CASE
        },
        Case {
            group: Vary,
            name: "vary origin on identity for a client refusing gzip",
            accept_encoding: None,
            headers: &[("content-type", JSON), ("vary", "Origin")],
            gzip: false,
            expect: &[("content-type", JSON), ("vary", "Origin, Accept-Encoding")],
            ..CASE
        },
        // --- ETag ---
        Case {
            group: Etag,
            name: "strong etag becomes weak",
            headers: &[("content-type", JSON), ("etag", "\"v42\"")],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "Accept-Encoding"),
                ("etag", "W/\"v42\""),
            ],
            ..CASE
        },
        Case {
            group: Etag,
            name: "weak etag is kept",
            headers: &[("content-type", JSON), ("etag", "W/\"v42\"")],
            expect: &[
                ("content-type", JSON),
                ("content-encoding", "gzip"),
                ("vary", "Accept-Encoding"),
                ("etag", "W/\"v42\""),
            ],
            ..CASE
        },
        Case {
            group: Etag,
            name: "malformed unquoted etag is removed",
            headers: &[("content-type", JSON), ("etag", "v42")],
            ..CASE
        },
        Case {
            group: Etag,
            name: "strong etag stays strong on identity",
            accept_encoding: None,
            headers: &[("content-type", JSON), ("etag", "\"v42\"")],
            gzip: false,
            expect: &[
                ("content-type", JSON),
                ("etag", "\"v42\""),
                ("vary", "Accept-Encoding"),
            ],
            ..CASE
        },
        // --- Accept-Ranges ---
        Case {
            group: AcceptRanges,
            name: "accept-ranges and content-length are removed when gzip",
            headers: &[
                ("content-type", JSON),
                ("content-length", "2000"),
                ("accept-ranges", "bytes"),
            ],
            ..CASE
        },
        Case {
            group: AcceptRanges,
            name: "accept-ranges stays on identity",
            accept_encoding: Some("identity"),
            headers: &[
                ("content-type", JSON),
                ("content-length", "2000"),
                ("accept-ranges", "bytes"),
            ],
            gzip: false,
            expect: &[
                ("content-type", JSON),
                ("accept-ranges", "bytes"),
                ("vary", "Accept-Encoding"),
            ],
            ..CASE
        },
        // --- the client refuses gzip: identity plus Vary ---
        Case {
            group: ClientRefuses,
            name: "no accept-encoding",
            accept_encoding: None,
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: ClientRefuses,
            name: "gzip;q=0, br",
            accept_encoding: Some("gzip;q=0, br"),
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: ClientRefuses,
            name: "identity only",
            accept_encoding: Some("identity"),
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: ClientRefuses,
            name: "*;q=0 still gets identity, not 406",
            accept_encoding: Some("*;q=0"),
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: ClientRefuses,
            name: "streamed body, no accept-encoding",
            accept_encoding: None,
            body: BodySpec::Stream(BIG),
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: ClientRefuses,
            name: "br, x-gzip;q=0.5 is gzip",
            accept_encoding: Some("br, x-gzip;q=0.5"),
            ..CASE
        },
        // --- the stream budget ---
        Case {
            group: StreamBudget,
            name: "max_streams(1), one compressed stream held open: identity plus vary",
            layer: || GzipLayer::new().max_streams(1),
            hold_stream: true,
            gzip: false,
            expect: IDENTITY_JSON,
            ..CASE
        },
        Case {
            group: StreamBudget,
            name: "max_streams(1), nothing held: gzip",
            layer: || GzipLayer::new().max_streams(1),
            ..CASE
        },
    ]
}

impl Case {
    fn handler_content_length(&self) -> Option<u64> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().expect("numeric content-length in the table"))
    }

    fn bodiless_status(&self) -> bool {
        matches!(self.status, 204 | 304)
    }
}

// ---------------------------------------------------------------------------------------------
// What the servers write themselves (hyper 1.x and axum 0.8 source), for a response whose
// headers the layer has already settled
// ---------------------------------------------------------------------------------------------

/// The `content-length` expected on the wire.
///
/// - gzip: none, on every server, protocol and method (the compressed length is unknown up front,
///   and `HEAD` must match `GET`).
/// - otherwise the declared length is the handler's `content-length`, else the body's exact size
///   hint:
///   - axum sets `content-length` from the size hint when it is exact and the header is missing
///     (`set_content_length` in its route future, every method and status, before it strips a
///     `HEAD` body), and hyper writes that header as is: the declared length, always.
///   - plain hyper, HTTP/1.1: a `content-length` header is written as is; otherwise hyper writes
///     the exact size hint, except for 204/304 (never) and for a body that ends at once: then it
///     writes `content-length: 0` for `GET` but nothing for `HEAD` (no implicit zero on `HEAD`).
///   - plain hyper, HTTP/2: a `content-length` header is passed on; otherwise hyper sets it from
///     an exact size hint unless the body ends at once (then it sends HEADERS with END_STREAM and
///     no length), whatever the status.
fn expected_content_length(
    case: &Case,
    server: Server,
    proto: Proto,
    method: &Method,
) -> Option<u64> {
    if case.gzip {
        return None;
    }
    let header = case.handler_content_length();
    let hint = case.body.exact();
    match (server, proto) {
        (Server::Axum, _) => header.or(hint),
        (Server::Hyper, Proto::H1Raw) => header.or(match hint {
            _ if case.bodiless_status() => None,
            Some(0) if *method == Method::HEAD => None,
            hint => hint,
        }),
        (Server::Hyper, Proto::H2) => header.or(if case.body.is_end_stream() {
            None
        } else {
            hint
        }),
    }
}

/// `transfer-encoding: chunked`: HTTP/1.1 `GET` of a body of unknown length (never on `HEAD`, 204
/// or 304, where hyper writes no body; never on HTTP/2, which has no such header).
fn expected_chunked(case: &Case, server: Server, proto: Proto, method: &Method) -> bool {
    proto == Proto::H1Raw
        && *method == Method::GET
        && !case.bodiless_status()
        && expected_content_length(case, server, proto, method).is_none()
}

/// The connection-management and framing headers the server writes itself. Over HTTP/1.1 the raw
/// client sends `connection: close`, so hyper answers `connection: close` (`enforce_version`:
/// keep-alive disabled on an HTTP/1.1 connection) and closes after the response.
fn framing_headers(case: &Case, server: Server, proto: Proto, method: &Method) -> HeaderList {
    let mut headers = Vec::new();
    if proto == Proto::H1Raw {
        headers.push(("connection".to_owned(), b"close".to_vec()));
    }
    if let Some(len) = expected_content_length(case, server, proto, method) {
        headers.push(("content-length".to_owned(), len.to_string().into_bytes()));
    }
    if expected_chunked(case, server, proto, method) {
        headers.push(("transfer-encoding".to_owned(), b"chunked".to_vec()));
    }
    headers
}

/// The body the client must receive for `GET` (before gzip decoding): hyper's HTTP/1.1 server
/// writes no body for 204 and 304; its HTTP/2 server sends what the handler produced.
fn expected_get_body(case: &Case, proto: Proto, handler_body: &[u8]) -> Vec<u8> {
    if proto == Proto::H1Raw && case.bodiless_status() {
        Vec::new()
    } else {
        handler_body.to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

fn handler_response(case: &Case, body: &Bytes) -> Response<TestBody> {
    let mut response = Response::builder().status(case.status);
    for (name, value) in case.headers {
        response = response.header(*name, *value);
    }
    let body: TestBody = match case.body {
        BodySpec::Full(_) | BodySpec::Empty => Full::new(body.clone()).boxed(),
        BodySpec::Stream(_) => {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = body
                .chunks(STREAM_CHUNK)
                .map(|chunk| Ok(Frame::data(body.slice_ref(chunk))))
                .collect();
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
        }
    };
    response.body(body).unwrap()
}

/// A compressible stream that sends one frame and then never ends: it holds a stream slot.
fn held_response() -> Response<TestBody> {
    let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(
        json_body(1000),
    )))]);
    let body = BodyExt::boxed(StreamBody::new(
        first.chain(futures_util::stream::pending()),
    ));
    Response::builder()
        .header("content-type", JSON)
        .body(body)
        .unwrap()
}

async fn spawn(
    server: Server,
    case: Case,
    layer: GzipLayer,
    body: Bytes,
    calls: Arc<AtomicUsize>,
) -> wire_support::Running {
    match server {
        Server::Axum => {
            let app = Router::new()
                .route(
                    "/case",
                    get(move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let response = handler_response(&case, &body);
                        async move { response }
                    }),
                )
                .route("/hold", get(|| async { held_response() }))
                .layer(layer);
            serve_axum(app).await
        }
        Server::Hyper => {
            let handler = service_fn(move |request: Request<Incoming>| {
                let response = match request.uri().path() {
                    "/case" => {
                        calls.fetch_add(1, Ordering::SeqCst);
                        handler_response(&case, &body)
                    }
                    "/hold" => held_response(),
                    _ => {
                        let mut response = Response::new(Full::default().boxed());
                        *response.status_mut() = StatusCode::NOT_FOUND;
                        response
                    }
                };
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let svc = StripH2HeadBody(ServiceBuilder::new().layer(layer).service(handler));
            serve_hyper(svc).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

type HeaderList = Vec<(String, Vec<u8>)>;

/// Checks per exchange, per (server, protocol) pair, and per held stream.
const CHECKS_PER_EXCHANGE: usize = 5;
const CHECKS_PER_PAIR: usize = 1;
const CHECKS_PER_HOLD: usize = 2;
const SERVERS: [Server; 2] = [Server::Axum, Server::Hyper];
const PROTOS: [Proto; 2] = [Proto::H1Raw, Proto::H2];

fn methods() -> [Method; 2] {
    [Method::GET, Method::HEAD]
}

fn planned_checks(case: &Case) -> usize {
    let per_server = PROTOS.len() * (methods().len() * CHECKS_PER_EXCHANGE + CHECKS_PER_PAIR)
        + if case.hold_stream { CHECKS_PER_HOLD } else { 0 };
    SERVERS.len() * per_server
}

#[derive(Default)]
struct Tally {
    checks: usize,
    exchanges: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, ok: bool, label: &str, what: &str, detail: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures.push(format!("{label}: {what}: {}", detail()));
        }
    }
}

/// Header lines without `date` (and without `except`), sorted by name; lines of one name keep
/// their order.
fn comparable(headers: &[(String, Vec<u8>)], except: &[&str]) -> HeaderList {
    let mut list: HeaderList = headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("date")
                && !except.iter().any(|e| name.eq_ignore_ascii_case(e))
        })
        .cloned()
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

fn show(headers: &[(String, Vec<u8>)]) -> String {
    let lines: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value)))
        .collect();
    format!("[{}]", lines.join(" | "))
}

fn expected_headers(case: &Case, server: Server, proto: Proto, method: &Method) -> HeaderList {
    let mut expected: HeaderList = case
        .expect
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    expected.extend(framing_headers(case, server, proto, method));
    comparable(&expected, &[])
}

fn check_framing(
    case: &Case,
    server: Server,
    proto: Proto,
    method: &Method,
    wire: &Wire,
) -> Result<(), String> {
    match &wire.framing {
        Framing::Invalid(reason) => Err(reason.clone()),
        Framing::H2 { trailers: true } => Err("a trailers frame came".into()),
        Framing::H2 { trailers: false } => {
            let lengths = wire.values("content-length");
            match lengths.as_slice() {
                [len] if *method == Method::GET => {
                    let len = String::from_utf8_lossy(len);
                    if len != wire.body.len().to_string() {
                        return Err(format!(
                            "content-length: {len} but {} DATA bytes",
                            wire.body.len()
                        ));
                    }
                    Ok(())
                }
                [] | [_] => Ok(()),
                _ => Err(format!("{} content-length lines", lengths.len())),
            }
        }
        framing => {
            let expected = if *method == Method::HEAD || case.bodiless_status() {
                "no body"
            } else if let Some(len) = expected_content_length(case, server, proto, method) {
                return match framing {
                    Framing::H1Length(got) if *got == len => Ok(()),
                    other => Err(format!(
                        "expected {len} content-length bytes, got {other:?}"
                    )),
                };
            } else {
                "chunked"
            };
            match (expected, framing) {
                ("no body", Framing::H1NoBody) => Ok(()),
                ("chunked", Framing::H1Chunked { .. }) => Ok(()),
                (expected, other) => Err(format!("expected {expected}, got {other:?}")),
            }
        }
    }
}

fn check_body(
    case: &Case,
    proto: Proto,
    method: &Method,
    wire: &Wire,
    handler_body: &[u8],
) -> Result<(), String> {
    if *method == Method::HEAD {
        return if wire.body.is_empty() {
            Ok(())
        } else {
            Err(format!("HEAD carried a body: {}", preview(&wire.body)))
        };
    }
    let expected = expected_get_body(case, proto, handler_body);
    if case.gzip {
        check_gzip_member(&wire.body, &expected)
    } else if wire.body == expected {
        Ok(())
    } else {
        Err(format!(
            "expected the handler's {} bytes as is, got {}",
            expected.len(),
            preview(&wire.body)
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn check_exchange(
    tally: &mut Tally,
    label: &str,
    case: &Case,
    server: Server,
    proto: Proto,
    method: &Method,
    wire: &Wire,
    handler_calls: usize,
    handler_body: &[u8],
) {
    tally.check(handler_calls == 1, label, "handler calls", || {
        format!("{handler_calls}, expected 1")
    });
    tally.check(wire.status == case.status, label, "status", || {
        format!("{}, expected {}", wire.status, case.status)
    });
    let got = comparable(&wire.headers, &[]);
    let expected = expected_headers(case, server, proto, method);
    tally.check(got == expected, label, "header set", || {
        format!("wire {} expected {}", show(&got), show(&expected))
    });
    let framing = check_framing(case, server, proto, method, wire);
    tally.check(framing.is_ok(), label, "framing", || {
        format!("{} (headers {})", framing.clone().unwrap_err(), show(&got))
    });
    let body = check_body(case, proto, method, wire, handler_body);
    tally.check(body.is_ok(), label, "body", || {
        format!("{} (headers {})", body.clone().unwrap_err(), show(&got))
    });
}

// ---------------------------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------------------------

async fn run_server(case: &Case, server: Server, tally: &mut Tally) {
    let layer = (case.layer)();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler_body = Bytes::from(json_body(case.body.len()));
    let running = spawn(
        server,
        *case,
        layer.clone(),
        handler_body.clone(),
        calls.clone(),
    )
    .await;
    let addr = running.addr;

    // Keep the held connection open until every exchange of this server is done.
    let mut _held = None;
    if case.hold_stream {
        let label = format!("[{}] {server:?} H1Raw GET /hold", case.name);
        match h1_open_stream(addr, "/hold", "gzip").await {
            Ok((connection, head)) => {
                let encoding = head.values("content-encoding");
                tally.check(encoding == [b"gzip"], &label, "held stream is gzip", || {
                    format!("headers {}", show(&head.headers))
                });
                _held = Some(connection);
            }
            Err(e) => tally.check(false, &label, "held stream is gzip", || e),
        }
        let live = layer.live_streams();
        tally.check(live == 1, &label, "live_streams() while held", || {
            format!("{live}, expected 1")
        });
    }

    for proto in PROTOS {
        let mut heads: Vec<Option<Wire>> = Vec::new();
        for method in methods() {
            let label = format!("[{}] {server:?} {proto:?} {method}", case.name);
            let before = calls.load(Ordering::SeqCst);
            let result = exchange(proto, addr, &method, "/case", case.accept_encoding).await;
            let handler_calls = calls.load(Ordering::SeqCst) - before;
            tally.exchanges += 1;
            match result {
                Ok(wire) => {
                    if std::env::var_os("WIRE_RULES_DUMP").is_some() {
                        eprintln!(
                            "{label}: {} {} {:?} body {}",
                            wire.status,
                            show(&wire.headers),
                            wire.framing,
                            preview(&wire.body)
                        );
                    }
                    check_exchange(
                        tally,
                        &label,
                        case,
                        server,
                        proto,
                        &method,
                        &wire,
                        handler_calls,
                        &handler_body,
                    );
                    heads.push(Some(wire));
                }
                Err(e) => {
                    for _ in 0..CHECKS_PER_EXCHANGE {
                        tally.check(false, &label, "exchange", || e.clone());
                    }
                    heads.push(None);
                }
            }
        }
        let label = format!("[{}] {server:?} {proto:?} HEAD vs GET", case.name);
        match (&heads[0], &heads[1]) {
            (Some(get), Some(head)) => {
                // hyper writes no `transfer-encoding` on a HEAD response over HTTP/1.1.
                let except: &[&str] = match proto {
                    Proto::H1Raw => &["transfer-encoding"],
                    Proto::H2 => &[],
                };
                let get = comparable(&get.headers, except);
                let head = comparable(&head.headers, except);
                let quirk = hyper_h1_head_quirk(case, server, proto);
                let ok = match quirk {
                    None => get == head,
                    Some(missing) => {
                        let mut with_quirk = head.clone();
                        with_quirk.push(missing);
                        comparable(&with_quirk, &[]) == get
                    }
                };
                tally.check(ok, &label, "HEAD headers equal GET headers", || {
                    format!("GET {} HEAD {}", show(&get), show(&head))
                });
            }
            _ => tally.check(false, &label, "HEAD headers equal GET headers", || {
                "an exchange failed".into()
            }),
        }
    }
    drop(running);
}

/// The one difference between `HEAD` and `GET` that a server makes by itself on a response the
/// layer leaves alone: hyper's HTTP/1.1 server writes an implicit `content-length: 0` for a
/// `GET` whose body ends at once, but no length at all for the `HEAD` of the same response
/// (`can_have_implicit_zero_content_length` excludes `HEAD`). The parity check then demands
/// exactly that difference and nothing else.
fn hyper_h1_head_quirk(case: &Case, server: Server, proto: Proto) -> Option<(String, Vec<u8>)> {
    (server == Server::Hyper
        && proto == Proto::H1Raw
        && !case.gzip
        && case.body.is_end_stream()
        && case.handler_content_length().is_none()
        && !case.bodiless_status())
    .then(|| ("content-length".to_owned(), b"0".to_vec()))
}

async fn run_group(group: Group) {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.group == group).collect();
    assert!(!cases.is_empty(), "{group:?} has no rows");
    let mut tally = Tally::default();
    for case in &cases {
        let before = tally.checks;
        for server in SERVERS {
            run_server(case, server, &mut tally).await;
        }
        assert_eq!(
            tally.checks - before,
            planned_checks(case),
            "[{}] check bookkeeping",
            case.name
        );
    }
    eprintln!(
        "wire rules {group:?}: {} rows, {} exchanges, {} checks, {} failed",
        cases.len(),
        tally.exchanges,
        tally.checks,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{group:?}: {} of {} wire checks failed:\n{}",
        tally.failures.len(),
        tally.checks,
        tally.failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests, one per rule (named after the bug each anchors where there is one)
// ---------------------------------------------------------------------------------------------

/// tower-http compresses 204 and 304 (a 20-byte gzip body with `content-encoding: gzip`); here
/// the handlers return a 2000-byte body and nothing gzip may go out.
#[tokio::test]
async fn tower_http_204_and_304_get_no_gzip_body() {
    run_group(Group::StatusBodiless).await;
}

#[tokio::test]
async fn status_205_206_and_content_range_untouched_200_and_404_gzip() {
    run_group(Group::StatusRanges).await;
}

#[tokio::test]
async fn existing_content_encoding_even_identity_is_untouched() {
    run_group(Group::ContentEncoding).await;
}

#[tokio::test]
async fn cache_control_no_transform_is_untouched_unless_switched_off() {
    run_group(Group::NoTransform).await;
}

#[tokio::test]
async fn content_digest_repr_digest_and_content_md5_are_untouched() {
    run_group(Group::Digests).await;
}

/// The known bug: through axum and hyper, `HEAD` of a compressed 1,000,027-byte JSON answered
/// `content-encoding: gzip` with `content-length: 1000027`, while `GET` was chunked, no length.
#[tokio::test]
async fn head_has_no_identity_content_length_when_get_is_gzip() {
    run_group(Group::HeadLength).await;
}

/// The known bug: a 2-byte body whose `GET` is untouched got gzip headers on `HEAD` (the `HEAD`
/// decision ignored the exact size hint).
#[tokio::test]
async fn head_of_small_body_gets_no_gzip_headers_when_get_is_untouched() {
    run_group(Group::MinSize).await;
}

#[tokio::test]
async fn empty_body_is_untouched_even_at_min_size_zero() {
    run_group(Group::EmptyBody).await;
}

#[tokio::test]
async fn sse_png_and_grpc_are_untouched_and_compress_sse_opts_in() {
    run_group(Group::MediaTypes).await;
}

#[tokio::test]
async fn compress_when_saying_no_is_untouched() {
    run_group(Group::Predicate).await;
}

#[tokio::test]
async fn vary_gets_accept_encoding_merged_never_duplicated() {
    run_group(Group::Vary).await;
}

#[tokio::test]
async fn etag_strong_weakened_weak_kept_malformed_removed() {
    run_group(Group::Etag).await;
}

#[tokio::test]
async fn accept_ranges_removed_only_when_gzip() {
    run_group(Group::AcceptRanges).await;
}

#[tokio::test]
async fn client_refusing_gzip_gets_identity_with_vary() {
    run_group(Group::ClientRefuses).await;
}

#[tokio::test]
async fn stream_budget_full_sends_identity_with_vary() {
    run_group(Group::StreamBudget).await;
}

/// The table itself: every row in a test, unique names, framing left to the model, and the size
/// of the table printed.
#[test]
fn wire_table_size() {
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "row names must be unique");
    for group in GROUPS {
        assert!(
            cases.iter().any(|c| c.group == group),
            "{group:?} has no rows"
        );
    }
    for case in &cases {
        assert!(!case.name.is_empty());
        for (name, _) in case.expect {
            assert!(
                !["content-length", "transfer-encoding", "connection", "date"].contains(name),
                "[{}]: framing headers come from the model, not the row",
                case.name
            );
        }
        if let Some(len) = case.handler_content_length() {
            assert_eq!(len, case.body.len() as u64, "[{}]", case.name);
        }
    }
    let rows = cases.len();
    let exchanges = rows * SERVERS.len() * PROTOS.len() * methods().len()
        + cases.iter().filter(|c| c.hold_stream).count() * SERVERS.len();
    let checks: usize = cases.iter().map(planned_checks).sum();
    eprintln!(
        "wire rules table: {rows} rows x {} servers x {} protocols x {} methods = {exchanges} \
         exchanges (held streams included), {checks} checks",
        SERVERS.len(),
        PROTOS.len(),
        methods().len()
    );
}
