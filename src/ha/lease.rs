//! The Lease rules, pure: who holds a Lease, and what a candidate may do about it now. The shell
//! (`elector`) reads the Lease, asks [`decide`], and writes with the resourceVersion it read, so
//! two candidates can never both win: the API server accepts one write per resourceVersion.

use crate::sample::Millis;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// What a Lease says, in our terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Empty: released.
    pub holder: String,
    pub renewed_at: Millis,
    pub duration_ms: Millis,
    pub transitions: i32,
}

impl Holding {
    pub fn of(lease: &Lease) -> Option<Self> {
        let spec = lease.spec.as_ref()?;
        Some(Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            renewed_at: spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0),
            duration_ms: i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000,
            transitions: spec.lease_transitions.unwrap_or(0),
        })
    }
}

/// What a candidate does with a Lease now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ours: renew it.
    Renew,
    /// Free, released or expired: take it.
    Acquire,
    /// Someone else's and live.
    Wait,
}

/// `expired`: the holder has not renewed for a lease duration *as this candidate observed it*
/// (its own clock since it saw the current renewal), so clocks of different nodes are never
/// compared, as in client-go's leader election.
pub fn decide(current: Option<&Holding>, me: &str, expired: bool) -> Decision {
    match current {
        Some(h) if h.holder == me => Decision::Renew,
        Some(h) if !h.holder.is_empty() && !expired => Decision::Wait,
        _ => Decision::Acquire,
    }
}

fn micro(ms: Millis) -> Option<MicroTime> {
    jiff::Timestamp::from_millisecond(ms).ok().map(MicroTime)
}

/// The spec a write puts in place: renewed (or acquired) by `me` at `now`.
pub fn claimed(current: Option<&Holding>, me: &str, now: Millis, duration_s: i32) -> LeaseSpec {
    let ours = current.is_some_and(|h| h.holder == me);
    let transitions = current.map(|h| h.transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration_s),
        acquire_time: if ours { None } else { micro(now) },
        renew_time: micro(now),
        lease_transitions: Some(if ours || current.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// The spec that gives a Lease up: no holder, so any candidate may take it at once.
pub fn released(current: &Holding) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some((current.duration_ms / 1000) as i32),
        renew_time: micro(0),
        lease_transitions: Some(current.transitions),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, at: Millis) -> Holding {
        Holding {
            holder: by.into(),
            renewed_at: at,
            duration_ms: 15_000,
            transitions: 3,
        }
    }

    #[test]
    fn ours_is_renewed_a_live_one_waited_for_an_expired_or_free_one_taken() {
        assert_eq!(decide(Some(&held("a", 0)), "a", true), Decision::Renew);
        assert_eq!(decide(Some(&held("b", 0)), "a", false), Decision::Wait);
        assert_eq!(decide(Some(&held("b", 0)), "a", true), Decision::Acquire);
        assert_eq!(
            decide(Some(&held("", 10_000)), "a", false),
            Decision::Acquire
        );
        assert_eq!(decide(None, "a", false), Decision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_renewing_does_not() {
        let spec = claimed(Some(&held("b", 0)), "a", 20_000, 15);
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert!(spec.acquire_time.is_some());
        let spec = claimed(Some(&held("a", 0)), "a", 5_000, 15);
        assert_eq!(spec.lease_transitions, Some(3));
        assert!(
            spec.acquire_time.is_none(),
            "acquire time kept by the merge"
        );
    }

    #[test]
    fn a_lease_reads_back_as_it_was_written() {
        let lease = Lease {
            spec: Some(claimed(None, "a", 1_700_000_000_123, 15)),
            ..Default::default()
        };
        let h = Holding::of(&lease).unwrap();
        assert_eq!(h.holder, "a");
        assert_eq!(h.renewed_at, 1_700_000_000_123);
        assert_eq!(h.duration_ms, 15_000);
        let gone = Lease {
            spec: Some(released(&h)),
            ..Default::default()
        };
        let gone = Holding::of(&gone).unwrap();
        assert_eq!(decide(Some(&gone), "b", false), Decision::Acquire);
    }
}
