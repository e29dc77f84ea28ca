//! [`GzipLayer`]: the builder, and the only copy of the configuration methods.

use std::borrow::Cow;
use std::sync::Arc;

use tower_layer::Layer;

use crate::config::Config;
use crate::predicate::RequestHead;
use crate::{FlushPolicy, Gzip};

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
    /// Measured in [BENCHMARKS.md](https://github.com/tower-gzip/tower-gzip/blob/main/BENCHMARKS.md): level 1 costs about 6.6x less CPU per SSE token event than
    /// level 6 for about 1% more bytes, but makes bulk JSON 54% larger.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().level(1);
    /// # let _ = layer;
    /// ```
    pub fn level(mut self, level: u32) -> Self {
        self.config().encoder.level = level.min(9);
        self
    }

    /// Sets the deflate window to `2^bits` bytes, `bits` in 9..=15 (values outside are clamped).
    /// Default: 15 (32 KiB), the most any gzip decoder accepts.
    ///
    /// A smaller window finds fewer repeats (a lower ratio) and shrinks the compressor's memory
    /// somewhat; see [BENCHMARKS.md](https://github.com/tower-gzip/tower-gzip/blob/main/BENCHMARKS.md) for measured figures. With the `miniz` backend the window is
    /// always 32 KiB and this setting is ignored.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().window_bits(12);
    /// # let _ = layer;
    /// ```
    pub fn window_bits(mut self, bits: u8) -> Self {
        self.config().encoder.window_bits = bits.clamp(9, 15);
        self
    }

    /// Drops the deflate state of a compressed stream that has been idle for `idle`. Default: 1 s.
    ///
    /// A compressed response holds a deflate state (about 320 KiB resident, 380 KiB allocated, at the default window) while it is open. After a
    /// stall the stream is flushed and byte-aligned, so the state can be dropped and a new one,
    /// primed with the last 32 KiB of input as its dictionary, can continue the same gzip stream
    /// when data comes again: the client sees one continuous stream, and the ratio after waking
    /// stays close to that of a stream that never slept. An idle stream then holds only that
    /// window of input.
    ///
    /// The body has no timer of its own. A stream hibernates at a stall (when the handler's body
    /// returns `Pending`) if it has been stalled for `idle` by then, or if the data it just sent
    /// came after an idle period of at least `idle`, counting the wait for the first data (so a
    /// stream with one event every few seconds sleeps between events instead of waiting for a poll
    /// that may not come). Token streams with gaps well under `idle` never hibernate mid-answer.
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
    /// Each compressed response holds a deflate state (about 320 KiB resident, 380 KiB allocated, at the default window) from its first data frame to
    /// its end. Once `max` responses are being compressed, further eligible responses are sent
    /// uncompressed (with `Vary: Accept-Encoding`, like any identity answer) instead of
    /// allocating another compressor; slots free up as compressed bodies end or are dropped. The
    /// count is shared by clones of this layer and every service built from them.
    ///
    /// ```
    /// let layer = tower_gzip::GzipLayer::new().max_streams(10_000);
    /// assert_eq!(layer.live_streams(), 0);
    /// ```
    pub fn max_streams(mut self, max: usize) -> Self {
        self.config().max_streams = Some(max);
        self
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

    /// Replaces the whole skip list (defaults and exceptions included) with `patterns`.
    ///
    /// ```
    /// // Compress everything except SSE.
    /// let layer = tower_gzip::GzipLayer::new().skip_media_types(["text/event-stream"]);
    /// # let _ = layer;
    /// ```
    pub fn skip_media_types<I>(mut self, patterns: I) -> Self
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

    /// Adds a custom rule: a response is compressed only if `predicate` returns `true` for it.
    ///
    /// The predicate sees the request head and the response head. It is checked after the built-in
    /// rules and never replaces them (SSE stays skipped unless opted in, and so on); several
    /// predicates must all agree.
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
        self.config().predicates.push(Arc::new(predicate));
        self
    }
}

impl<S> Layer<S> for GzipLayer {
    type Service = Gzip<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gzip::with_config(inner, self.config.clone())
    }
}
