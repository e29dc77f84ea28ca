//! [`GzipMetrics`]: layer-wide counters, and the per-body observer that feeds them and the
//! [`on_response_end`](crate::GzipLayer::on_response_end) callback.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::outcome::{Outcome, RequestLine, ResponseStats};

/// Counters of what one or more layers did, readable at any time from any thread (plain atomic
/// loads, no locks), for a metrics exporter.
///
/// Create one, attach it with [`GzipLayer::metrics`](crate::GzipLayer::metrics), and keep a clone
/// to read. Clones share the counters; several layers may share one `GzipMetrics`. A layer without
/// one counts nothing.
///
/// Byte counts are of compressed responses only: what went into the compressor and what came out
/// (gzip framing included).
///
/// ```
/// use tower_gzip::{GzipLayer, GzipMetrics, Outcome};
///
/// let metrics = GzipMetrics::new();
/// let layer = GzipLayer::new().metrics(metrics.clone());
/// # let _ = layer;
/// // Later, in a `/metrics` handler:
/// for outcome in Outcome::ALL {
///     println!(
///         "tower_gzip_responses_total{{outcome=\"{outcome}\"}} {}",
///         metrics.responses(outcome)
///     );
/// }
/// println!("tower_gzip_live_streams {}", metrics.live_streams());
/// ```
#[derive(Clone, Default)]
pub struct GzipMetrics {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    responses: [AtomicU64; Outcome::ALL.len()],
    input_bytes: AtomicU64,
    output_bytes: AtomicU64,
    live_streams: AtomicU64,
    hibernated_streams: AtomicU64,
    hibernations: AtomicU64,
    wakes: AtomicU64,
}

// Relaxed everywhere: each counter is read on its own, and no other memory depends on it.
const ORDER: Ordering = Ordering::Relaxed;

impl GzipMetrics {
    /// New counters, all zero.
    ///
    /// ```
    /// let metrics = tower_gzip::GzipMetrics::new();
    /// assert_eq!(metrics.output_bytes(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Responses that got `outcome`, since the counters were created.
    ///
    /// ```
    /// let metrics = tower_gzip::GzipMetrics::new();
    /// assert_eq!(metrics.responses(tower_gzip::Outcome::Gzip), 0);
    /// ```
    pub fn responses(&self, outcome: Outcome) -> u64 {
        self.counters.responses[outcome.index()].load(ORDER)
    }

    /// Bytes handed to the compressor, over all compressed responses.
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().input_bytes(), 0);
    /// ```
    pub fn input_bytes(&self) -> u64 {
        self.counters.input_bytes.load(ORDER)
    }

    /// Compressed bytes handed out (gzip framing included), over all compressed responses.
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().output_bytes(), 0);
    /// ```
    pub fn output_bytes(&self) -> u64 {
        self.counters.output_bytes.load(ORDER)
    }

    /// Compressed responses whose body has not ended or been dropped yet.
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().live_streams(), 0);
    /// ```
    pub fn live_streams(&self) -> u64 {
        self.counters.live_streams.load(ORDER)
    }

    /// Compressed responses hibernating right now (no deflate state held; see
    /// [`GzipLayer::hibernate_after`](crate::GzipLayer::hibernate_after)).
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().hibernated_streams(), 0);
    /// ```
    pub fn hibernated_streams(&self) -> u64 {
        self.counters.hibernated_streams.load(ORDER)
    }

    /// Times a stream hibernated, in total.
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().hibernations(), 0);
    /// ```
    pub fn hibernations(&self) -> u64 {
        self.counters.hibernations.load(ORDER)
    }

    /// Times a hibernated stream woke (built a new deflate state), in total.
    ///
    /// ```
    /// assert_eq!(tower_gzip::GzipMetrics::new().wakes(), 0);
    /// ```
    pub fn wakes(&self) -> u64 {
        self.counters.wakes.load(ORDER)
    }

    pub(crate) fn count_response(&self, outcome: Outcome) {
        self.counters.responses[outcome.index()].fetch_add(1, ORDER);
    }
}

impl fmt::Debug for GzipMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("GzipMetrics");
        for outcome in Outcome::ALL {
            s.field(outcome.as_str(), &self.responses(outcome));
        }
        s.field("input_bytes", &self.input_bytes())
            .field("output_bytes", &self.output_bytes())
            .field("live_streams", &self.live_streams())
            .field("hibernated_streams", &self.hibernated_streams())
            .field("hibernations", &self.hibernations())
            .field("wakes", &self.wakes())
            .finish()
    }
}

/// The callback given the [`ResponseStats`] of each response.
pub(crate) type OnResponseEnd = Arc<dyn Fn(&ResponseStats) + Send + Sync>;

/// Follows one response body for the metrics and the callback. Exists only when the layer has
/// either (or the `tracing` feature is on), so a plain layer pays nothing per frame.
///
/// Dropping it reports: the callback runs exactly once, and the live and hibernated gauges are
/// given back, whether the body ended, failed or was dropped mid-stream.
pub(crate) struct Observer {
    stats: ResponseStats,
    metrics: Option<GzipMetrics>,
    on_end: Option<OnResponseEnd>,
    /// Counted in `live_streams` (a compressed body that is not a `HEAD`'s).
    live: bool,
    /// Counted in `hibernated_streams` right now.
    hibernated: bool,
    /// Whether to time the compressor (only when someone reads `compress_time`).
    timed: bool,
    /// A pass-through body's known length: it is complete once that many bytes went out.
    expected_len: Option<u64>,
}

impl Observer {
    /// `None` when nobody would see what it records.
    pub(crate) fn new(
        request: Option<&RequestLine>,
        status: http::StatusCode,
        outcome: Outcome,
        compressing: bool,
        already_complete: bool,
        metrics: Option<&GzipMetrics>,
        on_end: Option<&OnResponseEnd>,
    ) -> Option<Box<Self>> {
        let tracing = cfg!(feature = "tracing");
        if metrics.is_none() && on_end.is_none() && !tracing {
            return None;
        }
        let live = compressing && metrics.is_some();
        if live {
            if let Some(m) = metrics {
                m.counters.live_streams.fetch_add(1, ORDER);
            }
        }
        let mut stats = ResponseStats::new(request.cloned().unwrap_or_default(), status, outcome);
        // A HEAD response, or a body that says it has ended, has nothing left to send: it is
        // complete as soon as it exists, even if the server never polls it.
        stats.completed = already_complete;
        Some(Box::new(Self {
            stats,
            metrics: metrics.cloned(),
            on_end: on_end.cloned(),
            live,
            hibernated: false,
            timed: compressing && (on_end.is_some() || tracing),
            expected_len: None,
        }))
    }

    /// Starts timing the compressor, if anyone reads the time.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.timed.then(Instant::now)
    }

    /// Adds the time since `started` to the compressor time.
    pub(crate) fn stop(&mut self, started: Option<Instant>) {
        if let Some(started) = started {
            self.stats.compress_time += started.elapsed();
        }
    }

    /// A pass-through body of this length is complete once that many bytes went out.
    pub(crate) fn expect_len(&mut self, len: Option<u64>) {
        self.expected_len = len;
    }

    /// Bytes of the inner body handed to the compressor (or passed through).
    pub(crate) fn input(&mut self, n: usize, compressed: bool) {
        self.stats.bytes_in += n as u64;
        if self
            .expected_len
            .is_some_and(|len| self.stats.bytes_in >= len)
        {
            self.stats.completed = true;
        }
        if compressed {
            if let Some(m) = &self.metrics {
                m.counters.input_bytes.fetch_add(n as u64, ORDER);
            }
        }
    }

    /// Bytes handed out.
    pub(crate) fn output(&mut self, n: usize, compressed: bool) {
        self.stats.bytes_out += n as u64;
        if compressed {
            if let Some(m) = &self.metrics {
                m.counters.output_bytes.fetch_add(n as u64, ORDER);
            }
        }
    }

    pub(crate) fn flushed(&mut self) {
        self.stats.flushes += 1;
    }

    pub(crate) fn hibernated(&mut self) {
        self.stats.hibernations += 1;
        self.hibernated = true;
        if let Some(m) = &self.metrics {
            m.counters.hibernations.fetch_add(1, ORDER);
            m.counters.hibernated_streams.fetch_add(1, ORDER);
        }
    }

    pub(crate) fn woke(&mut self) {
        self.stats.wakes += 1;
        self.leave_hibernation();
        if let Some(m) = &self.metrics {
            m.counters.wakes.fetch_add(1, ORDER);
        }
    }

    fn leave_hibernation(&mut self) {
        if std::mem::take(&mut self.hibernated) {
            if let Some(m) = &self.metrics {
                m.counters.hibernated_streams.fetch_sub(1, ORDER);
            }
        }
    }

    /// The body reached its end.
    pub(crate) fn complete(&mut self) {
        self.stats.completed = true;
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.leave_hibernation();
        if self.live {
            if let Some(m) = &self.metrics {
                m.counters.live_streams.fetch_sub(1, ORDER);
            }
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "tower_gzip",
            method = %self.stats.method,
            uri = %self.stats.uri,
            status = self.stats.status.as_u16(),
            outcome = self.stats.outcome.as_str(),
            bytes_in = self.stats.bytes_in,
            bytes_out = self.stats.bytes_out,
            flushes = self.stats.flushes,
            hibernations = self.stats.hibernations,
            wakes = self.stats.wakes,
            compress_time_us = self.stats.compress_time.as_micros() as u64,
            completed = self.stats.completed,
            "response body ended"
        );
        if let Some(on_end) = &self.on_end {
            on_end(&self.stats);
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
