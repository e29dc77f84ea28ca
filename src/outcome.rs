//! What the layer did with a response: the [`Outcome`] of its decision, and the [`ResponseStats`]
//! reported when the body ends.

use std::time::Duration;

use http::{Method, StatusCode, Uri};

/// What the layer decided for one response, with the reason when it did not compress.
///
/// Read it from the response body with [`GzipBody::outcome`](crate::GzipBody::outcome), from the
/// [`ResponseStats`] given to [`GzipLayer::on_response_end`](crate::GzipLayer::on_response_end), or
/// as counts from [`GzipMetrics::responses`](crate::GzipMetrics::responses).
///
/// ```
/// use tower_gzip::Outcome;
///
/// assert!(Outcome::Gzip.is_compressed());
/// assert_eq!(Outcome::MediaType.as_str(), "media_type");
/// assert_eq!(Outcome::ALL.len(), 12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Compressed with gzip (for `HEAD`: sent with the headers a compressed `GET` gets).
    Gzip,
    /// A candidate, but the client does not accept gzip: sent as is, with `Vary: Accept-Encoding`.
    ClientRefused,
    /// The status has no content or is a partial one: 1xx, 204, 205, 206 or 304.
    Status,
    /// The response is a byte range (`Content-Range`).
    Range,
    /// The response already has a `Content-Encoding`.
    AlreadyEncoded,
    /// `Cache-Control: no-transform`.
    NoTransform,
    /// A `Content-Digest`, `Repr-Digest` or `Content-MD5` of the bytes as they are.
    Digest,
    /// An empty body, or a known length below the minimum size.
    TooSmall,
    /// The media type is on the skip list.
    MediaType,
    /// A custom predicate said no.
    Predicate,
    /// The handler turned compression off with [`GzipOverride::off`](crate::GzipOverride::off).
    HandlerOptOut,
    /// The layer's [`max_streams`](crate::GzipLayer::max_streams) budget was full: sent as is,
    /// with `Vary: Accept-Encoding`.
    StreamBudget,
}

impl Outcome {
    /// Every outcome, in declaration order (for exporting one metric series per outcome).
    ///
    /// ```
    /// for outcome in tower_gzip::Outcome::ALL {
    ///     println!("tower_gzip_responses_total{{outcome=\"{}\"}}", outcome.as_str());
    /// }
    /// ```
    pub const ALL: [Outcome; 12] = [
        Outcome::Gzip,
        Outcome::ClientRefused,
        Outcome::Status,
        Outcome::Range,
        Outcome::AlreadyEncoded,
        Outcome::NoTransform,
        Outcome::Digest,
        Outcome::TooSmall,
        Outcome::MediaType,
        Outcome::Predicate,
        Outcome::HandlerOptOut,
        Outcome::StreamBudget,
    ];

    /// A short snake_case name, stable across releases: suitable as a metric label.
    ///
    /// ```
    /// assert_eq!(tower_gzip::Outcome::ClientRefused.as_str(), "client_refused");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Gzip => "gzip",
            Outcome::ClientRefused => "client_refused",
            Outcome::Status => "status",
            Outcome::Range => "range",
            Outcome::AlreadyEncoded => "already_encoded",
            Outcome::NoTransform => "no_transform",
            Outcome::Digest => "digest",
            Outcome::TooSmall => "too_small",
            Outcome::MediaType => "media_type",
            Outcome::Predicate => "predicate",
            Outcome::HandlerOptOut => "handler_opt_out",
            Outcome::StreamBudget => "stream_budget",
        }
    }

    /// Whether the response was (or, for `HEAD`, would be) compressed.
    ///
    /// ```
    /// assert!(!tower_gzip::Outcome::TooSmall.is_compressed());
    /// ```
    pub const fn is_compressed(self) -> bool {
        matches!(self, Outcome::Gzip)
    }

    /// Whether the response was sent as identity with `Vary: Accept-Encoding` added, because it
    /// could have been compressed for another client or at another time.
    pub(crate) const fn adds_vary(self) -> bool {
        matches!(
            self,
            Outcome::Gzip | Outcome::ClientRefused | Outcome::StreamBudget
        )
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request line captured for [`ResponseStats`] (only when someone reads it).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestLine {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

/// What compression did for one response, given to the
/// [`on_response_end`](crate::GzipLayer::on_response_end) callback once, when the body ends, fails
/// or is dropped.
///
/// It says which request it was for (method, URI, status), so an access log needs nothing else.
/// Byte counts are of the body frames this layer handed out: `bytes_in` is what the handler's body
/// produced, `bytes_out` what went towards the client (equal for responses not compressed).
///
/// ```
/// use tower_gzip::{GzipLayer, ResponseStats};
///
/// let layer = GzipLayer::new().on_response_end(|stats: &ResponseStats| {
///     // An access-log field like nginx's `$gzip_ratio`.
///     let ratio = stats.ratio().map_or("-".to_owned(), |r| format!("{r:.2}"));
///     println!(
///         "{} {} {} gzip_ratio={ratio} outcome={}",
///         stats.method, stats.uri, stats.status.as_u16(), stats.outcome
///     );
/// });
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseStats {
    /// The request's method.
    pub method: Method,
    /// The request's target, as the layer saw it (after any routing that ran outside it).
    pub uri: Uri,
    /// The response's status, as the handler set it.
    pub status: StatusCode,
    /// The decision and its reason.
    pub outcome: Outcome,
    /// Body bytes produced by the handler and handed to this layer.
    pub bytes_in: u64,
    /// Body bytes this layer handed out (compressed, framing included, when compressed).
    pub bytes_out: u64,
    /// Flushes that emitted a sync point (at stalls, or per frame with `EveryFrame`).
    pub flushes: u64,
    /// Times the stream dropped its deflate state while idle.
    pub hibernations: u64,
    /// Times a hibernated stream built a new deflate state to go on.
    pub wakes: u64,
    /// Time spent in the compressor (deflate, CRC, framing) for this response. Copying a small
    /// frame into the buffer that collects input for deflate is not counted: it is not timed, so
    /// that bodies of tiny frames do not pay two clock reads per frame.
    pub compress_time: Duration,
    /// `true` if the body reached its end; `false` if it failed or was dropped before the end
    /// (a client that went away, an inner body error).
    pub completed: bool,
}

impl ResponseStats {
    pub(crate) fn new(request: RequestLine, status: StatusCode, outcome: Outcome) -> Self {
        Self {
            method: request.method,
            uri: request.uri,
            status,
            outcome,
            bytes_in: 0,
            bytes_out: 0,
            flushes: 0,
            hibernations: 0,
            wakes: 0,
            compress_time: Duration::ZERO,
            completed: false,
        }
    }

    /// `bytes_in / bytes_out` for a compressed response (nginx's `$gzip_ratio`); `None` if it was
    /// not compressed or nothing was sent.
    ///
    /// ```
    /// # use tower_gzip::{GzipLayer, Outcome};
    /// # let _ = GzipLayer::new().on_response_end(|stats| {
    /// if stats.outcome == Outcome::Gzip {
    ///     assert!(stats.ratio().is_some() || stats.bytes_out == 0);
    /// }
    /// # });
    /// ```
    pub fn ratio(&self) -> Option<f64> {
        (self.outcome.is_compressed() && self.bytes_out > 0)
            .then(|| self.bytes_in as f64 / self.bytes_out as f64)
    }
}
