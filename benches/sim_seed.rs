//! Seeding the simulator with a synthetic fleet (`backout::sim::fleet`): N policies, each a
//! stable and a canary Deployment and a VirtualService, written into a fresh simulator until the
//! deployment controller has settled every rollout (ReplicaSets made, status written). This is
//! what `backout sim --fleet N` does at start-up, and what the fleet benchmark stages first.
//!
//! Run: `cargo bench --bench sim_seed` (50 and 1,000 policies). Larger fleets:
//! `SIM_SEED_SIZES=10000 cargo bench --bench sim_seed`. Figures: docs/performance.md.

use backout::policy::load::load_path;
use backout::policy::Policy;
use backout::sim::fleet::write_fleet_policies;
use backout::sim::{SimConfig, Simulator};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::{Duration, Instant};

fn sizes() -> Vec<usize> {
    std::env::var("SIM_SEED_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![50, 1_000])
}

fn fleet(n: usize) -> Vec<Policy> {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fleet_policies(dir.path(), n).expect("write fleet");
    load_path(dir.path()).expect("the fleet loads")
}

/// One seeding: a fresh simulator, every policy's objects, then until the controller is done.
async fn seed_once(policies: &[Policy]) -> Duration {
    let config = SimConfig {
        rollout_delay: Duration::from_millis(10),
    };
    let sim = Simulator::start_with("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("simulator");
    let started = Instant::now();
    for p in policies {
        sim.seed_policy(p).expect("seed");
    }
    let settled = sim
        .wait_controller_idle(Duration::from_millis(5), Duration::from_secs(600))
        .await;
    let took = started.elapsed();
    assert!(settled, "the controller did not settle");
    sim.shutdown().await;
    took
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sim_seed");
    group.sample_size(10);
    for n in sizes() {
        let policies = fleet(n);
        group.bench_with_input(BenchmarkId::new("policies", n), &policies, |b, ps| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(seed_once(ps)))
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
