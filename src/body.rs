//! [`GzipBody`]: the response body adapter, one state machine in `poll_frame`.
//!
//! Invariants:
//! - The inner body is never polled after it returned `None`, trailers, or an error.
//! - No empty data frame is ever yielded, and `Pending` is never returned while compressed bytes
//!   are held back: every frame the inner body produced is decodable by the client by the time this
//!   body waits (flush policy [`FlushPolicy::OnStall`]) or right after it (`EveryFrame`).
//! - A body that ends normally yields exactly one complete gzip member, then the trailers if any.
//!   A body whose inner body fails first yields, flushed, everything compressed so far, then the
//!   error, and never the gzip trailer: the client can decode all the handler produced up to the
//!   failure, and cannot mistake the truncated body for a complete one.
//! - At most [`POLL_INPUT_BUDGET`] input bytes and [`POLL_FRAME_BUDGET`] inner frames are handled
//!   per poll, which bounds the time spent in one poll and the size of one output frame, even for
//!   an inner body that is always ready.
//! - A pass-through body ends only when the inner body ends, fails or sends trailers.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::budget::StreamPermit;
use crate::codec::{self, EncoderSettings, GzipEncoder, StatePool};
use crate::idle_timer::{self, WakeSlot};
use crate::metrics::Observer;
use crate::{BoxError, CompressError, FlushPolicy, Outcome};

/// Input bytes compressed per `poll_frame` call before control goes back to the caller.
///
/// A poll therefore does a bounded amount of deflate work however large the inner frame is: a
/// 16 MB chunk is compressed over many polls instead of holding an executor thread for the whole
/// chunk ([measured](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#longest-poll)).
pub(crate) const POLL_INPUT_BUDGET: usize = 16 * 1024;

/// Inner frames handled per `poll_frame` call before control goes back to the caller, so a body
/// that is always ready with empty (or unknown) frames cannot hold the executor.
pub(crate) const POLL_FRAME_BUDGET: usize = 256;

/// Compressed bytes collected before a frame is yielded without waiting for a stall.
const FRAME_TARGET: usize = 32 * 1024;

/// Compressed bytes worth a frame of their own when a poll's budget runs out; less is kept for
/// the next poll (the inner body is ready, so it comes at once), so bulk output goes out in frames
/// of a useful size however small the budget per poll.
const MIN_BUDGET_FRAME: usize = 8 * 1024;

/// Deflate states a layer's streams may hold (a few hundred KiB each, with their window) before a
/// stream gives its state up at the first stall after its first data instead of
/// `hibernate_after` later (see `Compressor::sleeps_at_this_stall`).
pub(crate) const AWAKE_STATES_BEFORE_CROWDED: usize = 64;

pin_project! {
    /// The response body produced by [`Gzip`](crate::Gzip): either the inner body unchanged, or the
    /// inner body compressed to one gzip member.
    ///
    /// Whether it compresses is decided from the response head before the first poll; see the
    /// [crate docs](crate) for the rules.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{service_fn, ServiceExt};
    /// use tower_gzip::{Gzip, GzipBody};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let svc = Gzip::new(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// }));
    /// let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let body: GzipBody<Full<Bytes>> = svc.oneshot(request).await.unwrap().into_body();
    /// assert!(body.is_compressing());
    /// let compressed = body.collect().await.unwrap().to_bytes();
    /// assert!(compressed.len() < 100);
    /// # });
    /// ```
    pub struct GzipBody<B> {
        #[pin]
        inner: B,
        state: State,
        // Fixed at construction: the state alone cannot tell once it reaches `Done`.
        compressing: bool,
        outcome: Outcome,
        // Present only when the layer reports (metrics, a callback, the `tracing` feature).
        observer: Option<Box<Observer>>,
    }
}

enum State {
    /// Not compressed: frames pass through.
    Passthrough,
    /// Compressing frames from the inner body. Boxed so pass-through bodies stay small.
    Compressing(Box<Compressor>),
    /// The gzip member is complete; the inner body's trailers remain to be sent.
    Trailers(HeaderMap),
    /// The inner body failed after compressed bytes were handed out; the error comes next.
    Failed(BoxError),
    /// The body of a `HEAD` response that says `Content-Encoding: gzip`: nothing is sent, and no
    /// length is claimed (the identity length would be wrong, the compressed one is unknown).
    HeadOfGzip,
    /// Nothing more to yield; the inner body is not polled again.
    Done,
}

/// Per-body compression state. The deflate state is created on the first non-empty data frame.
struct Compressor {
    encoder: Option<GzipEncoder>,
    settings: EncoderSettings,
    flush: FlushPolicy,
    /// Idle time after which the deflate state is dropped at a stall; `None`: never.
    hibernate_after: Option<Duration>,
    /// Since when the stream has been stalled with everything flushed; cleared by new data.
    idle_since: Option<Instant>,
    /// The current burst of data came after an idle period of at least `hibernate_after`.
    woke_from_idle: bool,
    /// The stream has stalled since its first data (see `sleeps_at_this_stall`).
    stalled_since_first_data: bool,
    /// The deadline the idle timer will wake this body at, if one is registered: at most one is
    /// outstanding, so a stream that stalls after every token registers about once per
    /// `hibernate_after`, not once per token.
    timer_armed_for: Option<Instant>,
    /// The waker the idle timer wakes (it holds this only weakly): updated at every arming, so
    /// a body that moved to another task wakes that task, and a dropped body frees its task.
    wake_slot: Option<Arc<WakeSlot>>,
    /// Counts this response among the layer's live streams until the compressor is dropped.
    _permit: StreamPermit,
    /// Reset deflate states shared by the layer's responses, and the count of states they hold.
    pool: Arc<StatePool>,
    /// The part of the current inner data frame not compressed yet.
    input: Bytes,
    /// Compressed bytes not yielded yet.
    output: BytesMut,
}

impl<B> GzipBody<B> {
    /// Wraps `inner` without compressing it.
    pub(crate) fn passthrough(inner: B, outcome: Outcome, observer: Option<Box<Observer>>) -> Self {
        Self {
            inner,
            state: State::Passthrough,
            compressing: false,
            outcome,
            observer,
        }
    }

    /// Wraps the body of a `HEAD` response that gets gzip headers: it yields nothing, is never
    /// compressed, and hides the inner body's length.
    pub(crate) fn head_of_gzip(inner: B, observer: Option<Box<Observer>>) -> Self {
        Self {
            inner,
            state: State::HeadOfGzip,
            compressing: false,
            outcome: Outcome::Gzip,
            observer,
        }
    }

    /// Wraps `inner`, compressing it with `settings`, flushing per `flush`, and dropping the deflate
    /// state of a stream idle for `hibernate_after`.
    pub(crate) fn gzip(
        inner: B,
        settings: EncoderSettings,
        flush: FlushPolicy,
        hibernate_after: Option<Duration>,
        permit: StreamPermit,
        pool: Arc<StatePool>,
        observer: Option<Box<Observer>>,
    ) -> Self {
        Self {
            inner,
            compressing: true,
            outcome: Outcome::Gzip,
            observer,
            state: State::Compressing(Box::new(Compressor {
                encoder: None,
                settings: EncoderSettings {
                    can_hibernate: hibernate_after.is_some(),
                    ..settings
                },
                flush,
                hibernate_after,
                idle_since: None,
                woke_from_idle: false,
                stalled_since_first_data: false,
                timer_armed_for: None,
                wake_slot: None,
                _permit: permit,
                pool,
                input: Bytes::new(),
                output: BytesMut::new(),
            })),
        }
    }

    /// Whether this body compresses (`false` for responses passed through unchanged, and for the
    /// body of a `HEAD` response, which is never sent even when the headers say `gzip`).
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// assert!(body.is_compressing());
    /// # });
    /// ```
    pub fn is_compressing(&self) -> bool {
        self.compressing
    }

    /// What the layer decided for this response, and why when it did not compress.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// use tower_gzip::Outcome;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// let request = http::Request::builder().header("accept-encoding", "br").body(()).unwrap();
    /// let response = svc.oneshot(request).await.unwrap();
    /// assert_eq!(response.body().outcome(), Outcome::ClientRefused);
    /// # });
    /// ```
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Whether this body holds a deflate state right now: the largest part of a compressed
    /// stream's memory (the compressor's window and hash tables; [measured
    /// sizes](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#busy-stream-memory)).
    ///
    /// `false` before the first data frame, after the end, for bodies that are not compressed, and
    /// while the stream hibernates (see [`GzipLayer::hibernate_after`](crate::GzipLayer::hibernate_after)).
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::{BodyExt, Full};
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// assert!(!body.holds_compressor()); // created with the first data frame
    /// body.frame().await.unwrap().unwrap();
    /// assert!(!body.holds_compressor()); // the whole body was ready: compressed and finished
    /// # });
    /// ```
    pub fn holds_compressor(&self) -> bool {
        match &self.state {
            State::Compressing(c) => c.encoder.as_ref().is_some_and(|e| !e.is_hibernating()),
            _ => false,
        }
    }

    /// The wrapped body.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// assert_eq!(http_body::Body::size_hint(body.get_ref()).exact(), Some(1000));
    /// # });
    /// ```
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, mutably. Taking frames out of it directly corrupts the compressed stream.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// let inner: &mut Full<Bytes> = body.get_mut();
    /// # let _ = inner;
    /// # });
    /// ```
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The wrapped body, pinned.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// let inner = std::pin::Pin::new(&mut body).get_pin_mut();
    /// assert!(!http_body::Body::is_end_stream(&*inner));
    /// # });
    /// ```
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut B> {
        self.project().inner
    }

    /// Unwraps the inner body, dropping any compression state.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower::{service_fn, ServiceExt};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let svc = tower_gzip::Gzip::new(service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("x".repeat(1000)))))
    /// # }));
    /// # let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    /// let mut body = svc.oneshot(request).await.unwrap().into_body();
    /// let inner: Full<Bytes> = body.into_inner();
    /// # let _ = inner;
    /// # });
    /// ```
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// An empty pass-through body around `B::default()`, as if the layer had skipped it for its size
/// ([`Outcome::TooSmall`]); lets `GzipBody<B>` be used where a default body is needed.
///
/// ```
/// let body: tower_gzip::GzipBody<String> = Default::default();
/// assert!(!body.is_compressing());
/// ```
impl<B: Default> Default for GzipBody<B> {
    fn default() -> Self {
        Self::passthrough(B::default(), Outcome::TooSmall, None)
    }
}

impl<B> Body for GzipBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.state {
            State::Passthrough => {
                let frame = ready!(this.inner.as_mut().poll_frame(cx));
                // The end, an error and trailers are each the inner body's last answer, and so
                // is a data frame after which the inner body says it has ended (servers stop
                // polling then); a frame of a kind this crate does not know is passed on.
                let is_last = match &frame {
                    None | Some(Err(_)) => true,
                    Some(Ok(frame)) => frame.is_trailers() || this.inner.is_end_stream(),
                };
                if let (Some(observer), Some(Ok(frame))) = (this.observer.as_mut(), &frame) {
                    let len = frame.data_ref().map_or(0, Buf::remaining);
                    observer.input(len, false);
                    observer.output(len, false);
                }
                if is_last {
                    *this.state = State::Done;
                    report_end(this.observer, !matches!(frame, Some(Err(_))));
                }
                Poll::Ready(frame.map(|frame| {
                    frame
                        .map(|frame| {
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                        })
                        .map_err(Into::into)
                }))
            }
            State::Compressing(compressor) => {
                let step = compressor.poll_step(this.inner.as_mut(), cx, this.observer);
                match step {
                    Poll::Ready(Step::Frame(frame)) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(Step::Last(frame, None)) => {
                        *this.state = State::Done;
                        report_end(this.observer, true);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Step::Last(frame, Some(trailers))) => {
                        *this.state = State::Trailers(trailers);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Step::Failed(None, error)) => {
                        *this.state = State::Done;
                        report_end(this.observer, false);
                        Poll::Ready(Some(Err(error)))
                    }
                    Poll::Ready(Step::Failed(Some(frame), error)) => {
                        *this.state = State::Failed(error);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            State::Trailers(trailers) => {
                let trailers = std::mem::take(trailers);
                *this.state = State::Done;
                report_end(this.observer, true);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            State::Failed(_) => {
                report_end(this.observer, false);
                match std::mem::replace(this.state, State::Done) {
                    State::Failed(error) => Poll::Ready(Some(Err(error))),
                    _ => Poll::Ready(None), // not reached: the state was `Failed`
                }
            }
            State::HeadOfGzip => {
                *this.state = State::Done;
                report_end(this.observer, true);
                Poll::Ready(None)
            }
            State::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Passthrough => self.inner.is_end_stream(),
            // A compressed body always has at least the gzip framing left to send.
            State::Compressing(_) | State::Trailers(_) | State::Failed(_) => false,
            State::HeadOfGzip | State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Passthrough => self.inner.size_hint(),
            // The compressed size is unknown until the end (tower-http #531: never guess).
            // Nor for the HEAD of a compressed GET, so servers write no `Content-Length` for it.
            State::Compressing(_) | State::HeadOfGzip => SizeHint::default(),
            State::Trailers(_) | State::Failed(_) | State::Done => SizeHint::with_exact(0),
        }
    }
}

/// Reports the end of the body now (the observer reports when dropped), instead of when the
/// server drops the body.
fn report_end(observer: &mut Option<Box<Observer>>, completed: bool) {
    if let Some(mut observer) = observer.take() {
        if completed {
            observer.complete();
        }
    }
}

/// What one `poll_step` produced.
enum Step {
    /// A frame of compressed bytes; the stream goes on.
    Frame(Frame<Bytes>),
    /// The final frame of the gzip member, and the inner body's trailers if it had any.
    Last(Frame<Bytes>, Option<HeaderMap>),
    /// The inner body or the compressor failed: the flushed bytes compressed before the failure,
    /// if any, are yielded first, then the error.
    Failed(Option<Frame<Bytes>>, BoxError),
}

impl Compressor {
    /// Drives the inner body until there is a frame to yield or it stalls.
    fn poll_step<B>(
        &mut self,
        mut inner: Pin<&mut B>,
        cx: &mut Context<'_>,
        obs: &mut Option<Box<Observer>>,
    ) -> Poll<Step>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut budget = POLL_INPUT_BUDGET;
        let mut frames_left = POLL_FRAME_BUDGET;
        loop {
            // 1. Compress what is left of the current inner frame, a bounded slice at a time.
            if !self.input.is_empty() {
                if budget == 0 {
                    return self.yield_output(cx, obs);
                }
                let n = self.input.len().min(budget);
                let slice = self.input.split_to(n);
                budget -= n;
                let frame_done = self.input.is_empty();
                if let Some(step) = self.compress_piece(&slice, frame_done, obs) {
                    return Poll::Ready(step);
                }
                continue;
            }

            // 2. Ask the inner body for its next frame, a bounded number of times per poll.
            if frames_left == 0 {
                return self.yield_output(cx, obs);
            }
            frames_left -= 1;
            let frame = match inner.as_mut().poll_frame(cx) {
                Poll::Pending => return self.stall(cx, obs),
                Poll::Ready(None) => return self.finish(None, obs),
                Poll::Ready(Some(Err(e))) => return self.fail(e.into(), obs),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // The hot path for tiny frames: one that fits the staging buffer joins it (no deflate
            // call, no output, so nothing to hand out either). Read through a reference: moving
            // the frame's data out first cost more than the copy itself (`BENCHMARKS.md` §1).
            // Only data in one slice (a `Buf` may hand its bytes out in several chunks).
            if let Some(data) = frame.data_ref() {
                let len = data.remaining();
                let contiguous = data.chunk().len() == len;
                if len != 0 && contiguous && len <= budget && self.flush == FlushPolicy::OnStall {
                    self.end_idle();
                    let staged = self
                        .encoder
                        .as_mut()
                        .is_some_and(|encoder| encoder.try_stage(data.chunk()));
                    if staged {
                        budget -= len;
                        if let Some(obs) = obs {
                            obs.input(len, true);
                        }
                        continue;
                    }
                }
            }
            match frame.into_data() {
                // An empty data frame is not the end of the body (tower-http #722); it is skipped.
                Ok(mut data) => {
                    let len = data.remaining();
                    if len == 0 {
                        continue;
                    }
                    // The whole body in its first frame (a `Full` body, a rendered page): one
                    // deflate call, within this poll's budget.
                    if self.encoder.is_none() && len <= budget && inner.is_end_stream() {
                        self.input = data.copy_to_bytes(len);
                        return self.compress_whole(obs);
                    }
                    self.end_idle();
                    // A frame that fits this poll's budget is compressed straight from the
                    // frame; only a larger one is kept to be compressed a slice at a time.
                    if len <= budget && data.chunk().len() == len {
                        budget -= len;
                        if let Some(step) = self.compress_piece(data.chunk(), true, obs) {
                            return Poll::Ready(step);
                        }
                        continue;
                    }
                    self.input = data.copy_to_bytes(len);
                }
                Err(frame) => match frame.into_trailers() {
                    // Trailers are the last frame a body yields (http-body's contract).
                    Ok(trailers) => return self.finish(Some(trailers), obs),
                    // A frame kind this crate does not know: nothing to compress, so it is dropped.
                    Err(_) => continue,
                },
            }
        }
    }

    /// Compresses one piece of an inner frame (`frame_done`: its last piece); returns a step when
    /// there is a frame to hand out: after each inner frame with `EveryFrame`, or when enough
    /// output has built up.
    fn compress_piece(
        &mut self,
        piece: &[u8],
        frame_done: bool,
        obs: &mut Option<Box<Observer>>,
    ) -> Option<Step> {
        if let Err(e) = self.write(piece, obs) {
            return Some(self.broken(e, obs));
        }
        if frame_done && self.flush == FlushPolicy::EveryFrame {
            if let Err(e) = self.flush(obs) {
                return Some(self.broken(e, obs));
            }
            return Some(Step::Frame(self.take_frame(obs)));
        }
        if self.output.len() >= FRAME_TARGET {
            return Some(Step::Frame(self.take_frame(obs)));
        }
        None
    }

    /// Compresses `input`, creating the deflate state on first use (or on waking).
    fn write(
        &mut self,
        input: &[u8],
        obs: &mut Option<Box<Observer>>,
    ) -> Result<(), CompressError> {
        let (settings, pool) = (self.settings, &self.pool);
        // (The pool is cloned only when the encoder is created: not an atomic op per write.)
        let encoder = self
            .encoder
            .get_or_insert_with(|| GzipEncoder::new(settings, Some(pool.clone())));
        let Some(obs) = obs else {
            return encoder.write(input, &mut self.output);
        };
        let waking = encoder.is_hibernating();
        let started = obs.start();
        let written = encoder.write(input, &mut self.output);
        obs.stop(started);
        obs.input(input.len(), true);
        if waking && !encoder.is_hibernating() {
            obs.woke();
        }
        written
    }

    /// Flushes the compressor, if it has unflushed input.
    fn flush(&mut self, obs: &mut Option<Box<Observer>>) -> Result<(), CompressError> {
        let Some(encoder) = &mut self.encoder else {
            return Ok(());
        };
        let Some(obs) = obs else {
            return encoder.flush(&mut self.output);
        };
        let before = self.output.len();
        let started = obs.start();
        let flushed = encoder.flush(&mut self.output);
        obs.stop(started);
        // A flush with input behind it always emits something (the input's first symbol at least).
        if self.output.len() > before {
            obs.flushed();
        }
        flushed
    }

    /// The inner body stalled: make everything so far decodable, hand it out, then wait.
    fn stall(&mut self, cx: &mut Context<'_>, obs: &mut Option<Box<Observer>>) -> Poll<Step> {
        if self.flush == FlushPolicy::OnStall {
            if let Err(e) = self.flush(obs) {
                return Poll::Ready(self.broken(e, obs));
            }
        }
        let hibernated = match self.hibernate_if_idle() {
            Ok(hibernated) => hibernated,
            Err(e) => return Poll::Ready(self.broken(e, obs)),
        };
        self.stalled_since_first_data |= self.encoder.is_some();
        if !hibernated {
            self.arm_idle_timer(cx);
        }
        let frame = (!self.output.is_empty()).then(|| self.take_frame(obs));
        if hibernated {
            // Release the output buffer's spare capacity too: an idle stream keeps no buffers.
            self.output = BytesMut::new();
            if let Some(obs) = obs {
                obs.hibernated();
            }
        }
        match frame {
            Some(frame) => Poll::Ready(Step::Frame(frame)),
            None => Poll::Pending,
        }
    }

    /// Whether the stream goes to sleep at this stall (see
    /// [`hibernate_if_idle`](Self::hibernate_if_idle)).
    fn sleeps_at_this_stall(&self) -> bool {
        let (Some(after), Some(encoder)) = (self.hibernate_after, &self.encoder) else {
            return false;
        };
        let idle_long = self
            .idle_since
            .map_or(after.is_zero(), |since| since.elapsed() >= after);
        // The wait for the first data is not idleness: a model that thinks for seconds before its
        // first token sends the next one at once, and should not drop and rebuild its state in
        // between. But at its first stall a stream cannot tell a token stream from a periodic
        // one, and a fleet of periodic streams opened together gets its first events together:
        // keeping every state for `hibernate_after` after them would hold them all at once
        // (gigabytes for 10,000 streams, and the allocator keeps the peak). So once the layer's
        // streams hold many states, a stream sleeps at its first stall after its first data: a
        // token stream then pays one wake, a periodic one never holds its state for long.
        let crowded =
            !self.stalled_since_first_data && self.pool.awake() > AWAKE_STATES_BEFORE_CROWDED;
        !encoder.is_hibernating() && (self.woke_from_idle || idle_long || crowded)
    }

    /// New data arrived: the stream is no longer idle. Remembers whether it had been idle long.
    #[inline]
    fn end_idle(&mut self) {
        // Inline check: a body of ready frames is not idle between them.
        if self.idle_since.is_some() {
            self.end_idle_slow();
        }
    }

    fn end_idle_slow(&mut self) {
        if let (Some(since), Some(after)) = (self.idle_since.take(), self.hibernate_after) {
            self.woke_from_idle |= since.elapsed() >= after;
        }
    }

    /// At a stall, with everything flushed: drops the deflate state if the stream has now been idle
    /// for `hibernate_after`, or if the data just flushed came after such an idle period (a stream
    /// that idles long between events is expected to again; waiting for a poll that may never come
    /// would keep the state for the whole gap), or if this is the first stall after the first
    /// data in a crowded layer (see `sleeps_at_this_stall`). Checked when the body is polled,
    /// which the idle timer arranges (see `arm_idle_timer`). Returns whether it hibernated now.
    /// Falling asleep emits nothing: the alignment a new state needs is held by the encoder and
    /// goes out with the stream's next bytes.
    fn hibernate_if_idle(&mut self) -> Result<bool, CompressError> {
        // The wait for the first data is not timed: it is not idleness (`sleeps_at_this_stall`).
        let awake = self.encoder.as_ref().is_some_and(|e| !e.is_hibernating());
        if awake && self.hibernate_after.is_some() {
            self.idle_since.get_or_insert_with(Instant::now);
        }
        if !self.sleeps_at_this_stall() {
            return Ok(false);
        }
        let Some(encoder) = &mut self.encoder else {
            return Ok(false);
        };
        let hibernated = encoder.hibernate()?;
        if hibernated {
            self.woke_from_idle = false;
        }
        Ok(hibernated)
    }

    /// A stream that holds a deflate state and waits asks to be woken when it will have been idle
    /// for `hibernate_after`, so it hibernates even if the handler stays silent and nothing else
    /// polls it (a burst, then silence). The wake-up is a poll like any other: the inner body is
    /// asked for data, and if it still has none, the stall hibernates.
    fn arm_idle_timer(&mut self, cx: &mut Context<'_>) {
        let (Some(after), Some(since), Some(encoder)) =
            (self.hibernate_after, self.idle_since, &self.encoder)
        else {
            return;
        };
        if encoder.is_hibernating() {
            return;
        }
        // An idle time too long to be a point in time means never (`Duration::MAX` and the like).
        let Some(deadline) = since.checked_add(after) else {
            return;
        };
        let slot = self.wake_slot.get_or_insert_with(Arc::default);
        slot.set(cx.waker());
        // A registration still pending fires no later than this deadline (deadlines only move
        // forward), and that wake-up re-arms if the stream is not idle long enough by then.
        if self
            .timer_armed_for
            .is_some_and(|armed| armed > Instant::now())
        {
            return;
        }
        if idle_timer::wake_at(deadline, slot) {
            self.timer_armed_for = Some(deadline);
        }
    }

    /// The budget for this poll is spent: hand out what there is, or yield to the executor.
    fn yield_output(
        &mut self,
        cx: &mut Context<'_>,
        obs: &mut Option<Box<Observer>>,
    ) -> Poll<Step> {
        if self.output.len() < MIN_BUDGET_FRAME {
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            Poll::Ready(Step::Frame(self.take_frame(obs)))
        }
    }

    /// The compressor itself failed: hand out what it had already produced, then the error.
    fn broken(&mut self, error: CompressError, obs: &mut Option<Box<Observer>>) -> Step {
        self.encoder = None;
        let frame = (!self.output.is_empty()).then(|| self.take_frame(obs));
        Step::Failed(frame, error.into())
    }

    /// The inner body failed: flush what was compressed so it is decodable, hand it out, then the
    /// error. No gzip trailer is written, so the stream stays visibly truncated.
    fn fail(&mut self, error: BoxError, obs: &mut Option<Box<Observer>>) -> Poll<Step> {
        if let Err(e) = self.flush(obs) {
            return Poll::Ready(self.broken(e, obs));
        }
        self.encoder = None;
        let frame = (!self.output.is_empty()).then(|| self.take_frame(obs));
        Poll::Ready(Step::Failed(frame, error))
    }

    /// The inner body is complete in `self.input`: compress it to one gzip member in one go.
    fn compress_whole(&mut self, obs: &mut Option<Box<Observer>>) -> Poll<Step> {
        let input = std::mem::take(&mut self.input);
        let started = obs.as_ref().and_then(|obs| obs.start());
        let compressed = codec::compress_whole(self.settings, Some(&self.pool), &input);
        let compressed = match compressed {
            Ok(compressed) => Bytes::from(compressed),
            Err(e) => return Poll::Ready(self.broken(e, obs)),
        };
        if let Some(obs) = obs {
            obs.stop(started);
            obs.input(input.len(), true);
            obs.output(compressed.len(), true);
        }
        Poll::Ready(Step::Last(Frame::data(compressed), None))
    }

    /// The inner body ended: close the gzip member and drop the deflate state.
    fn finish(
        &mut self,
        trailers: Option<HeaderMap>,
        obs: &mut Option<Box<Observer>>,
    ) -> Poll<Step> {
        match self.encoder.take() {
            Some(mut encoder) => {
                let started = obs.as_ref().and_then(|obs| obs.start());
                let finished = encoder.finish(&mut self.output);
                if let Some(obs) = obs {
                    obs.stop(started);
                }
                if let Err(e) = finished {
                    return Poll::Ready(self.broken(e, obs));
                }
            }
            None => GzipEncoder::write_empty_member(self.settings, &mut self.output),
        }
        Poll::Ready(Step::Last(self.take_frame(obs), trailers))
    }

    fn take_frame(&mut self, obs: &mut Option<Box<Observer>>) -> Frame<Bytes> {
        if let Some(obs) = obs {
            obs.output(self.output.len(), true);
        }
        Frame::data(self.output.split().freeze())
    }
}

impl<B: fmt::Debug> fmt::Debug for GzipBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough => "Passthrough",
            State::Compressing(_) => "Compressing",
            State::Trailers(_) => "Trailers",
            State::Failed(_) => "Failed",
            State::HeadOfGzip => "HeadOfGzip",
            State::Done => "Done",
        };
        f.debug_struct("GzipBody")
            .field("inner", &self.inner)
            .field("state", &state)
            .finish()
    }
}
