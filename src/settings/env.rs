//! Per-variable check of `BACKOUT_*` overrides against the settings schema.

use super::{ENV_PREFIX, SCHEMA};
use crate::diagnostic::schema::Shape;
use crate::diagnostic::Problem;
use std::path::Path;

/// Checks every `BACKOUT_*` variable against the schema, so all bad overrides are reported at
/// once (figment stops at the first). Pure: takes the variables as pairs.
pub fn check_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Problem> {
    let mut out = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let key = path.join(".");
        let problem = |message: String, hint: String| {
            Problem::new(
                Path::new("environment"),
                format!("{key} (from {name})"),
                message,
            )
            .hint(hint)
        };
        let mut fields = SCHEMA;
        let mut shape = None;
        for (i, seg) in path.iter().enumerate() {
            match fields.iter().find(|f| f.name == seg) {
                Some(f) => match (f.shape, i + 1 == path.len()) {
                    (Shape::Table(inner), false) => fields = inner,
                    (s, true) => shape = Some(s),
                    (_, false) => break,
                },
                None => break,
            }
        }
        let Some(shape) = shape else {
            out.push(problem(
                "not a backout setting".into(),
                format!("unset {name}; settings are BACKOUT_ + key path with __ between tables, e.g. BACKOUT_PROMETHEUS__URL"),
            ));
            continue;
        };
        let bad = match shape {
            Shape::Duration => humantime::parse_duration(&value).err().map(|e| {
                (
                    format!("bad duration {value:?}: {e}"),
                    "use a duration such as 30s or 5m",
                )
            }),
            Shape::Float => match value.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => None,
                _ => Some((
                    format!("not a number: {value:?}"),
                    "use a number such as 20",
                )),
            },
            Shape::Count => value.trim().parse::<u64>().err().map(|_| {
                (
                    format!("not a whole number: {value:?}"),
                    "use a whole number such as 20",
                )
            }),
            Shape::Bool => value
                .trim()
                .parse::<bool>()
                .err()
                .map(|_| (format!("not a boolean: {value:?}"), "use true or false")),
            Shape::Enum(allowed) if !allowed.contains(&value.trim()) => Some((
                format!("unknown value {value:?}"),
                "use one of the values listed in docs/policy.md",
            )),
            Shape::Table(_) => Some((
                "names a table, not a value".to_string(),
                "set one key of it, e.g. BACKOUT_PROMETHEUS__URL",
            )),
            _ => None,
        };
        if let Some((message, hint)) = bad {
            out.push(problem(message, hint.to_string()));
        }
    }
    out
}
