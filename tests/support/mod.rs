//! Helpers shared by the integration tests: a scripted body, a way to wrap it in the layer, and
//! independent gzip decoders (flate2's here, CPython's zlib in [`python`]; not this crate's code).
#![allow(dead_code)] // each test binary uses a different subset

pub mod python;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::{GzipBody, GzipLayer};

/// One scripted answer of [`Script::poll_frame`].
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    Error(&'static str),
    Pending,
    End,
}

pub fn data(s: impl Into<Bytes>) -> Step {
    Step::Data(s.into())
}

/// The error a scripted body fails with; tests downcast to it to prove errors pass unchanged.
#[derive(Debug, PartialEq, Eq)]
pub struct ScriptError(pub &'static str);

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ScriptError {}

/// A body that answers polls from a script and, like a non-fused stream, panics when polled after
/// it ended or failed. Its size is unknown, as for any streamed body.
#[derive(Debug)]
pub struct Script {
    steps: VecDeque<Step>,
    finished: bool,
    pub polls: Arc<AtomicUsize>,
}

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
            finished: false,
            polls: Arc::default(),
        }
    }
}

impl Body for Script {
    type Data = Bytes;
    type Error = ScriptError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScriptError>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        assert!(!self.finished, "Script polled after it ended (not fused)");
        match self.steps.pop_front().unwrap_or(Step::End) {
            Step::Data(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Step::Trailers(trailers) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Step::Error(message) => {
                self.finished = true;
                Poll::Ready(Some(Err(ScriptError(message))))
            }
            Step::Pending => {
                // Ready again at once, so async drivers (`collect`) get past the stall.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Step::End => {
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Runs `body` through a service wrapped in `layer`, as the response to a gzip-accepting GET.
pub fn wrap<B>(layer: &GzipLayer, content_type: &str, body: B) -> GzipBody<B>
where
    B: Body + Send + 'static,
    B::Error: Into<tower_gzip::BoxError>,
{
    let mut body = Some(body);
    let content_type = content_type.to_owned();
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let body = body.take().expect("service called once");
        let response = Response::builder()
            .header("content-type", content_type.as_str())
            .body(body)
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    }));
    let request = Request::builder()
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let response = futures_util::FutureExt::now_or_never(svc.oneshot(request))
        .expect("response is ready at once")
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    response.into_body()
}

/// What one poll of a body returned, with data already split from trailers.
#[derive(Debug)]
pub enum Polled {
    Data(Bytes),
    Trailers(HeaderMap),
    Error(tower_gzip::BoxError),
    End,
    Pending,
}

pub fn poll_once<B>(body: &mut B) -> Polled
where
    B: Body<Data = Bytes, Error = tower_gzip::BoxError> + Unpin,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Pending => Polled::Pending,
        Poll::Ready(None) => Polled::End,
        Poll::Ready(Some(Err(e))) => Polled::Error(e),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => Polled::Data(data),
            Err(frame) => Polled::Trailers(frame.into_trailers().expect("data or trailers")),
        },
    }
}

/// Runs `chunks` through `layer` as a `content_type` response, with a stall after each chunk;
/// returns the frames it yielded and, for each frame, whether the body held its deflate state right
/// after yielding it.
pub fn frames_with_stalls(
    layer: &GzipLayer,
    content_type: &str,
    chunks: &[Vec<u8>],
) -> (Vec<Bytes>, Vec<bool>) {
    let mut steps = Vec::new();
    for chunk in chunks {
        steps.push(Step::Data(Bytes::from(chunk.clone())));
        steps.push(Step::Pending);
    }
    steps.push(Step::End);
    let mut body = wrap(layer, content_type, Script::new(steps));
    let mut frames = Vec::new();
    let mut held = Vec::new();
    loop {
        match poll_once(&mut body) {
            Polled::Data(d) => {
                frames.push(d);
                held.push(body.holds_compressor());
            }
            Polled::Pending => {}
            Polled::End => return (frames, held),
            other => panic!("{other:?}"),
        }
    }
}

/// Decodes a complete gzip member with flate2, panicking if it is incomplete or corrupt.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a complete, valid gzip member");
    out
}

/// An incremental gzip decoder, as a streaming client runs it.
pub struct StreamingDecoder(flate2::write::GzDecoder<Vec<u8>>);

impl Default for StreamingDecoder {
    fn default() -> Self {
        Self(flate2::write::GzDecoder::new(Vec::new()))
    }
}

impl StreamingDecoder {
    /// Feeds received bytes; returns everything decoded so far.
    pub fn push(&mut self, bytes: &[u8]) -> &[u8] {
        self.0.write_all(bytes).expect("valid gzip so far");
        self.0.flush().expect("valid gzip so far");
        self.0.get_ref()
    }
}

/// Something compressible that looks like an API response: JSON lines.
pub fn json_lines(n: usize) -> Vec<u8> {
    json_lines_from(0, n)
}

/// JSON lines cut to exactly `len` bytes.
pub fn json_of_size(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(&json_lines_from(i, 1000));
        i += 1000;
    }
    out.truncate(len);
    out
}

fn json_lines_from(start: usize, n: usize) -> Vec<u8> {
    (start..start + n)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"user{}\",\"active\":{}}}\n",
                i % 97,
                i % 3 == 0
            )
        })
        .collect::<String>()
        .into_bytes()
}
