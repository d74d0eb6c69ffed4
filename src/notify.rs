//! Notifications: the incident start and resolution messages of runbook 001, sent by the daemon.
//!
//! The webhook body is Slack-compatible (`{"text": ...}`) and also carries the structured event,
//! so chat tools and incident tools can both consume it. Sending never blocks a rollback: a failed
//! notification is logged and audited, and the rollback goes on.

use crate::audit::format_time;
use crate::sample::Millis;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook {url} failed: {reason} (check `notify.webhook_url` in backout.toml)")]
    Webhook { url: String, reason: String },
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
    },
    RollbackResolved {
        service: String,
        namespace: String,
        started: Millis,
        resolved: Millis,
        from_version: String,
        to_version: String,
        verified: bool,
    },
    RollbackFailed {
        service: String,
        namespace: String,
        at: Millis,
        error: String,
    },
    /// More canaries want a rollback than the fleet guard allows in its window.
    FleetHeld {
        at: Millis,
        /// `namespace/service` of those held so far.
        services: Vec<String>,
        max: u32,
        per_s: u64,
    },
    /// A canary level is breached on both tracks and the canary is not worse: a shared cause,
    /// held instead of rolled back (`analysis.on_shared`). One per episode.
    SharedCause {
        service: String,
        namespace: String,
        at: Millis,
        reasons: Vec<String>,
    },
}

impl Notice {
    /// The human text, following the runbook's templates.
    pub fn text(&self) -> String {
        match self {
            Notice::RollbackStarted { service, namespace, at, reasons, from_version, to_version, dry_run } => format!(
                "INCIDENT: {}rollback initiated for {namespace}/{service}\nTime: {}\nReason: {}\nAction: rolling back from {from_version} to {to_version}\nStatus: in progress",
                if *dry_run { "[dry run] " } else { "" },
                format_time(*at),
                reasons.join("; "),
            ),
            Notice::RollbackResolved { service, namespace, started, resolved, from_version, to_version, verified } => format!(
                "RESOLVED: rollback complete for {namespace}/{service}\nTime started: {}\nTime resolved: {}\nDuration: {:.1} s\nAction taken: rolled back from {from_version} to {to_version}\nVerification: {}",
                format_time(*started),
                format_time(*resolved),
                (resolved - started) as f64 / 1000.0,
                if *verified { "passed" } else { "FAILED, needs a human" },
            ),
            Notice::FleetHeld { at, services, max, per_s } => format!(
                "FLEET GUARD: {} services want a rollback at once: likely a shared cause; held\nTime: {}\nLimit: {max} rollbacks per {per_s} s across the fleet\nHeld: {}\nAction: check shared dependencies and Prometheus; roll a service back by hand with `backout rollback` if it is really bad",
                services.len() + *max as usize,
                format_time(*at),
                services.join(", "),
            ),
            Notice::RollbackFailed { service, namespace, at, error } => format!(
                "ESCALATION: rollback of {namespace}/{service} FAILED at {}: {error}\nA human must take over (runbook: escalate when a rollback fails).",
                format_time(*at),
            ),
            Notice::SharedCause { service, namespace, at, reasons } => format!(
                "SHARED CAUSE: {namespace}/{service}: both tracks breach; the canary is not worse. No rollback (on_shared = \"hold\"); promotion held\nTime: {}\nReason: {}\nAction: check the dependencies both tracks share",
                format_time(*at),
                reasons.join("; "),
            ),
        }
    }
}

/// Where notices go.
pub trait Notifier: Send + Sync {
    fn send(&self, notice: &Notice) -> futures::future::BoxFuture<'_, Result<(), NotifyError>>;
}

/// Writes notices to the log only (the default when no webhook is configured).
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send(&self, notice: &Notice) -> futures::future::BoxFuture<'_, Result<(), NotifyError>> {
        tracing::warn!(notice = %notice.text(), "notification");
        Box::pin(async { Ok(()) })
    }
}

/// POSTs `{"text": ..., "backout": <notice>}` to a webhook, with a hard timeout.
pub struct WebhookNotifier {
    url: String,
    client: reqwest::Client,
}

impl WebhookNotifier {
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, NotifyError> {
        let url = url.into();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| NotifyError::Webhook {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { url, client })
    }
}

impl Notifier for WebhookNotifier {
    fn send(&self, notice: &Notice) -> futures::future::BoxFuture<'_, Result<(), NotifyError>> {
        let body = serde_json::json!({ "text": notice.text(), "backout": notice });
        Box::pin(async move {
            let resp = self
                .client
                .post(&self.url)
                .json(&body)
                .send()
                .await
                .map_err(|e| NotifyError::Webhook {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
            if !resp.status().is_success() {
                return Err(NotifyError::Webhook {
                    url: self.url.clone(),
                    reason: format!("HTTP {}", resp.status()),
                });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{routing::post, Json, Router};
    use std::sync::{Arc, Mutex};

    fn started() -> Notice {
        Notice::RollbackStarted {
            service: "web".into(),
            namespace: "prod".into(),
            at: 0,
            reasons: vec!["error_rate 0.2 > 0.05".into()],
            from_version: "revision 4".into(),
            to_version: "revision 3".into(),
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn webhook_receives_text_and_structured_event() {
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = got.clone();
        let app = Router::new().route(
            "/hook",
            post(move |Json(v): Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let n =
            WebhookNotifier::new(format!("http://{addr}/hook"), Duration::from_secs(2)).unwrap();
        n.send(&started()).await.unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0]["text"]
            .as_str()
            .unwrap()
            .contains("rolling back from revision 4 to revision 3"));
        assert_eq!(got[0]["backout"]["event"], "rollback_started");
    }

    #[tokio::test]
    async fn unreachable_webhook_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let n = WebhookNotifier::new(format!("http://{addr}/hook"), Duration::from_millis(500))
            .unwrap();
        assert!(matches!(
            n.send(&started()).await,
            Err(NotifyError::Webhook { .. })
        ));
    }
}
