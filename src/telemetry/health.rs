//! Readiness as the conjunction of what the daemon needs to decide and act.
//!
//! Kubernetes routes nothing to backout, but operators and the leader-election shell read
//! `/readyz`: "ready" must mean the daemon could actually roll a canary back right now.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
struct Flags {
    policies_loaded: AtomicBool,
    prometheus_reachable: AtomicBool,
    kubernetes_reachable: AtomicBool,
    shutting_down: AtomicBool,
    /// `standalone`, `leader`, `standby` or `shards:N/S` (see `ha::Ownership::role`).
    role: std::sync::Mutex<String>,
}

/// Shared readiness flags, set by the control loop and read by `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Flags>);

/// What `/readyz` reports, so an operator sees which dependency is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub policies_loaded: bool,
    pub prometheus_reachable: bool,
    pub kubernetes_reachable: bool,
    pub shutting_down: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.policies_loaded
            && self.prometheus_reachable
            && self.kubernetes_reachable
            && !self.shutting_down
    }
}

impl Health {
    pub fn set_policies_loaded(&self, v: bool) {
        self.0.policies_loaded.store(v, Ordering::SeqCst);
    }
    pub fn set_prometheus_reachable(&self, v: bool) {
        self.0.prometheus_reachable.store(v, Ordering::SeqCst);
    }
    pub fn set_kubernetes_reachable(&self, v: bool) {
        self.0.kubernetes_reachable.store(v, Ordering::SeqCst);
    }
    pub fn set_shutting_down(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }
    pub fn set_role(&self, role: &str) {
        if let Ok(mut r) = self.0.role.lock() {
            role.clone_into(&mut r);
        }
    }
    pub fn role(&self) -> String {
        self.0.role.lock().map(|r| r.clone()).unwrap_or_default()
    }
    pub fn readiness(&self) -> Readiness {
        Readiness {
            policies_loaded: self.0.policies_loaded.load(Ordering::SeqCst),
            prometheus_reachable: self.0.prometheus_reachable.load(Ordering::SeqCst),
            kubernetes_reachable: self.0.kubernetes_reachable.load(Ordering::SeqCst),
            shutting_down: self.0.shutting_down.load(Ordering::SeqCst),
        }
    }
}
