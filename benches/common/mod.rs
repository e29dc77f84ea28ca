//! Shared by the bench binaries: deterministic inputs (realistic JSON, OpenAI-style SSE chunk
//! events, Ollama-style NDJSON lines), bodies that yield ready chunks or stall between events, the
//! three service stacks under test, and a manual poll loop with a no-op waker.
//!
//! Each bench binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};
use tower_gzip::{Gzip, GzipLayer};
use tower_http::compression::{Compression, CompressionLayer, CompressionLevel};

/// The flate2 backend this build runs on (flate2 features unify across the whole build, so
/// tower-http's gzip encoder runs on the same backend as ours in the same process).
pub const BACKEND: &str = if cfg!(feature = "zlib-rs") {
    "zlib-rs"
} else {
    "miniz"
};

// ---------------------------------------------------------------------------------------------
// Deterministic inputs
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Hedy",
    "Tim",
    "Katherine",
    "John",
    "Sophie",
    "Niklaus",
    "Joan",
    "Bjarne",
    "Carol",
    "Guido",
    "Annie",
    "Yukihiro",
    "Mary",
    "James",
    "Lynn",
    "Rob",
    "Anita",
    "Leslie",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "McCarthy",
    "Wilson",
    "Wirth",
    "Clarke",
    "Stroustrup",
    "Shaw",
    "van Rossum",
    "Easley",
    "Matsumoto",
    "Keller",
    "Gosling",
    "Conway",
    "Pike",
    "Borg",
    "Lamport",
];
const CITIES: &[&str] = &[
    "Springfield",
    "Riverside",
    "Franklin",
    "Greenville",
    "Bristol",
    "Clinton",
    "Fairview",
    "Salem",
    "Madison",
    "Georgetown",
    "Arlington",
    "Ashland",
    "Burlington",
    "Manchester",
    "Oxford",
    "Dayton",
    "Lexington",
    "Milford",
    "Winchester",
    "Cleveland",
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Blvd",
    "Lake Rd",
    "Hill St",
    "Park Ave",
    "Sunset Blvd",
    "River Rd",
];
const TAGS: &[&str] = &[
    "admin",
    "beta",
    "premium",
    "trial",
    "verified",
    "newsletter",
    "staff",
    "partner",
    "vip",
    "churn-risk",
    "mobile",
    "enterprise",
];
const PRODUCTS: &[&str] = &[
    "USB-C cable 2m",
    "Mechanical keyboard",
    "27\\\" monitor",
    "Noise-cancelling headphones",
    "Laptop stand",
    "Webcam 1080p",
    "Ergonomic mouse",
    "Desk lamp",
    "Portable SSD 1TB",
    "Wireless charger",
    "HDMI adapter",
    "Standing desk mat",
];
const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "refunded",
    "cancelled",
];

fn hex(rng: &mut Rng, out: &mut String, digits: usize) {
    for _ in 0..digits {
        let d = rng.below(16) as u32;
        out.push(char::from_digit(d, 16).unwrap());
    }
}

fn timestamp(rng: &mut Rng, out: &mut String) {
    let _ = write!(
        out,
        "\"2024-{:02}-{:02}T{:02}:{:02}:{:02}Z\"",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    );
}

/// A realistic API response: a JSON array of customer records (ids, uuids, names, emails, nested
/// address, tags, orders with prices and timestamps), at least `min_len` bytes long. The same
/// `min_len` always gives the same bytes.
pub fn json_document(min_len: usize) -> Bytes {
    let mut rng = Rng::new(0x005e_ed0f_1a75);
    let mut out = String::with_capacity(min_len + 2048);
    out.push_str("{\"data\":[");
    let mut id = 100_000u64;
    while out.len() < min_len {
        if id > 100_000 {
            out.push(',');
        }
        id += 1 + rng.below(7);
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let _ = write!(out, "{{\"id\":{id},\"uuid\":\"");
        hex(&mut rng, &mut out, 8);
        out.push('-');
        hex(&mut rng, &mut out, 4);
        out.push_str("-4");
        hex(&mut rng, &mut out, 3);
        out.push('-');
        hex(&mut rng, &mut out, 4);
        out.push('-');
        hex(&mut rng, &mut out, 12);
        let _ = write!(
            out,
            "\",\"name\":\"{first} {last}\",\"email\":\"{}.{}{}@example.com\",\"active\":{},\"score\":{}.{:02},\"created_at\":",
            first.to_lowercase(),
            last.to_lowercase().replace(' ', ""),
            rng.below(100),
            rng.below(4) != 0,
            rng.below(100),
            rng.below(100)
        );
        timestamp(&mut rng, &mut out);
        let _ = write!(
            out,
            ",\"address\":{{\"street\":\"{} {}\",\"city\":\"{}\",\"zip\":\"{:05}\",\"country\":\"US\"}},\"tags\":[",
            1 + rng.below(9999),
            rng.pick(STREETS),
            rng.pick(CITIES),
            rng.below(100_000)
        );
        for t in 0..rng.below(4) {
            if t > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\"", rng.pick(TAGS));
        }
        out.push_str("],\"orders\":[");
        for o in 0..rng.below(4) {
            if o > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"order_id\":\"ORD-{}\",\"status\":\"{}\",\"item\":\"{}\",\"qty\":{},\"unit_price\":{}.{:02},\"ordered_at\":",
                1_000_000 + rng.below(9_000_000),
                rng.pick(STATUSES),
                rng.pick(PRODUCTS),
                1 + rng.below(5),
                5 + rng.below(500),
                rng.below(100)
            );
            timestamp(&mut rng, &mut out);
            out.push('}');
        }
        out.push_str("]}");
    }
    let _ = write!(
        out,
        "],\"page\":{{\"next_cursor\":\"c_{id}\",\"count\":{}}}}}",
        id - 100_000
    );
    Bytes::from(out)
}

/// Common English words, weighted by repetition, used as LLM tokens.
const WORDS: &[&str] = &[
    "the",
    "the",
    "the",
    "of",
    "of",
    "and",
    "and",
    "to",
    "to",
    "a",
    "a",
    "in",
    "in",
    "is",
    "is",
    "that",
    "it",
    "for",
    "as",
    "with",
    "on",
    "be",
    "this",
    "are",
    "by",
    "can",
    "you",
    "or",
    "an",
    "from",
    "which",
    "when",
    "your",
    "we",
    "if",
    "not",
    "will",
    "each",
    "more",
    "one",
    "all",
    "data",
    "request",
    "response",
    "server",
    "client",
    "stream",
    "model",
    "token",
    "function",
    "value",
    "error",
    "example",
    "first",
    "then",
    "use",
    "time",
    "new",
    "code",
    "file",
    "system",
    "because",
    "however",
    "also",
    "only",
    "other",
    "into",
    "than",
    "these",
    "should",
    "would",
    "could",
    "about",
    "there",
    "their",
    "what",
    "how",
    "why",
    "where",
    "return",
    "async",
    "memory",
    "compression",
    "latency",
    "performance",
    "configure",
    "middleware",
    "handler",
    "database",
    "query",
    "cache",
    "header",
    "body",
    "connection",
    "message",
    "network",
    "output",
    "input",
    "simple",
    "important",
    "different",
    "following",
    "specific",
    "approach",
    "result",
    "step",
    "way",
    "case",
    "need",
    "make",
    "like",
    "just",
    "some",
    "most",
    "very",
    "well",
    "any",
    "same",
    "both",
    "here",
    "does",
    "do",
    "has",
    "have",
    "was",
    "were",
    "been",
    "may",
    "might",
    "Rust",
    "HTTP",
    "JSON",
    "API",
    "gzip",
    "Tokio",
];

/// Sub-word pieces: real tokenizers split long words and emit punctuation as tokens.
const PIECES: &[&str] = &[
    ",", ".", ".", ":", "ing", "ed", "s", "ly", "er", "'s", " (", ")", " `", "`", "\\n\\n", "\\n",
    "-", " 1", " 2", "**", " **",
];

/// LLM-like token text: mostly " word" tokens with punctuation and sub-word pieces mixed in.
pub fn tokens(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            if rng.below(5) == 0 {
                rng.pick(PIECES).to_string()
            } else {
                format!(" {}", rng.pick(WORDS))
            }
        })
        .collect()
}

/// `n` OpenAI chat-completion chunk events as sent by the Chat Completions API with `stream: true`:
/// a role event, `n - 2` content deltas, a `finish_reason: "stop"` event (the `data: [DONE]` line
/// is not counted). Each content event is about 258 bytes.
pub fn openai_sse_events(n: usize) -> Vec<Bytes> {
    let head = "data: {\"id\":\"chatcmpl-AXk3f9QbR2tLmV8nYpZc1wHs7Ue4D\",\"object\":\"chat.completion.chunk\",\"created\":1732476123,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":";
    let tail = ",\"logprobs\":null,\"finish_reason\":";
    let mut events = Vec::with_capacity(n);
    events.push(Bytes::from(format!(
        "{head}{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}}{tail}null}}]}}\n\n"
    )));
    for token in tokens(n.saturating_sub(2), 0x000a_11ce) {
        events.push(Bytes::from(format!(
            "{head}{{\"content\":\"{token}\"}}{tail}null}}]}}\n\n"
        )));
    }
    events.push(Bytes::from(format!("{head}{{}}{tail}\"stop\"}}]}}\n\n")));
    events
}

/// `n` Ollama `/api/generate` streaming lines (NDJSON): a token per line with a nanosecond
/// timestamp, the last one `done: true` with the timing fields. About 96 bytes per line.
pub fn ollama_ndjson_lines(n: usize) -> Vec<Bytes> {
    let mut rng = Rng::new(0x0001_1a4a);
    let mut nanos: u64 = 1_234_567_890;
    let mut lines = Vec::with_capacity(n);
    let line = |token: &str, rng: &mut Rng, nanos: &mut u64| {
        *nanos += 15_000_000 + rng.below(10_000_000);
        let secs = *nanos / 1_000_000_000;
        format!(
            "{{\"model\":\"llama3.2\",\"created_at\":\"2024-11-24T19:{:02}:{:02}.{:09}Z\",\"response\":\"{token}\",\"done\":false}}\n",
            58 + secs / 60,
            secs % 60,
            *nanos % 1_000_000_000
        )
    };
    for token in tokens(n.saturating_sub(1), 0x0b0b) {
        lines.push(Bytes::from(line(&token, &mut rng, &mut nanos)));
    }
    lines.push(Bytes::from(
        "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-24T19:58:09.871234567Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[128006,9125,128007],\"total_duration\":8673412345,\"load_duration\":21345678,\"prompt_eval_count\":26,\"prompt_eval_duration\":123456000,\"eval_count\":499,\"eval_duration\":8512345678}\n",
    ));
    lines
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// A body whose frames are all ready: `data` split into `chunk`-byte frames (zero-copy slices).
/// Its size is unknown, like any streamed body, unless it is a single chunk.
#[derive(Debug)]
pub struct Chunked {
    data: Bytes,
    chunk: usize,
    single: bool,
}

impl Chunked {
    pub fn new(data: Bytes, chunk: usize) -> Self {
        let single = chunk >= data.len();
        Self {
            data,
            chunk: chunk.max(1),
            single,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.chunk.min(self.data.len());
        let frame = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.single {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// A token stream: yields `burst` events back to back, then stalls (`Pending`, waking itself at
/// once, as a channel would when the next token arrives), and so on; ends after the last event.
/// With `end == false` it stalls forever after the last event instead (a stream paused mid-body).
#[derive(Debug)]
pub struct Stalling {
    events: Arc<[Bytes]>,
    next: usize,
    burst: usize,
    in_burst: usize,
    end: bool,
}

impl Stalling {
    pub fn new(events: Arc<[Bytes]>, burst: usize, end: bool) -> Self {
        Self {
            events,
            next: 0,
            burst: burst.max(1),
            in_burst: 0,
            end,
        }
    }
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.in_burst == this.burst || (this.next == this.events.len() && !this.end) {
            this.in_burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.events.get(this.next) {
            Some(event) => {
                this.next += 1;
                this.in_burst += 1;
                Poll::Ready(Some(Ok(Frame::data(event.clone()))))
            }
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Driving services and bodies without a runtime
// ---------------------------------------------------------------------------------------------

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
    fn wake_by_ref(self: &Arc<Self>) {}
}

/// A waker that does nothing (`Waker::noop` needs Rust 1.85; the crate's MSRV is 1.80).
pub fn noop_waker() -> Waker {
    Waker::from(Arc::new(NoopWake))
}

/// Polls a future that is expected to be ready at once (all services here answer immediately).
pub fn now<F: Future>(fut: F) -> F::Output {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future was expected to be ready"),
    }
}

/// Calls a service that is always ready and answers immediately.
pub fn call<S, R>(svc: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready"),
    }
    now(svc.call(request)).expect("service call")
}

/// A GET request that accepts gzip (or not).
pub fn request(gzip: bool) -> Request<()> {
    let mut builder = Request::builder().uri("/");
    if gzip {
        builder = builder.header(header::ACCEPT_ENCODING, "gzip");
    }
    builder.body(()).unwrap()
}

/// What a poll loop saw: data frames, data bytes, `Pending` answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drained {
    pub frames: usize,
    pub bytes: usize,
    pub pendings: usize,
}

/// Polls `body` to its end with a no-op waker (`Pending` is retried at once: every body used here
/// wakes itself before returning it).
pub fn drain<B>(body: B) -> Drained
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    drain_with(body, |_| {})
}

/// Like [`drain`], calling `on_frame` with every data frame.
pub fn drain_with<B>(body: B, mut on_frame: impl FnMut(&B::Data)) -> Drained
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut body = std::pin::pin!(body);
    let mut seen = Drained::default();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    seen.frames += 1;
                    seen.bytes += data.remaining();
                    on_frame(data);
                }
            }
            Poll::Ready(Some(Err(e))) => panic!("body error: {e:?}"),
            Poll::Ready(None) => return seen,
            Poll::Pending => seen.pendings += 1,
        }
    }
}

/// Polls `body` to its end and returns its bytes.
pub fn collect<B>(body: B) -> Vec<u8>
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    drain_with(body, |data| out.extend_from_slice(data.chunk()));
    out
}

/// gunzips a complete member with flate2 (a sanity check on every bench's output).
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
        .expect("valid gzip");
    out
}

// ---------------------------------------------------------------------------------------------
// The stacks under test
// ---------------------------------------------------------------------------------------------

/// An inner service answering every request with `make()` as the body and `content_type`.
pub fn handler<B, F>(
    content_type: &'static str,
    make: F,
) -> impl Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone
where
    F: FnMut() -> B + Clone,
    B: Send,
{
    let mut make = make;
    tower::service_fn(move |_req: Request<()>| {
        let response = Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(make())
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

/// Our middleware around `inner`.
pub fn ours<S>(layer: &GzipLayer, inner: S) -> Gzip<S> {
    layer.layer(inner)
}

/// tower-http's `CompressionLayer`, gzip only, at `level` (`CompressionLevel::Precise`).
pub fn tower_http_layer(level: i32) -> CompressionLayer {
    CompressionLayer::new()
        .no_br()
        .no_deflate()
        .no_zstd()
        .quality(CompressionLevel::Precise(level))
}

/// tower-http's compression middleware around `inner`.
pub fn tower_http<S>(level: i32, inner: S) -> Compression<S> {
    tower_http_layer(level).layer(inner)
}

/// One-shot gzip with flate2's own encoder: the reference output and the speed ceiling.
pub fn flate2_gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// An allocator that counts calls and live bytes (install with `#[global_allocator]`).
pub struct Counting;

pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
pub static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// While `TRACE_ON` is set, the sizes of the first `TRACE_LEN` allocations are recorded (the
/// allocator itself must not allocate, hence a fixed array).
pub static TRACE_ON: AtomicBool = AtomicBool::new(false);
const TRACE_LEN: usize = 64;
static TRACE_NEXT: AtomicUsize = AtomicUsize::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static TRACE: [AtomicU64; TRACE_LEN] = [ZERO; TRACE_LEN];

fn trace(size: usize) {
    if TRACE_ON.load(Ordering::Relaxed) {
        let i = TRACE_NEXT.fetch_add(1, Ordering::Relaxed);
        if i < TRACE_LEN {
            TRACE[i].store(size as u64, Ordering::Relaxed);
        }
    }
}

/// Runs `f` and returns the sizes of the allocations it made (the first 64).
pub fn trace_allocs(f: impl FnOnce()) -> Vec<u64> {
    TRACE_NEXT.store(0, Ordering::Relaxed);
    TRACE_ON.store(true, Ordering::SeqCst);
    f();
    TRACE_ON.store(false, Ordering::SeqCst);
    let n = TRACE_NEXT.load(Ordering::Relaxed).min(TRACE_LEN);
    TRACE[..n]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect()
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        trace(layout.size());
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        trace(layout.size());
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        trace(new_size);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

/// (allocation calls, bytes requested) so far; only meaningful with [`Counting`] installed.
pub fn alloc_counts() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

/// Heap bytes live right now; only meaningful with [`Counting`] installed.
pub fn live_heap() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Resident set size of this process in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`), or `None` where the
/// kernel does not provide it.
pub fn thread_cpu_ns() -> Option<u64> {
    cpu_ns_of("/proc/thread-self/schedstat")
}

/// CPU time the calling thread has used, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`: exact, unlike
/// schedstat, which the kernel updates for a running thread only at scheduler events and ticks).
pub fn thread_cpu_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`, and the clock id is a constant of the platform.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// On-CPU nanoseconds of the thread whose schedstat file is `path`.
pub fn cpu_ns_of(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel thread id of the calling thread.
pub fn thread_id() -> Option<u64> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Where bench binaries write their CSV results (`target/bench-results`).
pub fn results_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes `rows` (first row = header) as CSV to `target/bench-results/<name>`. Smoke runs
/// (`cargo test --benches`, which passes no `--bench`) write nothing, so they never replace the
/// results of a real run.
pub fn write_csv(name: &str, rows: &[Vec<String>]) {
    if !std::env::args().any(|a| a == "--bench") {
        println!("smoke run: {name} not written");
        return;
    }
    let path = results_dir().join(name);
    let text: String = rows.iter().map(|row| row.join(",") + "\n").collect();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        println!("wrote {}", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Figures mode (`scripts/figures.sh`)
// ---------------------------------------------------------------------------------------------

/// Whether the bench runs in figures mode: `--figures` on the command line. In that mode a bench
/// measures only what `FIGURES.md` quotes, under the settings a user gets, and prints one
/// `FIGURE <key> <value>` line per figure; `scripts/figures.py` runs it several times and writes
/// the median and range over the runs.
pub fn figures_mode() -> bool {
    std::env::args().any(|a| a == "--figures")
}

/// `--quick` (with `--figures`): a smoke run with small sizes; its figures are not published.
pub fn quick_mode() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Prints one figure for `scripts/figures.py`.
pub fn figure(key: &str, value: f64) {
    assert!(
        !key.contains(char::is_whitespace),
        "figure keys have no spaces"
    );
    println!("FIGURE {key} {value}");
}

/// Prints one fact about the run (not a figure) for `scripts/figures.py`.
pub fn meta(key: &str, value: &str) {
    println!("META {key} {value}");
}

/// The value at quantile `q` (0..=1) of `values` (nearest rank; sorted in place).
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    values[((values.len() - 1) as f64 * q).round() as usize]
}
