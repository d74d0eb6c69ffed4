//! The loader must never panic: property tests over arbitrary text and over TOML documents built
//! from the policy vocabulary (so most cases get past the parser into the deeper checks).

use backout::policy::{load, load_path, render_query, render_traffic_query};
use backout::sample::Track;
use proptest::prelude::*;
use std::path::Path;

const KEYS: &[&str] = &[
    "service",
    "namespace",
    "deployments",
    "stable",
    "canary",
    "traffic",
    "virtual_service",
    "route",
    "host",
    "subset",
    "analysis",
    "interval",
    "warmup",
    "bake",
    "no_data_deadline",
    "traffic_query",
    "vars",
    "metric",
    "name",
    "template",
    "query",
    "window",
    "stat",
    "stat_window",
    "warning",
    "critical",
    "above",
    "below",
    "for",
    "clear_for",
    "compare",
    "min_traffic",
    "no_data",
    "templates",
    "latency",
    "zzz",
];

const STRINGS: &[&str] = &[
    "10s",
    "0s",
    "1m",
    "-1s",
    "1h30m",
    "hold",
    "fail",
    "ignore",
    "ratio",
    "difference",
    "p99",
    "last",
    "{{track}}",
    "{{window}}",
    "{{foo}}",
    "{{",
    "{{ }}",
    "x{{service}}y",
    "",
    "latency",
];

const HEAD: &str = "service = \"s\"\nnamespace = \"n\"\n[deployments]\nstable = \"a\"\ncanary = \"b\"\n[traffic]\nvirtual_service = \"v\"\nroute = \"r\"\nstable.host = \"h\"\ncanary.host = \"h\"\n";

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z_]{1,8}",
    ]
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(STRINGS).prop_map(|s| format!("{s:?}")),
        1 => any::<String>().prop_map(|s| format!("{s:?}")),
        2 => any::<i64>().prop_map(|i| i.to_string()),
        2 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => proptest::sample::select(&["nan", "inf", "-inf", "true", "false", "1979-05-27T07:32:00Z"][..])
            .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|v| {
                let body: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

fn pairs() -> impl Strategy<Value = String> {
    proptest::collection::vec((key(), value()), 0..6)
        .prop_map(|v| v.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
}

fn section() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("[[metric]]".to_string()),
            key().prop_map(|k| format!("[{k}]")),
            key().prop_map(|k| format!("[templates.{k}]")),
            (key(), key()).prop_map(|(a, b)| format!("[{a}.{b}]")),
        ],
        pairs(),
    )
        .prop_map(|(h, body)| format!("{h}\n{body}"))
}

fn document() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        pairs(),
        proptest::collection::vec(section(), 0..5),
    )
        .prop_map(|(head, top, sections)| {
            let mut doc = if head {
                HEAD.to_string()
            } else {
                String::new()
            };
            doc.push_str(&top);
            for s in sections {
                doc.push_str(&s);
            }
            doc
        })
}

/// One `key = value` line for a metric field, with values mostly of the right type so that
/// documents reach the semantic checks.
fn metric_field() -> impl Strategy<Value = String> {
    let dur = || {
        proptest::sample::select(
            &[
                "\"0s\"", "\"5s\"", "\"10s\"", "\"1m\"", "\"10m\"", "\"soon\"", "3",
            ][..],
        )
    };
    let num = || proptest::sample::select(&["-1", "0", "0.5", "1", "2.5", "1e300", "nan"][..]);
    let level = (proptest::option::of(num()), proptest::option::of(num())).prop_map(|(a, b)| {
        let mut parts = Vec::new();
        if let Some(a) = a {
            parts.push(format!("above = {a}"));
        }
        if let Some(b) = b {
            parts.push(format!("below = {b}"));
        }
        format!("{{ {} }}", parts.join(", "))
    });
    prop_oneof![
        proptest::sample::select(STRINGS).prop_map(|q| format!("query = {q:?}")),
        proptest::sample::select(&["latency", "missing"][..])
            .prop_map(|t| format!("template = {t:?}")),
        (
            proptest::sample::select(&["window", "stat_window", "for", "clear_for"][..]),
            dur()
        )
            .prop_map(|(k, d)| format!("{k} = {d}")),
        proptest::sample::select(&["\"last\"", "\"p99\"", "\"avg\""][..])
            .prop_map(|s| format!("stat = {s}")),
        (
            proptest::sample::select(&["warning", "critical"][..]),
            level
        )
            .prop_map(|(k, l)| format!("{k} = {l}")),
        proptest::sample::select(&["\"ratio\"", "\"difference\""][..])
            .prop_map(|c| format!("compare = {c}")),
        num().prop_map(|n| format!("min_traffic = {n}")),
        proptest::sample::select(&["\"hold\"", "\"fail\"", "\"ignore\""][..])
            .prop_map(|n| format!("no_data = {n}")),
    ]
}

/// A policy that is structurally close to valid: the required head, an analysis table and
/// metrics whose fields are drawn from the real vocabulary.
fn near_valid_policy() -> impl Strategy<Value = (String, String)> {
    let metric = (
        proptest::sample::select(&["a", "b", "a", ""][..]),
        proptest::collection::btree_map(0usize..8, metric_field(), 0..6),
    )
        .prop_map(|(name, fields)| {
            let body: String = fields.into_values().map(|f| f + "\n").collect();
            format!("[[metric]]\nname = {name:?}\n{body}")
        });
    (
        proptest::collection::vec(metric, 0..4),
        proptest::collection::btree_map(0usize..8, metric_field(), 0..5),
        proptest::option::of(proptest::sample::select(STRINGS)),
        proptest::sample::select(&["\"0s\"", "\"10s\"", "\"1m\""][..]),
    )
        .prop_map(|(metrics, template, traffic, interval)| {
            let mut doc = format!("{HEAD}[analysis]\ninterval = {interval}\n");
            if let Some(t) = traffic {
                doc.push_str(&format!("traffic_query = {t:?}\n"));
            }
            for m in metrics {
                doc.push_str(&m);
            }
            let fields: String = template
                .into_values()
                .filter(|f| !f.starts_with("template"))
                .map(|f| f + "\n")
                .collect();
            (doc, format!("[templates.latency]\n{fields}"))
        })
}

/// Loads the file alone and as part of its directory; exercises everything a caller would do
/// with a loaded policy. Panics propagate and fail the property.
fn exercise(dir: &Path, policy: &str, templates: Option<&str>) {
    let path = dir.join("svc.toml");
    std::fs::write(&path, policy).unwrap();
    if let Some(t) = templates {
        std::fs::write(dir.join("templates.toml"), t).unwrap();
    }
    for result in [load_path(&path), load(&[dir.to_path_buf()])] {
        match result {
            Ok(policies) => {
                for p in &policies {
                    for m in &p.metrics {
                        for track in Track::ALL {
                            let _ = render_query(p, m, track);
                        }
                    }
                    let _ = render_traffic_query(p, Track::Canary);
                    let _ = toml::to_string_pretty(p);
                }
            }
            Err(e) => {
                assert!(!e.problems().is_empty());
                let _ = e.to_string();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let dir = tempfile::tempdir().unwrap();
        exercise(dir.path(), &text, None);
    }

    #[test]
    fn toml_shaped_text_never_panics(text in "[a-z_\\[\\]{}=\"., \n0-9{}]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        exercise(dir.path(), &text, Some(&text));
    }

    #[test]
    fn near_valid_policies_never_panic((policy, templates) in near_valid_policy()) {
        let dir = tempfile::tempdir().unwrap();
        exercise(dir.path(), &policy, Some(&templates));
    }

    #[test]
    fn structured_documents_never_panic(policy in document(), templates in proptest::option::of(document())) {
        let dir = tempfile::tempdir().unwrap();
        exercise(dir.path(), &policy, templates.as_deref());
    }
}
