//! Delivery: one queue and one task per channel, so a slow or dead receiver delays only its own
//! messages, in order, and never the rollback that produced them.
//!
//! `deliver` only renders the text and puts it on the channels' queues (a full queue drops the
//! notice, counted and audited: memory stays bounded when a receiver is down for hours). Each
//! channel's task POSTs with the `[notify] timeout` deadline and retries with doubling backoff;
//! every final outcome is one audit record (`notified`) and one
//! `backout_notifications_total{channel,outcome}` increment (`sent`, `failed`, `dropped`).
//! Endpoints and keys are secrets: errors carry neither (reqwest's error is stripped of its URL).

use super::channels::{call, Call, Target};
use super::config::NotifyConfig;
use super::{Envelope, Notice, Notifier, NotifyError};
use crate::audit::{AuditKind, AuditRecord, AuditSink};
use crate::clock::Clock;
use crate::telemetry::{Metrics, NotificationLabels};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One notice for one channel.
struct Job {
    envelope: Arc<Envelope>,
    text: Arc<String>,
}

/// What the channel tasks report to.
#[derive(Clone)]
pub struct Recorders {
    pub audit: Arc<dyn AuditSink>,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
}

/// The configured channels, each with its queue and task. Dropping it stops the tasks once
/// their queues are empty.
pub struct Dispatcher {
    config: NotifyConfig,
    queues: HashMap<String, mpsc::Sender<Job>>,
    recorders: Recorders,
}

/// Backoff and deadline of one channel's deliveries.
#[derive(Debug, Clone, Copy)]
struct Retry {
    retries: u32,
    initial: Duration,
    max: Duration,
}

impl Retry {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Dispatcher {
    /// Reads the channels' secret files and starts one task per channel (on the current
    /// runtime). Fails when a secret cannot be read or the HTTP client cannot be built.
    pub fn start(config: NotifyConfig, recorders: Recorders) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| NotifyError::Channel {
                channel: "*".into(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let retry = Retry {
            retries: config.retries,
            initial: config.retry_initial,
            max: config.retry_max,
        };
        let mut queues = HashMap::new();
        for (name, ch) in &config.channels {
            let failed = |what: &str, e: std::io::Error| NotifyError::Channel {
                channel: name.clone(),
                reason: format!("cannot read {what}: {e}"),
            };
            let endpoint = ch.endpoint().map_err(|e| failed("url_file", e))?;
            let routing_key = match &ch.routing_key_file {
                Some(f) => {
                    Some(super::config::read_secret(f).map_err(|e| failed("routing_key_file", e))?)
                }
                None => None,
            };
            let target = Target {
                name: name.clone(),
                kind: ch.kind,
                endpoint,
                routing_key,
                labels: ch.labels.clone(),
            };
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let worker = Worker {
                target,
                events: ch.events.clone(),
                client: client.clone(),
                retry,
                recorders: recorders.clone(),
            };
            tokio::spawn(worker.run(rx));
            queues.insert(name.clone(), tx);
        }
        Ok(Self {
            config,
            queues,
            recorders,
        })
    }

    /// Renders and queues `envelope` for its channels; never waits.
    fn enqueue(&self, envelope: Envelope) {
        let text = Arc::new(envelope.notice.text_with(&self.config.templates));
        tracing::warn!(notice = %text, incident = %envelope.incident, "notification");
        let mut route: Vec<String> = self.config.route(envelope.route.as_deref()).to_vec();
        for ch in &envelope.also {
            if !route.contains(ch) {
                route.push(ch.clone());
            }
        }
        let envelope = Arc::new(envelope);
        for name in route {
            let Some(queue) = self.queues.get(&name) else {
                // Routes are checked when policies load; a policy naming a channel that is gone
                // is counted, not silently lost.
                tracing::error!(channel = %name, "notice routed to a channel that is not configured");
                record(
                    &self.recorders,
                    &name,
                    &envelope.notice,
                    "dropped",
                    0,
                    "no such channel",
                );
                continue;
            };
            let job = Job {
                envelope: envelope.clone(),
                text: text.clone(),
            };
            if let Err(e) = queue.try_send(job) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full: the receiver is far behind",
                    mpsc::error::TrySendError::Closed(_) => "channel task stopped",
                };
                tracing::error!(channel = %name, why, "notification dropped");
                record(&self.recorders, &name, &envelope.notice, "dropped", 0, why);
            }
        }
    }
}

impl Notifier for Dispatcher {
    fn send(&self, notice: &Notice) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.enqueue(Envelope {
            notice: notice.clone(),
            route: None,
            also: Vec::new(),
            incident: String::new(),
        });
        Box::pin(async { Ok(()) })
    }

    fn deliver(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.enqueue(envelope);
        Box::pin(async { Ok(()) })
    }
}

/// One channel's task.
struct Worker {
    target: Target,
    events: Option<Vec<String>>,
    client: reqwest::Client,
    retry: Retry,
    recorders: Recorders,
}

impl Worker {
    async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let event = job.envelope.notice.event();
            if self
                .events
                .as_ref()
                .is_some_and(|evs| !evs.iter().any(|e| e == event))
            {
                continue;
            }
            let Some(call) = call(&self.target, &job.envelope, &job.text) else {
                continue;
            };
            self.deliver(&job.envelope.notice, &call).await;
        }
    }

    /// Posts until it succeeds or the retries are spent; records the outcome.
    async fn deliver(&self, notice: &Notice, call: &Call) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.post(call).await {
                Ok(()) => {
                    record(
                        &self.recorders,
                        &self.target.name,
                        notice,
                        "sent",
                        attempt,
                        "",
                    );
                    return;
                }
                Err(e) => e,
            };
            if attempt > self.retry.retries {
                tracing::error!(channel = %self.target.name, attempts = attempt, error = %error, "notification FAILED");
                record(
                    &self.recorders,
                    &self.target.name,
                    notice,
                    "failed",
                    attempt,
                    &error,
                );
                return;
            }
            tracing::warn!(channel = %self.target.name, attempt, error = %error, "notification failed; retrying");
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }

    /// One POST. The error never contains the endpoint.
    async fn post(&self, call: &Call) -> Result<(), String> {
        let resp = self
            .client
            .post(&call.url)
            .json(&call.body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ))
    }
}

/// One audit record and one counter increment per final outcome.
fn record(
    r: &Recorders,
    channel: &str,
    notice: &Notice,
    outcome: &str,
    attempts: u32,
    error: &str,
) {
    r.metrics
        .notifications
        .get_or_create(&NotificationLabels {
            channel: channel.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
    let (namespace, service) = notice.service_key();
    let rec = AuditRecord {
        at: r.clock.now_millis(),
        service,
        namespace,
        kind: AuditKind::Notified,
        message: format!("{} to {channel}: {outcome}", notice.event()),
        detail: serde_json::json!({
            "channel": channel,
            "event": notice.event(),
            "outcome": outcome,
            "attempts": attempts,
            "error": error,
        }),
    };
    if let Err(e) = r.audit.record(&rec) {
        tracing::error!(error = %e, "cannot audit a notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            retries: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let d: Vec<u64> = (1..=5).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 5, 5]);
    }
}
