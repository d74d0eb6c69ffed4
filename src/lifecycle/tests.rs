use super::*;
use std::time::Duration;

fn deploy(name: &str, rev: u64, hash: &str, replicas: i32) -> DeploymentView {
    DeploymentView {
        name: name.into(),
        revision: Some(rev),
        template_hash: hash.into(),
        image: format!("{name}:{hash}"),
        replicas,
        last_known_good: None,
    }
}

fn lc() -> Lifecycle {
    Lifecycle::new(Duration::from_secs(600))
}

#[test]
fn first_sight_of_a_stable_trusts_it_as_known_good() {
    let mut l = lc();
    let ev = l.observe(&deploy("web", 3, "a", 4), None, 0);
    assert_eq!(ev, vec![ReleaseEvent::StableKnownGood { revision: 3 }]);
    assert_eq!(l.stage(), &Release::Idle);
}

#[test]
fn canary_start_is_recorded_once_per_revision() {
    let mut l = lc();
    let stable = deploy("web", 3, "a", 4);
    l.observe(&stable, Some(&deploy("web-canary", 1, "b", 0)), 0);
    let ev = l.observe(&stable, Some(&deploy("web-canary", 2, "c", 1)), 1_000);
    assert!(matches!(&ev[..], [ReleaseEvent::CanaryStarted { .. }]));
    assert!(l
        .observe(&stable, Some(&deploy("web-canary", 2, "c", 1)), 61_000)
        .is_empty());
    assert!(matches!(l.stage(), Release::Canary { since: 1_000, .. }));
}

#[test]
fn rolled_back_canary_stays_rolled_back_until_a_new_revision() {
    let mut l = lc();
    let stable = deploy("web", 3, "a", 4);
    let bad = deploy("web-canary", 2, "c", 1);
    l.observe(&stable, Some(&bad), 0);
    l.rolled_back(CanaryId {
        revision: 2,
        template_hash: "c".into(),
    });
    // Someone (a GitOps tool) scales the same canary back up: no new analysis, no second rollback.
    assert!(l.observe(&stable, Some(&bad), 10_000).is_empty());
    assert!(matches!(l.stage(), Release::RolledBack { .. }));
    // A new canary revision is analysed afresh.
    let ev = l.observe(&stable, Some(&deploy("web-canary", 3, "d", 1)), 20_000);
    assert!(matches!(&ev[..], [ReleaseEvent::CanaryStarted { .. }]));
}

#[test]
fn promotion_opens_a_bake_window_that_ends_in_known_good() {
    let mut l = lc();
    l.observe(&deploy("web", 3, "a", 4), None, 0);
    let ev = l.observe(&deploy("web", 4, "c", 4), None, 1_000);
    assert!(matches!(
        &ev[..],
        [ReleaseEvent::StableChanged {
            from: Some(3),
            to: 4,
            ..
        }]
    ));
    assert!(matches!(
        l.stage(),
        Release::Bake {
            stable_revision: 4,
            ..
        }
    ));
    assert!(l
        .observe(&deploy("web", 4, "c", 4), None, 600_999)
        .is_empty());
    let ev = l.observe(&deploy("web", 4, "c", 4), None, 601_000);
    assert_eq!(ev, vec![ReleaseEvent::StableKnownGood { revision: 4 }]);
    assert_eq!(l.stage(), &Release::Idle);
}

#[test]
fn canary_scaled_to_zero_stops_the_analysis() {
    let mut l = lc();
    let stable = deploy("web", 3, "a", 4);
    l.observe(&stable, Some(&deploy("web-canary", 2, "c", 1)), 0);
    let ev = l.observe(&stable, Some(&deploy("web-canary", 2, "c", 0)), 5_000);
    assert!(matches!(&ev[..], [ReleaseEvent::CanaryStopped { .. }]));
    assert_eq!(l.stage(), &Release::Idle);
}
