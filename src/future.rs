//! The response future of [`Gzip`](crate::Gzip).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::body::GzipBody;
use crate::config::Config;
use crate::decision::{
    add_vary_accept_encoding, decide, set_gzip_headers, BodyLength, Decision, RequestFacts,
};
use crate::BoxError;

pin_project! {
    /// Resolves to the inner service's response, with its headers rewritten and its body wrapped in
    /// a [`GzipBody`] that compresses it if the response qualifies.
    ///
    /// The response head is passed on as soon as the inner service produces it: the decision uses
    /// the head and the body's size hint only, never the body's bytes, so headers are never held
    /// back waiting for the first chunk.
    ///
    /// ```
    /// use tower_gzip::{future::ResponseFuture, Gzip};
    /// use tower::{service_fn, Service, ServiceExt};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut svc = Gzip::new(service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    /// }));
    /// let future: ResponseFuture<_> = svc.ready().await.unwrap().call(http::Request::new(()));
    /// let response = future.await.unwrap();
    /// assert!(!response.body().is_compressing()); // 2 bytes: below the minimum size
    /// # });
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        request: RequestFacts,
        config: Arc<Config>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, request: RequestFacts, config: Arc<Config>) -> Self {
        Self {
            inner,
            request,
            config,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<GzipBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut head, body) = ready!(this.inner.poll(cx))?.into_parts();
        let length = BodyLength {
            is_end_stream: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let body = match decide(this.config, this.request, &head, length) {
            Decision::Untouched => GzipBody::passthrough(body),
            Decision::Identity => {
                add_vary_accept_encoding(&mut head.headers);
                GzipBody::passthrough(body)
            }
            // HEAD gets the headers its GET would get right now. Its body is never sent, so it is
            // not compressed and takes no stream slot; but it must not state the identity length
            // either, or axum and hyper write that as `Content-Length` next to `gzip`.
            Decision::Gzip if this.request.is_head => {
                if this.config.streams.has_room(this.config.max_streams) {
                    set_gzip_headers(&mut head.headers);
                    GzipBody::head_of_gzip(body)
                } else {
                    add_vary_accept_encoding(&mut head.headers);
                    GzipBody::passthrough(body)
                }
            }
            Decision::Gzip => match this.config.streams.try_acquire(this.config.max_streams) {
                Some(permit) => {
                    set_gzip_headers(&mut head.headers);
                    let config = &this.config;
                    GzipBody::gzip(
                        body,
                        config.encoder,
                        config.flush,
                        config.hibernate_after,
                        permit,
                    )
                }
                // Over the stream budget: identity, with the headers an identity answer gets.
                None => {
                    add_vary_accept_encoding(&mut head.headers);
                    GzipBody::passthrough(body)
                }
            },
        };
        Poll::Ready(Ok(Response::from_parts(head, body)))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request", &self.request)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
