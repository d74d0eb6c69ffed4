//! The five runbooks our users follow today (shared/seeds/*.txt), each replayed against its
//! policy in config/examples/ through the real engine, at the policy's own interval, with every
//! query the policy sends (tests/seed_incidents/incident.rs says what each query answers). For each system:
//! the runbook's trigger rolls back when the runbook says, a near miss does not, missing data
//! does not, and the same incident after promotion rolls the stable back.
//!
//! Healthy values come from each runbook's verification section. Durations the runbook does not
//! give are the policy's documented choices (its comments say so); the tests pin them.

mod incident;
mod replay;

mod devops_agent;
mod function_gemma;
mod kailash_kaizen;
mod llm_orchestrator;
mod rag_api;

use backout::decision::{Phase, Stage};
use backout::sample::Track;

/// Asserts a rollback verdict is about the promoted release, judged in its bake window.
pub fn rolls_back_the_stable(v: &backout::decision::Verdict) {
    assert!(matches!(v.phase, Phase::Bake { .. }), "{:?}", v.phase);
    assert_eq!(v.stage, Stage::Bake);
    assert_eq!(v.reasons[0].track, Track::Stable);
}

/// The promoted release is rolled back `after` the onset because of `metric`, judged in bake.
pub fn rolls_back_the_promoted_release(bake: &replay::Replay, after: &str, metric: &str) {
    let r = bake.rolls_back_after(after);
    r.because(metric);
    rolls_back_the_stable(r.verdict);
}

/// Missing data never rolls back; the verdict turns `stuck` (a human must look) exactly at the
/// policy's `no_data_deadline`, not one poll before.
pub fn holds_until_stuck(blind: &replay::Replay, one_poll_before: &str, deadline: &str) {
    blind.never_rolls_back();
    assert!(!blind.at(one_poll_before).stuck);
    assert!(blind.at(deadline).stuck);
}
