//! `backout sim`: the Kubernetes API simulator on its own, so anyone can point kubectl (and
//! backout) at a cluster-shaped server without a cluster.

use anyhow::Context;
use backout::policy::model::Policy;
use backout::sim::fleet::write_fleet_policies;
use backout::sim::{SimConfig, Simulator};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long start-up waits for the deployment controller to settle the seeded rollouts before
/// serving anyway (it goes on settling in the background).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (plain HTTP; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the simulator.
    #[arg(long, default_value = "backout-sim.kubeconfig")]
    kubeconfig: PathBuf,
    /// Directory of policy TOML files; each policy's Deployments and VirtualService are created.
    #[arg(long)]
    seed_policies: Option<PathBuf>,
    /// Writes a synthetic fleet of N policies (batched templates, 4 metrics each) into the
    /// --seed-policies directory (default `backout-fleet`) first, then seeds it.
    #[arg(long, value_name = "N")]
    fleet: Option<usize>,
    /// How long simulated pods take to become ready after a rollout or scale.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    rollout_delay: Duration,
}

fn load_policies(dir: &PathBuf) -> anyhow::Result<Vec<Policy>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read the policy directory {}; pass an existing directory to --seed-policies",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "templates.toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut policy: Policy = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid policy (see docs for the keys)",
                path.display()
            )
        })?;
        policy.source = path;
        out.push(policy);
    }
    Ok(out)
}

/// Above this many policies the per-policy lines are summarised in one.
const LIST_AT_MOST: usize = 20;

/// The policy directory to seed from, after writing the synthetic fleet into it when asked.
fn policy_dir(args: &Args) -> anyhow::Result<Option<PathBuf>> {
    let Some(n) = args.fleet else {
        return Ok(args.seed_policies.clone());
    };
    let dir = args
        .seed_policies
        .clone()
        .unwrap_or_else(|| PathBuf::from("backout-fleet"));
    write_fleet_policies(&dir, n).with_context(|| {
        format!(
            "cannot write the fleet policies into {}; pass a writable directory with --seed-policies",
            dir.display()
        )
    })?;
    println!(
        "wrote {n} fleet policies and templates.toml to {}",
        dir.display()
    );
    Ok(Some(dir))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policies = match policy_dir(&args)? {
        Some(dir) => load_policies(&dir)?,
        None => Vec::new(),
    };
    let config = SimConfig {
        rollout_delay: args.rollout_delay,
    };
    let sim = Simulator::start_with(args.listen, config).await?;
    let started = Instant::now();
    for p in &policies {
        sim.seed_policy(p)
            .with_context(|| format!("seeding objects for {}", p.source.display()))?;
    }
    if !policies.is_empty() {
        let written = started.elapsed();
        let settled = sim
            .wait_controller_idle(Duration::from_millis(50), SETTLE_TIMEOUT)
            .await;
        println!(
            "seeded {} policies ({} objects) in {:.2} s; deployment controller {} after {:.2} s",
            policies.len(),
            policies.len() * 3,
            written.as_secs_f64(),
            if settled { "settled" } else { "still busy" },
            started.elapsed().as_secs_f64()
        );
    }
    let namespace = policies
        .first()
        .map(|p| p.namespace.as_str())
        .unwrap_or("default");
    sim.write_kubeconfig(&args.kubeconfig, namespace)?;
    println!("backout simulator listening on {}", sim.url());
    if policies.len() > LIST_AT_MOST {
        println!(
            "  seeded {} policies from {} (namespaces {} .. {})",
            policies.len(),
            policies[0]
                .source
                .parent()
                .unwrap_or(Path::new("."))
                .display(),
            policies[0].namespace,
            policies[policies.len() - 1].namespace
        );
    }
    for p in policies
        .iter()
        .take_while(|_| policies.len() <= LIST_AT_MOST)
    {
        let router = match p.traffic.router_object() {
            Some(name) => format!(
                "{} {name} ({} 90/10)",
                p.traffic.router().describe(),
                p.traffic.split_name()
            ),
            None => "no router (traffic follows the ready replicas)".into(),
        };
        println!(
            "  seeded {}: deployments {}/{} and {}, {router}",
            p.source.display(),
            p.namespace,
            p.deployments.stable,
            p.deployments.canary,
        );
    }
    println!("kubeconfig written to {}", args.kubeconfig.display());
    println!(
        "try:  kubectl --kubeconfig {} get deploy,rs,vs,httproutes -A",
        args.kubeconfig.display()
    );
    println!("stop with Ctrl-C");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
