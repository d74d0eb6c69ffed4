//! Leader election and sharding on the simulator's Leases, on paused tokio time: one holder at a
//! time, takeover within a lease duration, fencing before the lease can expire, fair shares.

#[path = "common/world.rs"]
mod world;

use backout::clock::Clock;
use backout::ha::{Elector, HaConfig, Ownership};
use backout::sample::Millis;
use backout::sim::{SimHandle, Simulator};
use backout::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct TokioClock(Instant);
impl Clock for TokioClock {
    fn now_millis(&self) -> Millis {
        1_800_000_000_000 + self.0.elapsed().as_millis() as Millis
    }
}

fn config(identity: &str, shards: u32) -> HaConfig {
    HaConfig {
        namespace: "backout-system".into(),
        name: "backout".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        shards,
    }
}

struct Replica {
    ownership: Ownership,
    task: JoinHandle<()>,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn replica(sim: &SimHandle, identity: &str, shards: u32) -> Replica {
    let ownership = Ownership::sharded(shards);
    let clock = Arc::new(TokioClock(Instant::now()));
    let elector = Elector::new(
        sim.in_process_client(),
        config(identity, shards),
        ownership.clone(),
        clock,
        Metrics::new(),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(elector.run(rx));
    Replica {
        ownership,
        task,
        _stop: stop,
    }
}

/// Samples every 100 ms for `secs`: no shard ever has two owners; returns the last holders.
async fn watch_exclusive(replicas: &[&Replica], shards: u32, secs: u64) -> Vec<usize> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut holders = vec![0usize; shards as usize];
        for r in replicas {
            for s in r.ownership.held() {
                holders[s as usize] += 1;
            }
        }
        assert!(holders.iter().all(|&n| n <= 1), "two actors: {holders:?}");
        if Instant::now() >= until {
            return replicas.iter().map(|r| r.ownership.held().len()).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn one_leader_and_a_standby_takes_over_within_a_lease_duration() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = replica(&sim, "a", 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = replica(&sim, "b", 1);
    let held = watch_exclusive(&[&a, &b], 1, 20).await;
    assert_eq!(held, vec![1, 0], "a leads, b stands by");
    assert_eq!(b.ownership.role(), "standby");

    // a dies (no release): b must wait out the lease, then lead.
    a.task.abort();
    let died = Instant::now();
    while b.ownership.held().is_empty() {
        assert!(
            died.elapsed() < Duration::from_secs(15 + 2 + 2),
            "no takeover within lease duration + retries"
        );
        assert!(
            died.elapsed() < Duration::from_secs(10) || !a.ownership.may_act("x/y"),
            "a fenced at its renew deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        died.elapsed() >= Duration::from_secs(13),
        "not before the lease could expire"
    );
    assert!(!a.ownership.may_act("x/y"));
    assert_eq!(b.ownership.role(), "leader");
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_stops_acting_before_its_lease_expires() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = replica(&sim, "a", 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = replica(&sim, "b", 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.ownership.role(), "leader");
    // From now on every Lease write fails (as when the API server refuses a's renewals).
    sim.faults()
        .server_errors(Some("PUT"), "/leases/backout-leader", 500, 8);
    let refused = Instant::now();
    while a.ownership.may_act("x/y") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fenced = refused.elapsed();
    assert!(fenced <= Duration::from_secs(10), "fenced after {fenced:?}");
    // b takes over only after a stopped, and only once the lease ran out for b.
    while b.ownership.held().is_empty() {
        assert!(!a.ownership.may_act("x/y"), "two leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused.elapsed() > fenced);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn twelve_shards_split_fairly_and_a_dead_replicas_shards_move() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = replica(&sim, "a", 12);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = replica(&sim, "b", 12);
    let c = replica(&sim, "c", 12);
    let held = watch_exclusive(&[&a, &b, &c], 12, 60).await;
    assert_eq!(held, vec![4, 4, 4], "fair shares after the others joined");

    c.task.abort();
    let held = watch_exclusive(&[&a, &b, &c], 12, 15 + 2 * 2 + 2).await;
    assert_eq!(held[0] + held[1], 12, "every shard held again: {held:?}");
    assert_eq!(held, vec![6, 6, 0], "{held:?}");
    sim.shutdown().await;
}

mod takeover {
    //! Two replicas (daemon + elector each) on one simulator; the leader is killed at a random
    //! point of a rollback; the standby finishes it. Writes are counted from the simulator's
    //! change feed: exactly one route change to 0 and one scale of the canary to 0, every time.

    use super::world::{policy, World};
    use super::{config, TokioClock};
    use backout::actuator::{Actuator, ActuatorConfig};
    use backout::daemon::Daemon;
    use backout::ha::{Elector, Ownership};
    use backout::sim::store::{Change, ChangeKind};
    use backout::telemetry::Metrics;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    struct Replica {
        ownership: Ownership,
        tasks: Vec<JoinHandle<()>>,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    fn replica(w: &World, identity: &str, p: &backout::policy::Policy) -> Replica {
        let ownership = Ownership::sharded(1);
        let mut ctx = w.context();
        let fence = Arc::new(ownership.clone());
        ctx.actuator = Arc::new(
            Actuator::new(
                ctx.client.clone(),
                ctx.clock.clone(),
                ActuatorConfig::default(),
            )
            .with_fence(fence),
        );
        let elector = Elector::new(
            ctx.client.clone(),
            config(identity, 1),
            ownership.clone(),
            Arc::new(TokioClock(Instant::now())),
            Metrics::new(),
        );
        let daemon = Daemon::new(ctx, vec![p.clone()]).with_ownership(ownership.clone());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let tasks = vec![
            tokio::spawn(elector.run(rx.clone())),
            tokio::spawn(async move {
                let _keep = _reload_tx;
                daemon.run(rx, reload_rx).await
            }),
        ];
        Replica {
            ownership,
            tasks,
            _stop: stop,
        }
    }

    /// How many changes set `pointer` of object `name` to `to` from something else.
    fn transitions(changes: &[Change], plural: &str, name: &str, pointer: &str, to: i64) -> usize {
        let mut last: Option<i64> = None;
        let mut n = 0;
        for c in changes.iter().filter(|c| {
            c.key.plural == plural && c.key.name == name && c.kind != ChangeKind::Deleted
        }) {
            let v = c.object.pointer(pointer).and_then(|v| v.as_i64());
            if v == Some(to) && last != Some(to) {
                n += 1;
            }
            last = v;
        }
        n
    }

    async fn one_run(seed: u64) -> Duration {
        let web = policy("web");
        let w = World::new(std::slice::from_ref(&web), Duration::from_secs(20)).await;
        let mut feed = w.sim.store().feed();
        let a = replica(&w, "a", &web);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = replica(&w, "b", &web);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (leader, standby) = if a.ownership.held().is_empty() {
            (b, a)
        } else {
            (a, b)
        };
        w.sampler.turn_bad(&["web"]);
        // Kill the leader somewhere from before detection to after mitigation (the pre-scale
        // waits on a 20 s rollout, so most kill points land mid-rollback).
        let kill_at = rand::rngs::StdRng::seed_from_u64(seed).random_range(0..40_000);
        tokio::time::sleep(Duration::from_millis(kill_at)).await;
        for t in &leader.tasks {
            t.abort();
        }
        let killed = Instant::now();
        while standby.ownership.held().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let takeover = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(w.mitigated(&web), "seed {seed}: not mitigated");
        let mut changes = Vec::new();
        while let Ok(c) = feed.try_recv() {
            changes.push(c);
        }
        let route = "/spec/http/1/route/1/weight";
        assert_eq!(
            transitions(&changes, "virtualservices", "web", route, 0),
            1,
            "seed {seed} (kill at {kill_at} ms): route changed to 0 once"
        );
        assert_eq!(
            transitions(&changes, "deployments", "web-canary", "/spec/replicas", 0),
            1,
            "seed {seed} (kill at {kill_at} ms): canary scaled to 0 once"
        );
        let backups = w
            .sim
            .store()
            .read(|t| t.list("", "configmaps", Some("prod")));
        assert_eq!(backups.len(), 1, "seed {seed}: one rollback");
        let state = backups[0]
            .pointer("/metadata/annotations/backout.dev~1rollback-state")
            .and_then(|s| s.as_str());
        assert_eq!(state, Some("completed"), "seed {seed}");
        for t in standby.tasks.iter().chain(&leader.tasks) {
            t.abort();
        }
        w.sim.shutdown().await;
        takeover
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_killed_at_50_random_points_of_a_rollback_never_doubles_an_action() {
        let mut takeovers = Vec::new();
        for seed in 0..50 {
            takeovers.push(one_run(seed).await);
        }
        takeovers.sort();
        eprintln!(
            "takeover (leader killed -> standby holds the lease): median {:?}, p90 {:?}, max {:?}",
            takeovers[25], takeovers[45], takeovers[49]
        );
        assert!(takeovers[49] <= Duration::from_secs(15 + 2 + 1));
    }
}

mod sharded {
    //! Three daemons, twelve shards, 24 services: each service is judged by exactly one replica,
    //! before and after one replica dies.

    use super::world::{policy, Scripted, World};
    use super::{config, TokioClock};
    use backout::daemon::Daemon;
    use backout::ha::{Elector, Ownership};
    use backout::policy::Policy;
    use backout::telemetry::Metrics;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    struct Replica {
        sampler: Arc<Scripted>,
        tasks: Vec<JoinHandle<()>>,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    fn replica(w: &World, identity: &str, policies: &[Policy]) -> Replica {
        let ownership = Ownership::sharded(12);
        let sampler = Arc::new(Scripted::new(w.sampler.origin));
        let mut ctx = w.context();
        ctx.sampler = sampler.clone();
        let elector = Elector::new(
            ctx.client.clone(),
            config(identity, 12),
            ownership.clone(),
            Arc::new(TokioClock(Instant::now())),
            Metrics::new(),
        );
        let daemon = Daemon::new(ctx, policies.to_vec()).with_ownership(ownership);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let tasks = vec![
            tokio::spawn(elector.run(rx.clone())),
            tokio::spawn(async move {
                let _keep = reload_tx;
                daemon.run(rx, reload_rx).await
            }),
        ];
        Replica {
            sampler,
            tasks,
            _stop: stop,
        }
    }

    fn now_ms(w: &World) -> u64 {
        w.sampler.origin.elapsed().as_millis() as u64
    }

    /// Each service was judged by exactly one of `live` over the window starting at `since`.
    fn judged_once(live: &[&Replica], all: &BTreeSet<String>, since: u64) {
        let mut seen = BTreeSet::new();
        for r in live {
            let mine = r.sampler.services_since(since);
            for s in &mine {
                assert!(seen.insert(s.clone()), "{s} judged by two replicas");
            }
        }
        assert_eq!(&seen, all, "every service judged");
    }

    #[tokio::test(start_paused = true)]
    async fn every_service_is_judged_by_exactly_one_replica_before_and_after_one_dies() {
        let policies: Vec<Policy> = (0..24).map(|i| policy(&format!("s{i:02}"))).collect();
        let all: BTreeSet<String> = policies.iter().map(|p| p.service.clone()).collect();
        let w = World::new(&policies, Duration::from_secs(1)).await;
        let a = replica(&w, "a", &policies);
        let b = replica(&w, "b", &policies);
        let c = replica(&w, "c", &policies);
        tokio::time::sleep(Duration::from_secs(60)).await; // shares settle
        let since = now_ms(&w);
        tokio::time::sleep(Duration::from_secs(20)).await;
        judged_once(&[&a, &b, &c], &all, since);

        for t in &c.tasks {
            t.abort();
        }
        tokio::time::sleep(Duration::from_secs(15 + 2 * 2 + 2)).await;
        let since = now_ms(&w);
        tokio::time::sleep(Duration::from_secs(20)).await;
        judged_once(&[&a, &b], &all, since);
        w.sim.shutdown().await;
    }
}
