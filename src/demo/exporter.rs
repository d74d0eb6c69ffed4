//! Exposes a [`Workload`] the way an instrumented service would, for Prometheus to scrape.
//!
//! Series follow the most common HTTP conventions, so the default policy templates work against
//! it unchanged: `http_requests_total{service,track,code}` and the histogram
//! `http_request_duration_seconds{service,track}`. The same counters can be written as an
//! OpenMetrics file with timestamps, which `promtool tsdb create-blocks-from openmetrics` turns
//! into history for backtests.

use super::workload::{Counters, Workload, BUCKETS};
use crate::sample::Millis;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Prometheus text exposition (format 0.0.4) of the workload, accrued up to now.
pub fn render_text(workload: &Workload) -> String {
    let (_, counters) = workload.snapshot();
    let mut out = String::new();
    families(&mut out, &[(None, counters)], false);
    out
}

/// An OpenMetrics document with one timestamped point per snapshot, ready for
/// `promtool tsdb create-blocks-from openmetrics`. Snapshots must be in time order.
pub fn render_openmetrics(snapshots: &[(Millis, Vec<Counters>)]) -> String {
    let timed: Vec<(Option<Millis>, Vec<Counters>)> = snapshots
        .iter()
        .map(|(t, c)| (Some(*t), c.clone()))
        .collect();
    let mut out = String::new();
    families(&mut out, &timed, true);
    out.push_str("# EOF\n");
    out
}

/// Writes both families. OpenMetrics wants every family and every series contiguous, so the loop
/// order is family -> series -> time.
fn families(out: &mut String, snapshots: &[(Option<Millis>, Vec<Counters>)], openmetrics: bool) {
    let series_count = snapshots.first().map_or(0, |(_, c)| c.len());
    let (requests, duration) = if openmetrics {
        ("http_requests", "http_request_duration_seconds")
    } else {
        ("http_requests_total", "http_request_duration_seconds")
    };
    let _ = writeln!(out, "# HELP {requests} Requests handled, by response code.");
    let _ = writeln!(out, "# TYPE {requests} counter");
    for code in ["200", "500"] {
        for i in 0..series_count {
            for (t, cs) in snapshots {
                let Some(c) = cs.get(i) else { continue };
                let v = if code == "200" { c.ok } else { c.errors };
                let labels = format!("{},code=\"{code}\"", base_labels(c));
                sample(out, "http_requests_total", &labels, v, *t);
            }
        }
    }
    let _ = writeln!(out, "# HELP {duration} Request latency.");
    let _ = writeln!(out, "# TYPE {duration} histogram");
    for i in 0..series_count {
        for (t, cs) in snapshots {
            let Some(c) = cs.get(i) else { continue };
            let base = base_labels(c);
            for (le, n) in BUCKETS.iter().zip(&c.buckets) {
                let labels = format!("{base},le=\"{le}\"");
                sample(out, "http_request_duration_seconds_bucket", &labels, *n, *t);
            }
            let labels = format!("{base},le=\"+Inf\"");
            sample(
                out,
                "http_request_duration_seconds_bucket",
                &labels,
                c.total(),
                *t,
            );
            sample(
                out,
                "http_request_duration_seconds_count",
                &base,
                c.total(),
                *t,
            );
            sample(
                out,
                "http_request_duration_seconds_sum",
                &base,
                c.latency_sum,
                *t,
            );
        }
    }
}

fn base_labels(c: &Counters) -> String {
    format!(
        "service=\"{}\",track=\"{}\"",
        escape(&c.service),
        c.track.as_str()
    )
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64, at: Option<Millis>) {
    match at {
        // OpenMetrics timestamps are seconds.
        Some(ms) => {
            let _ = writeln!(out, "{name}{{{labels}}} {value} {}", ms as f64 / 1000.0);
        }
        None => {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` endpoint as an axum router, to mount in a larger app (e.g. the demo).
pub fn router(workload: Workload) -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let w = workload.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    render_text(&w),
                )
            }
        }),
    )
}

/// Serves `/metrics` on `addr` (port 0 picks a free one) in a background task; returns the bound
/// address. The task stops when the returned handle is aborted or dropped with the runtime.
pub async fn spawn(
    workload: Workload,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(workload);
    let handle = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(%err, "synthetic exporter stopped");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::demo::workload::Load;
    use crate::sample::Track;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn text_exposition_has_counters_by_code_and_histogram() {
        let clock = ManualClock::new(0);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set("shop", Track::Canary, Load::healthy(10.0).with_errors(0.25));
        clock.advance(Duration::from_secs(2));
        let text = render_text(&w);
        assert!(text
            .contains("http_requests_total{service=\"shop\",track=\"canary\",code=\"500\"} 5\n"));
        assert!(text
            .contains("http_requests_total{service=\"shop\",track=\"canary\",code=\"200\"} 15\n"));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{service=\"shop\",track=\"canary\",le=\"+Inf\"} 20\n"
        ));
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }

    #[test]
    fn openmetrics_keeps_each_series_contiguous_and_ends_with_eof() {
        let clock = ManualClock::new(1_000_000);
        let w = Workload::new(Arc::new(clock.clone()));
        w.set("a", Track::Canary, Load::healthy(1.0));
        w.set("a", Track::Stable, Load::healthy(1.0));
        let mut snaps = Vec::new();
        for _ in 0..3 {
            clock.advance(Duration::from_secs(15));
            snaps.push(w.snapshot());
        }
        let doc = render_openmetrics(&snaps);
        assert!(doc.ends_with("# EOF\n"));
        assert!(doc.contains("# TYPE http_requests counter"));
        let canary_ok: Vec<usize> = doc
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                l.starts_with("http_requests_total{service=\"a\",track=\"canary\",code=\"200\"}")
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(canary_ok.len(), 3);
        assert_eq!(
            canary_ok[2] - canary_ok[0],
            2,
            "series points must be adjacent"
        );
        assert!(doc.contains("} 15 1015\n"));
    }
}
