//! `Accept-Encoding` negotiation, reduced to the one question this crate asks: may this response be
//! sent with `Content-Encoding: gzip`?
//!
//! [RFC 9110 §12.5.3](https://www.rfc-editor.org/rfc/rfc9110#section-12.5.3):
//!
//! ```text
//! Accept-Encoding  = #( codings [ weight ] )
//! codings          = content-coding / "identity" / "*"
//! weight           = OWS ";" OWS "q=" qvalue
//! qvalue           = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
//! ```
//!
//! Example values: `gzip, deflate, br`, `gzip;q=1.0, identity; q=0.5, *;q=0`, `x-gzip`, `*`.
//!
//! Rules, in the order they apply:
//! - Every `Accept-Encoding` field line is read; a field with bytes that are not visible ASCII
//!   (non-UTF-8 or obs-text) makes the whole request identity: we cannot know what it meant.
//! - Coding names are case-insensitive; `x-gzip` is `gzip` (RFC 9110 §8.4.1.3).
//! - Empty list elements and whitespace are tolerated. Parameters other than `q` are ignored.
//! - An element whose `q` is not a valid qvalue (`q=2`, `q=0.1234`, `q=abc`) is ignored as a whole:
//!   guessing its weight could turn a refusal into an acceptance.
//! - `*` stands for gzip (and identity) when they are not named.
//! - gzip is chosen when its weight is above 0 and not below identity's explicit weight. A missing
//!   header, an empty header and `gzip;q=0` all mean identity.
//! - When gzip and identity are both refused (`gzip;q=0, identity;q=0` or `*;q=0`) the response is
//!   sent as identity anyway: RFC 9110 prefers an unencoded response to a 406, and a middleware that
//!   answers 406 hides the application's own status and body.

use http::HeaderValue;

/// The content coding chosen for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Send `Content-Encoding: gzip`.
    Gzip,
    /// Send the representation as it is.
    Identity,
}

/// Chooses the coding from all `Accept-Encoding` field values of a request.
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Encoding {
    let mut gzip: Option<u16> = None;
    let mut identity: Option<u16> = None;
    let mut star: Option<u16> = None;

    for value in values {
        let Ok(value) = value.to_str() else {
            return Encoding::Identity;
        };
        for element in value.split(',') {
            let Some((coding, q)) = parse_element(element) else {
                continue;
            };
            let slot =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut gzip
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut identity
                } else if coding == "*" {
                    &mut star
                } else {
                    continue;
                };
            // A coding listed twice gets its highest weight.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }

    let gzip = gzip.or(star).unwrap_or(0);
    let identity = identity.or(star);
    match identity {
        _ if gzip == 0 => Encoding::Identity,
        Some(identity) if identity > gzip => Encoding::Identity,
        _ => Encoding::Gzip,
    }
}

/// Parses one list element into (coding, weight in thousandths). `None` means "ignore it".
fn parse_element(element: &str) -> Option<(&str, u16)> {
    let mut parts = element.split(';');
    let coding = parts.next()?.trim();
    if coding.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = parse_qvalue(value.trim())?;
            break;
        }
    }
    Some((coding, q))
}

/// Parses a qvalue into thousandths: `0`, `0.5`, `0.125`, `1`, `1.000`. Anything else is `None`.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match int {
        "0" => Some(
            frac.bytes()
                .zip([100, 10, 1])
                .map(|(digit, scale)| u16::from(digit - b'0') * scale)
                .sum(),
        ),
        "1" if frac.bytes().all(|b| b == b'0') => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Gzip, Identity};

    fn pick(values: &[&[u8]]) -> Encoding {
        let values: Vec<HeaderValue> = values
            .iter()
            .map(|v| HeaderValue::from_bytes(v).unwrap())
            .collect();
        negotiate(&values)
    }

    #[test]
    fn accept_encoding_table() {
        let cases: &[(&str, Encoding)] = &[
            ("gzip", Gzip),
            ("GZIP", Gzip),
            ("GzIp", Gzip),
            ("x-gzip", Gzip),
            ("X-GZIP", Gzip),
            ("gzip, deflate, br", Gzip),
            ("br, gzip", Gzip),
            ("deflate, br", Identity),
            ("br;q=1.0, gzip;q=0.8, *;q=0.1", Gzip),
            ("", Identity),
            (" ", Identity),
            (",,, ,", Identity),
            (" , gzip ,", Gzip),
            ("  gzip  ;  q=0.5  ", Gzip),
            ("gzip;q=0", Identity),
            ("gzip;q=0.0", Identity),
            ("gzip;q=0.000", Identity),
            ("gzip;Q=0", Identity),
            ("gzip;q=0.001", Gzip),
            ("gzip;q=1", Gzip),
            ("gzip;q=1.", Gzip),
            ("gzip;q=1.000", Gzip),
            // Malformed weights: the element is ignored, not guessed.
            ("gzip;q=1.001", Identity),
            ("gzip;q=2", Identity),
            ("gzip;q=-1", Identity),
            ("gzip;q=0.1234", Identity),
            ("gzip;q=abc", Identity),
            ("gzip;q=", Identity),
            ("gzip;q=.5", Identity),
            ("gzip;q=0.5e1", Identity),
            ("gzip;q=0.5, gzip;q=bogus", Gzip),
            // Other parameters are ignored wherever they stand.
            ("gzip;level=9", Gzip),
            ("gzip;q=0.5;foo=bar", Gzip),
            ("gzip;foo=bar;q=0", Identity),
            ("gzip;foo", Gzip),
            ("gzip;;;", Gzip),
            // Wildcard.
            ("*", Gzip),
            ("*;q=0.5", Gzip),
            ("*;q=0", Identity),
            ("*;q=0, gzip", Gzip),
            ("gzip;q=0, *", Identity),
            ("*, gzip;q=0", Identity),
            // Identity preference.
            ("identity", Identity),
            ("identity, gzip", Gzip),
            ("identity;q=1, gzip;q=0.5", Identity),
            ("identity;q=0.5, gzip;q=0.5", Gzip),
            ("identity;q=0, gzip;q=0.1", Gzip),
            ("*;q=1, gzip;q=0.5", Identity),
            // Both refused: identity anyway (documented choice, no 406).
            ("identity;q=0", Identity),
            ("gzip;q=0, identity;q=0", Identity),
            ("*;q=0, identity;q=0", Identity),
            // Junk.
            ("gzipx", Identity),
            ("gzip2", Identity),
            ("g zip", Identity),
            (";q=1", Identity),
            ("=,;=;", Identity),
            ("gzip=1", Identity),
        ];
        for (value, expected) in cases {
            assert_eq!(
                pick(&[value.as_bytes()]),
                *expected,
                "Accept-Encoding: {value:?}"
            );
        }
    }

    #[test]
    fn missing_header_is_identity() {
        assert_eq!(pick(&[]), Identity);
    }

    #[test]
    fn several_field_lines_are_combined() {
        assert_eq!(pick(&[b"br", b"gzip"]), Gzip);
        assert_eq!(pick(&[b"gzip", b"gzip;q=0, identity"]), Gzip);
        assert_eq!(pick(&[b"*;q=0", b"deflate"]), Identity);
    }

    #[test]
    fn non_utf8_bytes_mean_identity() {
        assert_eq!(pick(&[b"gzip, \xff\xfe"]), Identity);
        assert_eq!(pick(&[b"gzip", b"\xe9"]), Identity);
        assert_eq!(pick(&[b"gz\x80ip"]), Identity);
    }

    #[test]
    fn huge_header_is_parsed_without_trouble() {
        let mut value = "br;q=0.1, ".repeat(10_000);
        value.push_str("gzip");
        assert_eq!(pick(&[value.as_bytes()]), Gzip);
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("1.0"), Some(1000));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("01"), None);
        assert_eq!(parse_qvalue(""), None);
    }
}
