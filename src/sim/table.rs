//! Server-side printing: `kubectl get` asks for `as=Table` and prints the columns the server
//! sends. Columns follow the apiserver's printers (Deployments, ReplicaSets, HPAs, ConfigMaps)
//! and the CRDs' printer columns for VirtualServices (Istio) and HTTPRoutes (Gateway API).

use super::resources::ResourceDef;
use serde_json::{json, Value};

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn text(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn joined(v: &Value, ptr: &str, field: Option<&str>) -> String {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| match field {
                    Some(f) => x.get(f).and_then(Value::as_str),
                    None => x.as_str(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `kubectl`'s short age format ("45s", "3m12s", "5h", "2d").
fn age(created: &str) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(def: &ResourceDef) -> Vec<Value> {
    match (def.group, def.plural) {
        ("apps", "deployments") => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("apps", "replicasets") => vec![
            col("Name", "string", 0),
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        ("networking.istio.io", "virtualservices") => vec![
            col("Name", "string", 0),
            col("Gateways", "string", 0),
            col("Hosts", "string", 0),
            col("Age", "date", 0),
        ],
        ("gateway.networking.k8s.io", "httproutes") => vec![
            col("Name", "string", 0),
            col("Hostnames", "string", 0),
            col("Age", "date", 0),
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            col("Name", "string", 0),
            col("Reference", "string", 0),
            col("MinPods", "string", 0),
            col("MaxPods", "integer", 0),
            col("Replicas", "integer", 0),
            col("Age", "string", 0),
        ],
        ("", "configmaps") => vec![
            col("Name", "string", 0),
            col("Data", "integer", 0),
            col("Age", "string", 0),
        ],
        ("coordination.k8s.io", "leases") => vec![
            col("Name", "string", 0),
            col("Holder", "string", 0),
            col("Age", "string", 0),
        ],
        _ => vec![col("Name", "string", 0), col("Age", "string", 0)],
    }
}

fn selector(o: &Value) -> String {
    super::selector::match_labels_string(o.pointer("/spec/selector").unwrap_or(&Value::Null))
}

fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = text(o, "/metadata/name");
    let a = age(&text(o, "/metadata/creationTimestamp"));
    let containers = joined(o, "/spec/template/spec/containers", Some("name"));
    let images = joined(o, "/spec/template/spec/containers", Some("image"));
    match (def.group, def.plural) {
        ("apps", "deployments") => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                int(o, "/status/readyReplicas"),
                int(o, "/spec/replicas")
            )),
            json!(int(o, "/status/updatedReplicas")),
            json!(int(o, "/status/availableReplicas")),
            json!(a),
            json!(containers),
            json!(images),
            json!(selector(o)),
        ],
        ("apps", "replicasets") => vec![
            json!(name),
            json!(int(o, "/spec/replicas")),
            json!(int(o, "/status/replicas")),
            json!(int(o, "/status/readyReplicas")),
            json!(a),
            json!(containers),
            json!(images),
            json!(selector(o)),
        ],
        ("networking.istio.io", "virtualservices") => vec![
            json!(name),
            json!(format!(
                "[{}]",
                joined(o, "/spec/gateways", None).replace(',', " ")
            )),
            json!(format!(
                "[{}]",
                joined(o, "/spec/hosts", None).replace(',', " ")
            )),
            json!(a),
        ],
        ("gateway.networking.k8s.io", "httproutes") => vec![
            json!(name),
            json!(format!(
                "[{}]",
                joined(o, "/spec/hostnames", None).replace(',', " ")
            )),
            json!(a),
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                text(o, "/spec/scaleTargetRef/kind"),
                text(o, "/spec/scaleTargetRef/name")
            )),
            json!(o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string()),
            json!(int(o, "/spec/maxReplicas")),
            json!(int(o, "/status/currentReplicas")),
            json!(a),
        ],
        ("", "configmaps") => vec![
            json!(name),
            json!(o
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0)),
            json!(a),
        ],
        ("coordination.k8s.io", "leases") => {
            vec![
                json!(name),
                json!(text(o, "/spec/holderIdentity")),
                json!(a),
            ]
        }
        _ => vec![json!(name), json!(a)],
    }
}

/// A `meta.k8s.io/v1` Table for a list (or a one-item list for a single GET).
pub fn from_list(def: &ResourceDef, list: &Value) -> Value {
    let rows: Vec<Value> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|o| {
                    json!({
                        "cells": cells(def, o),
                        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list["metadata"]["resourceVersion"]},
        "columnDefinitions": columns(def),
        "rows": rows,
    })
}
