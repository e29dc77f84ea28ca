//! Property tests of the body adapter: random bodies, chunkings, stalls, trailers, errors, flush
//! policies, levels, window sizes and hibernation settings, checked poll by poll against flate2
//! (an independent decoder).
//!
//! Reproducible: the RNG seed is fixed unless `TOWER_GZIP_PROP_SEED` (or `PROPTEST_RNG_SEED`) is
//! set, the case count can be changed with `PROPTEST_CASES`, and a failure prints the seed and the
//! minimal failing case. No regression files are written.
//!
//! Properties, for every generated case:
//! - The whole output decodes with flate2 to exactly the input: one gzip member, nothing after it.
//! - Prefix timeliness: after every poll in which the inner body stalled (returned `Pending`), the
//!   frames yielded so far decode, with a streaming decoder, to exactly the input delivered so far.
//!   With `FlushPolicy::EveryFrame` the same holds each time the inner body is asked for a frame.
//! - No empty data frame is yielded; output frames stay bounded (16 KiB of input per poll).
//! - Trailers arrive once, after the complete gzip member, and are the inner body's trailers.
//! - An inner error is surfaced as the same value (downcast), after which the body ends; the
//!   output is never a complete gzip member, and what it decodes to is a prefix of the input.
//! - The inner body is never polled after it ended, failed or yielded trailers, and the outer body
//!   keeps answering `None` after its end.
//! - `is_end_stream()` is true only when the next poll yields `None`, and true after the end;
//!   every `size_hint()` bounds the number of data bytes still to come.
//! - The stream slot (`live_streams`) is released when the body ends, fails or is dropped.
//! - A response that is not compressed (client without gzip, or a known length below the
//!   minimum size) passes every frame, the trailers and the error through unchanged.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use tower::{service_fn, Layer, ServiceExt};
use tower_gzip::{BoxError, FlushPolicy, GzipBody, GzipLayer};

mod prop_support;
use prop_support::run_property;

// ---------------------------------------------------------------------------------------------
// Runner: fixed seed by default, overridable, printed on failure
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The scripted inner body
// ---------------------------------------------------------------------------------------------

/// The error value the scripted body fails with.
#[derive(Debug, PartialEq, Eq)]
struct ScriptError(u32);

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scripted failure #{}", self.0)
    }
}

impl std::error::Error for ScriptError {}

#[derive(Clone, Debug)]
enum Step {
    Data(Bytes),
    Pending,
    Trailers(HeaderMap),
    Error(u32),
}

/// What the scripted body saw, shared with the test.
#[derive(Debug, Default)]
struct Log {
    /// Data bytes handed out so far.
    delivered: usize,
    /// `Pending` answers so far.
    stalls: usize,
    /// For each poll since the test last looked: data bytes delivered before that poll.
    polls: Vec<usize>,
    /// Polls after the end (`None` or an error): must stay 0.
    polls_after_end: usize,
    /// Polls after the trailers (the last frame of a body): must stay 0 too; counted apart because
    /// of a known crate bug (see `passthrough_polls_the_inner_body_after_its_trailers`).
    polls_after_trailers: usize,
}

/// A body that answers polls from a script, records them, and never gets polled after its end
/// without the test noticing (it records the poll and answers `None` again).
#[derive(Debug)]
struct Script {
    steps: VecDeque<Step>,
    finished: bool,
    ended_with_trailers: bool,
    exact_hint: bool,
    log: Arc<Mutex<Log>>,
}

impl Body for Script {
    type Data = Bytes;
    type Error = ScriptError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScriptError>>> {
        let mut log = self.log.lock().unwrap();
        let delivered = log.delivered;
        log.polls.push(delivered);
        if self.finished {
            if self.ended_with_trailers {
                log.polls_after_trailers += 1;
            } else {
                log.polls_after_end += 1;
            }
            return Poll::Ready(None);
        }
        drop(log);
        let step = self.steps.pop_front();
        let mut log = self.log.lock().unwrap();
        match step {
            Some(Step::Data(data)) => {
                log.delivered += data.len();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Step::Pending) => {
                log.stalls += 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Trailers(trailers)) => {
                drop(log);
                self.finished = true;
                self.ended_with_trailers = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Some(Step::Error(n)) => {
                drop(log);
                self.finished = true;
                Poll::Ready(Some(Err(ScriptError(n))))
            }
            None => {
                drop(log);
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        if !self.exact_hint {
            return SizeHint::default();
        }
        let remaining: usize = self
            .steps
            .iter()
            .map(|step| match step {
                Step::Data(data) => data.len(),
                _ => 0,
            })
            .sum();
        SizeHint::with_exact(remaining as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated cases
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// JSON-like lines from a small vocabulary: compresses well.
    Text,
    /// Uniform random bytes: does not compress.
    Random,
    /// Runs of one byte: compresses extremely well.
    Runs,
    /// Alternating text and random segments.
    Mixed,
}

#[derive(Clone, Debug)]
struct BodyCase {
    kind: Kind,
    len: usize,
    seed: u64,
    /// Chunk lengths (0 = an empty data frame), used in a cycle until the input is consumed, each
    /// preceded by that many `Pending` answers.
    plan: Vec<(usize, u8)>,
    /// `Pending` answers after the last chunk.
    tail_gap: u8,
    /// Trailer fields to send after the data.
    trailers: Option<Vec<(u8, Vec<u8>)>>,
    /// Fail after this many data chunks (modulo their number + 1) instead of ending.
    error_after: Option<usize>,
    /// Drop the outer body after this many polls (a client that went away).
    drop_after: Option<usize>,
    every_frame: bool,
    level: u32,
    window_bits: u8,
    /// 0: the default (1 s, never reached here), 1: `hibernate_after(ZERO)` (drop the deflate
    /// state at every stall and resume primed), 2: `never_hibernate()`.
    hibernate: u8,
    accept_gzip: bool,
    exact_hint: bool,
}

struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "{\"id\":",
    "\"name\":\"",
    "user",
    "\",\"active\":true}",
    "false",
    "\n",
    "data: ",
    "token",
    " the ",
    "quick",
    "brown",
    "fox",
    "ü",
    "0123",
    ",",
];

fn input_bytes(kind: Kind, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 32);
    let mut text_mode = true;
    while out.len() < len {
        match kind {
            Kind::Text => {
                out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes())
            }
            Kind::Random => out.extend_from_slice(&rng.next().to_le_bytes()),
            Kind::Runs => {
                let byte = rng.next() as u8;
                let run = 1 + rng.below(300) as usize;
                out.extend(std::iter::repeat(byte).take(run));
            }
            Kind::Mixed => {
                let segment = 1 + rng.below(2000) as usize;
                for _ in 0..segment {
                    if text_mode {
                        out.extend_from_slice(
                            WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes(),
                        );
                    } else {
                        out.push(rng.next() as u8);
                    }
                }
                text_mode = !text_mode;
            }
        }
    }
    out.truncate(len);
    out
}

/// Data frames per script at most (keeps debug-build run time in check).
const MAX_CHUNKS: usize = 1500;

const TRAILER_NAMES: &[&str] = &["grpc-status", "x-checksum", "server-timing", "x-obs"];

impl BodyCase {
    fn input(&self) -> Vec<u8> {
        input_bytes(self.kind, self.len, self.seed)
    }

    fn trailer_map(&self) -> Option<HeaderMap> {
        let fields = self.trailers.as_ref()?;
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            let name = HeaderName::from_static(TRAILER_NAMES[*name as usize % TRAILER_NAMES.len()]);
            map.append(
                name,
                HeaderValue::from_bytes(value).expect("valid field bytes"),
            );
        }
        Some(map)
    }

    /// The script, and the number of data bytes delivered before the error (if any).
    fn steps(&self, input: &[u8]) -> (Vec<Step>, Option<usize>) {
        let mut chunks: Vec<(usize, u8)> = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        loop {
            let (len, gap) = self.plan[i % self.plan.len()];
            let n = len.min(input.len() - pos);
            chunks.push((n, gap));
            pos += n;
            i += 1;
            if i >= self.plan.len() && pos == input.len() {
                break;
            }
            // A plan of only empty frames would never finish, and a plan of tiny frames over a
            // large input makes a very long script: the rest goes in one chunk.
            let stuck = i % self.plan.len() == 0 && self.plan.iter().all(|(len, _)| *len == 0);
            if stuck || chunks.len() >= MAX_CHUNKS {
                chunks.push((input.len() - pos, 0));
                pos = input.len();
                break;
            }
        }
        debug_assert_eq!(pos, input.len());

        let error_after = self.error_after.map(|k| k % (chunks.len() + 1));
        let mut steps = Vec::new();
        let mut pos = 0;
        let mut delivered_before_error = None;
        for (index, (n, gap)) in chunks.iter().enumerate() {
            if error_after == Some(index) {
                delivered_before_error = Some(pos);
                break;
            }
            steps.extend(std::iter::repeat(Step::Pending).take(*gap as usize));
            steps.push(Step::Data(Bytes::copy_from_slice(&input[pos..pos + n])));
            pos += n;
        }
        if error_after == Some(chunks.len()) {
            delivered_before_error = Some(pos);
        }
        steps.extend(std::iter::repeat(Step::Pending).take(self.tail_gap as usize));
        match (delivered_before_error, self.trailer_map()) {
            (Some(_), _) => steps.push(Step::Error(self.seed as u32)),
            (None, Some(trailers)) => steps.push(Step::Trailers(trailers)),
            (None, None) => {}
        }
        (steps, delivered_before_error)
    }
}

fn chunk_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        4 => 1usize..16,
        4 => 1usize..600,
        2 => 1usize..9000,
        1 => 1usize..80_000,
    ]
}

fn gap() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0u8), 3 => 1u8..3, 1 => 3u8..6]
}

fn header_value_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Visible ASCII, space, tab and obs-text: every byte a header value may hold.
    prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..12)
}

fn body_case() -> impl Strategy<Value = BodyCase> {
    let kind = prop_oneof![
        Just(Kind::Text),
        Just(Kind::Random),
        Just(Kind::Runs),
        Just(Kind::Mixed)
    ];
    // Mostly small bodies; some cross the 16 KiB poll budget and the 32 KiB frame target.
    let len = prop_oneof![
        12 => 0usize..64,
        24 => 0usize..4096,
        6 => 4096usize..24_000,
        1 => 24_000usize..150_000,
    ];
    let shape = (
        kind,
        len,
        any::<u64>(),
        prop::collection::vec((chunk_len(), gap()), 1..10),
        gap(),
        prop::option::weighted(
            0.3,
            prop::collection::vec((any::<u8>(), header_value_bytes()), 1..4),
        ),
    );
    let options = (
        prop::option::weighted(0.2, any::<usize>()),
        prop::option::weighted(0.1, 0usize..12),
        any::<bool>(),
        0u32..=12,
        // Mostly the default window; small windows slide often, which is slow in debug builds.
        prop_oneof![3 => Just(15u8), 1 => 7u8..=17],
        prop::bool::weighted(0.85),
        any::<bool>(),
        // Hibernating at every stall re-primes a deflate state each time: slow in debug builds.
        prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    );
    (shape, options).prop_map(
        |(
            (kind, len, seed, plan, tail_gap, trailers),
            (
                error_after,
                drop_after,
                every_frame,
                level,
                window_bits,
                accept_gzip,
                exact_hint,
                hibernate,
            ),
        )| BodyCase {
            kind,
            len,
            seed,
            plan,
            tail_gap,
            trailers,
            exact_hint: exact_hint && error_after.is_none(),
            error_after,
            drop_after,
            every_frame,
            level,
            window_bits,
            hibernate,
            accept_gzip,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Driving one case
// ---------------------------------------------------------------------------------------------

/// What one poll of the outer body returned.
#[derive(Debug)]
enum Polled {
    Data(Bytes),
    Trailers(HeaderMap),
    Error(BoxError),
    End,
    Pending,
}

fn poll_once<B>(body: &mut B) -> Polled
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Pending => Polled::Pending,
        Poll::Ready(None) => Polled::End,
        Poll::Ready(Some(Err(e))) => Polled::Error(e),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) => Polled::Data(data),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => Polled::Trailers(trailers),
                Err(_) => Polled::Pending,
            },
        },
    }
}

/// Runs `body` through a service wrapped in `layer`, as the response to a GET.
fn respond(layer: &GzipLayer, accept_gzip: bool, body: Script) -> Response<GzipBody<Script>> {
    let mut body = Some(body);
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let response = Response::builder()
            .header("content-type", "application/json")
            .body(body.take().expect("called once"))
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    }));
    let mut request = Request::builder();
    if accept_gzip {
        request = request.header("accept-encoding", "gzip");
    }
    futures_util::FutureExt::now_or_never(svc.oneshot(request.body(()).unwrap()))
        .expect("the response is ready at once")
        .unwrap()
}

/// Decodes one complete gzip member that must fill `bytes` exactly.
fn gunzip_exact(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out)?;
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} bytes after the gzip member",
            rest.len()
        )));
    }
    Ok(out)
}

/// Largest data frame the adapter may yield. At most 16 KiB of input is compressed per poll, and
/// output is held back to fill frames of up to 32 KiB; a frame also carries what deflate held back
/// from earlier input (its pending buffer, and the 4 KiB staging buffer), plus framing. The documented promise is
/// only that frames stay bounded; this is the bound that follows from the design.
const MAX_FRAME: usize = 2 * 64 * 1024 + 8 * 1024;

/// Counters printed after the run, to show what the generated cases covered.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    compressed: AtomicUsize,
    passthrough: AtomicUsize,
    errors: AtomicUsize,
    trailers: AtomicUsize,
    dropped: AtomicUsize,
    stall_checks: AtomicUsize,
    input_bytes: AtomicUsize,
    largest_frame: AtomicUsize,
}

fn check_case(case: BodyCase, coverage: &Coverage) -> TestCaseResult {
    let input = case.input();
    let (steps, delivered_before_error) = case.steps(&input);
    // Each step takes at most one poll (passthrough yields every frame), plus the bounded slices
    // of large frames and the end.
    let limit = 2 * steps.len() + 2 * (input.len() >> 14) + 20;
    let expected_trailers = if delivered_before_error.is_none() {
        case.trailer_map()
    } else {
        None
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let script = Script {
        steps: steps.into(),
        finished: false,
        ended_with_trailers: false,
        exact_hint: case.exact_hint,
        log: log.clone(),
    };
    let policy = if case.every_frame {
        FlushPolicy::EveryFrame
    } else {
        FlushPolicy::OnStall
    };
    let mut layer = GzipLayer::new()
        .level(case.level)
        .window_bits(case.window_bits)
        .flush_policy(policy);
    layer = match case.hibernate {
        1 => layer.hibernate_after(std::time::Duration::ZERO),
        2 => layer.never_hibernate(),
        _ => layer,
    };
    let response = respond(&layer, case.accept_gzip, script);

    // Documented decision: compressed when the client accepts gzip, unless the length is known up
    // front and below the minimum size (256 bytes by default) or zero.
    let compress = case.accept_gzip && !(case.exact_hint && input.len() < 256);
    prop_assert_eq!(response.body().is_compressing(), compress);
    prop_assert_eq!(
        response.headers().get("content-encoding").is_some(),
        compress
    );
    prop_assert_eq!(layer.live_streams(), usize::from(compress));
    let mut body = response.into_body();

    coverage.cases.fetch_add(1, Ordering::Relaxed);
    coverage
        .input_bytes
        .fetch_add(input.len(), Ordering::Relaxed);
    if compress {
        coverage.compressed.fetch_add(1, Ordering::Relaxed);
    } else {
        coverage.passthrough.fetch_add(1, Ordering::Relaxed);
    }

    let mut output: Vec<u8> = Vec::new();
    let mut streaming = flate2::write::GzDecoder::new(Vec::new());
    // (data bytes yielded before the hint was taken, the hint)
    let mut hints: Vec<(usize, SizeHint)> = Vec::new();
    let mut trailers: Option<HeaderMap> = None;
    let mut error: Option<BoxError> = None;
    let mut ended = false;
    let mut polls = 0usize;
    let mut checked = 0usize;

    while !ended {
        polls += 1;
        prop_assert!(polls < limit, "the body did not end within {} polls", limit);
        if case.drop_after == Some(polls) {
            drop(body);
            coverage.dropped.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(layer.live_streams(), 0, "a dropped body frees its slot");
            prop_assert_eq!(log.lock().unwrap().polls_after_end, 0);
            return Ok(());
        }
        let end_stream_before = body.is_end_stream();
        hints.push((output.len(), body.size_hint()));
        let decoded_before = streaming.get_ref().len();
        let stalls_before = log.lock().unwrap().stalls;

        let polled = poll_once(&mut body);

        let (stalled, inner_polls, delivered) = {
            let mut log = log.lock().unwrap();
            (
                log.stalls > stalls_before,
                std::mem::take(&mut log.polls),
                log.delivered,
            )
        };
        if end_stream_before {
            prop_assert!(
                matches!(polled, Polled::End),
                "is_end_stream() was true but the poll gave {:?}",
                polled
            );
        }
        match polled {
            Polled::Data(data) => {
                prop_assert!(trailers.is_none(), "data after the trailers");
                prop_assert!(error.is_none(), "data after the error");
                prop_assert!(
                    !compress || data.len() <= MAX_FRAME,
                    "frame of {} bytes",
                    data.len()
                );
                output.extend_from_slice(&data);
                if compress {
                    coverage
                        .largest_frame
                        .fetch_max(data.len(), Ordering::Relaxed);
                    prop_assert!(!data.is_empty(), "an empty data frame was yielded");
                    streaming.write_all(&data).map_err(|e| {
                        TestCaseError::fail(format!("streaming decoder rejected the output: {e}"))
                    })?;
                    streaming.flush().map_err(|e| {
                        TestCaseError::fail(format!("streaming decoder rejected the output: {e}"))
                    })?;
                }
            }
            Polled::Trailers(t) => {
                prop_assert!(trailers.is_none(), "trailers twice");
                prop_assert!(error.is_none(), "trailers after the error");
                prop_assert_eq!(delivered, input.len(), "trailers before all data");
                if compress {
                    // The gzip member is complete before the trailers go out.
                    let decoded = gunzip_exact(&output).map_err(|e| {
                        TestCaseError::fail(format!("output before the trailers: {e}"))
                    })?;
                    prop_assert!(decoded == input, "output before the trailers != input");
                }
                trailers = Some(t);
            }
            Polled::Error(e) => {
                prop_assert!(error.is_none(), "two errors");
                error = Some(e);
            }
            Polled::End => ended = true,
            Polled::Pending => {}
        }

        let decoded = if compress {
            streaming.get_ref().as_slice()
        } else {
            output.as_slice()
        };
        // Only the bytes decoded since the last poll need comparing.
        prop_assert!(
            decoded.len() <= input.len() && decoded[checked..] == input[checked..decoded.len()],
            "the output decodes to something that is not a prefix of the input"
        );
        checked = decoded.len();
        if !compress {
            // Passthrough: every delivered byte is handed out in the same poll.
            prop_assert_eq!(decoded.len(), delivered);
        } else if stalled && error.is_none() {
            // Prefix timeliness: the inner body stalled during this poll, so everything it
            // delivered is decodable from what the client has.
            coverage.stall_checks.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(
                decoded.len(),
                delivered,
                "after a stall only {} of {} delivered bytes are decodable",
                decoded.len(),
                delivered
            );
        }
        if compress && case.every_frame {
            // EveryFrame: when the inner body is asked for its next frame, every earlier frame
            // has already been handed out decodably.
            for before in inner_polls {
                prop_assert_eq!(
                    before,
                    decoded_before,
                    "EveryFrame: the inner body was polled with {} bytes delivered but only {} \
                     decodable",
                    before,
                    decoded_before
                );
            }
        }
    }

    // After the end: `None` again, no more inner polls, end of stream reported, slot freed.
    for _ in 0..3 {
        prop_assert!(matches!(poll_once(&mut body), Polled::End));
    }
    prop_assert!(
        body.is_end_stream(),
        "is_end_stream() is false after the end"
    );
    let (polls_after_end, polls_after_trailers) = {
        let log = log.lock().unwrap();
        (log.polls_after_end, log.polls_after_trailers)
    };
    prop_assert_eq!(
        polls_after_end,
        0,
        "the inner body was polled after its end"
    );
    prop_assert_eq!(
        polls_after_trailers,
        0,
        "the inner body was polled after its trailers"
    );
    prop_assert_eq!(layer.live_streams(), 0, "the stream slot was not released");
    for (yielded_before, hint) in hints {
        let remaining = (output.len() - yielded_before) as u64;
        prop_assert!(
            hint.lower() <= remaining && hint.upper().map_or(true, |upper| remaining <= upper),
            "size hint {:?} but {} data bytes followed",
            hint,
            remaining
        );
    }

    match delivered_before_error {
        Some(delivered) => {
            coverage.errors.fetch_add(1, Ordering::Relaxed);
            let error = error.ok_or_else(|| TestCaseError::fail("the error was not surfaced"))?;
            prop_assert_eq!(
                error.downcast_ref::<ScriptError>(),
                Some(&ScriptError(case.seed as u32)),
                "the error is not the inner body's value: {:?}",
                error
            );
            prop_assert!(trailers.is_none());
            if compress {
                prop_assert!(
                    output.is_empty() || gunzip_exact(&output).is_err(),
                    "a failed body produced a complete gzip member"
                );
            } else {
                prop_assert!(output == input[..delivered]);
            }
        }
        None => {
            if let Some(error) = error {
                return Err(TestCaseError::fail(format!("unexpected error: {error}")));
            }
            let decoded = if compress {
                gunzip_exact(&output).map_err(|e| {
                    TestCaseError::fail(format!("output is not one gzip member: {e}"))
                })?
            } else {
                output.clone()
            };
            prop_assert!(decoded == input, "the output does not decode to the input");
            if expected_trailers.is_some() {
                coverage.trailers.fetch_add(1, Ordering::Relaxed);
            }
            prop_assert_eq!(trailers, expected_trailers);
        }
    }
    Ok(())
}

/// Regression test for a bug this test found: the passthrough path stopped only after `None` or an
/// error and polled the inner body again after its trailers. A non-fused inner body (one that
/// panics when polled after its last frame, as tower-http #732 describes) then panicked in whatever
/// drove the response body to `None` (`BodyExt::collect`, a proxy, ...).
#[test]
fn passthrough_never_polls_the_inner_body_after_its_trailers() {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let script = Script {
        steps: VecDeque::from([
            Step::Data(Bytes::from_static(b"hello")),
            Step::Trailers(trailers.clone()),
        ]),
        finished: false,
        ended_with_trailers: false,
        exact_hint: false,
        log: log.clone(),
    };
    // No Accept-Encoding: the body is passed through.
    let mut body = respond(&GzipLayer::new(), false, script).into_body();
    assert!(!body.is_compressing());
    assert!(matches!(poll_once(&mut body), Polled::Data(d) if d == "hello"));
    assert!(matches!(poll_once(&mut body), Polled::Trailers(t) if t == trailers));
    assert!(matches!(poll_once(&mut body), Polled::End));
    assert!(matches!(poll_once(&mut body), Polled::End));
    let polls_after_trailers = log.lock().unwrap().polls_after_trailers;
    assert_eq!(
        polls_after_trailers, 0,
        "the passed-through inner body was polled {polls_after_trailers} times after its trailers"
    );
}

#[test]
fn gzip_body_properties() {
    let coverage = Coverage::default();
    run_property("gzip_body_properties", 5_000, body_case(), |case| {
        check_case(case, &coverage)
    });
    let get = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
    eprintln!(
        "coverage (cases run, shrinking included): {} cases, {} compressed, {} passed through, {} \
         inner errors, {} with trailers, {} dropped mid-stream, {} stall checks, {} MiB of input, \
         largest compressed frame {} bytes",
        get(&coverage.cases),
        get(&coverage.compressed),
        get(&coverage.passthrough),
        get(&coverage.errors),
        get(&coverage.trailers),
        get(&coverage.dropped),
        get(&coverage.stall_checks),
        get(&coverage.input_bytes) >> 20,
        get(&coverage.largest_frame),
    );
}
