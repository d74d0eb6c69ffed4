//! The last-known-good mark: when a stable passes its bake window, its revision is written on the
//! Deployment (`backout.dev/last-known-good-revision`) so a later rollback knows where to return.
//! It goes through the executor's retries and deadline and leaves an Event, like every write.

use super::progress::LAST_KNOWN_GOOD;
use super::{Actuator, ActuatorError};
use crate::policy::Policy;
use kube::runtime::events::EventType;

impl Actuator {
    /// Records `revision` as the stable's last known good revision (idempotent).
    pub async fn record_known_good(
        &self,
        policy: &Policy,
        revision: u64,
    ) -> Result<(), ActuatorError> {
        self.fenced(&policy.namespace, &policy.service)?;
        let c = self.cluster(&policy.namespace);
        let stable = policy.deployments.stable.as_str();
        let value = revision.to_string();
        self.retrying("record the last known good revision", "(none)", || {
            c.annotate_deployment(stable, LAST_KNOWN_GOOD, &value)
        })
        .await
        .map_err(|e| ActuatorError::KnownGood {
            deployment: format!("{}/{stable}", policy.namespace),
            revision,
            detail: e.to_string(),
        })?;
        let note = format!(
            "revision {revision} passed its bake window; rollbacks of {} return here",
            policy.service
        );
        if let Err(err) = self
            .post_event(
                &policy.namespace,
                stable,
                "LastKnownGoodRecorded",
                note,
                EventType::Normal,
            )
            .await
        {
            tracing::warn!(service = %policy.service, error = %err, "cannot post the last-known-good Event");
        }
        Ok(())
    }
}
