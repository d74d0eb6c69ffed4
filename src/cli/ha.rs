//! `[ha]` for `backout run`: the Lease settings resolved from the pod's environment, the
//! ownership the daemon and the actuator consult, and the elector task.

use backout::daemon::fleet_guard::FleetGuard;
use backout::daemon::Context;
use backout::ha::{Elector, HaConfig, Ownership};
use backout::settings::{Ha, Settings};

/// The Lease settings with the pod's namespace and name filled in (the Downward API sets
/// `POD_NAMESPACE` and `POD_NAME` in deploy/).
pub fn config(ha: &Ha) -> HaConfig {
    let identity = ha
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "backout".into());
            format!("{host}-{}", std::process::id())
        });
    HaConfig {
        namespace: ha
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into()),
        name: ha.lease_name.clone(),
        identity,
        lease_duration: ha.lease_duration,
        renew_deadline: ha.renew_deadline,
        retry_period: ha.retry_period,
        shards: ha.shards,
    }
}

/// What this replica may act for: everything without HA, nothing until the elector takes a
/// Lease with it.
pub fn ownership(ha: &Ha) -> Ownership {
    if ha.enabled {
        Ownership::sharded(ha.shards)
    } else {
        Ownership::standalone()
    }
}

/// With HA on, the elector that maintains `ownership`.
pub fn elector(ha: &Ha, ctx: &Context, ownership: &Ownership) -> Option<Elector> {
    if !ha.enabled {
        return None;
    }
    let config = config(ha);
    tracing::info!(identity = %config.identity, namespace = %config.namespace, shards = config.shards, "high availability on Leases");
    Some(Elector::new(
        ctx.client.clone(),
        config,
        ownership.clone(),
        ctx.clock.clone(),
        ctx.metrics.clone(),
    ))
}

/// The fleet guard from `[fleet]`, counting in the `[ha]` namespace unless set; `None` when off.
pub fn fleet_guard(settings: &Settings, client: &kube::Client) -> Option<FleetGuard> {
    let fleet = &settings.fleet;
    if fleet.max_rollbacks == 0 {
        return None;
    }
    let namespace = fleet
        .namespace
        .clone()
        .unwrap_or_else(|| config(&settings.ha).namespace);
    Some(FleetGuard::new(
        client.clone(),
        &namespace,
        fleet.max_rollbacks,
        fleet.per,
    ))
}
