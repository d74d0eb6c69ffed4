//! The `[kubernetes]` section: where the cluster is and how hard backout may call it.

use crate::diagnostic::schema::{Field, Shape};
use crate::kubeclient::ClientLimits;
use crate::source::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// Kubeconfig file; unset means in-cluster config, then `$KUBECONFIG` / `~/.kube/config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Deadline for the response headers of every API request (a watch stream is not cut), so a
    /// hung API server or proxy fails a call instead of stalling an evaluation cycle.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests per second to the API server, across all services; excess requests wait for
    /// their turn, they do not fail. Watches do not count.
    pub qps: f64,
    /// Requests allowed back to back before `qps` applies.
    pub burst: u32,
}

/// The keys of [`Kubernetes`], for the settings file's schema check.
pub const FIELDS: &[Field] = &[
    Field::opt("kubeconfig", Shape::Str),
    Field::opt("request_timeout", Shape::Duration),
    Field::opt("qps", Shape::Float),
    Field::opt("burst", Shape::Count),
];

impl Default for Kubernetes {
    fn default() -> Self {
        let limits = ClientLimits::default();
        Self {
            kubeconfig: None,
            request_timeout: limits.request_timeout,
            qps: limits.qps,
            burst: limits.burst,
        }
    }
}

impl Kubernetes {
    /// What the client's layers are built from.
    pub fn limits(&self) -> ClientLimits {
        ClientLimits {
            request_timeout: self.request_timeout,
            qps: self.qps,
            burst: self.burst,
        }
    }

    /// Every value the client could not be built with, each with its key (inside
    /// `[kubernetes]`) and fix.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |key: &'static str, message: String, hint: &'static str| {
            out.push(ConfigIssue { key, message, hint });
        };
        if self.request_timeout.is_zero() {
            bad(
                "request_timeout",
                "must be longer than zero (a zero deadline would fail every request)".into(),
                "use a duration such as \"10s\"",
            );
        }
        // Below one request in ~30 years the period does not fit a Duration; no one means that.
        if !(self.qps.is_finite() && self.qps >= 1e-9) {
            bad(
                "qps",
                format!(
                    "qps must be a positive number of requests/s (at least 1e-9), got {}",
                    self.qps
                ),
                "e.g. qps = 100",
            );
        }
        if self.burst == 0 {
            bad(
                "burst",
                "burst is 0, which would block every request".into(),
                "set a positive number, e.g. burst = 200 (default)",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_client_defaults() {
        let k = Kubernetes::default();
        assert!(k.issues().is_empty());
        assert_eq!(k.limits(), ClientLimits::default());
    }

    #[test]
    fn zero_and_negative_values_are_named_by_key() {
        let k = Kubernetes {
            request_timeout: Duration::ZERO,
            qps: -1.0,
            burst: 0,
            ..Kubernetes::default()
        };
        let keys: Vec<_> = k.issues().iter().map(|i| i.key).collect();
        assert_eq!(keys, ["request_timeout", "qps", "burst"]);
        let nan = Kubernetes {
            qps: f64::NAN,
            ..Kubernetes::default()
        };
        assert_eq!(nan.issues()[0].key, "qps");
    }

    #[test]
    fn every_valid_setting_builds_a_limiter() {
        for qps in [1e-9, 0.5, 100.0, 1e12] {
            let k = Kubernetes {
                qps,
                burst: 1,
                ..Kubernetes::default()
            };
            assert!(k.issues().is_empty(), "{qps}");
            assert!(
                crate::kubeclient::RateLimitLayer::new(k.qps, k.burst).is_ok(),
                "{qps}"
            );
        }
    }
}
