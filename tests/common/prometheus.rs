//! A real Prometheus for tests: [`backout::promserver`] (Debian's `prometheus` binary on a free
//! loopback port, scraping given targets every second, killed when dropped or when the test
//! process dies), re-exported under the names the tests use, plus a polling helper.
//!
//! Use from any integration test with `#[path = "common/prometheus.rs"] mod prometheus;`.
//! When the binaries are missing, starting one returns an error naming the fix (`just deps`) and
//! the test FAILS on its `unwrap`: a skipped end-to-end test would look like a passing one.

#![allow(dead_code)]

#[allow(unused_imports)] // not every test binary that includes it uses it
pub use backout::promserver::PromServer as Prometheus;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    backout::promserver::free_port().expect("no free loopback port")
}

/// Polls `check` every 200 ms until it returns `Ok`, or panics after `limit` with the last
/// state it saw. Scrapes happen on Prometheus's schedule, so tests wait for a condition instead
/// of sleeping a guessed amount.
pub async fn eventually<T, S, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S>>,
    S: std::fmt::Debug,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
