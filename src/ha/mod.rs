//! High availability on Kubernetes Leases: leader election and sharding, with fencing.
//!
//! Every replica evaluates; only the holder of a service's shard acts for it. With one shard
//! (`[ha] shards = 1`) that is plain leader election: standbys keep their engines warm and take
//! over within one lease duration. With more, each shard is a Lease and replicas take a fair share
//! (`ceil(shards / live replicas)`), counting live replicas by their member Leases. Kubernetes'
//! resourceVersion concurrency is the only arbiter: every Lease write carries the version read.
//!
//! Fencing: a replica acts for a shard only until `renew_deadline` after its last successful
//! renewal was sent, which is before anyone else may consider the Lease expired
//! (`lease_duration`, counted from when *they* saw the renewal). The actuator asks
//! [`Ownership::may_act`] before each write.

mod elector;
pub mod lease;
mod ownership;

pub use elector::Elector;
pub use ownership::Ownership;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("Lease {name} in {namespace}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// `[ha]` settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// Namespace of the Leases (the daemon's own).
    pub namespace: String,
    /// Lease name prefix.
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub shards: u32,
}

/// The shard of `namespace/service`: a stable hash, so every replica agrees.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    (crate::hash::fnv1a(key.as_bytes()) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("prod/web", 12), shard_of("prod/web", 12));
        let mut count = [0u32; 12];
        for i in 0..1200 {
            count[shard_of(&format!("ns{}/svc{i}", i % 7), 12) as usize] += 1;
        }
        assert!(count.iter().all(|&c| (50..=150).contains(&c)), "{count:?}");
        assert_eq!(shard_of("anything", 1), 0);
    }
}
