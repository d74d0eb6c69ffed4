//! When each service is evaluated: at its own `analysis.interval`, at a fixed phase within it.
//!
//! One ticker at the shortest interval used to evaluate every service at once: a service asking for
//! 30 s was judged every 10 s (its `for` durations counted evaluations it never asked for), and a
//! fleet of 500 services hit Prometheus and the API server in one burst per tick. This module says
//! which services are due and when the loop should wake next. It is pure: times are milliseconds
//! since an origin the caller chooses (the run loop takes the instant it started), so tests use
//! plain numbers.
//!
//! - **No drift.** The k-th evaluation of a service is due at `offset + k * interval` after the
//!   origin, whatever the earlier cycles cost. Sleeping `interval` after the work would add the
//!   work's duration to every period.
//! - **No burst.** A late wake-up evaluates a service once and moves it to its first slot after
//!   `now`: missed slots are skipped, never replayed back to back.
//! - **No thundering herd.** The offset is a stable hash of `namespace/service`, so services spread
//!   over the interval, and a service's offset is the same after a restart and on every replica
//!   (std's hasher is seeded per process; FNV-1a is not).
//! - **Batching kept.** Offsets are quantised to at most [`MAX_PHASES`] phases at least
//!   [`MIN_PHASE_GAP_MS`] apart. Services that share a phase fall due at the same millisecond and go
//!   out in one sampler call, where the `QueryPlan` sends a query shared by many services once.
//!   Unquantised offsets would give every service its own instant and defeat that sharing.

use crate::hash::fnv1a;
use crate::policy::Policy;
use std::collections::BTreeMap;
use std::time::Duration;

/// Milliseconds since the schedule's origin.
pub type Ms = u64;

/// Phases closer than this would not spread load meaningfully but would split batches.
pub const MIN_PHASE_GAP_MS: Ms = 1_000;
/// At most this many phases per interval: 10 spreads a burst tenfold while a query shared by the
/// whole fleet is still sent at most 10 times per interval instead of once.
pub const MAX_PHASES: Ms = 10;

/// The schedule key of a policy's service.
pub fn service_key(p: &Policy) -> String {
    format!("{}/{}", p.namespace, p.service)
}

/// MurmurHash3's 64-bit finaliser: FNV-1a's low bits follow the last byte closely, and keys such
/// as `shop-1`, `shop-2` differ only there; mixing makes `hash % phases` uniform.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Where one service's evaluations fall: `offset + k * interval`, k = 0, 1, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub interval: Ms,
    pub offset: Ms,
}

impl Slot {
    /// The slot of the service `key` evaluated every `interval` (a zero interval counts as 1 ms;
    /// policy validation rejects it anyway).
    pub fn new(key: &str, interval: Duration) -> Self {
        let interval = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let phases = (interval / MIN_PHASE_GAP_MS).clamp(1, MAX_PHASES);
        let width = interval / phases;
        let offset = (mix(fnv1a(key.as_bytes())) % phases) * width;
        Self { interval, offset }
    }

    /// The first evaluation time at or after `t`.
    pub fn at_or_after(&self, t: Ms) -> Ms {
        if t <= self.offset {
            return self.offset;
        }
        let k = (t - self.offset).div_ceil(self.interval);
        self.offset.saturating_add(k.saturating_mul(self.interval))
    }

    /// The first evaluation time strictly after `t`.
    pub fn after(&self, t: Ms) -> Ms {
        self.at_or_after(t.saturating_add(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: Slot,
    next: Ms,
}

/// The due times of every service, keyed by [`service_key`].
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    entries: BTreeMap<String, Entry>,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows the current set of services: a new service, or one whose interval changed, gets its
    /// first slot at or after `now`; a service that is gone is dropped; the others keep their next
    /// due time, so a reload neither delays nor repeats an evaluation.
    pub fn sync(&mut self, services: impl IntoIterator<Item = (String, Duration)>, now: Ms) {
        let mut entries = BTreeMap::new();
        for (key, interval) in services {
            let slot = Slot::new(&key, interval);
            let entry = match self.entries.get(&key) {
                Some(e) if e.slot == slot => *e,
                _ => Entry {
                    slot,
                    next: slot.at_or_after(now),
                },
            };
            entries.insert(key, entry);
        }
        self.entries = entries;
    }

    /// The services due at `now` (their slot is at or before it), each moved to its first slot
    /// after `now`.
    pub fn due(&mut self, now: Ms) -> Vec<String> {
        let mut due = Vec::new();
        for (key, e) in self.entries.iter_mut() {
            if e.next <= now {
                e.next = e.slot.after(now);
                due.push(key.clone());
            }
        }
        due
    }

    /// When the loop must wake next (`None` without services).
    pub fn next_wake(&self) -> Option<Ms> {
        self.entries.values().map(|e| e.next).min()
    }

    pub fn slot(&self, key: &str) -> Option<Slot> {
        self.entries.get(key).map(|e| e.slot)
    }

    pub fn next_due(&self, key: &str) -> Option<Ms> {
        self.entries.get(key).map(|e| e.next)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Ms = 1_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs the schedule like the loop does (wake at `next_wake`, plus `late` ms of lateness per
    /// wake-up) until `until`, returning (time, due services) per wake-up.
    fn simulate(s: &mut Schedule, until: Ms, late: impl Fn(Ms) -> Ms) -> Vec<(Ms, Vec<String>)> {
        let mut out = Vec::new();
        while let Some(wake) = s.next_wake() {
            let now = wake + late(wake);
            if now >= until {
                break;
            }
            out.push((now, s.due(now)));
        }
        out
    }

    #[test]
    fn slots_are_a_fixed_lattice() {
        let slot = Slot {
            interval: 10 * S,
            offset: 3 * S,
        };
        assert_eq!(slot.at_or_after(0), 3 * S);
        assert_eq!(slot.at_or_after(3 * S), 3 * S);
        assert_eq!(slot.after(3 * S), 13 * S);
        assert_eq!(slot.at_or_after(3 * S + 1), 13 * S);
        assert_eq!(slot.after(27 * S), 33 * S);
        assert_eq!(slot.at_or_after(33 * S), 33 * S);
    }

    #[test]
    fn offsets_are_deterministic_quantised_and_inside_the_interval() {
        for i in 0..200 {
            let key = format!("prod/svc-{i}");
            let a = Slot::new(&key, secs(30));
            assert_eq!(a, Slot::new(&key, secs(30)), "same key, same slot");
            assert!(a.offset < a.interval);
            assert_eq!(a.offset % (3 * S), 0, "30 s has 10 phases, 3 s apart");
            let short = Slot::new(&key, Duration::from_millis(500));
            assert_eq!(short.offset, 0, "shorter than one phase gap: one phase");
            let two = Slot::new(&key, secs(2));
            assert!(two.offset == 0 || two.offset == S);
        }
        assert_eq!(Slot::new("a/b", Duration::ZERO).interval, 1);
    }

    #[test]
    fn offsets_spread_100_services_over_the_phases() {
        let mut per_phase = [0u32; MAX_PHASES as usize];
        for i in 0..100 {
            let slot = Slot::new(&format!("shop/svc-{i}"), secs(10));
            per_phase[(slot.offset / S) as usize] += 1;
        }
        assert!(
            per_phase.iter().all(|&n| (3..=20).contains(&n)),
            "uneven spread: {per_phase:?}"
        );
    }

    #[test]
    fn two_intervals_run_three_to_one_without_drift() {
        let mut s = Schedule::new();
        s.sync(
            [
                ("a/fast".to_string(), secs(10)),
                ("a/slow".to_string(), secs(30)),
            ],
            0,
        );
        let fast = s.slot("a/fast").unwrap();
        let slow = s.slot("a/slow").unwrap();
        let runs = simulate(&mut s, 180 * S, |_| 0);
        let times = |k: &str| -> Vec<Ms> {
            runs.iter()
                .filter(|(_, d)| d.iter().any(|x| x == k))
                .map(|(t, _)| *t)
                .collect()
        };
        let (f, sl) = (times("a/fast"), times("a/slow"));
        assert_eq!((f.len(), sl.len()), (18, 6));
        for (k, t) in f.iter().enumerate() {
            assert_eq!(*t, fast.offset + k as Ms * 10 * S);
        }
        for (k, t) in sl.iter().enumerate() {
            assert_eq!(*t, slow.offset + k as Ms * 30 * S);
        }
    }

    #[test]
    fn a_late_loop_skips_missed_slots_instead_of_bursting() {
        let mut s = Schedule::new();
        s.sync([("a/x".to_string(), secs(10))], 0);
        let off = s.slot("a/x").unwrap().offset;
        // Every wake-up is 2.5 s late (a slow cycle): still one evaluation per slot, and the slot
        // times themselves do not move.
        let runs = simulate(&mut s, 100 * S, |_| 2_500);
        assert_eq!(runs.len(), 10);
        for (k, (t, _)) in runs.iter().enumerate() {
            assert_eq!(*t, off + k as Ms * 10 * S + 2_500);
        }
        // One wake-up 35 s late: one evaluation, then back on the lattice.
        let mut s = Schedule::new();
        s.sync([("a/x".to_string(), secs(10))], 0);
        assert_eq!(s.due(off + 35 * S), vec!["a/x".to_string()]);
        assert!(s.due(off + 35 * S + 1).is_empty(), "no catch-up burst");
        assert_eq!(s.next_wake(), Some(off + 40 * S));
    }

    #[test]
    fn services_sharing_a_phase_are_due_together() {
        // Find two keys with the same 10 s phase, and one with the same phase at 30 s.
        let keys: Vec<String> = (0..50).map(|i| format!("ns/s{i}")).collect();
        let off = |k: &str, i| Slot::new(k, secs(i)).offset;
        let a = &keys[0];
        let b = keys[1..].iter().find(|k| off(k, 10) == off(a, 10)).unwrap();
        let mut s = Schedule::new();
        s.sync([(a.clone(), secs(10)), (b.clone(), secs(10))], 0);
        let runs = simulate(&mut s, 60 * S, |_| 0);
        assert_eq!(runs.len(), 6, "one wake-up per slot, both services in it");
        assert!(runs.iter().all(|(_, d)| d.len() == 2));
    }

    #[test]
    fn sync_keeps_unchanged_services_and_reschedules_changed_ones() {
        let mut s = Schedule::new();
        s.sync(
            [("a/x".to_string(), secs(10)), ("a/y".to_string(), secs(10))],
            0,
        );
        let x_next = s.next_due("a/x").unwrap();
        s.sync(
            [("a/x".to_string(), secs(10)), ("b/z".to_string(), secs(20))],
            4 * S,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_due("a/x"), Some(x_next), "unchanged: same due time");
        assert!(s.next_due("a/y").is_none(), "removed");
        let z = s.slot("b/z").unwrap();
        assert_eq!(s.next_due("b/z"), Some(z.at_or_after(4 * S)));
        s.sync([("a/x".to_string(), secs(60))], 4 * S);
        let x = s.slot("a/x").unwrap();
        assert_eq!(x.interval, 60 * S);
        assert_eq!(s.next_due("a/x"), Some(x.at_or_after(4 * S)));
        s.sync(Vec::new(), 5 * S);
        assert!(s.is_empty() && s.next_wake().is_none());
    }
}
