//! Service-level table of response cases: for each, the exact headers the client gets, and a body
//! that decodes (with flate2) to what the handler produced.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use support::gunzip;
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::GzipLayer;

const BIG: usize = 2000;

struct Case {
    name: &'static str,
    method: Method,
    accept_encoding: Option<&'static [u8]>,
    status: u16,
    /// Response headers set by the handler.
    headers: &'static [(&'static str, &'static [u8])],
    body_len: usize,
    layer: fn() -> GzipLayer,
    /// Expected outcome.
    gzip: bool,
    /// Expected `Vary` values (all field lines), `None` for no `Vary` at all.
    vary: Option<&'static str>,
    /// Extra expected headers: (name, Some(value)) present with that value, (name, None) absent.
    expect: &'static [(&'static str, Option<&'static [u8]>)],
}

const CASE: Case = Case {
    name: "",
    method: Method::GET,
    accept_encoding: Some(b"gzip, deflate, br"),
    status: 200,
    headers: &[("content-type", b"text/html; charset=utf-8")],
    body_len: BIG,
    layer: GzipLayer::new,
    gzip: true,
    vary: Some("Accept-Encoding"),
    expect: &[],
};

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "html is compressed",
            ..CASE
        },
        Case {
            name: "content-length and accept-ranges are removed",
            headers: &[
                ("content-type", b"application/json"),
                ("content-length", b"2000"),
                ("accept-ranges", b"bytes"),
            ],
            expect: &[("content-length", None), ("accept-ranges", None)],
            ..CASE
        },
        Case {
            name: "strong etag is weakened",
            headers: &[("etag", b"\"v42\"")],
            expect: &[("etag", Some(b"W/\"v42\""))],
            ..CASE
        },
        Case {
            name: "weak etag is kept",
            headers: &[("etag", b"W/\"v42\"")],
            expect: &[("etag", Some(b"W/\"v42\""))],
            ..CASE
        },
        Case {
            name: "unquoted etag is dropped",
            headers: &[("etag", b"v42")],
            expect: &[("etag", None)],
            ..CASE
        },
        Case {
            name: "existing vary is kept",
            headers: &[("vary", b"Origin")],
            vary: Some("Origin, Accept-Encoding"),
            ..CASE
        },
        Case {
            name: "vary already naming accept-encoding is not duplicated",
            headers: &[("vary", b"accept-encoding, origin")],
            vary: Some("accept-encoding, origin"),
            ..CASE
        },
        Case {
            name: "vary star stays",
            headers: &[("vary", b"*")],
            vary: Some("*"),
            ..CASE
        },
        Case {
            name: "no content-type is compressed",
            headers: &[],
            ..CASE
        },
        Case {
            name: "non-utf8 content-type is compressed",
            headers: &[("content-type", b"text/\xffplain")],
            ..CASE
        },
        Case {
            name: "404 page is compressed",
            status: 404,
            ..CASE
        },
        Case {
            name: "500 page is compressed",
            status: 500,
            ..CASE
        },
        Case {
            name: "svg is compressed",
            headers: &[("content-type", b"image/svg+xml")],
            ..CASE
        },
        Case {
            name: "ndjson is compressed",
            headers: &[("content-type", b"application/x-ndjson")],
            ..CASE
        },
        Case {
            name: "grpc-web is compressed",
            headers: &[("content-type", b"application/grpc-web+proto")],
            ..CASE
        },
        // Untouched: no Content-Encoding and no Vary. Bodiless statuses are given a body here so
        // the status rule, not the empty-body rule, is what keeps them untouched.
        Case {
            name: "sse is skipped",
            headers: &[("content-type", b"text/event-stream")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "sse with odd case and parameters is skipped",
            headers: &[("content-type", b"Text/Event-Stream; Charset=UTF-8")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "sse opted in is compressed",
            headers: &[("content-type", b"text/event-stream")],
            layer: || GzipLayer::new().compress_sse(true),
            ..CASE
        },
        Case {
            name: "grpc is skipped",
            headers: &[("content-type", b"application/grpc")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "grpc+proto is skipped",
            headers: &[("content-type", b"application/grpc+proto")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "png is skipped",
            headers: &[("content-type", b"image/png")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "mp4 is skipped",
            headers: &[("content-type", b"video/mp4")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "woff2 is skipped",
            headers: &[("content-type", b"font/woff2")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "zip is skipped",
            headers: &[("content-type", b"application/zip")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "user skip pattern",
            headers: &[("content-type", b"application/x-ndjson")],
            layer: || GzipLayer::new().skip_media_type("application/*"),
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "replaced skip list compresses png",
            headers: &[("content-type", b"image/png")],
            layer: || GzipLayer::new().replace_skip_list(["text/event-stream"]),
            ..CASE
        },
        Case {
            name: "204 is untouched",
            status: 204,
            body_len: BIG,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "304 is untouched",
            status: 304,
            headers: &[("etag", b"\"v1\"")],
            body_len: BIG,
            gzip: false,
            vary: None,
            expect: &[("etag", Some(b"\"v1\""))],
            ..CASE
        },
        Case {
            name: "205 is untouched",
            status: 205,
            body_len: BIG,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "1xx is untouched",
            status: 103,
            body_len: BIG,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "206 is untouched",
            status: 206,
            headers: &[
                ("content-range", b"bytes 0-1999/5000"),
                ("accept-ranges", b"bytes"),
            ],
            gzip: false,
            vary: None,
            expect: &[("accept-ranges", Some(b"bytes"))],
            ..CASE
        },
        Case {
            name: "content-range on 200 is untouched",
            headers: &[("content-range", b"bytes */5000")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "already br-encoded is untouched",
            headers: &[("content-encoding", b"br")],
            gzip: false,
            vary: None,
            expect: &[("content-encoding", Some(b"br"))],
            ..CASE
        },
        Case {
            name: "content-encoding identity is untouched",
            headers: &[("content-encoding", b"identity")],
            gzip: false,
            vary: None,
            expect: &[("content-encoding", Some(b"identity"))],
            ..CASE
        },
        Case {
            name: "no-transform is untouched",
            headers: &[
                ("cache-control", b"public, no-transform"),
                ("etag", b"\"v1\""),
            ],
            gzip: false,
            vary: None,
            expect: &[("etag", Some(b"\"v1\""))],
            ..CASE
        },
        Case {
            name: "no-transform ignored when asked",
            headers: &[("cache-control", b"no-transform")],
            layer: || GzipLayer::new().respect_no_transform(false),
            ..CASE
        },
        Case {
            name: "content-digest is untouched",
            headers: &[("content-digest", b"sha-256=:abc=:")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "repr-digest is untouched",
            headers: &[("repr-digest", b"sha-256=:abc=:")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "content-md5 is untouched",
            headers: &[("content-md5", b"Q2hlY2sgSW50ZWdyaXR5IQ==")],
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "small body is untouched",
            body_len: 100,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "body at min size is compressed",
            body_len: 256,
            ..CASE
        },
        Case {
            name: "body just under min size is untouched",
            body_len: 255,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "min size zero compresses tiny bodies",
            body_len: 1,
            layer: || GzipLayer::new().min_size(0),
            ..CASE
        },
        Case {
            name: "empty body is untouched even at min size zero",
            body_len: 0,
            layer: || GzipLayer::new().min_size(0),
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "min size above body is untouched",
            layer: || GzipLayer::new().min_size(5000),
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "custom predicate refusing",
            layer: || GzipLayer::new().compress_when(|req, _res| req.uri().path() != "/case"),
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "custom predicate refusing by the response head",
            headers: &[
                ("content-type", b"text/html; charset=utf-8"),
                ("x-no-gzip", b"1"),
            ],
            layer: || {
                GzipLayer::new().compress_when(|_req, res| !res.headers.contains_key("x-no-gzip"))
            },
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "custom predicate cannot re-enable sse",
            headers: &[("content-type", b"text/event-stream")],
            layer: || GzipLayer::new().compress_when(|_, _| true),
            gzip: false,
            vary: None,
            ..CASE
        },
        // Client does not accept gzip: identity, but Vary so caches keep the two apart.
        Case {
            name: "no accept-encoding gets identity and vary",
            accept_encoding: None,
            gzip: false,
            ..CASE
        },
        Case {
            name: "gzip q=0 gets identity and vary",
            accept_encoding: Some(b"gzip;q=0, br"),
            gzip: false,
            ..CASE
        },
        Case {
            name: "identity and gzip refused gets identity",
            accept_encoding: Some(b"*;q=0"),
            gzip: false,
            ..CASE
        },
        Case {
            name: "non-utf8 accept-encoding gets identity",
            accept_encoding: Some(b"gzip, \xfe"),
            gzip: false,
            ..CASE
        },
        Case {
            name: "malformed q gets identity",
            accept_encoding: Some(b"gzip;q=5"),
            gzip: false,
            ..CASE
        },
        Case {
            name: "x-gzip and odd case",
            accept_encoding: Some(b"X-GZIP;Q=0.5"),
            ..CASE
        },
        Case {
            name: "wildcard",
            accept_encoding: Some(b"*"),
            ..CASE
        },
        Case {
            name: "identity not acceptable for sse either: untouched",
            accept_encoding: None,
            headers: &[("content-type", b"text/event-stream")],
            gzip: false,
            vary: None,
            ..CASE
        },
        // HEAD: the headers GET would get, judged by the same length facts (Content-Length, else
        // the body's own length: through axum and hyper a HEAD response carries its GET's body).
        Case {
            name: "head with large content-length gets gzip headers",
            method: Method::HEAD,
            headers: &[
                ("content-type", b"application/json"),
                ("content-length", b"2000"),
                ("etag", b"\"h\""),
            ],
            body_len: 0,
            expect: &[("content-length", None), ("etag", Some(b"W/\"h\""))],
            ..CASE
        },
        Case {
            name: "head with an empty body and no content-length is judged empty, like its get",
            method: Method::HEAD,
            headers: &[("content-type", b"application/json")],
            body_len: 0,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "head carrying its get's body (exact size hint, no content-length) gets gzip headers",
            method: Method::HEAD,
            headers: &[("content-type", b"application/json")],
            body_len: 5000,
            expect: &[("content-length", None)],
            ..CASE
        },
        Case {
            name: "head carrying its get's 2-byte body is untouched, like its get",
            method: Method::HEAD,
            headers: &[("content-type", b"application/json")],
            body_len: 2,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "head with small content-length is untouched",
            method: Method::HEAD,
            headers: &[("content-length", b"20")],
            body_len: 0,
            gzip: false,
            vary: None,
            expect: &[("content-length", Some(b"20"))],
            ..CASE
        },
        Case {
            name: "head of sse is untouched",
            method: Method::HEAD,
            headers: &[("content-type", b"text/event-stream")],
            body_len: 0,
            gzip: false,
            vary: None,
            ..CASE
        },
        Case {
            name: "head without accept-encoding gets vary only",
            method: Method::HEAD,
            accept_encoding: None,
            headers: &[("content-length", b"2000")],
            body_len: 0,
            gzip: false,
            expect: &[("content-length", Some(b"2000"))],
            ..CASE
        },
    ]
}

fn body_text(len: usize) -> Bytes {
    Bytes::from(support::json_of_size(len))
}

async fn run(case: &Case) -> (http::response::Parts, Bytes, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let status = case.status;
    let headers = case.headers;
    let body = body_text(case.body_len);
    let svc = (case.layer)().layer(service_fn(move |_req: Request<Empty<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        let response = response.body(Full::new(body.clone())).unwrap();
        async move { Ok::<_, Infallible>(response) }
    }));
    let mut request = Request::builder().method(case.method.clone()).uri("/case");
    if let Some(ae) = case.accept_encoding {
        request = request.header("accept-encoding", ae);
    }
    let response = svc
        .oneshot(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, bytes, calls.load(Ordering::SeqCst))
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

#[tokio::test]
async fn response_table() {
    let mut failures = Vec::new();
    for case in cases() {
        let (parts, body, calls) = run(&case).await;
        let mut problems = Vec::new();
        if calls != 1 {
            problems.push(format!("handler ran {calls} times"));
        }
        let ce = header_values(&parts.headers, "content-encoding");
        let expected_ce = if case.gzip {
            vec![b"gzip".to_vec()]
        } else {
            case.headers
                .iter()
                .filter(|(n, _)| *n == "content-encoding")
                .map(|(_, v)| v.to_vec())
                .collect()
        };
        if ce != expected_ce {
            problems.push(format!("content-encoding {ce:?}, expected {expected_ce:?}"));
        }
        let vary = header_values(&parts.headers, "vary");
        let expected_vary: Vec<Vec<u8>> = case
            .vary
            .map(|v| v.as_bytes().to_vec())
            .into_iter()
            .collect();
        if vary != expected_vary {
            problems.push(format!(
                "vary {:?}, expected {:?}",
                vary.iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>(),
                case.vary
            ));
        }
        for (name, value) in case.expect {
            let got = parts.headers.get(*name).map(|v| v.as_bytes());
            if got != *value {
                problems.push(format!("{name}: {got:?}, expected {value:?}"));
            }
        }
        if parts.status.as_u16() != case.status {
            problems.push(format!("status {}", parts.status));
        }
        // The body: what the handler produced, after an independent gzip decoder if compressed.
        let sent_body = case.method != Method::HEAD;
        // A HEAD response with gzip headers yields no body (it is never sent, and the identity
        // bytes under `Content-Encoding: gzip` would be a lie); others pass theirs through.
        let expected = if case.gzip && !sent_body {
            Bytes::new()
        } else {
            body_text(case.body_len)
        };
        let decoded = if case.gzip && sent_body {
            gunzip(&body).into()
        } else {
            body.clone()
        };
        if decoded != expected {
            problems.push(format!("body differs ({} bytes received)", body.len()));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What one call of a `compress_when` predicate was shown.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: Method,
    uri: String,
    version: Version,
    request: HeaderMap,
    status: StatusCode,
    response: HeaderMap,
}

/// The handler's response head for `/private` (`x-verdict: no`) and any other path
/// (`x-verdict: ok`), `201 Created` for `POST`: what the predicate must be shown, untouched by the
/// layer (`Content-Length` present, strong `ETag`, no `Vary`).
fn predicate_response_headers(path: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(BIG));
    headers.insert("etag", HeaderValue::from_static("\"v7\""));
    let verdict = if path == "/private" { "no" } else { "ok" };
    headers.insert("x-verdict", HeaderValue::from_static(verdict));
    headers
}

/// A custom predicate is called once per response with the request head (method, URI with its
/// query, version, every header) and the handler's response head (status, headers as the handler
/// set them), and its answer decides. The predicate's answer needs both heads (`x-want: gzip` on the
/// request and `x-verdict: ok` on the response), so the outcome changes if the predicate is not
/// called, is shown other heads, or is overruled.
#[tokio::test]
async fn custom_predicate_sees_the_request_and_response_heads_and_its_answer_decides() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let layer = GzipLayer::new().compress_when(move |request, response| {
        log.lock().unwrap().push(Seen {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            version: request.version(),
            request: request.headers().clone(),
            status: response.status,
            response: response.headers.clone(),
        });
        request.headers().get("x-want").is_some_and(|v| v == "gzip")
            && response.headers.get("x-verdict").is_some_and(|v| v == "ok")
    });
    let svc = layer.layer(service_fn(|request: Request<Empty<Bytes>>| {
        let mut response = Response::new(Full::new(body_text(BIG)));
        if request.method() == Method::POST {
            *response.status_mut() = StatusCode::CREATED;
        }
        *response.headers_mut() = predicate_response_headers(request.uri().path());
        async move { Ok::<_, Infallible>(response) }
    }));

    // (method, URI, version, x-want, expected to be compressed)
    let cases = [
        (
            Method::POST,
            "/items?page=2&sort=desc",
            Version::HTTP_2,
            Some("gzip"),
            true,
        ),
        (
            Method::GET,
            "/private?id=9",
            Version::HTTP_11,
            Some("gzip"),
            false,
        ),
        (
            Method::PUT,
            "/items/3",
            Version::HTTP_10,
            Some("identity"),
            false,
        ),
        (Method::GET, "/items", Version::HTTP_11, None, false),
    ];
    for (method, uri, version, want, gzip) in cases {
        let label = format!("{method} {uri} x-want {want:?}");
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .version(version)
            .header("accept-encoding", "gzip, br")
            .header("authorization", "Bearer t0k3n")
            .header("x-request-id", "r-1")
            .header("x-request-id", "r-2");
        if let Some(want) = want {
            request = request.header("x-want", want);
        }
        let request = request.body(Empty::new()).unwrap();
        let sent_headers = request.headers().clone();
        let response = svc.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();

        let calls = std::mem::take(&mut *seen.lock().unwrap());
        let status = if method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let path = uri.split('?').next().unwrap();
        let expected = Seen {
            method,
            uri: uri.to_owned(),
            version,
            request: sent_headers,
            status,
            response: predicate_response_headers(path),
        };
        assert_eq!(
            calls,
            [expected],
            "{label}: the predicate is called once, shown both heads"
        );

        assert_eq!(parts.status, status, "{label}");
        let encoding = parts.headers.get("content-encoding");
        if gzip {
            assert_eq!(encoding.unwrap(), "gzip", "{label}: the predicate said yes");
            assert_eq!(parts.headers["vary"], "Accept-Encoding", "{label}");
            assert!(parts.headers.get("content-length").is_none(), "{label}");
            assert_eq!(gunzip(&body), body_text(BIG), "{label}");
        } else {
            // Refused by the predicate: untouched, exactly the handler's head and body.
            assert_eq!(
                parts.headers,
                predicate_response_headers(path),
                "{label}: the predicate said no"
            );
            assert_eq!(body, body_text(BIG), "{label}");
        }
    }
}

#[tokio::test]
async fn head_gets_the_same_headers_as_get() {
    for (content_type, len) in [
        ("application/json", 5000),
        ("text/plain", 10),
        ("image/png", 5000),
        ("text/html", 300),
    ] {
        for ae in [Some(&b"gzip"[..]), None] {
            let mut heads = Vec::new();
            for method in [Method::GET, Method::HEAD] {
                let case = Case {
                    method,
                    accept_encoding: ae,
                    headers: Box::leak(Box::new([
                        ("content-type", content_type.as_bytes()),
                        (
                            "content-length",
                            Box::leak(len.to_string().into_boxed_str()).as_bytes(),
                        ),
                    ])),
                    body_len: len,
                    ..CASE
                };
                let (parts, _, _) = run(&case).await;
                heads.push(parts.headers);
            }
            assert_eq!(
                heads[0], heads[1],
                "{content_type} {len} bytes, accept-encoding {ae:?}"
            );
        }
    }
}

/// The HEAD length bug: a server writes `Content-Length` from an exact size hint (axum's route,
/// hyper on HTTP/1 and HTTP/2), so the body of a HEAD answered with gzip headers must not report
/// the identity length, and must report the same facts as its GET's body.
#[tokio::test]
async fn head_body_size_hint_matches_get_so_servers_write_the_same_length() {
    for (content_type, len) in [
        ("application/json", 5000),
        ("text/plain", 2),
        ("image/png", 5000),
    ] {
        for ae in [Some(&b"gzip"[..]), None] {
            let mut facts = Vec::new();
            for method in [Method::GET, Method::HEAD] {
                let case = Case {
                    method: method.clone(),
                    accept_encoding: ae,
                    headers: Box::leak(Box::new([("content-type", content_type.as_bytes())])),
                    body_len: len,
                    ..CASE
                };
                let body = body_text(case.body_len);
                let headers = case.headers;
                let svc = (case.layer)().layer(service_fn(move |_req: Request<Empty<Bytes>>| {
                    let mut response = Response::builder();
                    for (name, value) in headers {
                        response = response.header(*name, *value);
                    }
                    let response = response.body(Full::new(body.clone())).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                }));
                let mut request = Request::builder().method(method.clone());
                if let Some(ae) = ae {
                    request = request.header("accept-encoding", ae);
                }
                let response = svc
                    .oneshot(request.body(Empty::new()).unwrap())
                    .await
                    .unwrap();
                let (parts, body) = response.into_parts();
                let exact = http_body::Body::size_hint(&body).exact();
                facts.push((parts.headers, exact));
            }
            let (get, head) = (&facts[0], &facts[1]);
            assert_eq!(
                get, head,
                "{content_type} {len} bytes, accept-encoding {ae:?}"
            );
            if get.0.contains_key("content-encoding") {
                assert_eq!(
                    head.1, None,
                    "a gzip HEAD must not state the identity length"
                );
            }
        }
    }
}

#[tokio::test]
async fn inner_service_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Refused;
    let svc = GzipLayer::new().layer(service_fn(|_req: Request<()>| async {
        Err::<Response<Full<Bytes>>, _>(Refused)
    }));
    let request = Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    assert_eq!(svc.oneshot(request).await.unwrap_err(), Refused);
}
