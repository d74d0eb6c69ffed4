//! 004: Deployment Rollback Runbook, Kailash Kaizen -> kailash-kaizen.toml.

use crate::incident::{policy, Incident};
use crate::{holds_until_stuck, rolls_back_the_promoted_release};
use backout::decision::Health;

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
    rolls_back_the_promoted_release(&bake, "2m", "p95_latency");
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
