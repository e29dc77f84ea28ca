//! Errors produced by this crate (as opposed to errors of the wrapped body, which pass through).

use std::fmt;

/// The deflate stream failed while compressing a response body.
///
/// This does not happen with a correctly working flate2 backend; it exists so that a backend fault
/// ends the body with an error instead of a panic or a corrupt stream. Errors of the wrapped body are
/// never turned into this type: they reach the caller unchanged (boxed), so they can be downcast.
///
/// ```
/// use tower_gzip::CompressError;
///
/// fn describe(err: &(dyn std::error::Error + 'static)) -> String {
///     match err.downcast_ref::<CompressError>() {
///         Some(e) => format!("compression failed: {e}"),
///         None => format!("body failed: {err}"),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug)]
pub struct CompressError {
    source: Option<flate2::CompressError>,
}

impl CompressError {
    /// The deflate stream neither consumed input nor produced output.
    pub(crate) fn stalled() -> Self {
        Self { source: None }
    }
}

impl From<flate2::CompressError> for CompressError {
    fn from(e: flate2::CompressError) -> Self {
        Self { source: Some(e) }
    }
}

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(_) => f.pad("gzip compression failed"),
            None => f.pad("gzip compression made no progress"),
        }
    }
}

impl std::error::Error for CompressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
