//! The one way backout builds its Kubernetes client: kube's default stack (TLS, auth, base URI)
//! with three tower layers on top, so every call the daemon and the CLI make has a deadline, stays
//! under a client-side rate and is counted.
//!
//! Before this, only the actuator's calls had a deadline (its own `tokio::time::timeout`), the
//! daemon's Deployment GETs and watches had none, and nothing bounded the request rate: a fleet
//! could flood the API server, and a hung API server could stall an evaluation cycle. Flagger
//! stalled at about 50 canaries on a client-side limit it could not tune (flagger#638), so ours is
//! a setting (`[kubernetes] qps`, `burst`).
//!
//! Order of the layers, outermost first:
//! 1. [`ratelimit`]: waits for a slot (never fails); watches skip it (see that module for why).
//! 2. [`observe`]: `backout_kubernetes_requests_total` and the latency histogram, measured from
//!    when the request leaves the limiter, so queueing shows as lag, not as API server latency.
//! 3. [`deadline`]: the response headers must arrive within `request_timeout`; the body is not
//!    bounded, so a long-lived watch stream is not cut (as in kubert's `client/timeouts.rs`).
//!
//! Retries stay with the callers (the actuator's step retries, the watch's own restart, the next
//! cycle): a retry layer here would multiply attempts under the actuator's and hide failures from
//! the metrics, which is why [`build`] also turns off the one kube's default stack has.

pub mod deadline;
pub mod observe;
pub mod ratelimit;
pub mod rbac;
pub mod request;

use crate::telemetry::Metrics;
use futures::future::BoxFuture;
use hyper::{Request, Response};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::buffer::{Buffer, BufferLayer};
use tower::{BoxError, Service};

pub use deadline::{Deadline, DeadlineElapsed, DeadlineLayer};
pub use observe::{Observe, ObserveLayer};
pub use ratelimit::{RateLimit, RateLimitLayer};
pub use request::{RequestKind, RequestOutcome, Verb};

#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("kubernetes.{key}: {message}")]
    Settings { key: &'static str, message: String },
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {} is not usable: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found (pass --kubeconfig PATH or set KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("not an API server URL {url:?}: {source}")]
    Url {
        url: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("cannot build a Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// What the layers need: the `[kubernetes]` settings minus the kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLimits {
    /// Deadline for the response headers of each request.
    pub request_timeout: Duration,
    /// Sustained requests per second (watches excluded).
    pub qps: f64,
    /// Requests allowed back to back before `qps` applies.
    pub burst: u32,
}

impl Default for ClientLimits {
    /// 10 s like the actuator's per-request timeout; 100 qps / 200 burst: Flagger raised its
    /// defaults to 100/250 after stalling at client-go's 5/10 (flagger#638), and 20 rollbacks at
    /// once (the fleet incident) must fit in a few seconds, not queue for a minute.
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            qps: 100.0,
            burst: 200,
        }
    }
}

/// Requests the inner buffer holds while they wait for the service below (kube's own buffer in
/// front of the stack has the same size).
const BUFFER: usize = 1024;

/// The stack [`layers`] builds over a service whose responses have body `RB`: the rate limiter,
/// then a buffer (the limiter waits inside the request's future, so it needs a cloneable service
/// below), then [`Observe`] and [`Deadline`] around the original service.
pub type Layered<RB> =
    RateLimit<Buffer<Request<Body>, BoxFuture<'static, Result<Response<RB>, BoxError>>>>;

/// Adds the deadline, metrics and rate-limit layers to `builder`. Generic over the inner service
/// so tests can put them around an in-process simulator on paused time. Needs a tokio runtime
/// (the buffer spawns its worker).
pub fn layers<S, RB>(
    builder: ClientBuilder<S>,
    limits: &ClientLimits,
    metrics: &Metrics,
) -> Result<ClientBuilder<Layered<RB>>, KubeClientError>
where
    S: Service<Request<Body>, Response = Response<RB>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    let limiter = RateLimitLayer::new(limits.qps, limits.burst)?;
    if limits.request_timeout.is_zero() {
        return Err(KubeClientError::Settings {
            key: "request_timeout",
            message: "must be longer than zero".into(),
        });
    }
    Ok(builder
        .with_layer(&DeadlineLayer::new(limits.request_timeout))
        .with_layer(&ObserveLayer::new(metrics))
        .with_layer(&BufferLayer::new(BUFFER))
        .with_layer(&limiter))
}

/// A client for `config` with kube's default stack and [`layers`]. Needs a tokio runtime (kube's
/// client spawns its request buffer).
///
/// kube's own retry layer is turned off (`default_retry`): it sits below ours, so its up to 15
/// retries of 429/503/504 would bypass the rate limiter, be invisible to the metrics, run out
/// the deadline and then be multiplied by the actuator's step retries.
pub fn build(
    mut config: kube::Config,
    limits: &ClientLimits,
    metrics: &Metrics,
) -> Result<kube::Client, KubeClientError> {
    config.default_retry = false;
    let builder = ClientBuilder::try_from(config)?;
    Ok(layers(builder, limits, metrics)?.build())
}

/// A client for the API server at `url` without credentials (the simulator, tests).
pub fn for_url(
    url: &str,
    limits: &ClientLimits,
    metrics: &Metrics,
) -> Result<kube::Client, KubeClientError> {
    let uri = url.parse().map_err(|source| KubeClientError::Url {
        url: url.to_string(),
        source,
    })?;
    build(kube::Config::new(uri), limits, metrics)
}

/// The configuration from `kubeconfig` when given, else inferred (in-cluster, then `$KUBECONFIG`
/// or `~/.kube/config`).
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeClientError> {
    match kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|source| KubeClientError::ReadKubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeClientError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })
        }
        None => Ok(kube::Config::infer().await?),
    }
}

/// [`load_config`] then [`build`]: what `backout run` and `backout rollback` call.
pub async fn connect(
    kubeconfig: Option<&Path>,
    limits: &ClientLimits,
    metrics: &Metrics,
) -> Result<kube::Client, KubeClientError> {
    build(load_config(kubeconfig).await?, limits, metrics)
}
