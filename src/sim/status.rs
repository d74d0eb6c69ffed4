//! API errors rendered as `kind: Status` bodies in exactly the apiserver's shape, because clients
//! (kubectl, kube-rs) branch on `reason` and `code`, not on the HTTP line alone.

use super::resources::ResourceDef;
use serde_json::{json, Map, Value};

/// An error the simulated apiserver answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(def: &ResourceDef, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !def.group.is_empty() {
        d.insert("group".into(), json!(def.group));
    }
    d.insert("kind".into(), json!(def.plural));
    Value::Object(d)
}

impl ApiError {
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", def.qualified(), name),
            details: Some(details(def, name)),
        }
    }

    /// A URL that names no served resource.
    pub fn no_route(path: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
            details: None,
        }
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", def.qualified(), name),
            details: Some(details(def, name)),
        }
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                def.qualified(),
                name
            ),
            details: Some(details(def, name)),
        }
    }

    /// 422 with one field cause, as validation failures are reported.
    pub fn invalid(def: &ResourceDef, name: &str, field: &str, detail: &str) -> Self {
        let message = format!(
            "{} \"{}\" is invalid: {}: {}",
            def.qualified_kind(),
            name,
            field,
            detail
        );
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !def.group.is_empty() {
            d.insert("group".into(), json!(def.group));
        }
        d.insert("kind".into(), json!(def.kind));
        d.insert(
            "causes".into(),
            json!([{"reason": "FieldValueInvalid", "message": detail, "field": field}]),
        );
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(Value::Object(d)),
        }
    }

    /// A patch that cannot be applied (e.g. a failed JSON-patch `test`): the apiserver's generic 422.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: message.into(),
            details: Some(json!({})),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            details: None,
        }
    }

    /// The answer to an Accept header the simulator cannot serve (it answers JSON only).
    pub fn not_acceptable() -> Self {
        Self {
            code: 406,
            reason: "NotAcceptable",
            message: "only the following media types are accepted: application/json".into(),
            details: None,
        }
    }

    pub fn method_not_allowed() -> Self {
        Self {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: None,
        }
    }

    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// An injected server failure.
    pub fn server_error(code: u16) -> Self {
        let (reason, message) = match code {
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            _ => ("InternalError", "Internal error occurred: injected fault"),
        };
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object.
    pub fn body(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(d), Some(obj)) = (&self.details, s.as_object_mut()) {
            obj.insert("details".into(), d.clone());
        }
        s
    }
}

/// `Status` with `status: Success` (answers to DELETE of collections and the like).
pub fn success(def: &ResourceDef, name: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details(def, name),
    })
}
