//! The `tracing` feature: one debug event per decision and one when a response body ends, with
//! the figures as fields. Run with `cargo test --features tracing --test tracing_events`.
#![cfg(feature = "tracing")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::GzipLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One event: its target, level and fields, as text.
type Captured = (String, tracing::Level, Vec<(String, String)>);

/// Every event, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((meta.target().to_owned(), *meta.level(), fields.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_decision_event_and_an_end_event_with_the_figures() {
    let capture = Capture::default();
    let text = "tracing feature ".repeat(100);
    let compressed = tracing::subscriber::with_default(capture.clone(), || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let body = text.clone();
                let svc = GzipLayer::new().layer(service_fn(move |_req: Request<()>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                }));
                let request = Request::builder()
                    .header("accept-encoding", "gzip")
                    .body(())
                    .unwrap();
                let response = svc.oneshot(request).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
    });
    let events = capture.0.lock().unwrap().clone();
    let ours: Vec<_> = events
        .iter()
        .filter(|(target, _, _)| target == "tower_gzip")
        .collect();
    assert_eq!(ours.len(), 2, "{events:#?}");
    let field = |i: usize, name: &str| {
        ours[i]
            .2
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("event {i} has no field {name}: {:?}", ours[i]))
    };
    assert!(ours
        .iter()
        .all(|(_, level, _)| *level == tracing::Level::DEBUG));
    assert_eq!(field(0, "message"), "compression decided");
    assert_eq!(field(0, "outcome"), "gzip");
    assert_eq!(field(0, "status"), "200");
    assert_eq!(field(1, "message"), "response body ended");
    assert_eq!(field(1, "bytes_in"), text.len().to_string());
    assert_eq!(field(1, "bytes_out"), compressed.len().to_string());
    assert_eq!(field(1, "completed"), "true");
    assert_eq!(field(1, "method"), "GET");
    assert_eq!(field(1, "uri"), "/");
    assert_eq!(field(1, "status"), "200");
}
