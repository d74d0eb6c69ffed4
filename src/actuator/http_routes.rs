//! The traffic step on a Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`): the named (or
//! indexed) rule sends everything to the stable's `backendRef`. Weights there are relative (an
//! unset weight is 1), so the stable gets the rule's former total (what the rule weighed before,
//! so a route whose weights sum to 100 keeps reading as percentages) and every other backend 0.
//!
//! The write is a JSON patch whose `test` ops pin that rule only: its name (when it has one), each
//! backend's name and each current weight. Every other rule, filter and match is untouched and
//! byte-identical afterwards, unlike a merge patch (which replaces `spec.rules` whole) or a
//! controller that re-renders the route (Flagger's Gateway API router loses users' rules,
//! flagger#1857). A concurrent edit of that rule fails the `test` (422) and the step re-reads.

use super::objects;
use super::plan::PlanError;
use crate::policy::Traffic;
use serde_json::{json, Value};

/// The weight Gateway API gives a backendRef without one.
const DEFAULT_WEIGHT: i64 = 1;

/// Where the split lives in `spec.rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleLocation {
    pub rule_index: usize,
    /// The rule's `name`, tested by the patch when present.
    pub rule_name: Option<String>,
    pub stable_index: usize,
    pub canary_index: usize,
    /// Every backendRef of the rule: (index, name, weight as written).
    pub backends: Vec<(usize, String, Option<i64>)>,
}

impl RuleLocation {
    fn effective(w: Option<i64>) -> i64 {
        w.unwrap_or(DEFAULT_WEIGHT)
    }

    /// Sum of the rule's effective weights: what the stable carries after the rollback.
    pub fn total(&self) -> i64 {
        self.backends
            .iter()
            .map(|(_, _, w)| Self::effective(*w))
            .sum()
    }

    /// (stable, canary) effective weights, for messages.
    pub fn weights(&self) -> (i64, i64) {
        let of = |i: usize| {
            self.backends
                .iter()
                .find(|(j, _, _)| *j == i)
                .map_or(0, |(_, _, w)| Self::effective(*w))
        };
        (of(self.stable_index), of(self.canary_index))
    }
}

fn backend_name(b: &Value) -> String {
    objects::str_at(b, "/name").unwrap_or_default().to_string()
}

/// A backendRef is a Service by default (`kind` unset or `Service`, core group).
fn is_service(b: &Value) -> bool {
    let kind = objects::str_at(b, "/kind").unwrap_or("Service");
    let group = objects::str_at(b, "/group").unwrap_or("");
    kind == "Service" && group.is_empty()
}

/// Find the rule and the two backends, or say which policy key is wrong.
pub fn locate(
    route: &Value,
    traffic: &Traffic,
    file: &str,
    route_name: &str,
) -> Result<RuleLocation, PlanError> {
    let rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            objects::str_at(r, "/name")
                .map(String::from)
                .unwrap_or_else(|| format!("#{i} (unnamed)"))
        })
        .collect();
    let rule_index = match (&traffic.rule, traffic.rule_index) {
        (Some(name), _) => rules
            .iter()
            .position(|r| objects::str_at(r, "/name") == Some(name.as_str())),
        (None, Some(i)) => (i < rules.len()).then_some(i),
        (None, None) => None,
    };
    let Some(rule_index) = rule_index else {
        return Err(PlanError::RuleNotFound {
            file: file.into(),
            route: route_name.into(),
            rule: traffic.split_name(),
            found: names,
        });
    };
    let rule = &rules[rule_index];
    let backends: Vec<(usize, String, Option<i64>)> = rule
        .get("backendRefs")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .enumerate()
                .map(|(i, b)| (i, backend_name(b), b.get("weight").and_then(Value::as_i64)))
                .collect()
        })
        .unwrap_or_default();
    let refs = rule.get("backendRefs").and_then(Value::as_array);
    let find = |service: &Option<String>, track: &'static str| {
        let wanted = service.clone().unwrap_or_default();
        refs.into_iter()
            .flatten()
            .position(|b| is_service(b) && backend_name(b) == wanted)
            .ok_or_else(|| PlanError::BackendNotFound {
                file: file.into(),
                at: format!("{} of HTTPRoute {route_name:?}", traffic.split_name()),
                track,
                wanted: wanted.clone(),
                found: backends.iter().map(|(_, n, _)| n.clone()).collect(),
            })
    };
    let stable_index = find(&traffic.stable.service, "stable")?;
    let canary_index = find(&traffic.canary.service, "canary")?;
    Ok(RuleLocation {
        rule_index,
        rule_name: objects::str_at(rule, "/name").map(String::from),
        stable_index,
        canary_index,
        backends,
    })
}

/// Whether the rule already sends everything to the stable: the stable weighs something and
/// every other backend nothing.
pub fn all_to_stable(loc: &RuleLocation) -> bool {
    loc.backends.iter().all(|(i, _, w)| {
        let w = RuleLocation::effective(*w);
        if *i == loc.stable_index {
            w > 0
        } else {
            w == 0
        }
    })
}

/// JSON patch: test the rule's name, each backend's name and weight, then the stable to the
/// former total (at least 1: a rule whose weights were all 0 served nothing) and the rest to 0.
pub fn rule_patch(loc: &RuleLocation) -> Value {
    let base = format!("/spec/rules/{}", loc.rule_index);
    let mut ops = Vec::new();
    if let Some(name) = &loc.rule_name {
        ops.push(json!({"op": "test", "path": format!("{base}/name"), "value": name}));
    }
    let total = loc.total().max(1);
    for (i, name, current) in &loc.backends {
        let at = format!("{base}/backendRefs/{i}");
        ops.push(json!({"op": "test", "path": format!("{at}/name"), "value": name}));
        let want = if *i == loc.stable_index { total } else { 0 };
        match current {
            Some(w) if *w == want => {}
            Some(w) => {
                ops.push(json!({"op": "test", "path": format!("{at}/weight"), "value": w}));
                ops.push(json!({"op": "replace", "path": format!("{at}/weight"), "value": want}));
            }
            None => ops.push(json!({"op": "add", "path": format!("{at}/weight"), "value": want})),
        }
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::fixtures::Scenario;
    use crate::policy::Policy;

    fn apply(route: &Value, patch: &Value) -> Result<Value, json_patch::PatchError> {
        let mut doc = route.clone();
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut doc, &p).map(|_| doc)
    }

    #[test]
    fn the_patch_moves_the_named_rule_only_and_keeps_its_total() {
        let route = Scenario::default().http_route();
        let policy = Policy::test_gateway();
        let loc = locate(&route, &policy.traffic, "t.toml", "web").unwrap();
        assert_eq!(
            (loc.rule_index, loc.stable_index, loc.canary_index),
            (1, 0, 1)
        );
        assert_eq!(loc.total(), 100);
        assert!(!all_to_stable(&loc));
        let after = apply(&route, &rule_patch(&loc)).unwrap();
        let rules = |v: &Value| v["spec"]["rules"].as_array().unwrap().clone();
        for i in [0, 2] {
            assert_eq!(
                rules(&after)[i].to_string(),
                rules(&route)[i].to_string(),
                "rule {i} must be byte-identical"
            );
        }
        assert_eq!(after["spec"]["parentRefs"], route["spec"]["parentRefs"]);
        let split = &rules(&after)[1];
        assert_eq!(split["backendRefs"][0]["weight"], 100);
        assert_eq!(split["backendRefs"][1]["weight"], 0);
        assert_eq!(split["filters"], rules(&route)[1]["filters"]);
        assert_eq!(json_patch::diff(&route, &after).0.len(), 2);
        assert!(all_to_stable(
            &locate(&after, &policy.traffic, "t.toml", "web").unwrap()
        ));
    }

    #[test]
    fn stale_weights_a_renamed_rule_or_swapped_backends_fail_the_test_ops() {
        let route = Scenario::default().http_route();
        let policy = Policy::test_gateway();
        let patch = rule_patch(&locate(&route, &policy.traffic, "t.toml", "web").unwrap());
        let mut moved = route.clone();
        moved["spec"]["rules"][1]["backendRefs"][1]["weight"] = 50.into();
        assert!(apply(&moved, &patch).is_err());
        let mut reordered = route.clone();
        reordered["spec"]["rules"]
            .as_array_mut()
            .unwrap()
            .swap(0, 1);
        assert!(apply(&reordered, &patch).is_err());
        let mut swapped = route.clone();
        swapped["spec"]["rules"][1]["backendRefs"]
            .as_array_mut()
            .unwrap()
            .swap(0, 1);
        assert!(apply(&swapped, &patch).is_err());
    }

    #[test]
    fn unset_weights_count_as_one_and_an_unnamed_rule_is_found_by_index() {
        let mut route = Scenario::default().http_route();
        let split = &mut route["spec"]["rules"][1];
        split.as_object_mut().unwrap().remove("name");
        for b in split["backendRefs"].as_array_mut().unwrap() {
            b.as_object_mut().unwrap().remove("weight");
        }
        let mut policy = Policy::test_gateway();
        let err = locate(&route, &policy.traffic, "web.toml", "web").unwrap_err();
        assert!(
            err.to_string().contains("#1 (unnamed)") && err.to_string().contains("web.toml"),
            "{err}"
        );
        policy.traffic.rule = None;
        policy.traffic.rule_index = Some(1);
        let loc = locate(&route, &policy.traffic, "t.toml", "web").unwrap();
        assert_eq!((loc.total(), loc.weights()), (2, (1, 1)));
        let after = apply(&route, &rule_patch(&loc)).unwrap();
        assert_eq!(after["spec"]["rules"][1]["backendRefs"][0]["weight"], 2);
        assert_eq!(after["spec"]["rules"][1]["backendRefs"][1]["weight"], 0);
    }

    #[test]
    fn a_missing_backend_names_the_policy_key_and_what_the_rule_has() {
        let route = Scenario::default().http_route();
        let mut policy = Policy::test_gateway();
        policy.traffic.canary.service = Some("web-v2".into());
        let err = locate(&route, &policy.traffic, "web.toml", "web")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("traffic.canary.service")
                && err.contains("web-v2")
                && err.contains("web-canary"),
            "{err}"
        );
    }
}
