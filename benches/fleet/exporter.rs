//! The synthetic fleet exporter: the demo's [`Workload`] and its `/metrics` writer
//! (`backout::demo::exporter`), with N services x 2 tracks on the wall clock.
//!
//! Reusing the demo's writer keeps one OpenMetrics/Prometheus text writer in the project, and its
//! series (`http_requests_total{service,track,code}`, `http_request_duration_seconds{service,track}`)
//! are what the fleet's batched templates select by.

use anyhow::Context as _;
use backout::clock::SystemClock;
use backout::demo::exporter;
use backout::demo::workload::{Load, Workload};
use backout::sample::Track;
use std::net::SocketAddr;
use std::sync::Arc;

/// Stable requests/s per service: enough that every rate window has data.
const STABLE_RPS: f64 = 20.0;
/// Canary requests/s per service (a 10% split of the stable's traffic, roughly).
const CANARY_RPS: f64 = 2.0;
/// Error ratio of a healthy track.
const HEALTHY_ERRORS: f64 = 0.001;
/// Error ratio of a canary turned bad: well past every critical level.
const BAD_ERRORS: f64 = 0.2;

/// The running exporter: counters advance with wall time; [`FleetExporter::turn_bad`] changes
/// canaries from the next instant on.
pub struct FleetExporter {
    workload: Workload,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FleetExporter {
    /// Serves `/metrics` for `services` on a free loopback port.
    pub async fn start(services: &[String]) -> anyhow::Result<Self> {
        let workload = Workload::new(Arc::new(SystemClock));
        for s in services {
            workload.set(
                s,
                Track::Stable,
                Load::healthy(STABLE_RPS).with_errors(HEALTHY_ERRORS),
            );
            workload.set(
                s,
                Track::Canary,
                Load::healthy(CANARY_RPS).with_errors(HEALTHY_ERRORS),
            );
        }
        let (addr, task) = exporter::spawn(workload.clone(), "127.0.0.1:0".parse()?)
            .await
            .context("starting the fleet exporter")?;
        Ok(Self {
            workload,
            addr,
            task,
        })
    }

    /// Turns these services' canaries bad at one instant (one lock hold per service, microseconds
    /// apart).
    pub fn turn_bad(&self, services: &[String]) {
        let bad = Load::healthy(CANARY_RPS).with_errors(BAD_ERRORS);
        for s in services {
            self.workload.set(s, Track::Canary, bad);
        }
    }
}

impl Drop for FleetExporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
