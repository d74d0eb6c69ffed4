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
        let Some(recorder) = &self.recorder else {
            return;
        };
        let name = if step.concerns_canary() {
            &plan.canary
        } else {
            &plan.stable
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(name.clone()),
            namespace: Some(plan.namespace.clone()),
            ..Default::default()
        };
        let note: String = format!(
            "{detail}. Rollback {} of {}: {}",
            plan.id,
            plan.service,
            plan.trigger.message()
        )
        .chars()
        .take(1000)
        .collect();
        let ev = Event {
            type_,
            reason: step.event_reason().into(),
            note: Some(note),
            action: "Rollback".into(),
            secondary: None,
        };
        let publish = recorder.publish(&ev, &reference);
        match tokio::time::timeout(self.config.retry.request_timeout, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.event_errors.push(format!("{}: {e}", step.key())),
            Err(_) => report
                .event_errors
                .push(format!("{}: timed out", step.key())),
        }
    }
}
