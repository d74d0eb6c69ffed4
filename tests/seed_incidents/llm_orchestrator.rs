//! 003: Rollback Procedure, LLM Orchestrator -> llm-orchestrator.toml.

use crate::incident::{policy, Incident};
use crate::{holds_until_stuck, rolls_back_the_promoted_release};
use backout::decision::Health;

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
    rolls_back_the_promoted_release(&bake, "1m", "error_rate_percent");
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
