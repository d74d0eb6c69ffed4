//! Watches: `?watch=1` streams one JSON event per line, resuming after a resourceVersion from
//! the store's change log (or 410 Gone, sent as an ERROR event like the apiserver does), with
//! synthetic ADDED events when no version is given, and `sendInitialEvents` bookmarks.
//!
//! With `allowWatchBookmarks=true` a watch also gets the apiserver's periodic BOOKMARK events
//! (roughly every minute, and 2 s before its timeout, like the watch cache's `nextBookmarkTime`).
//! They carry the newest resourceVersion this watch has passed, matching or not, so a client on a
//! quiet resource resumes from a recent version instead of one that other resources' churn has
//! pushed out of the change log (which would cost it a 410 and a full re-list).

use super::api::Target;
use super::objects::as_version;
use super::selector::Selector;
use super::status::ApiError;
use super::store::{Change, ChangeKind, ObjKey, Replay, Store};
use axum::body::Bytes;
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// The watch cache's bookmark heartbeat (`defaultBookmarkFrequency`).
pub const BOOKMARK_FREQUENCY: Duration = Duration::from_secs(60);
/// How long before its timeout a watch gets its last bookmark.
pub const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the client asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub target: Target,
    pub labels: Selector,
    pub fields: Selector,
    /// `None` or `Some(0)`: start with the current state as ADDED events.
    pub resource_version: Option<u64>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
}

/// One watch event on the wire, serialized from a borrowed object (no copy of it).
#[derive(serde::Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&Event { kind, object }).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

impl WatchRequest {
    /// The resource and namespace part of [`Self::wants`], decidable without the object.
    fn wants_key(&self, k: &ObjKey) -> bool {
        let t = &self.target;
        k.group == t.def.group
            && k.plural == t.def.plural
            && t.namespace.as_ref().is_none_or(|ns| &k.namespace == ns)
    }

    fn wants(&self, c: &Change) -> bool {
        self.wants_key(&c.key)
            && self.labels.matches_labels(&c.object)
            && self.fields.matches_fields(&c.object)
    }

    /// The event line; the object is copied only when the watch asked for another version
    /// than the stored one (VirtualService v1beta1), to relabel it.
    fn render(&self, c: &Change) -> Bytes {
        let def = self.target.def;
        let stored_as_asked = c.object.get("apiVersion").and_then(Value::as_str)
            == Some(def.api_version(&self.target.version).as_str())
            && c.object.get("kind").and_then(Value::as_str) == Some(def.kind);
        if stored_as_asked {
            return line(c.kind.as_str(), &c.object);
        }
        let obj = as_version(def, &self.target.version, (*c.object).clone());
        line(c.kind.as_str(), &obj)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": self.target.def.kind, "apiVersion": self.target.def.api_version(&self.target.version), "metadata": meta}),
        )
    }
}

struct Live {
    req: WatchRequest,
    queue: VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Change>>,
    deadline: Instant,
    /// The newest resourceVersion this watch has passed (what a bookmark reports).
    seen_rv: u64,
    next_bookmark: Option<Instant>,
    shutdown: watch::Receiver<bool>,
}

impl Live {
    /// The apiserver's rule: a minute from now, or 2 s before the deadline if that is sooner;
    /// none once that moment has passed.
    fn schedule_bookmark(&mut self, now: Instant) {
        self.next_bookmark = None;
        if !self.req.allow_bookmarks {
            return;
        }
        let heartbeat = now + BOOKMARK_FREQUENCY;
        let before_timeout = self
            .deadline
            .checked_sub(BOOKMARK_BEFORE_TIMEOUT)
            .unwrap_or(now);
        let at = heartbeat.min(before_timeout);
        if at > now {
            self.next_bookmark = Some(at);
        }
    }

    /// Takes in every change already broadcast (so the bookmark's version never runs ahead of an
    /// event still to be sent), then queues the bookmark. `false`: the watcher fell behind.
    fn bookmark_now(&mut self) -> bool {
        if let Some(rx) = self.rx.as_mut() {
            loop {
                match rx.try_recv() {
                    Ok(c) => {
                        self.seen_rv = self.seen_rv.max(c.rv);
                        if self.req.wants(&c) {
                            self.queue.push_back(self.req.render(&c));
                        }
                    }
                    Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
                    Err(TryRecvError::Lagged(_)) => return false,
                }
            }
        }
        self.queue.push_back(self.req.bookmark(self.seen_rv, false));
        true
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The event stream for one watch request.
pub fn stream(
    store: &Store,
    req: WatchRequest,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut queue = VecDeque::new();
    let start = match req.resource_version {
        Some(rv) if rv > 0 && !req.send_initial_events => rv,
        _ => {
            let (items, rv) = super::api::select(store, &req.target, &req.labels, &req.fields);
            for item in items {
                queue.push_back(line(ChangeKind::Added.as_str(), &item));
            }
            if req.send_initial_events {
                queue.push_back(req.bookmark(rv, true));
            }
            rv
        }
    };
    let mut seen_rv = start;
    let rx = match store.replay_matching(start, |k| req.wants_key(k)) {
        Replay::From {
            changes,
            newest,
            rx,
        } => {
            seen_rv = seen_rv.max(newest);
            queue.extend(
                changes
                    .iter()
                    .filter(|c| req.wants(c))
                    .map(|c| req.render(c)),
            );
            Some(rx)
        }
        Replay::Expired { oldest } => {
            queue.push_back(line("ERROR", &ApiError::gone(start, oldest).body()));
            None
        }
    };
    let now = Instant::now();
    let mut live = Live {
        deadline: now + req.timeout,
        req,
        queue,
        rx,
        seen_rv,
        next_bookmark: None,
        shutdown,
    };
    live.schedule_bookmark(now);
    stream::unfold(live, |mut s| async move {
        loop {
            if let Some(b) = s.queue.pop_front() {
                return Some((Ok(b), s));
            }
            let rx = s.rx.as_mut()?;
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(c) => {
                        s.seen_rv = s.seen_rv.max(c.rv);
                        if s.req.wants(&c) {
                            let b = s.req.render(&c);
                            return Some((Ok(b), s));
                        }
                    }
                    // A watcher that fell behind ends; the client re-watches from its last version.
                    Err(_) => return None,
                },
                _ = sleep_until_opt(s.next_bookmark) => {
                    if !s.bookmark_now() {
                        return None;
                    }
                    s.schedule_bookmark(Instant::now());
                }
                _ = tokio::time::sleep_until(s.deadline) => return None,
                _ = s.shutdown.changed() => return None,
            }
        }
    })
}
