//! The bounded change log behind watch resumption (etcd's history until compaction).
//!
//! Its capacity grows with the cluster: at least [`LOG_MIN_CAPACITY`] changes, and at least
//! [`LOG_CHANGES_PER_OBJECT`] per live object. A fixed 10,000 was fine for a few services but
//! not for a staged fleet: seeding 10,000 policies writes 30,000 objects and the deployment
//! controller follows with about four changes per Deployment, so a client that lists right after
//! seeding and then watches from the list's resourceVersion would find it compacted while the
//! controller's trailing writes were still arriving, and re-list forever. Compaction stays
//! driven by churn (more changes than the capacity), which is what a 410 Gone models.

use super::store::Change;
use std::collections::VecDeque;

/// The fewest changes ever kept; older resourceVersions get 410 Gone.
pub const LOG_MIN_CAPACITY: usize = 10_000;
/// Changes kept per live object on top of the minimum.
pub const LOG_CHANGES_PER_OBJECT: usize = 4;

#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: VecDeque<Change>,
}

/// The capacity for a store holding `objects` objects.
pub fn capacity(objects: usize) -> usize {
    LOG_MIN_CAPACITY.max(objects.saturating_mul(LOG_CHANGES_PER_OBJECT))
}

impl ChangeLog {
    /// Appends a change, compacting the oldest ones beyond the capacity for `objects`.
    pub fn push(&mut self, change: Change, objects: usize) {
        let cap = capacity(objects);
        while self.changes.len() >= cap {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
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
    pub fn after(&self, rv: u64) -> impl Iterator<Item = &Change> {
        let start = self.changes.partition_point(|c| c.rv <= rv);
        self.changes.range(start..)
    }
}
