//! `backout backtest` end to end: a deterministic incident is backfilled into a REAL Prometheus
//! (Debian's 2.42 via `promtool tsdb create-blocks-from openmetrics`) and the real binary replays
//! a policy over it. Needs `prometheus`/`promtool` on PATH (`just deps`); fails loudly otherwise.

#[path = "common/incident.rs"]
mod incident;
#[path = "common/prometheus.rs"]
mod prometheus;

use incident::{openmetrics, Incident};
use prometheus::Prometheus;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;

/// A threshold metric on a batched error-ratio query (one query for every service and track,
/// split by labels like the daemon does) and a sequential test on the raw counters.
fn policy(service: &str) -> String {
    format!(
        r#"service = "{service}"
namespace = "default"

[deployments]
stable = "{service}"
canary = "{service}-canary"

[traffic]
virtual_service = "{service}"
route = "primary"
stable = {{ host = "{service}", subset = "stable" }}
canary = {{ host = "{service}", subset = "canary" }}

[analysis]
interval = "10s"
warmup = "1m"

[[metric]]
name = "error_ratio"
query = 'sum by (service, track) (rate(http_requests_total{{code="500"}}[{{{{window}}}}])) / sum by (service, track) (rate(http_requests_total[{{{{window}}}}]))'
window = "1m"
warning = {{ above = 0.02 }}
critical = {{ above = 0.05 }}
for = "1m"

[[metric]]
name = "errors_vs_stable"
[metric.sequential]
events = 'sum(http_requests_total{{service="{{{{service}}}}",track="{{{{track}}}}",code="500"}})'
total = 'sum(http_requests_total{{service="{{{{service}}}}",track="{{{{track}}}}"}})'
"#
    )
}

fn write_policy(dir: &Path, service: &str, text: &str) -> String {
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, text).expect("write policy");
    path.display().to_string()
}

/// Runs the binary under test (`BACKTEST_BIN` may name another build, e.g. a release one, to
/// time it).
fn backout(args: &[&str]) -> Output {
    let bin =
        std::env::var("BACKTEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_backout").into());
    Command::new(bin)
        .args(args)
        .env_remove("BACKOUT_PROMETHEUS__URL")
        .output()
        .expect("run backout")
}

/// Runs `backout backtest` of the policy in `file` over `from..to` (RFC 3339) against the
/// Prometheus at `url`, with `extra` flags after the common ones.
fn backtest(file: &str, from: &str, to: &str, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "backtest",
        "--policy",
        file,
        "--from",
        from,
        "--to",
        to,
        "--prometheus",
        url,
    ];
    args.extend_from_slice(extra);
    backout(&args)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

/// The stdout of a run that must succeed; panics with the whole output when it did not.
fn stdout_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Parses JSON lines of a successful run; panics with the whole output when they are not.
fn json_lines(out: &Output) -> Vec<Value> {
    stdout_of(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn now_on_grid() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % 10_000
}

#[tokio::test]
async fn a_replayed_incident_rolls_back_soon_after_its_onset_and_a_healthy_service_does_not() {
    // 40 minutes of history ending ten minutes ago. `shop`'s canary starts failing 20% of its
    // requests 20 minutes after the canary started; `cart` stays healthy throughout.
    let start = now_on_grid() - 50 * MIN;
    let from = start + 5 * MIN;
    let onset = from + 20 * MIN;
    let to = start + 40 * MIN;
    let shop = Incident::healthy("shop", start, 40).canary_fails_from(onset, 0.2);
    let cart = Incident::healthy("cart", start, 40);
    let prom = Prometheus::builder()
        .backfill(openmetrics(&[shop, cart]))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (from_s, to_s) = (rfc3339(from), rfc3339(to));
    let run = |service: &str, extra: &[&str]| {
        let file = write_policy(dir.path(), service, &policy(service));
        backtest(&file, &from_s, &to_s, &prom.url, extra)
    };

    // The incident: every change before the onset is at most inconclusive (warm-up, counting),
    // and the rollback fires within three minutes after it.
    let lines = json_lines(&run("shop", &["--json"]));
    let (summary, changes) = lines.split_last().expect("a summary line");
    assert_eq!(summary["event"], "summary", "{summary}");
    assert_eq!(summary["polls"], 40 * 6 - 5 * 6 + 1);
    for c in changes {
        assert_eq!(c["event"], "change");
        if c["at"].as_i64().unwrap() <= onset {
            assert!(
                matches!(c["health"].as_str(), Some("healthy" | "inconclusive")),
                "a verdict before the onset: {c}\n{}",
                prom.log()
            );
        }
    }
    let rollback = &summary["rollback"];
    let at = rollback["at"]
        .as_i64()
        .unwrap_or_else(|| panic!("no rollback in {summary}"));
    assert!(
        at > onset && at <= onset + 3 * MIN,
        "rollback {} s after the onset: {summary}",
        (at - onset) / 1000
    );
    assert_eq!(rollback["time"], rfc3339(at));
    assert_eq!(
        rollback["after_s"].as_f64(),
        Some((at - from) as f64 / 1000.0)
    );
    let fired = changes
        .iter()
        .find(|c| c["rollback"] == true)
        .expect("a change with the rollback");
    assert_eq!(fired["at"].as_i64(), Some(at));
    assert_eq!(fired["health"], "critical");
    assert!(!fired["reasons"].as_array().unwrap().is_empty(), "{fired}");
    assert_eq!(
        fired["metrics"].as_array().map(Vec::len),
        Some(2),
        "{fired}"
    );
    eprintln!(
        "shop: rollback {} s after the onset by {}",
        (at - onset) / 1000,
        fired["reasons"][0]["metric"]
    );

    // The same replay for people.
    let text = stdout_of(&run("shop", &[]));
    assert!(
        text.contains(&format!(
            "rollback would have fired at {} ({} s after start)",
            rfc3339(at),
            (at - from) / 1000
        )),
        "{text}"
    );

    // The healthy service sharing the batched query: no rollback, healthy at the end.
    let lines = json_lines(&run("cart", &["--json"]));
    let summary = lines.last().unwrap();
    assert!(summary["rollback"].is_null(), "{summary}");
    assert_eq!(summary["final_health"], "healthy", "{summary}");
    assert!(lines.iter().all(|l| l["rollback"] != true));

    // `explain --since` replays up to now and says where each metric stands (the history
    // ended ten minutes ago, so the metrics have no data now; the rollback stays on record).
    let file = write_policy(dir.path(), "shop", &policy("shop"));
    let out = backout(&[
        "explain",
        "--policy",
        &file,
        "--since",
        &from_s,
        "--prometheus",
        &prom.url,
    ]);
    let text = stdout_of(&out);
    assert!(text.contains("# Live standing of `shop`"), "{text}");
    assert!(
        text.contains(&format!("rollback would have fired at {}", rfc3339(at))),
        "{text}"
    );
    // Losing the data is not recovery: the fired level stays firing.
    assert!(
        text.contains(
            "# metric `error_ratio` (threshold): critical, last = no value; \
             no data on canary (empty result); critical firing since"
        ),
        "{text}"
    );
    assert!(
        text.contains("# metric `errors_vs_stable` (sequential):"),
        "{text}"
    );

    // A query Prometheus rejects: non-zero exit, and the error names the query.
    let broken = policy("shop").replace(
        "sum by (service, track) (rate(",
        "sum by (service, track) (rat(",
    );
    let file = write_policy(dir.path(), "broken", &broken);
    let out = backtest(&file, &from_s, &to_s, &prom.url, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("range query failed (bad_data)")
            && stderr.contains("(rat(http_requests_total"),
        "{stderr}"
    );
}

/// Times a backtest over `days` of history at a 10 s step, the canary failing from the last
/// fifth on, and checks it finds the rollback.
async fn time_a_backtest(days: i64) {
    let minutes = days * 24 * 60;
    let start = now_on_grid() - (minutes + 60) * MIN;
    let onset = start + minutes * 4 / 5 * MIN;
    let shop = Incident::healthy("shop", start, minutes).canary_fails_from(onset, 0.2);
    let began = Instant::now();
    let prom = Prometheus::builder()
        .backfill(openmetrics(&[shop]))
        .start()
        .await
        .unwrap();
    eprintln!("backfill and start: {:?}", began.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let file = write_policy(dir.path(), "shop", &policy("shop"));
    let (from_s, to_s) = (rfc3339(start), rfc3339(start + minutes * MIN));
    let began = Instant::now();
    let out = backtest(&file, &from_s, &to_s, &prom.url, &[]);
    let wall = began.elapsed();
    let text = stdout_of(&out);
    eprintln!("{text}\nwall time {wall:?}");
    assert!(
        text.contains(&format!("{} polls", minutes * 6 + 1)),
        "{text}"
    );
    assert!(text.contains("rollback would have fired"), "{text}");
    assert!(wall < Duration::from_secs(120), "{wall:?}");
}

/// A day at 10 s (8 641 polls, one range query per query). Ignored by default (it backfills a
/// day of history); `cargo test --test backtest -- --ignored --nocapture` prints the timings.
#[tokio::test]
#[ignore]
async fn a_day_at_ten_seconds_replays_in_seconds() {
    time_a_backtest(1).await;
}

/// A week at 10 s (60 481 polls): more points than Prometheus returns per range query, so
/// every query is fetched in 7 chunks on the same grid.
#[tokio::test]
#[ignore]
async fn a_week_at_ten_seconds_is_fetched_in_chunks() {
    time_a_backtest(7).await;
}

/// The runbooks' rule (5% errors over 1 minute, held 1 minute) with the traffic query the
/// shared-cause test takes its counts from, and the recommended sequential test next to it.
fn threshold_policy(service: &str) -> String {
    policy(service).replace(
        "interval = \"10s\"\nwarmup = \"1m\"\n",
        "interval = \"10s\"\nwarmup = \"1m\"\n\
         traffic_query = 'sum by (service, track) (rate(http_requests_total[{{window}}]))'\n",
    )
}

/// Rollback instant of a `--json` backtest, or `None`, with every change's health.
fn replay(file: &str, from: i64, to: i64, url: &str) -> (Option<i64>, Vec<(i64, String)>) {
    let lines = json_lines(&backtest(
        file,
        &rfc3339(from),
        &rfc3339(to),
        url,
        &["--json"],
    ));
    let (summary, changes) = lines.split_last().expect("a summary line");
    let healths = changes
        .iter()
        .map(|c| {
            let at = c["at"].as_i64().unwrap_or_default();
            (at, c["health"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    (summary["rollback"]["at"].as_i64(), healths)
}

#[tokio::test]
async fn a_shared_dependency_incident_is_shared_not_rolled_back_and_a_late_step_is_caught() {
    // 3 h 10 min of history. `dep`: both tracks fail 10% from 40 minutes in, for the rest of
    // the history (the runbooks' 5% level is crossed on the canary AND the stable).
    // `early` and `late`: the canary alone goes from 0.5% to 2.5% errors (x5), 5 minutes and
    // 2 h 40 min into its analysis.
    let minutes = 190;
    let start = now_on_grid() - (minutes + 10) * MIN;
    let from = start + 5 * MIN;
    let to = start + minutes * MIN;
    let shared_onset = from + 40 * MIN;
    let (early_onset, late_onset) = (from + 5 * MIN, from + 160 * MIN);
    let dep = Incident::healthy("dep", start, minutes).both_fail_from(shared_onset, 0.10);
    let early = Incident::healthy("early", start, minutes).canary_fails_from(early_onset, 0.025);
    let late = Incident::healthy("late", start, minutes).canary_fails_from(late_onset, 0.025);
    let prom = Prometheus::builder()
        .backfill(openmetrics(&[dep, early, late]))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |service: &str| write_policy(dir.path(), service, &threshold_policy(service));

    let (rollback, healths) = replay(&file("dep"), from, to, &prom.url);
    assert_eq!(rollback, None, "a shared incident rolled back: {healths:?}");
    let shared_at = healths
        .iter()
        .find(|(_, h)| h == "shared")
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("no shared verdict: {healths:?}\n{}", prom.log()));
    assert!(
        shared_at > shared_onset && shared_at <= shared_onset + 2 * MIN,
        "shared {} s after the onset",
        (shared_at - shared_onset) / 1000
    );
    let text = stdout_of(&backtest(
        &file("dep"),
        &rfc3339(from),
        &rfc3339(to),
        &prom.url,
        &[],
    ));
    assert!(
        text.contains("error_ratio shared")
            && text.contains("both tracks breach; the canary is not worse"),
        "{text}"
    );
    // The same incident under `on_shared = "rollback"`: rolled back, as the runbooks would.
    let rolling =
        threshold_policy("dep").replace("traffic_query", "on_shared = \"rollback\"\ntraffic_query");
    let rolling = write_policy(dir.path(), "dep-rolling", &rolling);
    assert!(replay(&rolling, from, to, &prom.url).0.is_some());

    // The late step is caught by the change detector about as fast as the early one by the
    // test from warm-up: the 2 h 40 min of healthy history before it do not dilute it.
    let delay = |service: &str, onset: i64| {
        let (at, healths) = replay(&file(service), from, to, &prom.url);
        let at = at.unwrap_or_else(|| panic!("{service}: no rollback: {healths:?}"));
        assert!(at > onset, "{service}: rolled back before the onset");
        (at - onset) / 1000
    };
    let (early_s, late_s) = (delay("early", early_onset), delay("late", late_onset));
    eprintln!("x5 step: early {early_s} s, late {late_s} s after the onset");
    assert!(
        late_s as f64 <= 1.25 * early_s as f64 + 30.0,
        "late {late_s} s against early {early_s} s"
    );
}
