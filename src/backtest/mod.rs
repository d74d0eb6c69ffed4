//! Backtests: replay a policy over recorded Prometheus history and say when it would have rolled
//! back. Teams tune a policy with it before trusting it, and run it as the rollback drill.
//!
//! Functional core, imperative shell, like the daemon:
//!
//! - [`schedule`] (pure): the poll instants, how much history before `--from` the engine needs,
//!   and the range queries that cover them.
//! - [`fetch`] (network): ONE range query per distinct rendered query of
//!   [`crate::policy::feeds`], through [`crate::source::MetricSource::range`].
//! - [`replay`] (pure): rebuilds, at every poll, the instant answer Prometheus would have given
//!   (the range point at exactly that instant; no point is an empty vector), splits it with the
//!   daemon's [`crate::source::QueryPlan`], feeds the engine and collects every verdict change.
//! - [`report`] (pure): the human summary and the JSON lines.
//! - [`explain`] (pure): where each metric's statistic stands and what it needs to reach.
//!
//! The replay is faithful as long as a range query at `step` equals the instant queries the
//! daemon would have sent at those instants, which is how Prometheus defines range queries.
//! Lifecycle events (a new canary revision, promotion) are not replayed: the caller chooses one
//! phase for the whole window. Users' guide: docs/backtest.md.

pub mod explain;
pub mod fetch;
pub mod replay;
pub mod report;
pub mod schedule;
pub mod time;

pub use fetch::fetch;
pub use replay::{queries, replay, requests, Change, History, Replay, Rollback};
pub use schedule::{Mode, Schedule};

use crate::decision::DecisionError;
use crate::source::{MetricSource, SourceError};

/// Why a backtest could not run. Each message names the flag or file at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(
        "--{flag} {value:?}: {why}; write an RFC 3339 time (2024-05-01T10:00:00Z), `now`, \
         or a time relative to now such as `-2h` or `now-90m`"
    )]
    Time {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "the window is empty: --from {from} is not before --to {to}; \
         put the earlier time in --from"
    )]
    EmptyWindow { from: String, to: String },
    #[error("--step {step}: {why}")]
    Step { step: String, why: String },
    #[error(
        "{polls} polls from --from to --to at step {step} is more than the {max} a backtest \
         replays; use a larger --step or a shorter window"
    )]
    TooManyPolls { polls: u64, step: String, max: u64 },
    #[error(
        "range query failed ({reason}): {promql}\n  {error}\n  fix: check the query with \
         `backout explain --policy FILE`, that --prometheus points at the Prometheus holding \
         this history, and that the window is within its retention"
    )]
    Query {
        promql: String,
        reason: &'static str,
        error: SourceError,
    },
    #[error("--prometheus: {0}")]
    Source(SourceError),
    /// The replay fed the engine an input its policy does not have: a bug, not a user error.
    #[error("internal error while replaying: {0}")]
    Engine(DecisionError),
}

/// Fetches the history `schedule` needs for `policy` and replays it: the whole backtest.
pub async fn run(
    source: &dyn MetricSource,
    policy: &crate::policy::Policy,
    schedule: &Schedule,
) -> Result<Replay, BacktestError> {
    let history = fetch(source, &queries(policy), schedule, fetch::PARALLEL).await?;
    replay(policy, schedule, &history)
}
