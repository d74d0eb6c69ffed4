//! The Prometheus adapter: prometheus-http-query on a reqwest client we configure ourselves.
//!
//! prometheus-http-query's default client has no HTTP timeout at all, so a hung Prometheus (or a
//! proxy holding the connection) would stall the control loop forever. We build the reqwest
//! client with connect and total timeouts, optional extra CA, and hand it to the crate; auth
//! headers are added per request so rotated credentials take effect without a restart.

use super::auth::Credentials;
use super::config::PrometheusConfig;
use super::{answer, mapping, MetricSource, Range, RangeSeries, Series, SourceError};
use super::{SplitLabels, SplitSeries};
use crate::sample::Millis;
use futures::future::BoxFuture;
use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::AUTHORIZATION;
use std::num::NonZeroU32;
use std::time::Duration;

/// A [`MetricSource`] backed by a Prometheus HTTP API.
pub struct PrometheusSource {
    client: prometheus_http_query::Client,
    limiter: DefaultDirectRateLimiter,
    credentials: Option<Credentials>,
    /// Sent to Prometheus with each query as its evaluation limit.
    server_timeout: Duration,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.client.base_url().as_str())
            .field("server_timeout", &self.server_timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Builds the client. Fails only on configuration mistakes (bad URL, unreadable CA file).
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, SourceError> {
        cfg.validate()?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.http_timeout)
            .connect_timeout(cfg.connect_timeout);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| SourceError::Config {
                detail: format!(
                    "cannot read prometheus.ca_file {:?}: {e}; check the path and the mount",
                    ca.display().to_string()
                ),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SourceError::Config {
                    detail: format!(
                        "prometheus.ca_file {:?} is not a PEM certificate bundle: {e}",
                        ca.display().to_string()
                    ),
                })?;
            if certs.is_empty() {
                return Err(SourceError::Config {
                    detail: format!(
                        "prometheus.ca_file {:?} contains no PEM certificate \
                         (expected -----BEGIN CERTIFICATE----- blocks)",
                        ca.display().to_string()
                    ),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| SourceError::Config {
            detail: format!("cannot build the HTTP client for Prometheus: {e}"),
        })?;
        let client = prometheus_http_query::Client::from(http, &cfg.url)
            .map_err(|e| mapping::classify(&e))?;
        Ok(Self {
            client,
            limiter: RateLimiter::direct(quota(cfg)),
            credentials: Credentials::from_config(cfg),
            server_timeout: cfg.query_timeout.min(cfg.http_timeout.mul_f64(0.9)),
        })
    }

    /// Checks that Prometheus answers queries with our credentials (for the daemon's readiness
    /// probe). Uses the query API rather than `/-/ready` so auth, TLS and proxies are exercised
    /// exactly as the real queries will be.
    pub async fn probe(&self) -> Result<(), SourceError> {
        self.instant_query("vector(1)", None).await.map(|_| ())
    }

    async fn auth_header(&self) -> Result<Option<reqwest::header::HeaderValue>, SourceError> {
        match &self.credentials {
            Some(c) => c.header().await.map(Some),
            None => Ok(None),
        }
    }

    /// Prometheus's own evaluation timeout: `query_timeout`, but at most 90% of `http_timeout`
    /// so the server gives up first and says why instead of the request being cut off.
    fn server_timeout_ms(&self) -> i64 {
        i64::try_from(self.server_timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// An instant query ready to send, after the rate limiter let it go.
    async fn instant_request(
        &self,
        promql: &str,
        at: Option<Millis>,
    ) -> Result<prometheus_http_query::InstantQueryBuilder, SourceError> {
        self.limiter.until_ready().await;
        let mut q = self.client.query(promql).timeout(self.server_timeout_ms());
        if let Some(at) = at {
            q = q.query("time", format!("{:.3}", at as f64 / 1000.0));
        }
        if let Some(h) = self.auth_header().await? {
            q = q.header(AUTHORIZATION, h);
        }
        Ok(q)
    }

    async fn instant_query(
        &self,
        promql: &str,
        at: Option<Millis>,
    ) -> Result<Vec<Series>, SourceError> {
        let q = self.instant_request(promql, at).await?;
        let res = q.post().await.map_err(|e| mapping::classify(&e))?;
        mapping::into_instant_series(res.into_inner().0)
    }

    /// The body read as raw bytes and parsed by [`answer::parse_split`]; transport and media-type
    /// failures are classified as the client crate's parse would have them.
    async fn split_query(
        &self,
        promql: &str,
        at: Option<Millis>,
        by: &SplitLabels,
    ) -> Result<Vec<SplitSeries>, SourceError> {
        let q = self.instant_request(promql, at).await?;
        let res = q.post_raw().await.map_err(|e| mapping::classify(&e))?;
        if !is_json(res.headers().get(reqwest::header::CONTENT_TYPE)) {
            const WHAT: &str = "failed to parse response from server due to invalid media type";
            return Err(match res.error_for_status() {
                Err(e) => mapping::classify_reqwest(&e, WHAT),
                Ok(_) => SourceError::Parse {
                    detail: WHAT.to_string(),
                },
            });
        }
        let body = res.bytes().await.map_err(|e| {
            mapping::classify_reqwest(&e, "failed to read the response from server")
        })?;
        answer::parse_split(&body, by)
    }

    async fn range_query(
        &self,
        promql: &str,
        range: Range,
    ) -> Result<Vec<RangeSeries>, SourceError> {
        if range.step.is_zero() || range.end < range.start {
            return Err(SourceError::Config {
                detail: format!(
                    "range query needs start <= end and a positive step (got {}..{} step {:?})",
                    range.start, range.end, range.step
                ),
            });
        }
        self.limiter.until_ready().await;
        let mut q = self
            .client
            .query_range(
                promql,
                mapping::millis_to_seconds(range.start),
                mapping::millis_to_seconds(range.end),
                range.step.as_secs_f64(),
            )
            .timeout(self.server_timeout_ms());
        if let Some(h) = self.auth_header().await? {
            q = q.header(AUTHORIZATION, h);
        }
        let res = q.post().await.map_err(|e| mapping::classify(&e))?;
        mapping::range_series(res.data())
    }
}

impl MetricSource for PrometheusSource {
    fn instant<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
    ) -> BoxFuture<'a, Result<Vec<Series>, SourceError>> {
        self.instant_query(promql, at).boxed()
    }

    fn range<'a>(
        &'a self,
        promql: &'a str,
        range: Range,
    ) -> BoxFuture<'a, Result<Vec<RangeSeries>, SourceError>> {
        self.range_query(promql, range).boxed()
    }

    fn instant_split<'a>(
        &'a self,
        promql: &'a str,
        at: Option<Millis>,
        by: &'a SplitLabels,
    ) -> BoxFuture<'a, Result<Vec<SplitSeries>, SourceError>> {
        self.split_query(promql, at, by).boxed()
    }
}

/// `application/json`, with or without parameters (what the client crate accepts).
fn is_json(content_type: Option<&reqwest::header::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `cfg.rate_limit` queries per second (fractions honoured: 0.5 is one query every 2 s), with
/// [`PrometheusConfig::burst_or_default`] back to back. Expects a validated config.
fn quota(cfg: &PrometheusConfig) -> Quota {
    let burst = NonZeroU32::new(cfg.burst_or_default()).unwrap_or(NonZeroU32::MIN);
    // Out-of-range rates (validation rejects them) fall back to the safe extreme: a rate too high
    // for a nanosecond period is unlimited, and anything else unusable is one query a year.
    const SLOWEST: Duration = Duration::from_secs(365 * 86_400);
    let period = Duration::try_from_secs_f64(1.0 / cfg.rate_limit)
        .unwrap_or(SLOWEST)
        .min(SLOWEST);
    let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
    quota.allow_burst(burst)
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
