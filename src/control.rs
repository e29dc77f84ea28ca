//! [`GzipOverride`]: a handler's choice for one response, carried in the response extensions.

use crate::FlushPolicy;

/// A handler's instructions for its own response: turn compression off, force it on for a media
/// type or size the layer would skip, or pick this response's flush policy and level.
///
/// Insert it into the response extensions (in axum: return `(Extension(GzipOverride::off()),
/// body)` or call `response.extensions_mut().insert(..)`). The layer removes it before passing the
/// response on, so layers further out never see it, and it never reaches the wire.
///
/// The HTTP rules still win over [`on`](Self::on): a response with a status that has no content
/// (1xx, 204, 205, 304) or a partial one (206, `Content-Range`), an existing `Content-Encoding`,
/// `Cache-Control: no-transform` (unless the layer ignores it), a digest header, or an empty body is
/// never compressed, and neither is one whose client does not accept gzip or that finds the
/// layer's [`max_streams`](crate::GzipLayer::max_streams) budget full. `on` overrides the skip list,
/// the minimum size and the custom predicates.
///
/// ```
/// use axum::{response::IntoResponse, routing::get, Extension, Router};
/// use tower_gzip::{FlushPolicy, GzipLayer, GzipOverride};
///
/// async fn events() -> impl IntoResponse {
///     // SSE on this route only, without a second layer; flushed after every event.
///     (
///         Extension(GzipOverride::on().flush_policy(FlushPolicy::EveryFrame)),
///         [("content-type", "text/event-stream")],
///         "data: hello\n\n",
///     )
/// }
///
/// async fn report() -> impl IntoResponse {
///     (Extension(GzipOverride::off()), "contains a secret next to reflected input")
/// }
///
/// let app: Router = Router::new()
///     .route("/events", get(events))
///     .route("/report", get(report))
///     .layer(GzipLayer::new());
/// # let _ = app;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GzipOverride {
    pub(crate) mode: OverrideMode,
    pub(crate) flush: Option<FlushPolicy>,
    pub(crate) level: Option<u32>,
}

/// Whether the handler turned compression off, forced it on, or left it to the layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) enum OverrideMode {
    #[default]
    Auto,
    Off,
    On,
}

impl GzipOverride {
    /// Leaves the decision to the layer; use it to set only [`level`](Self::level) or
    /// [`flush_policy`](Self::flush_policy). Same as `GzipOverride::default()`.
    ///
    /// ```
    /// let choice = tower_gzip::GzipOverride::auto().level(1);
    /// # let _ = choice;
    /// ```
    pub fn auto() -> Self {
        Self::default()
    }

    /// Never compress this response. It is sent as the handler made it, without
    /// `Vary: Accept-Encoding` (it does not vary by encoding).
    ///
    /// ```
    /// let choice = tower_gzip::GzipOverride::off();
    /// # let _ = choice;
    /// ```
    pub fn off() -> Self {
        Self {
            mode: OverrideMode::Off,
            ..Self::default()
        }
    }

    /// Compress this response even if its media type is on the skip list, its known length is
    /// below the minimum size, or a custom predicate says no. The HTTP rules still apply (see the
    /// type's docs).
    ///
    /// ```
    /// let choice = tower_gzip::GzipOverride::on();
    /// # let _ = choice;
    /// ```
    pub fn on() -> Self {
        Self {
            mode: OverrideMode::On,
            ..Self::default()
        }
    }

    /// Flushes this response's compressor per `policy` instead of the layer's policy.
    ///
    /// ```
    /// use tower_gzip::{FlushPolicy, GzipOverride};
    ///
    /// let choice = GzipOverride::auto().flush_policy(FlushPolicy::EveryFrame);
    /// # let _ = choice;
    /// ```
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.flush = Some(policy);
        self
    }

    /// Compresses this response at `level` instead of the layer's level. As with
    /// [`GzipLayer::level`](crate::GzipLayer::level), levels above 9 mean 9.
    ///
    /// ```
    /// // A large export: spend less CPU on it than on the API responses.
    /// let choice = tower_gzip::GzipOverride::auto().level(1);
    /// # let _ = choice;
    /// ```
    pub fn level(mut self, level: u32) -> Self {
        self.level = Some(level.min(9));
        self
    }
}
