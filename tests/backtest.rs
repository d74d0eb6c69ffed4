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
