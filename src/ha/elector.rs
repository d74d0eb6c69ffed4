//! The elector: every `retry_period` it reads this daemon's Leases (one LIST), renews what it
//! holds, gives up what exceeds its fair share, and takes free or expired shards up to it. Every
//! write carries the resourceVersion it read; a conflict means someone else won, nothing more.
//! Fencing lives in [`Ownership`]: a shard is acted for until `renew_deadline` after its last
//! successful renewal was *sent*.

use super::lease::{self, Decision, Holding};
use super::{HaConfig, HaError, Ownership};
use crate::clock::Clock;
use crate::telemetry::Metrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

const GROUP_LABEL: &str = "backout.dev/lease-group";
const KIND_LABEL: &str = "backout.dev/lease";

/// When this replica first saw a Lease's current renewal (expiry is judged on our own clock).
struct Seen {
    holder: String,
    renewed_at: i64,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: HaConfig,
    ownership: Ownership,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    seen: HashMap<String, Seen>,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        config: HaConfig,
        ownership: Ownership,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            ownership,
            clock,
            metrics,
            seen: HashMap::new(),
        }
    }

    fn shard_lease(&self, shard: u32) -> String {
        if self.config.shards <= 1 {
            format!("{}-leader", self.config.name)
        } else {
            format!("{}-shard-{shard}", self.config.name)
        }
    }

    fn member_lease(&self) -> String {
        format!("{}-member-{}", self.config.name, self.config.identity)
    }

    /// Runs until `shutdown`, then gives every held Lease up so a standby takes over at once.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.step().await {
                tracing::warn!(error = %err, "lease round failed; held shards lapse at their renew deadline");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.release_all().await;
    }

    /// One round: read, renew, rebalance.
    pub async fn step(&mut self) -> Result<(), HaError> {
        let leases = self.read().await?;
        let now = Instant::now();
        let members = if self.config.shards > 1 {
            let me = self.member_lease();
            self.claim(&me, leases.get(&me), "member").await;
            self.live_members(&leases, now)
        } else {
            1
        };
        let target = self.config.shards.div_ceil(members.max(1));
        let mut held = 0;
        let mut free = Vec::new();
        for shard in 0..self.config.shards {
            let name = self.shard_lease(shard);
            let current = leases.get(&name);
            let holding = current.and_then(Holding::of);
            let expired = self.expired(&name, holding.as_ref(), now);
            match lease::decide(holding.as_ref(), &self.config.identity, expired) {
                Decision::Renew if held < target => {
                    held += u32::from(self.take(shard, &name, current).await);
                }
                Decision::Renew => self.release(shard, &name, current).await,
                Decision::Acquire => free.push((shard, name)),
                Decision::Wait => self.ownership.drop_shard(shard),
            }
        }
        for (shard, name) in free {
            if held >= target {
                break;
            }
            held += u32::from(self.take(shard, &name, leases.get(&name)).await);
        }
        self.metrics.leases_held.set(i64::from(held));
        Ok(())
    }

    async fn read(&self) -> Result<BTreeMap<String, Lease>, HaError> {
        let lp = ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.config.name));
        let list = self.api.list(&lp).await.map_err(|source| HaError::Api {
            namespace: self.config.namespace.clone(),
            name: format!("{}-*", self.config.name),
            source,
        })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name.clone().map(|n| (n, l)))
            .collect())
    }

    /// Whether `name`'s holder has not renewed for a lease duration since we saw its renewal.
    fn expired(&mut self, name: &str, h: Option<&Holding>, now: Instant) -> bool {
        let Some(h) = h.filter(|h| !h.holder.is_empty()) else {
            return true;
        };
        let seen = self.seen.entry(name.to_string()).or_insert_with(|| Seen {
            holder: h.holder.clone(),
            renewed_at: h.renewed_at,
            at: now,
        });
        if seen.holder != h.holder || seen.renewed_at != h.renewed_at {
            *seen = Seen {
                holder: h.holder.clone(),
                renewed_at: h.renewed_at,
                at: now,
            };
        }
        let duration = std::time::Duration::from_millis(h.duration_ms.max(0) as u64);
        now >= seen.at + duration
    }

    fn live_members(&mut self, leases: &BTreeMap<String, Lease>, now: Instant) -> u32 {
        let prefix = format!("{}-member-", self.config.name);
        let me = self.member_lease();
        let mut live = 1; // this replica
        for (name, l) in leases.iter().filter(|(n, _)| n.starts_with(&prefix)) {
            if *name == me {
                continue;
            }
            let holding = Holding::of(l);
            if !self.expired(name, holding.as_ref(), now) {
                live += 1;
            }
        }
        live
    }

    /// Renews or acquires shard `shard`; on success this replica may act for it until the
    /// renew deadline, counted from when the write was sent.
    async fn take(&mut self, shard: u32, name: &str, current: Option<&Lease>) -> bool {
        let sent = Instant::now();
        let was_ours = current
            .and_then(Holding::of)
            .is_some_and(|h| h.holder == self.config.identity);
        if !self.claim(name, current, "shard").await {
            self.ownership.drop_shard(shard);
            return false;
        }
        if !was_ours {
            tracing::info!(lease = name, identity = %self.config.identity, "lease acquired");
            self.metrics.lease_transitions.inc();
        }
        self.ownership
            .hold(shard, sent + self.config.renew_deadline);
        true
    }

    /// Writes our claim on `name` (create, or replace at the version read). False: lost.
    async fn claim(&self, name: &str, current: Option<&Lease>, kind: &str) -> bool {
        let holding = current.and_then(Holding::of);
        let duration_s = self.config.lease_duration.as_secs().max(1) as i32;
        let mut spec = lease::claimed(
            holding.as_ref(),
            &self.config.identity,
            self.clock.now_millis(),
            duration_s,
        );
        if spec.acquire_time.is_none() {
            // A renewal keeps the time it was acquired (the write replaces the whole spec).
            spec.acquire_time = current
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.acquire_time.clone());
        }
        self.write(name, current, spec, kind).await
    }

    /// Gives `shard` up: stop acting first, then clear the holder so another takes it at once.
    async fn release(&mut self, shard: u32, name: &str, current: Option<&Lease>) {
        self.ownership.drop_shard(shard);
        if let Some(h) = current.and_then(Holding::of) {
            if self
                .write(name, current, lease::released(&h), "shard")
                .await
            {
                tracing::info!(lease = name, "lease released to rebalance");
            }
        }
    }

    async fn release_all(&mut self) {
        let Ok(leases) = self.read().await else {
            return;
        };
        for shard in 0..self.config.shards {
            let name = self.shard_lease(shard);
            let current = leases.get(&name);
            let ours = current
                .and_then(Holding::of)
                .is_some_and(|h| h.holder == self.config.identity);
            if ours {
                self.release(shard, &name, current).await;
            }
        }
    }

    async fn write(
        &self,
        name: &str,
        current: Option<&Lease>,
        spec: LeaseSpec,
        kind: &str,
    ) -> bool {
        let labels = BTreeMap::from([
            (GROUP_LABEL.to_string(), self.config.name.clone()),
            (KIND_LABEL.to_string(), kind.to_string()),
        ]);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.config.namespace.clone()),
                labels: Some(labels),
                resource_version: current.and_then(|c| c.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(spec),
        };
        let pp = PostParams::default();
        let result = match current {
            Some(_) => self.api.replace(name, &pp, &lease).await.map(|_| ()),
            None => self.api.create(&pp, &lease).await.map(|_| ()),
        };
        match result {
            Ok(()) => true,
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(err) => {
                tracing::warn!(lease = name, error = %err, "lease write failed");
                false
            }
        }
    }
}
