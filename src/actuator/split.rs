//! The traffic split, whichever router carries it: one place that dispatches on the policy's
//! `[traffic]` kind so the plan, the steps and verification never do. Pure.

use super::plan::PlanError;
use super::steps::Target;
use super::{http_routes, routes};
use crate::policy::{Traffic, TrafficKind};
use serde_json::Value;

/// Where the split is in its router object.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    Istio(routes::RouteLocation),
    GatewayApi(http_routes::RuleLocation),
}

impl Split {
    /// Find the split in `object` (the router named by `traffic`), or say which policy key is
    /// wrong. `None` for `replicas`: there is no router object.
    pub fn locate(
        traffic: &Traffic,
        object: &Value,
        file: &str,
    ) -> Result<Option<Split>, PlanError> {
        let name = traffic.router_object().unwrap_or_default();
        Ok(match traffic.router() {
            TrafficKind::Istio => Some(Split::Istio(routes::locate(object, traffic, file, name)?)),
            TrafficKind::GatewayApi => Some(Split::GatewayApi(http_routes::locate(
                object, traffic, file, name,
            )?)),
            TrafficKind::Replicas => None,
        })
    }

    pub fn all_to_stable(&self) -> bool {
        match self {
            Split::Istio(loc) => routes::all_to_stable(loc),
            Split::GatewayApi(loc) => http_routes::all_to_stable(loc),
        }
    }

    /// The JSON patch that sends everything to the stable, `test` ops included.
    pub fn patch(&self, traffic: &Traffic) -> Value {
        match self {
            Split::Istio(loc) => routes::route_patch(loc, &traffic.route),
            Split::GatewayApi(loc) => http_routes::rule_patch(loc),
        }
    }

    /// The weights as a user reads them in a failure message.
    pub fn weights(&self) -> String {
        match self {
            Split::Istio(loc) => format!("{:?}", loc.weights),
            Split::GatewayApi(loc) => {
                let (s, c) = loc.weights();
                format!("stable {s}, canary {c} of {}", loc.total())
            }
        }
    }
}

/// The object a traffic write goes to (`None` for `replicas`).
pub fn target(traffic: &Traffic) -> Option<Target> {
    let name = traffic.router_object()?.to_string();
    Some(match traffic.router() {
        TrafficKind::GatewayApi => Target::HttpRoute(name),
        _ => Target::VirtualService(name),
    })
}
