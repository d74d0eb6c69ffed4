//! Fault injection: the failures a real cluster produces under load (slow answers, conflict
//! storms, 5xx, connections cut mid-request, requests that never answer, writes whose answer is
//! lost), aimed at requests by method and path, so tests can prove that every step of a rollback
//! survives them. The kill switch (the daemon dies right after its n-th write) and the request
//! log live in [`super::traffic`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a matching request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer late (the request is then served normally).
    Latency(Duration),
    /// 409 Conflict, as when another writer won the race.
    Conflict,
    /// An HTTP error status with a `Status` body (500, 503, 504, 429).
    ServerError(u16),
    /// The connection is cut before a response body arrives.
    Drop,
    /// Never answer: the client's own timeout is all that ends the request.
    Hang,
    /// Serve the request (a write lands), then never answer: the client cannot know it landed.
    AnswerLost,
}

/// How a rule's pattern selects requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathMatch {
    /// The pattern occurs anywhere in `path?query`.
    #[default]
    Contains,
    /// The path (query left out) ends with the pattern, so `deployments/web` selects that
    /// Deployment alone, not `deployments/web/scale` or `deployments/web-canary`.
    EndsWith,
}

/// One rule: which requests, what happens, how often.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// HTTP method (`PATCH`), or `None` for any.
    pub method: Option<String>,
    /// Substring of `path?query` that selects requests (`/deployments/web/scale`).
    pub path_contains: String,
    pub matching: PathMatch,
    pub action: FaultAction,
    /// Matching requests to let through untouched before the rule fires.
    pub skip: u32,
    /// How many times it fires; `None` = forever.
    pub times: Option<u32>,
    seen: u32,
    fired: u32,
}

impl FaultRule {
    pub fn new(method: Option<&str>, path_contains: &str, action: FaultAction) -> Self {
        Self {
            method: method.map(|m| m.to_ascii_uppercase()),
            path_contains: path_contains.to_string(),
            matching: PathMatch::Contains,
            action,
            skip: 0,
            times: None,
            seen: 0,
            fired: 0,
        }
    }

    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Select by the end of the path instead of a substring (see [`PathMatch::EndsWith`]).
    pub fn at_path_end(mut self) -> Self {
        self.matching = PathMatch::EndsWith;
        self
    }

    fn selects(&self, method: &str, path_and_query: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        method_ok
            && match self.matching {
                PathMatch::Contains => path_and_query.contains(&self.path_contains),
                PathMatch::EndsWith => {
                    let path = path_and_query.split('?').next().unwrap_or_default();
                    path.ends_with(&self.path_contains)
                }
            }
    }
}

/// What the server does with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub delay: Option<Duration>,
    pub action: Option<FaultAction>,
}

/// Handle to the simulator's fault rules; clones share the rules.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) {
        self.with(|r| r.push(rule));
    }

    /// Every matching request waits `delay` first.
    pub fn latency(&self, method: Option<&str>, path_contains: &str, delay: Duration) {
        self.add(FaultRule::new(
            method,
            path_contains,
            FaultAction::Latency(delay),
        ));
    }

    /// The next `n` matching requests answer 409 Conflict.
    pub fn conflicts(&self, method: Option<&str>, path_contains: &str, n: u32) {
        self.add(FaultRule::new(method, path_contains, FaultAction::Conflict).times(n));
    }

    /// The next `n` matching requests answer `code` (e.g. 500, 503).
    pub fn server_errors(&self, method: Option<&str>, path_contains: &str, code: u16, n: u32) {
        self.add(FaultRule::new(method, path_contains, FaultAction::ServerError(code)).times(n));
    }

    /// The `nth` (1-based) matching request has its connection dropped.
    pub fn drop_nth(&self, method: Option<&str>, path_contains: &str, nth: u32) {
        self.add(
            FaultRule::new(method, path_contains, FaultAction::Drop)
                .skip(nth.saturating_sub(1))
                .times(1),
        );
    }

    /// The next `n` matching requests never answer (the client's timeout fires).
    pub fn hangs(&self, method: Option<&str>, path_contains: &str, n: u32) {
        self.add(FaultRule::new(method, path_contains, FaultAction::Hang).times(n));
    }

    /// The next `n` matching requests are served, then never answered: "the write landed but
    /// the answer was lost", which a retrying client must not apply twice.
    pub fn answers_lost(&self, method: Option<&str>, path_contains: &str, n: u32) {
        self.add(FaultRule::new(method, path_contains, FaultAction::AnswerLost).times(n));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.with(Vec::clear);
    }

    /// How many times rules have fired in total (tests check the faults really happened).
    pub fn fired(&self) -> u32 {
        self.with(|r| r.iter().map(|x| x.fired).sum())
    }

    /// Applies the rules to one request, counting it against every matching rule.
    pub fn decide(&self, method: &str, path_and_query: &str) -> Decision {
        self.with(|rules| {
            let mut d = Decision::default();
            for rule in rules.iter_mut() {
                if !rule.selects(method, path_and_query) {
                    continue;
                }
                rule.seen += 1;
                if rule.seen <= rule.skip || rule.times.is_some_and(|t| rule.fired >= t) {
                    continue;
                }
                match rule.action {
                    FaultAction::Latency(l) => {
                        rule.fired += 1;
                        d.delay = Some(d.delay.unwrap_or_default() + l);
                    }
                    other if d.action.is_none() => {
                        rule.fired += 1;
                        d.action = Some(other);
                    }
                    _ => {}
                }
            }
            d
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<FaultRule>) -> R) -> R {
        let mut guard = match self.rules.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_fire_n_times_then_stop() {
        let f = Faults::default();
        f.conflicts(Some("patch"), "/virtualservices/", 2);
        let hit = |m: &str, p: &str| f.decide(m, p).action;
        assert_eq!(hit("GET", "/apis/x/virtualservices/vs"), None);
        assert_eq!(
            hit("PATCH", "/apis/x/virtualservices/vs"),
            Some(FaultAction::Conflict)
        );
        assert_eq!(
            hit("PATCH", "/apis/x/virtualservices/vs"),
            Some(FaultAction::Conflict)
        );
        assert_eq!(hit("PATCH", "/apis/x/virtualservices/vs"), None);
        assert_eq!(f.fired(), 2);
    }

    #[test]
    fn drop_hits_only_the_nth_match() {
        let f = Faults::default();
        f.drop_nth(None, "/scale", 3);
        let got: Vec<_> = (0..4)
            .map(|_| f.decide("PATCH", "/d/web/scale").action)
            .collect();
        assert_eq!(got, vec![None, None, Some(FaultAction::Drop), None]);
    }

    #[test]
    fn path_end_matching_leaves_subresources_and_longer_names_alone() {
        let f = Faults::default();
        f.add(FaultRule::new(Some("PATCH"), "deployments/web", FaultAction::Hang).at_path_end());
        let hit = |p: &str| f.decide("PATCH", p).action;
        assert_eq!(
            hit("/apis/apps/v1/namespaces/d/deployments/web/scale"),
            None
        );
        assert_eq!(
            hit("/apis/apps/v1/namespaces/d/deployments/web-canary"),
            None
        );
        assert_eq!(
            hit("/apis/apps/v1/namespaces/d/deployments/web?fieldManager=x"),
            Some(FaultAction::Hang)
        );
    }

    #[test]
    fn latency_accumulates_and_does_not_block_other_faults() {
        let f = Faults::default();
        f.latency(None, "/", Duration::from_millis(50));
        f.server_errors(None, "/leases", 503, 1);
        let d = f.decide("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l");
        assert_eq!(d.delay, Some(Duration::from_millis(50)));
        assert_eq!(d.action, Some(FaultAction::ServerError(503)));
    }
}
