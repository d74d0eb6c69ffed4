//! Which shards this replica may act for, and until when: shared by the elector (writer), the
//! daemon (what to evaluate, which orders to run) and the actuator (checked before each write).

use super::shard_of;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug)]
struct State {
    /// `None`: HA is off, this replica owns everything.
    shards: Option<u32>,
    /// Shard -> the instant this replica must stop acting for it.
    held: Mutex<HashMap<u32, Instant>>,
    /// Bumped when a shard is newly taken (the daemon then resumes its rollbacks under way).
    taken: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
pub struct Ownership(Arc<State>);

impl Ownership {
    /// Without HA: one replica owns every service.
    pub fn standalone() -> Self {
        Self::with(None)
    }

    /// With HA over `shards` Leases; nothing is held until the elector takes something.
    pub fn sharded(shards: u32) -> Self {
        Self::with(Some(shards.max(1)))
    }

    fn with(shards: Option<u32>) -> Self {
        Self(Arc::new(State {
            shards,
            held: Mutex::new(HashMap::new()),
            taken: watch::channel(0).0,
        }))
    }

    pub fn shards(&self) -> u32 {
        self.0.shards.unwrap_or(1)
    }

    pub fn shard_of(&self, key: &str) -> u32 {
        shard_of(key, self.shards())
    }

    /// Whether this replica may write for `namespace/service` now.
    pub fn may_act(&self, key: &str) -> bool {
        if self.0.shards.is_none() {
            return true;
        }
        let shard = self.shard_of(key);
        self.0
            .held
            .lock()
            .map(|h| h.get(&shard).is_some_and(|until| Instant::now() < *until))
            .unwrap_or(false)
    }

    /// Whether this replica evaluates `key`: with one Lease standbys keep evaluating (warm
    /// engines for a fast takeover); with shards, each replica judges its own shards only.
    pub fn evaluates(&self, key: &str) -> bool {
        self.shards() == 1 || self.may_act(key)
    }

    /// Shards held now (sorted).
    pub fn held(&self) -> Vec<u32> {
        let now = Instant::now();
        let mut held: Vec<u32> = self
            .0
            .held
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(_, u)| now < **u)
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default();
        held.sort_unstable();
        held
    }

    /// `leader` with one Lease holding it, `standby` otherwise; with shards, `shards:N/S`.
    pub fn role(&self) -> String {
        match self.0.shards {
            None => "standalone".into(),
            Some(1) if self.held().is_empty() => "standby".into(),
            Some(1) => "leader".into(),
            Some(s) => format!("shards:{}/{s}", self.held().len()),
        }
    }

    pub(super) fn hold(&self, shard: u32, until: Instant) {
        let fresh = self
            .0
            .held
            .lock()
            .map(|mut h| {
                let was = h.insert(shard, until);
                was.is_none_or(|u| u <= Instant::now())
            })
            .unwrap_or(false);
        if fresh {
            self.0.taken.send_modify(|n| *n += 1);
        }
    }

    pub(super) fn drop_shard(&self, shard: u32) {
        if let Ok(mut h) = self.0.held.lock() {
            h.remove(&shard);
        }
    }

    /// Changes when a shard is newly taken.
    pub fn taken(&self) -> watch::Receiver<u64> {
        self.0.taken.subscribe()
    }
}

impl crate::actuator::Fence for Ownership {
    fn may_write(&self, namespace: &str, service: &str) -> bool {
        self.may_act(&format!("{namespace}/{service}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_shard_is_acted_for_only_until_its_deadline() {
        let o = Ownership::sharded(1);
        assert!(!o.may_act("prod/web"));
        assert_eq!(o.role(), "standby");
        let taken = o.taken();
        o.hold(0, Instant::now() + Duration::from_secs(10));
        assert!(taken.has_changed().unwrap());
        assert!(o.may_act("prod/web"));
        assert_eq!(o.role(), "leader");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!o.may_act("prod/web"), "fenced at the renew deadline");
        assert!(
            o.evaluates("prod/web"),
            "a standby keeps evaluating with one Lease"
        );
    }

    #[test]
    fn standalone_owns_everything_and_sharded_only_its_shards() {
        assert!(Ownership::standalone().may_act("a/b"));
        let o = Ownership::sharded(4);
        let key = "prod/web";
        o.hold(o.shard_of(key), Instant::now() + Duration::from_secs(10));
        assert!(o.may_act(key) && o.evaluates(key));
        let other = (0..100)
            .map(|i| format!("prod/s{i}"))
            .find(|k| o.shard_of(k) != o.shard_of(key))
            .unwrap();
        assert!(!o.may_act(&other) && !o.evaluates(&other));
    }
}
