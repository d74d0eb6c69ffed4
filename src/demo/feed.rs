//! Where the demo's metrics come from: a real Prometheus scraping the simulated workload's
//! exporter when `prometheus` is on PATH, so the demo runs the same PromQL path as production;
//! otherwise the workload read directly ([`DirectSampler`]), so `backout demo` still works on a
//! fresh machine.

use super::{DemoError, DirectSampler};
use crate::daemon::{PrometheusSampler, Sampler};
use crate::demo::exporter;
use crate::demo::workload::Workload;
use crate::policy::Policy;
use crate::promserver::{self, PromServer};
use crate::source::config::PrometheusConfig;
use crate::source::prometheus::PrometheusSource;
use std::sync::Arc;
use std::time::Duration;

/// Whether the demo puts a real Prometheus between the workload and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrometheusMode {
    /// Real Prometheus when `prometheus` is on PATH and starts; the direct feed otherwise.
    #[default]
    Auto,
    /// Real Prometheus or fail: for checking the real path works on this machine.
    On,
    /// Always the direct feed.
    Off,
}

/// Prometheus scrapes once a second; the demo cannot judge faster than the data arrives.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// With real Prometheus, simulated time may run at most this much faster than real time: above
/// it a rate window shrinks below a few scrapes and the one-second scrape lag dominates detection.
pub const MAX_REAL_SPEED: f64 = 4.0;
/// Shortest `rate()` window in real time: three scrapes, so every window holds two samples.
const MIN_REAL_WINDOW: Duration = Duration::from_secs(3);

/// The chosen feed and what keeps it running. Dropping it kills Prometheus and stops the
/// exporter, whichever way the demo ends.
pub(super) struct Feed {
    pub sampler: Arc<dyn Sampler>,
    /// One line for the user: which mode and why.
    pub description: String,
    /// Further lines worth printing under it.
    pub notes: Vec<String>,
    /// The speed to run at (capped in real mode).
    pub speed: f64,
    direct: Option<Arc<DirectSampler>>,
    // Field order is drop order: Prometheus goes before the target it scrapes.
    _prometheus: Option<PromServer>,
    _exporter: Option<AbortOnDrop>,
}

impl Feed {
    /// Call once per tick: the direct feed keeps its own window history.
    pub fn record(&self) {
        if let Some(d) = &self.direct {
            d.record();
        }
    }

    pub fn is_real(&self) -> bool {
        self._prometheus.is_some()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Picks the feed for `mode`. In real mode the policy's query windows are rewritten to real time
/// (see [`real_time_windows`]), so `policy` must be the one handed to the daemon afterwards.
pub(super) async fn choose(
    mode: PrometheusMode,
    workload: &Workload,
    policy: &mut Policy,
    speed: f64,
    say: &mut dyn FnMut(String),
) -> Result<Feed, DemoError> {
    let why_direct = match (mode, promserver::find_binary("prometheus")) {
        (PrometheusMode::Off, _) => "--prometheus off".to_string(),
        (PrometheusMode::On, None) => {
            return Err(DemoError::Prometheus(
                promserver::PromServerError::NotFound {
                    name: "prometheus".into(),
                },
            ))
        }
        (PrometheusMode::Auto, None) => "prometheus not on PATH".to_string(),
        (_, Some(binary)) => match real(binary, workload, policy, speed, say).await {
            Ok(feed) => return Ok(feed),
            Err(err) if mode == PrometheusMode::On => return Err(err),
            Err(err) => format!("prometheus on PATH did not start: {}", one_line(&err)),
        },
    };
    Ok(direct(workload, policy, speed, &why_direct))
}

/// The error on one line for the fallback notice: Prometheus's log cut down to its last line.
fn one_line(err: &DemoError) -> String {
    let text = err.to_string();
    let (head, log) = text.split_once("; its log:").unwrap_or((&text, ""));
    let head = head.trim_start_matches("real Prometheus: ");
    match log.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!("{head}: {}", last.trim()),
        None => head.to_string(),
    }
}

fn direct(workload: &Workload, policy: &Policy, speed: f64, why: &str) -> Feed {
    let window = longest_window(policy);
    let sampler = Arc::new(DirectSampler::new(workload.clone(), window));
    Feed {
        sampler: sampler.clone(),
        description: format!("metrics: direct feed from the simulated workload ({why})"),
        notes: Vec::new(),
        speed,
        direct: Some(sampler),
        _prometheus: None,
        _exporter: None,
    }
}

async fn real(
    binary: std::path::PathBuf,
    workload: &Workload,
    policy: &mut Policy,
    speed: f64,
    say: &mut dyn FnMut(String),
) -> Result<Feed, DemoError> {
    let (addr, task) = exporter::spawn(workload.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .map_err(DemoError::Exporter)?;
    let exporter = AbortOnDrop(task);
    let prometheus = PromServer::builder()
        .binary(binary)
        .scrape(addr)
        .scrape_interval(SCRAPE_INTERVAL)
        .ready_timeout(Duration::from_secs(20))
        .start()
        .await?;
    // Otherwise the first polls find no data; say so, as the wait is noticeable.
    say(format!(
        "metrics: Prometheus started on {}; waiting for its first scrapes (~5 s)",
        prometheus.url.trim_start_matches("http://")
    ));
    prometheus
        .wait_for_scrapes(2, Duration::from_secs(20))
        .await?;
    let source = PrometheusSource::new(&PrometheusConfig::for_url(&prometheus.url))?;
    let requested_speed = speed;
    let speed = speed.min(MAX_REAL_SPEED);
    real_time_windows(policy, speed);
    let description = format!(
        "metrics: real Prometheus {} at {}, scraping every {}s",
        prometheus
            .short_version()
            .as_deref()
            .unwrap_or("(unknown version)"),
        prometheus.url.trim_start_matches("http://"),
        SCRAPE_INTERVAL.as_secs()
    );
    let mut notes = vec![format!(
        "          it scrapes the simulated workload's exporter at http://{addr}/metrics; \
         the policy's PromQL runs with [{}] windows",
        crate::policy::template::promql_duration(longest_window(policy))
    )];
    if speed < requested_speed {
        notes.push(format!(
            "          --speed {requested_speed} capped at {speed}: Prometheus scrapes once a second"
        ));
    }
    Ok(Feed {
        sampler: Arc::new(PrometheusSampler {
            source: Arc::new(source),
            parallel: 4,
        }),
        description,
        notes,
        speed,
        direct: None,
        _prometheus: Some(prometheus),
        _exporter: Some(exporter),
    })
}

fn longest_window(policy: &Policy) -> Duration {
    policy
        .metrics
        .iter()
        .filter_map(|m| m.window)
        .max()
        .unwrap_or(Duration::from_secs(10))
}

/// The demo's clock runs `speed` times faster than real time, but Prometheus evaluates `rate()`
/// windows in real time: divide each metric's window by `speed` (whole seconds, at least three
/// scrapes) so a window covers the same simulated span as the policy says. The only place the
/// demo touches the policy's queries (the daemon renders them from these windows).
fn real_time_windows(policy: &mut Policy, speed: f64) {
    for m in &mut policy.metrics {
        if let Some(w) = m.window {
            let secs = (w.as_secs_f64() / speed.max(1.0)).ceil() as u64;
            m.window = Some(Duration::from_secs(secs).max(MIN_REAL_WINDOW));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let dir = tempfile::tempdir().unwrap();
        super::super::load_policy(dir.path()).unwrap()
    }

    #[test]
    fn windows_shrink_with_speed_but_keep_three_scrapes() {
        let mut p = policy();
        real_time_windows(&mut p, 1.0);
        assert_eq!(longest_window(&p), Duration::from_secs(10));
        real_time_windows(&mut p, 4.0);
        assert_eq!(longest_window(&p), Duration::from_secs(3));
        let mut p = policy();
        real_time_windows(&mut p, 2.0);
        assert_eq!(longest_window(&p), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn off_and_missing_binary_fall_back_to_the_direct_feed() {
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::ManualClock::new(0));
        let w = Workload::new(clock);
        let mut p = policy();
        let feed = choose(PrometheusMode::Off, &w, &mut p, 20.0, &mut |_| {})
            .await
            .unwrap();
        assert!(!feed.is_real());
        assert_eq!(feed.speed, 20.0);
        assert!(
            feed.description.contains("--prometheus off"),
            "{}",
            feed.description
        );
    }
}
