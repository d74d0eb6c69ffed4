//! Runbook 001 (Rollback Playbook, RAG API) with config/examples/rag-api.toml: "Error rate
//! exceeds 5% during canary phase" -> "Procedure 4: Canary Rollback" (traffic to stable, canary
//! to zero), the "Incident Start" and "Incident Resolution" notifications to Slack and, through
//! the team's Alertmanager, "Error rate returning to baseline" verified, the post-incident review
//! with its timeline, and the broken version refused when it comes back.

use crate::alertmanager::Alertmanager;
use crate::istio::{History, Style, Track};
use crate::prometheus::Prometheus;
use crate::receiver::Receiver;
use crate::{audited, audited_now, PromAt};
use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::{AuditKind, FileAudit};
use backout::clock::ManualClock;
use backout::daemon::{Context, Daemon};
use backout::demo::{canary_weight, replicas};
use backout::notify::dispatch::Recorders;
use backout::notify::{Dispatcher, NotifyConfig};
use backout::policy::{load_with, LoadOptions, Policy};
use backout::sim::{SimConfig, Simulator};
use backout::source::{PrometheusConfig, PrometheusSource};
use backout::telemetry::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::Api;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;

fn examples(dir: &Path) -> Policy {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for f in ["rag-api.toml", "templates.toml"] {
        std::fs::copy(Path::new("config/examples").join(f), policies.join(f)).unwrap();
    }
    let opts = LoadOptions {
        default_interval: Duration::from_secs(10),
    };
    load_with(&[policies], &opts).unwrap().remove(0)
}

fn channels(dir: &Path, slack: &Receiver, am: &Alertmanager) -> NotifyConfig {
    let url_file = dir.join("slack-url");
    std::fs::write(&url_file, slack.url("services/T0/B0/rag")).unwrap();
    let text = format!(
        "default = [\"oncall-slack\", \"alertmanager\"]\n[channels.oncall-slack]\nkind = \"slack\"\nurl_file = {:?}\n[channels.alertmanager]\nkind = \"alertmanager\"\nurl = {:?}\nlabels = {{ team = \"rag\" }}\n",
        url_file.display().to_string(),
        am.url
    );
    let cfg: NotifyConfig = toml::from_str(&text).unwrap();
    assert!(cfg.issues().is_empty(), "{:?}", cfg.issues());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_001_rag_api_rolled_back_notified_recovered_and_remembered() {
    let began = Instant::now();
    let wall = backout::clock::Clock::now_millis(&backout::clock::SystemClock);
    let start = wall - wall % 10_000 - 70 * MIN;
    let onset = start + 15 * MIN;
    let healthy = |deployment: &str, rps: f64| Track {
        gauges: vec![("rag_retrieval_ndcg".into(), 0.8)],
        ..Track::healthy(deployment, rps)
    };
    // Decision Matrix: error rate 8% is over "Critical (Rollback) > 5%".
    let canary = Track {
        bad_from: Some(onset),
        bad_errors: 0.08,
        ..healthy("rag-api-canary", 10.0)
    };
    let history = History {
        style: Style::Istio,
        namespace: "production".into(),
        start_ms: start,
        every_ms: 10_000,
        points: 65 * 6 + 1,
        tracks: vec![healthy("rag-api", 90.0), canary],
    };
    let prom = Prometheus::builder()
        .backfill(history.openmetrics())
        .start()
        .await
        .unwrap();
    let slack = Receiver::start().await;
    let am_hook = Receiver::start().await;
    let am = Alertmanager::start(&am_hook.url("am")).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = examples(dir.path());
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

    // The daemon, as `backout run` assembles it, on a clock 13 minutes into the history (its
    // 5m query windows full), 2 minutes before the onset.
    let clock = Arc::new(ManualClock::new(start + 13 * MIN));
    let client = sim.in_process_client();
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prom.url.clone(),
        ..Default::default()
    })
    .unwrap();
    let actuator = Actuator::new(client.clone(), clock.clone(), ActuatorConfig::default());
    let audit = Arc::new(FileAudit::new(dir.path().join("audit")).unwrap());
    let metrics = Metrics::new();
    let recorders = Recorders {
        audit: audit.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    let dispatcher = Dispatcher::start(channels(dir.path(), &slack, &am), recorders).unwrap();
    let ctx = Context::builder(
        client.clone(),
        Arc::new(PromAt { source }),
        Arc::new(actuator),
        audit.clone(),
    )
    .notifier(Arc::new(dispatcher))
    .metrics(metrics.clone())
    .clock(clock.clone())
    .bad_versions("backout")
    .build();
    let mut daemon = Daemon::new(ctx, vec![policy.clone()]);
    let trail = audit.trail_path();

    // One poll (15 s) per step until recovery is verified (at most 40 minutes of incident).
    let interval = policy.analysis.interval;
    let mut rolled_back_at = None;
    for _ in 0..160 {
        let outs = daemon.cycle().await;
        let rollback = outs
            .iter()
            .flat_map(|o| &o.orders)
            .any(|o| matches!(o.action, backout::daemon::Action::Rollback(_)));
        if rollback && rolled_back_at.is_none() {
            // The plan runs for real against the simulator: wait for it, as the clock would.
            assert!(
                audited(&trail, AuditKind::RollbackCompleted, 1).await,
                "no rollback completed"
            );
            rolled_back_at = Some(backout::clock::Clock::now_millis(clock.as_ref()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if audited_now(&trail, AuditKind::RecoveryVerified) {
            break;
        }
        clock.advance(interval);
    }
    let rolled_back_at = rolled_back_at.expect("the bad canary was never rolled back");
    // The policy holds the critical level `for = "1m"` (four 15 s polls).
    let after = (rolled_back_at - onset) as f64 / 1000.0;
    assert!(
        (60.0..=120.0).contains(&after),
        "rolled back {after} s after the onset"
    );
    assert_eq!(canary_weight(&sim, &policy), Some(0));
    assert_eq!(replicas(&sim, "production", "rag-api-canary"), Some(0));
    assert!(
        audited_now(&trail, AuditKind::RecoveryVerified),
        "recovery never verified"
    );

    // Slack: runbook 001's start, the update, the resolution with recovery and RTO.
    let got = slack
        .wait_for("services/T0/B0/rag", 3, Duration::from_secs(10))
        .await;
    let texts: Vec<String> = got
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts[0].starts_with("🚨 INCIDENT: Production Rollback Initiated"),
        "{texts:#?}"
    );
    assert!(texts[0].contains("Environment: production"), "{texts:#?}");
    assert!(
        texts[0].contains("Reason: error_rate critical on canary"),
        "{texts:#?}"
    );
    assert!(
        texts[0].contains(
            "Action: Rolling back from canary rag-api:1.1.0 (revision 1) to stable rag-api:1.0.0"
        ),
        "{texts:#?}"
    );
    assert!(
        texts[1].starts_with("UPDATE: Rollback Complete, Verifying Recovery"),
        "{texts:#?}"
    );
    assert!(
        texts[2].starts_with("✅ RESOLVED: Production Rollback Complete"),
        "{texts:#?}"
    );
    assert!(texts[2].contains("Recovery: recovered at +"), "{texts:#?}");
    assert!(texts[2].contains("(target 10m: met)"), "{texts:#?}");

    // Alertmanager: the rollback alert fired and was resolved, routed to the team's receiver.
    let until = Instant::now() + Duration::from_secs(15);
    let am_got = loop {
        let got = am_hook.on("am");
        if got.iter().any(|b| b["status"] == "resolved") || Instant::now() > until {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(am_got[0]["status"], "firing", "{am_got:#?}");
    assert_eq!(am_got[0]["alerts"][0]["labels"]["service"], "rag-api");
    assert_eq!(am_got[0]["alerts"][0]["labels"]["team"], "rag");
    assert!(
        am_got.iter().any(|b| b["status"] == "resolved"),
        "{am_got:#?}"
    );

    // The post-incident review: timeline, recovery, RTO.
    let reports: Vec<_> = std::fs::read_dir(dir.path().join("audit/incidents"))
        .unwrap()
        .collect();
    assert_eq!(reports.len(), 1);
    let report = std::fs::read_to_string(reports[0].as_ref().unwrap().path()).unwrap();
    for part in [
        "### Timeline",
        "| first breaching evaluation |",
        "| rollback decided |",
        "recovery verified on the metrics",
        "- **Recovery**: recovered at +",
        "- **RTO**: ",
    ] {
        assert!(report.contains(part), "missing {part:?} in\n{report}");
    }
    eprintln!("--- incident report ---\n{report}");
    eprintln!("--- Slack ---\n{}", texts.join("\n---\n"));
    let m = metrics.encode();
    assert!(
        m.contains("backout_recoveries_total{service=\"rag-api\",outcome=\"recovered\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backout_rto_target_seconds{service=\"rag-api\"} 600"),
        "{m}"
    );

    // "Tag the image as broken": recorded, and the same image redeployed is rolled back at once.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "backout");
    let until = Instant::now() + Duration::from_secs(10);
    while cms.get_opt("backout-bad-versions").await.unwrap().is_none() {
        assert!(Instant::now() < until, "bad version not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "production");
    let patch = serde_json::json!({"spec": {"replicas": 1, "template": {"metadata": {"annotations": {"ci/build": "2"}}}}});
    deployments
        .patch(
            "rag-api-canary",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance(interval);
    let outs = daemon.cycle().await;
    let order = outs
        .iter()
        .flat_map(|o| &o.orders)
        .next()
        .expect("no order for the redeploy");
    let backout::daemon::Action::Rollback(r) = &order.action else {
        panic!("{order:?}")
    };
    assert_eq!(r.first_metric, "known_bad_version");
    assert!(audited(&trail, AuditKind::RollbackCompleted, 2).await);
    assert_eq!(replicas(&sim, "production", "rag-api-canary"), Some(0));
    let got = slack
        .wait_for("services/T0/B0/rag", 4, Duration::from_secs(10))
        .await;
    let again = got[3]["text"].as_str().unwrap();
    assert!(
        again.contains("Reason: known_bad_version: rag-api:1.1.0 was rolled back"),
        "{again}"
    );
    eprintln!("seed 001 end to end in {:?}", began.elapsed());
    sim.shutdown().await;
}
