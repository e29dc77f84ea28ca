//! [`Gzip`]: the middleware service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::GzipBody;
use crate::config::Config;
use crate::decision::RequestFacts;
use crate::future::ResponseFuture;
use crate::{BoxError, GzipLayer};

/// Compresses the responses of the inner service with gzip. Built by [`GzipLayer`].
///
/// Errors of the inner service pass through unchanged.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower::{service_fn, ServiceExt};
/// use tower_gzip::Gzip;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let text = "hello gzip ".repeat(100);
/// let body = text.clone();
/// let svc = Gzip::new(service_fn(move |_req: http::Request<()>| {
///     let body = body.clone();
///     async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
/// }));
///
/// let request = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap();
/// let response = svc.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["content-encoding"], "gzip");
///
/// let compressed = response.into_body().collect().await.unwrap().to_bytes();
/// let mut decoded = String::new();
/// std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut decoded).unwrap();
/// assert_eq!(decoded, text);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Gzip<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Gzip<S> {
    /// Wraps `inner` with the default settings (see [`GzipLayer::new`]).
    ///
    /// ```
    /// # let inner = tower::service_fn(|_req: http::Request<()>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// # });
    /// let svc = tower_gzip::Gzip::new(inner);
    /// # let _ = svc;
    /// ```
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            config: Arc::default(),
        }
    }

    pub(crate) fn with_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer that wraps services in `Gzip` with the default settings; same as [`GzipLayer::new`].
    ///
    /// ```
    /// let layer = tower_gzip::Gzip::<()>::layer();
    /// # let _ = layer;
    /// ```
    pub fn layer() -> GzipLayer {
        GzipLayer::new()
    }

    /// The number of responses being compressed right now; see [`GzipLayer::live_streams`].
    ///
    /// ```
    /// let svc = tower_gzip::Gzip::new(());
    /// assert_eq!(svc.live_streams(), 0);
    /// ```
    pub fn live_streams(&self) -> usize {
        self.config.streams.live()
    }

    /// The inner service.
    ///
    /// ```
    /// let svc = tower_gzip::Gzip::new(42);
    /// assert_eq!(*svc.get_ref(), 42);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// let mut svc = tower_gzip::Gzip::new(41);
    /// *svc.get_mut() += 1;
    /// assert_eq!(*svc.get_ref(), 42);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// assert_eq!(tower_gzip::Gzip::new(42).into_inner(), 42);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Gzip<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<GzipBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let facts = RequestFacts::new(&request, &self.config);
        ResponseFuture::new(self.inner.call(request), facts, self.config.clone())
    }
}
