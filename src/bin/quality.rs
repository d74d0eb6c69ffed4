//! Decision-quality benchmark harness: runs every scenario through backout's default rule and
//! the peers' rules and prints the markdown table kept in docs/decision-quality.md.
//!
//! `cargo run --release --bin quality -- --runs 500`

#![forbid(unsafe_code)]

use backout::quality::bench::{markdown, run};
use backout::quality::judges::{Judge, DEFAULT_POLL_SECS, DEFAULT_WARMUP_SECS};
use backout::quality::policies;
use backout::quality::scenario::catalogue;
use backout::stats::sequential::SequentialConfig;
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
    /// Also run backout with this alpha (tuning; the default column always runs).
    #[arg(long)]
    alpha: Option<f64>,
    /// Also run backout with this margin.
    #[arg(long)]
    margin: Option<f64>,
    /// Also run backout polling this often (seconds).
    #[arg(long)]
    poll: Option<u64>,
    /// Also run backout ignoring the first N seconds after the canary starts.
    #[arg(long)]
    warmup: Option<u64>,
    /// Also run backout with this warm-up alpha (0 disables the warm-up test).
    #[arg(long)]
    warmup_alpha: Option<f64>,
    /// Only the judges whose name contains this (the table's other rows are left out).
    #[arg(long)]
    judges: Option<String>,
    /// Instead of the table: for the policies `--judges` keeps, the polls before every rollback
    /// (of a shared incident: at or after its start), with the counts the shared-cause test saw.
    /// Runs are numbered as in the table only for the same `--only`.
    #[arg(long)]
    trace: bool,
    /// Instead of the table: the price of not knowing the effect on the expected path of this
    /// error-step scenario (`quality::frontier`), for backout, the ceilings and the minimax
    /// mixtures; the errors each needs as a multiple of the ceiling's.
    #[arg(long, num_args = 0..=1, default_missing_value = "errors x5, 20 rps")]
    frontier: Option<String>,
    /// With `--frontier`: the budget, in multiples of the ceiling's median (the 1.2).
    #[arg(long, default_value_t = 1.2)]
    budget: f64,
    /// With `--frontier`: price backout's Beta mixture with these concentrations instead of
    /// the defaults (comma-separated).
    #[arg(long, value_delimiter = ',')]
    concentrations: Option<Vec<f64>>,
    /// Where the example policies are (judged next to the built-in rules).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples"))]
    examples: std::path::PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if let Some(name) = &args.frontier {
        let default = SequentialConfig::default();
        let cfg = SequentialConfig {
            concentrations: args
                .concentrations
                .clone()
                .unwrap_or(default.concentrations),
            ..default
        };
        return frontier(name, &cfg, args.budget);
    }
    let scenarios: Vec<_> = catalogue()
        .into_iter()
        .filter(|s| args.only.as_deref().is_none_or(|o| s.name.contains(o)))
        .collect();
    if scenarios.is_empty() {
        eprintln!("error: no scenario name contains {:?}", args.only);
        return ExitCode::from(2);
    }
    let started = std::time::Instant::now();
    let examples = match policies::examples(&args.examples) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "error: the example policies in {}: {e}",
                args.examples.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut judges = Judge::with_policies(examples);
    let tuned = args.alpha.is_some()
        || args.margin.is_some()
        || args.poll.is_some()
        || args.warmup.is_some()
        || args.warmup_alpha.is_some();
    if tuned {
        let default = SequentialConfig::default();
        let config = SequentialConfig {
            alpha: args.alpha.unwrap_or(default.alpha),
            margin: args.margin.unwrap_or(default.margin),
            ..default
        };
        let poll_secs = args.poll.unwrap_or(DEFAULT_POLL_SECS);
        let warmup_secs = args.warmup.unwrap_or(DEFAULT_WARMUP_SECS);
        judges.insert(
            1,
            Judge::Backout {
                config: config.clone(),
                poll_secs,
                warmup_secs,
                warmup_alpha: args.warmup_alpha,
            },
        );
        judges.push(Judge::Ceiling {
            config,
            poll_secs,
            warmup_secs,
            warmup_alpha: args.warmup_alpha,
            told: backout::quality::ceiling::Told::Effect,
        });
    }
    if let Some(only) = &args.judges {
        judges.retain(|j| j.name().contains(only.as_str()));
    }
    if args.trace {
        for (idx, s) in scenarios.iter().enumerate() {
            for judge in judges.iter().filter(|j| j.applies(s)) {
                print!(
                    "{}",
                    backout::quality::trace::rollbacks(idx, s, judge, args.runs)
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    let reports = run(&scenarios, &judges, args.runs, threads);
    print!("{}", markdown(&reports));
    eprintln!(
        "{} scenarios x {} runs in {:.1} s on {threads} threads",
        scenarios.len(),
        args.runs,
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn frontier(name: &str, cfg: &SequentialConfig, budget: f64) -> ExitCode {
    let priced = catalogue().into_iter().find_map(|s| {
        (s.name == name).then(|| {
            backout::quality::frontier::for_scenario(&s, cfg, DEFAULT_WARMUP_SECS, budget)
        })?
    });
    match priced {
        Some(Ok(table)) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!(
                "error: --frontier needs the name of an error step from the start at fixed \
                 traffic, e.g. \"errors x5, 20 rps\"; got {name:?}"
            );
            ExitCode::from(2)
        }
    }
}
