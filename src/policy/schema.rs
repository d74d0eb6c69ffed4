//! The shape of policy and template files, for the structural check that lists every mistake.
//!
//! Must stay in step with `model.rs` (a test loads a file using every key to keep them honest).

use crate::diagnostic::schema::{Field, Shape};

const LEVEL: &[Field] = &[
    Field::opt("above", Shape::Float),
    Field::opt("below", Shape::Float),
];

const STATS: &[&str] = &["last", "mean", "min", "max", "median", "p90", "p95", "p99"];
const COMPARES: &[&str] = &["ratio", "difference"];
const UNITS: &[&str] = &["ratio", "percent", "other"];
const NO_DATA: &[&str] = &["hold", "fail", "ignore"];

const SEQUENTIAL: &[Field] = &[
    Field::req("events", Shape::Str),
    Field::req("total", Shape::Str),
    Field::opt("alpha", Shape::Float),
    Field::opt("margin", Shape::Float),
    Field::opt("min_exposure", Shape::Float),
    Field::opt("pass_ratio", Shape::Float),
    Field::opt("warmup_alpha", Shape::Float),
    Field::opt("horizon", Shape::Duration),
];

const BURN_RULE: &[Field] = &[
    Field::req("long", Shape::Duration),
    Field::req("short", Shape::Duration),
    Field::req("factor", Shape::Float),
];

const BURN_RATE: &[Field] = &[
    Field::req("objective", Shape::Float),
    Field::opt("rule", Shape::TableArray(BURN_RULE)),
];

const MANN_WHITNEY: &[Field] = &[
    Field::opt("confidence", Shape::Float),
    Field::opt("tolerance", Shape::Float),
    Field::opt("min_samples", Shape::Count),
];

/// Fields shared by a metric and a template.
macro_rules! metric_fields {
    ($query:expr $(, $extra:expr)*) => {
        &[
            $($extra,)*
            $query,
            Field::opt("window", Shape::Duration),
            Field::opt("stat", Shape::Enum(STATS)),
            Field::opt("stat_window", Shape::Duration),
            Field::opt("warning", Shape::Table(LEVEL)),
            Field::opt("critical", Shape::Table(LEVEL)),
            Field::opt("for", Shape::Duration),
            Field::opt("clear_for", Shape::Duration),
            Field::opt("compare", Shape::Enum(COMPARES)),
            Field::opt("unit", Shape::Enum(UNITS)),
            Field::opt("min_traffic", Shape::Float),
            Field::opt("no_data", Shape::Enum(NO_DATA)),
            Field::opt("sequential", Shape::Table(SEQUENTIAL)),
            Field::opt("burn_rate", Shape::Table(BURN_RATE)),
            Field::opt("mann_whitney", Shape::Table(MANN_WHITNEY)),
        ]
    };
}

const METRIC: &[Field] = metric_fields!(
    Field::opt("query", Shape::Str),
    Field::req("name", Shape::Str),
    Field::opt("template", Shape::Str)
);

const TEMPLATE: &[Field] = metric_fields!(Field::opt("query", Shape::Str));

const DEPLOYMENTS: &[Field] = &[
    Field::req("stable", Shape::Str),
    Field::req("canary", Shape::Str),
];

const DESTINATION: &[Field] = &[
    Field::opt("host", Shape::Str),
    Field::opt("subset", Shape::Str),
    Field::opt("service", Shape::Str),
];

/// Which keys each kind needs is checked semantically (`validate`, `super::traffic`).
const TRAFFIC: &[Field] = &[
    Field::opt("kind", Shape::Enum(super::traffic::KINDS)),
    Field::opt("virtual_service", Shape::Str),
    Field::opt("route", Shape::Str),
    Field::opt("http_route", Shape::Str),
    Field::opt("rule", Shape::Str),
    Field::opt("rule_index", Shape::Count),
    Field::opt("stable", Shape::Table(DESTINATION)),
    Field::opt("canary", Shape::Table(DESTINATION)),
];

const ANALYSIS: &[Field] = &[
    Field::opt("interval", Shape::Duration),
    Field::opt("warmup", Shape::Duration),
    Field::opt("bake", Shape::Duration),
    Field::opt("no_data_deadline", Shape::Duration),
    Field::opt("traffic_query", Shape::Str),
    Field::opt("fleet_guard", Shape::Bool),
    Field::opt("on_shared", Shape::Enum(ON_SHARED)),
];

const ON_SHARED: &[&str] = &["hold", "rollback"];

/// A policy file.
pub const POLICY: &[Field] = &[
    Field::req("service", Shape::Str),
    Field::req("namespace", Shape::Str),
    Field::req("deployments", Shape::Table(DEPLOYMENTS)),
    Field::req("traffic", Shape::Table(TRAFFIC)),
    Field::opt("analysis", Shape::Table(ANALYSIS)),
    Field::opt("vars", Shape::StrMap),
    Field::opt("metric", Shape::TableArray(METRIC)),
    Field::opt("notify", Shape::StrList),
    Field::opt("action", Shape::Enum(super::response::ACTIONS)),
    Field::opt("rto", Shape::Duration),
    Field::opt("rollback_attempts", Shape::Count),
    Field::opt("verify", Shape::Table(super::response::VERIFY)),
    Field::opt("escalation", Shape::TableArray(super::response::ESCALATION)),
];

/// `templates.toml`.
pub const TEMPLATES_FILE: &[Field] = &[Field::opt("templates", Shape::TableMap(TEMPLATE))];
