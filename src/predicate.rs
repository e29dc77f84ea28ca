//! Custom rules: what a user-supplied predicate sees of the request.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// The parts of a request a custom predicate can look at, captured when the request passes through
/// the layer (the response future cannot see the request otherwise).
///
/// It is captured only when at least one predicate that looks at the request was added with
/// [`GzipLayer::compress_when`](crate::GzipLayer::compress_when); predicates added with
/// [`GzipLayer::compress_response_when`](crate::GzipLayer::compress_response_when) see only the
/// response, and a layer with only those copies nothing from the request. Capturing clones the
/// request's method, URI, headers and extensions.
///
/// ```
/// use tower_gzip::{GzipLayer, RequestHead};
///
/// // Do not compress authenticated API responses (a BREACH precaution).
/// let layer = GzipLayer::new().compress_when(|request: &RequestHead, _response| {
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
    extensions: Extensions,
}

impl RequestHead {
    /// Captures the head of `request` (its body is not touched), as the layer does.
    ///
    /// ```
    /// let request = http::Request::builder().uri("/api").body(()).unwrap();
    /// let head = tower_gzip::RequestHead::from_request(&request);
    /// assert_eq!(head.uri().path(), "/api");
    /// ```
    pub fn from_request<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
        }
    }

    /// The request method.
    ///
    /// ```
    /// let head = tower_gzip::RequestHead::from_request(&http::Request::new(()));
    /// assert_eq!(head.method(), http::Method::GET);
    /// ```
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target.
    ///
    /// ```
    /// let head = tower_gzip::RequestHead::from_request(&http::Request::new(()));
    /// assert_eq!(head.uri().path(), "/");
    /// ```
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The HTTP version of the request.
    ///
    /// ```
    /// let head = tower_gzip::RequestHead::from_request(&http::Request::new(()));
    /// assert_eq!(head.version(), http::Version::HTTP_11);
    /// ```
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request headers.
    ///
    /// ```
    /// let head = tower_gzip::RequestHead::from_request(&http::Request::new(()));
    /// assert!(head.headers().is_empty());
    /// ```
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request extensions as they were when the request passed through the layer (what
    /// layers further out and routing had inserted, such as an authenticated user).
    ///
    /// ```
    /// #[derive(Clone)]
    /// struct Tenant(&'static str);
    ///
    /// let mut request = http::Request::new(());
    /// request.extensions_mut().insert(Tenant("acme"));
    /// let head = tower_gzip::RequestHead::from_request(&request);
    /// assert_eq!(head.extensions().get::<Tenant>().map(|t| t.0), Some("acme"));
    /// ```
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }
}

/// A rule that sees the request and the response: compress only if it returns `true` (in
/// addition to the built-in rules).
pub(crate) type RequestPredicate =
    Arc<dyn Fn(&RequestHead, &http::response::Parts) -> bool + Send + Sync>;

/// A rule that sees only the response.
pub(crate) type ResponsePredicate = Arc<dyn Fn(&http::response::Parts) -> bool + Send + Sync>;

/// Debug output for a list of predicates, which are closures and cannot print themselves.
pub(crate) struct PredicatesDebug(pub(crate) usize);

impl fmt::Debug for PredicatesDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} custom predicate(s)]", self.0)
    }
}
