//! How to reach Prometheus: URL, timeouts, rate limit, credentials, TLS.
//!
//! Defaults are chosen so a misbehaving Prometheus can never stall the control loop: every
//! request has a connect and a total timeout (prometheus-http-query's own `timeout` is only the
//! server-side evaluation limit), and the query rate is capped so hundreds of services cannot
//! flood a shared Prometheus.

use super::SourceError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The `[prometheus]` section of the daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090` (a path prefix is kept).
    pub url: String,
    /// Total time for one query, connect included. A query that takes longer is an
    /// `Observation::Error("timeout")`, never a stalled cycle.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time to establish the TCP/TLS connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Global cap on queries per second across all services; excess queries wait, they do not fail.
    pub queries_per_second: u32,
    /// Queries allowed back to back before the cap applies (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// PEM file with extra CA certificates to trust (e.g. an in-cluster CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            queries_per_second: 50,
            burst: None,
            auth: None,
            ca_file: None,
        }
    }
}

impl PrometheusConfig {
    /// A config for `url` with the defaults, for tests and the demo.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Rejects values that would disable a safety net, naming the key and the fix.
    pub fn validate(&self) -> Result<(), SourceError> {
        let bad = |detail: String| Err(SourceError::Config { detail });
        if self.queries_per_second == 0 {
            return bad(
                "prometheus.queries_per_second is 0, which would block every query; \
                        set it to a positive number (default 50)"
                    .into(),
            );
        }
        if self.burst == Some(0) {
            return bad("prometheus.burst is 0; remove it or set it to a positive number".into());
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad(
                "prometheus.timeout and prometheus.connect_timeout must be positive \
                        (e.g. \"5s\" and \"2s\"); a zero timeout would fail every query"
                    .into(),
            );
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!(
                "prometheus.url = {:?} is not an http(s) URL; set it to e.g. http://prometheus:9090",
                self.url
            ));
        }
        Ok(())
    }
}

/// Credentials, always read from files so Kubernetes secrets and projected service-account
/// tokens can rotate without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <contents of token_file>`; re-read whenever the file changes.
    Bearer { token_file: PathBuf },
    /// HTTP basic auth; the password is read from `password_file` (re-read when it changes).
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_rate_names_the_key() {
        assert!(PrometheusConfig::default().validate().is_ok());
        let cfg = PrometheusConfig {
            queries_per_second: 0,
            ..PrometheusConfig::default()
        };
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("prometheus.queries_per_second"), "{msg}");
    }

    #[test]
    fn parses_from_toml_with_humantime_and_auth() {
        let cfg: PrometheusConfig = toml::from_str(
            r#"
            url = "https://prom:9090"
            timeout = "3s"
            auth = { type = "bearer", token_file = "/var/run/secrets/token" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            cfg.auth,
            Some(AuthConfig::Bearer {
                token_file: "/var/run/secrets/token".into()
            })
        );
        let typo = toml::from_str::<PrometheusConfig>("timout = \"3s\"");
        assert!(typo.is_err());
    }
}
