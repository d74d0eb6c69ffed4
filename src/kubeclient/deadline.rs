//! A deadline on the response headers of every request.
//!
//! kube's client has no per-request timeout, and its connector's read timeout would also cut a
//! watch that is quiet for longer than the timeout. Bounding the wait for the *headers* (as
//! kubert's `client/timeouts.rs` does) catches an API server or proxy that accepted the request
//! and never answers, while a watch, whose headers come at once and whose events then trickle in
//! for minutes, is left alone. The error is a transport-level failure (`kube::Error::Service`), so
//! the actuator's retry classifier treats it as retryable.

use futures::future::BoxFuture;
use hyper::{Request, Response};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, Layer, Service};

/// The request got no response headers within the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no response from the Kubernetes API within {0:?} (request_timeout)")]
pub struct DeadlineElapsed(pub Duration);

/// Builds [`Deadline`] services.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails a request with [`DeadlineElapsed`] when its response headers take longer than the
/// timeout; the response body is not bounded.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B, RB> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<RB>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = self.timeout;
        // The timer starts now, when the request is handed on, not when the future is first
        // polled: tokio's timeout registers its deadline at creation.
        let call = tokio::time::timeout(timeout, self.inner.call(req));
        Box::pin(async move {
            match call.await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => Err(DeadlineElapsed(timeout).into()),
            }
        })
    }
}
