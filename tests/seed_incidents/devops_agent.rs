//! 002: Rollback Runbook - DevOps Agent -> devops-agent.toml (component `frontend`).

use crate::incident::{ms, policy, Incident, MIN};
use crate::{holds_until_stuck, rolls_back_the_promoted_release};
use backout::decision::{Health, Stage};
use statrs::function::beta::beta_reg;

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
    rolls_back_the_promoted_release(&bake, "5m", "error_rate");
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
    // fires once the canary's counts show the 1h window's error ratio over 1.44% (the 5m
    // window's is over at once): one-sided at 0.05 on its requests over the window (5 req/s,
    // for as long as it has lived, up to the hour), about 4 minutes after the ratio itself
    // crosses 1.44%.
    let (healthy, bad) = (0.0002, 0.02);
    let shown = (0..3600).find(|&t| {
        let t = f64::from(t);
        let ratio = (healthy * (3600.0 - t) + bad * t) / 3600.0;
        let requests = 5.0 * (600.0 + t).min(3600.0);
        let errors = ratio * requests;
        beta_reg(errors, requests - errors + 1.0, 0.0144) <= 0.05
    });
    let crossing = i64::from(shown.expect("the burn shows within the hour")) * 1000;
    assert!(crossing as f64 > (0.0144 - healthy) / (bad - healthy) * 60.0 * MIN as f64);
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
