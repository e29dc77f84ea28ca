//! Errors produced by this crate (as opposed to errors of the wrapped body, which pass through).

use std::fmt;

/// The deflate stream failed while compressing a response body.
///
/// This does not happen with a correctly working deflate backend; it exists so that a backend fault
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
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The backend reported an error, with its message if it gave one.
    Backend(Option<String>),
    /// The deflate stream neither consumed input nor produced output.
    Stalled,
}

impl CompressError {
    /// The deflate stream neither consumed input nor produced output.
    pub(crate) fn stalled() -> Self {
        Self {
            kind: Kind::Stalled,
        }
    }

    /// The deflate backend failed, saying `message` if anything.
    pub(crate) fn backend(message: Option<&str>) -> Self {
        Self {
            kind: Kind::Backend(message.map(str::to_owned)),
        }
    }
}

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Backend(None) => f.write_str("gzip compression failed"),
            Kind::Backend(Some(message)) => write!(f, "gzip compression failed: {message}"),
            Kind::Stalled => f.write_str("gzip compression made no progress"),
        }
    }
}

impl std::error::Error for CompressError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_failed() {
        assert_eq!(
            CompressError::backend(Some("stream error")).to_string(),
            "gzip compression failed: stream error"
        );
        assert_eq!(
            CompressError::backend(None).to_string(),
            "gzip compression failed"
        );
        assert_eq!(
            CompressError::stalled().to_string(),
            "gzip compression made no progress"
        );
    }
}
