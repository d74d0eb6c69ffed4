//! The Prometheus adapter: prometheus-http-query on a reqwest client we configure ourselves.
//!
//! prometheus-http-query's default client has no HTTP timeout at all, so a hung Prometheus (or a
//! proxy holding the connection) would stall the control loop forever. We build the reqwest
//! client with connect and total timeouts, optional extra CA, and hand it to the crate; auth
//! headers are added per request so rotated credentials take effect without a restart.

use super::auth::Credentials;
use super::config::PrometheusConfig;
use super::{mapping, MetricSource, Range, RangeSeries, Series, SourceError};
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
    timeout: Duration,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.client.base_url().as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Builds the client. Fails only on configuration mistakes (bad URL, unreadable CA file).
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, SourceError> {
        cfg.validate()?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
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
        let rate = NonZeroU32::new(cfg.queries_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = cfg.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Ok(Self {
            client,
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            credentials: cfg.auth.as_ref().map(Credentials::new),
            timeout: cfg.timeout,
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

    /// Prometheus's own evaluation timeout, set just under ours so it gives up first and says so.
    fn server_timeout_ms(&self) -> i64 {
        let ms = self.timeout.as_millis() as i64;
        (ms - ms / 10).max(1)
    }

    async fn instant_query(
        &self,
        promql: &str,
        at: Option<Millis>,
    ) -> Result<Vec<Series>, SourceError> {
        self.limiter.until_ready().await;
        let mut q = self.client.query(promql).timeout(self.server_timeout_ms());
        if let Some(at) = at {
            q = q.query("time", format!("{:.3}", at as f64 / 1000.0));
        }
        if let Some(h) = self.auth_header().await? {
            q = q.header(AUTHORIZATION, h);
        }
        let res = q.post().await.map_err(|e| mapping::classify(&e))?;
        mapping::instant_series(res.data())
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
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
