//! Which responses are compressed, and how their headers change. Pure functions over heads; no
//! bodies are polled and nothing async happens here.

use http::header::{
    HeaderName, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};

use crate::config::Config;
use crate::control::OverrideMode;
use crate::negotiate::{negotiate, Encoding};
use crate::outcome::RequestLine;
use crate::predicate::RequestHead;
use crate::Outcome;

/// What the response future needs to know about the request.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    pub(crate) encoding: Encoding,
    pub(crate) is_head: bool,
    /// Captured only when predicates that look at the request need it.
    pub(crate) head: Option<RequestHead>,
    /// Captured only when per-response stats are reported.
    pub(crate) line: Option<RequestLine>,
}

impl RequestFacts {
    pub(crate) fn new<B>(request: &Request<B>, config: &Config) -> Self {
        Self {
            encoding: negotiate(request.headers().get_all(ACCEPT_ENCODING)),
            is_head: request.method() == Method::HEAD,
            head: (!config.request_predicates.is_empty())
                .then(|| RequestHead::from_request(request)),
            line: (config.on_response_end.is_some() || cfg!(feature = "tracing")).then(|| {
                RequestLine {
                    method: request.method().clone(),
                    uri: request.uri().clone(),
                }
            }),
        }
    }
}

/// What the response body tells about its length before it is polled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLength {
    pub(crate) is_end_stream: bool,
    pub(crate) exact: Option<u64>,
}

const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// Decides what happens to a response. The rules are listed in the crate docs; the first that
/// applies gives the outcome. [`Outcome::StreamBudget`] is decided later, by the caller.
///
/// The HTTP rules come first and win over the handler's choice; the layer's policies (minimum
/// size, skip list, predicates) come after it, so [`OverrideMode::On`] skips them.
pub(crate) fn decide(
    config: &Config,
    request: &RequestFacts,
    response: &http::response::Parts,
    body: BodyLength,
    handler: OverrideMode,
) -> Outcome {
    let headers = &response.headers;
    let status = response.status;
    // 1xx, 204, 205 and 304 have no content; 206 is a byte range of the identity representation.
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT
                | StatusCode::RESET_CONTENT
                | StatusCode::PARTIAL_CONTENT
                | StatusCode::NOT_MODIFIED
        )
    {
        return Outcome::Status;
    }
    if headers.contains_key(CONTENT_RANGE) {
        return Outcome::Range;
    }
    if headers.contains_key(CONTENT_ENCODING) {
        return Outcome::AlreadyEncoded;
    }
    if config.respect_no_transform && has_no_transform(headers) {
        return Outcome::NoTransform;
    }
    // A digest of the bytes as they are would no longer match.
    if [CONTENT_DIGEST, REPR_DIGEST, CONTENT_MD5]
        .iter()
        .any(|name| headers.contains_key(name))
    {
        return Outcome::Digest;
    }
    let length = known_length(headers, body);
    if length == Some(0) {
        return Outcome::TooSmall;
    }
    match handler {
        OverrideMode::Off => return Outcome::HandlerOptOut,
        OverrideMode::On => {}
        OverrideMode::Auto => {
            if length.is_some_and(|len| len < config.min_size) {
                return Outcome::TooSmall;
            }
            if config.media_types.skips(headers.get(CONTENT_TYPE)) {
                return Outcome::MediaType;
            }
            if !config.response_predicates.iter().all(|p| p(response)) {
                return Outcome::Predicate;
            }
            if let Some(head) = &request.head {
                if !config.request_predicates.iter().all(|p| p(head, response)) {
                    return Outcome::Predicate;
                }
            }
        }
    }
    match request.encoding {
        Encoding::Gzip => Outcome::Gzip,
        Encoding::Identity => Outcome::ClientRefused,
    }
}

/// The body length known before the body is polled: `Content-Length`, else what the body says.
///
/// The same for `HEAD` as for `GET`, so both get the same headers: through axum and hyper a
/// `HEAD` response carries the body its `GET` would send (the server drops it), and a handler
/// that answers `HEAD` with an empty body states the `GET` length in `Content-Length`.
pub(crate) fn known_length(headers: &HeaderMap, body: BodyLength) -> Option<u64> {
    content_length(headers).or(if body.is_end_stream {
        Some(0)
    } else {
        body.exact
    })
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6), in any field line, any case.
fn has_no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Rewrites the headers of a response that will be sent gzip-coded.
pub(crate) fn set_gzip_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    // The compressed length is unknown up front, and ranges of the identity bytes no longer apply.
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    weaken_etag(headers);
    add_vary_accept_encoding(headers);
}

/// A strong validator promises byte-for-byte equality, which the gzip bytes do not have with the
/// identity bytes (RFC 9110 §8.8.1); a weak one (`W/"…"`) still lets `If-None-Match` revalidate.
/// A malformed (unquoted) ETag cannot be weakened and is removed, as nginx does.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else {
        return;
    };
    let bytes = etag.as_bytes().trim_ascii();
    if bytes.starts_with(b"W/") {
        return;
    }
    let weak = bytes
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", bytes].concat()).ok())
        .flatten();
    match weak {
        Some(weak) => headers.insert(ETAG, weak),
        None => headers.remove(ETAG),
    };
}

/// Adds `Accept-Encoding` to `Vary` unless it is already listed or `Vary` is `*`. Existing field
/// lines are merged into one, keeping every member.
pub(crate) fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let mut merged: Vec<u8> = Vec::new();
    for value in headers.get_all(VARY) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member == b"*" || member.eq_ignore_ascii_case(b"accept-encoding") {
                return;
            }
            if !member.is_empty() {
                merged.extend_from_slice(member);
                merged.extend_from_slice(b", ");
            }
        }
    }
    if merged.is_empty() {
        // The common case: nothing to merge, no allocation.
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    merged.extend_from_slice(b"Accept-Encoding");
    // Members came from valid header values and are joined with ", ", so this cannot fail;
    // appending a separate line is the equally valid fallback.
    match HeaderValue::from_bytes(&merged) {
        Ok(value) => {
            headers.insert(VARY, value);
        }
        Err(_) => {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn vary_after(pairs: &[(&str, &[u8])]) -> Vec<Vec<u8>> {
        let mut map = headers(pairs);
        add_vary_accept_encoding(&mut map);
        map.get_all(VARY)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    /// Response headers before, and the `Vary` field lines expected after.
    type VaryCase<'a> = (&'a [(&'a str, &'a [u8])], &'a [&'a [u8]]);

    #[test]
    fn vary_table() {
        let cases: &[VaryCase<'_>] = &[
            (&[], &[b"Accept-Encoding"]),
            (&[("vary", b"Origin")], &[b"Origin, Accept-Encoding"]),
            (&[("vary", b"accept-encoding")], &[b"accept-encoding"]),
            (
                &[("vary", b"Origin, ACCEPT-ENCODING")],
                &[b"Origin, ACCEPT-ENCODING"],
            ),
            (&[("vary", b"*")], &[b"*"]),
            (
                &[("vary", b"Origin"), ("vary", b"Cookie")],
                &[b"Origin, Cookie, Accept-Encoding"],
            ),
            (
                &[("vary", b"Origin"), ("vary", b"Accept-Encoding")],
                &[b"Origin", b"Accept-Encoding"],
            ),
            (
                &[("vary", b"Accept-Encoding-Foo")],
                &[b"Accept-Encoding-Foo, Accept-Encoding"],
            ),
            (&[("vary", b" , Origin ,, ")], &[b"Origin, Accept-Encoding"]),
            (&[("vary", b"")], &[b"Accept-Encoding"]),
            (
                &[("vary", b"X-\xe9t\xe9")],
                &[b"X-\xe9t\xe9, Accept-Encoding"],
            ),
        ];
        for (before, after) in cases {
            let expected: Vec<Vec<u8>> = after.iter().map(|v| v.to_vec()).collect();
            assert_eq!(vary_after(before), expected, "Vary before: {before:?}");
        }
    }

    #[test]
    fn etag_table() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"\"abc\"", Some(b"W/\"abc\"")),
            (b"W/\"abc\"", Some(b"W/\"abc\"")),
            (b"\"\"", Some(b"W/\"\"")),
            (b"abc", None),
            (b"\"a\xffb\"", Some(b"W/\"a\xffb\"")),
        ];
        for (before, after) in cases {
            let mut map = headers(&[("etag", before)]);
            weaken_etag(&mut map);
            assert_eq!(
                map.get(ETAG).map(|v| v.as_bytes()),
                *after,
                "ETag: {before:?}"
            );
        }
    }

    #[test]
    fn gzip_headers_are_rewritten() {
        let mut map = headers(&[
            ("content-length", b"1234"),
            ("accept-ranges", b"bytes"),
            ("etag", b"\"v1\""),
            ("content-type", b"application/json"),
        ]);
        set_gzip_headers(&mut map);
        assert_eq!(map[CONTENT_ENCODING], "gzip");
        assert!(!map.contains_key(CONTENT_LENGTH));
        assert!(!map.contains_key(ACCEPT_RANGES));
        assert_eq!(map[ETAG], "W/\"v1\"");
        assert_eq!(map[VARY], "Accept-Encoding");
        assert_eq!(map[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn no_transform_is_found_among_directives() {
        for value in [
            &b"no-transform"[..],
            b"public, no-transform",
            b"max-age=60,NO-TRANSFORM",
            b" no-transform ",
        ] {
            assert!(
                has_no_transform(&headers(&[("cache-control", value)])),
                "{value:?}"
            );
        }
        for value in [
            &b"no-store"[..],
            b"no-transformer",
            b"x=\"no-transform-ish\"",
            b"\xff",
        ] {
            assert!(
                !has_no_transform(&headers(&[("cache-control", value)])),
                "{value:?}"
            );
        }
        assert!(has_no_transform(&headers(&[
            ("cache-control", b"public"),
            ("cache-control", b"no-transform")
        ])));
    }

    #[test]
    fn content_length_parsing() {
        assert_eq!(
            content_length(&headers(&[("content-length", b"42")])),
            Some(42)
        );
        assert_eq!(content_length(&headers(&[("content-length", b"-1")])), None);
        assert_eq!(content_length(&headers(&[("content-length", b"4x")])), None);
        assert_eq!(
            content_length(&headers(&[("content-length", b"\xff")])),
            None
        );
        assert_eq!(content_length(&headers(&[])), None);
    }
}
