//! Batched query planning: which PromQL to send this cycle, and how to split the answers.
//!
//! With one query per service per track per metric, the query load on a shared Prometheus grows
//! with the fleet (Flagger's per-canary queries are a known scaling limit). A template that
//! aggregates `by (service, track)` already returns every service's value in one vector, so
//! identical rendered queries are sent once and the vector is split by labels back to each
//! (service, metric, track). Queries that differ per service (they mention `{{service}}`) still
//! work; they are simply not shared. Pure: no I/O, no clock.

use super::mapping::MULTIPLE_SERIES;
use super::{Series, SourceError, SplitSeries};
use crate::policy::template::SERVICES_PLACEHOLDER;
use crate::policy::{Feed, Input, Policy};
use crate::sample::{Observation, Track};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

/// Reason label for a key whose query had no answer (a caller passed too few results).
pub const MISSING_RESULT: &str = "missing_result";

/// Who an observation belongs to: the service, and the engine input and track it feeds. Typed
/// end to end, so an answer goes to the engine as the [`Input`] it was asked for, with no string
/// key to rebuild and match on the way.
///
/// Service and input are shared (`Arc`): every cycle clones each due service's keys into its
/// plan and its answer map, and at 10,000 services a `String` per clone was ~1 allocation per
/// key per cycle. All of a policy's keys share one service name ([`policy_requests`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub service: Arc<str>,
    pub input: Arc<Input>,
    pub track: Track,
}

impl Key {
    /// `input` may be a metric name: a plain metric's value ([`Input::Value`]).
    pub fn new(service: impl Into<Arc<str>>, input: impl Into<Input>, track: Track) -> Self {
        Self {
            service: service.into(),
            input: Arc::new(input.into()),
            track,
        }
    }
}

/// The label names that carry the service and the track in a batched result. Shared strings:
/// every request of a batched template carries them, and the default pair is allocated once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SplitLabels {
    pub service: Arc<str>,
    pub track: Arc<str>,
}

/// The default pair, one allocation for every request of every service: a request holds a
/// pointer to its labels (8 bytes), not the pair (32 bytes); a fleet holds ~160,000 requests.
static DEFAULT_SPLIT: LazyLock<Arc<SplitLabels>> = LazyLock::new(|| {
    Arc::new(SplitLabels {
        service: "service".into(),
        track: "track".into(),
    })
});

impl Default for SplitLabels {
    fn default() -> Self {
        (**DEFAULT_SPLIT).clone()
    }
}

impl SplitLabels {
    pub fn new(service: impl Into<Arc<str>>, track: impl Into<Arc<str>>) -> Self {
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
    /// Shared: a batched template renders the same text for every service, so 10,000 services
    /// hold one copy of it (see [`Request::interned`]), not 10,000.
    pub promql: Arc<str>,
    /// `Some`: the result is a vector over services and tracks; pick this key's series by these
    /// labels. `None`: the query yields this key's single series.
    pub split: Option<Arc<SplitLabels>>,
}

impl Request {
    /// A request whose batching is detected from the query: it is split by the default labels
    /// when it aggregates `by (...)` over both `service` and `track`.
    pub fn new(key: Key, promql: impl Into<Arc<str>>) -> Self {
        let promql = promql.into();
        let split = groups_by(&promql, &DEFAULT_SPLIT).then(|| DEFAULT_SPLIT.clone());
        Self { key, promql, split }
    }

    /// A request whose result is split by a declared label set (e.g. `app` and `version`).
    pub fn split_by(key: Key, promql: impl Into<Arc<str>>, labels: SplitLabels) -> Self {
        Self {
            key,
            promql: promql.into(),
            split: Some(Arc::new(labels)),
        }
    }
}

/// One distinct query text and who its answer is for, grouped by how it is split (nearly always
/// one group: a batched template's requests all carry the same labels), so the split labels are
/// held once per query rather than once per target.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    promql: String,
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq)]
struct Group {
    split: Option<Arc<SplitLabels>>,
    keys: Vec<Key>,
}

impl Query {
    fn keys(&self) -> impl Iterator<Item = &Key> {
        self.groups.iter().flat_map(|g| g.keys.iter())
    }

    fn push(&mut self, key: Key, split: Option<Arc<SplitLabels>>) {
        match self.groups.iter_mut().find(|g| g.split == split) {
            Some(g) => g.keys.push(key),
            None => self.groups.push(Group {
                split,
                keys: vec![key],
            }),
        }
    }
}

/// One query's answer as [`QueryPlan::split_answers`] routes it: whole series, or only the
/// (service, track, value) triples of a batched query asked with
/// [`super::MetricSource::instant_split`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Series(Vec<Series>),
    Split(Vec<SplitSeries>),
}

impl From<Vec<Series>> for Answer {
    fn from(series: Vec<Series>) -> Self {
        Answer::Series(series)
    }
}

impl Answer {
    fn as_ref(&self) -> AnswerRef<'_> {
        match self {
            Answer::Series(s) => AnswerRef::Series(s),
            Answer::Split(s) => AnswerRef::Split(s),
        }
    }
}

#[derive(Clone, Copy)]
enum AnswerRef<'a> {
    Series(&'a [Series]),
    Split(&'a [SplitSeries]),
}

impl AnswerRef<'_> {
    fn len(self) -> usize {
        match self {
            AnswerRef::Series(s) => s.len(),
            AnswerRef::Split(s) => s.len(),
        }
    }

    /// The answer of a query meant for one series.
    fn single(self) -> Observation {
        match self {
            AnswerRef::Series([one]) => Observation::from_f64(one.value),
            AnswerRef::Split([one]) => Observation::from_f64(one.value),
            other if other.len() == 0 => Observation::Absent,
            _ => Observation::Error(MULTIPLE_SERIES.to_string()),
        }
    }
}

impl Request {
    /// The same request, its text shared with an equal one already in `texts` (or added to it).
    pub fn interned(mut self, texts: &mut HashSet<Arc<str>>) -> Self {
        match texts.get(&self.promql) {
            Some(shared) => self.promql = shared.clone(),
            None => {
                texts.insert(self.promql.clone());
            }
        }
        self
    }

    /// The request for one of `service`'s feeds.
    pub fn for_feed(service: impl Into<Arc<str>>, feed: Feed) -> Self {
        Request::new(Key::new(service, feed.input, feed.track), feed.promql)
    }
}

/// Every request `policy` makes per poll (its [`crate::policy::feeds`], rendered once): the
/// daemon and `backtest` both use this, so a replay asks exactly what the daemon asks, and each
/// answer comes back under the key that says which engine input it is.
///
/// A service's two tracks ask for the same inputs: each input is allocated once and shared by
/// both keys (a fleet's runtimes hold 10,000 of these sets; issue 10).
pub fn policy_requests(policy: &Policy) -> Vec<Request> {
    let service: Arc<str> = policy.service.as_str().into();
    let mut inputs: Vec<Arc<Input>> = Vec::new();
    crate::policy::feeds(policy)
        .into_iter()
        .map(|f| {
            let input = match inputs.iter().find(|i| ***i == f.input) {
                Some(shared) => shared.clone(),
                None => {
                    let input = Arc::new(f.input);
                    inputs.push(input.clone());
                    input
                }
            };
            let key = Key {
                service: service.clone(),
                input,
                track: f.track,
            };
            Request::new(key, f.promql)
        })
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
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        let mut queries: Vec<Query> = Vec::new();
        for r in requests {
            let i = *index.entry(r.promql.clone()).or_insert_with(|| {
                queries.push(Query {
                    promql: r.promql.to_string(),
                    groups: Vec::new(),
                });
                queries.len() - 1
            });
            queries[i].push(r.key, r.split);
        }
        for q in &mut queries {
            if q.promql.contains(SERVICES_PLACEHOLDER) {
                q.promql = q
                    .promql
                    .replace(SERVICES_PLACEHOLDER, &services_regex(q.keys()));
            }
        }
        Self { queries }
    }

    /// The split labels of query `i` (as [`QueryPlan::queries`] orders them), if it is batched.
    pub fn split_of(&self, i: usize) -> Option<&SplitLabels> {
        self.queries
            .get(i)?
            .groups
            .iter()
            .find_map(|g| g.split.as_deref())
    }

    /// The split labels of query `i` when every target of it is split by them: its answer is then
    /// needed only as (service, track, value), and may be asked for that way
    /// ([`super::MetricSource::instant_split`]).
    pub fn split_only(&self, i: usize) -> Option<&SplitLabels> {
        match self.queries.get(i)?.groups.as_slice() {
            [one] => one.split.as_deref(),
            _ => None,
        }
    }

    /// The PromQL of query `i`.
    pub fn query(&self, i: usize) -> Option<&str> {
        self.queries.get(i).map(|q| q.promql.as_str())
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
        self.route(|i| {
            results
                .get(i)
                .map(|r| r.as_ref().map(|s| AnswerRef::Series(s)))
        })
    }

    /// [`QueryPlan::split`] for answers that may already be split ([`Answer::Split`]).
    pub fn split_answers(
        &self,
        results: &[Result<Answer, SourceError>],
    ) -> HashMap<Key, Observation> {
        self.route(|i| results.get(i).map(|r| r.as_ref().map(Answer::as_ref)))
    }

    fn route<'a>(
        &self,
        answer: impl Fn(usize) -> Option<Result<AnswerRef<'a>, &'a SourceError>>,
    ) -> HashMap<Key, Observation> {
        let mut out = HashMap::with_capacity(self.queries.iter().map(|q| q.keys().count()).sum());
        for (i, q) in self.queries.iter().enumerate() {
            for g in &q.groups {
                let result = answer(i);
                let index = match (&result, &g.split) {
                    (Some(Ok(a)), Some(labels)) => Some(SeriesIndex::new(*a, labels)),
                    _ => None,
                };
                for key in &g.keys {
                    let obs = match (&result, &index) {
                        (None, _) => Observation::Error(MISSING_RESULT.into()),
                        (Some(Err(e)), _) => Observation::Error(e.reason().to_string()),
                        (Some(Ok(_)), Some(index)) => index.observation(&key.service, key.track),
                        (Some(Ok(a)), None) => a.single(),
                    };
                    out.insert(key.clone(), obs);
                }
            }
        }
        out
    }
}

/// The services a query is asked for, as the inside of a PromQL `=~"..."` matcher: sorted,
/// distinct, regex metacharacters escaped (and the escape itself escaped for the string literal).
/// A batched template with `{service=~"{{services}}"}` then returns only the services due in this
/// cycle's phase, not the whole fleet at every phase.
fn services_regex<'a>(keys: impl Iterator<Item = &'a Key>) -> String {
    let services: std::collections::BTreeSet<&str> = keys.map(|k| &*k.service).collect();
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

/// How many series a batched answer had for one (service, track): the value when exactly one.
#[derive(Clone, Copy)]
enum Found {
    One(f64),
    Several,
}

/// A batched result indexed by (service label value, track). Series whose track label is not a
/// track name cannot be asked for, so they are not indexed.
struct SeriesIndex<'a> {
    by_key: HashMap<(&'a str, Track), Found>,
}

impl<'a> SeriesIndex<'a> {
    fn new(answer: AnswerRef<'a>, labels: &SplitLabels) -> Self {
        let mut by_key: HashMap<(&str, Track), Found> = HashMap::with_capacity(answer.len());
        let mut add = |service: &'a str, track: Track, value: f64| {
            by_key
                .entry((service, track))
                .and_modify(|f| *f = Found::Several)
                .or_insert(Found::One(value));
        };
        match answer {
            AnswerRef::Series(series) => {
                for s in series {
                    let service = s.labels.get(&*labels.service);
                    let track = s.labels.get(&*labels.track).and_then(|t| track_named(t));
                    if let (Some(service), Some(track)) = (service, track) {
                        add(service, track, s.value);
                    }
                }
            }
            AnswerRef::Split(series) => {
                for s in series {
                    add(&s.service, s.track, s.value);
                }
            }
        }
        Self { by_key }
    }

    fn observation(&self, service: &str, track: Track) -> Observation {
        match self.by_key.get(&(service, track)) {
            None => Observation::Absent,
            Some(Found::One(v)) => Observation::from_f64(*v),
            Some(Found::Several) => Observation::Error(MULTIPLE_SERIES.into()),
        }
    }
}

/// The track whose name (`canary`, `stable`) a label value is.
pub fn track_named(value: &str) -> Option<Track> {
    Track::ALL.into_iter().find(|t| t.as_str() == value)
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
        if names.contains(&&*labels.service) && names.contains(&&*labels.track) {
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
