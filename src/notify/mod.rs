//! Notifications: the incident start, resolution and escalation messages of runbooks 001 and 003,
//! sent by the daemon to named channels (Slack, Teams, PagerDuty, Alertmanager, webhooks).
//!
//! `Notice` is what happened; `template` turns it into the runbook's text; `channels` into each
//! channel's HTTP request (pure); `dispatch` delivers them from a queue per channel, retried with
//! backoff, so sending never blocks or fails a rollback. Every delivery is audited and counted.

pub mod channels;
pub mod config;
pub mod dispatch;
pub mod template;

pub use config::{Channel, ChannelKind, NotifyConfig, Templates};
pub use dispatch::Dispatcher;

use crate::audit::format_time;
use crate::sample::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("channel {channel:?}: {reason} (check [notify.channels.{channel}] in backout.toml)")]
    Channel { channel: String, reason: String },
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    RollbackStarted {
        service: String,
        namespace: String,
        at: Millis,
        reasons: Vec<String>,
        from_version: String,
        to_version: String,
        dry_run: bool,
        /// The policy's `action`: `rollback`, `contain` or `notify` (shadow mode).
        #[serde(default = "rollback")]
        mode: String,
    },
    RollbackResolved {
        service: String,
        namespace: String,
        started: Millis,
        resolved: Millis,
        from_version: String,
        to_version: String,
        verified: bool,
        #[serde(default = "rollback")]
        mode: String,
        /// `recovered at +42.0 s after the rollback` (empty: not verified on metrics).
        #[serde(default)]
        recovery: String,
        /// `1m 30s (target 5m: met)`; empty without one.
        #[serde(default)]
        rto: String,
    },
    RollbackFailed {
        service: String,
        namespace: String,
        at: Millis,
        error: String,
    },
    /// The plan completed; recovery is now being verified on the metrics.
    RollbackCompleted {
        service: String,
        namespace: String,
        at: Millis,
        from_version: String,
        to_version: String,
        mode: String,
        dry_run: bool,
        /// `verify.window` in seconds.
        window_s: u64,
    },
    /// A human must take over: why, and the measurement or error behind it.
    Escalation {
        service: String,
        namespace: String,
        at: Millis,
        reason: String,
        detail: String,
    },
    /// A canary level is breached on both tracks and the canary is not worse: a shared cause,
    /// held instead of rolled back (`analysis.on_shared`). One per episode.
    SharedCause {
        service: String,
        namespace: String,
        at: Millis,
        reasons: Vec<String>,
    },
    /// More canaries want a rollback than the fleet guard allows in its window.
    FleetHeld {
        at: Millis,
        /// `namespace/service` of those held so far.
        services: Vec<String>,
        max: u32,
        per_s: u64,
    },
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn rollback() -> String {
    "rollback".into()
}

/// The `{{action}}` sentence: what was done, by the policy's `action` mode.
fn action_text(mode: &str, from: &str, to: &str, done: bool) -> String {
    match (mode, done) {
        ("contain", false) => format!(
            "Containing: all traffic to {to}, {from} scaled to zero (the stable is not undone)"
        ),
        ("contain", true) => format!(
            "Contained: all traffic to {to}, {from} scaled to zero (the stable was not undone)"
        ),
        ("notify", _) => {
            format!("[shadow mode: nothing changed] would roll back from {from} to {to}")
        }
        (_, false) => format!("Rolling back from {from} to {to}"),
        (_, true) => format!("Rolled back from {from} to {to}"),
    }
}

/// Where a notice stands in an incident's life: what PagerDuty and Alertmanager do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// An incident opens (chat channels; Alertmanager fires).
    Open,
    /// A human is needed now (PagerDuty triggers; Alertmanager fires at `critical`).
    Escalate,
    /// The incident is over (PagerDuty resolves; Alertmanager sets the end time).
    Resolve,
    /// For the record only.
    Info,
}

impl Notice {
    /// The event name, as channels' `events` lists and the audit trail name it.
    pub fn event(&self) -> &'static str {
        match self {
            Notice::RollbackStarted { .. } => "started",
            Notice::RollbackResolved { .. } => "resolved",
            Notice::RollbackFailed { .. } => "failed",
            Notice::RollbackCompleted { .. } => "completed",
            Notice::Escalation { .. } => "escalation",
            Notice::FleetHeld { .. } => "fleet_held",
            Notice::SharedCause { .. } => "shared_cause",
        }
    }

    pub fn phase(&self) -> Phase {
        match self {
            Notice::RollbackStarted { .. } => Phase::Open,
            Notice::RollbackResolved { .. } => Phase::Resolve,
            Notice::Escalation { .. } => Phase::Escalate,
            // A failed attempt is retried: chat hears of it, nobody is paged until the
            // policy's `rollback_attempts` have failed (then an `Escalation` follows).
            Notice::RollbackFailed { .. }
            | Notice::RollbackCompleted { .. }
            | Notice::FleetHeld { .. }
            | Notice::SharedCause { .. } => Phase::Info,
        }
    }

    /// `namespace/service`, or empty for fleet-wide notices.
    pub fn service_key(&self) -> (String, String) {
        match self {
            Notice::RollbackStarted {
                service, namespace, ..
            }
            | Notice::RollbackResolved {
                service, namespace, ..
            }
            | Notice::RollbackFailed {
                service, namespace, ..
            }
            | Notice::RollbackCompleted {
                service, namespace, ..
            }
            | Notice::Escalation {
                service, namespace, ..
            }
            | Notice::SharedCause {
                service, namespace, ..
            } => (namespace.clone(), service.clone()),
            Notice::FleetHeld { .. } => (String::new(), String::new()),
        }
    }

    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            Notice::RollbackStarted { at, .. }
            | Notice::RollbackFailed { at, .. }
            | Notice::RollbackCompleted { at, .. }
            | Notice::Escalation { at, .. }
            | Notice::FleetHeld { at, .. }
            | Notice::SharedCause { at, .. } => *at,
            Notice::RollbackResolved { resolved, .. } => *resolved,
        }
    }

    /// The human text with runbook 001's templates.
    pub fn text(&self) -> String {
        self.text_with(&Templates::default())
    }

    /// The human text, with `templates` overriding runbook 001's where set.
    pub fn text_with(&self, templates: &Templates) -> String {
        let pick = |own: &Option<String>, default: &'static str| -> String {
            own.clone().unwrap_or_else(|| default.to_string())
        };
        let template = match self {
            Notice::RollbackStarted { .. } => pick(&templates.started, template::STARTED),
            Notice::RollbackResolved { .. } => pick(&templates.resolved, template::RESOLVED),
            Notice::RollbackFailed { .. } | Notice::Escalation { .. } => {
                pick(&templates.escalation, template::ESCALATION)
            }
            Notice::RollbackCompleted { .. } => pick(&templates.completed, template::COMPLETED),
            Notice::FleetHeld { .. } => template::FLEET_HELD.to_string(),
            Notice::SharedCause { .. } => template::SHARED_CAUSE.to_string(),
        };
        template::render(&template, &self.vars())
    }

    /// The values templates may use (docs/notifications.md lists them).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let (namespace, service) = self.service_key();
        let mut v = vec![
            ("service", service),
            ("namespace", namespace),
            ("time", format_time(self.at())),
            ("event", self.event().to_string()),
        ];
        match self {
            Notice::RollbackStarted {
                reasons,
                from_version,
                to_version,
                dry_run,
                mode,
                ..
            } => {
                v.push(("action", action_text(mode, from_version, to_version, false)));
                v.push(("reason", reasons.join("; ")));
                v.push(("from", from_version.clone()));
                v.push(("to", to_version.clone()));
                v.push((
                    "dry_run",
                    if *dry_run { "[dry run] " } else { "" }.to_string(),
                ));
            }
            Notice::RollbackResolved {
                started,
                resolved,
                from_version,
                to_version,
                verified,
                mode,
                recovery,
                rto,
                ..
            } => {
                v.push(("recovery", or_dash(recovery)));
                v.push(("rto", or_dash(rto)));
                v.push(("action", action_text(mode, from_version, to_version, true)));
                v.push(("started", format_time(*started)));
                v.push(("resolved", format_time(*resolved)));
                v.push((
                    "duration",
                    format!("{:.1} s", (resolved - started) as f64 / 1000.0),
                ));
                v.push(("from", from_version.clone()));
                v.push(("to", to_version.clone()));
                v.push((
                    "verification",
                    if *verified {
                        "passed"
                    } else {
                        "FAILED, needs a human"
                    }
                    .to_string(),
                ));
            }
            Notice::RollbackFailed { error, .. } => {
                v.push(("reason", "the rollback failed".to_string()));
                v.push(("detail", error.clone()));
            }
            Notice::Escalation { reason, detail, .. } => {
                v.push(("reason", reason.clone()));
                v.push(("detail", detail.clone()));
            }
            Notice::SharedCause { reasons, .. } => {
                v.push(("reason", reasons.join("; ")));
            }
            Notice::RollbackCompleted {
                from_version,
                to_version,
                mode,
                dry_run,
                window_s,
                ..
            } => {
                v.push(("action", action_text(mode, from_version, to_version, true)));
                v.push(("from", from_version.clone()));
                v.push(("to", to_version.clone()));
                v.push((
                    "verifying",
                    if *dry_run {
                        "nothing was changed (dry run): no recovery to verify".to_string()
                    } else {
                        format!(
                            "the stable alone is judged for {} (metrics under warning and not worse than before the incident)",
                            humantime::format_duration(std::time::Duration::from_secs(*window_s))
                        )
                    },
                ));
            }
            Notice::FleetHeld {
                services,
                max,
                per_s,
                ..
            } => {
                v.push(("count", (services.len() + *max as usize).to_string()));
                v.push(("held", services.join(", ")));
                v.push(("max", max.to_string()));
                v.push(("per_s", per_s.to_string()));
            }
        }
        v
    }
}

/// A notice on its way: which channels (`None`: the default route) and which incident it
/// belongs to (PagerDuty's dedup key, Alertmanager's `incident` label: the rollback id).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub notice: Notice,
    pub route: Option<Vec<String>>,
    /// Channels beyond the route (those an escalation paged get its resolution).
    pub also: Vec<String>,
    pub incident: String,
}

/// Where notices go.
pub trait Notifier: Send + Sync {
    fn send(&self, notice: &Notice) -> futures::future::BoxFuture<'_, Result<(), NotifyError>>;

    /// A routed notice. Notifiers without routes (the log, one webhook, a test's recorder) send
    /// the notice itself; the channel dispatcher routes it.
    fn deliver(
        &self,
        envelope: Envelope,
    ) -> futures::future::BoxFuture<'_, Result<(), NotifyError>> {
        Box::pin(async move { self.send(&envelope.notice).await })
    }
}

/// Writes notices to the log only (the default when no webhook is configured).
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send(&self, notice: &Notice) -> futures::future::BoxFuture<'_, Result<(), NotifyError>> {
        tracing::warn!(notice = %notice.text(), "notification");
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(dry_run: bool) -> Notice {
        Notice::RollbackStarted {
            service: "web".into(),
            namespace: "prod".into(),
            at: 1_800_000_000_000,
            reasons: vec!["error_rate 0.2 > 0.05".into()],
            from_version: "revision 4".into(),
            to_version: "revision 3".into(),
            dry_run,
            mode: "rollback".into(),
        }
    }

    #[test]
    fn start_notice_follows_runbook_001() {
        let text = started(false).text();
        assert!(
            text.starts_with("🚨 INCIDENT: Production Rollback Initiated\n"),
            "{text}"
        );
        assert!(text.contains("Time: 2027-01-15 08:00:00.000 UTC"), "{text}");
        assert!(text.contains("Reason: error_rate 0.2 > 0.05"), "{text}");
        assert!(
            text.contains("Action: Rolling back from revision 4 to revision 3"),
            "{text}"
        );
        assert!(text.contains("Status: In Progress"), "{text}");
        assert!(started(true)
            .text()
            .contains("INCIDENT: [dry run] Production"));
    }

    #[test]
    fn templates_override_the_runbook_texts() {
        let t = Templates {
            started: Some("{{service}} is being rolled back: {{reason}}".into()),
            ..Default::default()
        };
        assert_eq!(
            started(false).text_with(&t),
            "web is being rolled back: error_rate 0.2 > 0.05"
        );
    }
}
