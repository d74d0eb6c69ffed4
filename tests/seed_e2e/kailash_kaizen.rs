//! Runbook 004 (Deployment Rollback Runbook, Kailash Kaizen) with
//! config/examples/kailash-kaizen.toml: "Performance Degradation: significant performance
//! regression (>50% slower)": the canary's p95 goes from about 100 ms to about 240 ms while the
//! stable's stays; it is rolled back (traffic to the stable, canary to zero); stakeholders get
//! the runbook's "Deployment rolled back from v1.3.0 to v1.2.3 due to [REASON]" (the team's
//! templates); the "Rollback Verification Checklist" (response times < 2s, health checks) is
//! verified on the stable; the incident report ("Document Incident": reason, affected and target
//! version, time, timeline) has the RTO; "Tag the problematic version ... deployment blocklist":
//! the version is recorded and a redeploy of it is rolled back at once. No rollback issue, so
//! no emergency contact is called.

use crate::harness::{history_start, url_file, Run, Seed, MIN};
use crate::istio::{History, Style, Track};
use crate::receiver::Receiver;
use backout::demo::{canary_weight, replicas};
use std::time::{Duration, Instant};

/// The team's backout.toml: runbook 004's "Notify Stakeholders" message as the templates.
fn channels(dir: &std::path::Path, rx: &Receiver) -> String {
    let mut text = String::from("default = [\"stakeholders\"]\n");
    for name in ["stakeholders", "devops-lead", "platform-engineer"] {
        text.push_str(&format!("[channels.{name}]\nkind = \"slack\"\n"));
        text.push_str(&url_file(dir, name, &rx.url(name)));
    }
    text.push_str(
        r#"[templates]
started = """
Deployment rolling back from {{from}} to {{to}} due to {{reason}}
Service: {{namespace}}/{{service}}
Time: {{time}}"""
resolved = """
Deployment rolled back from {{from}} to {{to}}
Resolved: {{resolved}}
Verification: {{verification}}
Recovery: {{recovery}}
RTO: {{rto}}"""
"#,
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_004_kailash_kaizen_slower_canary_rolled_back_and_blocklisted() {
    let began = Instant::now();
    let start = history_start(45);
    let onset = start + 15 * MIN;
    let canary = Track {
        slow_from: Some(onset),
        ..Track::healthy("kailash-kaizen-canary", 10.0)
    };
    let history = History {
        style: Style::Istio,
        namespace: "production".into(),
        start_ms: start,
        every_ms: 10_000,
        points: 40 * 6 + 1,
        tracks: vec![Track::healthy("kailash-kaizen", 90.0), canary],
    };
    let rx = Receiver::start().await;
    let seed = Seed {
        example: "kailash-kaizen.toml",
        history,
        clock_at: onset - MIN,
    };
    let mut run = Run::start(seed, |dir| channels(dir, &rx)).await;
    let rolled_back_at = run.until_recovered(100).await;

    // Held `for = "5m"` once the canary's p95 is over 1.5x the stable's.
    let after = (rolled_back_at - onset) as f64 / 1000.0;
    assert!(
        (300.0..=390.0).contains(&after),
        "rolled back {after} s after the onset"
    );
    assert_eq!(canary_weight(&run.sim, &run.policy), Some(0));
    assert_eq!(
        replicas(&run.sim, "production", "kailash-kaizen-canary"),
        Some(0)
    );

    let got = rx
        .wait_for("stakeholders", 3, Duration::from_secs(10))
        .await;
    let texts: Vec<&str> = got.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert!(
        texts[0].starts_with("Deployment rolling back from canary kailash-kaizen:1.1.0 (revision 1) to stable kailash-kaizen:1.0.0 (revision 1) due to latency_regression critical on canary"),
        "{texts:#?}"
    );
    assert!(
        texts[1].starts_with("UPDATE: Rollback Complete, Verifying Recovery"),
        "{texts:#?}"
    );
    assert!(
        texts[2].starts_with("Deployment rolled back from canary kailash-kaizen:1.1.0 (revision 1) to stable kailash-kaizen:1.0.0 (revision 1)"),
        "{texts:#?}"
    );
    assert!(texts[2].contains("Verification: passed"), "{texts:#?}");
    assert!(texts[2].contains("Recovery: recovered at +"), "{texts:#?}");
    assert!(
        texts[2].contains("RTO: ") && texts[2].contains("(no rto target in the policy)"),
        "{texts:#?}"
    );
    for quiet in ["devops-lead", "platform-engineer"] {
        assert!(rx.on(quiet).is_empty(), "{quiet}: {:#?}", rx.on(quiet));
    }

    let report = run.report();
    assert!(
        report.contains("latency_regression critical on canary"),
        "{report}"
    );
    assert!(
        report.contains("rolled back from canary kailash-kaizen:1.1.0 (revision 1) to stable kailash-kaizen:1.0.0"),
        "{report}"
    );
    let m = run.metrics.encode();
    assert!(
        m.contains("backout_recoveries_total{service=\"kailash-kaizen\",outcome=\"recovered\"} 1"),
        "{m}"
    );

    run.redeploy_is_rolled_back_at_once().await;
    let got = rx
        .wait_for("stakeholders", 4, Duration::from_secs(10))
        .await;
    let again = got[3]["text"].as_str().unwrap();
    assert!(
        again.contains("due to known_bad_version: kailash-kaizen:1.1.0 was rolled back"),
        "{again}"
    );
    eprintln!("--- Slack ---\n{}", texts.join("\n---\n"));
    eprintln!("--- incident report ---\n{report}");
    eprintln!("seed 004 end to end in {:?}", began.elapsed());
    run.sim.shutdown().await;
}
