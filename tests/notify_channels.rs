//! Notification channels against real receivers: a local HTTP receiver standing in for Slack,
//! Teams, PagerDuty and a webhook, and Debian's real Alertmanager. Delivery is what `backout run`
//! uses (`notify::Dispatcher` built from a `[notify]` section parsed from TOML).

#[path = "common/alertmanager.rs"]
mod alertmanager;
#[path = "common/receiver.rs"]
mod receiver;

use alertmanager::Alertmanager;
use backout::audit::{AuditKind, FileAudit};
use backout::clock::SystemClock;
use backout::notify::dispatch::Recorders;
use backout::notify::{Dispatcher, Envelope, Notice, Notifier, NotifyConfig};
use backout::telemetry::Metrics;
use receiver::Receiver;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_800_000_000_000;

fn started() -> Notice {
    Notice::RollbackStarted {
        service: "rag-api".into(),
        namespace: "production".into(),
        at: T0,
        reasons: vec!["error_rate canary 0.08 > critical 0.05 for 1m".into()],
        from_version: "canary rag-api:1.3.0 (revision 4)".into(),
        to_version: "stable rag-api:1.2.3 (revision 3)".into(),
        dry_run: false,
        mode: "rollback".into(),
    }
}

fn failed() -> Notice {
    Notice::Escalation {
        service: "rag-api".into(),
        namespace: "production".into(),
        at: T0 + 30_000,
        reason: "the rollback failed".into(),
        detail: "rollback attempt 2 failed (retrying in 1m): forbidden".into(),
    }
}

fn resolved() -> Notice {
    Notice::RollbackResolved {
        service: "rag-api".into(),
        namespace: "production".into(),
        started: T0,
        resolved: T0 + 95_000,
        from_version: "canary rag-api:1.3.0 (revision 4)".into(),
        to_version: "stable rag-api:1.2.3 (revision 3)".into(),
        verified: true,
        mode: "rollback".into(),
        recovery: "recovered at +35.0 s after the rollback completed".into(),
        rto: "1m 35s (target 5m: met)".into(),
    }
}

fn envelope(notice: Notice, route: &[&str]) -> Envelope {
    Envelope {
        notice,
        route: Some(route.iter().map(|s| s.to_string()).collect()),
        also: Vec::new(),
        incident: "9f3c1a2b4d5e6f70".into(),
    }
}

/// A `[notify]` section as a user writes it, with secrets in files under `dir`.
fn config(dir: &Path, toml_body: &str, secrets: &[(&str, &str)]) -> NotifyConfig {
    for (file, value) in secrets {
        std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
    }
    let text = toml_body.replace("$DIR", &dir.display().to_string());
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: NotifyConfig,
    }
    let doc: Doc = toml::from_str(&text).unwrap();
    assert_eq!(doc.notify.issues(), vec![], "config must be valid");
    doc.notify
}

struct Setup {
    dispatcher: Dispatcher,
    metrics: Metrics,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}
use std::path::PathBuf;

fn start(toml_body: &str, secrets: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), toml_body, secrets);
    let audit = Arc::new(FileAudit::new(dir.path().join("audit")).unwrap());
    let metrics = Metrics::new();
    let recorders = Recorders {
        audit: audit.clone(),
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
    };
    Setup {
        dispatcher: Dispatcher::start(cfg, recorders).unwrap(),
        metrics,
        audit: audit.trail_path(),
        _dir: dir,
    }
}

fn notified(trail: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        out = FileAudit::read_trail(trail)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.kind == AuditKind::Notified)
            .map(|r| r.detail)
            .collect();
        if !out.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_kind_receives_its_format_routed_and_in_order() {
    let rx = Receiver::start().await;
    let s = start(
        &format!(
            r#"
[notify]
default = ["hook"]
[notify.channels.oncall-slack]
kind = "slack"
url_file = "$DIR/slack-url"
[notify.channels.teams]
kind = "teams"
url_file = "$DIR/teams-url"
[notify.channels.pagerduty-p0]
kind = "pagerduty"
url = "{pd}"
routing_key_file = "$DIR/pd-key"
[notify.channels.hook]
kind = "webhook"
url = "{hook}"
"#,
            pd = rx.url("pd"),
            hook = rx.url("hook"),
        ),
        &[
            ("slack-url", &rx.url("slack/T000/B000/XXXX")),
            ("teams-url", &rx.url("teams")),
            ("pd-key", "R0UT1NGKEY"),
        ],
    );
    let route = ["oncall-slack", "teams", "pagerduty-p0"];
    for n in [started(), failed(), resolved()] {
        s.dispatcher.deliver(envelope(n, &route)).await.unwrap();
    }
    // A policy without its own list goes to the default route only.
    s.dispatcher
        .deliver(Envelope {
            route: None,
            ..envelope(started(), &[])
        })
        .await
        .unwrap();

    let slack = rx
        .wait_for("slack/T000/B000/XXXX", 3, Duration::from_secs(10))
        .await;
    let titles: Vec<&str> = slack
        .iter()
        .map(|b| b["blocks"][0]["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "🚨 INCIDENT: Production Rollback Initiated",
            "🔥 ESCALATION: production/rag-api needs a human now",
            "✅ RESOLVED: Production Rollback Complete",
        ]
    );
    let fallback = slack[0]["text"].as_str().unwrap();
    assert!(
        fallback.contains("Action: Rolling back from canary rag-api:1.3.0"),
        "{fallback}"
    );
    assert!(slack[2]["text"]
        .as_str()
        .unwrap()
        .contains("Duration: 95.0 s"));

    let teams = rx.wait_for("teams", 3, Duration::from_secs(10)).await;
    let card = &teams[0]["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["body"][0]["text"],
        "🚨 INCIDENT: Production Rollback Initiated"
    );

    // PagerDuty: only the escalation triggers, the resolution resolves the same dedup key.
    let pd = rx.wait_for("pd", 2, Duration::from_secs(10)).await;
    assert_eq!(pd.len(), 2, "{pd:#?}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], "R0UT1NGKEY");
    assert_eq!(pd[0]["dedup_key"], "9f3c1a2b4d5e6f70");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], "9f3c1a2b4d5e6f70");

    let hook = rx.wait_for("hook", 1, Duration::from_secs(10)).await;
    assert_eq!(hook.len(), 1, "only the default-routed notice: {hook:#?}");
    assert_eq!(hook[0]["backout"]["event"], "rollback_started");
    assert_eq!(hook[0]["incident"], "9f3c1a2b4d5e6f70");

    let m = s.metrics.encode();
    for series in [
        "backout_notifications_total{channel=\"oncall-slack\",outcome=\"sent\"} 3",
        "backout_notifications_total{channel=\"pagerduty-p0\",outcome=\"sent\"} 2",
        "backout_notifications_total{channel=\"hook\",outcome=\"sent\"} 1",
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
    let trail = notified(&s.audit);
    assert!(trail.iter().any(|d| d["channel"] == "pagerduty-p0"
        && d["event"] == "escalation"
        && d["outcome"] == "sent"));
    // Secrets never reach the audit trail.
    let text = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        !text.contains("R0UT1NGKEY") && !text.contains("T000/B000"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_with_backoff_and_a_dead_channel_never_blocks() {
    let rx = Receiver::start().await;
    // Nothing listens on the dead channel's port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/x", dead.local_addr().unwrap());
    drop(dead);
    let s = start(
        &format!(
            r#"
[notify]
timeout = "500ms"
retries = 3
retry_initial = "50ms"
retry_max = "200ms"
[notify.channels.flaky]
kind = "webhook"
url = "{flaky}"
[notify.channels.dead]
kind = "webhook"
url = "{dead_url}"
"#,
            flaky = rx.url("flaky"),
        ),
        &[],
    );
    rx.fail_first(2);
    let t = Instant::now();
    s.dispatcher
        .deliver(envelope(started(), &["flaky", "dead"]))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "deliver waited {:?}",
        t.elapsed()
    );
    let got = rx.wait_for("flaky", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let until = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = s.metrics.encode();
        if m.contains("channel=\"dead\",outcome=\"failed\"") || Instant::now() > until {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        m.contains("backout_notifications_total{channel=\"flaky\",outcome=\"sent\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backout_notifications_total{channel=\"dead\",outcome=\"failed\"} 1"),
        "{m}"
    );
    let trail = notified(&s.audit);
    let flaky = trail.iter().find(|d| d["channel"] == "flaky").unwrap();
    assert_eq!(flaky["attempts"], 3, "two 500s, then delivered: {flaky}");
    let dead = trail.iter().find(|d| d["channel"] == "dead").unwrap();
    assert_eq!(dead["attempts"], 4, "first try and 3 retries: {dead}");
    assert!(
        !dead["error"].as_str().unwrap().contains("127.0.0.1"),
        "no URL in errors: {dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_fires_the_rollback_and_resolves_it() {
    let rx = Receiver::start().await;
    let am = Alertmanager::start(&rx.url("am-webhook")).await;
    let s = start(
        &format!(
            r#"
[notify]
default = ["alertmanager"]
[notify.channels.alertmanager]
kind = "alertmanager"
url = "{}"
labels = {{ team = "rag", severity = "page" }}
"#,
            am.url
        ),
        &[],
    );
    // Alertmanager rejects alerts that ended before they started or start in the far future:
    // use now.
    let now = backout::clock::Clock::now_millis(&SystemClock);
    let shift = |n: Notice| match n {
        Notice::RollbackStarted {
            service,
            namespace,
            reasons,
            from_version,
            to_version,
            dry_run,
            mode,
            ..
        } => Notice::RollbackStarted {
            service,
            namespace,
            at: now,
            reasons,
            from_version,
            to_version,
            dry_run,
            mode,
        },
        Notice::RollbackResolved {
            service,
            namespace,
            from_version,
            to_version,
            verified,
            mode,
            recovery,
            rto,
            ..
        } => Notice::RollbackResolved {
            service,
            namespace,
            started: now,
            resolved: now + 2_000,
            from_version,
            to_version,
            verified,
            mode,
            recovery,
            rto,
        },
        other => other,
    };
    s.dispatcher
        .deliver(Envelope {
            route: None,
            ..envelope(shift(started()), &[])
        })
        .await
        .unwrap();

    // Alertmanager holds it and routes it (here to a webhook) as "firing".
    let fired = rx.wait_for("am-webhook", 1, Duration::from_secs(15)).await;
    assert_eq!(fired[0]["status"], "firing", "{:#}", fired[0]);
    let alert = &fired[0]["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "BackoutRollback");
    assert_eq!(alert["labels"]["service"], "rag-api");
    assert_eq!(alert["labels"]["team"], "rag");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["incident"], "9f3c1a2b4d5e6f70");
    assert_eq!(
        alert["annotations"]["summary"],
        "🚨 INCIDENT: Production Rollback Initiated"
    );
    assert_eq!(am.active().await.len(), 1);

    s.dispatcher
        .deliver(Envelope {
            route: None,
            ..envelope(shift(resolved()), &[])
        })
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rx.on("am-webhook");
        if got.iter().any(|b| b["status"] == "resolved") {
            break;
        }
        assert!(Instant::now() < until, "no resolved notification: {got:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s
        .metrics
        .encode()
        .contains("backout_notifications_total{channel=\"alertmanager\",outcome=\"sent\"} 2"));
}
