//! What came in and what landed: the request log, the count of writes that were applied, and the
//! kill switch that makes the simulated cluster go silent right after the n-th write, the way a
//! daemon killed mid-rollback sees it (its last write landed, nothing after it is answered).
//! Tests use the count to prove a second run writes nothing, and the switch to prove a rollback
//! interrupted after any write is finished by the next daemon exactly once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Requests the log keeps, newest last: enough for any test, bounded for a `backout sim` or a
/// fleet benchmark that serves millions of requests.
const LOG_CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    /// `(method, path?query)` of every request, in arrival order (`?` even without a query).
    log: VecDeque<(String, String)>,
    /// Writes applied: 2xx answers to non-GET requests, neither dry runs nor Events (Events
    /// are a side channel; a test counting the plan's writes does not want them).
    writes: usize,
    /// Go silent once `writes` reaches this.
    kill_after: Option<usize>,
}

/// Handle to the simulator's traffic record; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    state: Arc<Mutex<State>>,
    killed: Arc<Notify>,
}

/// Whether a request, answered with `code`, counts as an applied write.
pub fn is_write(method: &str, path_and_query: &str, code: u16, dry_run: bool) -> bool {
    let path = path_and_query.split('?').next().unwrap_or_default();
    method != "GET"
        && !path.ends_with("/events")
        && !path.contains("/events/")
        && (200..300).contains(&code)
        && !dry_run
}

impl Traffic {
    /// Records one request; `true` when the kill switch has fired and it must not be answered.
    pub fn arrive(&self, method: &str, path_and_query: &str) -> bool {
        self.with(|s| {
            if s.log.len() == LOG_CAPACITY {
                s.log.pop_front();
            }
            s.log
                .push_back((method.to_string(), path_and_query.to_string()));
            s.kill_after.is_some_and(|k| s.writes >= k)
        })
    }

    /// Counts an applied write; `true` when it is the one the kill switch waited for (the
    /// caller then never answers it, and [`Self::killed`] wakes).
    pub fn landed(&self) -> bool {
        let kill = self.with(|s| {
            s.writes += 1;
            s.kill_after.is_some_and(|k| s.writes >= k)
        });
        if kill {
            self.killed.notify_one();
        }
        kill
    }

    /// After `n` more applied writes, no request is answered until [`Self::revive`].
    pub fn kill_after_writes(&self, n: usize) {
        self.with(|s| s.kill_after = Some(s.writes + n));
    }

    /// Answers requests again (the next daemon starts).
    pub fn revive(&self) {
        self.with(|s| s.kill_after = None);
    }

    /// Resolves once the kill switch has fired.
    pub async fn killed(&self) {
        self.killed.notified().await
    }

    /// Writes applied so far.
    pub fn writes(&self) -> usize {
        self.with(|s| s.writes)
    }

    /// The last 100,000 requests, as `(method, path?query)`.
    pub fn log(&self) -> Vec<(String, String)> {
        self.with(|s| s.log.iter().cloned().collect())
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // Plain counters and a list: a panic elsewhere cannot leave them inconsistent.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_applied_writes_count() {
        let web = "/apis/apps/v1/namespaces/d/deployments/web";
        assert!(is_write("PATCH", web, 200, false));
        assert!(!is_write("GET", web, 200, false));
        assert!(!is_write("PATCH", web, 409, false));
        assert!(!is_write("PATCH", web, 200, true));
        assert!(!is_write(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/d/events",
            201,
            false
        ));
    }

    #[test]
    fn the_switch_fires_on_the_nth_write_and_silences_what_follows() {
        let t = Traffic::default();
        t.kill_after_writes(2);
        assert!(!t.arrive("PATCH", "/a"));
        assert!(!t.landed());
        assert!(!t.arrive("PATCH", "/b"));
        assert!(t.landed());
        assert!(t.arrive("GET", "/c"));
        t.revive();
        assert!(!t.arrive("GET", "/c"));
        assert_eq!((t.writes(), t.log().len()), (2, 4));
    }
}
