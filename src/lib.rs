//! Gzip response compression for [Tower] services that never delays a streamed chunk.
//!
//! Add [`GzipLayer`] to an axum `Router`, or wrap any
//! `Service<http::Request<_>, Response = http::Response<B>>` with `tower::ServiceBuilder`. Responses
//! are gzip-compressed when the client accepts gzip and the response qualifies; streamed bodies
//! (NDJSON, chunked HTML, LLM token streams, Server-Sent Events when opted in) reach the client
//! chunk by chunk, because the compressor is flushed whenever the handler pauses.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_gzip::GzipLayer;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let json = r#"{"message":"hello"}"#.repeat(100);
//! let handler_body = json.clone();
//! let svc = ServiceBuilder::new()
//!     .layer(GzipLayer::new())
//!     .service(service_fn(move |_req: http::Request<()>| {
//!         let body = handler_body.clone();
//!         async move {
//!             let response = http::Response::builder()
//!                 .header("content-type", "application/json")
//!                 .body(Full::new(Bytes::from(body)))
//!                 .unwrap();
//!             Ok::<_, std::convert::Infallible>(response)
//!         }
//!     }));
//!
//! let request = http::Request::builder()
//!     .header("accept-encoding", "gzip, br")
//!     .body(())
//!     .unwrap();
//! let response = svc.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["content-encoding"], "gzip");
//! assert_eq!(response.headers()["vary"], "Accept-Encoding");
//!
//! let compressed = response.into_body().collect().await.unwrap().to_bytes();
//! let mut decoded = String::new();
//! std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut decoded)
//!     .unwrap();
//! assert_eq!(decoded, json);
//! # });
//! ```
//!
//! # Flushing and latency
//!
//! HTTP bodies have no "flush" call, so the only signal that a handler has finished a piece of
//! output is that its body stops having frames ready. With the default [`FlushPolicy::OnStall`],
//! [`GzipBody`] compresses every frame the inner body has ready, and when the inner body returns
//! `Pending` (or ends) it flushes the compressor and hands out the bytes: the client can decode
//! everything the handler produced before it paused. Frames produced back to back share one flush,
//! so a body written in tiny pieces compresses like one written at once.
//! [`FlushPolicy::EveryFrame`] flushes after each data frame instead.
//!
//! ```
//! use bytes::Bytes;
//! use std::io::Write;
//! use http_body::Frame;
//! use http_body_util::{BodyExt, StreamBody};
//! use tokio::sync::mpsc;
//! use tokio_stream::wrappers::ReceiverStream;
//! use tower::{service_fn, ServiceExt};
//! use tower_gzip::GzipLayer;
//! use tower::Layer;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
//! let body = StreamBody::new(ReceiverStream::new(rx));
//! let mut body = Some(body);
//! let svc = GzipLayer::new().layer(service_fn(move |_req: http::Request<()>| {
//!     let body = body.take().unwrap();
//!     async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
//! }));
//! let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
//! let mut body = svc.oneshot(request).await.unwrap().into_body();
//!
//! // The handler sends one line and then waits: the line is decodable right away.
//! tx.send(Ok(Frame::data(Bytes::from("{\"token\":\"Hello\"}\n")))).await.unwrap();
//! let mut decoder = flate2::write::GzDecoder::new(Vec::new());
//! let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! decoder.write_all(&frame).unwrap();
//! decoder.flush().unwrap();
//! assert_eq!(decoder.get_ref(), b"{\"token\":\"Hello\"}\n");
//! # });
//! ```
//!
//! # Which responses are compressed
//!
//! | response                                                       | outcome                         |
//! |----------------------------------------------------------------|---------------------------------|
//! | status 1xx, 204, 205, 206, 304, or a `Content-Range` header      | untouched                       |
//! | already has `Content-Encoding` (any value, `identity` too)     | untouched                       |
//! | `Cache-Control: no-transform` (switchable)                     | untouched                       |
//! | `Content-Digest`, `Repr-Digest` or `Content-MD5`               | untouched                       |
//! | empty body                                                     | untouched                       |
//! | the handler inserted [`GzipOverride::off`]                     | untouched                       |
//! | known length below the minimum size (256 B) (1)                | untouched                       |
//! | skipped media type (see below) (1)                             | untouched                       |
//! | a custom predicate says no (1)                                 | untouched                       |
//! | otherwise, client accepts gzip, but [`GzipLayer::max_streams`] responses are being compressed | identity + `Vary: Accept-Encoding` |
//! | otherwise, client accepts gzip                                 | compressed                      |
//! | otherwise, client does not accept gzip                         | identity + `Vary: Accept-Encoding` |
//!
//! (1) unless the handler inserted [`GzipOverride::on`] into the response extensions.
//!
//! Each row is an [`Outcome`], readable from the body ([`GzipBody::outcome`]), counted by
//! [`GzipMetrics`], and reported per response to [`GzipLayer::on_response_end`].
//!
//! Skipped media types by default: `text/event-stream`, `application/grpc` and `application/grpc+*`
//! (not `grpc-web`), `multipart/x-mixed-replace`, `image/*` except `image/svg+xml`, `audio/*`,
//! `video/*`, `font/woff`, `font/woff2`, and compressed archives (`application/zip`, `gzip`, `x-gzip`, `zstd`, `x-bzip2`,
//! `x-xz`, `x-7z-compressed`, `vnd.rar`, `x-rar-compressed`). The media type is parsed:
//! case-insensitive, parameters ignored. A response without a `Content-Type` is compressed.
//!
//! A compressed response gets `Content-Encoding: gzip`, loses `Content-Length` and
//! `Accept-Ranges`, has a strong `ETag` weakened (`"x"` becomes `W/"x"`; an unquoted, malformed one
//! is removed), and gets `Accept-Encoding` added to `Vary` (merged with what is there; nothing is
//! added if `Vary` is `*` or already lists it). A `HEAD` request gets the headers its `GET` would
//! get: it is judged by the same length facts (`Content-Length`, else the body's own length, since
//! axum and hyper hand a `HEAD` the body its `GET` would send), and a `HEAD` answered with gzip
//! headers has a body that yields nothing and states no length, so servers do not write the
//! identity `Content-Length` beside `Content-Encoding: gzip`.
//!
//! `Accept-Encoding` is parsed per RFC 9110 (q-values, `*`, `x-gzip`, case-insensitive); malformed
//! elements are ignored and non-UTF-8 bytes mean identity. When the client refuses both gzip and
//! identity, the response is sent as identity (no 406), so the handler's own status and body are
//! what the client sees.
//!
//! # Memory
//!
//! A compressed response holds a deflate state (the compressor's window and hash tables; [measured
//! sizes](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#busy-stream-memory)) from
//! its first data frame until it ends; responses that are not compressed never allocate one. A
//! compressed stream that goes idle hibernates ([`GzipLayer::hibernate_after`], default 1 s; a
//! timer thread wakes streams that go silent): it drops the deflate state, keeps the last window of
//! input (at most 32 KiB) packed, and continues the same gzip stream with a new state primed with
//! that window when data comes again. Finished responses leave their reset deflate states for the
//! next ones to reuse ([`GzipLayer::reuse_compressors`], 4 by default).
//! [`GzipLayer::max_streams`] caps how many responses are compressed at once, and
//! [`GzipLayer::live_streams`] reports the count; [`GzipMetrics`] counts live and hibernated
//! streams for a metrics exporter.
//!
//! # Errors
//!
//! The body error type is [`BoxError`]. An error of the inner body is passed on unchanged (boxed,
//! so it can be downcast) and the gzip trailer is not written: a client sees a truncated stream,
//! never a complete-looking one. The compressor's own failures are a [`CompressError`].
//!
//! [Tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(
    rust_2018_idioms,
    clippy::all,
    clippy::dbg_macro,
    clippy::todo,
    clippy::mem_forget,
    clippy::unused_self,
    clippy::needless_borrow,
    clippy::match_wildcard_for_single_variants,
    clippy::inefficient_to_string,
    clippy::option_option,
    clippy::unnested_or_patterns
)]
#![cfg_attr(test, deny(warnings))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "zlib-rs", feature = "miniz")))]
compile_error!(
    "tower-gzip needs a deflate backend: enable the `zlib-rs` (default) or `miniz` feature"
);

mod body;
mod budget;
mod codec;
mod config;
mod control;
mod decision;
mod deflate;
mod error;
mod idle_timer;
mod layer;
mod media;
mod metrics;
mod negotiate;
mod outcome;
mod predicate;
mod service;
mod splice;

pub mod future;

pub use body::GzipBody;
pub use config::FlushPolicy;
pub use control::GzipOverride;
pub use error::CompressError;
pub use layer::GzipLayer;
pub use metrics::GzipMetrics;
pub use outcome::{Outcome, ResponseStats};
pub use predicate::RequestHead;
pub use service::Gzip;

/// The error type of [`GzipBody`]: the inner body's error or a [`CompressError`], boxed.
///
/// ```
/// let error: tower_gzip::BoxError = "boom".into();
/// assert_eq!(error.to_string(), "boom");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
