//! Custom rules: what a user-supplied predicate sees of the request.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Uri, Version};

/// The parts of a request a custom predicate can look at, captured when the request passes through
/// the layer (the response future cannot see the request otherwise).
///
/// It is captured only when at least one predicate was added with
/// [`GzipLayer::compress_when`](crate::GzipLayer::compress_when), so the default layer does not
/// copy request headers.
///
/// ```
/// use tower_gzip::GzipLayer;
///
/// // Do not compress authenticated API responses (a BREACH precaution).
/// let layer = GzipLayer::new().compress_when(|request, _response| {
///     !request.headers().contains_key(http::header::AUTHORIZATION)
/// });
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct RequestHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl RequestHead {
    pub(crate) fn from_request<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    /// The request method.
    ///
    /// ```
    /// # let head = tower_gzip::RequestHead::example();
    /// assert_eq!(head.method(), http::Method::GET);
    /// ```
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target.
    ///
    /// ```
    /// # let head = tower_gzip::RequestHead::example();
    /// assert_eq!(head.uri().path(), "/");
    /// ```
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The HTTP version of the request.
    ///
    /// ```
    /// # let head = tower_gzip::RequestHead::example();
    /// assert_eq!(head.version(), http::Version::HTTP_11);
    /// ```
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request headers.
    ///
    /// ```
    /// # let head = tower_gzip::RequestHead::example();
    /// assert!(head.headers().is_empty());
    /// ```
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    #[doc(hidden)]
    /// A `GET /` request head, for doc examples.
    pub fn example() -> Self {
        Self::from_request(&Request::new(()))
    }
}

/// A user predicate: compress only if it returns `true` (in addition to the built-in rules).
pub(crate) type Predicate = Arc<dyn Fn(&RequestHead, &http::response::Parts) -> bool + Send + Sync>;

/// Debug output for a list of predicates, which are closures and cannot print themselves.
pub(crate) struct PredicatesDebug<'a>(pub(crate) &'a [Predicate]);

impl fmt::Debug for PredicatesDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} custom predicate(s)]", self.0.len())
    }
}
