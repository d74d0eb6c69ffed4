//! Pacing: a fleet incident orders many rollbacks at once. A shared gate bounds how many
//! rollbacks are *working the API* at once (`[actions] max_concurrent`), but a rollback that only
//! waits for the cluster to settle (pre-scaled pods getting ready, Verify) gives its place up
//! meanwhile. Otherwise eight rollbacks waiting on slow rollouts would keep the ninth service's
//! canary serving errors for minutes.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One rollback's place at the gate (no gate: always free to go).
#[derive(Clone, Default)]
pub struct Pace {
    gate: Option<Arc<Semaphore>>,
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("gated", &self.gate.is_some())
            .finish()
    }
}

impl Pace {
    pub fn new(gate: Option<Arc<Semaphore>>) -> Self {
        Self {
            gate,
            held: Arc::default(),
        }
    }

    /// Waits for a place at the gate unless one is held already.
    pub async fn hold(&self) {
        let Some(gate) = &self.gate else { return };
        if self.held.lock().map(|h| h.is_some()).unwrap_or(false) {
            return;
        }
        // A closed gate (daemon shutting down) lets the rollback finish unpaced.
        let permit = gate.clone().acquire_owned().await.ok();
        if let Ok(mut held) = self.held.lock() {
            *held = permit;
        }
    }

    /// Gives the place up while waiting for the cluster.
    pub fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_rollback_lets_another_through_and_takes_its_place_back() {
        let gate = Arc::new(Semaphore::new(1));
        let (a, b) = (Pace::new(Some(gate.clone())), Pace::new(Some(gate.clone())));
        a.hold().await;
        a.hold().await; // holding already: no second permit, no deadlock
        assert_eq!(gate.available_permits(), 0);
        a.release();
        b.hold().await;
        assert_eq!(gate.available_permits(), 0);
        let back = tokio::spawn(async move {
            a.hold().await;
            a
        });
        tokio::task::yield_now().await;
        assert!(!back.is_finished(), "a waits while b works");
        b.release();
        let a = back.await.unwrap();
        assert_eq!(gate.available_permits(), 0, "a holds its place again");
        drop(a);
        assert_eq!(
            gate.available_permits(),
            1,
            "a dropped rollback frees its place"
        );
    }

    #[tokio::test]
    async fn no_gate_never_waits() {
        let free = Pace::default();
        free.hold().await;
        free.release();
    }
}
