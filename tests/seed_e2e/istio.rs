//! An Istio-instrumented service's history as OpenMetrics, for backfilling a real Prometheus:
//! `istio_requests_total` (reporter source, response code and flags), the request-duration
//! histogram, `kube_pod_status_ready` and any gauge per Deployment: what the config/examples
//! policies and templates.toml query.

use std::fmt::Write as _;

/// One Deployment's traffic: requests per second and the share failing from `onset` on.
#[derive(Clone)]
pub struct Track {
    pub deployment: String,
    pub rps: f64,
    pub errors: f64,
    pub bad_from: Option<i64>,
    pub bad_errors: f64,
    /// Extra gauges (name, value).
    pub gauges: Vec<(String, f64)>,
    /// From then on every request takes 100-250 ms instead of 50-100 ms (p95 about 2.5x).
    pub slow_from: Option<i64>,
}

/// Which instrumentation the service has.
#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    /// Istio's `istio_requests_total` and request-duration histogram (milliseconds).
    Istio,
    /// The app's own `http_requests_total{namespace,deployment,status}` and
    /// `http_request_duration_seconds`, with cAdvisor memory and kube-state restarts.
    Http,
}

pub struct History {
    pub style: Style,
    pub namespace: String,
    pub start_ms: i64,
    pub every_ms: i64,
    pub points: i64,
    pub tracks: Vec<Track>,
}

impl Track {
    /// A healthy track: 0.2% errors, fast, no gauges.
    pub fn healthy(deployment: &str, rps: f64) -> Track {
        Track {
            deployment: deployment.into(),
            rps,
            errors: 0.002,
            bad_from: None,
            bad_errors: 0.0,
            gauges: vec![],
            slow_from: None,
        }
    }

    /// Cumulative requests answered fast (under 100 ms) at `t`.
    fn fast(&self, start: i64, t: i64) -> f64 {
        let until = self.slow_from.map_or(t, |s| s.min(t));
        self.rps * (until - start).max(0) as f64 / 1000.0
    }

    /// Cumulative (requests, errors) at `t`.
    fn counts(&self, start: i64, t: i64) -> (f64, f64) {
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        let req = self.rps * secs(t - start);
        let err = match self.bad_from {
            Some(on) if t > on => {
                self.rps * (secs(on - start) * self.errors + secs(t - on) * self.bad_errors)
            }
            _ => req * self.errors,
        };
        (req, err)
    }
}

impl History {
    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.points).map(|k| self.start_ms + k * self.every_ms)
    }

    fn base(&self, t: &Track) -> String {
        format!(
            "destination_workload=\"{}\",destination_workload_namespace=\"{}\",reporter=\"source\"",
            t.deployment, self.namespace
        )
    }

    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        match self.style {
            Style::Istio => self.istio(&mut out),
            Style::Http => self.http(&mut out),
        }
        self.kube(&mut out);
        out.push_str("# EOF\n");
        out
    }

    fn http(&self, out: &mut String) {
        let ts = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let base = |t: &Track| {
            format!(
                "namespace=\"{}\",deployment=\"{}\"",
                self.namespace, t.deployment
            )
        };
        let _ = writeln!(out, "# TYPE http_requests counter");
        for track in &self.tracks {
            for status in ["200", "500"] {
                for t in self.times() {
                    let (req, err) = track.counts(self.start_ms, t);
                    let v = if status == "200" { req - err } else { err };
                    let _ = writeln!(
                        out,
                        "http_requests_total{{{},status=\"{status}\"}} {v} {}",
                        base(track),
                        ts(t)
                    );
                }
            }
        }
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for track in &self.tracks {
            for t in self.times() {
                let (req, _) = track.counts(self.start_ms, t);
                let b = base(track);
                for (le, n) in [("0.05", 0.0), ("0.1", req), ("0.25", req), ("+Inf", req)] {
                    let _ = writeln!(
                        out,
                        "http_request_duration_seconds_bucket{{{b},le=\"{le}\"}} {n} {}",
                        ts(t)
                    );
                }
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_count{{{b}}} {req} {}",
                    ts(t)
                );
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_sum{{{b}}} {} {}",
                    req * 0.075,
                    ts(t)
                );
            }
        }
        let pod = |t: &Track| {
            format!(
                "namespace=\"{}\",pod=\"{}-5d8f7b9c6-x2k4p\"",
                self.namespace, t.deployment
            )
        };
        for (name, labels, v) in [
            (
                "container_memory_working_set_bytes",
                ",container=\"app\"",
                5.0e8,
            ),
            ("kube_pod_info", "", 1.0),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for track in &self.tracks {
                for t in self.times() {
                    let _ = writeln!(out, "{name}{{{}{labels}}} {v} {}", pod(track), ts(t));
                }
            }
        }
    }

    fn istio(&self, out: &mut String) {
        let ts = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let _ = writeln!(out, "# TYPE istio_requests counter");
        for track in &self.tracks {
            for (code, flags) in [("200", "-"), ("500", "-")] {
                for t in self.times() {
                    let (req, err) = track.counts(self.start_ms, t);
                    let v = if code == "200" { req - err } else { err };
                    let _ = writeln!(
                        out,
                        "istio_requests_total{{{},response_code=\"{code}\",response_flags=\"{flags}\"}} {v} {}",
                        self.base(track),
                        ts(t)
                    );
                }
            }
        }
        // Every request answered in 50-100 ms (p99 about 0.1 s), 100-250 ms once slow.
        let _ = writeln!(out, "# TYPE istio_request_duration_milliseconds histogram");
        for track in &self.tracks {
            for t in self.times() {
                let (req, _) = track.counts(self.start_ms, t);
                let fast = track.fast(self.start_ms, t).min(req);
                let base = self.base(track);
                for (le, n) in [("50", 0.0), ("100", fast), ("250", req), ("+Inf", req)] {
                    let _ = writeln!(
                        out,
                        "istio_request_duration_milliseconds_bucket{{{base},le=\"{le}\"}} {n} {}",
                        ts(t)
                    );
                }
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_count{{{base}}} {req} {}",
                    ts(t)
                );
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_sum{{{base}}} {} {}",
                    fast * 75.0 + (req - fast) * 175.0,
                    ts(t)
                );
            }
        }
    }

    /// kube-state-metrics readiness and restarts (none), and the tracks' extra gauges.
    fn kube(&self, out: &mut String) {
        let ts = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let _ = writeln!(out, "# TYPE kube_pod_container_status_restarts counter");
        for track in &self.tracks {
            for t in self.times() {
                let _ = writeln!(
                    out,
                    "kube_pod_container_status_restarts_total{{namespace=\"{}\",pod=\"{}-5d8f7b9c6-x2k4p\"}} 0 {}",
                    self.namespace,
                    track.deployment,
                    ts(t)
                );
            }
        }
        let _ = writeln!(out, "# TYPE kube_pod_status_ready gauge");
        for track in &self.tracks {
            for t in self.times() {
                let _ = writeln!(
                    out,
                    "kube_pod_status_ready{{namespace=\"{}\",pod=\"{}-5d8f7b9c6-x2k4p\",condition=\"true\"}} 1 {}",
                    self.namespace,
                    track.deployment,
                    ts(t)
                );
            }
        }
        let names: Vec<String> = self
            .tracks
            .first()
            .map(|t| t.gauges.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        for name in names {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for track in &self.tracks {
                let v = track
                    .gauges
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .unwrap_or(0.0);
                for t in self.times() {
                    let _ = writeln!(
                        out,
                        "{name}{{namespace=\"{}\",deployment=\"{}\"}} {v} {}",
                        self.namespace,
                        track.deployment,
                        ts(t)
                    );
                }
            }
        }
    }
}
