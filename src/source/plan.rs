//! Batched query planning: which PromQL to send this cycle, and how to split the answers.
//!
//! With one query per service per track per metric, the query load on a shared Prometheus grows
//! with the fleet (Flagger's per-canary queries are a known scaling limit). A template that
//! aggregates `by (service, track)` already returns every service's value in one vector, so
//! identical rendered queries are sent once and the vector is split by labels back to each
//! (service, metric, track). Queries that differ per service (they mention `{{service}}`) still
//! work; they are simply not shared. Pure: no I/O, no clock.

use super::mapping::{self, MULTIPLE_SERIES};
use super::{Series, SourceError};
use crate::policy::template::SERVICES_PLACEHOLDER;
use crate::policy::{Feed, Input, Policy};
use crate::sample::{Observation, Track};
use std::collections::HashMap;

/// Reason label for a key whose query had no answer (a caller passed too few results).
pub const MISSING_RESULT: &str = "missing_result";

/// Who an observation belongs to: the service, and the engine input and track it feeds. Typed
/// end to end, so an answer goes to the engine as the [`Input`] it was asked for, with no string
/// key to rebuild and match on the way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub service: String,
    pub input: Input,
    pub track: Track,
}

impl Key {
    /// `input` may be a metric name: a plain metric's value ([`Input::Value`]).
    pub fn new(service: impl Into<String>, input: impl Into<Input>, track: Track) -> Self {
        Self {
            service: service.into(),
            input: input.into(),
            track,
        }
    }
}

/// The label names that carry the service and the track in a batched result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SplitLabels {
    pub service: String,
    pub track: String,
}

impl Default for SplitLabels {
    fn default() -> Self {
        Self {
            service: "service".into(),
            track: "track".into(),
        }
    }
}

impl SplitLabels {
    pub fn new(service: impl Into<String>, track: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            track: track.into(),
        }
    }
}

/// One wanted observation: its key and the rendered PromQL that yields it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub key: Key,
    pub promql: String,
    /// `Some`: the result is a vector over services and tracks; pick this key's series by these
    /// labels. `None`: the query yields this key's single series.
    pub split: Option<SplitLabels>,
}

impl Request {
    /// A request whose batching is detected from the query: it is split by the default labels
    /// when it aggregates `by (...)` over both `service` and `track`.
    pub fn new(key: Key, promql: impl Into<String>) -> Self {
        let promql = promql.into();
        let labels = SplitLabels::default();
        let split = groups_by(&promql, &labels).then_some(labels);
        Self { key, promql, split }
    }

    /// A request whose result is split by a declared label set (e.g. `app` and `version`).
    pub fn split_by(key: Key, promql: impl Into<String>, labels: SplitLabels) -> Self {
        Self {
            key,
            promql: promql.into(),
            split: Some(labels),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Query {
    promql: String,
    targets: Vec<(Key, Option<SplitLabels>)>,
}

impl Request {
    /// The request for one of `service`'s feeds.
    pub fn for_feed(service: &str, feed: Feed) -> Self {
        Request::new(Key::new(service, feed.input, feed.track), feed.promql)
    }
}

/// Every request `policy` makes per poll (its [`crate::policy::feeds`], rendered once): the
/// daemon and `backtest` both use this, so a replay asks exactly what the daemon asks, and each
/// answer comes back under the key that says which engine input it is.
pub fn policy_requests(policy: &Policy) -> Vec<Request> {
    crate::policy::feeds(policy)
        .into_iter()
        .map(|f| Request::for_feed(&policy.service, f))
        .collect()
}

/// The deduplicated queries for one cycle and how to route their answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryPlan {
    queries: Vec<Query>,
}

impl QueryPlan {
    /// Groups requests by their rendered text: each distinct query is sent once per cycle.
    /// Order is the order of first appearance, so plans are deterministic.
    pub fn build(requests: impl IntoIterator<Item = Request>) -> Self {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut queries: Vec<Query> = Vec::new();
        for r in requests {
            let i = *index.entry(r.promql.clone()).or_insert_with(|| {
                queries.push(Query {
                    promql: r.promql.clone(),
                    targets: Vec::new(),
                });
                queries.len() - 1
            });
            queries[i].targets.push((r.key, r.split));
        }
        for q in &mut queries {
            if q.promql.contains(SERVICES_PLACEHOLDER) {
                q.promql = q
                    .promql
                    .replace(SERVICES_PLACEHOLDER, &services_regex(&q.targets));
            }
        }
        Self { queries }
    }

    /// The split labels of query `i` (as [`QueryPlan::queries`] orders them), if it is batched.
    pub fn split_of(&self, i: usize) -> Option<&SplitLabels> {
        self.queries
            .get(i)?
            .targets
            .iter()
            .find_map(|(_, split)| split.as_ref())
    }

    /// The PromQL to send, in order; answers go to [`QueryPlan::split`] in the same order.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.queries.iter().map(|q| q.promql.as_str())
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Routes answers (one per query, in [`QueryPlan::queries`] order) to every requested key.
    /// A key whose series is missing from a batched vector is `Absent`; a failed query is an
    /// `Error` for every key that needed it.
    pub fn split(&self, results: &[Result<Vec<Series>, SourceError>]) -> HashMap<Key, Observation> {
        let mut out = HashMap::new();
        for (i, q) in self.queries.iter().enumerate() {
            let Some(result) = results.get(i) else {
                for (key, _) in &q.targets {
                    out.insert(key.clone(), Observation::Error(MISSING_RESULT.into()));
                }
                continue;
            };
            let mut indexes: HashMap<&SplitLabels, SeriesIndex<'_>> = HashMap::new();
            for (key, split) in &q.targets {
                let obs = match (result, split) {
                    (Err(e), _) => Observation::Error(e.reason().to_string()),
                    (Ok(_), None) => mapping::observation(result),
                    (Ok(series), Some(labels)) => indexes
                        .entry(labels)
                        .or_insert_with(|| SeriesIndex::new(series, labels))
                        .observation(&key.service, key.track),
                };
                out.insert(key.clone(), obs);
            }
        }
        out
    }
}

/// The services a query is asked for, as the inside of a PromQL `=~"..."` matcher: sorted,
/// distinct, regex metacharacters escaped (and the escape itself escaped for the string literal).
/// A batched template with `{service=~"{{services}}"}` then returns only the services due in this
/// cycle's phase, not the whole fleet at every phase.
fn services_regex(targets: &[(Key, Option<SplitLabels>)]) -> String {
    let services: std::collections::BTreeSet<&str> =
        targets.iter().map(|(k, _)| k.service.as_str()).collect();
    let mut out = String::new();
    for (i, service) in services.into_iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in service.chars() {
            if r"\.+*?()|[]{}^$".contains(c) {
                out.push_str(r"\\");
            }
            out.push(c);
        }
    }
    out
}

/// A batched result indexed by (service, track) label values.
struct SeriesIndex<'a> {
    by_key: HashMap<(&'a str, &'a str), Vec<f64>>,
}

impl<'a> SeriesIndex<'a> {
    fn new(series: &'a [Series], labels: &SplitLabels) -> Self {
        let mut by_key: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
        for s in series {
            if let (Some(svc), Some(track)) =
                (s.labels.get(&labels.service), s.labels.get(&labels.track))
            {
                by_key
                    .entry((svc.as_str(), track.as_str()))
                    .or_default()
                    .push(s.value);
            }
        }
        Self { by_key }
    }

    fn observation(&self, service: &str, track: Track) -> Observation {
        match self
            .by_key
            .get(&(service, track.as_str()))
            .map(Vec::as_slice)
        {
            None | Some([]) => Observation::Absent,
            Some([v]) => Observation::from_f64(*v),
            Some(_) => Observation::Error(MULTIPLE_SERIES.into()),
        }
    }
}

/// Whether the query aggregates `by (...)` over both labels somewhere (string literals skipped).
pub fn groups_by(promql: &str, labels: &SplitLabels) -> bool {
    let code = strip_strings(promql);
    let bytes = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while let Some(pos) = code[i..].find("by") {
        let start = i + pos;
        let end = start + 2;
        i = end;
        if start > 0 && is_ident(bytes[start - 1]) || end < bytes.len() && is_ident(bytes[end]) {
            continue;
        }
        let rest = code[end..].trim_start();
        let Some(inner) = rest.strip_prefix('(') else {
            continue;
        };
        let Some(close) = inner.find(')') else {
            continue;
        };
        let names: Vec<&str> = inner[..close].split(',').map(str::trim).collect();
        if names.contains(&labels.service.as_str()) && names.contains(&labels.track.as_str()) {
            return true;
        }
    }
    false
}

/// The query with the contents of string literals blanked, so label values cannot look like code.
fn strip_strings(promql: &str) -> String {
    let mut out = String::with_capacity(promql.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in promql.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None => {
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
