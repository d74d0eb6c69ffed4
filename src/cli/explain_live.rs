//! `backout explain --since T`: the live part of explain. Replays each policy from T (the
//! canary's start) to now against Prometheus and prints where each metric's statistic stands and
//! what it needs to reach. Kept apart from the static explain, which only reads files.

use super::backtest::SourceArgs;
use backout::backtest::{self, explain, time, Mode, Schedule};
use backout::clock::{Clock, SystemClock};
use backout::policy::Policy;
use std::fmt::Write as _;

#[derive(clap::Args)]
pub struct LiveArgs {
    /// Also replay from this time (the canary's start: RFC 3339, or `-30m`) to now against
    /// Prometheus and show each metric's current statistic and what it needs to reach.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Prints the live standings when `--since` was given; nothing otherwise.
pub async fn print(args: &LiveArgs, policies: &[Policy]) -> anyhow::Result<()> {
    let Some(since) = &args.since else {
        return Ok(());
    };
    let (source, _, url) = args.source.resolve()?;
    let now = SystemClock.now_millis();
    let from = time::parse_time("since", since, now)?;
    let mut out = String::new();
    for p in policies {
        let schedule = Schedule::new(p, from, now, None, Mode::Canary)?;
        let replay = backtest::run(&source, p, &schedule).await?;
        writeln!(
            out,
            "\n# Live standing of `{}` from {url}: replayed {} .. {} ({} polls, canary started at --since)",
            p.service,
            time::rfc3339(schedule.from),
            time::rfc3339(schedule.to),
            replay.polls
        )?;
        let Some(last) = &replay.last else { continue };
        match &replay.rollback {
            Some(rb) => writeln!(
                out,
                "# service: {}; rollback would have fired at {}",
                last.health,
                time::rfc3339(rb.at)
            )?,
            None => writeln!(out, "# service: {}; no rollback", last.health)?,
        }
        out.push_str(&explain::render(&explain::standings(p, last)));
    }
    print!("{out}");
    Ok(())
}
