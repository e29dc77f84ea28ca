//! Which media types are left uncompressed.
//!
//! The `Content-Type` is parsed into its media type (`type/subtype`, RFC 9110 §8.3.1, both tokens)
//! with parameters dropped, and compared case-insensitively without allocating, so
//! `Text/Event-Stream; charset=utf-8` matches `text/event-stream`. Patterns:
//!
//! | pattern            | matches                                               |
//! |--------------------|-------------------------------------------------------|
//! | `text/event-stream`| exactly that media type                               |
//! | `image/*`          | every subtype of `image`                              |
//! | `application/grpc+*` | `application/grpc+proto`, `application/grpc+json`, … |
//! | `*/*`              | everything that has a media type                      |
//!
//! A media type is skipped when it matches a skip pattern and no compress pattern; compress
//! patterns carve exceptions out of wildcards (`image/svg+xml` out of `image/*`).

use std::borrow::Cow;

use http::HeaderValue;

/// The media types skipped by default.
pub(crate) const DEFAULT_SKIPPED: &[&str] = &[
    // Streaming protocols with their own framing or latency needs.
    "text/event-stream",
    "application/grpc",
    "application/grpc+*",
    // Endless streams of already compressed parts (MJPEG camera feeds).
    "multipart/x-mixed-replace",
    // Already compressed media.
    "image/*",
    "audio/*",
    "video/*",
    "font/woff",
    "font/woff2",
    // Already compressed archives.
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/x-rar-compressed",
];

/// The exceptions compressed by default although a skip pattern matches them.
pub(crate) const DEFAULT_COMPRESSED: &[&str] = &["image/svg+xml"];

/// Skip and compress pattern lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MediaTypeFilter {
    skip: Vec<Cow<'static, str>>,
    compress: Vec<Cow<'static, str>>,
}

impl Default for MediaTypeFilter {
    fn default() -> Self {
        Self {
            skip: DEFAULT_SKIPPED.iter().map(|p| Cow::Borrowed(*p)).collect(),
            compress: DEFAULT_COMPRESSED
                .iter()
                .map(|p| Cow::Borrowed(*p))
                .collect(),
        }
    }
}

impl MediaTypeFilter {
    /// Adds a skip pattern and drops the same pattern from the compress list.
    pub(crate) fn skip(&mut self, pattern: Cow<'static, str>) {
        let pattern = normalize(pattern);
        self.compress.retain(|p| *p != pattern);
        if !self.skip.contains(&pattern) {
            self.skip.push(pattern);
        }
    }

    /// Drops the same pattern from the skip list and adds it to the compress list.
    pub(crate) fn compress(&mut self, pattern: Cow<'static, str>) {
        let pattern = normalize(pattern);
        self.skip.retain(|p| *p != pattern);
        if !self.compress.contains(&pattern) {
            self.compress.push(pattern);
        }
    }

    /// Replaces both lists: exactly `patterns` are skipped, with no exceptions.
    pub(crate) fn replace(&mut self, patterns: impl IntoIterator<Item = Cow<'static, str>>) {
        self.compress.clear();
        self.skip.clear();
        for pattern in patterns {
            self.skip(pattern);
        }
    }

    /// Whether a response with this `Content-Type` is left uncompressed.
    ///
    /// A missing or unparseable `Content-Type` is never skipped: there is nothing to match.
    pub(crate) fn skips(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(media_type) = content_type.and_then(media_type) else {
            return false;
        };
        let matches = |pattern: &Cow<'static, str>| pattern_matches(pattern, media_type);
        self.skip.iter().any(matches) && !self.compress.iter().any(matches)
    }
}

fn normalize(pattern: Cow<'static, str>) -> Cow<'static, str> {
    let trimmed = pattern.trim();
    if trimmed.len() == pattern.len() && !pattern.bytes().any(|b| b.is_ascii_uppercase()) {
        pattern
    } else {
        Cow::Owned(trimmed.to_ascii_lowercase())
    }
}

/// The `type/subtype` of a `Content-Type` value as written (any case), or `None` if it has none.
///
/// Only the part before the first `;` is parsed: parameters are ignored, so neither malformed
/// parameters (`text/event-stream;charset`) nor non-ASCII bytes in them (`name="café.png"`, valid
/// obs-text in a header) can hide the media type. Type and subtype must be RFC 9110 tokens.
/// Borrowed, never allocated: this runs for every response.
pub(crate) fn media_type(value: &HeaderValue) -> Option<&str> {
    let essence = value.as_bytes().split(|&b| b == b';').next()?.trim_ascii();
    let slash = essence.iter().position(|&b| b == b'/')?;
    let (type_, subtype) = (&essence[..slash], &essence[slash + 1..]);
    let is_token = |part: &[u8]| !part.is_empty() && part.iter().all(|&b| is_tchar(b));
    if !is_token(type_) || !is_token(subtype) {
        return None;
    }
    // Tokens are ASCII, so this cannot fail.
    std::str::from_utf8(essence).ok()
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `pattern` (lowercase, from [`normalize`]) matches `media_type` (any case).
fn pattern_matches(pattern: &str, media_type: &str) -> bool {
    let Some((p_type, p_subtype)) = pattern.split_once('/') else {
        return false;
    };
    let Some((m_type, m_subtype)) = media_type.split_once('/') else {
        return false;
    };
    if p_type != "*" && !p_type.eq_ignore_ascii_case(m_type) {
        return false;
    }
    match p_subtype {
        "*" => true,
        _ => match p_subtype.strip_suffix("+*") {
            Some(base) => {
                m_subtype.len() >= base.len()
                    && m_subtype.is_char_boundary(base.len())
                    && m_subtype[..base.len()].eq_ignore_ascii_case(base)
                    && (m_subtype.len() == base.len() || m_subtype.as_bytes()[base.len()] == b'+')
            }
            None => p_subtype.eq_ignore_ascii_case(m_subtype),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(filter: &MediaTypeFilter, content_type: &[u8]) -> bool {
        filter.skips(Some(&HeaderValue::from_bytes(content_type).unwrap()))
    }

    #[test]
    fn default_skip_table() {
        let filter = MediaTypeFilter::default();
        let cases: &[(&str, bool)] = &[
            ("text/event-stream", true),
            ("text/event-stream; charset=utf-8", true),
            ("Text/Event-Stream", true),
            ("TEXT/EVENT-STREAM;CHARSET=UTF-8", true),
            ("  text/event-stream  ", true),
            ("text/event-stream;charset", true),
            ("text/event-stream;;", true),
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc+json", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/grpc-web-text", false),
            ("application/grpcx", false),
            ("image/png", true),
            ("image/jpeg", true),
            ("IMAGE/WEBP", true),
            ("image/svg+xml", false),
            ("image/svg+xml; charset=utf-8", false),
            ("audio/mpeg", true),
            ("video/mp4", true),
            ("font/woff", true),
            ("font/woff2", true),
            ("font/ttf", false),
            ("application/zip", true),
            ("application/gzip", true),
            ("application/zstd", true),
            ("application/x-bzip2", true),
            ("application/x-xz", true),
            ("application/x-7z-compressed", true),
            ("application/vnd.rar", true),
            ("application/json", false),
            ("application/x-ndjson", false),
            ("text/html; charset=utf-8", false),
            ("text/plain", false),
            ("multipart/mixed; boundary=x", false),
            ("multipart/x-mixed-replace; boundary=frame", true),
            // Odd values: nothing to match, so compressed like a missing Content-Type.
            ("", false),
            ("event-stream", false),
            ("/", false),
            ("text/", false),
            ("/event-stream", false),
            (";charset=utf-8", false),
            ("text/event stream", false),
            ("text/event-stream/x", false),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                skips(&filter, content_type.as_bytes()),
                *expected,
                "Content-Type: {content_type:?}"
            );
        }
    }

    #[test]
    fn missing_and_non_utf8_content_type_are_not_skipped() {
        let filter = MediaTypeFilter::default();
        assert!(!filter.skips(None));
        assert!(!skips(&filter, b"image/\xffpng"));
    }

    #[test]
    fn non_ascii_parameters_do_not_hide_the_media_type() {
        let filter = MediaTypeFilter::default();
        assert!(skips(&filter, "image/png; name=\"café.png\"".as_bytes()));
        assert!(skips(&filter, b"image/png; name=\"caf\xe9.png\""));
        assert!(skips(&filter, b"text/event-stream; x=\"\xff\""));
        assert!(skips(&filter, b"application/grpc; x=\"\xe9\""));
        assert!(!skips(&filter, b"text/html; charset=\xff"));
    }

    #[test]
    fn compress_removes_a_default_and_skip_adds_one() {
        let mut filter = MediaTypeFilter::default();
        filter.compress("text/event-stream".into());
        assert!(!skips(&filter, b"text/event-stream"));
        filter.skip("Application/X-NDJSON".into());
        assert!(skips(&filter, b"application/x-ndjson; charset=utf-8"));
        filter.skip("text/event-stream".into());
        assert!(skips(&filter, b"text/event-stream"));
    }

    #[test]
    fn compress_pattern_carves_exceptions_out_of_wildcards() {
        let mut filter = MediaTypeFilter::default();
        assert!(skips(&filter, b"image/bmp"));
        filter.compress("image/bmp".into());
        assert!(!skips(&filter, b"image/bmp"));
        assert!(skips(&filter, b"image/png"));
        filter.skip("image/svg+xml".into());
        assert!(skips(&filter, b"image/svg+xml"));
    }

    #[test]
    fn replace_drops_all_defaults() {
        let mut filter = MediaTypeFilter::default();
        filter.replace(["text/*".into(), "*/json".into()]);
        assert!(skips(&filter, b"text/html"));
        assert!(skips(&filter, b"application/json"));
        assert!(!skips(&filter, b"image/png"));
        assert!(!skips(&filter, b"image/svg+xml"));
        filter.replace([]);
        assert!(!skips(&filter, b"text/event-stream"));
        filter.replace(["*/*".into()]);
        assert!(skips(&filter, b"text/plain"));
        assert!(!filter.skips(None));
    }

    #[test]
    fn pattern_without_slash_matches_nothing() {
        let mut filter = MediaTypeFilter::default();
        filter.replace(["text".into(), "*".into()]);
        assert!(!skips(&filter, b"text/plain"));
    }
}
