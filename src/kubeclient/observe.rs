//! `backout_kubernetes_requests_total{verb,resource,outcome}` and
//! `backout_kubernetes_request_duration_seconds{verb,resource}` for every request.
//!
//! Latency runs from when the request leaves the rate limiter to its response headers (for a
//! watch: until the stream opened), so it is the API server's answer time; time spent waiting for
//! the limiter is not in it. A request its caller abandons before the headers arrive (e.g. the
//! actuator's own step timeout firing first) is not counted: it has no outcome.

use super::deadline::DeadlineElapsed;
use super::request::{RequestKind, RequestLabels, RequestOutcome, RequestOutcomeLabels};
use crate::telemetry::Metrics;
use futures::future::BoxFuture;
use hyper::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

/// The two families requests are recorded in (handles into [`Metrics`]).
#[derive(Clone)]
struct Recorder {
    requests: Family<RequestOutcomeLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
}

impl Recorder {
    fn record(&self, kind: RequestKind, outcome: RequestOutcome, seconds: f64) {
        self.requests
            .get_or_create(&RequestOutcomeLabels {
                verb: kind.verb,
                resource: kind.resource.clone(),
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&RequestLabels {
                verb: kind.verb,
                resource: kind.resource,
            })
            .observe(seconds);
    }
}

/// Builds [`Observe`] services recording into one [`Metrics`].
#[derive(Clone)]
pub struct ObserveLayer {
    recorder: Recorder,
}

impl ObserveLayer {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            recorder: Recorder {
                requests: metrics.kubernetes_requests.clone(),
                duration: metrics.kubernetes_request_duration.clone(),
            },
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}

/// Counts each request by verb, resource and outcome, and observes its latency.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    recorder: Recorder,
}

/// The outcome label of a failed request: our deadline, or anything below HTTP.
fn error_outcome(err: &BoxError) -> RequestOutcome {
    if err.downcast_ref::<DeadlineElapsed>().is_some() {
        RequestOutcome::timeout
    } else {
        RequestOutcome::transport_error
    }
}

impl<S, B, RB> Service<Request<B>> for Observe<S>
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
        let kind = RequestKind::of(&req);
        let recorder = self.recorder.clone();
        let started = tokio::time::Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let res = call.await.map_err(Into::into);
            let outcome = match &res {
                Ok(rsp) => RequestOutcome::from_status(rsp.status()),
                Err(err) => error_outcome(err),
            };
            recorder.record(kind, outcome, started.elapsed().as_secs_f64());
            res
        })
    }
}
