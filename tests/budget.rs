//! The stream budget (`max_streams`): at the edge, over it, and after streams end or are dropped.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use support::*;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_gzip::{GzipBody, GzipLayer};

type Svc = tower_gzip::Gzip<
    tower::util::ServiceFn<
        fn(Request<()>) -> std::future::Ready<Result<Response<Script>, Infallible>>,
    >,
>;

fn streaming_response(
    _req: Request<()>,
) -> std::future::Ready<Result<Response<Script>, Infallible>> {
    let body = Script::new([
        data("x".repeat(1000)),
        Step::Pending,
        data("y".repeat(1000)),
        Step::End,
    ]);
    let response = Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap();
    std::future::ready(Ok(response))
}

fn service(layer: &GzipLayer) -> Svc {
    layer.layer(service_fn(streaming_response as fn(_) -> _))
}

async fn get(svc: &mut Svc, method: http::Method) -> Response<GzipBody<Script>> {
    let request = Request::builder()
        .method(method)
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(request).await.unwrap()
}

#[tokio::test]
async fn budget_edge_n_then_n_plus_one_then_freed() {
    let layer = GzipLayer::new().max_streams(3);
    let probe = layer.clone();
    let mut svc = service(&layer);

    let mut open = Vec::new();
    for n in 1..=3 {
        let response = get(&mut svc, http::Method::GET).await;
        assert_eq!(
            response.headers()["content-encoding"],
            "gzip",
            "stream {n} fits"
        );
        assert_eq!(probe.live_streams(), n);
        open.push(response.into_body());
    }

    // N + 1: identity, with the headers an identity answer gets, and no slot taken.
    let over = get(&mut svc, http::Method::GET).await;
    assert!(!over.headers().contains_key("content-encoding"));
    assert_eq!(over.headers()["vary"], "Accept-Encoding");
    assert_eq!(probe.live_streams(), 3);
    assert!(!over.body().is_compressing());
    let plain = over.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        plain,
        Bytes::from(["x".repeat(1000), "y".repeat(1000)].concat())
    );

    // HEAD sees the same as GET would right now.
    let head = get(&mut svc, http::Method::HEAD).await;
    assert!(!head.headers().contains_key("content-encoding"));

    // A body that ends frees its slot...
    let finished = open.pop().unwrap().collect().await.unwrap().to_bytes();
    assert_eq!(
        gunzip(&finished),
        ["x".repeat(1000), "y".repeat(1000)].concat().as_bytes()
    );
    assert_eq!(probe.live_streams(), 2);
    // ...and so does one dropped mid-stream (a client that went away).
    let mut half_read = open.pop().unwrap();
    assert!(matches!(poll_once(&mut half_read), Polled::Data(_)));
    drop(half_read);
    assert_eq!(probe.live_streams(), 1);

    let again = get(&mut svc, http::Method::GET).await;
    assert_eq!(again.headers()["content-encoding"], "gzip");
    assert_eq!(probe.live_streams(), 2);
    let head = get(&mut svc, http::Method::HEAD).await;
    assert_eq!(head.headers()["content-encoding"], "gzip");
    assert_eq!(probe.live_streams(), 2, "HEAD takes no slot");

    drop((open, again));
    assert_eq!(probe.live_streams(), 0);
}

#[tokio::test]
async fn zero_budget_compresses_nothing_and_uncompressed_responses_take_no_slot() {
    let layer = GzipLayer::new().max_streams(0);
    let mut svc = service(&layer);
    let response = get(&mut svc, http::Method::GET).await;
    assert!(!response.headers().contains_key("content-encoding"));
    assert_eq!(response.headers()["vary"], "Accept-Encoding");

    let layer = GzipLayer::new();
    let mut svc = service(&layer);
    let request = Request::new(()); // no Accept-Encoding
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert!(!response.body().is_compressing());
    assert_eq!(layer.live_streams(), 0);
}

#[tokio::test]
async fn live_streams_is_counted_without_a_limit() {
    let layer = GzipLayer::new();
    let mut svc = service(&layer);
    let a = get(&mut svc, http::Method::GET).await;
    let b = get(&mut svc, http::Method::GET).await;
    assert_eq!(layer.live_streams(), 2);
    assert_eq!(svc.live_streams(), 2);
    drop(a);
    let b = b.into_body().collect().await.unwrap();
    assert_eq!(layer.live_streams(), 0);
    drop(b);
}
