//! Control and visibility, proven on the wire where users meet them: a handler's `GzipOverride`
//! through a real axum server (HTTP/1.1 read raw, and h2), the `Outcome` of every rule, the
//! `on_response_end` callback and `GzipMetrics` checked against the bytes the client received,
//! and predicates that copy nothing from the request unless they look at it.

mod wire_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::{FlushPolicy, GzipLayer, GzipMetrics, GzipOverride, Outcome, ResponseStats};
use wire_support::{check_gzip_member, exchange, json_body, serve_axum, Proto, Wire};

const JSON_LEN: usize = 5000;

fn json() -> Vec<u8> {
    json_body(JSON_LEN)
}

/// The routes of the override test; each returns `json()` (or SSE text of the same bytes).
fn override_app(layer: GzipLayer) -> Router {
    Router::new()
        .route(
            "/auto",
            get(|| async { ([("content-type", "application/json")], json()) }),
        )
        .route(
            "/off",
            get(|| async {
                (
                    Extension(GzipOverride::off()),
                    [("content-type", "application/json")],
                    json(),
                )
            }),
        )
        .route(
            "/sse-on",
            get(|| async {
                (
                    Extension(GzipOverride::on()),
                    [("content-type", "text/event-stream")],
                    json(),
                )
            }),
        )
        .route(
            "/sse-auto",
            get(|| async { ([("content-type", "text/event-stream")], json()) }),
        )
        .route(
            "/small-on",
            get(|| async {
                (
                    Extension(GzipOverride::on()),
                    [("content-type", "application/json")],
                    json()[..20].to_vec(),
                )
            }),
        )
        .route(
            "/on-but-206",
            get(|| async {
                (
                    StatusCode::PARTIAL_CONTENT,
                    Extension(GzipOverride::on()),
                    [
                        ("content-type", "application/json"),
                        ("content-range", "bytes 0-4999/10000"),
                    ],
                    json(),
                )
            }),
        )
        .route(
            "/on-but-encoded",
            get(|| async {
                (
                    Extension(GzipOverride::on()),
                    [
                        ("content-type", "application/json"),
                        ("content-encoding", "br"),
                    ],
                    json(),
                )
            }),
        )
        .route(
            "/level-0",
            get(|| async {
                (
                    Extension(GzipOverride::auto().level(0)),
                    [("content-type", "application/json")],
                    json(),
                )
            }),
        )
        .layer(layer)
        // Outside the gzip layer: reports whether the override was still in the extensions.
        .layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                let seen = response.extensions().get::<GzipOverride>().is_some();
                response.headers_mut().insert(
                    "x-override-seen-outside",
                    if seen { "yes" } else { "no" }.parse().unwrap(),
                );
                response
            },
        ))
}

fn header<'a>(wire: &'a Wire, name: &str) -> Option<&'a [u8]> {
    match wire.values(name).as_slice() {
        [] => None,
        [one] => Some(one),
        many => panic!("{name}: {} field lines", many.len()),
    }
}

#[tokio::test]
async fn handler_override_on_the_wire_through_axum() {
    let server = serve_axum(override_app(GzipLayer::new())).await;
    // (path, accept-encoding, expect gzip, expect vary)
    let cases: &[(&str, Option<&str>, bool, bool)] = &[
        ("/auto", Some("gzip"), true, true),
        ("/off", Some("gzip"), false, false),
        ("/sse-auto", Some("gzip"), false, false),
        ("/sse-on", Some("gzip"), true, true),
        ("/small-on", Some("gzip"), true, true),
        // The HTTP rules win over a forced "on".
        ("/on-but-206", Some("gzip"), false, false),
        ("/on-but-encoded", Some("gzip"), false, false),
        // So does the client: identity, with Vary.
        ("/sse-on", None, false, true),
        ("/sse-on", Some("gzip;q=0"), false, true),
    ];
    let mut checked = 0;
    for proto in [Proto::H1Raw, Proto::H2] {
        for &(path, ae, gzip, vary) in cases {
            let what = format!("{path} accept-encoding {ae:?} over {proto:?}");
            let wire = exchange(proto, server.addr, &Method::GET, path, ae)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let expected = if path == "/small-on" {
                json()[..20].to_vec()
            } else {
                json()
            };
            assert_eq!(
                header(&wire, "x-override-seen-outside"),
                Some(&b"no"[..]),
                "{what}: the override leaked past the layer"
            );
            assert_eq!(
                header(&wire, "content-encoding").is_some_and(|v| v == b"gzip"),
                gzip,
                "{what}: {:?}",
                wire.headers
            );
            assert_eq!(
                header(&wire, "vary"),
                vary.then_some(&b"Accept-Encoding"[..]),
                "{what}"
            );
            if gzip {
                check_gzip_member(&wire.body, &expected).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(header(&wire, "content-length"), None, "{what}");
            } else {
                assert_eq!(wire.body, expected, "{what}: body changed");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * cases.len());
}

#[tokio::test]
async fn handler_level_override_changes_the_compressor_on_the_wire() {
    let server = serve_axum(override_app(GzipLayer::new())).await;
    for proto in [Proto::H1Raw, Proto::H2] {
        let default = exchange(proto, server.addr, &Method::GET, "/auto", Some("gzip"))
            .await
            .unwrap();
        let stored = exchange(proto, server.addr, &Method::GET, "/level-0", Some("gzip"))
            .await
            .unwrap();
        check_gzip_member(&default.body, &json()).unwrap();
        check_gzip_member(&stored.body, &json()).unwrap();
        // Level 0 stores: the output is larger than the input; level 6 makes it much smaller.
        assert!(stored.body.len() > JSON_LEN, "{}", stored.body.len());
        assert!(default.body.len() < JSON_LEN / 3, "{}", default.body.len());
    }
}

/// A handler body that the test feeds frame by frame.
type Feed = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type FedBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

fn fed_body() -> (Feed, FedBody) {
    let (tx, rx) = mpsc::channel(8);
    (tx, StreamBody::new(ReceiverStream::new(rx)))
}

#[tokio::test]
async fn handler_flush_policy_override_flushes_every_frame() {
    // Two frames ready back to back: `OnStall` (the layer's policy) makes one flushed frame of
    // them, the handler's `EveryFrame` makes each decodable on its own.
    for (choice, expected_frames) in [
        (GzipOverride::auto(), 1),
        (
            GzipOverride::auto().flush_policy(FlushPolicy::EveryFrame),
            2,
        ),
    ] {
        let (tx, body) = fed_body();
        let mut body = Some(body);
        let svc = GzipLayer::new().layer(service_fn(move |_req: Request<()>| {
            let mut response = Response::new(body.take().unwrap());
            response.extensions_mut().insert(choice);
            std::future::ready(Ok::<_, Infallible>(response))
        }));
        let request = Request::builder()
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        let mut body = svc.oneshot(request).await.unwrap().into_body();
        tx.send(Ok(Frame::data(Bytes::from("first line\n"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from("second line\n"))))
            .await
            .unwrap();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        let mut frames = 0;
        while decoder.get_ref().as_slice() != b"first line\nsecond line\n" {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            std::io::Write::write_all(&mut decoder, &frame).unwrap();
            std::io::Write::flush(&mut decoder).unwrap();
            frames += 1;
            if frames == 1 && expected_frames == 2 {
                assert_eq!(decoder.get_ref().as_slice(), b"first line\n");
            }
        }
        assert_eq!(frames, expected_frames, "{choice:?}");
    }
}

/// One response per rule, with the outcome the body reports.
#[tokio::test]
async fn every_outcome_is_reported_by_the_body() {
    struct Case {
        outcome: Outcome,
        layer: fn() -> GzipLayer,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        len: usize,
        ae: Option<&'static str>,
        choice: Option<GzipOverride>,
    }
    const BASE: Case = Case {
        outcome: Outcome::Gzip,
        layer: GzipLayer::new,
        status: 200,
        headers: &[("content-type", "application/json")],
        len: JSON_LEN,
        ae: Some("gzip"),
        choice: None,
    };
    let cases = [
        BASE,
        Case {
            outcome: Outcome::ClientRefused,
            ae: Some("br"),
            ..BASE
        },
        Case {
            outcome: Outcome::Status,
            status: 304,
            ..BASE
        },
        Case {
            outcome: Outcome::Range,
            headers: &[("content-range", "bytes 0-9/100")],
            ..BASE
        },
        Case {
            outcome: Outcome::AlreadyEncoded,
            headers: &[("content-encoding", "identity")],
            ..BASE
        },
        Case {
            outcome: Outcome::NoTransform,
            headers: &[("cache-control", "no-transform")],
            ..BASE
        },
        Case {
            outcome: Outcome::Digest,
            headers: &[("content-digest", "sha-256=:abc=:")],
            ..BASE
        },
        Case {
            outcome: Outcome::TooSmall,
            len: 10,
            ..BASE
        },
        Case {
            outcome: Outcome::MediaType,
            headers: &[("content-type", "multipart/x-mixed-replace; boundary=frame")],
            ..BASE
        },
        Case {
            outcome: Outcome::Predicate,
            layer: || GzipLayer::new().compress_response_when(|_| false),
            ..BASE
        },
        Case {
            outcome: Outcome::HandlerOptOut,
            choice: Some(GzipOverride::off()),
            ..BASE
        },
        Case {
            outcome: Outcome::StreamBudget,
            layer: || GzipLayer::new().max_streams(0),
            ..BASE
        },
    ];
    let mut seen = Vec::new();
    for case in cases {
        let metrics = GzipMetrics::new();
        let body = Bytes::from(json_body(case.len));
        let headers = case.headers;
        let (status, choice) = (case.status, case.choice);
        let svc =
            (case.layer)()
                .metrics(metrics.clone())
                .layer(service_fn(move |_req: Request<()>| {
                    let mut response = Response::builder().status(status);
                    for (name, value) in headers {
                        response = response.header(*name, *value);
                    }
                    let mut response = response.body(Full::new(body.clone())).unwrap();
                    if let Some(choice) = choice {
                        response.extensions_mut().insert(choice);
                    }
                    std::future::ready(Ok::<_, Infallible>(response))
                }));
        let mut request = Request::builder();
        if let Some(ae) = case.ae {
            request = request.header("accept-encoding", ae);
        }
        let response = svc.oneshot(request.body(()).unwrap()).await.unwrap();
        assert_eq!(response.body().outcome(), case.outcome);
        assert_eq!(
            response.headers().contains_key("vary"),
            matches!(
                case.outcome,
                Outcome::Gzip | Outcome::ClientRefused | Outcome::StreamBudget
            ),
            "{:?}",
            case.outcome
        );
        for outcome in Outcome::ALL {
            assert_eq!(
                metrics.responses(outcome),
                u64::from(outcome == case.outcome),
                "{:?} counted as {outcome:?}",
                case.outcome
            );
        }
        seen.push(case.outcome);
    }
    for outcome in Outcome::ALL {
        assert!(seen.contains(&outcome), "no case for {outcome:?}");
    }
}

/// Collects every `ResponseStats` the layer reports.
#[derive(Clone, Default)]
struct StatsLog(Arc<Mutex<Vec<ResponseStats>>>);

impl StatsLog {
    fn layer(&self, layer: GzipLayer) -> GzipLayer {
        let log = self.clone();
        layer.on_response_end(move |stats| log.0.lock().unwrap().push(stats.clone()))
    }

    fn take(&self) -> Vec<ResponseStats> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn stats_and_metrics_match_the_bytes_on_the_wire() {
    let log = StatsLog::default();
    let metrics = GzipMetrics::new();
    let layer = log.layer(GzipLayer::new().metrics(metrics.clone()));
    let server = serve_axum(override_app(layer)).await;
    let mut wire_gzip_bytes = 0u64;
    let mut gzip_responses = 0u64;
    for proto in [Proto::H1Raw, Proto::H2] {
        for (path, ae) in [
            ("/auto", Some("gzip")),
            ("/off", Some("gzip")),
            ("/auto", None),
            ("/sse-on", Some("gzip")),
        ] {
            let wire = exchange(proto, server.addr, &Method::GET, path, ae)
                .await
                .unwrap();
            let stats = {
                // The callback runs when the server is done with the body, which may be a moment
                // after the client has the last byte.
                let mut stats = log.take();
                for _ in 0..500 {
                    if !stats.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    stats = log.take();
                }
                stats
            };
            let [stats] = stats.as_slice() else {
                panic!("{path} {ae:?}: {} reports", stats.len());
            };
            assert!(stats.completed, "{path}: {stats:?}");
            assert_eq!(stats.method, Method::GET);
            assert_eq!(stats.uri.path(), path);
            assert_eq!(stats.status, StatusCode::OK);
            assert_eq!(stats.bytes_in, JSON_LEN as u64, "{path}");
            assert_eq!(stats.bytes_out, wire.body.len() as u64, "{path}: {stats:?}");
            let gzip = wire.values("content-encoding") == [b"gzip"];
            assert_eq!(stats.outcome.is_compressed(), gzip, "{path}");
            if gzip {
                // A complete body is finished in one go: no sync flush is spent on it.
                assert_eq!(stats.flushes, 0, "{stats:?}");
                assert!(stats.ratio().unwrap() > 3.0, "{stats:?}");
                wire_gzip_bytes += wire.body.len() as u64;
                gzip_responses += 1;
            } else {
                assert_eq!(stats.ratio(), None);
                assert_eq!(stats.compress_time, Duration::ZERO);
            }
        }
    }
    assert_eq!(metrics.responses(Outcome::Gzip), gzip_responses);
    assert_eq!(metrics.responses(Outcome::HandlerOptOut), 2);
    assert_eq!(metrics.responses(Outcome::ClientRefused), 2);
    assert_eq!(metrics.input_bytes(), gzip_responses * JSON_LEN as u64);
    assert_eq!(metrics.output_bytes(), wire_gzip_bytes);
    assert_eq!(metrics.live_streams(), 0);
}

#[tokio::test]
async fn a_dropped_stream_reports_once_incomplete_and_frees_its_gauges() {
    let log = StatsLog::default();
    let metrics = GzipMetrics::new();
    let layer = log.layer(
        GzipLayer::new()
            .metrics(metrics.clone())
            .hibernate_after(Duration::ZERO),
    );
    let (tx, body) = fed_body();
    let mut body = Some(body);
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(body.take().unwrap())))
    }));
    let request = Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let mut body = svc.oneshot(request).await.unwrap().into_body();
    assert_eq!(metrics.live_streams(), 1);
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut expected = Vec::new();
    for event in ["data: one\n\n", "data: two\n\n", "data: three\n\n"] {
        tx.send(Ok(Frame::data(Bytes::from(event)))).await.unwrap();
        expected.extend_from_slice(event.as_bytes());
        // Lockstep: the next event is sent only once this one decoded.
        while decoder.get_ref() != &expected {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            std::io::Write::write_all(&mut decoder, &frame).unwrap();
            std::io::Write::flush(&mut decoder).unwrap();
        }
        // `hibernate_after(ZERO)`: asleep after each flushed event.
        assert!(!body.holds_compressor());
        assert_eq!(metrics.hibernated_streams(), 1);
    }
    assert!(log.take().is_empty(), "reported before the end");
    drop(body); // the client went away
    let reports = log.take();
    let [stats] = reports.as_slice() else {
        panic!("{} reports", reports.len());
    };
    assert!(!stats.completed);
    assert_eq!(stats.outcome, Outcome::Gzip);
    assert_eq!(stats.bytes_in, expected.len() as u64);
    assert_eq!(stats.hibernations, 3);
    assert_eq!(stats.wakes, 2);
    assert_eq!(stats.flushes, 3);
    assert_eq!(metrics.hibernations(), 3);
    assert_eq!(metrics.wakes(), 2);
    assert_eq!(metrics.hibernated_streams(), 0);
    assert_eq!(metrics.live_streams(), 0);
    drop(tx);
}

/// A request extension that counts how often it is cloned: the layer clones the request's
/// extensions exactly when it captures the request head.
#[derive(Debug)]
struct CloneCounter(Arc<AtomicUsize>);

impl Clone for CloneCounter {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

#[tokio::test]
async fn response_predicates_copy_nothing_from_the_request() {
    for (name, layer, captures) in [
        ("no predicate", GzipLayer::new(), 0),
        (
            "response-only predicate",
            GzipLayer::new().compress_response_when(|res| res.status == 200),
            0,
        ),
        (
            "request predicate",
            GzipLayer::new().compress_when(|req, _res| req.method() == Method::GET),
            1,
        ),
    ] {
        let clones = Arc::new(AtomicUsize::new(0));
        let svc = layer.layer(service_fn(|_req: Request<Empty<Bytes>>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                json(),
            )))))
        }));
        let mut request = Request::builder()
            .header("accept-encoding", "gzip")
            .body(Empty::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(CloneCounter(clones.clone()));
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.body().outcome(), Outcome::Gzip, "{name}");
        assert_eq!(clones.load(Ordering::SeqCst), captures, "{name}");
    }
}

#[tokio::test]
async fn a_request_predicate_sees_the_request_extensions() {
    #[derive(Clone)]
    struct Tenant(&'static str);
    let layer = GzipLayer::new().compress_when(|req, _res| {
        req.extensions().get::<Tenant>().map(|t| t.0) != Some("no-gzip")
    });
    for (tenant, outcome) in [("acme", Outcome::Gzip), ("no-gzip", Outcome::Predicate)] {
        let svc = layer.clone().layer(service_fn(|_req: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                json(),
            )))))
        }));
        let mut request = Request::builder()
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        request.extensions_mut().insert(Tenant(tenant));
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.body().outcome(), outcome, "{tenant}");
    }
}

#[tokio::test]
async fn max_streams_starts_a_budget_and_other_builders_share_it() {
    let held = |layer: &GzipLayer| {
        let svc = layer.clone().layer(service_fn(|_req: Request<()>| {
            let (tx, body) = fed_body();
            std::mem::forget(tx); // keeps the stream open for the test's duration
            std::future::ready(Ok::<_, Infallible>(Response::new(body)))
        }));
        let request = Request::builder()
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        futures_util::FutureExt::now_or_never(svc.oneshot(request))
            .unwrap()
            .unwrap()
    };
    let base = GzipLayer::new().max_streams(1);
    let derived = base.clone().level(1);
    let separate = base.clone().max_streams(1);
    let first = held(&base);
    assert_eq!(first.body().outcome(), Outcome::Gzip);
    // `level` kept the budget: it is full for the derived layer too.
    assert_eq!(held(&derived).body().outcome(), Outcome::StreamBudget);
    assert_eq!(derived.live_streams(), 1);
    // `max_streams` started a budget of its own.
    assert_eq!(separate.live_streams(), 0);
    let other = held(&separate);
    assert_eq!(other.body().outcome(), Outcome::Gzip);
    assert_eq!(
        held(&base.clone().unlimited_streams()).body().outcome(),
        Outcome::Gzip
    );
    drop((first, other));
    assert_eq!(base.live_streams(), 0);
    assert_eq!(separate.live_streams(), 0);
}

#[tokio::test]
async fn reused_compressors_give_the_same_bytes_and_stay_bounded() {
    let respond = |layer: GzipLayer, len: usize| async move {
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                json_body(len),
            )))))
        }));
        let request = Request::builder()
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        let body = svc.oneshot(request).await.unwrap().into_body();
        body.collect().await.unwrap().to_bytes()
    };
    let reusing = GzipLayer::new();
    let allocating = GzipLayer::new().reuse_compressors(0);
    // Sizes that take the one-call path and sizes that stream over several polls.
    for (i, len) in [300, 5000, 40_000, 200_000, 4000, 70_000]
        .into_iter()
        .enumerate()
    {
        let a = respond(reusing.clone(), len).await;
        let b = respond(allocating.clone(), len).await;
        assert_eq!(a, b, "response {i} ({len} bytes)");
        check_gzip_member(&a, &json_body(len)).unwrap();
    }
    // One at a time: one state goes back and forth; never more than the limit.
    assert_eq!(reusing.idle_compressors(), 1);
    assert_eq!(allocating.idle_compressors(), 0);
    // Many at once: the pool keeps at most its limit (4 by default) when they all end.
    let concurrent: Vec<_> = (0..10)
        .map(|_| tokio::spawn(respond(reusing.clone(), 20_000)))
        .collect();
    for task in concurrent {
        task.await.unwrap();
    }
    assert!(
        reusing.idle_compressors() <= 4,
        "{}",
        reusing.idle_compressors()
    );
}

/// Review finding: hyper drops a body with a known length as soon as its last byte is written,
/// without polling it to its end, so a passed-through file or image was reported as incomplete.
#[tokio::test]
async fn passed_through_bodies_of_known_length_are_complete_on_the_wire() {
    let log = StatsLog::default();
    let layer = log.layer(GzipLayer::new());
    let app = Router::new()
        .route(
            "/image.png",
            get(|| async {
                // A body that never says it has ended (like a file stream), with its length.
                let chunks = futures_util::stream::iter(
                    [vec![0x89u8; 600], vec![0x50u8; 400]]
                        .into_iter()
                        .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))),
                );
                axum::response::Response::builder()
                    .header("content-type", "image/png")
                    .header("content-length", "1000")
                    .body(axum::body::Body::new(StreamBody::new(chunks)))
                    .unwrap()
            }),
        )
        .route(
            "/not-modified",
            get(|| async { (StatusCode::NOT_MODIFIED, "ignored") }),
        )
        .layer(layer);
    let server = serve_axum(app).await;
    for (path, outcome, len) in [
        ("/image.png", Outcome::MediaType, 1000),
        ("/not-modified", Outcome::Status, 0),
    ] {
        for proto in [Proto::H1Raw, Proto::H2] {
            let wire = exchange(proto, server.addr, &Method::GET, path, Some("gzip"))
                .await
                .unwrap();
            // (hyper's HTTP/2 server sends a 304's body as it is; the layer leaves it alone.)
            if outcome != Outcome::Status {
                assert_eq!(wire.body.len(), len, "{path} {proto:?}");
            }
            assert!(
                wire.values("content-encoding").is_empty(),
                "{path} {proto:?}"
            );
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            let stats = loop {
                let mut stats = log.take();
                if let Some(stats) = stats.pop() {
                    break stats;
                }
                assert!(
                    std::time::Instant::now() < give_up,
                    "{path}: never reported"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            assert_eq!(stats.outcome, outcome, "{path}");
            assert!(stats.completed, "{path} over {proto:?}: {stats:?}");
        }
    }
}

/// Review finding: states at a handler's override level filled the pool, so the layer's own
/// responses stopped reusing states.
#[tokio::test]
async fn override_levels_do_not_take_the_pool_from_the_layers_own_level() {
    let layer = GzipLayer::new();
    let respond = |level: Option<u32>| {
        let svc = layer.clone().layer(service_fn(move |_req: Request<()>| {
            let mut response = Response::new(Full::new(Bytes::from(json_body(3000))));
            if let Some(level) = level {
                response
                    .extensions_mut()
                    .insert(GzipOverride::auto().level(level));
            }
            std::future::ready(Ok::<_, Infallible>(response))
        }));
        async move {
            let request = Request::builder()
                .header("accept-encoding", "gzip")
                .body(())
                .unwrap();
            let body = svc.oneshot(request).await.unwrap().into_body();
            check_gzip_member(&body.collect().await.unwrap().to_bytes(), &json_body(3000)).unwrap();
        }
    };
    for _ in 0..6 {
        respond(Some(1)).await;
    }
    assert_eq!(
        layer.idle_compressors(),
        0,
        "override-level states are not kept"
    );
    respond(None).await;
    assert_eq!(layer.idle_compressors(), 1, "the layer's own level is");
}
