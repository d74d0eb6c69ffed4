//! The traffic step: move the named Istio route to 100% stable with a JSON patch that touches only
//! that route's weights. Strategic merge is rejected for CRDs (415) and a merge patch replaces
//! `spec.http` whole, clobbering concurrent edits of other routes; a JSON patch with `test` ops on
//! the route name and the exact current weights changes nothing else and fails (409/422, then we
//! re-read) if anyone changed the route meanwhile.

use super::objects;
use super::plan::PlanError;
use crate::policy::{Destination, Traffic};
use serde_json::{json, Value};

/// Where the split lives in `spec.http`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteLocation {
    pub http_index: usize,
    pub stable_index: usize,
    pub canary_index: usize,
    /// Every destination of the route: (index, current weight if set).
    pub weights: Vec<(usize, Option<i64>)>,
}

fn host_matches(wanted: &str, actual: &str) -> bool {
    wanted == actual
        || actual
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('.'))
        || wanted
            .strip_prefix(actual)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn dest_matches(d: &Destination, route_dest: &Value) -> bool {
    let host = objects::str_at(route_dest, "/destination/host").unwrap_or_default();
    let subset = objects::str_at(route_dest, "/destination/subset");
    host_matches(&d.host, host) && d.subset.as_deref() == subset
}

/// Find the route and its two destinations, or say which policy key is wrong.
pub fn locate(
    vs: &Value,
    traffic: &Traffic,
    file: &str,
    vs_name: &str,
) -> Result<RouteLocation, PlanError> {
    let http = vs
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(http_index) = http
        .iter()
        .position(|r| r.get("name").and_then(Value::as_str) == Some(traffic.route.as_str()))
    else {
        return Err(PlanError::RouteNotFound {
            file: file.into(),
            vs: vs_name.into(),
            route: traffic.route.clone(),
            found: http
                .iter()
                .filter_map(|r| r.get("name").and_then(Value::as_str).map(String::from))
                .collect(),
        });
    };
    let dests = http[http_index]
        .get("route")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let find = |d: &Destination, track: &'static str| {
        dests
            .iter()
            .position(|rd| dest_matches(d, rd))
            .ok_or_else(|| PlanError::DestinationNotFound {
                file: file.into(),
                vs: vs_name.into(),
                route: traffic.route.clone(),
                track,
                wanted: format!("host {:?}, subset {:?}", d.host, d.subset),
            })
    };
    let stable_index = find(&traffic.stable, "stable")?;
    let canary_index = find(&traffic.canary, "canary")?;
    let weights = dests
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.get("weight").and_then(Value::as_i64)))
        .collect();
    Ok(RouteLocation {
        http_index,
        stable_index,
        canary_index,
        weights,
    })
}

/// Whether the route already sends everything to the stable.
pub fn all_to_stable(loc: &RouteLocation) -> bool {
    loc.weights.iter().all(|(i, w)| {
        if *i == loc.stable_index {
            // A lone destination without weight takes 100%.
            w.unwrap_or(if loc.weights.len() == 1 { 100 } else { 0 }) == 100
        } else {
            w.unwrap_or(0) == 0
        }
    })
}

/// JSON patch: test the route name and each current weight, then set stable 100 and others 0.
pub fn route_patch(loc: &RouteLocation, route_name: &str) -> Value {
    let base = format!("/spec/http/{}", loc.http_index);
    let mut ops = vec![json!({"op": "test", "path": format!("{base}/name"), "value": route_name})];
    for (i, current) in &loc.weights {
        let path = format!("{base}/route/{i}/weight");
        let want = if *i == loc.stable_index { 100 } else { 0 };
        match current {
            Some(w) if *w == want => {}
            Some(w) => {
                ops.push(json!({"op": "test", "path": path, "value": w}));
                ops.push(json!({"op": "replace", "path": path, "value": want}));
            }
            None => ops.push(json!({"op": "add", "path": path, "value": want})),
        }
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::fixtures::Scenario;
    use crate::policy::Policy;

    fn apply(vs: &Value, patch: &Value) -> Result<Value, json_patch::PatchError> {
        let mut doc = vs.clone();
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut doc, &p).map(|_| doc)
    }

    #[test]
    fn patch_moves_only_the_named_route_and_fails_if_weights_moved_meanwhile() {
        let vs = Scenario::default().virtual_service();
        let policy = Policy::test();
        let loc = locate(&vs, &policy.traffic, "t.toml", "web").unwrap();
        assert_eq!(
            (loc.http_index, loc.stable_index, loc.canary_index),
            (1, 0, 1)
        );
        assert!(!all_to_stable(&loc));
        let patch = route_patch(&loc, "primary");
        let after = apply(&vs, &patch).unwrap();
        assert_eq!(
            json_patch::diff(&vs, &after).0.len(),
            2,
            "exactly two weights change"
        );
        assert!(all_to_stable(
            &locate(&after, &policy.traffic, "t.toml", "web").unwrap()
        ));

        let mut moved = vs.clone();
        moved["spec"]["http"][1]["route"][1]["weight"] = 50.into();
        assert!(
            apply(&moved, &patch).is_err(),
            "stale weights must fail the test op"
        );
        let mut reordered = vs.clone();
        reordered["spec"]["http"].as_array_mut().unwrap().swap(0, 1);
        assert!(
            apply(&reordered, &patch).is_err(),
            "a moved route must fail the name test"
        );
    }

    #[test]
    fn missing_weights_and_fqdn_hosts_are_understood() {
        let mut vs = Scenario::default().virtual_service();
        vs["spec"]["http"][1]["route"][0]["destination"]["host"] =
            "web.default.svc.cluster.local".into();
        vs["spec"]["http"][1]["route"][1]
            .as_object_mut()
            .unwrap()
            .remove("weight");
        let policy = Policy::test();
        let loc = locate(&vs, &policy.traffic, "t.toml", "web").unwrap();
        assert_eq!(loc.weights, vec![(0, Some(80)), (1, None)]);
        let after = apply(&vs, &route_patch(&loc, "primary")).unwrap();
        assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 0);
        assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 100);
    }

    #[test]
    fn a_missing_destination_names_the_policy_key() {
        let vs = Scenario::default().virtual_service();
        let mut policy = Policy::test();
        policy.traffic.canary.subset = Some("v2".into());
        let err = locate(&vs, &policy.traffic, "web.toml", "web")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("web.toml") && err.contains("traffic.canary") && err.contains("v2"),
            "{err}"
        );
    }
}
