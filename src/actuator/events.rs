//! One Kubernetes Event per step on the Deployment it concerns, with the trigger's values, so
//! `kubectl describe deploy` tells the story and notification tools can react to it.

use super::report::RollbackReport;
use super::{ActionPlan, Actuator, Step};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::Client;

/// Creates the actuator's Events (`events.k8s.io/v1`), one object per call.
///
/// Not kube-runtime's `Recorder`: to count repeats it keeps every Event it posted for six
/// minutes (and sweeps that cache on every post), and the daemon posts one per stable at
/// start-up (its last-known-good record): 3 KB per service held for minutes, and a sweep of the
/// whole fleet per post (issue 10). The actuator's Events do not repeat within minutes (one per
/// step of a rollback, one per new last-known-good revision, one per fleet-guard hold), so
/// there is nothing to count. The API server names each (`generateName`).
#[derive(Clone)]
pub struct EventSink {
    client: Client,
    reporter: Reporter,
}

impl EventSink {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    async fn create(&self, event: &Note<'_>) -> Result<(), kube::Error> {
        let reporter = &self.reporter;
        let body = K8sEvent {
            action: Some("Rollback".into()),
            reason: Some(event.reason.into()),
            note: Some(event.note.chars().take(1000).collect()),
            event_time: Some(MicroTime(Timestamp::now())),
            regarding: Some(event.regarding.clone()),
            metadata: ObjectMeta {
                namespace: event.regarding.namespace.clone(),
                generate_name: event.regarding.name.as_ref().map(|n| format!("{n}.")),
                ..Default::default()
            },
            reporting_controller: Some(reporter.controller.clone()),
            reporting_instance: Some(
                reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        let namespace = event.regarding.namespace.as_deref().unwrap_or("default");
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &body)
            .await
            .map(drop)
    }
}

/// One Event's content.
struct Note<'a> {
    regarding: ObjectReference,
    reason: &'a str,
    note: &'a str,
    type_: EventType,
}

impl Actuator {
    pub(super) async fn event(
        &self,
        report: &mut RollbackReport,
        plan: &ActionPlan,
        step: &Step,
        type_: EventType,
        detail: &str,
    ) {
        let name = if step.concerns_canary() {
            &plan.canary
        } else {
            &plan.stable
        };
        let note: String = format!(
            "{detail}. Rollback {} of {}: {}",
            plan.id,
            plan.service,
            plan.trigger.message()
        );
        let reason = step.event_reason();
        if let Err(e) = self
            .post_event(&plan.namespace, name, reason, note, type_)
            .await
        {
            report.event_errors.push(format!("{}: {e}", step.key()));
        }
    }

    /// Posts an Event on a Deployment that is not part of a plan (the daemon's own notes, e.g.
    /// a rollback held by the fleet guard). Best effort: the error is returned for the log.
    pub async fn note(
        &self,
        namespace: &str,
        deployment: &str,
        reason: &str,
        note: String,
    ) -> Result<(), String> {
        self.post_event(namespace, deployment, reason, note, EventType::Warning)
            .await
    }

    /// Posts one Event on a Deployment, within the request deadline; the note is cut to the
    /// API's 1 kB. No recorder (tests, the CLI without events): nothing to do.
    pub(super) async fn post_event(
        &self,
        namespace: &str,
        deployment: &str,
        reason: &str,
        note: String,
        type_: EventType,
    ) -> Result<(), String> {
        let Some(sink) = &self.events else {
            return Ok(());
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(deployment.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        };
        let ev = Note {
            regarding: reference,
            reason,
            note: &note,
            type_,
        };
        let publish = sink.create(&ev);
        match tokio::time::timeout(self.config.retry.request_timeout, publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}
