//! The `[traffic]` table's three routers and which keys each needs. Kept apart from `model.rs`
//! so the router choice (and its checks) is one concept in one place.
//!
//! - `istio`: `virtual_service`, `route`, `stable.host` / `canary.host` (`subset` optional).
//! - `gateway_api`: `http_route`, `rule` (a `spec.rules[].name`) or `rule_index`, and
//!   `stable.service` / `canary.service` (the `backendRefs` names).
//! - `replicas`: no router; the canary's share is its share of the ready replicas behind one
//!   Service, so a rollback scales rather than re-weights.

use super::model::Traffic;
use serde::{Deserialize, Serialize};

/// How traffic is split between the stable and the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficKind {
    /// An Istio VirtualService route's weights (the default, and what plans written before the
    /// other kinds existed mean).
    #[default]
    Istio,
    /// A Gateway API (`gateway.networking.k8s.io/v1`) HTTPRoute rule's `backendRefs` weights.
    GatewayApi,
    /// No router: the ratio of ready replicas behind one Service.
    Replicas,
}

/// The TOML spellings of [`TrafficKind`], for the schema check.
pub const KINDS: &[&str] = &["istio", "gateway_api", "replicas"];

impl TrafficKind {
    /// What a user calls it in messages and reports.
    pub fn describe(self) -> &'static str {
        match self {
            TrafficKind::Istio => "Istio VirtualService",
            TrafficKind::GatewayApi => "Gateway API HTTPRoute",
            TrafficKind::Replicas => "replica ratio",
        }
    }
}

impl Traffic {
    /// The router in use: `kind` when written, else `gateway_api` when `http_route` is set, else
    /// `istio` (so existing policies keep their meaning).
    pub fn router(&self) -> TrafficKind {
        match self.kind {
            Some(k) => k,
            None if !self.http_route.is_empty() => TrafficKind::GatewayApi,
            None => TrafficKind::Istio,
        }
    }

    /// Name of the object carrying the split (`None` for `replicas`).
    pub fn router_object(&self) -> Option<&str> {
        match self.router() {
            TrafficKind::Istio => Some(&self.virtual_service),
            TrafficKind::GatewayApi => Some(&self.http_route),
            TrafficKind::Replicas => None,
        }
    }

    /// How the split is named in messages: `route "primary"`, `rule "primary"`, `rule #1`.
    pub fn split_name(&self) -> String {
        match self.router() {
            TrafficKind::Istio => format!("route {:?}", self.route),
            TrafficKind::GatewayApi => match (&self.rule, self.rule_index) {
                (Some(name), _) => format!("rule {name:?}"),
                (None, Some(i)) => format!("rule #{i}"),
                (None, None) => "rule (unset)".into(),
            },
            TrafficKind::Replicas => "replica ratio".into(),
        }
    }
}

/// A problem with the `[traffic]` table: (key, message, hint).
pub type TrafficProblem = (String, String, String);

fn problem(key: &str, message: impl Into<String>, hint: impl Into<String>) -> TrafficProblem {
    (key.to_string(), message.into(), hint.into())
}

/// Every missing, stray or contradictory `[traffic]` key for the router in use.
pub fn problems(t: &Traffic) -> Vec<TrafficProblem> {
    let kind = t.router();
    let mut out = Vec::new();
    let need = |out: &mut Vec<TrafficProblem>, key: &str, value: &str, what: &str| {
        if value.trim().is_empty() {
            out.push(problem(
                key,
                format!("must not be empty for kind = \"{}\"", kind_name(kind)),
                format!("set `{key}` to {what}"),
            ));
        }
    };
    let stray = |out: &mut Vec<TrafficProblem>, key: &str, set: bool| {
        if set {
            out.push(problem(
                key,
                format!("is not used by kind = \"{}\"", kind_name(kind)),
                format!(
                    "remove `{key}`, or set `traffic.kind` to the router it belongs to ({})",
                    KINDS.join(", ")
                ),
            ));
        }
    };
    let service_of = |d: &super::model::Destination| d.service.clone().unwrap_or_default();
    match kind {
        TrafficKind::Istio => {
            need(
                &mut out,
                "traffic.virtual_service",
                &t.virtual_service,
                "the VirtualService's name",
            );
            need(
                &mut out,
                "traffic.route",
                &t.route,
                "the name of the `spec.http[]` route that splits the traffic",
            );
            need(
                &mut out,
                "traffic.stable.host",
                &t.stable.host,
                "the stable destination's host",
            );
            need(
                &mut out,
                "traffic.canary.host",
                &t.canary.host,
                "the canary destination's host",
            );
            stray(&mut out, "traffic.http_route", !t.http_route.is_empty());
            stray(&mut out, "traffic.rule", t.rule.is_some());
            stray(&mut out, "traffic.rule_index", t.rule_index.is_some());
            stray(
                &mut out,
                "traffic.stable.service",
                t.stable.service.is_some(),
            );
            stray(
                &mut out,
                "traffic.canary.service",
                t.canary.service.is_some(),
            );
        }
        TrafficKind::GatewayApi => {
            need(
                &mut out,
                "traffic.http_route",
                &t.http_route,
                "the HTTPRoute's name",
            );
            need(
                &mut out,
                "traffic.stable.service",
                &service_of(&t.stable),
                "the Service name of the stable's backendRef",
            );
            need(
                &mut out,
                "traffic.canary.service",
                &service_of(&t.canary),
                "the Service name of the canary's backendRef",
            );
            match (&t.rule, t.rule_index) {
                (None, None) => out.push(problem(
                    "traffic.rule",
                    "no rule named: set `rule` (a `spec.rules[].name`) or `rule_index`",
                    "name the rule in the HTTPRoute (`rules[].name`) and set `traffic.rule` to it, or set `traffic.rule_index = 0`",
                )),
                (Some(_), Some(_)) => out.push(problem(
                    "traffic.rule_index",
                    "both `rule` and `rule_index` are set",
                    "keep one: the rule's name is safer (it survives rules being reordered)",
                )),
                (Some(r), None) if r.trim().is_empty() => {
                    need(&mut out, "traffic.rule", r, "the rule's `name`")
                }
                _ => {}
            }
            if service_of(&t.stable) == service_of(&t.canary) && t.stable.service.is_some() {
                out.push(problem(
                    "traffic.canary.service",
                    "stable and canary name the same Service",
                    "each track needs its own backendRef (a Service selecting only its pods)",
                ));
            }
            stray(
                &mut out,
                "traffic.virtual_service",
                !t.virtual_service.is_empty(),
            );
            stray(&mut out, "traffic.route", !t.route.is_empty());
            stray(&mut out, "traffic.stable.host", !t.stable.host.is_empty());
            stray(&mut out, "traffic.canary.host", !t.canary.host.is_empty());
        }
        TrafficKind::Replicas => {
            for (key, set) in [
                ("traffic.virtual_service", !t.virtual_service.is_empty()),
                ("traffic.route", !t.route.is_empty()),
                ("traffic.http_route", !t.http_route.is_empty()),
                ("traffic.rule", t.rule.is_some()),
                ("traffic.rule_index", t.rule_index.is_some()),
                ("traffic.stable", t.stable != Default::default()),
                ("traffic.canary", t.canary != Default::default()),
            ] {
                stray(&mut out, key, set);
            }
        }
    }
    out
}

fn kind_name(k: TrafficKind) -> &'static str {
    match k {
        TrafficKind::Istio => "istio",
        TrafficKind::GatewayApi => "gateway_api",
        TrafficKind::Replicas => "replicas",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Destination;

    fn gateway() -> Traffic {
        Traffic {
            http_route: "web".into(),
            rule: Some("split".into()),
            stable: Destination {
                service: Some("web-primary".into()),
                ..Default::default()
            },
            canary: Destination {
                service: Some("web-canary".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn keys(t: &Traffic) -> Vec<String> {
        problems(t).into_iter().map(|p| p.0).collect()
    }

    #[test]
    fn the_router_is_inferred_from_the_keys_unless_named() {
        assert_eq!(gateway().router(), TrafficKind::GatewayApi);
        assert_eq!(Traffic::default().router(), TrafficKind::Istio);
        let replicas = Traffic {
            kind: Some(TrafficKind::Replicas),
            ..Default::default()
        };
        assert_eq!(replicas.router(), TrafficKind::Replicas);
        assert_eq!(replicas.router_object(), None);
        assert!(keys(&replicas).is_empty());
    }

    #[test]
    fn each_router_names_the_keys_it_misses_and_the_ones_it_does_not_use() {
        assert!(keys(&gateway()).is_empty(), "{:?}", keys(&gateway()));
        let mut no_rule = gateway();
        no_rule.rule = None;
        assert_eq!(keys(&no_rule), ["traffic.rule"]);
        let mut both = gateway();
        both.rule_index = Some(0);
        assert_eq!(keys(&both), ["traffic.rule_index"]);
        let mut mixed = gateway();
        mixed.route = "primary".into();
        mixed.canary.service = Some("web-primary".into());
        assert_eq!(keys(&mixed), ["traffic.canary.service", "traffic.route"]);
        let istio = Traffic {
            virtual_service: "web".into(),
            route: "primary".into(),
            stable: Destination {
                host: "web".into(),
                ..Default::default()
            },
            canary: Destination::default(),
            rule_index: Some(1),
            ..Default::default()
        };
        assert_eq!(keys(&istio), ["traffic.canary.host", "traffic.rule_index"]);
    }
}
