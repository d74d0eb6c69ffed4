//! The bounded change log behind watch resumption (etcd's history until compaction).
//!
//! Its capacity grows with the cluster: at least [`LOG_MIN_CAPACITY`] changes, and at least
//! [`LOG_CHANGES_PER_OBJECT`] per live object. A fixed 10,000 was fine for a few services but
//! not for a staged fleet: seeding 10,000 policies writes 30,000 objects and the deployment
//! controller follows with about four changes per Deployment, so a client that lists right after
//! seeding and then watches from the list's resourceVersion would find it compacted while the
//! controller's trailing writes were still arriving, and re-list forever. Compaction stays
//! driven by churn (more changes than the capacity), which is what a 410 Gone models.
//!
//! Entries keep their object as compact JSON rather than a `serde_json::Value`: a Deployment is
//! about 2 KB as text and several times that as a tree of maps, and at fleet scale the log holds
//! well over 100,000 superseded versions. Only a resuming watch reads them back, and it parses
//! just the entries of its own resource.

use super::store::{Change, ChangeKind, ObjKey};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// The fewest changes ever kept; older resourceVersions get 410 Gone.
pub const LOG_MIN_CAPACITY: usize = 10_000;
/// Changes kept per live object on top of the minimum.
pub const LOG_CHANGES_PER_OBJECT: usize = 4;

/// One logged change, its object serialized.
#[derive(Debug)]
pub struct Logged {
    pub rv: u64,
    pub kind: ChangeKind,
    pub key: ObjKey,
    json: Box<[u8]>,
}

impl Logged {
    fn new(c: &Change) -> Self {
        Self {
            rv: c.rv,
            kind: c.kind,
            key: c.key.clone(),
            json: serde_json::to_vec(c.object.as_ref())
                .unwrap_or_default()
                .into_boxed_slice(),
        }
    }

    /// The change as it was broadcast (`None` only if the text no longer parses, which
    /// serde_json's own output always does).
    pub fn change(&self) -> Option<Change> {
        let object: Value = serde_json::from_slice(&self.json).ok()?;
        Some(Change {
            rv: self.rv,
            kind: self.kind,
            key: self.key.clone(),
            object: Arc::new(object),
        })
    }
}

#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: VecDeque<Logged>,
}

/// The capacity for a store holding `objects` objects.
pub fn capacity(objects: usize) -> usize {
    LOG_MIN_CAPACITY.max(objects.saturating_mul(LOG_CHANGES_PER_OBJECT))
}

impl ChangeLog {
    /// Appends a change, compacting the oldest ones beyond the capacity for `objects`.
    pub fn push(&mut self, change: &Change, objects: usize) {
        let cap = capacity(objects);
        while self.changes.len() >= cap {
            self.changes.pop_front();
        }
        self.changes.push_back(Logged::new(change));
    }

    /// The oldest resourceVersion still kept.
    pub fn oldest(&self) -> Option<u64> {
        self.changes.front().map(|c| c.rv)
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Changes with a resourceVersion above `rv`, found by binary search (the log is in rv
    /// order), so a resuming watch costs O(log n + what it receives).
    pub fn after(&self, rv: u64) -> impl Iterator<Item = &Logged> {
        let start = self.changes.partition_point(|c| c.rv <= rv);
        self.changes.range(start..)
    }
}
