//! [`GzipLayer`]: the builder, and the only copy of the configuration methods.

use std::borrow::Cow;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::Config;
use crate::predicate::RequestHead;
use crate::{FlushPolicy, Gzip, GzipMetrics};

/// A Tower layer that gzip-compresses responses without ever delaying a streamed chunk.
///
/// Cloning is cheap (the settings are shared). Every builder method takes and returns the layer.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_gzip::GzipLayer;
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello ".repeat(100) }))
///     .layer(GzipLayer::new());
/// # let _ = app;
/// ```
#[derive(Clone, Debug, Default)]
pub struct GzipLayer {
    config: Arc<Config>,
}

impl GzipLayer {
    /// A layer with the default settings: level 6, minimum size 256 bytes, flush when the body
    /// stalls, the default skip list (SSE, gRPC, images except SVG, audio, video, WOFF fonts,
    /// compressed archives), and `Cache-Control: no-transform` respected.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets the gzip level: 0 (stored, no compression) to 9 (smallest, slowest). Values above 9 are
    /// treated as 9. Default: 6.
    ///
    /// Lower levels spend less CPU per byte and compress less. For token streams flushed after
    /// every event, level 1 costs several times less CPU per event than level 6 for nearly the
    /// same bytes; for bulk bodies it gives a clearly larger output. Measured:
    /// [streams](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#streams),
    /// [bulk](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#bulk).
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().level(1);
    /// # let _ = layer;
    /// ```
    pub fn level(mut self, level: u32) -> Self {
        let config = self.config();
        config.encoder.level = level.min(9);
        config.renew_pool();
        self
    }

    /// Sets the deflate window to `2^bits` bytes, `bits` in 9..=15 (values outside are clamped).
    /// Default: 15 (32 KiB), the most any gzip decoder accepts.
    ///
    /// A smaller window finds fewer repeats (a lower ratio) and shrinks the compressor's memory
    /// somewhat: the window and its match-chain table shrink, the hash table and the block buffer
    /// do not ([measured sizes](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#busy-stream-memory)). With the
    /// `miniz` backend the window is always 32 KiB and this setting is ignored.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().window_bits(12);
    /// # let _ = layer;
    /// ```
    pub fn window_bits(mut self, bits: u8) -> Self {
        let config = self.config();
        config.encoder.window_bits = bits.clamp(9, 15);
        config.renew_pool();
        self
    }

    /// Drops the deflate state of a compressed stream that has been idle for `idle`. Default: 1 s.
    ///
    /// A compressed response holds a deflate state (its window and hash tables) while it is open.
    /// After a stall everything sent is decodable, so the state can be dropped and a new one,
    /// primed with the last 32 KiB of input as its dictionary, can continue the same gzip stream
    /// when data comes again, at the bit where the old one stopped (a stream with less than 32 KiB
    /// of history is padded to a byte instead, about 5 bytes per sleep): the client sees one
    /// continuous stream, and the ratio after waking stays close to that of a stream that never
    /// slept. A stream sends nothing when it falls asleep. An idle stream then holds only
    /// that window of input, packed (deflated, a few KiB for typical text) until it wakes. Measured: [busy](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#busy-stream-memory) and
    /// [idle](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#idle-stream-memory) streams, [the cost of a wake](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#wake-cost).
    ///
    /// A stream hibernates at a stall (when the handler's body returns `Pending`) once it has been
    /// stalled for `idle`: a stalled stream that holds a deflate state asks a process-wide timer
    /// thread (started on first use; no async runtime needed) to wake its task at that moment, so
    /// a stream that goes silent after a burst sheds its state within about `idle` even if
    /// nothing else polls it. Each stream keeps at most one wake-up pending, so a token stream
    /// registers about once per `idle`, not once per token. If the thread cannot be started,
    /// streams hibernate when they are next polled instead.
    ///
    /// A stream whose data came after an idle gap of at least `idle` hibernates right at the
    /// next stall (one event every few seconds: it sleeps between events, not `idle` after each).
    /// The wait for the first data does not count: a model that thinks for seconds before its
    /// first token does not drop and rebuild its compressor between the first tokens. The one
    /// exception is a crowded layer: once its streams hold more than 64 deflate states, a stream
    /// hibernates at the first stall after its first data. At that stall a token stream and a
    /// periodic one look alike, and periodic streams opened together get their first events
    /// together: holding every state for `idle` after them would need them all at once (gigabytes
    /// for 10,000 streams, a peak the allocator keeps; [measured](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#load)).
    /// A token stream pays one wake for it, cheap for a stream that young (its window is one
    /// event; [measured](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#wake-cost));
    /// past its first stall no stream is put to sleep by the crowd. Token streams with gaps well
    /// under `idle` never hibernate mid-answer.
    ///
    /// `Duration::ZERO` hibernates at every stall. With the `miniz` backend the new state cannot
    /// be primed, so output right after waking is larger (still correct).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let layer = tower_gzip::GzipLayer::new().compress_sse(true).hibernate_after(Duration::from_secs(5));
    /// # let _ = layer;
    /// ```
    pub fn hibernate_after(mut self, idle: std::time::Duration) -> Self {
        self.config().hibernate_after = Some(idle);
        self
    }

    /// Keeps the deflate state of every compressed stream until it ends (see
    /// [`hibernate_after`](Self::hibernate_after)); also stops keeping the window of input that
    /// waking needs.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().never_hibernate();
    /// # let _ = layer;
    /// ```
    pub fn never_hibernate(mut self) -> Self {
        self.config().hibernate_after = None;
        self
    }

    /// Limits how many responses this layer compresses at once. Default: no limit.
    ///
    /// Each compressed response holds a deflate state from its first data frame to its end
    /// ([measured sizes](https://github.com/tower-gzip/tower-gzip/blob/main/FIGURES.md#busy-stream-memory)). Once `max` responses are being compressed, further eligible responses are sent
    /// uncompressed (with `Vary: Accept-Encoding`, like any identity answer) instead of
    /// allocating another compressor; slots free up as compressed bodies end or are dropped.
    ///
    /// Each call starts a new budget: the layer it returns counts its streams apart from the layer
    /// it was called on. Clones of the returned layer, layers derived from it by other builder
    /// methods, and every service built from them share this one budget (its count and its
    /// limit).
    ///
    /// ```
    /// use tower_gzip::GzipLayer;
    ///
    /// let api = GzipLayer::new().max_streams(10_000);
    /// let api_fast = api.clone().level(1); // same budget: 10,000 streams for both together
    /// let events = api.clone().max_streams(100); // a budget of its own
    /// assert_eq!(api.live_streams() + api_fast.live_streams() + events.live_streams(), 0);
    /// ```
    pub fn max_streams(mut self, max: usize) -> Self {
        let config = self.config();
        config.max_streams = Some(max);
        config.streams = Default::default();
        self
    }

    /// Removes the limit set by [`max_streams`](Self::max_streams) (the default: no limit). Like
    /// `max_streams`, it starts a new count for the returned layer.
    ///
    /// ```
    /// let limited = tower_gzip::GzipLayer::new().max_streams(100);
    /// let unlimited = limited.clone().unlimited_streams();
    /// # let _ = unlimited;
    /// ```
    pub fn unlimited_streams(mut self) -> Self {
        let config = self.config();
        config.max_streams = None;
        config.streams = Default::default();
        self
    }

    /// Keeps up to `max_idle` deflate states of finished responses (and of streams that went to
    /// sleep), reset, for the next responses to reuse. Default: 4. `0` turns reuse off.
    ///
    /// Allocating and zeroing a new deflate state is a large part of what compressing a small
    /// response costs; a reused one only has its hash table cleared. The price is memory: each idle state
    /// is as large as a live one (see [`max_streams`](Self::max_streams)), held until reused or
    /// until the layer and every service built from it are dropped.
    /// [`idle_compressors`](Self::idle_compressors) tells how many are held. Only states at the
    /// layer's own level are kept (a [`GzipOverride`](crate::GzipOverride) level other than the
    /// layer's allocates and frees as usual). This call, [`level`](Self::level) and
    /// [`window_bits`](Self::window_bits) start a new, empty pool for the returned layer.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().reuse_compressors(0); // allocate every time
    /// assert_eq!(layer.idle_compressors(), 0);
    /// ```
    pub fn reuse_compressors(mut self, max_idle: usize) -> Self {
        let config = self.config();
        config.max_idle_compressors = max_idle;
        config.renew_pool();
        self
    }

    /// How many reset deflate states this layer holds for reuse right now (see
    /// [`reuse_compressors`](Self::reuse_compressors)).
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new();
    /// assert_eq!(layer.idle_compressors(), 0); // none until a compressed response has finished
    /// ```
    pub fn idle_compressors(&self) -> usize {
        self.config.pool.idle()
    }

    /// The number of responses being compressed right now by this layer (its clones and the
    /// services built from them), whether or not [`max_streams`](Self::max_streams) is set.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new();
    /// let probe = layer.clone(); // keep a clone to observe the layer after handing it to a router
    /// assert_eq!(probe.live_streams(), 0);
    /// ```
    pub fn live_streams(&self) -> usize {
        self.config.streams.live()
    }

    /// Sets the minimum body size to compress, in bytes. Default: 256.
    ///
    /// It applies only to bodies whose length is known up front (an exact size hint or a
    /// `Content-Length`); a streamed body of unknown length is compressed from its first frame,
    /// since waiting to learn its size would delay it. Empty bodies are never compressed.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().min_size(1024);
    /// # let _ = layer;
    /// ```
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.config().min_size = bytes;
        self
    }

    /// Sets when the compressor is flushed. Default: [`FlushPolicy::OnStall`].
    ///
    /// ```
    /// use tower_gzip::{FlushPolicy, GzipLayer};
    ///
    /// let layer = GzipLayer::new().flush_policy(FlushPolicy::EveryFrame);
    /// # let _ = layer;
    /// ```
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.config().flush = policy;
        self
    }

    /// Leaves responses of this media type uncompressed. Patterns are `type/subtype`, `type/*`,
    /// `type/base+*` (the base and any `+suffix`) or `*/*`, matched case-insensitively against the
    /// `Content-Type` without its parameters.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new()
    ///     .skip_media_type("application/x-ndjson")
    ///     .skip_media_type("model/*");
    /// # let _ = layer;
    /// ```
    pub fn skip_media_type(mut self, pattern: impl Into<Cow<'static, str>>) -> Self {
        self.config().media_types.skip(pattern.into());
        self
    }

    /// Compresses responses of this media type: removes the pattern from the skip list and makes it
    /// an exception to wildcard skip patterns (as `image/svg+xml` is to `image/*` by default).
    ///
    /// ```
    /// // Compress BMP images, which are not compressed internally; other images stay skipped.
    /// let layer = tower_gzip::GzipLayer::new().compress_media_type("image/bmp");
    /// # let _ = layer;
    /// ```
    pub fn compress_media_type(mut self, pattern: impl Into<Cow<'static, str>>) -> Self {
        self.config().media_types.compress(pattern.into());
        self
    }

    /// Replaces the whole skip list, defaults and exceptions included, with `patterns` (same
    /// pattern syntax as [`skip_media_type`](Self::skip_media_type), which adds one pattern).
    ///
    /// ```
    /// // Compress everything except SSE: images, archives and the rest are compressed too.
    /// let layer = tower_gzip::GzipLayer::new().replace_skip_list(["text/event-stream"]);
    /// # let _ = layer;
    /// ```
    pub fn replace_skip_list<I>(mut self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Cow<'static, str>>,
    {
        self.config()
            .media_types
            .replace(patterns.into_iter().map(Into::into));
        self
    }

    /// Compresses `text/event-stream` (Server-Sent Events) when `true`. Default: `false`.
    ///
    /// Safe with either flush policy: each event is flushed to the client when the handler pauses.
    /// Compressed token streams are much smaller (later events reuse the window of earlier ones), at
    /// the cost of one compressor per open stream. Keep it off where the stream mixes secrets with
    /// attacker-controlled text (BREACH).
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().compress_sse(true);
    /// # let _ = layer;
    /// ```
    pub fn compress_sse(self, enable: bool) -> Self {
        if enable {
            self.compress_media_type("text/event-stream")
        } else {
            self.skip_media_type("text/event-stream")
        }
    }

    /// Whether `Cache-Control: no-transform` on a response prevents compressing it. Default: `true`.
    ///
    /// RFC 9111 addresses the directive to intermediaries, but applications use it as the standard
    /// "do not touch this body" signal, so it is honoured unless turned off here.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().respect_no_transform(false);
    /// # let _ = layer;
    /// ```
    pub fn respect_no_transform(mut self, respect: bool) -> Self {
        self.config().respect_no_transform = respect;
        self
    }

    /// Adds a custom rule that looks at the request and the response: a response is compressed
    /// only if `predicate` returns `true` for it.
    ///
    /// The predicate sees the request head and the response head. It is checked after the built-in
    /// rules and never replaces them (SSE stays skipped unless opted in, and so on); several
    /// predicates must all agree. A handler's [`GzipOverride::on`](crate::GzipOverride::on)
    /// skips it.
    ///
    /// While at least one such predicate is set, every request's head is captured (a clone of its
    /// method, URI, headers and extensions; see [`RequestHead`]). A rule that needs only the
    /// response should use [`compress_response_when`](Self::compress_response_when), which costs
    /// nothing per request.
    ///
    /// ```
    /// use tower_gzip::GzipLayer;
    ///
    /// let layer = GzipLayer::new()
    ///     .compress_when(|request, _response| request.uri().path() != "/metrics")
    ///     .compress_when(|_request, response| response.status.is_success());
    /// # let _ = layer;
    /// ```
    pub fn compress_when<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead, &http::response::Parts) -> bool + Send + Sync + 'static,
    {
        self.config().request_predicates.push(Arc::new(predicate));
        self
    }

    /// Adds a custom rule that looks only at the response head: a response is compressed only if
    /// `predicate` returns `true` for it. Nothing is copied from the request.
    ///
    /// Checked after the built-in rules, like [`compress_when`](Self::compress_when); all rules
    /// must agree.
    ///
    /// ```
    /// use tower_gzip::GzipLayer;
    ///
    /// // Leave responses marked as carrying secrets uncompressed (a BREACH precaution).
    /// let layer = GzipLayer::new()
    ///     .compress_response_when(|response| !response.headers.contains_key("x-contains-secret"));
    /// # let _ = layer;
    /// ```
    pub fn compress_response_when<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&http::response::Parts) -> bool + Send + Sync + 'static,
    {
        self.config().response_predicates.push(Arc::new(predicate));
        self
    }

    /// Counts what this layer does in `metrics`: responses by [`Outcome`](crate::Outcome), bytes
    /// into and out of the compressor, live and hibernated streams. Off by default.
    ///
    /// Several layers may share one [`GzipMetrics`]; read it from a clone at any time.
    ///
    /// ```
    /// use tower_gzip::{GzipLayer, GzipMetrics};
    ///
    /// let metrics = GzipMetrics::new();
    /// let layer = GzipLayer::new().metrics(metrics.clone());
    /// # let _ = layer;
    /// assert_eq!(metrics.live_streams(), 0);
    /// ```
    pub fn metrics(mut self, metrics: GzipMetrics) -> Self {
        self.config().metrics = Some(metrics);
        self
    }

    /// Calls `callback` once per response with what compression did for it
    /// ([`ResponseStats`](crate::ResponseStats)): when the body ends, fails, or is dropped before
    /// its end (a client that went away). For an access log, like nginx's `$gzip_ratio`.
    ///
    /// It runs on the task that polls or drops the body, so it should be quick (log, count, send
    /// to a channel). Setting it also times the compressor for each compressed response (two
    /// clock reads per compressor call).
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().on_response_end(|stats| {
    ///     println!(
    ///         "{} in={} out={} ratio={:.2}",
    ///         stats.outcome,
    ///         stats.bytes_in,
    ///         stats.bytes_out,
    ///         stats.ratio().unwrap_or(1.0)
    ///     );
    /// });
    /// # let _ = layer;
    /// ```
    pub fn on_response_end<F>(mut self, callback: F) -> Self
    where
        F: Fn(&crate::ResponseStats) + Send + Sync + 'static,
    {
        self.config().on_response_end = Some(Arc::new(callback));
        self
    }

    /// Pads the gzip header of every compressed response with a random number of bytes, drawn
    /// uniformly from `0..=max_bytes` for each response, so that its length varies by up to
    /// `max_bytes` from one response to the next. Default: 0 (off). Values above 65 531 are
    /// treated as 65 531: the gzip extra field holds at most 65 535 bytes, 4 of which are the
    /// subfield's own header.
    ///
    /// The padding is an extra field in the gzip header (RFC 1952 §2.3.1.1: the `FEXTRA` flag,
    /// then one subfield with id `TP` holding that many zero bytes), which gzip decoders skip
    /// (tested with flate2, Python's zlib, curl, reqwest and Chromium). A padded response is
    /// 6 to `6 + max_bytes` bytes longer than an unpadded one. The padding leaves with the first
    /// compressed bytes, so streams are flushed exactly as before; an empty compressed body is
    /// padded too.
    ///
    /// This is a BREACH *mitigation* that slows an attack down; it does not stop one:
    ///
    /// - A new length is drawn for every response, so an attacker who can repeat a request can
    ///   average the noise out, or simply keep the shortest response seen: with `max_bytes` = 64
    ///   the chance of never having drawn a padding of 0 is `(64/65)^n`, 1% after 300 repeats. It
    ///   multiplies the requests an attack needs by a few times `max_bytes`, no more.
    /// - In a stream, only the first flushed piece carries the padding. Each later piece is sent
    ///   at its exact compressed size, and an observer who can tell pieces apart on the wire (a
    ///   flush after a pause usually leaves as its own TLS records) learns those sizes.
    ///
    /// The real fix is to keep secrets out of compressed responses that reflect
    /// attacker-controlled input: leave such responses uncompressed (with
    /// [`compress_response_when`](Self::compress_response_when) or
    /// [`compress_when`](Self::compress_when), or by not opting SSE in with
    /// [`compress_sse`](Self::compress_sse)), or send the secrets in another response.
    ///
    /// The lengths come from std's `RandomState` (keyed SipHash, keyed once per process from the
    /// operating system's random source) applied to a counter: unpredictable to a client, but
    /// not a vetted cryptographic random number generator.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_gzip::GzipLayer;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let layer = GzipLayer::new().random_padding(64);
    /// let mut lengths = std::collections::BTreeSet::new();
    /// for _ in 0..20 {
    ///     let svc = layer.layer(service_fn(|_req: http::Request<()>| async {
    ///         let body = Full::new(Bytes::from("hello ".repeat(100)));
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(body))
    ///     }));
    ///     let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
    ///     let body = svc.oneshot(request).await.unwrap().into_body();
    ///     let gzip = body.collect().await.unwrap().to_bytes();
    ///
    ///     let mut text = String::new();
    ///     std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut text)
    ///         .unwrap();
    ///     assert_eq!(text, "hello ".repeat(100)); // decoders skip the padding
    ///     lengths.insert(gzip.len());
    /// }
    /// assert!(lengths.len() > 1); // the same body, different lengths
    /// # });
    /// ```
    pub fn random_padding(mut self, max_bytes: u16) -> Self {
        self.config().encoder.padding = max_bytes.min(crate::codec::MAX_PADDING);
        self
    }
}

impl<S> Layer<S> for GzipLayer {
    type Service = Gzip<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gzip::with_config(inner, self.config.clone())
    }
}
