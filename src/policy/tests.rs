//! Loader and validation tests: every rule, asserting the file, key and line a user would see.

use super::*;
use crate::diagnostic::Problem;
use crate::sample::Track;
use std::path::Path;
use std::time::Duration;

const HEAD: &str = r#"service = "checkout"
namespace = "shop"

[deployments]
stable = "checkout"
canary = "checkout-canary"

[traffic]
virtual_service = "checkout"
route = "primary"
stable = { host = "checkout", subset = "stable" }
canary = { host = "checkout", subset = "canary" }
"#;
// HEAD is 12 lines; text appended after it starts on line 13.

const METRIC: &str = r#"
[[metric]]
name = "errors"
query = "sum(rate(errors{track=\"{{track}}\"}[{{window}}]))"
critical = { above = 0.05 }
"#;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads `text` as `svc.toml` (with an optional templates.toml) and returns its problems.
fn problems_with(text: &str, templates: Option<&str>) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    if let Some(t) = templates {
        write(dir.path(), "templates.toml", t);
    }
    let path = write(dir.path(), "svc.toml", text);
    match load_path(&path) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let problems = e.problems().to_vec();
            for p in &problems {
                assert!(
                    p.file.ends_with("svc.toml") || p.file.ends_with("templates.toml"),
                    "{p}"
                );
                assert!(!p.hint.is_empty(), "every problem has a fix: {p}");
            }
            problems
        }
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_with(text, None)
}

/// The single problem about `key`, which must exist.
fn find<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for `{key}` in {problems:#?}"))
}

#[test]
fn a_good_policy_loads_with_defaults_filled() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "svc.toml", &format!("{HEAD}{METRIC}"));
    let policies = load_path(&path).unwrap();
    let m = &policies[0].metrics[0];
    assert_eq!(policies[0].source, path);
    assert_eq!(m.no_data, Some(NoData::Hold));
    assert_eq!(m.window, Some(Duration::from_secs(60)));
    assert_eq!(
        render_query(&policies[0], m, Track::Canary),
        "sum(rate(errors{track=\"canary\"}[1m]))"
    );
}

#[test]
fn unknown_key_names_line_and_suggests() {
    let p = problems(&format!("{HEAD}{METRIC}critcal = {{ above = 1 }}\n"));
    let p = find(&p, "metric[0].critcal");
    assert_eq!(p.line, Some(18));
    assert!(p.hint.contains("did you mean `critical`"), "{p}");
}

#[test]
fn bad_duration_names_line() {
    let p = problems(&format!("{HEAD}{METRIC}for = \"5 minuets\"\n"));
    let p = find(&p, "metric[0].for");
    assert_eq!(p.line, Some(18));
    assert!(p.message.contains("5 minuets"), "{p}");
}

#[test]
fn missing_fields_are_all_reported() {
    let p = problems("service = \"x\"\n");
    for key in ["namespace", "deployments", "traffic"] {
        find(&p, key);
    }
    let p = problems(&format!(
        "{HEAD}\n[[metric]]\nquery = \"q\"\ncritical = {{ above = 1 }}\n"
    ));
    assert_eq!(find(&p, "metric[0].name").line, Some(14));
}

#[test]
fn all_errors_are_collected_not_just_the_first() {
    let text =
        format!("{HEAD}{METRIC}window = \"soon\"\nstat = \"avg\"\n[analysis]\nintervl = \"10s\"\n");
    let p = problems(&text);
    find(&p, "metric[0].window");
    find(&p, "metric[0].stat");
    find(&p, "analysis.intervl");
}

#[test]
fn level_with_both_or_neither_direction() {
    let p = problems(&format!(
        "{HEAD}{METRIC}warning = {{ above = 0.01, below = 0.5 }}\n"
    ));
    assert_eq!(find(&p, "metric[0].warning").line, Some(18));
    let p = problems(&format!("{HEAD}{METRIC}warning = {{}}\n"));
    assert!(find(&p, "metric[0].warning").message.contains("neither"));
}

#[test]
fn warning_looser_than_critical() {
    let p = problems(&format!("{HEAD}{METRIC}warning = {{ above = 0.1 }}\n"));
    let p = find(&p, "metric[0].warning.above");
    assert_eq!(p.line, Some(18));
    assert!(p.message.contains("looser"), "{p}");
    let below = format!(
        "{HEAD}\n[[metric]]\nname = \"ok\"\nquery = \"q\"\nwarning.below = 0.5\ncritical.below = 0.9\n"
    );
    let p = problems(&below);
    assert_eq!(find(&p, "metric[0].warning.below").line, Some(17));
    // equal levels and a properly ordered `below` are fine
    let fine = format!(
        "{HEAD}\n[[metric]]\nname = \"ok\"\nquery = \"q\"\nwarning.below = 0.95\ncritical.below = 0.9\n"
    );
    assert!(problems(&fine).is_empty());
}

#[test]
fn warning_and_critical_in_different_directions() {
    let p = problems(&format!("{HEAD}{METRIC}warning = {{ below = 0.01 }}\n"));
    assert!(find(&p, "metric[0].warning")
        .message
        .contains("different directions"));
}

#[test]
fn duplicate_metric_names_point_at_both() {
    let p = problems(&format!("{HEAD}{METRIC}{METRIC}"));
    let p = find(&p, "metric[1].name");
    assert_eq!(p.line, Some(20));
    assert!(p.message.contains("line 15"), "{p}");
}

#[test]
fn undefined_template_reference() {
    let text = format!("{HEAD}\n[[metric]]\nname = \"lat\"\ntemplate = \"latency\"\n");
    let p = problems(&text);
    let p = find(&p, "metric[0].template");
    assert_eq!(p.line, Some(16));
    assert!(p.hint.contains("templates.toml"), "{p}");
}

#[test]
fn templates_fill_fields_and_metric_overrides() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates.toml",
        "[templates.latency]\nquery = \"p99{svc=\\\"{{service}}\\\"}\"\nfor = \"2m\"\ncritical.above = 1.0\nwarning.above = 0.5\n",
    );
    let text = format!("{HEAD}\n[[metric]]\nname = \"lat\"\ntemplate = \"latency\"\ncritical.above = 2.0\nwarning.above = 1.0\n");
    write(dir.path(), "svc.toml", &text);
    let policies = load_path(dir.path()).unwrap();
    let m = &policies[0].metrics[0];
    assert_eq!(m.critical, Some(Level::above(2.0)));
    assert_eq!(m.for_, Some(Duration::from_secs(120)));
    assert_eq!(
        render_query(&policies[0], m, Track::Stable),
        "p99{svc=\"checkout\"}"
    );
}

#[test]
fn unknown_template_variable_in_inherited_query_names_the_template() {
    let p = problems_with(
        &format!("{HEAD}\n[[metric]]\nname = \"lat\"\ntemplate = \"latency\"\n"),
        Some("[templates.latency]\nquery = \"x{{job}}\"\ncritical.above = 1\n"),
    );
    let p = find(&p, "metric[0].query");
    assert!(
        p.message.contains("{{job}}") && p.message.contains("template `latency`"),
        "{p}"
    );
    assert_eq!(p.line, Some(14));
}

#[test]
fn unknown_template_variable_and_vars() {
    let p = problems(&format!(
        "{HEAD}\n[[metric]]\nname = \"e\"\nquery = \"x{{{{foo}}}}\"\ncritical.above = 1\n"
    ));
    let p = find(&p, "metric[0].query");
    assert_eq!(p.line, Some(16));
    assert!(p.message.contains("{{foo}}"), "{p}");
    let with_var = format!("{HEAD}\n[vars]\nfoo = \"bar\"\n\n[[metric]]\nname = \"e\"\nquery = \"x{{{{foo}}}}\"\ncritical.above = 1\n");
    assert!(problems(&with_var).is_empty());
}

#[test]
fn metric_without_query() {
    let p = problems(&format!(
        "{HEAD}\n[[metric]]\nname = \"e\"\ncritical.above = 1\n"
    ));
    let p = find(&p, "metric[0].query");
    assert_eq!(p.line, Some(14));
    assert!(p.hint.contains("template"), "{p}");
}

#[test]
fn zero_interval_and_for_shorter_than_interval() {
    let p = problems(&format!("{HEAD}[analysis]\ninterval = \"0s\"\n{METRIC}"));
    assert_eq!(find(&p, "analysis.interval").line, Some(14));
    let p = problems(&format!("{HEAD}{METRIC}for = \"5s\"\nclear_for = \"3s\"\n"));
    assert_eq!(find(&p, "metric[0].for").line, Some(18));
    assert_eq!(find(&p, "metric[0].clear_for").line, Some(19));
}

#[test]
fn min_traffic_needs_a_traffic_query() {
    let p = problems(&format!("{HEAD}{METRIC}min_traffic = 1.0\n"));
    let p = find(&p, "metric[0].min_traffic");
    assert_eq!(p.line, Some(18));
    assert!(p.hint.contains("traffic_query"), "{p}");
    let fine = format!("{HEAD}[analysis]\ntraffic_query = \"sum(rate(r{{track=\\\"{{{{track}}}}\\\"}}[{{{{window}}}}]))\"\n{METRIC}min_traffic = 1.0\n");
    assert!(problems(&fine).is_empty(), "{:?}", problems(&fine));
}

#[test]
fn empty_names() {
    let text = HEAD.replace("service = \"checkout\"", "service = \"\"")
        + &METRIC.replace("\"errors\"", "\" \"");
    let p = problems(&text);
    assert_eq!(find(&p, "service").line, Some(1));
    assert_eq!(find(&p, "metric[0].name").line, Some(15));
}

#[test]
fn metric_without_levels_and_policy_without_metrics() {
    let p = problems(HEAD);
    find(&p, "metric");
    let p = problems(&format!(
        "{HEAD}\n[[metric]]\nname = \"e\"\nquery = \"q\"\n"
    ));
    assert_eq!(find(&p, "metric[0]").line, Some(14));
}

#[test]
fn syntax_error_names_line() {
    let p = problems(&format!("{HEAD}\n[[metric]\n"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(14));
}

#[test]
fn directory_problems_cover_every_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "service = 1\n");
    write(dir.path(), "b.toml", "namespace = \"x\"\n");
    write(dir.path(), "c.toml", &format!("{HEAD}{METRIC}"));
    write(dir.path(), "d.toml", &format!("{HEAD}{METRIC}"));
    let err = load_path(dir.path()).unwrap_err();
    let files: std::collections::BTreeSet<_> = err
        .problems()
        .iter()
        .map(|p| p.file.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    // a: wrong type, b: missing keys, d: same service as c
    assert_eq!(
        files,
        ["a.toml", "b.toml", "d.toml"].map(String::from).into()
    );
}

#[test]
fn bad_templates_file_is_reported_with_its_line() {
    let p = problems_with(
        &format!("{HEAD}{METRIC}"),
        Some("[templates.lat]\nquery = \"q\"\nwindw = \"1m\"\n"),
    );
    let p = find(&p, "templates.lat.windw");
    assert!(p.file.ends_with("templates.toml"));
    assert_eq!(p.line, Some(3));
}

/// Keeps the structural schema (schema.rs) in step with the serde model: a file using every key
/// must pass both, and every key must reach the typed policy.
#[test]
fn a_file_using_every_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "templates.toml",
        r#"[templates.full]
query = "q{{window}}"
window = "2m"
stat = "p95"
stat_window = "1m"
warning = { above = 1 }
critical = { above = 2 }
for = "30s"
clear_for = "30s"
compare = "ratio"
unit = "other"
min_traffic = 0.5
no_data = "fail"
"#,
    );
    let text = format!(
        r#"{HEAD}
[analysis]
interval = "10s"
warmup = "1m"
bake = "10m"
no_data_deadline = "5m"
traffic_query = "rps{{{{track}}}}"

[vars]
job = "api"

[[metric]]
name = "from_template"
template = "full"

[[metric]]
name = "own"
query = "x{{{{job}}}}"
window = "5m"
stat = "mean"
stat_window = "2m"
warning = {{ below = 0.9 }}
critical = {{ below = 0.5 }}
for = "1m"
clear_for = "2m"
compare = "difference"
unit = "ratio"
min_traffic = 2
no_data = "ignore"
"#
    );
    write(dir.path(), "svc.toml", &text);
    let policies = load_path(dir.path()).unwrap();
    let p = &policies[0];
    assert_eq!(p.vars["job"], "api");
    assert_eq!(p.analysis.no_data_deadline, Duration::from_secs(300));
    let t = &p.metrics[0];
    assert_eq!(
        (t.stat, t.compare, t.no_data),
        (Some(Stat::P95), Some(Compare::Ratio), Some(NoData::Fail))
    );
    assert_eq!(t.stat_window, Some(Duration::from_secs(60)));
    assert_eq!(t.unit, Some(Unit::Other));
    let m = &p.metrics[1];
    assert_eq!(m.unit, Some(Unit::Ratio));
    assert_eq!(m.min_traffic, Some(2.0));
    assert_eq!(m.clear_for, Some(Duration::from_secs(120)));
    assert_eq!(render_query(p, m, Track::Canary), "xapi");
}

#[test]
fn daemon_poll_interval_applies_only_where_the_policy_sets_none() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", &format!("{HEAD}{METRIC}"));
    let b = format!("{HEAD}[analysis]\ninterval = \"5s\"\n{METRIC}")
        .replace("checkout\"\nnamespace", "other\"\nnamespace");
    write(dir.path(), "b.toml", &b);
    let opts = LoadOptions {
        default_interval: Duration::from_secs(30),
    };
    let policies = load_with(&[dir.path().to_path_buf()], &opts).unwrap();
    assert_eq!(policies[0].analysis.interval, Duration::from_secs(30));
    assert_eq!(policies[1].analysis.interval, Duration::from_secs(5));
    // defaults derived from the interval follow it
    assert_eq!(
        policies[0].metrics[0].stat_window,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn inherited_level_problems_name_the_template() {
    let p = problems_with(
        &format!(
            "{HEAD}\n[[metric]]\nname = \"lat\"\ntemplate = \"latency\"\ncritical.above = 1\n"
        ),
        Some("[templates.latency]\nquery = \"x\"\nwarning.above = 3\n"),
    );
    let p = find(&p, "metric[0].warning.above");
    assert!(
        p.message.contains("looser") && p.message.contains("template `latency`"),
        "{p}"
    );
    assert_eq!(p.line, Some(14), "points at the metric using the template");
}

#[test]
fn a_large_directory_loads_in_file_order_with_every_problem() {
    // Enough files for the loader to parse in parallel chunks: order and problems must be
    // exactly what one thread would produce.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        let head = HEAD.replace("checkout", &format!("svc-{i:03}"));
        let metric = if i == 7 || i == 250 {
            METRIC.replace("above = 0.05", "above = \"high\"")
        } else {
            METRIC.to_string()
        };
        write(
            dir.path(),
            &format!("svc-{i:03}.toml"),
            &format!("{head}{metric}"),
        );
    }
    let err = load_path(dir.path()).expect_err("two files are invalid");
    let files: Vec<String> = err
        .problems()
        .iter()
        .map(|p| p.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["svc-007.toml", "svc-250.toml"]);

    write(
        dir.path(),
        "svc-007.toml",
        &format!("{}{METRIC}", HEAD.replace("checkout", "svc-007")),
    );
    write(
        dir.path(),
        "svc-250.toml",
        &format!("{}{METRIC}", HEAD.replace("checkout", "svc-250")),
    );
    let services: Vec<String> = load_path(dir.path())
        .unwrap()
        .into_iter()
        .map(|p| p.service)
        .collect();
    let expected: Vec<String> = (0..300).map(|i| format!("svc-{i:03}")).collect();
    assert_eq!(services, expected);
}

const ISTIO_TRAFFIC: &str = r#"virtual_service = "checkout"
route = "primary"
stable = { host = "checkout", subset = "stable" }
canary = { host = "checkout", subset = "canary" }
"#;

#[test]
fn gateway_api_and_replicas_traffic_load_and_stray_or_missing_keys_are_named_with_lines() {
    let gateway = HEAD.replace(
        ISTIO_TRAFFIC,
        "http_route = \"checkout\"\nrule = \"split\"\nstable = { service = \"checkout\" }\ncanary = { service = \"checkout-canary\" }\n",
    );
    let p = problems(&format!("{gateway}{METRIC}"));
    assert!(p.is_empty(), "{p:?}");
    let replicas = HEAD.replace(ISTIO_TRAFFIC, "kind = \"replicas\"\n");
    assert!(problems(&format!("{replicas}{METRIC}")).is_empty());

    let mixed = HEAD.replace(
        ISTIO_TRAFFIC,
        "kind = \"replicas\"\nhttp_route = \"checkout\"\n",
    );
    let p = problems(&format!("{mixed}{METRIC}"));
    let stray = find(&p, "traffic.http_route");
    assert_eq!(stray.line, Some(10));
    assert!(
        stray.message.contains("not used by kind = \"replicas\""),
        "{stray}"
    );
    let no_rule = gateway.replace("rule = \"split\"\n", "");
    let p = problems(&format!("{no_rule}{METRIC}"));
    assert!(find(&p, "traffic.rule").hint.contains("rule_index"));
    let bad_kind = HEAD.replace(ISTIO_TRAFFIC, "kind = \"linkerd\"\n");
    find(&problems(&format!("{bad_kind}{METRIC}")), "traffic.kind");
}

#[test]
fn a_restore_deadline_no_working_rollback_can_meet_is_refused() {
    // The shortest `for` (2m) + a poll (10s) + verify.window (10m) >= 12m: every rollback pages.
    let tight = format!("{HEAD}[verify]\nrestore_within = \"12m\"\n{METRIC}for = \"2m\"\n");
    let found = problems(&tight);
    let p = find(&found, "verify.restore_within");
    assert!(p.message.contains("12m 10s"), "{p}");
    let roomy = tight.replace("\"12m\"", "\"15m\"");
    assert!(problems(&roomy).is_empty());
}
