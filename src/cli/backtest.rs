//! `backout backtest`: replay a policy over Prometheus history and print every verdict change
//! and when the rollback would have fired (tuning a policy, and the rollback drill). The work is
//! in the library (`backout::backtest`); this file only reads flags and prints.

use anyhow::Context as _;
use backout::backtest::{self, report, time::parse_time, Mode, Schedule};
use backout::clock::{Clock, SystemClock};
use backout::policy::{load_with, LoadOptions, Policy};
use backout::settings::Settings;
use backout::source::{PrometheusConfig, PrometheusSource};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where Prometheus is when no flag or settings file says.
pub const DEFAULT_PROMETHEUS: &str = "http://127.0.0.1:9090";

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (templates come from templates.toml beside it).
    #[arg(long)]
    pub policy: PathBuf,
    /// When the canary started (or, with --bake, was promoted): RFC 3339, `now`, or `-2h`.
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the replay: RFC 3339, `now`, or `-30m`.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// Poll every STEP (default: the policy's analysis.interval, as the daemon does).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,
    /// Judge the stable alone, as during the bake after a promotion at --from.
    #[arg(long)]
    pub bake: bool,
    /// One JSON object per verdict change on stdout, then a summary object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// How to reach the Prometheus holding the history (shared with `explain --since`).
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Prometheus URL (default: `[prometheus] url` of --config, else http://127.0.0.1:9090).
    #[arg(long, env = "BACKOUT_PROMETHEUS__URL")]
    pub prometheus: Option<String>,
    /// Daemon settings: Prometheus credentials and CA, and the default analysis interval.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Time allowed for each range query (they are heavier than the daemon's instant queries).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
}

impl SourceArgs {
    /// The Prometheus client and policy-loading options these flags describe.
    pub fn resolve(&self) -> anyhow::Result<(PrometheusSource, LoadOptions, String)> {
        let (mut cfg, opts) = match &self.config {
            Some(path) => {
                let settings =
                    Settings::load(path).with_context(|| format!("--config {}", path.display()))?;
                let opts = LoadOptions {
                    default_interval: settings.poll_interval,
                };
                (settings.prometheus, opts)
            }
            None => (
                PrometheusConfig::for_url(DEFAULT_PROMETHEUS),
                LoadOptions::default(),
            ),
        };
        if let Some(url) = &self.prometheus {
            cfg.url = url.clone();
        }
        // Range queries are heavier than the daemon's instant ones: give the request and the
        // server-side evaluation at least --query-timeout.
        cfg.http_timeout = cfg.http_timeout.max(self.query_timeout);
        cfg.query_timeout = cfg.query_timeout.max(self.query_timeout);
        // Name where the offending setting came from: the flag or the settings file.
        let from = match (&self.prometheus, &self.config) {
            (Some(url), Some(path)) => {
                format!("--prometheus {url} with --config {}", path.display())
            }
            (Some(url), None) => format!("--prometheus {url}"),
            (None, Some(path)) => format!("--config {}", path.display()),
            (None, None) => format!("the default --prometheus {DEFAULT_PROMETHEUS}"),
        };
        let source = PrometheusSource::new(&cfg).with_context(|| from)?;
        Ok((source, opts, cfg.url))
    }
}

/// Loads the one policy in `path`, printing every problem (exit 1) like `validate` does.
pub fn load_one(path: &PathBuf, opts: &LoadOptions) -> anyhow::Result<Result<Policy, ExitCode>> {
    let mut policies = match load_with(std::slice::from_ref(path), opts) {
        Ok(p) => p,
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            return Ok(Err(ExitCode::FAILURE));
        }
    };
    match policies.len() {
        1 => Ok(Ok(policies.remove(0))),
        n => anyhow::bail!(
            "--policy {}: holds {n} policies; a backtest replays one service, pass one policy file",
            path.display()
        ),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (source, opts, url) = args.source.resolve()?;
    let policy = match load_one(&args.policy, &opts)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let now = SystemClock.now_millis();
    let from = parse_time("from", &args.from, now)?;
    // Prometheus has nothing after now: polls there would only read as missing data.
    let to = parse_time("to", &args.to, now)?.min(now);
    let mode = if args.bake { Mode::Bake } else { Mode::Canary };
    let schedule = Schedule::new(&policy, from, to, args.step, mode)?;
    let queries = backtest::queries(&policy);
    let started = Instant::now();
    let history = backtest::fetch(&source, &queries, &schedule, backtest::fetch::PARALLEL).await?;
    let fetched = started.elapsed();
    let replay = backtest::replay(&policy, &schedule, &history)?;
    let replayed = started.elapsed() - fetched;
    if args.json {
        print!("{}", report::json_lines(&replay)?);
    } else {
        print!("{}", report::human_summary(&replay));
        let sent = queries.len() * schedule.ranges().len();
        println!(
            "({sent} range quer{} to {url} in {:.2} s, replay in {:.2} s)",
            if sent == 1 { "y" } else { "ies" },
            fetched.as_secs_f64(),
            replayed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
