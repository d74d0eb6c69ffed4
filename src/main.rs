//! The `backout` binary: a thin command-line shell over the library. `anyhow` lives only here.

#![forbid(unsafe_code)]

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc for the binary (the library leaves the choice to whoever links it). With glibc's
/// malloc the daemon's resident memory sat far above its heap: tokio's worker threads each get an
/// arena, and freed pages of the batched answers stay resident in them. Measured in
/// docs/performance.md ("Third pass: memory"). Heap profilers that hook `malloc` (heaptrack) do
/// not see jemalloc's allocations: profile a build with this item removed.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "backout",
    version,
    about = "Metrics-driven automatic canary rollback for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // One line per subcommand; each lives in src/cli/<name>.rs.
    /// The embedded demo: simulated cluster and workload, a bad canary caught and rolled back.
    #[cfg(feature = "demo")]
    Demo(cli::demo::Args),
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(cli::NotBuilt),
    /// Run the daemon: watch every service in the policies and roll back bad canaries.
    Run(cli::run::Args),
    /// Check policy files (and optionally daemon settings); list every problem; exit 0/1.
    Validate(cli::validate::Args),
    /// Print a policy as the daemon runs it, with the rendered query per metric and track.
    Explain(cli::explain::Args),
    /// Roll a service back by hand: traffic to stable, canary to 0, stable undone to a revision.
    Rollback(cli::rollback::Args),
    /// Run the in-process Kubernetes API simulator and write a kubeconfig for kubectl.
    #[cfg(feature = "sim")]
    Sim(cli::sim::Args),
    #[cfg(not(feature = "sim"))]
    #[command(hide = true, disable_help_flag = true)]
    Sim(cli::NotBuilt),
    /// Write the backout policy equivalent to a Flagger Canary or an Argo AnalysisTemplate.
    Import(cli::import::Args),
    /// Show what the daemon sees: every service, or one with its metrics against their levels.
    Status(cli::status::Args),
    /// Replay a policy over Prometheus history: every verdict change and when it would roll back.
    Backtest(cli::backtest::Args),
    /// Versions rolled back and remembered as bad: `list`, `forget IMAGE`.
    BadVersions(cli::bad_versions::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "demo")]
            Command::Demo(args) => cli::demo::run(args).await,
            #[cfg(not(feature = "demo"))]
            Command::Demo(_) => cli::not_built("demo", "demo"),
            Command::Run(args) => cli::run::run(args).await,
            Command::Validate(args) => cli::validate::run(args).await,
            Command::Explain(args) => cli::explain::run(args).await,
            Command::Rollback(args) => cli::rollback::run(args).await,
            #[cfg(feature = "sim")]
            Command::Sim(args) => cli::sim::run(args).await,
            #[cfg(not(feature = "sim"))]
            Command::Sim(_) => cli::not_built("sim", "sim"),
            Command::Backtest(args) => cli::backtest::run(args).await,
            Command::Import(args) => cli::import::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::BadVersions(args) => cli::bad_versions::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
