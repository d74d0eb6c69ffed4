//! Runbook 002 (Rollback Runbook, DevOps Agent) with config/examples/devops-agent.toml:
//! "Error rate > 5% for 5+ minutes" on the `frontend` canary is rolled back (traffic to the
//! stable, canary to zero); "1. Verify System Health" (error rate < 0.1%, P95 < 500ms) is
//! verified on the stable; "4. Communication" goes to Teams ("Post in Slack/Teams") with the
//! runbook's own example message as the team's template ("🔄 Rollback completed at ... Issue
//! resolved via rollback"); the post-mortem ("3. Create Incident Report": what happened, when it
//! was detected, duration) has the timeline and the RTO; the rollback resolved the issue, so
//! neither the Lead Engineer nor the CTO is called; the broken release is refused when it
//! comes back.

use crate::harness::{history_start, url_file, Run, Seed, MIN};
use crate::istio::{History, Style, Track};
use crate::receiver::Receiver;
use backout::demo::{canary_weight, replicas};
use std::time::{Duration, Instant};

/// The team's backout.toml: runbook 002's example message as the resolution template.
fn channels(dir: &std::path::Path, rx: &Receiver) -> String {
    let mut text = String::from("default = [\"elsewhere\"]\n");
    text.push_str("[channels.deployments-teams]\nkind = \"teams\"\n");
    text.push_str(&url_file(dir, "teams", &rx.url("teams")));
    for name in ["lead-engineer", "cto", "elsewhere"] {
        text.push_str(&format!("[channels.{name}]\nkind = \"slack\"\n"));
        text.push_str(&url_file(dir, name, &rx.url(name)));
    }
    text.push_str(
        r#"[templates]
resolved = """
🔄 Rollback completed at {{resolved}}
Issue resolved via rollback
- Production is stable: {{recovery}}
- Time to recover: {{rto}}
- {{action}}
- Post-mortem to be scheduled"""
"#,
    );
    text
}

/// A Teams Adaptive Card's title and lines, one per line.
fn card_text(payload: &serde_json::Value) -> String {
    payload["attachments"][0]["content"]["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_002_devops_agent_rolled_back_after_five_minutes_and_resolved_on_teams() {
    let began = Instant::now();
    // Six hours of healthy history before the onset, so the burn rate's 6h and 1h windows are
    // as a running service's are (with less, 6x over "6h" fires within two minutes).
    let start = history_start(6 * 60 + 50);
    let onset = start + (6 * 60 + 15) * MIN;
    // A healthy frontend answers well under the runbook's "< 0.1%" errors.
    let healthy = |deployment: &str, rps: f64| Track {
        errors: 0.0005,
        ..Track::healthy(deployment, rps)
    };
    // "Error rate > 5% for 5+ minutes": 10% on the canary from the onset on.
    let canary = Track {
        bad_from: Some(onset),
        bad_errors: 0.10,
        ..healthy("frontend-canary", 10.0)
    };
    let history = History {
        style: Style::Istio,
        namespace: "production".into(),
        start_ms: start,
        every_ms: 10_000,
        points: (6 * 60 + 45) * 6 + 1,
        tracks: vec![healthy("frontend", 90.0), canary],
    };
    let rx = Receiver::start().await;
    let seed = Seed {
        example: "devops-agent.toml",
        history,
        clock_at: onset - 2 * MIN,
    };
    let mut run = Run::start(seed, |dir| channels(dir, &rx)).await;
    let rolled_back_at = run.until_recovered(60).await;

    // Held `for = "5m"` at 30 s polls once the 1m error window crosses 5%.
    let after = (rolled_back_at - onset) as f64 / 1000.0;
    assert!(
        (300.0..=390.0).contains(&after),
        "rolled back {after} s after the onset"
    );
    assert_eq!(canary_weight(&run.sim, &run.policy), Some(0));
    assert_eq!(replicas(&run.sim, "production", "frontend-canary"), Some(0));

    let got = rx.wait_for("teams", 3, Duration::from_secs(10)).await;
    let texts: Vec<String> = got.iter().map(card_text).collect();
    assert!(
        texts[0].starts_with("🚨 INCIDENT: Production Rollback Initiated"),
        "{texts:#?}"
    );
    assert!(
        texts[0].contains("Reason: error_rate critical on canary"),
        "{texts:#?}"
    );
    assert!(
        texts[1].starts_with("UPDATE: Rollback Complete, Verifying Recovery"),
        "{texts:#?}"
    );
    let resolved = &texts[2];
    assert!(
        resolved.starts_with("🔄 Rollback completed at 20"),
        "{resolved}"
    );
    assert!(
        resolved.contains("Issue resolved via rollback"),
        "{resolved}"
    );
    assert!(
        resolved.contains("- Production is stable: recovered at +"),
        "{resolved}"
    );
    assert!(resolved.contains("(target 10m: met)"), "{resolved}");
    assert!(
        resolved.contains(
            "Rolled back from canary frontend:1.1.0 (revision 1) to stable frontend:1.0.0"
        ),
        "{resolved}"
    );
    for quiet in ["lead-engineer", "cto", "elsewhere"] {
        assert!(rx.on(quiet).is_empty(), "{quiet}: {:#?}", rx.on(quiet));
    }

    let report = run.report();
    assert!(report.contains("(target 10m: met)"), "{report}");
    assert!(report.contains("error_rate critical on canary"), "{report}");
    let m = run.metrics.encode();
    assert!(
        m.contains("backout_recoveries_total{service=\"frontend\",outcome=\"recovered\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backout_notifications_total{channel=\"deployments-teams\",outcome=\"sent\"} 3"),
        "{m}"
    );

    run.redeploy_is_rolled_back_at_once().await;
    let got = rx.wait_for("teams", 4, Duration::from_secs(10)).await;
    let again = card_text(&got[3]);
    assert!(
        again.contains("Reason: known_bad_version: frontend:1.1.0 was rolled back"),
        "{again}"
    );
    eprintln!("--- Teams ---\n{}", texts.join("\n---\n"));
    eprintln!("seed 002 end to end in {:?}", began.elapsed());
    run.sim.shutdown().await;
}
