//! The markdown table: each measurement next to the target, with the machine named so
//! numbers from different machines are not compared blindly.

use std::fmt::Write as _;
use std::time::Duration;

/// Everything one run measured; `None` = not measurable with this daemon (reported as n/a).
#[derive(Debug, Default)]
pub struct Results {
    pub services: usize,
    pub steady: Duration,
    pub scrape_interval: Duration,
    /// The simulator's own report: (objects written, deployment controller settled), seconds.
    pub seeded: Option<(f64, f64)>,
    pub cores: Option<f64>,
    pub peak_rss: Option<u64>,
    /// `(when, VmRSS, VmHWM)` at the ends of the phases: where the peak falls.
    pub rss_marks: Vec<(&'static str, u64, u64)>,
    pub queries_per_sec: Option<f64>,
    /// Service evaluations/s: N / 10 s when every slot is kept.
    pub evaluations_per_sec: Option<f64>,
    /// Prometheus's own count of `/api/v1/query` requests, as a cross-check.
    pub prom_queries_per_sec: Option<f64>,
    pub kube_per_sec_daemon: Option<f64>,
    pub kube_per_sec_proxy: Option<f64>,
    /// From the onset until the rollbacks' rollouts had time to finish.
    pub rollback_window: Option<Duration>,
    pub cores_rollbacks: Option<f64>,
    pub kube_rollbacks_daemon: Option<f64>,
    pub kube_rollbacks_proxy: Option<f64>,
    pub lag_steady: Option<(f64, f64)>,
    /// The lag minus the wait for Prometheus (`backout_evaluation_lag_own_seconds`).
    pub lag_own_steady: Option<(f64, f64)>,
    pub lag_own_rollbacks: Option<(f64, f64)>,
    /// Prometheus alone, before the daemon starts: median seconds of each distinct batched
    /// query for one phase's services (a tenth of the fleet).
    pub prom_alone: Option<Vec<f64>>,
    /// Prometheus query latency (the daemon's histogram) p50/p99 over the steady window.
    pub query_steady: Option<(f64, f64)>,
    /// The same while the rollbacks run: tells a slower Prometheus from a busier daemon.
    pub query_rollbacks: Option<(f64, f64)>,
    pub lag_rollbacks: Option<(f64, f64)>,
    /// How many services went bad, and when each was mitigated after the onset.
    pub mitigations: Vec<Option<Duration>>,
    /// Every policy file rewritten before the SIGHUP: all of them parsed again.
    pub reload: Option<f64>,
    /// No file changed: the load cache answers.
    pub reload_unchanged: Option<f64>,
    /// Outside view of the reload: SIGHUP until the reload counter moved.
    pub reload_seen: Option<Duration>,
    pub prometheus: Option<String>,
    pub commit: String,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Results {
    /// Notes the daemon's RSS now and its peak so far; a reading that fails is left out.
    pub fn mark_rss(&mut self, when: &'static str, pid: u32) {
        if let (Ok(now), Ok(peak)) = (crate::measure::rss(pid), crate::measure::peak_rss(pid)) {
            self.rss_marks.push((when, now, peak));
        }
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

fn alone(v: Option<&[f64]>) -> String {
    match v {
        Some(secs) if !secs.is_empty() => {
            let each: Vec<String> = secs.iter().map(|s| format!("{s:.3}")).collect();
            let sum: f64 = secs.iter().sum();
            format!("{} s (sum {sum:.3} s)", each.join(" / "))
        }
        _ => "not measured".into(),
    }
}

fn lag(v: Option<(f64, f64)>) -> String {
    opt(v, |(p50, p99)| format!("{p50:.3} s / {p99:.3} s"))
}

/// `nproc`, the CPU model and the memory, from /proc.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let kb: f64 = t.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0 / 1024.0)
        })
        .unwrap_or(0.0);
    format!("{cpus} x {model}, {mem_gb:.0} GB RAM")
}

fn mitigation_rows(out: &mut String, r: &Results) {
    let n = r.mitigations.len();
    let done: Vec<Duration> = r.mitigations.iter().flatten().copied().collect();
    let first = done.iter().min().copied();
    let last = done.iter().max().copied();
    let all = if done.len() == n && n > 0 {
        opt(last, secs)
    } else {
        format!("{} of {n} mitigated", done.len())
    };
    let _ = writeln!(
        out,
        "| {n} canaries bad in one second: first mitigated (after the onset) | {} | |",
        opt(first, secs)
    );
    let _ = writeln!(out, "| ... all {n} mitigated (after the onset) | {all} | |");
    let spread = match (first, last) {
        (Some(f), Some(l)) if done.len() == n => secs(l - f),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        out,
        "| ... last mitigated after the first | {spread} | <= one poll + 5 s (15 s) |"
    );
}

fn cores(v: Option<f64>) -> String {
    opt(v, |c| format!("{c:.3} cores"))
}

fn per_sec(v: Option<f64>) -> String {
    opt(v, |q| format!("{q:.2}"))
}

/// Rows of the steady window.
fn steady_rows(r: &Results) -> Vec<(&'static str, String, &'static str)> {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    vec![
        (
            "daemon CPU (steady)",
            cores(r.cores),
            "<= 1 core at 10,000 services",
        ),
        (
            "service evaluations/s (`backout_evaluations_total`; every slot kept = N / 10 s)",
            per_sec(r.evaluations_per_sec),
            "",
        ),
        (
            "daemon peak RSS (VmHWM, whole run)",
            opt(r.peak_rss, mb),
            "<= 256 MB at 10,000 services",
        ),
        (
            "... RSS now / peak so far, by phase",
            r.rss_marks
                .iter()
                .map(|(when, now, peak)| format!("{when}: {} / {}", mb(*now), mb(*peak)))
                .collect::<Vec<_>>()
                .join("; "),
            "",
        ),
        (
            "Prometheus queries/s (daemon `backout_queries_total`)",
            per_sec(r.queries_per_sec),
            "independent of N",
        ),
        (
            "... as Prometheus counted them (`/api/v1/query`)",
            per_sec(r.prom_queries_per_sec),
            "",
        ),
        (
            "Kubernetes requests/s (daemon `backout_kubernetes_requests_total`)",
            per_sec(r.kube_per_sec_daemon),
            "",
        ),
        (
            "... counted at the simulator (proxy)",
            per_sec(r.kube_per_sec_proxy),
            "",
        ),
        ("evaluation lag p50 / p99 (steady)", lag(r.lag_steady), ""),
        (
            "... of it the daemon's own, without the wait for Prometheus (steady)",
            lag(r.lag_own_steady),
            "",
        ),
        (
            "Prometheus query latency p50 / p99 (steady, `backout_query_duration_seconds`)",
            lag(r.query_steady),
            "",
        ),
        (
            "Prometheus alone, before the daemon: one phase's queries (median of 3 each; sum)",
            alone(r.prom_alone.as_deref()),
            "",
        ),
    ]
}

/// Rows of the window from the onset until the rollbacks' rollouts had time to finish.
fn rollback_rows(r: &Results) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "evaluation lag p50 / p99 (while rollbacks run)",
            lag(r.lag_rollbacks),
            "p99 <= 1 s",
        ),
        (
            "... of it the daemon's own, without the wait for Prometheus (while rollbacks run)",
            lag(r.lag_own_rollbacks),
            "",
        ),
        (
            "Prometheus query latency p50 / p99 (while rollbacks run)",
            lag(r.query_rollbacks),
            "",
        ),
        (
            "daemon CPU (while rollbacks run)",
            cores(r.cores_rollbacks),
            "",
        ),
        (
            "Kubernetes requests/s while rollbacks run (daemon metric)",
            per_sec(r.kube_rollbacks_daemon),
            "",
        ),
        (
            "... counted at the simulator (proxy)",
            per_sec(r.kube_rollbacks_proxy),
            "",
        ),
    ]
}

fn reload_text(r: &Results) -> String {
    match (r.reload, r.reload_seen) {
        (Some(g), _) => format!("{g:.3} s"),
        (None, Some(seen)) => format!(
            "n/a (gauge absent; reload counter moved {:.2} s after SIGHUP)",
            seen.as_secs_f64()
        ),
        (None, None) => "n/a".into(),
    }
}

/// The table, with a header naming the run.
pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet benchmark: {} services, 4 batched metrics each, 10 s poll, Prometheus {} scraping every {}; steady window {}, rollback window {}; commit {}.\nMachine: {}.\n",
        r.services,
        r.prometheus.as_deref().unwrap_or("?"),
        secs(r.scrape_interval),
        secs(r.steady),
        opt(r.rollback_window, secs),
        r.commit,
        machine()
    );
    let _ = writeln!(out, "| metric | value | target (issue 10) |");
    let _ = writeln!(out, "|---|---|---|");
    for (metric, value, target) in steady_rows(r).into_iter().chain(rollback_rows(r)) {
        let _ = writeln!(out, "| {metric} | {value} | {target} |");
    }
    mitigation_rows(&mut out, r);
    let n = r.services;
    let _ = writeln!(
        out,
        "| reload of all {n} policies, every file changed (SIGHUP, `backout_policy_reload_duration_seconds`) | {} | < 2 s at 10,000 |",
        reload_text(r)
    );
    let _ = writeln!(
        out,
        "| ... the same SIGHUP when no file changed | {} | |",
        opt(r.reload_unchanged, |g| format!("{g:.3} s"))
    );
    let _ = writeln!(
        out,
        "| simulator seeding {n} policies (`backout sim --seed-policies`) | {} | < 30 s at 10,000 |",
        opt(r.seeded, |(w, s)| format!("{w:.2} s written; controller settled after {s:.1} s (includes the rollout delay)"))
    );
    out
}
