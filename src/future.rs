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
    add_vary_accept_encoding, decide, known_length, set_gzip_headers, BodyLength, RequestFacts,
};
use crate::metrics::Observer;
use crate::{BoxError, GzipOverride, Outcome};

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
        let config: &Config = this.config;
        let request: &RequestFacts = this.request;
        // The handler's instructions are for this layer only: layers further out never see them.
        let handler = head.extensions.remove::<GzipOverride>().unwrap_or_default();
        let length = BodyLength {
            is_end_stream: body.is_end_stream(),
            exact: body.size_hint().exact(),
        };
        let mut outcome = decide(config, request, &head, length, handler.mode);
        // HEAD gets the headers its GET would get right now, but its body is never sent, so it is
        // not compressed and takes no stream slot.
        let mut permit = None;
        if outcome == Outcome::Gzip {
            if request.is_head {
                if !config.streams.has_room(config.max_streams) {
                    outcome = Outcome::StreamBudget;
                }
            } else {
                permit = config.streams.try_acquire(config.max_streams);
                if permit.is_none() {
                    outcome = Outcome::StreamBudget;
                }
            }
        }
        if let Some(metrics) = &config.metrics {
            metrics.count_response(outcome);
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(
            target: "tower_gzip",
            outcome = outcome.as_str(),
            status = head.status.as_u16(),
            head = request.is_head,
            "compression decided"
        );
        let compressing = permit.is_some();
        // Nothing left to send: a HEAD, a body that has already ended, or a status without
        // content (servers drop those bodies unpolled).
        let status = head.status;
        let no_content = status.is_informational() || matches!(status.as_u16(), 204 | 205 | 304);
        let mut observer = Observer::new(
            request.line.as_ref(),
            status,
            outcome,
            compressing,
            request.is_head || length.is_end_stream || no_content,
            config.metrics.as_ref(),
            config.on_response_end.as_ref(),
        );
        // A body passed through with a known length is complete once that many bytes went out:
        // servers stop polling it then, without waiting for its end.
        if let (Some(observer), false) = (observer.as_mut(), compressing) {
            observer.expect_len(known_length(&head.headers, length));
        }
        let body = match (outcome, permit) {
            (Outcome::Gzip, Some(permit)) => {
                set_gzip_headers(&mut head.headers);
                let mut encoder = config.encoder;
                if let Some(level) = handler.level {
                    encoder.level = level;
                }
                GzipBody::gzip(
                    body,
                    encoder,
                    handler.flush.unwrap_or(config.flush),
                    config.hibernate_after,
                    permit,
                    config.pool.clone(),
                    observer,
                )
            }
            // The HEAD of a compressed GET: gzip headers, and a body that states no length, or
            // axum and hyper would write the identity length as `Content-Length` beside `gzip`.
            (Outcome::Gzip, None) => {
                set_gzip_headers(&mut head.headers);
                GzipBody::head_of_gzip(body, observer)
            }
            (outcome, _) => {
                // Identity, but it could have been gzip for another client or at another time.
                if outcome.adds_vary() {
                    add_vary_accept_encoding(&mut head.headers);
                }
                GzipBody::passthrough(body, outcome, observer)
            }
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
