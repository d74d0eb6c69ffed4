//! How to reach Prometheus: the `[prometheus]` section of the daemon settings, and the one
//! configuration [`PrometheusSource`](super::PrometheusSource) is built from.
//!
//! Defaults are chosen so a misbehaving Prometheus can never stall the control loop: every
//! request has a connect and a total timeout (prometheus-http-query's own `timeout` is only the
//! server-side evaluation limit, and its default client has no HTTP timeout at all), and the query
//! rate is capped so hundreds of services cannot flood a shared Prometheus.

use super::SourceError;
use crate::diagnostic::schema::{Field, Shape};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The `[prometheus]` section of the daemon settings (`config/backout.toml`); also built in code
/// with [`PrometheusConfig::for_url`] by the demo, the backtest without `--config`, and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090` (a path prefix is kept).
    pub url: String,
    /// Whole-request HTTP timeout, connect included (the client has none by default; a hung
    /// Prometheus or proxy must not stall every service's analysis). A query that takes longer is
    /// an `Observation::Error("timeout")`, never a stalled cycle.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Server-side PromQL evaluation timeout, sent with each query; shorter than `http_timeout`
    /// so Prometheus gives up first and says why. Never sent above 90% of `http_timeout`.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Time to establish the TCP/TLS connection, so an unreachable Prometheus fails fast instead
    /// of using up the whole `http_timeout`; `http_timeout` still caps it.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Queries per second sent to Prometheus, across all services; excess queries wait for their
    /// slot, they do not fail (a cycle is slower but complete).
    pub rate_limit: f64,
    /// Queries allowed back to back before `rate_limit` applies (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Bearer token file (e.g. a projected service-account token). Credentials are always read
    /// from files, re-read when they change, so rotated secrets work without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic-auth user name; the password is read from `basic_auth_password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM bundle) for a Prometheus behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The keys of [`PrometheusConfig`], for the settings file's schema check (which reports every
/// mistake with its line before serde runs). Keep in step with the struct's fields.
pub const FIELDS: &[Field] = &[
    Field::opt("url", Shape::Str),
    Field::opt("http_timeout", Shape::Duration),
    Field::opt("query_timeout", Shape::Duration),
    Field::opt("connect_timeout", Shape::Duration),
    Field::opt("rate_limit", Shape::Float),
    Field::opt("burst", Shape::Count),
    Field::opt("bearer_token_file", Shape::Str),
    Field::opt("basic_auth_user", Shape::Str),
    Field::opt("basic_auth_password_file", Shape::Str),
    Field::opt("ca_file", Shape::Str),
];

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            url: "http://localhost:9090".into(),
            http_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            rate_limit: 20.0,
            burst: None,
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            ca_file: None,
        }
    }
}

/// One mistake in a [`PrometheusConfig`]: the key inside `[prometheus]`, what is wrong, the fix.
/// The settings loader turns it into a problem naming the file and line (or the variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: &'static str,
    pub message: String,
    pub hint: &'static str,
}

impl PrometheusConfig {
    /// A config for `url` with the defaults, for tests, the demo and the backtest.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Every value that is unusable or would disable a safety net, each with its key and fix.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |key: &'static str, message: String, hint: &'static str| {
            out.push(ConfigIssue { key, message, hint });
        };
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => bad(
                "url",
                format!("unsupported scheme `{}`", u.scheme()),
                "use an http:// or https:// URL",
            ),
            Err(e) => bad(
                "url",
                format!("not a URL ({e}): {:?}", self.url),
                "write e.g. \"http://prometheus.monitoring:9090\"",
            ),
        }
        for (key, d) in [
            ("http_timeout", self.http_timeout),
            ("query_timeout", self.query_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                bad(
                    key,
                    "must be longer than zero (a zero timeout would fail every query)".into(),
                    "use a duration such as \"10s\"",
                );
            }
        }
        if self.query_timeout > self.http_timeout {
            bad(
                "query_timeout",
                "query_timeout is longer than http_timeout, so the HTTP request gives up first"
                    .into(),
                "make query_timeout shorter than http_timeout",
            );
        }
        if !(self.rate_limit.is_finite() && self.rate_limit > 0.0) {
            bad(
                "rate_limit",
                format!(
                    "rate_limit must be a positive number of queries/s, got {}",
                    self.rate_limit
                ),
                "e.g. rate_limit = 20",
            );
        }
        if self.burst == Some(0) {
            bad(
                "burst",
                "burst is 0, which would block every query".into(),
                "remove it (default: one second's worth of rate_limit) or set a positive number",
            );
        }
        if self.basic_auth_user.is_some() != self.basic_auth_password_file.is_some() {
            let key = if self.basic_auth_user.is_some() {
                "basic_auth_user"
            } else {
                "basic_auth_password_file"
            };
            bad(
                key,
                "basic auth needs both basic_auth_user and basic_auth_password_file".into(),
                "set both, or neither",
            );
        }
        if self.bearer_token_file.is_some() && self.basic_auth_user.is_some() {
            bad(
                "bearer_token_file",
                "both a bearer token and basic auth are set".into(),
                "Prometheus accepts one Authorization header: keep one",
            );
        }
        out
    }

    /// [`issues`](Self::issues) as one error, for configs built in code (the settings loader
    /// reports them itself, with the file and line).
    pub fn validate(&self) -> Result<(), SourceError> {
        let issues = self.issues();
        if issues.is_empty() {
            return Ok(());
        }
        let detail = issues
            .iter()
            .map(|i| format!("prometheus.{}: {}; fix: {}", i.key, i.message, i.hint))
            .collect::<Vec<_>>()
            .join("\n");
        Err(SourceError::Config { detail })
    }

    /// Queries allowed back to back: `burst`, else one second's worth of `rate_limit` (at least 1).
    pub fn burst_or_default(&self) -> u32 {
        // `as` saturates: a huge rate gives u32::MAX, NaN gives 0, lifted to 1.
        self.burst
            .unwrap_or_else(|| self.rate_limit.ceil() as u32)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cfg: &PrometheusConfig) -> Vec<&'static str> {
        cfg.issues().iter().map(|i| i.key).collect()
    }

    #[test]
    fn defaults_validate_and_zero_values_name_the_key() {
        assert!(PrometheusConfig::default().validate().is_ok());
        let cfg = PrometheusConfig {
            rate_limit: 0.0,
            burst: Some(0),
            connect_timeout: Duration::ZERO,
            ..PrometheusConfig::default()
        };
        assert_eq!(keys(&cfg), ["connect_timeout", "rate_limit", "burst"]);
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("prometheus.rate_limit"), "{msg}");
        assert!(msg.contains("fix: "), "{msg}");
    }

    #[test]
    fn auth_must_be_one_complete_method() {
        let half = PrometheusConfig {
            basic_auth_password_file: Some("/pw".into()),
            ..PrometheusConfig::default()
        };
        assert_eq!(keys(&half), ["basic_auth_password_file"]);
        let both = PrometheusConfig {
            bearer_token_file: Some("/t".into()),
            basic_auth_user: Some("u".into()),
            basic_auth_password_file: Some("/pw".into()),
            ..PrometheusConfig::default()
        };
        assert_eq!(keys(&both), ["bearer_token_file"]);
    }

    #[test]
    fn burst_defaults_to_one_seconds_worth() {
        let at = |rate_limit: f64, burst: Option<u32>| {
            PrometheusConfig {
                rate_limit,
                burst,
                ..PrometheusConfig::default()
            }
            .burst_or_default()
        };
        assert_eq!(at(20.0, None), 20);
        assert_eq!(at(2.5, None), 3);
        assert_eq!(at(0.5, None), 1);
        assert_eq!(at(20.0, Some(4)), 4);
    }

    #[test]
    fn parses_the_settings_keys_with_humantime() {
        let cfg: PrometheusConfig = toml::from_str(
            r#"
            url = "https://prom:9090"
            http_timeout = "3s"
            rate_limit = 2.5
            bearer_token_file = "/var/run/secrets/token"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.http_timeout, Duration::from_secs(3));
        assert_eq!(cfg.query_timeout, Duration::from_secs(5), "default kept");
        assert_eq!(cfg.rate_limit, 2.5);
        assert_eq!(
            cfg.bearer_token_file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/token"))
        );
        let typo = toml::from_str::<PrometheusConfig>("http_timout = \"3s\"");
        assert!(typo.is_err());
    }
}
