//! What an SRE sees of a running daemon: the status API, `backout status` and the web page in a
//! real browser (headless Chromium), end to end against the real binary, real Prometheus and the
//! simulator, before and after a rollback.

#[path = "common/prometheus.rs"]
mod prometheus;

#[path = "common/daemon.rs"]
mod daemon;

use std::process::Command;

/// `backout status ARGS` against the daemon (stdout is a pipe: plain text).
fn status(admin: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_backout"))
        .arg("status")
        .args(args)
        .args(["--addr", admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "backout status {args:?}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The page as Chromium rendered it after its scripts ran (`--dump-dom`; virtual time lets the
/// fetches to the status API finish first).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium not found: run `just deps` (installs Debian's chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `data-points="N"` of the first polyline of class `series TRACK`.
fn points(dom: &str, track: &str) -> usize {
    let tag = format!("class=\"series {track}\" data-points=\"");
    dom.split(&tag)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_cli_and_the_web_page_show_the_canary_and_its_rollback() {
    let w = daemon::world(false).await;
    let _d = w.start_daemon();
    w.wait_ready().await;
    w.healthy_for(12).await;

    // Before: the canary under analysis, healthy.
    let list = status(&w.admin, &[]);
    assert!(list.starts_with("NAMESPACE  SERVICE  PHASE"), "{list}");
    let row = list.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("demo") && row.contains("shop") && row.contains("canary"),
        "{list}"
    );
    // Healthy, or inconclusive while the sequential test gathers its minimum exposure.
    assert!(
        !row.contains("critical") && row.contains("backout-test-0"),
        "{list}"
    );
    assert!(!list.contains('\x1b'), "no colours into a pipe");
    let page = rendered(&format!("http://{}/#demo/shop", w.admin));
    assert!(page.contains("demo/shop: canary"), "{page}");
    assert!(points(&page, "canary") > 3, "a plot with points:\n{page}");
    assert!(points(&page, "stable") > 3, "{page}");
    assert!(
        page.contains("class=\"level critical\""),
        "the critical level is drawn:\n{page}"
    );
    assert!(!page.contains("marker rolled_back"), "{page}");

    // The canary turns bad and is rolled back.
    w.roll_back(0.30).await;
    let shop = w.rollback_settled().await;
    let reason = shop["last_rollback"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let one = status(&w.admin, &["shop"]);
    assert!(one.contains("Name:          shop"), "{one}");
    assert!(one.contains("rolled-back"), "{one}");
    assert!(one.contains("Last rollback: succeeded, mitigated"), "{one}");
    for metric in ["error_rate", "p99_latency", "errors_vs_stable"] {
        assert!(one.contains(metric), "{metric} in\n{one}");
    }
    assert!(one.contains("rolled_back"), "the timeline:\n{one}");

    let page = rendered(&format!("http://{}/#demo/shop", w.admin));
    assert!(page.contains("demo/shop: rolled_back, critical"), "{page}");
    assert!(
        page.contains("class=\"marker rolled_back\""),
        "a rollback marker:\n{page}"
    );
    assert!(page.contains("class=\"marker rollback_decided\""), "{page}");
    assert!(points(&page, "canary") > 4, "{page}");
    let first_line = reason.split(':').next().unwrap_or_default();
    assert!(
        page.contains(first_line),
        "the reason {first_line:?} is shown:\n{page}"
    );
}
