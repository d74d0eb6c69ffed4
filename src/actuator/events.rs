//! One Kubernetes Event per step on the Deployment it concerns, with the trigger's values, so
//! `kubectl describe deploy` tells the story and notification tools can react to it.

use super::report::RollbackReport;
use super::{ActionPlan, Actuator, Step};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

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
        let Some(recorder) = &self.recorder else {
            return Ok(());
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(deployment.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Rollback".into(),
            secondary: None,
        };
        let publish = recorder.publish(&ev, &reference);
        match tokio::time::timeout(self.config.retry.request_timeout, publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}
