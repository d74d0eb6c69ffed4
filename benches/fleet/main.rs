//! The fleet benchmark (issue 10, `just fleet`): the release daemon as a process against N
//! services with batched templates, a real Prometheus scraping a synthetic fleet exporter, and
//! the Kubernetes API simulator. Prints a markdown table of CPU, RSS, query and request rates,
//! evaluation lag, mitigation time of 20 canaries going bad together, and reload time.
//!
//! `cargo bench --bench fleet -- --services 1000 [--out FILE]` (cargo adds `--bench`). Under
//! `cargo test --all-targets` the binary runs without `--bench`: it then prints one line and
//! exits, because a real run takes minutes and needs the release daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod exporter;
mod kubeproxy;
mod measure;
mod mitigation;
mod probe;
mod report;
mod run;
mod stage;

#[derive(Parser, Debug)]
#[command(about = "backout fleet benchmark (issue 10)")]
pub struct Args {
    /// Services in the fleet (each: a policy, 2 Deployments, a VirtualService, 2 exporter tracks).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Steady measuring window (CPU, query and request rates, evaluation lag).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Wait after the daemon is ready before measuring (its first cycles, the policies' warm-up).
    #[arg(long, default_value = "70s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Prometheus scrape interval of the exporter.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// Canaries turned bad in the same second.
    #[arg(long, default_value_t = 20)]
    bad: usize,
    /// The simulator's rollout delay (how long pods take to become ready).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    rollout_delay: Duration,
    /// Give up waiting for the bad canaries' mitigation after this long.
    #[arg(long, default_value = "12m", value_parser = humantime::parse_duration)]
    mitigation_timeout: Duration,
    /// Give up waiting for the simulator to seed the fleet after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    seed_timeout: Duration,
    /// The backout binary (default: `release/backout` next to this benchmark's target dir).
    #[arg(long)]
    backout: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (`cargo test`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet: benchmark harness, not run under `cargo test`; run it with `just fleet`");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    // Dropping the run (error, Ctrl-C) drops every child handle, which kills the child.
    let outcome = tokio::select! {
        r = run::run(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(table) => {
            println!("{table}");
            if let Some(path) = &args.out {
                if let Err(e) = std::fs::write(path, &table) {
                    eprintln!("fleet: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("fleet: table written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
