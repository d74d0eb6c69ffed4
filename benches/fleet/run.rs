//! One benchmark run, phase by phase: stage, warm up, steady window, reload, 20 canaries bad.

use crate::exporter::FleetExporter;
use crate::kubeproxy::KubeProxy;
use crate::measure::{self, Scrape};
use crate::mitigation::{self, Target};
use crate::probe;
use crate::report::{self, Results};
use crate::stage::{self, Daemon, DaemonConfig};
use crate::Args;
use anyhow::{bail, Context as _};
use backout::promserver::PromServer;
use backout::sim::fleet::{namespace_of, service_name, write_fleet_policies};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LAG: &str = "backout_evaluation_lag_seconds";
const LAG_OWN: &str = "backout_evaluation_lag_own_seconds";
/// How long Prometheus took to answer the daemon's queries: splits evaluation lag between
/// Prometheus and the daemon's own cycle.
const QUERY_DURATION: &str = "backout_query_duration_seconds";
const QUERIES: &str = "backout_queries_total";
const EVALUATIONS: &str = "backout_evaluations_total";
const KUBE_REQUESTS: &str = "backout_kubernetes_requests_total";
const RELOADS: &str = "backout_policy_reloads_total";
const RELOAD_DURATION: &str = "backout_policy_reload_duration_seconds";

/// Progress on stderr, so stdout is the table alone.
fn say(start: Instant, what: &str) {
    eprintln!("fleet [{:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

fn backout_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let bin = match &args.backout {
        Some(b) => b.clone(),
        // This binary is `<target>/release/deps/fleet-<hash>`.
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locating the target directory")?
            .join("backout"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --release --bin backout`; `just fleet` does)",
            bin.display()
        );
    }
    Ok(bin)
}

fn commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "?".into(), |s| s.trim().to_string())
}

/// Prometheus's own count of instant queries (the daemon POSTs to `/api/v1/query`), from its
/// `/metrics`: the benchmark's Prometheus does not scrape itself.
async fn prom_query_count(http: &reqwest::Client, prom: &str) -> Option<f64> {
    measure::scrape(http, prom).await.ok()?.sum_where(
        "prometheus_http_requests_total",
        Some(("handler", "/api/v1/query")),
    )
}

/// Sleeps `d`, failing early if the daemon dies.
async fn watch_daemon(daemon: &mut Daemon, d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        daemon.check_alive()?;
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(2))).await;
    }
    Ok(())
}

fn lag_quantiles(a: &Scrape, b: &Scrape) -> Option<(f64, f64)> {
    quantiles(a, b, LAG)
}

/// p50 and p99 of a histogram's observations between two scrapes.
fn quantiles(a: &Scrape, b: &Scrape, name: &str) -> Option<(f64, f64)> {
    let buckets = measure::bucket_delta(a, b, name)?;
    Some((
        measure::quantile(0.5, &buckets)?,
        measure::quantile(0.99, &buckets)?,
    ))
}

/// Everything running for one run; dropping it stops every process.
struct World {
    _root: tempfile::TempDir,
    exporter: FleetExporter,
    prom: PromServer,
    sim: stage::Sim,
    proxy: KubeProxy,
    daemon: Daemon,
    http: reqwest::Client,
    policy_dir: std::path::PathBuf,
}

async fn stage_world(args: &Args, start: Instant, r: &mut Results) -> anyhow::Result<World> {
    let bin = backout_binary(args)?;
    let root = tempfile::Builder::new().prefix("backout-fleet").tempdir()?;
    let policy_dir = root.path().join("policies");
    write_fleet_policies(&policy_dir, args.services)?;
    stage::validate(&bin, &policy_dir)?;
    say(
        start,
        &format!("{} policies written and valid", args.services),
    );
    let services: Vec<String> = (0..args.services).map(service_name).collect();
    let exporter = FleetExporter::start(&services).await?;
    let prom = PromServer::builder()
        .scrape(exporter.addr)
        .scrape_interval(args.scrape_interval)
        .start()
        .await?;
    r.prometheus = prom.version.clone();
    say(
        start,
        &format!("exporter at {}, Prometheus at {}", exporter.addr, prom.url),
    );
    let sim = stage::start_sim(
        &bin,
        root.path(),
        &policy_dir,
        args.rollout_delay,
        args.seed_timeout,
    )
    .await?;
    r.seeded = sim.seeded;
    let up = sim.up_in.as_secs_f64();
    say(
        start,
        &format!("simulator up at {} after {up:.1} s", sim.url),
    );
    prom.wait_for_scrapes(2, Duration::from_secs(120)).await?;
    match probe::phase_queries(&prom.url, &services).await {
        Ok(secs) => r.prom_alone = Some(secs),
        Err(e) => say(start, &format!("Prometheus-alone probe failed: {e:#}")),
    }
    let proxy = KubeProxy::start(&sim.url, &sim.kubeconfig, root.path()).await?;
    let admin_port = backout::promserver::free_port()?;
    let config = stage::write_settings(
        root.path(),
        &DaemonConfig {
            prometheus: &prom.url,
            policies: &policy_dir,
            kubeconfig: &proxy.kubeconfig,
            admin_port,
        },
    )?;
    let daemon = stage::start_daemon(
        &bin,
        root.path(),
        &config,
        admin_port,
        Duration::from_secs(180),
    )
    .await?;
    say(
        start,
        &format!(
            "daemon ready (pid {}, logs in {})",
            daemon.pid,
            root.path().display()
        ),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    Ok(World {
        _root: root,
        exporter,
        prom,
        sim,
        proxy,
        daemon,
        http,
        policy_dir,
    })
}

/// CPU, query and request rates and evaluation lag over the steady window.
async fn steady(w: &mut World, args: &Args, r: &mut Results) -> anyhow::Result<()> {
    let ticks = measure::clock_ticks();
    let (c0, p0, k0) = (
        measure::cpu(w.daemon.pid)?,
        prom_query_count(&w.http, &w.prom.url).await,
        w.proxy.requests(),
    );
    let s0 = measure::scrape(&w.http, &w.daemon.admin).await?;
    watch_daemon(&mut w.daemon, args.duration).await?;
    let s1 = measure::scrape(&w.http, &w.daemon.admin).await?;
    let (c1, p1, k1) = (
        measure::cpu(w.daemon.pid)?,
        prom_query_count(&w.http, &w.prom.url).await,
        w.proxy.requests(),
    );
    let secs = s1.at.duration_since(s0.at).as_secs_f64();
    r.cores = Some(measure::cores(c0, c1, ticks));
    r.queries_per_sec = measure::rate(&s0, &s1, QUERIES);
    r.evaluations_per_sec = measure::rate(&s0, &s1, EVALUATIONS);
    r.prom_queries_per_sec = p0.zip(p1).map(|(a, b)| (b - a) / secs);
    r.kube_per_sec_daemon = measure::rate(&s0, &s1, KUBE_REQUESTS);
    r.kube_per_sec_proxy = Some(k1.saturating_sub(k0) as f64 / secs);
    r.lag_steady = lag_quantiles(&s0, &s1);
    r.lag_own_steady = quantiles(&s0, &s1, LAG_OWN);
    r.query_steady = quantiles(&s0, &s1, QUERY_DURATION);
    Ok(())
}

/// SIGHUP, then the daemon's reload gauge; from outside, how long until the reload counter moved.
/// The counter moves when the files are read; the gauge when the new set is in force, so the
/// gauge is read once it changed (the first reload's gauge starts at 0).
async fn reload(w: &mut World) -> anyhow::Result<(Option<f64>, Option<Duration>)> {
    let first = measure::scrape(&w.http, &w.daemon.admin).await?;
    let before = first.sum(RELOADS).unwrap_or(0.0);
    let gauge_before = first.sum(RELOAD_DURATION).unwrap_or(0.0);
    let sent = Instant::now();
    let mut seen = None;
    stage::sighup(w.daemon.pid)?;
    while sent.elapsed() < Duration::from_secs(120) {
        w.daemon.check_alive()?;
        let s = measure::scrape(&w.http, &w.daemon.admin).await?;
        if s.sum(RELOADS).unwrap_or(0.0) > before {
            seen.get_or_insert(sent.elapsed());
            let gauge = s.sum(RELOAD_DURATION).unwrap_or(0.0);
            if gauge != gauge_before {
                return Ok((Some(gauge), seen));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the daemon did not reload within 120 s of SIGHUP")
}

/// Two reloads: one where no file changed (what a SIGHUP after an unrelated edit costs), and one
/// after every policy file was rewritten (a comment appended), so all of them are read, parsed
/// and validated again: the cost the target is about.
async fn reloads(w: &mut World, r: &mut Results) -> anyhow::Result<()> {
    (r.reload_unchanged, _) = reload(w).await?;
    watch_daemon(&mut w.daemon, Duration::from_secs(5)).await?;
    touch_policies(&w.policy_dir)?;
    (r.reload, r.reload_seen) = reload(w).await?;
    Ok(())
}

/// Appends a comment to every policy file: the bytes change, the policies do not.
fn touch_policies(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
            writeln!(f, "# touched by the fleet benchmark's reload")?;
        }
    }
    Ok(())
}

/// Turns `args.bad` canaries bad at one instant; waits for their mitigation, and measures the
/// evaluation lag from the onset until the rollbacks' rollouts have had time to finish.
async fn rollbacks(w: &mut World, args: &Args, r: &mut Results) -> anyhow::Result<()> {
    let n = args.bad.min(args.services).max(1);
    let picked: Vec<usize> = (0..n).map(|k| k * args.services / n).collect();
    let targets: Vec<Target> = picked
        .iter()
        .map(|&i| Target {
            namespace: namespace_of(i),
            service: service_name(i),
        })
        .collect();
    let names: Vec<String> = targets.iter().map(|t| t.service.clone()).collect();
    let (c0, k0) = (measure::cpu(w.daemon.pid)?, w.proxy.requests());
    let s0 = measure::scrape(&w.http, &w.daemon.admin).await?;
    w.exporter.turn_bad(&names);
    let onset = Instant::now();
    r.mitigations = mitigation::wait_all(
        &w.http,
        &w.sim.url,
        &targets,
        onset,
        args.mitigation_timeout,
    )
    .await;
    w.daemon.check_alive()?;
    // Rollbacks go on after mitigation (Verify waits for the rollout): keep the lag window open.
    watch_daemon(&mut w.daemon, args.rollout_delay + Duration::from_secs(10)).await?;
    let s1 = measure::scrape(&w.http, &w.daemon.admin).await?;
    let (c1, k1) = (measure::cpu(w.daemon.pid)?, w.proxy.requests());
    let secs = s1.at.duration_since(s0.at).as_secs_f64();
    r.rollback_window = Some(s1.at.duration_since(s0.at));
    r.cores_rollbacks = Some(measure::cores(c0, c1, measure::clock_ticks()));
    r.kube_rollbacks_daemon = measure::rate(&s0, &s1, KUBE_REQUESTS);
    r.kube_rollbacks_proxy = Some(k1.saturating_sub(k0) as f64 / secs);
    r.lag_rollbacks = lag_quantiles(&s0, &s1);
    r.lag_own_rollbacks = quantiles(&s0, &s1, LAG_OWN);
    r.query_rollbacks = quantiles(&s0, &s1, QUERY_DURATION);
    Ok(())
}

/// The whole run; returns the markdown table.
pub async fn run(args: &Args) -> anyhow::Result<String> {
    let start = Instant::now();
    let mut r = Results {
        services: args.services,
        steady: args.duration,
        scrape_interval: args.scrape_interval,
        commit: commit(),
        ..Results::default()
    };
    let mut w = stage_world(args, start, &mut r).await?;
    say(start, &format!("warm-up {:?}", args.warmup));
    watch_daemon(&mut w.daemon, args.warmup).await?;
    r.mark_rss("after warm-up", w.daemon.pid);
    say(start, &format!("steady window {:?}", args.duration));
    steady(&mut w, args, &mut r).await?;
    r.mark_rss("after the steady window", w.daemon.pid);
    say(
        start,
        "reloads (SIGHUP: nothing changed, then every file changed)",
    );
    reloads(&mut w, &mut r).await?;
    watch_daemon(&mut w.daemon, Duration::from_secs(10)).await?;
    r.mark_rss("after the reloads", w.daemon.pid);
    say(start, &format!("{} canaries bad now", args.bad));
    rollbacks(&mut w, args, &mut r).await?;
    r.mark_rss("after the rollbacks", w.daemon.pid);
    r.peak_rss = measure::peak_rss(w.daemon.pid).ok();
    say(start, "done");
    Ok(report::render(&r))
}
