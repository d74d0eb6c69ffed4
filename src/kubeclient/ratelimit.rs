//! A client-side limit on the request rate: `qps` sustained, `burst` back to back. Excess requests
//! wait for their turn, first come first served; they never fail, so a busy cycle is slower but
//! complete, and the API server's own priority and fairness never has to reject us.
//!
//! Watches and LISTs do not count and never wait. A watch is one long-lived request per
//! namespace, opened again only after an error or when the server ends it (every few minutes),
//! and opening it is cheap for the API server (served from its watch cache). It is also what keeps
//! load away: while a namespace's watch is not synced the daemon reads Deployments with GETs, so
//! queueing the watch, or the LIST it starts with, behind a backlog of those GETs prolongs the very
//! fallback that made the backlog. Measured at 10,000 services in 100 namespaces: with LISTs
//! limited, the first cycles' GETs (two per service) queued the watches' LISTs behind them, the
//! watches never synced, and the daemon ran at the limit (100 requests/s) with evaluations 29 s
//! late. LISTs are few (one per namespace per watch start, the actuator's ReplicaSet reads, the
//! elector's one per round), so exempting them costs the API server little.
//!
//! The bucket is governor's GCRA on tokio's clock, so it follows paused time in tests. Waiters
//! take turns on a fair mutex: one sleeps until the next slot while the others queue behind it,
//! rather than all of them waking at every slot to race for it.

use super::request::RequestKind;
use super::KubeClientError;
use futures::future::BoxFuture;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hyper::Request;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, Layer, Service, ServiceExt as _};

/// governor's clock on tokio's time: elapsed time since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The bucket and the queue of waiters, shared by every clone of the client.
#[derive(Debug)]
struct Limiter {
    bucket: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    turn: tokio::sync::Mutex<()>,
}

impl Limiter {
    /// Waits until a request may go. Cancel-safe: a dropped waiter takes no slot.
    async fn acquire(&self) {
        let _turn = self.turn.lock().await;
        loop {
            match self.bucket.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.bucket.clock().now());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Builds [`RateLimit`] services sharing one bucket.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// `qps` requests per second sustained, `burst` at once. Fails on a rate that is not a
    /// positive number or a burst of 0 (which would block every request).
    pub fn new(qps: f64, burst: u32) -> Result<Self, KubeClientError> {
        let bad = |key, message: String| KubeClientError::Settings { key, message };
        let period = (qps.is_finite() && qps > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / qps).ok())
            .flatten()
            // Above 1e9 qps the period rounds to zero; one request a nanosecond is no limit anyway.
            .and_then(|p| Quota::with_period(p.max(Duration::from_nanos(1))))
            .ok_or_else(|| bad("qps", format!("must be a positive number, got {qps}")))?;
        let burst = NonZeroU32::new(burst).ok_or_else(|| {
            bad(
                "burst",
                "must be at least 1 (0 would block every request)".into(),
            )
        })?;
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        Ok(Self {
            limiter: Arc::new(Limiter {
                bucket: RateLimiter::direct_with_clock(period.allow_burst(burst), clock),
                turn: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// Holds each request (watches excepted) until the bucket has a slot, then hands it to `S`,
/// which must be cloneable (a `tower::buffer::Buffer`) since the wait happens in the future.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    /// Always ready: readiness of `S` is awaited per request, after its turn.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = RequestKind::of(&req);
        let limited = !(kind.is_watch() || kind.is_list());
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            if limited {
                limiter.acquire().await;
            }
            inner.oneshot(req).await.map_err(Into::into)
        })
    }
}
