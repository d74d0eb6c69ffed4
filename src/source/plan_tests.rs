use super::*;
use crate::source::Labels;
use proptest::prelude::*;

const BATCHED: &str = r#"sum by (service, track) (rate(http_requests_total{code=~"5.."}[1m])) / sum by (service, track) (rate(http_requests_total[1m]))"#;

fn services(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("svc-{i}")).collect()
}

/// What the daemon produces for `n` services using one template: a request per service and track.
fn requests_for(n: usize, template: &str) -> Vec<Request> {
    services(n)
        .into_iter()
        .flat_map(|s| {
            Track::ALL.map(|t| {
                let q = template
                    .replace("{{service}}", &s)
                    .replace("{{track}}", t.as_str());
                Request::new(Key::new(s.clone(), "error_rate", t), q)
            })
        })
        .collect()
}

fn series(service: &str, track: &str, value: f64) -> Series {
    let labels: Labels = [("service", service), ("track", track)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Series { labels, value }
}

#[test]
fn batched_query_count_does_not_grow_with_services() {
    let one = QueryPlan::build(requests_for(1, BATCHED));
    let many = QueryPlan::build(requests_for(500, BATCHED));
    assert_eq!(one.len(), 1);
    assert_eq!(many.len(), one.len());
}

#[test]
fn per_service_templates_are_one_query_per_service_and_track() {
    let template = r#"sum(rate(http_requests_total{service="{{service}}",track="{{track}}",code=~"5.."}[1m]))"#;
    let plan = QueryPlan::build(requests_for(3, template));
    assert_eq!(plan.len(), 6);
    assert!(plan.queries().all(|q| !q.contains("{{")));
}

#[test]
fn batched_result_is_split_by_labels_and_missing_series_are_absent() {
    let plan = QueryPlan::build(requests_for(3, BATCHED));
    let answer = vec![
        series("svc-0", "canary", 0.2),
        series("svc-0", "stable", 0.01),
        series("svc-1", "canary", f64::NAN),
        series("svc-1", "stable", 0.0),
        // svc-2 has no series at all (no traffic yet).
    ];
    let obs = plan.split(&[Ok(answer)]);
    assert_eq!(obs.len(), 6);
    let get = |s: &str, t| obs[&Key::new(s, "error_rate", t)].clone();
    assert_eq!(get("svc-0", Track::Canary), Observation::Value(0.2));
    assert_eq!(get("svc-0", Track::Stable), Observation::Value(0.01));
    assert!(matches!(get("svc-1", Track::Canary), Observation::NotFinite(v) if v.is_nan()));
    assert_eq!(get("svc-1", Track::Stable), Observation::Value(0.0));
    assert_eq!(get("svc-2", Track::Canary), Observation::Absent);
    assert_eq!(get("svc-2", Track::Stable), Observation::Absent);
}

#[test]
fn a_failed_batched_query_is_an_error_for_every_key_not_a_zero() {
    let plan = QueryPlan::build(requests_for(2, BATCHED));
    let err = SourceError::Timeout {
        detail: "slow".into(),
    };
    let obs = plan.split(&[Err(err)]);
    assert_eq!(obs.len(), 4);
    assert!(obs
        .values()
        .all(|o| *o == Observation::Error("timeout".into())));
}

#[test]
fn declared_label_set_splits_queries_without_by_clause_detection() {
    let q = "sum by (app, version) (rate(errors_total[1m]))";
    let labels = SplitLabels::new("app", "version");
    let reqs =
        ["a", "b"].map(|s| Request::split_by(Key::new(s, "err", Track::Canary), q, labels.clone()));
    let plan = QueryPlan::build(reqs);
    assert_eq!(plan.len(), 1);
    let mut s = series("x", "y", 3.0);
    s.labels = [("app", "b"), ("version", "canary")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let obs = plan.split(&[Ok(vec![s])]);
    assert_eq!(
        obs[&Key::new("b", "err", Track::Canary)],
        Observation::Value(3.0)
    );
    assert_eq!(
        obs[&Key::new("a", "err", Track::Canary)],
        Observation::Absent
    );
}

#[test]
fn unsplit_query_returning_several_series_is_flagged() {
    let plan = QueryPlan::build([Request::new(
        Key::new("a", "err", Track::Canary),
        "rate(errors_total[1m])",
    )]);
    let obs = plan.split(&[Ok(vec![
        series("a", "canary", 1.0),
        series("a", "stable", 2.0),
    ])]);
    assert_eq!(
        obs[&Key::new("a", "err", Track::Canary)],
        Observation::Error(MULTIPLE_SERIES.into())
    );
}

#[test]
fn by_clause_detection() {
    let l = SplitLabels::default();
    assert!(groups_by(BATCHED, &l));
    assert!(groups_by("sum(rate(x[1m])) by (track,service)", &l));
    assert!(groups_by("sum by(service , track, code) (x)", &l));
    assert!(!groups_by("sum by (service) (x)", &l));
    assert!(!groups_by("sum without (service, track) (x)", &l));
    assert!(!groups_by(r#"sum(x{path="/by (service, track)"})"#, &l));
    assert!(!groups_by("sum(standby (service, track))", &l));
}

proptest! {
    /// Whatever the fleet, a batched template costs one query and every key gets an answer.
    #[test]
    fn every_requested_key_gets_exactly_one_observation(n in 1usize..60, present in proptest::collection::vec(any::<bool>(), 120)) {
        let plan = QueryPlan::build(requests_for(n, BATCHED));
        prop_assert_eq!(plan.len(), 1);
        let mut answer: Vec<Series> = Vec::new();
        for (i, s) in services(n).iter().enumerate() {
            for (j, t) in Track::ALL.into_iter().enumerate() {
                if present[(2 * i + j) % 120] {
                    answer.push(series(s, t.as_str(), i as f64));
                }
            }
        }
        let expected_values = answer.len();
        let obs = plan.split(&[Ok(answer)]);
        prop_assert_eq!(obs.len(), 2 * n);
        prop_assert_eq!(obs.values().filter(|o| matches!(o, Observation::Value(_))).count(), expected_values);
        prop_assert_eq!(obs.values().filter(|o| **o == Observation::Absent).count(), 2 * n - expected_values);
    }
}

#[test]
fn policy_requests_are_keyed_by_the_engine_input_they_feed() {
    use crate::policy::{Input, MetricSpec, Policy};
    let p = Policy::test().with_metric(MetricSpec::test("errors").sequential(
        "sum(errors_total{track=\"{{track}}\"})",
        "sum(requests_total{track=\"{{track}}\"})",
    ));
    let canary: Vec<Input> = policy_requests(&p)
        .into_iter()
        .filter(|r| r.key.track == Track::Canary && *r.key.service == *p.service)
        .map(|r| (*r.key.input).clone())
        .collect();
    let metric = "errors".to_string();
    assert_eq!(
        canary,
        [
            Input::Events {
                metric: metric.clone()
            },
            Input::Total { metric }
        ]
    );
}

#[test]
fn services_placeholder_asks_only_for_the_batch_services() {
    use crate::policy::{MetricSpec, Policy};
    let template = r#"sum by (service, track) (rate(errors_total{service=~"{{services}}"}[1m]))"#;
    let requests = ["web", "api.v2", "web"].iter().flat_map(|svc| {
        let mut p = Policy::test().with_metric(MetricSpec::test("e").query(template));
        p.service = svc.to_string();
        policy_requests(&p)
    });
    let plan = QueryPlan::build(requests);
    let queries: Vec<&str> = plan.queries().collect();
    // Both services, both tracks: still one query, filtered to exactly this batch (a `.` in a
    // name is a literal, escaped for the regex and again for the string).
    assert_eq!(
        queries,
        [r#"sum by (service, track) (rate(errors_total{service=~"api\\.v2|web"}[1m]))"#]
    );
    assert!(plan.split_of(0).is_some());
}

#[test]
fn an_answer_split_at_the_source_routes_exactly_like_the_whole_answer() {
    let plan = QueryPlan::build(requests_for(3, BATCHED));
    let by = plan.split_only(0).cloned().unwrap();
    let mut whole = vec![
        series("svc-0", "canary", 0.2),
        series("svc-0", "stable", 0.01),
        series("svc-1", "canary", f64::INFINITY),
        // Two series for one key (a template missing a `by` label): flagged either way.
        series("svc-2", "stable", 1.0),
        series("svc-2", "stable", 2.0),
        // A track label that is no track name cannot be asked for.
        series("svc-1", "blue", 9.0),
    ];
    whole[0].labels.insert("code".into(), "500".into());
    let from_whole = plan.split(&[Ok(whole.clone())]);
    let split = SplitSeries::from_series(whole, &by);
    assert_eq!(split.len(), 5);
    let from_split = plan.split_answers(&[Ok(Answer::Split(split))]);
    assert_eq!(from_whole, from_split);
    assert_eq!(
        from_split[&Key::new("svc-2", "error_rate", Track::Stable)],
        Observation::Error(MULTIPLE_SERIES.into())
    );
    assert_eq!(
        from_split[&Key::new("svc-1", "error_rate", Track::Stable)],
        Observation::Absent
    );
}

#[test]
fn a_query_is_split_at_the_source_only_when_every_target_splits_it_alike() {
    let q = "sum by (service, track) (x)";
    let split = Request::new(Key::new("a", "m", Track::Canary), q);
    let whole = Request {
        split: None,
        ..Request::new(Key::new("b", "m", Track::Canary), q)
    };
    let plan = QueryPlan::build([split.clone()]);
    assert_eq!(plan.split_only(0), Some(&SplitLabels::default()));
    let mixed = QueryPlan::build([split, whole]);
    assert_eq!(mixed.len(), 1, "still sent once");
    assert_eq!(mixed.split_only(0), None);
    assert!(mixed.split_of(0).is_some());
    let obs = mixed.split(&[Ok(vec![series("a", "canary", 1.0)])]);
    assert_eq!(
        obs[&Key::new("a", "m", Track::Canary)],
        Observation::Value(1.0)
    );
    assert_eq!(
        obs[&Key::new("b", "m", Track::Canary)],
        Observation::Value(1.0)
    );
}

#[test]
fn every_key_of_a_policy_shares_one_service_name_and_the_default_labels() {
    use crate::policy::{MetricSpec, Policy};
    let p = Policy::test().with_metric(MetricSpec::test("e").query(BATCHED));
    let reqs = policy_requests(&p);
    assert!(reqs.len() >= 2);
    assert!(reqs
        .windows(2)
        .all(|w| Arc::ptr_eq(&w[0].key.service, &w[1].key.service)));
    let labels: Vec<&Arc<SplitLabels>> = reqs.iter().filter_map(|r| r.split.as_ref()).collect();
    assert!(!labels.is_empty());
    assert!(labels
        .iter()
        .all(|l| Arc::ptr_eq(&l.service, &SplitLabels::default().service)));
    // One pair for every request, not a pair each.
    assert!(labels.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
}
