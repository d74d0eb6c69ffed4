//! 001: Rollback Playbook, RAG API -> rag-api.toml.

use crate::incident::{ms, policy, Incident};
use crate::{holds_until_stuck, rolls_back_the_promoted_release};
use backout::decision::Health;

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
    rolls_back_the_promoted_release(&bake, "1m", "error_rate");
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
