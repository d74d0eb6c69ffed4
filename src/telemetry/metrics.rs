//! backout's own metrics, exposed on `/metrics` in the Prometheus text format.
//!
//! Flagger and Argo Rollouts expose little more than a phase; on-call engineers asked for the query
//! results and thresholds behind a decision (flagger#1815, #1304). So every metric value the engine
//! judged, its level and every action step's latency are exported here.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use super::judged::{Bound, Cursor, Judged, MetricRow, Row, Valued};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Shared strings in the label sets of per-service series: a fleet has 10,000 services
    /// with about 20 series each, and each set held its own copies (issue 10).
    pub service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    pub service: String,
    pub reason: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

/// `backout_notifications_total`: `outcome` is `sent`, `failed` (retries spent) or `dropped`
/// (queue full, or a channel that is not configured).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub channel: String,
    pub outcome: String,
}

/// `backout_recoveries_total`: `outcome` is `recovered` or `not_recovered`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    pub service: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: Outcome,
}

/// Outcome label values, kept to a closed set so dashboards can rely on them.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    success,
    failure,
    dry_run,
}

/// Numeric codes of verdict states for the `backout_service_state` gauge (documented in
/// docs/telemetry.md; stable across releases so alerts can use them).
pub mod state_code {
    pub const HEALTHY: i64 = 0;
    pub const WARNING: i64 = 1;
    pub const CRITICAL: i64 = 2;
    pub const INCONCLUSIVE: i64 = 3;
    pub const ROLLED_BACK: i64 = 4;
    /// A level breached on both tracks, the canary not worse (a shared cause, held).
    pub const SHARED: i64 = 5;
}

/// All of backout's own series. Cheap to clone (every family is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Per service: the state, evaluations, each metric's values, level and its warning and
    /// critical levels (so dashboards draw values against them), one compact row each.
    pub judged: Arc<Judged>,
    /// Observations the engine rejected (an input its policy's rules do not know): a bug between
    /// feeds and rules, never silently dropped.
    pub engine_errors: Family<ServiceLabels, Counter>,
    pub query_duration: Histogram,
    pub query_errors: Family<ReasonLabels, Counter>,
    pub queries: Counter,
    pub rollbacks: Family<RollbackLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub detection_to_mitigation: Histogram,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub policies_loaded: Gauge,
    /// 1 while `/readyz` would answer 200 (set at each scrape), so alerts see readiness.
    pub ready: Gauge,
    pub deployment_watch_synced: Family<NamespaceLabels, Gauge>,
    pub evaluation_lag: Histogram,
    /// The lag minus the wait for the phase's Prometheus answer: whether the daemon or
    /// Prometheus makes evaluations late.
    pub evaluation_lag_own: Histogram,
    /// Evaluations not started because the service's previous fetch was still running (the
    /// phase moves to its next slot; at most one fetch per service is in flight).
    pub evaluations_skipped: Counter,
    pub leases_held: Gauge,
    pub rollbacks_held: Family<ServiceLabels, Counter>,
    /// Shared-cause episodes (a canary breach the stable shares, the canary not worse).
    pub shared: Family<ServiceLabels, Counter>,
    pub lease_transitions: Counter,
    pub policy_reload_duration: Gauge<f64, AtomicU64>,
    /// Kubernetes API requests by verb, resource and outcome (`crate::kubeclient::observe`).
    pub kubernetes_requests: Family<crate::kubeclient::request::RequestOutcomeLabels, Counter>,
    /// Kubernetes API latency to the response headers, by verb and resource.
    pub kubernetes_request_duration: Family<crate::kubeclient::request::RequestLabels, Histogram>,
    /// Notification deliveries by channel and final outcome (`crate::notify::dispatch`).
    pub notifications: Family<NotificationLabels, Counter>,
    /// Recovery verified on the metrics after a rollback, or not within `restore_within`.
    pub recoveries: Family<RecoveryLabels, Counter>,
    /// The last incident's RTO per service (first bad evidence -> recovery verified).
    pub rto_seconds: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    /// The policy's `rto` target, for alerts comparing the two.
    pub rto_target_seconds: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    /// Escalations started, by reason: `rollback_failed`, `not_recovered`, `worse_after_rollback`.
    pub escalations: Family<ReasonLabels, Counter>,
}

/// Up to the default 10 s request deadline and beyond, for a raised `request_timeout`.
fn kubernetes_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

fn step_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("backout");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            judged: Arc::default(),
            engine_errors: Family::default(),
            query_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            query_errors: Family::default(),
            queries: Counter::default(),
            rollbacks: Family::default(),
            step_duration: Family::new_with_constructor(step_histogram),
            detection_to_mitigation: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            policy_reloads: Family::default(),
            policies_loaded: Gauge::default(),
            ready: Gauge::default(),
            deployment_watch_synced: Family::default(),
            evaluation_lag: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            evaluation_lag_own: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            evaluations_skipped: Counter::default(),
            policy_reload_duration: Gauge::default(),
            leases_held: Gauge::default(),
            rollbacks_held: Family::default(),
            shared: Family::default(),
            lease_transitions: Counter::default(),
            kubernetes_requests: Family::default(),
            kubernetes_request_duration: Family::new_with_constructor(kubernetes_histogram),
            notifications: Family::default(),
            recoveries: Family::default(),
            rto_seconds: Family::default(),
            rto_target_seconds: Family::default(),
            escalations: Family::default(),
        };
        m.register_evaluation(&mut registry);
        m.register_operation(&mut registry);
        m.register_response(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// The series about judging services: states, values, levels, evaluations, queries.
    fn register_evaluation(&self, registry: &mut Registry) {
        registry.register(
            "shared",
            "Shared-cause episodes per service: a canary level breached while the stable breaches it too and the canary is not worse (held, not rolled back)",
            self.shared.clone(),
        );
        registry.register(
            "evaluations_skipped",
            "Service evaluations skipped because the service's previous Prometheus fetch was still running",
            self.evaluations_skipped.clone(),
        );
        registry.register(
            "engine_errors",
            "Observations the decision engine rejected, per service (a feed its rules do not know)",
            self.engine_errors.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Prometheus query latency",
            self.query_duration.clone(),
        );
        registry.register(
            "query_errors",
            "Prometheus query failures by reason",
            self.query_errors.clone(),
        );
        registry.register("queries", "Prometheus queries sent", self.queries.clone());
    }

    /// The series about running the daemon: rollbacks, steps, reloads, watches, Kubernetes.
    fn register_operation(&self, registry: &mut Registry) {
        registry.register(
            "rollbacks",
            "Rollbacks by service, reason and outcome",
            self.rollbacks.clone(),
        );
        registry.register(
            "action_step_duration_seconds",
            "Latency of each rollback action step",
            self.step_duration.clone(),
        );
        registry.register(
            "detection_to_mitigation_seconds",
            "From the first breaching sample to traffic fully on stable and the canary at zero",
            self.detection_to_mitigation.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy (re)load attempts by result",
            self.policy_reloads.clone(),
        );
        registry.register(
            "policies_loaded",
            "Number of service policies currently active",
            self.policies_loaded.clone(),
        );
        registry.register(
            "ready",
            "1 while the daemon is ready (/readyz answers 200: policies loaded, Prometheus and Kubernetes reachable, not shutting down)",
            self.ready.clone(),
        );
        registry.register(
            "deployment_watch_synced",
            "1 while the namespace's Deployment watch is synced and read; 0 while cycles fall back to GETs",
            self.deployment_watch_synced.clone(),
        );
        registry.register(
            "evaluation_lag_seconds",
            "How late each service's evaluation finished against its scheduled slot",
            self.evaluation_lag.clone(),
        );
        registry.register(
            "evaluation_lag_own_seconds",
            "The evaluation lag minus the wait for Prometheus's answer: the daemon's own delay",
            self.evaluation_lag_own.clone(),
        );
        registry.register(
            "rollbacks_held",
            "Rollbacks the fleet guard held (too many in its window: likely a shared cause)",
            self.rollbacks_held.clone(),
        );
        registry.register(
            "leases_held",
            "Leases (leader or shards) this replica holds now",
            self.leases_held.clone(),
        );
        registry.register(
            "lease_transitions",
            "Leases this replica acquired (takeovers and first acquisitions)",
            self.lease_transitions.clone(),
        );
        registry.register(
            "policy_reload_duration_seconds",
            "Time of the last policy reload, from reading the files to the new set in force",
            self.policy_reload_duration.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "Kubernetes API requests by verb, resource (plural) and outcome (success, client_error, server_error, timeout, transport_error)",
            self.kubernetes_requests.clone(),
        );
        registry.register(
            "kubernetes_request_duration_seconds",
            "Kubernetes API latency until the response headers (for a watch: until it opened), by verb and resource",
            self.kubernetes_request_duration.clone(),
        );
    }

    /// The series about what follows a rollback: notifications.
    fn register_response(&self, registry: &mut Registry) {
        registry.register(
            "notifications",
            "Notification deliveries by channel and outcome (sent, failed after retries, dropped)",
            self.notifications.clone(),
        );
        registry.register(
            "recoveries",
            "Recoveries after a rollback, verified on the stable's metrics (recovered) or not within restore_within (not_recovered)",
            self.recoveries.clone(),
        );
        registry.register(
            "rto_seconds",
            "The last incident's recovery time per service: first bad evidence to recovery verified",
            self.rto_seconds.clone(),
        );
        registry.register(
            "rto_target_seconds",
            "The policy's rto target per service",
            self.rto_target_seconds.clone(),
        );
        registry.register(
            "escalations",
            "Escalations started, by reason (rollback_failed, not_recovered, worse_after_rollback)",
            self.escalations.clone(),
        );
    }

    /// The text exposition, as served on `/metrics`, in pieces of about [`CHUNK`] bytes, each
    /// written when it is asked for.
    ///
    /// Pieces, written as the client reads: at 10,000 services the text is about 20 MB; one
    /// `String` grown by doubling held up to 48 MB while it copied itself, and even the pieces
    /// written up front were 20 MB at once, at every scrape (issue 10). The registry's own
    /// series (a few KB) are written at the start; the per-service rows ([`Judged`]) a piece
    /// at a time, each under a short read lock, so a slow scraper holds no lock the daemon's
    /// evaluation needs.
    pub fn exposition(&self) -> Exposition {
        let mut head = String::new();
        // Writing into memory cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode_registry(&mut head, &self.registry).is_err() {
            head.clear();
        }
        Exposition {
            head: Some(head),
            judged: self.judged.clone(),
            cursor: Cursor::default(),
            eof: false,
        }
    }

    /// The text exposition in one string (tests, small registries).
    pub fn encode(&self) -> String {
        self.exposition().collect()
    }
}

/// The size of the pieces [`Metrics::exposition`] writes.
pub const CHUNK: usize = 256 * 1024;

/// The pieces of one scrape's text, written one by one ([`Metrics::exposition`]).
pub struct Exposition {
    head: Option<String>,
    judged: Arc<Judged>,
    cursor: Cursor,
    eof: bool,
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(head) = self.head.take().filter(|h| !h.is_empty()) {
            return Some(head);
        }
        while !self.cursor.done() {
            let mut piece = String::with_capacity(CHUNK + 4096);
            self.judged.write_text(&mut self.cursor, &mut piece, CHUNK);
            if !piece.is_empty() {
                return Some(piece);
            }
        }
        if self.eof {
            return None;
        }
        self.eof = true;
        Some("# EOF\n".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_sized_exposition_comes_in_pieces_that_add_up_to_every_series() {
        let m = Metrics::new();
        for i in 0..20_000 {
            m.judged.update(&format!("svc-{i:05}").into(), |r| {
                r.set_state(state_code::HEALTHY)
            });
        }
        let pieces: Vec<String> = m.exposition().collect();
        assert!(pieces.len() > 1, "one piece of {} bytes", pieces[0].len());
        // A piece ends after the row that filled it: at most one row over.
        assert!(pieces.iter().all(|p| p.len() <= CHUNK + 1024));
        assert!(pieces.iter().all(|p| p.ends_with('\n')), "no line split");
        let text = pieces.concat();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("backout_service_state{"))
                .count(),
            20_000
        );
        assert!(text.ends_with("# EOF\n"), "the exposition is whole");
        assert_eq!(text.matches("# TYPE backout_service_state ").count(), 1);
    }

    #[test]
    fn exposition_names_series_with_prefix_and_labels() {
        let m = Metrics::new();
        m.judged
            .update(&"web".into(), |r| r.set_state(state_code::CRITICAL));
        m.rollbacks
            .get_or_create(&RollbackLabels {
                service: "web".into(),
                reason: "error_rate".into(),
                outcome: Outcome::success,
            })
            .inc();
        m.query_duration.observe(0.02);
        let text = m.encode();
        assert!(
            text.contains("backout_service_state{service=\"web\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "backout_rollbacks_total{service=\"web\",reason=\"error_rate\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("backout_query_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
