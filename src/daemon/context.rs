//! What a cycle needs from the outside world, and one way to assemble it.
//!
//! `backout run`, the demo, the tests and the benches all build a [`Context`]; with the builder
//! they name only what differs (the client, where metrics come from, the actuator, the audit
//! trail, and whatever they watch or fake) and share the rest, so a new field gets one default
//! instead of five hand-written copies.

use super::Sampler;
use crate::actuator::Actuator;
use crate::audit::AuditSink;
use crate::clock::{Clock, SystemClock};
use crate::notify::{LogNotifier, Notifier};
use crate::status::StatusBoard;
use crate::telemetry::{Health, Metrics};
use std::sync::Arc;

/// Everything a cycle needs from the outside world.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub sampler: Arc<dyn Sampler>,
    pub actuator: Arc<Actuator>,
    pub audit: Arc<dyn AuditSink>,
    pub notifier: Arc<dyn Notifier>,
    pub metrics: Metrics,
    pub health: Health,
    pub clock: Arc<dyn Clock>,
    pub dry_run: bool,
    /// What each service looks like now (the status API and the web page read it).
    pub status: StatusBoard,
    /// Versions completed rollbacks took out (`None`: not remembered).
    pub bad_versions: Option<super::bad_versions::BadVersions>,
}

impl Context {
    /// A context from what has no sensible default: the Kubernetes client, the sampler, the
    /// actuator and the audit trail (a daemon that loses its audit trail must not be the
    /// default). The rest starts as production has it: notices to the log, fresh metrics and
    /// health, the system clock, not a dry run.
    pub fn builder(
        client: kube::Client,
        sampler: Arc<dyn Sampler>,
        actuator: Arc<Actuator>,
        audit: Arc<dyn AuditSink>,
    ) -> ContextBuilder {
        ContextBuilder(Context {
            client,
            sampler,
            actuator,
            audit,
            notifier: Arc::new(LogNotifier),
            metrics: Metrics::new(),
            health: Health::default(),
            clock: Arc::new(SystemClock),
            dry_run: false,
            status: StatusBoard::default(),
            bad_versions: None,
        })
    }
}

/// Sets what differs from the defaults of [`Context::builder`].
#[must_use]
pub struct ContextBuilder(Context);

impl ContextBuilder {
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.0.notifier = notifier;
        self
    }

    /// Metrics shared with whoever serves or reads them (`/metrics`, a test).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.0.metrics = metrics;
        self
    }

    /// Health shared with whoever serves or reads it (`/readyz`, a test).
    pub fn health(mut self, health: Health) -> Self {
        self.0.health = health;
        self
    }

    /// The clock; give the actuator the same one.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.0.clock = clock;
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.0.dry_run = dry_run;
        self
    }

    /// The status board shared with whoever serves it (the admin server, a test).
    pub fn status(mut self, status: StatusBoard) -> Self {
        self.0.status = status;
        self
    }

    /// Remembers bad versions in a ConfigMap of `namespace` (backout's own).
    pub fn bad_versions(mut self, namespace: &str) -> Self {
        self.0.bad_versions = Some(super::bad_versions::BadVersions::new(
            self.0.client.clone(),
            namespace,
        ));
        self
    }

    pub fn build(self) -> Context {
        self.0
    }
}
