//! Runbook 000 (OPS-001 Emergency Rollback, FunctionGemma Agent) with
//! config/examples/function-gemma-agent.toml: "New deployment shows high error rates (>5%)" is
//! rolled back (traffic to the stable, canary to zero); the team hears it in Slack
//! `#deployments` ("3. Communicate"), the policy's own route; "Verification Steps" (error rate
//! back under 1%) are verified on the stable; the incident report has the time of the rollback,
//! its reason, the revision rolled back to and the verification results ("1. Document the
//! Incident") with the RTO against the P0 target of 5 minutes, so the on-call path
//! ("On-call engineer -> Team lead") is never paged; the broken release is refused when it
//! comes back.

use crate::harness::{history_start, url_file, Run, Seed, MIN};
use crate::istio::{History, Style, Track};
use crate::receiver::Receiver;
use backout::demo::{canary_weight, replicas};
use std::time::{Duration, Instant};

fn channels(dir: &std::path::Path, rx: &Receiver) -> String {
    let mut text = String::from("default = [\"elsewhere\"]\n");
    for name in ["deployments", "oncall", "team-lead", "elsewhere"] {
        text.push_str(&format!("[channels.{name}]\nkind = \"slack\"\n"));
        text.push_str(&url_file(dir, name, &rx.url(name)));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_000_function_gemma_rolled_back_within_the_p0_rto_and_remembered() {
    let began = Instant::now();
    let start = history_start(40);
    let onset = start + 15 * MIN;
    // "high error rates (>5%)": 10% on the canary.
    let canary = Track {
        bad_from: Some(onset),
        bad_errors: 0.10,
        ..Track::healthy("function-gemma-agent-canary", 10.0)
    };
    let history = History {
        style: Style::Istio,
        namespace: "production".into(),
        start_ms: start,
        every_ms: 10_000,
        points: 35 * 6 + 1,
        tracks: vec![Track::healthy("function-gemma-agent", 90.0), canary],
    };
    let rx = Receiver::start().await;
    let seed = Seed {
        example: "function-gemma-agent.toml",
        history,
        // Past the 2m warmup with full 1m windows, a minute before the onset.
        clock_at: onset - MIN,
    };
    let mut run = Run::start(seed, |dir| channels(dir, &rx)).await;
    let rolled_back_at = run.until_recovered(80).await;

    // `for = "1m"` at 15 s polls, after the 1m error window crosses 5%.
    let after = (rolled_back_at - onset) as f64 / 1000.0;
    assert!(
        (60.0..=120.0).contains(&after),
        "rolled back {after} s after the onset"
    );
    assert_eq!(canary_weight(&run.sim, &run.policy), Some(0));
    assert_eq!(
        replicas(&run.sim, "production", "function-gemma-agent-canary"),
        Some(0)
    );

    // "Post in Slack channel: #deployments": start, update, resolution with the RTO.
    let got = rx.wait_for("deployments", 3, Duration::from_secs(10)).await;
    let texts: Vec<&str> = got.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert!(
        texts[0].starts_with("🚨 INCIDENT: Production Rollback Initiated"),
        "{texts:#?}"
    );
    assert!(
        texts[0].contains("Reason: error_rate critical on canary"),
        "{texts:#?}"
    );
    assert!(texts[0].contains("Action: Rolling back from canary function-gemma-agent:1.1.0 (revision 1) to stable function-gemma-agent:1.0.0"), "{texts:#?}");
    assert!(
        texts[1].starts_with("UPDATE: Rollback Complete, Verifying Recovery"),
        "{texts:#?}"
    );
    assert!(
        texts[2].starts_with("✅ RESOLVED: Production Rollback Complete"),
        "{texts:#?}"
    );
    assert!(texts[2].contains("Recovery: recovered at +"), "{texts:#?}");
    assert!(texts[2].contains("(target 5m: met)"), "{texts:#?}");
    // Restored inside the P0 RTO: nobody paged; the default route is not the team's.
    for quiet in ["oncall", "team-lead", "elsewhere"] {
        assert!(rx.on(quiet).is_empty(), "{quiet}: {:#?}", rx.on(quiet));
    }

    // "1. Document the Incident": time, reason, revision rolled back to, verification results.
    let report = run.report();
    for part in [
        "error_rate",
        "function-gemma-agent:1.0.0 (revision",
        "(target 5m: met)",
    ] {
        assert!(report.contains(part), "missing {part:?} in\n{report}");
    }
    let m = run.metrics.encode();
    assert!(
        m.contains("backout_rto_target_seconds{service=\"function-gemma-agent\"} 300"),
        "{m}"
    );
    assert!(!m.contains("backout_escalations_total{"), "{m}");

    run.redeploy_is_rolled_back_at_once().await;
    let got = rx.wait_for("deployments", 4, Duration::from_secs(10)).await;
    let again = got[3]["text"].as_str().unwrap();
    assert!(
        again.contains("Reason: known_bad_version: function-gemma-agent:1.1.0 was rolled back"),
        "{again}"
    );
    eprintln!("--- incident report ---\n{report}");
    eprintln!("seed 000 end to end in {:?}", began.elapsed());
    run.sim.shutdown().await;
}
