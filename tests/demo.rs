//! The embedded demo is also the smoke test: a healthy canary is left alone, the bad one is rolled
//! back, traffic and replicas end on the stable.

use backout::demo::{run, DemoOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_rolls_back_the_bad_canary_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        speed: 20.0,
        healthy_for: Duration::from_secs(30),
        deadline: Duration::from_secs(60),
        audit_dir: Some(dir.path().to_path_buf()),
    };
    let mut lines = Vec::new();
    let result = run(opts, &mut |l| lines.push(l)).await.unwrap();
    assert!(result.rolled_back, "{}", lines.join("\n"));
    assert!(
        !result.false_rollback,
        "rolled back while healthy:\n{}",
        lines.join("\n")
    );
    assert_eq!(result.canary_weight, Some(0));
    assert_eq!(result.canary_replicas, Some(0));
    // Detected within a few polls of turning bad (2 s polls, 6 s `for`, 10 s rate window).
    let detection = result.detection_seconds.unwrap();
    assert!(
        (4.0..=20.0).contains(&detection),
        "detection took {detection} s"
    );
    let incidents: Vec<_> = std::fs::read_dir(dir.path().join("incidents"))
        .unwrap()
        .collect();
    assert_eq!(incidents.len(), 1, "exactly one incident report");
    let kinds: Vec<String> = result
        .timeline
        .iter()
        .map(|r| format!("{:?}", r.kind))
        .collect();
    assert!(
        kinds.contains(&"RollbackCompleted".to_string()),
        "{kinds:?}"
    );
}
