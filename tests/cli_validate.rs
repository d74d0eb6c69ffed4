//! The `validate` and `explain` commands as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn backout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backout"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run backout")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn shipped_examples_policies_and_settings_validate() {
    let out = backout(&["validate", "config/examples"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // One policy per runbook in shared/seeds, replayed by tests/seed_incidents/.
    assert!(
        stdout(&out).contains("ok: 5 policies (23 metrics)"),
        "{}",
        stdout(&out)
    );
    let out = backout(&["validate", "--settings", "config/backout.toml"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn broken_file_exits_1_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/rag-api.toml"),
    )
    .unwrap();
    let broken = good.replacen("warning = { above = 0.01 }", "warning = { above = 0.5 }", 1);
    assert_ne!(good, broken);
    let path = dir.path().join("rag-api.toml");
    std::fs::write(&path, broken).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/templates.toml"),
        dir.path().join("templates.toml"),
    )
    .unwrap();
    let line = good
        .lines()
        .position(|l| l.starts_with("warning = { above = 0.01 }"))
        .unwrap()
        + 1;
    let out = backout(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let expected = format!("{}:{line}: `metric[0].warning.above`", path.display());
    assert!(text.contains(&expected), "want {expected} in:\n{text}");
}

#[test]
fn every_problem_in_every_file_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "service = \"a\"\nnamespce = \"x\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.toml"), "service = [\n").unwrap();
    let out = backout(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for needle in [
        "a.toml:2: `namespce`",
        "`namespace`",
        "`deployments`",
        "b.toml:",
    ] {
        assert!(text.contains(needle), "want {needle} in:\n{text}");
    }
}

#[test]
fn explain_prints_a_policy_that_loads_again_and_the_rendered_queries() {
    let out = backout(&["explain", "--policy", "config/examples/devops-agent.toml"]);
    assert!(out.status.success());
    let text = stdout(&out);
    // each track's Deployment is used, and a burn-rate metric is sent once per rule window
    assert!(
        text.contains(
            "#   canary: sum(rate(istio_requests_total{destination_workload=\"frontend-canary\""
        ),
        "{text}"
    );
    for w in ["[5m]", "[30m]", "[1h]", "[6h]"] {
        assert!(text.contains(w), "{w} missing: {text}");
    }
    // the statistic and what it needs to reach
    assert!(
        text.contains("`slo_burn_rate` (burn_rate): statistic = error ratio / (1 - 0.999)"),
        "{text}"
    );
    assert!(text.contains("14.4x over both 1h and 5m"), "{text}");
    // defaults are written out
    assert!(text.contains("no_data = \"hold\""), "{text}");
    // the effective policy is itself a valid policy
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("frontend.toml");
    std::fs::write(&path, &text).unwrap();
    let again = backout(&["validate", path.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stdout(&again));
}

#[test]
fn explain_of_a_broken_policy_fails_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(&path, "service = 3\n").unwrap();
    let out = backout(&["explain", "--policy", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`service`"));
}

#[test]
fn notification_channels_are_checked_against_the_policies_that_route_to_them() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = format!(
        "notify = [\"oncall-slack\", \"pagerduty-p0\"]\n{}",
        std::fs::read_to_string(root.join("config/examples/rag-api.toml")).unwrap()
    );
    std::fs::write(dir.join("rag-api.toml"), policy).unwrap();
    std::fs::copy(
        root.join("config/examples/templates.toml"),
        dir.join("templates.toml"),
    )
    .unwrap();
    let settings = top.path().join("backout.toml");
    std::fs::write(
        &settings,
        "[notify]\ndefault = [\"oncall-slack\"]\n[notify.channels.oncall-slack]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n",
    )
    .unwrap();
    let out = backout(&[
        "validate",
        "--settings",
        settings.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    // The Slack URL is a secret: refused inline, with the fix.
    assert!(text.contains("notify.channels.oncall-slack.url"), "{text}");
    assert!(text.contains("url_file"), "{text}");

    // With the URL in a file, only the undefined channel is left, named in the policy file.
    let url = top.path().join("slack-url");
    std::fs::write(&url, "https://hooks.slack.com/services/T/B/X\n").unwrap();
    std::fs::write(
        &settings,
        format!(
            "[notify]\ndefault = [\"oncall-slack\"]\n[notify.channels.oncall-slack]\nkind = \"slack\"\nurl_file = {:?}\n",
            url.display().to_string()
        ),
    )
    .unwrap();
    let out = backout(&[
        "validate",
        "--settings",
        settings.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("rag-api.toml"), "{text}");
    assert!(
        text.contains("`notify`") || text.contains("notify:"),
        "{text}"
    );
    assert!(text.contains("no channel named \"pagerduty-p0\""), "{text}");
    assert!(text.contains("[notify.channels.pagerduty-p0]"), "{text}");
    assert!(text.contains("1 problem(s) found"), "{text}");
}
