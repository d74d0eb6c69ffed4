//! The first thing a request meets: the request log and kill switch ([`super::traffic`]), the
//! media types the simulator speaks (JSON only: a protobuf body is 415, a protobuf-only Accept
//! 406, as an apiserver answers what it cannot serve), and the fault rules; then
//! [`super::router::serve`] answers it, and an applied write is counted.

use super::faults::FaultAction;
use super::router::{dropped, injected_conflict, is_dry_run, reply, serve};
use super::status::ApiError;
use super::traffic::is_write;
use super::Shared;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::Response;
use std::sync::Arc;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Never answers: a hung apiserver, a cut-off daemon. The client's timeout ends the request.
async fn silence() -> Response {
    std::future::pending::<Response>().await
}

fn header_of(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// 415/406 for protobuf, which the simulator does not speak (kube and kubectl default to JSON;
/// a client configured for protobuf must learn it here, not get JSON it cannot decode).
fn media_type_refused(headers: &HeaderMap) -> Option<ApiError> {
    if header_of(headers, header::CONTENT_TYPE).starts_with(PROTOBUF) {
        return Some(ApiError::unsupported_media_type(&[
            "application/json",
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ]));
    }
    let accept = header_of(headers, header::ACCEPT);
    let json_ok = accept.is_empty()
        || accept
            .split(',')
            .any(|a| a.contains("json") || a.trim().starts_with("*/*"));
    (!json_ok).then(ApiError::not_acceptable)
}

/// The axum fallback for every request.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // Logged as `path?query` even when the query is empty, so a test can tell the object's own
    // path (`.../deployments/web?`) from its subresources and longer names.
    let logged = format!("{}?{}", uri.path(), uri.query().unwrap_or_default());
    if shared.traffic.arrive(method.as_str(), &logged) {
        return silence().await;
    }
    if let Some(refused) = media_type_refused(&headers) {
        return reply(Err(refused));
    }
    let decision = shared.faults.decide(method.as_str(), pq);
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    match decision.action {
        Some(FaultAction::Drop) => return dropped(),
        Some(FaultAction::ServerError(code)) => return reply(Err(ApiError::server_error(code))),
        Some(FaultAction::Conflict) => return reply(Err(injected_conflict(uri.path()))),
        Some(FaultAction::Hang) => return silence().await,
        Some(FaultAction::Latency(_) | FaultAction::AnswerLost) | None => {}
    }
    let response = serve(&shared, &method, &uri, &headers, &body);
    let code = response.status().as_u16();
    if is_write(method.as_str(), pq, code, is_dry_run(&uri, &body)) && shared.traffic.landed() {
        return silence().await;
    }
    if decision.action == Some(FaultAction::AnswerLost) {
        return silence().await;
    }
    response
}
