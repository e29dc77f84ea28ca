//! Settings shared by the layer, the service and every response future.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::StreamCounter;
use crate::codec::{EncoderSettings, StatePool};
use crate::media::MediaTypeFilter;
use crate::metrics::{GzipMetrics, OnResponseEnd};
use crate::predicate::{PredicatesDebug, RequestPredicate, ResponsePredicate};

/// When the compressor is flushed, so the client can decode what it has received.
///
/// Both policies also flush at the end of the body. A flush ends the current deflate block so
/// every byte written so far can be decoded from what was sent, without a sync flush's 4-byte
/// `00 00 ff ff` marker: a stream's compressor uses fixed Huffman codes while its blocks are
/// event-sized (up to about 512 bytes per flush), and then a flush costs only the block's end;
/// once blocks grow it switches to dynamic codes, and a flush adds a 10-bit empty block (with
/// the `miniz` backend, which cannot be asked for fixed codes, always the latter). Each
/// flush also resets part of the compressor's lookahead, so flushing more often than needed makes
/// the output larger.
///
/// ```
/// use tower_gzip::{FlushPolicy, GzipLayer};
///
/// let layer = GzipLayer::new().flush_policy(FlushPolicy::EveryFrame);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Flush whenever the inner body has no frame ready (it returns `Pending`). The default.
    ///
    /// Frames the inner body yields back to back are compressed together, so a body produced in tiny
    /// chunks compresses as well as one big chunk, while every chunk still reaches the client as
    /// soon as the handler stops producing: nothing is held back while the handler waits.
    #[default]
    OnStall,
    /// Flush after every data frame, so each frame the handler produced is decodable on its own.
    ///
    /// Costs more bytes and CPU for bodies made of many small ready frames; use it when frame
    /// boundaries matter to the client even when frames arrive back to back.
    EveryFrame,
}

/// Default minimum size of a body with a known length.
///
/// Below about 256 bytes gzip saves a few dozen bytes at most (it adds 18 bytes of framing), the
/// response fits in one TCP segment either way, and allocating and initialising a deflate state
/// (hundreds of KiB of window and hash tables at the default window) costs more than it saves.
pub(crate) const DEFAULT_MIN_SIZE: u64 = 256;

/// Default idle time after which a compressed stream drops its deflate state.
///
/// LLM token streams pause tens to a few hundred milliseconds between tokens; a second is well
/// above that, so they never hibernate mid-answer, while streams that idle between events (SSE
/// notifications, heartbeats, long polls) shed their deflate state.
pub(crate) const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(1);

/// Default number of reset deflate states a layer keeps for reuse.
///
/// Enough for a server's steady trickle of small responses to skip allocating and zeroing a
/// state each time; a burst of concurrent responses beyond it allocates as usual, and the extra
/// states are freed when they finish.
pub(crate) const DEFAULT_MAX_IDLE_COMPRESSORS: usize = 4;

impl Config {
    /// A new pool for the current window and limit (the old one is dropped with its states).
    pub(crate) fn renew_pool(&mut self) {
        self.pool = Arc::new(StatePool::new(self.max_idle_compressors, self.encoder));
    }
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) encoder: EncoderSettings,
    pub(crate) min_size: u64,
    pub(crate) flush: FlushPolicy,
    pub(crate) media_types: MediaTypeFilter,
    pub(crate) respect_no_transform: bool,
    /// Rules that look at the request too: the request head is captured only if there are any.
    pub(crate) request_predicates: Vec<RequestPredicate>,
    pub(crate) response_predicates: Vec<ResponsePredicate>,
    pub(crate) metrics: Option<GzipMetrics>,
    pub(crate) on_response_end: Option<OnResponseEnd>,
    pub(crate) max_streams: Option<usize>,
    pub(crate) hibernate_after: Option<Duration>,
    /// Shared by every clone of the config, so a layer and the services it built count together.
    pub(crate) streams: Arc<StreamCounter>,
    /// Reset deflate states for reuse (none are kept when reuse is off), and the count of deflate
    /// states the layer's streams hold.
    pub(crate) pool: Arc<StatePool>,
    pub(crate) max_idle_compressors: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            encoder: EncoderSettings::default(),
            min_size: DEFAULT_MIN_SIZE,
            flush: FlushPolicy::default(),
            media_types: MediaTypeFilter::default(),
            respect_no_transform: true,
            request_predicates: Vec::new(),
            response_predicates: Vec::new(),
            metrics: None,
            on_response_end: None,
            max_streams: None,
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
            streams: Arc::default(),
            pool: Arc::new(StatePool::new(
                DEFAULT_MAX_IDLE_COMPRESSORS,
                EncoderSettings::default(),
            )),
            max_idle_compressors: DEFAULT_MAX_IDLE_COMPRESSORS,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("encoder", &self.encoder)
            .field("min_size", &self.min_size)
            .field("flush", &self.flush)
            .field("media_types", &self.media_types)
            .field("respect_no_transform", &self.respect_no_transform)
            .field(
                "request_predicates",
                &PredicatesDebug(self.request_predicates.len()),
            )
            .field(
                "response_predicates",
                &PredicatesDebug(self.response_predicates.len()),
            )
            .field("metrics", &self.metrics)
            .field("on_response_end", &self.on_response_end.is_some())
            .field("max_streams", &self.max_streams)
            .field("hibernate_after", &self.hibernate_after)
            .field("live_streams", &self.streams.live())
            .field("pool", &self.pool)
            .finish()
    }
}
