//! The five runbooks our users follow today (shared/seeds/*.txt), each replayed against its
//! policy in config/examples/ through the real engine, at the policy's own interval, with every
//! query the policy sends (tests/incident/mod.rs says what each query answers). For each system:
//! the runbook's trigger rolls back when the runbook says, a near miss does not, missing data
//! does not, and the same incident after promotion rolls the stable back.
//!
//! Healthy values come from each runbook's verification section. Durations the runbook does not
//! give are the policy's documented choices (its comments say so); the tests pin them.

mod incident;

use backout::decision::{Health, Phase, Stage};
use backout::sample::Track;
use incident::{ms, policy, Incident, MIN};

/// Asserts a rollback verdict is about the promoted release, judged in its bake window.
fn rolls_back_the_stable(v: &backout::decision::Verdict) {
    assert!(matches!(v.phase, Phase::Bake { .. }), "{:?}", v.phase);
    assert_eq!(v.stage, Stage::Bake);
    assert_eq!(v.reasons[0].track, Track::Stable);
}

/// Missing data never rolls back; the verdict turns `stuck` (a human must look) exactly at the
/// policy's `no_data_deadline`, not one poll before.
fn holds_until_stuck(blind: &incident::Replay, one_poll_before: &str, deadline: &str) {
    blind.never_rolls_back();
    assert!(!blind.at(one_poll_before).stuck);
    assert!(blind.at(deadline).stuck);
}

// ---------------------------------------------------------------------------------------------
// 000: OPS-001 Emergency Rollback Runbook, FunctionGemma Agent -> function-gemma-agent.toml
// ---------------------------------------------------------------------------------------------

fn function_gemma(start: Incident) -> Incident {
    start
        // "Verification Steps / 3. Service Metrics": "Check error rate (should be < 1%)".
        .healthy("error_rate", 0.002)
        .healthy("latency_vs_baseline", 0.8)
        .healthy("health_checks", 1.0)
        .healthy("restarts", 0.0)
}

#[test]
fn function_gemma_agent() {
    let p = policy("function-gemma-agent");
    let canary = || function_gemma(Incident::canary(&p));

    // "Use this runbook when: - New deployment shows high error rates (>5%)". No duration in
    // the runbook: the policy holds it for 1m (four polls), far inside the P0 RTO of 5 minutes.
    let incident = canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("5m")
        .run();
    let r = incident.rolls_back_after("1m");
    r.because("error_rate");
    assert!(
        r.verdict.at - incident.onset < 5 * MIN,
        "RTO (P0): 5 minutes"
    );

    // Near misses: 4.9% is only a warning ("should be < 1%"); 8% for 45 s is a blip.
    let near = canary()
        .healthy_for("10m")
        .then("error_rate", 0.049)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);
    canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("45s")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // Missing data: every query answers nothing (readiness included) while the incident would
    // be happening: hold; after no_data_deadline (5m) a human is asked to look.
    let blind = canary().healthy_for("10m").then_blind().for_("8m").run();
    holds_until_stuck(&blind, "4m45s", "5m");
    assert_eq!(blind.last().health, Health::Inconclusive);

    // Bake (15m): the promoted release at 8% errors is rolled back.
    let bake = function_gemma(Incident::bake(&p))
        .healthy_for("3m")
        .then("error_rate", 0.08)
        .for_("5m")
        .run();
    let r = bake.rolls_back_after("1m");
    r.because("error_rate");
    rolls_back_the_stable(r.verdict);
}

#[test]
fn function_gemma_agent_other_triggers() {
    let p = policy("function-gemma-agent");
    let canary = || function_gemma(Incident::canary(&p));

    // "- Performance degradation (latency > 2x baseline)": the stable is the baseline.
    canary()
        .healthy_for("10m")
        .then("latency_vs_baseline", 2.0)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("latency_vs_baseline");
    // 1.9x the baseline is not "> 2x".
    canary()
        .healthy_for("10m")
        .then("latency_vs_baseline", 1.52)
        .for_("10m")
        .run()
        .never_rolls_back();
    // Both tracks slow (a shared dependency): not the canary's fault.
    canary()
        .healthy_for("10m")
        .then_both("latency_vs_baseline", 2.0)
        .for_("10m")
        .run()
        .never_rolls_back();

    // "- Health checks are failing consistently": one pod of three not ready for 3 minutes.
    canary()
        .healthy_for("10m")
        .then("health_checks", 2.0 / 3.0)
        .for_("5m")
        .run()
        .rolls_back_after("3m")
        .because("health_checks");
    canary()
        .healthy_for("10m")
        .then("health_checks", 2.0 / 3.0)
        .for_("2m30s")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // "2. Pod Status Check: Check for restarts" gives no number: restarts warn, never roll back.
    let restarts = canary()
        .healthy_for("10m")
        .then("restarts", 4.0)
        .for_("10m")
        .run();
    restarts.never_rolls_back();
    assert_eq!(restarts.last().health, Health::Warning);
}

// ---------------------------------------------------------------------------------------------
// 001: Rollback Playbook, RAG API -> rag-api.toml
// ---------------------------------------------------------------------------------------------

fn rag(start: Incident) -> Incident {
    start
        // "Verification Checklist": Error Rate < 1%, P99 Latency < 300ms, All Ready.
        .healthy("error_rate", 0.002)
        .healthy("p99_latency", 0.2)
        .healthy("availability", 0.9995)
        .healthy("rag_ndcg", 0.8)
        .healthy("health_check", 1.0)
        .healthy("user_complaints", 0.0)
}

#[test]
fn rag_api() {
    let p = policy("rag-api");
    let canary = || rag(Incident::canary(&p));

    // "Automatic Rollback Triggers: 2. Error rate exceeds 5% during canary phase" (Decision
    // Matrix: Critical (Rollback) > 5%). No duration: the policy holds it for 1m.
    canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("5m")
        .run()
        .rolls_back_after("1m")
        .because("error_rate");

    // Near misses: 4.9% is the matrix's Warning (> 1%), not a rollback; 8% for 45 s is a blip.
    let near = canary()
        .healthy_for("10m")
        .then("error_rate", 0.049)
        .for_("15m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);
    canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("45s")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // Missing data: every query answers nothing: hold; stuck after no_data_deadline (10m).
    let blind = canary().healthy_for("10m").then_blind().for_("12m").run();
    holds_until_stuck(&blind, "9m45s", "10m");

    // Bake (30m, "Short-term Monitoring (5-30 minutes)"): the promoted release is rolled back.
    let bake = rag(Incident::bake(&p))
        .healthy_for("5m")
        .then("error_rate", 0.08)
        .for_("5m")
        .run();
    let r = bake.rolls_back_after("1m");
    r.because("error_rate");
    rolls_back_the_stable(r.verdict);
}

#[test]
fn rag_api_other_triggers() {
    let p = policy("rag-api");
    let canary = || rag(Incident::canary(&p));

    // "3. P99 latency exceeds 500ms during canary phase".
    canary()
        .healthy_for("10m")
        .then("p99_latency", 0.6)
        .for_("5m")
        .run()
        .rolls_back_after("1m")
        .because("p99_latency");
    let near = canary()
        .healthy_for("10m")
        .then("p99_latency", 0.45)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(
        near.last().health,
        Health::Warning,
        "> 300ms: not what verification expects"
    );

    // "1. Canary health check fails after 10 minutes".
    canary()
        .healthy_for("10m")
        .then("health_check", 2.0 / 3.0)
        .for_("15m")
        .run()
        .rolls_back_after("10m")
        .because("health_check");
    canary()
        .healthy_for("10m")
        .then("health_check", 2.0 / 3.0)
        .for_("9m")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // Decision Matrix "Availability: Critical < 99%": 1.5% of requests reset before reaching
    // the canary (also 5xx, so the error rate is in its warning band).
    canary()
        .healthy_for("10m")
        .then("availability", 0.985)
        .and("error_rate", 0.017)
        .for_("5m")
        .run()
        .rolls_back_after("0s")
        .because("availability");
    let near = canary()
        .healthy_for("10m")
        .then("availability", 0.993)
        .and("error_rate", 0.009)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);

    // Decision Matrix "RAG Quality (NDCG): Critical < 0.6", judged on the mean of the last 10
    // minutes of polls (40 at 15 s): after a drop from 0.8 to 0.5, the 27th poll at 0.5 brings
    // the mean to 0.5975, 26 intervals after onset.
    canary()
        .healthy_for("15m")
        .then("rag_ndcg", 0.5)
        .for_("10m")
        .run()
        .rolls_back_between(ms("6m30s"), ms("6m30s"))
        .because("rag_ndcg");
    let near = canary()
        .healthy_for("15m")
        .then("rag_ndcg", 0.65)
        .for_("20m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);

    // Decision Matrix "User Complaints: Critical 10+ in 10min" (not per track: both see them).
    canary()
        .healthy_for("10m")
        .then_both("user_complaints", 10.0)
        .for_("5m")
        .run()
        .rolls_back_after("0s")
        .because("user_complaints");
    let near = canary()
        .healthy_for("10m")
        .then_both("user_complaints", 9.0)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning, "3+ in 10min");
}

// ---------------------------------------------------------------------------------------------
// 002: Rollback Runbook - DevOps Agent -> devops-agent.toml (component `frontend`)
// ---------------------------------------------------------------------------------------------

fn devops(start: Incident) -> Incident {
    start
        // "Post-Rollback Actions / 1. Verify System Health" and the example message:
        // "Error rate: 0.02%", "Check latency (P95 < 500ms)".
        .healthy("error_rate", 0.0002)
        .healthy("p95_latency", 0.25)
        // The SLO burn rate is computed from the same 5xx ratio.
        .same_signal("slo_burn_rate", "error_rate")
}

#[test]
fn devops_agent() {
    let p = policy("devops-agent");
    let canary = || devops(Incident::canary(&p));

    // "Rollback immediately if: - Error rate > 5% for 5+ minutes"
    let incident = canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("8m")
        .run();
    let r = incident.rolls_back_after("5m");
    r.because("error_rate");
    assert_eq!(r.verdict.stage, Stage::Analysis);

    // Near misses: the same breach for 4 minutes; 4.9% for 10 minutes (a warning: the runbook's
    // healthy level is < 0.1%).
    canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("4m")
        .healthy_for("10m")
        .run()
        .never_rolls_back();
    let near = canary()
        .healthy_for("10m")
        .then("error_rate", 0.049)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);
    assert!(!near.last().promotable());

    // Missing data: every query answers nothing: hold, never roll back; after
    // `no_data_deadline` (10m) the verdict says a human must look.
    let blind = canary().healthy_for("10m").then_blind().for_("12m").run();
    holds_until_stuck(&blind, "9m30s", "10m");
    // Only the error-rate queries (and the burn rate's, from the same series) answer nothing.
    let blind = canary()
        .healthy_for("10m")
        .then_absent("error_rate")
        .for_("12m")
        .run();
    holds_until_stuck(&blind, "9m30s", "10m");
    assert_eq!(blind.last().health, Health::Inconclusive);
    // A gap in the middle of a breach restarts the 5 minutes: it must be seen to hold.
    canary()
        .healthy_for("10m")
        .then("error_rate", 0.08)
        .for_("3m")
        .then_absent("error_rate")
        .for_("30s")
        .then("error_rate", 0.08)
        .for_("4m30s")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // After promotion (bake = 30m) the same incident rolls the promoted release back.
    let bake = devops(Incident::bake(&p))
        .healthy_for("5m")
        .then("error_rate", 0.08)
        .for_("8m")
        .run();
    let r = bake.rolls_back_after("5m");
    r.because("error_rate");
    rolls_back_the_stable(r.verdict);
}

#[test]
fn devops_agent_other_triggers() {
    let p = policy("devops-agent");
    let canary = || devops(Incident::canary(&p));

    // "- P95 latency > 2 seconds for 5+ minutes"
    canary()
        .healthy_for("10m")
        .then("p95_latency", 2.5)
        .for_("8m")
        .run()
        .rolls_back_after("5m")
        .because("p95_latency");
    let near = canary()
        .healthy_for("10m")
        .then("p95_latency", 1.9)
        .for_("10m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning, "P95 < 500ms expected");

    // "- SLO budget will be exhausted" (decision tree: "Is SLO at risk? -> Rollback within
    // 10 min"): 2% errors never reach the 5% line, but burn the 99.9% budget 20x; the 14.4x rule
    // fires once the 1h window's error ratio reaches 1.44% (and the 5m window's, at once).
    let (healthy, bad) = (0.0002, 0.02);
    let crossing = ((0.0144 - healthy) / (bad - healthy) * 60.0 * MIN as f64).ceil() as i64;
    let slo = canary()
        .healthy_for("10m")
        .then("error_rate", bad)
        .for_("60m")
        .run();
    slo.rolls_back_between(crossing, crossing + ms("30s"))
        .because("slo_burn_rate");
    // The same 2% for 40 minutes (1.3% over the last hour) does not.
    canary()
        .healthy_for("10m")
        .then("error_rate", bad)
        .for_("40m")
        .healthy_for("5m")
        .run()
        .never_rolls_back();
}

// ---------------------------------------------------------------------------------------------
// 003: Rollback Procedure, LLM Orchestrator -> llm-orchestrator.toml
// ---------------------------------------------------------------------------------------------

fn orchestrator(start: Incident) -> Incident {
    start
        // "Validation": error rate < 1% (the query is in percent), P99 latency < 2 seconds,
        // all pods Running 1/1 READY.
        .healthy("error_rate_percent", 0.2)
        .healthy("p99_latency", 0.9)
        .healthy("crash_loops", 0.0)
        .healthy("health_checks", 1.0)
        .healthy("db_connection_errors", 0.0)
        .healthy("memory_vs_stable", 600e6)
        .traffic(2.0, 18.0)
}

#[test]
fn llm_orchestrator() {
    let p = policy("llm-orchestrator");
    let canary = || orchestrator(Incident::canary(&p));

    // "Symptoms: - High error rate (> 5%)", with Step 1's query (percent, [5m]). No duration in
    // the runbook: the policy holds it for 1m (two polls).
    canary()
        .healthy_for("10m")
        .then("error_rate_percent", 8.0)
        .for_("5m")
        .run()
        .rolls_back_after("1m")
        .because("error_rate_percent");

    // Near misses: 4.9% warns ("Error rate < 1%"); 8% for 30 s is one poll.
    let near = canary()
        .healthy_for("10m")
        .then("error_rate_percent", 4.9)
        .for_("15m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);
    canary()
        .healthy_for("10m")
        .then("error_rate_percent", 8.0)
        .for_("30s")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // Missing data: every query answers nothing: hold; stuck after no_data_deadline (10m).
    let blind = canary().healthy_for("10m").then_blind().for_("12m").run();
    holds_until_stuck(&blind, "9m30s", "10m");

    // Bake ("Monitor for 30 minutes after rollback"): the promoted release is rolled back.
    let bake = orchestrator(Incident::bake(&p))
        .healthy_for("5m")
        .then("error_rate_percent", 8.0)
        .for_("5m")
        .run();
    let r = bake.rolls_back_after("1m");
    r.because("error_rate_percent");
    rolls_back_the_stable(r.verdict);
}

#[test]
fn llm_orchestrator_other_triggers() {
    let p = policy("llm-orchestrator");
    let canary = || orchestrator(Incident::canary(&p));

    // "- Application crashes or pod crash loops": three restarts within 5 minutes.
    canary()
        .healthy_for("10m")
        .then("crash_loops", 3.0)
        .for_("5m")
        .run()
        .rolls_back_after("0s")
        .because("crash_loops");
    let one = canary()
        .healthy_for("10m")
        .then("crash_loops", 1.0)
        .for_("10m")
        .run();
    one.never_rolls_back();
    assert_eq!(one.last().health, Health::Warning);

    // "- Failed health checks" (Step 7: /health and /health/ready must return 200).
    canary()
        .healthy_for("10m")
        .then("health_checks", 2.0 / 3.0)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("health_checks");

    // "- Database connection failures".
    canary()
        .healthy_for("10m")
        .then("db_connection_errors", 0.05)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("db_connection_errors");

    // "- Memory leaks or resource exhaustion": 1.5x the stable's working set for 10 minutes.
    canary()
        .healthy_for("10m")
        .then("memory_vs_stable", 1_000e6)
        .for_("15m")
        .run()
        .rolls_back_after("10m")
        .because("memory_vs_stable");
    canary()
        .healthy_for("10m")
        .then("memory_vs_stable", 850e6)
        .for_("15m")
        .run()
        .never_rolls_back();

    // "Step 8: P99 should drop to < 2s" / "Validation: P99 latency < 2 seconds".
    canary()
        .healthy_for("10m")
        .then("p99_latency", 3.0)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("p99_latency");
}

// ---------------------------------------------------------------------------------------------
// 004: Deployment Rollback Runbook, Kailash Kaizen -> kailash-kaizen.toml
// ---------------------------------------------------------------------------------------------

fn kaizen(start: Incident) -> Incident {
    start
        .healthy("latency_regression", 0.4)
        // The same p95, over 1m instead of 5m.
        .same_signal("p95_latency", "latency_regression")
        .healthy("health_checks", 1.0)
        .healthy("error_rate_vs_stable", 0.002)
}

#[test]
fn kailash_kaizen() {
    let p = policy("kailash-kaizen");
    let canary = || kaizen(Incident::canary(&p));

    // "Rollback Decision Criteria: 2. Performance Degradation: Significant performance
    // regression (>50% slower)": the canary's p95 against the stable's.
    canary()
        .healthy_for("10m")
        .then("latency_regression", 0.7)
        .for_("8m")
        .run()
        .rolls_back_after("5m")
        .because("latency_regression");

    // Near misses: 45% slower warns; 75% slower for 4 minutes.
    let near = canary()
        .healthy_for("10m")
        .then("latency_regression", 0.58)
        .for_("15m")
        .run();
    near.never_rolls_back();
    assert_eq!(near.last().health, Health::Warning);
    canary()
        .healthy_for("10m")
        .then("latency_regression", 0.7)
        .for_("4m")
        .healthy_for("5m")
        .run()
        .never_rolls_back();

    // Missing data: every query answers nothing: hold; stuck after no_data_deadline (10m).
    let blind = canary().healthy_for("10m").then_blind().for_("12m").run();
    holds_until_stuck(&blind, "9m45s", "10m");

    // Bake (20m): there is no baseline after promotion, so the regression is judged by
    // "Response times are normal (<2s)" and "4. Failed Health Checks".
    let bake = kaizen(Incident::bake(&p))
        .healthy_for("5m")
        .then("latency_regression", 2.5)
        .for_("5m")
        .run();
    let r = bake.rolls_back_after("2m");
    r.because("p95_latency");
    rolls_back_the_stable(r.verdict);
}

#[test]
fn kailash_kaizen_other_triggers() {
    let p = policy("kailash-kaizen");
    let canary = || kaizen(Incident::canary(&p));

    // "4. Failed Health Checks: Health checks consistently failing".
    canary()
        .healthy_for("10m")
        .then("health_checks", 2.0 / 3.0)
        .for_("5m")
        .run()
        .rolls_back_after("3m")
        .because("health_checks");

    // "Response times are normal (<2s)" (the 5-minute regression would follow at 5m).
    canary()
        .healthy_for("10m")
        .then("latency_regression", 2.5)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("p95_latency");

    // "No error alerts firing": one percentage point more 5xx than the stable.
    canary()
        .healthy_for("10m")
        .then("error_rate_vs_stable", 0.022)
        .for_("5m")
        .run()
        .rolls_back_after("2m")
        .because("error_rate_vs_stable");
}
