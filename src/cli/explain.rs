//! `backout explain`: show the policy exactly as the daemon will run it (templates applied,
//! defaults filled) and the PromQL it will send for each track, so nothing is a surprise.

use anyhow::Context;
use backout::decision::{detector_alpha, main_alpha, threshold_text, Rule, Test};
use backout::policy::{self, feeds, Input, Policy};
use backout::sample::{duration, Track};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (templates come from templates.toml beside it).
    #[arg(long)]
    pub policy: PathBuf,
    /// `--since` (and where Prometheus is): the live standing, see explain_live.rs.
    #[command(flatten)]
    pub live: super::explain_live::LiveArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policies = match policy::load_path(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = String::new();
    for p in &policies {
        writeln!(
            out,
            "# Effective policy for `{}` in `{}` (from {}): templates applied, defaults filled.",
            p.service,
            p.namespace,
            p.source.display()
        )?;
        // Templates are already applied: print the metrics self-contained (so the output is a
        // policy that loads on its own) and say where each came from.
        let mut effective = p.clone();
        for m in &mut effective.metrics {
            if let Some(t) = m.template.take() {
                writeln!(out, "# metric `{}` is based on template `{t}`", m.name)?;
            }
        }
        out.push_str(&toml::to_string_pretty(&effective).context("rendering the policy as TOML")?);
        writeln!(
            out,
            "\n# Rendered queries (what the daemon sends to Prometheus)"
        )?;
        let all = feeds(p);
        for f in all.iter().filter(|f| f.track == Track::Canary) {
            let what = match &f.input {
                Input::Traffic => "traffic".to_string(),
                Input::Value { metric } => format!("metric `{metric}`"),
                Input::Events { metric } => format!("metric `{metric}` events counter"),
                Input::Total { metric } => format!("metric `{metric}` total counter"),
                Input::Ratio { metric, window } => format!(
                    "metric `{metric}` error ratio over {}",
                    humantime::format_duration(*window)
                ),
            };
            writeln!(out, "# {what}")?;
            for g in all
                .iter()
                .filter(|g| g.input == f.input)
                .map(|g| (g.track, &g.promql))
            {
                writeln!(out, "#   {}: {}", g.0, g.1)?;
            }
        }
        writeln!(out, "\n# How each metric decides")?;
        for line in decisions(p) {
            writeln!(out, "# {line}")?;
        }
    }
    print!("{out}");
    super::explain_live::print(&args.live, &policies).await?;
    Ok(ExitCode::SUCCESS)
}

/// One line per metric: the statistic it computes and the value that rolls back.
fn decisions(p: &Policy) -> Vec<String> {
    let engine = backout::decision::Engine::new(p, "");
    engine.rules().map(describe).collect()
}

/// ", held for 1m" when the rule has a `for`, nothing otherwise.
fn hold(ms: i64) -> String {
    if ms > 0 {
        format!(", held for {}", humantime::format_duration(duration(ms)))
    } else {
        String::new()
    }
}

fn describe(r: &Rule) -> String {
    match r.test.as_deref() {
        None => describe_threshold(r),
        Some(Test::Sequential {
            config,
            warmup_alpha,
            horizon,
        }) => describe_sequential(r, config, *warmup_alpha, *horizon),
        Some(Test::BurnRate(cfg)) => format!(
            "`{}` (burn_rate): statistic = error ratio / (1 - {}), the objective's error budget; rolls back when {}{}",
            r.name,
            cfg.objective,
            cfg.rules
                .iter()
                .map(|x| format!(
                    "{}x over both {} and {}",
                    x.factor,
                    humantime::format_duration(x.long),
                    humantime::format_duration(x.short)
                ))
                .collect::<Vec<_>>()
                .join(", or "),
            hold(r.for_)
        ),
        Some(Test::MannWhitney(cfg)) => format!(
            "`{}` (mann_whitney): statistic = confidence that the canary's values over {} are higher than the stable's (Mann-Whitney U); rolls back at >= {} when the canary's mean is also more than {}% above the stable's; fixed-horizon test, re-run every poll{}",
            r.name,
            humantime::format_duration(duration(r.stat_window)),
            cfg.confidence,
            cfg.tolerance * 100.0,
            hold(r.for_)
        ),
    }
}

/// A threshold metric: its statistic, what it is compared with, and its levels in words.
fn describe_threshold(r: &Rule) -> String {
    let level = |l: Option<policy::Level>| match l {
        Some(l) if l.above.is_some() || l.below.is_some() => format!("{l:#}"),
        _ => "never".into(),
    };
    let compared = match r.compare {
        Some(policy::Compare::Ratio) => "canary / stable of ",
        Some(policy::Compare::Difference) => "canary - stable of ",
        None => "",
    };
    format!(
        "`{}` (threshold): {compared}{:?} over {}; critical {}, warning {}{}",
        r.name,
        r.stat,
        humantime::format_duration(duration(r.stat_window)),
        level(r.critical),
        level(r.warning),
        hold(r.for_)
    )
}

/// A sequential metric: the Bayes factor it computes, when it fires (main test, restarts,
/// warm-up) and when it passes.
fn describe_sequential(
    r: &Rule,
    config: &backout::stats::sequential::SequentialConfig,
    warmup_alpha: f64,
    horizon: Option<i64>,
) -> String {
    let alpha = main_alpha(config.alpha, horizon);
    let shared = if horizon.is_some() {
        format!(" of {}", config.alpha)
    } else {
        String::new()
    };
    let restarts = match horizon {
        Some(h) => format!(
            ", or when the change detector on the newest counts reaches {} (alpha {} for canaries up to {})",
            threshold_text(backout::stats::detector::threshold(
                h,
                detector_alpha(config.alpha)
            )),
            detector_alpha(config.alpha),
            humantime::format_duration(duration(h)),
        ),
        None => String::new(),
    };
    let warmup = if warmup_alpha > 0.0 {
        format!(
            ", or during warm-up at >= {} on counts since the start",
            threshold_text(1.0 / warmup_alpha)
        )
    } else {
        String::new()
    };
    format!(
        "`{}` (sequential): statistic = mixture Bayes factor that the canary's event rate is more than {}x the stable's, on counts since warm-up ended; rolls back at >= {} (alpha {alpha}{shared}){restarts}{warmup}; passes after {} canary requests with the rate ratio bounded below {}{}",
        r.name,
        config.margin,
        threshold_text(1.0 / alpha),
        config.min_exposure,
        config.pass_ratio,
        hold(r.for_)
    )
}
