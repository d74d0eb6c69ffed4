//! The Prometheus source against a REAL Prometheus scraping the synthetic exporter every second.
//! Needs Debian's `prometheus`/`promtool` on PATH (`just deps`); fails loudly otherwise.

#[path = "common/prometheus.rs"]
mod prometheus;

use backout::clock::{ManualClock, SystemClock};
use backout::demo::exporter;
use backout::demo::workload::{Delta, Load, Workload};
use backout::sample::{Observation, Track};
use backout::source::{
    run_plan, Key, MetricSource, PrometheusConfig, PrometheusSource, QueryPlan, Range, Request,
};
use prometheus::{eventually, Prometheus};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const ERROR_RATE: &str = r#"sum by (service, track) (rate(http_requests_total{code="500"}[5s])) / sum by (service, track) (rate(http_requests_total[5s]))"#;
const P99: &str = "histogram_quantile(0.99, sum by (service, track, le) (rate(http_request_duration_seconds_bucket[5s])))";
const WAIT: Duration = Duration::from_secs(40);

/// A live workload served on a free loopback port, and Prometheus scraping it.
async fn live() -> (Workload, Prometheus, PrometheusSource) {
    let workload = Workload::new(Arc::new(SystemClock));
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _task) = exporter::spawn(workload.clone(), addr).await.unwrap();
    let prom = Prometheus::scraping(&[bound]).await.unwrap();
    let source = PrometheusSource::new(&PrometheusConfig::for_url(&prom.url)).unwrap();
    (workload, prom, source)
}

fn plan(template: &str, metric: &str, services: &[&str]) -> QueryPlan {
    QueryPlan::build(
        services
            .iter()
            .flat_map(|s| Track::ALL.map(|t| Request::new(Key::new(*s, metric, t), template))),
    )
}

fn close(obs: &Observation, want: f64, tol: f64) -> bool {
    obs.value().is_some_and(|v| (v - want).abs() <= tol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_per_track_matches_what_the_exporter_serves() {
    let (workload, _prom, source) = live().await;
    workload.set("shop", Track::Canary, Load::healthy(40.0).with_errors(0.2));
    workload.set("shop", Track::Stable, Load::healthy(40.0).with_errors(0.01));
    workload.set("cart", Track::Canary, Load::healthy(40.0).with_errors(0.05));
    workload.set("cart", Track::Stable, Load::healthy(40.0));

    let plan = plan(ERROR_RATE, "error_rate", &["shop", "cart"]);
    assert_eq!(plan.len(), 1, "one batched query for both services");
    let want = [
        ("shop", Track::Canary, 0.2),
        ("shop", Track::Stable, 0.01),
        ("cart", Track::Canary, 0.05),
        ("cart", Track::Stable, 0.0),
    ];
    let check = |want: [(&'static str, Track, f64); 4]| {
        let (source, plan) = (&source, &plan);
        move || async move {
            let obs = run_plan(source, plan, None, 4).await;
            let ok = want
                .iter()
                .all(|(s, t, v)| close(&obs[&Key::new(*s, "error_rate", *t)], *v, 1e-3));
            if ok {
                Ok(obs)
            } else {
                Err(obs)
            }
        }
    };
    eventually(WAIT, "error rates per track", check(want)).await;

    // The test controls the canary at runtime: a spike shows up as the new ratio.
    workload.set("shop", Track::Canary, Load::healthy(40.0).with_errors(0.5));
    let mut spiked = want;
    spiked[0].2 = 0.5;
    eventually(WAIT, "the canary error spike", check(spiked)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p99_latency_matches_histogram_quantile_of_the_configured_latency() {
    let (workload, _prom, source) = live().await;
    workload.set("shop", Track::Canary, Load::healthy(20.0).with_latency(0.3));
    workload.set(
        "shop",
        Track::Stable,
        Load::healthy(20.0).with_latency(0.02),
    );
    let plan = plan(P99, "p99", &["shop"]);
    // What histogram_quantile must return, computed by the workload's own PromQL-like delta.
    let expected = |load: Load| {
        let clock = ManualClock::new(0);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set("x", Track::Canary, load);
        let (t0, a) = w.snapshot();
        clock.advance(Duration::from_secs(5));
        let (t1, b) = w.snapshot();
        Delta::between((t0, &a[0]), (t1, &b[0]))
            .unwrap()
            .quantile(0.99)
    };
    let want_canary = expected(Load::healthy(20.0).with_latency(0.3));
    let want_stable = expected(Load::healthy(20.0).with_latency(0.02));
    assert!(want_canary > 0.25 && want_canary <= 0.5);
    let obs: HashMap<Key, Observation> = eventually(WAIT, "p99 per track", || async {
        let obs = run_plan(&source, &plan, None, 2).await;
        let canary = &obs[&Key::new("shop", "p99", Track::Canary)];
        let stable = &obs[&Key::new("shop", "p99", Track::Stable)];
        if close(canary, want_canary, 1e-9) && close(stable, want_stable, 1e-9) {
            Ok(obs)
        } else {
            Err(obs)
        }
    })
    .await;
    assert_eq!(obs.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_absent_and_no_traffic_is_not_finite() {
    let (workload, _prom, source) = live().await;
    workload.set("idle", Track::Canary, Load::healthy(0.0));
    workload.set("busy", Track::Canary, Load::healthy(10.0));
    let plan = plan(ERROR_RATE, "error_rate", &["idle", "ghost", "busy"]);
    let obs = eventually(WAIT, "0/0 for the idle service", || async {
        let obs = run_plan(&source, &plan, None, 2).await;
        match &obs[&Key::new("idle", "error_rate", Track::Canary)] {
            Observation::NotFinite(v) if v.is_nan() => Ok(obs),
            _ => Err(obs),
        }
    })
    .await;
    // Prometheus is up and answering, the busy service has data: "ghost" is absent, not zero.
    assert!(close(
        &obs[&Key::new("busy", "error_rate", Track::Canary)],
        0.0,
        1e-9
    ));
    assert_eq!(
        obs[&Key::new("ghost", "error_rate", Track::Canary)],
        Observation::Absent
    );
    assert_eq!(
        obs[&Key::new("ghost", "error_rate", Track::Stable)],
        Observation::Absent
    );
    let direct = source
        .instant(r#"http_requests_total{service="ghost"}"#, None)
        .await
        .unwrap();
    assert!(direct.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_promql_is_bad_data_from_the_real_server() {
    let (_workload, _prom, source) = live().await;
    let err = source.instant("sum(rate(x[1m]", None).await.unwrap_err();
    assert_eq!(err.reason(), "bad_data", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_prometheus_is_a_connect_error_for_every_key() {
    let (workload, mut prom, source) = live().await;
    workload.set("shop", Track::Canary, Load::healthy(10.0));
    let plan = plan(ERROR_RATE, "error_rate", &["shop"]);
    eventually(WAIT, "a first value", || async {
        let obs = run_plan(&source, &plan, None, 2).await;
        match obs[&Key::new("shop", "error_rate", Track::Canary)] {
            Observation::Value(_) => Ok(()),
            _ => Err(obs),
        }
    })
    .await;
    source.probe().await.unwrap();
    prom.stop();
    assert_eq!(source.probe().await.unwrap_err().reason(), "connect");
    let obs = run_plan(&source, &plan, None, 2).await;
    assert_eq!(obs.len(), 2);
    for o in obs.values() {
        assert_eq!(*o, Observation::Error("connect".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_history_is_returned_by_range_queries() {
    // An hour of history ending ten minutes ago, scraped every 15 s: the canary goes bad halfway.
    let now = SystemClock.now_millis_rounded();
    let start = now - 70 * 60_000;
    let clock = ManualClock::new(start);
    let history = Workload::new(Arc::new(clock.clone()));
    history.set("shop", Track::Canary, Load::healthy(10.0).with_errors(0.02));
    history.set("shop", Track::Stable, Load::healthy(10.0).with_errors(0.02));
    let mut snapshots = Vec::new();
    for step in 0..240 {
        if step == 120 {
            history.set("shop", Track::Canary, Load::healthy(10.0).with_errors(0.3));
        }
        clock.advance(Duration::from_secs(15));
        snapshots.push(history.snapshot());
    }
    let prom = Prometheus::builder()
        .backfill(exporter::render_openmetrics(&snapshots))
        .start()
        .await
        .unwrap();
    let source = PrometheusSource::new(&PrometheusConfig::for_url(&prom.url)).unwrap();
    let q = r#"sum by (service, track) (rate(http_requests_total{code="500"}[1m])) / sum by (service, track) (rate(http_requests_total[1m]))"#;
    let range = Range {
        start: start + 5 * 60_000,
        end: start + 55 * 60_000,
        step: Duration::from_secs(60),
    };
    let series = source.range(q, range).await.unwrap();
    let canary = series
        .iter()
        .find(|s| s.labels.get("track").map(String::as_str) == Some("canary"))
        .unwrap_or_else(|| panic!("no canary series in {series:?}\n{}", prom.log()));
    let early = canary
        .samples
        .iter()
        .find(|s| s.at < start + 25 * 60_000)
        .unwrap();
    let late = canary
        .samples
        .iter()
        .rev()
        .find(|s| s.at > start + 40 * 60_000)
        .unwrap();
    assert!(close(&early.obs, 0.02, 1e-6), "{early:?}");
    assert!(close(&late.obs, 0.3, 1e-6), "{late:?}");

    // The histogram family survives the OpenMetrics round trip too.
    let p99 = "histogram_quantile(0.99, sum by (service, track, le) (rate(http_request_duration_seconds_bucket[1m])))";
    let series = source.range(p99, range).await.unwrap();
    let (a, b) = (&snapshots[20], &snapshots[24]);
    let want = Delta::between((a.0, &a.1[0]), (b.0, &b.1[0]))
        .unwrap()
        .quantile(0.99);
    assert_eq!(series.len(), 2, "{series:?}");
    for s in &series {
        assert!(s.samples.iter().all(|p| close(&p.obs, want, 1e-9)), "{s:?}");
    }
}

/// bcrypt (cost 4) of "s3cret", for Prometheus's `basic_auth_users`.
const S3CRET_HASH: &str = "$2b$04$Wu7PLHJ.6DZ1d8kNgb2tuO7PVWuuus/eQKCSS50A7DcfSLfD9llWC";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_basic_auth_from_a_password_file() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let prom = Prometheus::builder()
        .tls(&fixtures)
        .basic_auth("backout", "s3cret", S3CRET_HASH)
        .start()
        .await
        .unwrap();
    assert!(prom.url.starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let cfg = |ca: bool, password_file: &std::path::Path| PrometheusConfig {
        ca_file: ca.then(|| fixtures.join("ca.pem")),
        basic_auth_user: Some("backout".into()),
        basic_auth_password_file: Some(password_file.to_path_buf()),
        ..PrometheusConfig::for_url(&prom.url)
    };

    let source = PrometheusSource::new(&cfg(true, &password)).unwrap();
    source.probe().await.unwrap();
    let one = source.instant("vector(1)", None).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].value, 1.0);

    // Without the private CA the TLS handshake fails: a connect error, not a value.
    let untrusted = PrometheusSource::new(&cfg(false, &password)).unwrap();
    let err = untrusted.probe().await.unwrap_err();
    assert_eq!(err.reason(), "connect", "{err}");

    // A wrong password is refused by Prometheus (401).
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let refused = PrometheusSource::new(&cfg(true, &wrong)).unwrap();
    let err = refused.instant("vector(1)", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            backout::source::SourceError::HttpStatus { status: 401, .. }
        ),
        "{err:?}"
    );
}

trait RoundedNow {
    fn now_millis_rounded(&self) -> i64;
}

impl RoundedNow for SystemClock {
    /// Whole seconds, so backfilled timestamps line up with range query steps.
    fn now_millis_rounded(&self) -> i64 {
        use backout::clock::Clock;
        self.now_millis() / 1000 * 1000
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_added_after_start_are_scraped_after_reload() {
    let prom = Prometheus::builder().start().await.unwrap();
    let source = PrometheusSource::new(&PrometheusConfig::for_url(&prom.url)).unwrap();
    let workload = Workload::new(Arc::new(SystemClock));
    workload.set("late", Track::Canary, Load::healthy(5.0));
    let (bound, _task) = exporter::spawn(workload, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let q = r#"http_requests_total{service="late",code="200"}"#;
    assert!(source.instant(q, None).await.unwrap().is_empty());
    prom.set_targets(&[bound]).await.unwrap();
    eventually(WAIT, "the late exporter's series", || async {
        let s = source.instant(q, None).await.unwrap();
        if s.len() == 1 {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}
