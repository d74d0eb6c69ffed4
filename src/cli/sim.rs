//! `backout sim`: the Kubernetes API simulator on its own, so anyone can point kubectl (and
//! backout) at a cluster-shaped server without a cluster.

use anyhow::Context;
use backout::policy::model::Policy;
use backout::sim::{SimConfig, Simulator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policies = match &args.seed_policies {
        Some(dir) => load_policies(dir)?,
        None => Vec::new(),
    };
    let config = SimConfig {
        rollout_delay: args.rollout_delay,
    };
    let sim = Simulator::start_with(args.listen, config).await?;
    for p in &policies {
        sim.seed_policy(p)
            .with_context(|| format!("seeding objects for {}", p.source.display()))?;
    }
    let namespace = policies
        .first()
        .map(|p| p.namespace.as_str())
        .unwrap_or("default");
    sim.write_kubeconfig(&args.kubeconfig, namespace)?;
    println!("backout simulator listening on {}", sim.url());
    for p in &policies {
        println!(
            "  seeded {}: deployments {}/{} and {}, virtualservice {} (route {} 90/10)",
            p.source.display(),
            p.namespace,
            p.deployments.stable,
            p.deployments.canary,
            p.traffic.virtual_service,
            p.traffic.route
        );
    }
    println!("kubeconfig written to {}", args.kubeconfig.display());
    println!(
        "try:  kubectl --kubeconfig {} get deploy,rs,vs -A",
        args.kubeconfig.display()
    );
    println!("stop with Ctrl-C");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
