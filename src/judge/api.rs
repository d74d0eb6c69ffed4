//! The judge's routes on the admin server (`AdminServer::with_routes(judge::api::router(board))`).
//!
//! **Argo Rollouts `web` provider**: `GET /api/v1/analysis/{namespace}/{service}` answers 200 with
//! a [`Judgement`] for a service this replica has a policy for. Argo turns a non-2xx answer into a
//! measurement *error*, not a failure, so every judgement (pass, fail, inconclusive) is a 200 and
//! the AnalysisTemplate decides on `result`; an unknown service is a 404 (an error: a
//! misconfiguration, not a verdict).
//!
//! **Flagger webhooks**: `POST /api/v1/flagger/{gate}` with Flagger's payload (`name`,
//! `namespace`, `phase`, `checksum`, `metadata`); Flagger fails a check on any status above 202 and
//! logs the body. `gate` is the webhook type it is used as:
//! - `rollout` (and `pre-rollout`): 200 unless the judgement is a fail (412), so missing data or a
//!   warning never counts towards Flagger's rollback threshold;
//! - `confirm-promotion`: 200 only on a pass (412 otherwise), so promotion waits for a clean bill.
//!
//! The service is `metadata.service` when given, else the Canary's name; 404 when this replica
//! has no policy for it. Failures answer in plain text (what Flagger puts in its event).

use super::{judge, AnalysisSource, Judgement, Outcome};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Flagger's `CanaryWebhookPayload` (pkg/apis/flagger/v1beta1/canary.go).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlaggerPayload {
    pub name: String,
    pub namespace: String,
    /// The Canary's phase (`Progressing`, `Promoting`, ...).
    #[serde(default)]
    pub phase: String,
    /// Hash of the Canary's tracked configs and last applied spec.
    #[serde(default)]
    pub checksum: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// How a Flagger webhook uses the judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `rollout` / `pre-rollout`: fails only on a fail.
    Rollout,
    /// `confirm-promotion`: passes only on a pass.
    Promotion,
}

impl Gate {
    pub fn from_path(s: &str) -> Option<Gate> {
        match s {
            "rollout" | "pre-rollout" => Some(Gate::Rollout),
            "confirm-promotion" => Some(Gate::Promotion),
            _ => None,
        }
    }

    /// Whether Flagger should count the check as passed.
    pub fn passes(self, outcome: Outcome) -> bool {
        match self {
            Gate::Rollout => outcome != Outcome::Fail,
            Gate::Promotion => outcome == Outcome::Pass,
        }
    }
}

type Source = Arc<dyn AnalysisSource>;

/// The judge's routes over `source` (the daemon's `StatusBoard`).
pub fn router(source: impl AnalysisSource) -> Router {
    let source: Source = Arc::new(source);
    Router::new()
        .route("/api/v1/analysis/{namespace}/{service}", get(analysis))
        .route("/api/v1/flagger/{gate}", post(flagger))
        .with_state(source)
}

fn unknown(namespace: &str, service: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("backout: no policy for service {namespace}/{service} on this replica (GET /api/v1/services lists them; for Flagger, set webhook metadata.service)\n"),
    )
        .into_response()
}

async fn analysis(
    State(source): State<Source>,
    Path((namespace, service)): Path<(String, String)>,
) -> Response {
    match source.status(&namespace, &service) {
        Some(s) => Json::<Judgement>(judge(&s)).into_response(),
        None => unknown(&namespace, &service),
    }
}

async fn flagger(
    State(source): State<Source>,
    Path(gate): Path<String>,
    Json(payload): Json<FlaggerPayload>,
) -> Response {
    let Some(gate) = Gate::from_path(&gate) else {
        return (
            StatusCode::NOT_FOUND,
            format!("backout: no Flagger gate {gate:?}; use /api/v1/flagger/rollout or /api/v1/flagger/confirm-promotion\n"),
        )
            .into_response();
    };
    let service = payload
        .metadata
        .get("service")
        .cloned()
        .unwrap_or_else(|| payload.name.clone());
    let Some(status) = source.status(&payload.namespace, &service) else {
        return unknown(&payload.namespace, &service);
    };
    let j = judge(&status);
    tracing::debug!(
        namespace = %payload.namespace, service, phase = %payload.phase,
        checksum = %payload.checksum, result = ?j.result, "flagger webhook judged"
    );
    if gate.passes(j.result) {
        return Json(j).into_response();
    }
    let why = if j.reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", j.reasons.join("; "))
    };
    (
        StatusCode::PRECONDITION_FAILED,
        format!(
            "backout judges {}/{} {}{why}\n",
            j.namespace,
            j.service,
            j.result.as_str()
        ),
    )
        .into_response()
}
