//! Watches: `?watch=1` streams one JSON event per line, resuming after a resourceVersion from
//! the store's change log (or 410 Gone, sent as an ERROR event like the apiserver does), with
//! synthetic ADDED events when no version is given, and `sendInitialEvents` bookmarks.

use super::api::Target;
use super::objects::as_version;
use super::selector::Selector;
use super::status::ApiError;
use super::store::{Change, ChangeKind, Replay, Store};
use axum::body::Bytes;
use futures::stream::{self, Stream};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl WatchRequest {
    fn wants(&self, c: &Change) -> bool {
        let t = &self.target;
        c.key.group == t.def.group
            && c.key.plural == t.def.plural
            && t.namespace.as_ref().is_none_or(|ns| &c.key.namespace == ns)
            && self.labels.matches_labels(&c.object)
            && self.fields.matches_fields(&c.object)
    }

    fn render(&self, c: &Change) -> Bytes {
        let obj = as_version(self.target.def, &self.target.version, (*c.object).clone());
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
    deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
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
    let rx = match store.replay_from(start) {
        Replay::From(changes, rx) => {
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
    let live = Live {
        deadline: tokio::time::Instant::now() + req.timeout,
        req,
        queue,
        rx,
        shutdown,
    };
    stream::unfold(live, |mut s| async move {
        loop {
            if let Some(b) = s.queue.pop_front() {
                return Some((Ok(b), s));
            }
            let rx = s.rx.as_mut()?;
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(c) if s.req.wants(&c) => {
                        let b = s.req.render(&c);
                        return Some((Ok(b), s));
                    }
                    Ok(_) => continue,
                    // A watcher that fell behind ends; the client re-watches from its last version.
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(s.deadline) => return None,
                _ = s.shutdown.changed() => return None,
            }
        }
    })
}
