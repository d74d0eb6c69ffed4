//! Decision-quality benchmark harness: runs every scenario through backout's default rule and
//! the peers' rules and prints the markdown table kept in docs/decision-quality.md.
//!
//! `cargo run --release --bin quality -- --runs 500`

use backout::quality::bench::{markdown, run};
use backout::quality::judges::Judge;
use backout::quality::scenario::catalogue;
use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Decision-quality benchmark: backout vs Flagger, Argo Rollouts and Kayenta")]
struct Args {
    /// Seeds (runs) per scenario.
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let scenarios: Vec<_> = catalogue()
        .into_iter()
        .filter(|s| args.only.as_deref().is_none_or(|o| s.name.contains(o)))
        .collect();
    if scenarios.is_empty() {
        eprintln!("error: no scenario name contains {:?}", args.only);
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let reports = run(&scenarios, &Judge::all(), args.runs, threads);
    print!("{}", markdown(&reports));
    eprintln!(
        "{} scenarios x {} runs in {:.1} s on {threads} threads",
        scenarios.len(),
        args.runs,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
