//! Runbook 003 (Rollback Procedure, LLM Orchestrator) with config/examples/llm-orchestrator.toml
//! and runbook 003's escalation path: "High error rate (> 5%)" rolls back; the rollback itself
//! fails twice ("Escalate IMMEDIATELY if: Rollback fails after 2 attempts"), so the path starts
//! ("Immediate - Senior DevOps Engineer - Slack"); the third attempt lands, "error rate should
//! drop to < 1%" is verified on the stable, and the resolution goes to the incident channel and
//! to whoever was paged.

use crate::istio::{History, Style, Track};
use crate::prometheus::Prometheus;
use crate::receiver::Receiver;
use crate::{audited, audited_now, PromAt};
use backout::actuator::{Actuator, ActuatorConfig, RetryPolicy};
use backout::audit::{AuditKind, FileAudit};
use backout::clock::ManualClock;
use backout::daemon::{Action, Context, Daemon};
use backout::demo::replicas;
use backout::notify::dispatch::Recorders;
use backout::notify::{Dispatcher, NotifyConfig};
use backout::policy::{load_with, LoadOptions};
use backout::settings::Actions;
use backout::sim::{SimConfig, Simulator};
use backout::source::{PrometheusConfig, PrometheusSource};
use backout::telemetry::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MIN: i64 = 60_000;

/// Runbook 003's "Escalation Path", first two steps, as a policy writes it.
const ESCALATION: &str = r#"
[[escalation]]
after = "0s"
channels = ["devops-lead"]
[[escalation]]
after = "5m"
channels = ["pagerduty-critical"]
"#;

fn channels(dir: &Path, rx: &Receiver) -> NotifyConfig {
    let mut text = String::from("default = [\"incidents\"]\n");
    for (name, path) in [("incidents", "incidents"), ("devops-lead", "devops-lead")] {
        let f = dir.join(format!("{name}-url"));
        std::fs::write(&f, rx.url(path)).unwrap();
        text.push_str(&format!(
            "[channels.{name}]\nkind = \"slack\"\nurl_file = {:?}\n",
            f.display().to_string()
        ));
    }
    let key = dir.join("pd-key");
    std::fs::write(&key, "KEY").unwrap();
    text.push_str(&format!(
        "[channels.pagerduty-critical]\nkind = \"pagerduty\"\nurl = {:?}\nrouting_key_file = {:?}\n",
        rx.url("pd"),
        key.display().to_string()
    ));
    toml::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_003_llm_orchestrator_rollback_failing_twice_escalates_then_recovers() {
    let wall = backout::clock::Clock::now_millis(&backout::clock::SystemClock);
    let start = wall - wall % 10_000 - 60 * MIN;
    let onset = start + 15 * MIN;
    let track = Track::healthy;
    // "Symptoms: High error rate (> 5%)": 12% on the canary.
    let canary = Track {
        bad_from: Some(onset),
        bad_errors: 0.12,
        ..track("orchestrator-canary", 10.0)
    };
    let history = History {
        style: Style::Http,
        namespace: "llm-orchestrator".into(),
        start_ms: start,
        every_ms: 10_000,
        points: 55 * 6 + 1,
        tracks: vec![track("orchestrator", 90.0), canary],
    };
    let prom = Prometheus::builder()
        .backfill(history.openmetrics())
        .start()
        .await
        .unwrap();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let example = std::fs::read_to_string("config/examples/llm-orchestrator.toml").unwrap();
    std::fs::write(
        policies.join("orchestrator.toml"),
        format!("{example}\n{ESCALATION}"),
    )
    .unwrap();
    std::fs::copy(
        "config/examples/templates.toml",
        policies.join("templates.toml"),
    )
    .unwrap();
    let opts = LoadOptions {
        default_interval: Duration::from_secs(10),
    };
    let policy = load_with(&[policies], &opts).unwrap().remove(0);
    let notify = channels(dir.path(), &rx);
    assert!(
        notify.issues().is_empty()
            && notify
                .check_routes(std::slice::from_ref(&policy))
                .is_empty()
    );

    let sim = Simulator::start_with(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            rollout_delay: Duration::from_millis(100),
        },
    )
    .await
    .unwrap();
    sim.seed_policy(&policy).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The route patch fails 4 times: two whole-plan attempts of 2 tries each.
    sim.faults()
        .server_errors(Some("PATCH"), "/virtualservices/orchestrator", 503, 4);

    let clock = Arc::new(ManualClock::new(start + 12 * MIN));
    let client = sim.in_process_client();
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prom.url.clone(),
        ..Default::default()
    })
    .unwrap();
    let config = ActuatorConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    };
    let actuator = Actuator::new(client.clone(), clock.clone(), config);
    let audit = Arc::new(FileAudit::new(dir.path().join("audit")).unwrap());
    let metrics = Metrics::new();
    let recorders = Recorders {
        audit: audit.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    let dispatcher = Dispatcher::start(notify, recorders).unwrap();
    let ctx = Context::builder(
        client,
        Arc::new(PromAt { source }),
        Arc::new(actuator),
        audit.clone(),
    )
    .notifier(Arc::new(dispatcher))
    .metrics(metrics.clone())
    .clock(clock.clone())
    .bad_versions("backout")
    .build();
    let actions = Actions {
        retry_initial: Duration::from_millis(200),
        ..Default::default()
    };
    let mut daemon = Daemon::with_actions(ctx, vec![policy.clone()], actions);
    let trail = audit.trail_path();
    let mut ordered = false;
    for _ in 0..80 {
        let outs = daemon.cycle().await;
        if !ordered
            && outs
                .iter()
                .flat_map(|o| &o.orders)
                .any(|o| matches!(o.action, Action::Rollback(_)))
        {
            ordered = true;
            assert!(
                audited(&trail, AuditKind::RollbackCompleted, 1).await,
                "never landed"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if audited_now(&trail, AuditKind::RecoveryVerified) {
            break;
        }
        clock.advance(policy.analysis.interval);
    }
    assert!(ordered, "the bad canary was never rolled back");
    assert_eq!(
        replicas(&sim, "llm-orchestrator", "orchestrator-canary"),
        Some(0)
    );
    assert!(
        audited_now(&trail, AuditKind::RecoveryVerified),
        "recovery never verified"
    );

    let incidents = rx.wait_for("incidents", 4, Duration::from_secs(10)).await;
    let titles: Vec<&str> = incidents
        .iter()
        .map(|b| b["blocks"][0]["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles[0], "🚨 INCIDENT: Production Rollback Initiated",
        "{titles:#?}"
    );
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("UPDATE: Rollback Complete")),
        "{titles:#?}"
    );
    assert_eq!(
        *titles.last().unwrap(),
        "✅ RESOLVED: Production Rollback Complete",
        "{titles:#?}"
    );
    // "Escalate IMMEDIATELY": the senior DevOps engineer's channel, step 1 of the path.
    let lead = rx.wait_for("devops-lead", 2, Duration::from_secs(10)).await;
    let paged = lead[0]["text"].as_str().unwrap();
    assert!(
        paged.starts_with("🔥 ESCALATION: llm-orchestrator/orchestrator needs a human now"),
        "{paged}"
    );
    assert!(paged.contains("Reason: the rollback failed"), "{paged}");
    assert!(paged.contains("rollback attempt 2 failed"), "{paged}");
    assert!(paged.contains("[escalation step 1 of 2, +0s]"), "{paged}");
    // Recovery called the +5m step off and told the paged engineer it is over.
    assert!(
        lead[1]["text"].as_str().unwrap().starts_with("✅ RESOLVED"),
        "{lead:#?}"
    );
    assert!(
        rx.on("pd").is_empty(),
        "the +5m PagerDuty step was called off"
    );
    let m = metrics.encode();
    assert!(
        m.contains("backout_escalations_total{reason=\"rollback_failed\"} 1"),
        "{m}"
    );
    let report = std::fs::read_dir(dir.path().join("audit/incidents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    assert!(
        report.contains("attempt 3 after earlier failures"),
        "{report}"
    );
    assert!(report.contains("- **RTO**: "), "{report}");
    sim.shutdown().await;
}
