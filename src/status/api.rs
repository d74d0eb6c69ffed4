//! The read-only status routes of the admin server:
//! - `GET /`: the web page ([`super::page`]);
//! - `GET /api/v1/services`: every service at a glance ([`ServiceList`]);
//! - `GET /api/v1/services/{namespace}/{service}`: one service with its last hour
//!   ([`ServiceDetail`]), 404 with a JSON error for an unknown service.
//!
//! Merged into the admin router with `AdminServer::with_routes(status::api::router(board))`.

use super::{ServiceDetail, ServiceList, StatusBoard};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The status routes over `board`.
pub fn router(board: StatusBoard) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/v1/services", get(list))
        .route("/api/v1/services/{namespace}/{service}", get(detail))
        .with_state(board)
}

async fn page() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::page::PAGE,
    )
}

async fn list(State(board): State<StatusBoard>) -> Json<ServiceList> {
    Json(board.list())
}

async fn detail(
    State(board): State<StatusBoard>,
    Path((namespace, service)): Path<(String, String)>,
) -> Response {
    match board.detail(&namespace, &service) {
        Some(d) => Json::<ServiceDetail>(d).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("no policy for service {namespace}/{service} on this replica; GET /api/v1/services lists them"),
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Level, MetricSpec, Policy};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(board: &StatusBoard, path: &str) -> (StatusCode, serde_json::Value) {
        let resp = router(board.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn services_are_listed_and_one_is_detailed_or_404() {
        let p = Policy::test()
            .with_service("shop", "demo")
            .with_metric(MetricSpec::test("error_rate").critical(Level::above(0.05)));
        let board = StatusBoard::new("backout-0");
        board.sync([(&p, false)]);
        let (code, list) = get(&board, "/api/v1/services").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list["replica"], "backout-0");
        assert_eq!(list["services"][0]["service"], "shop");
        assert_eq!(list["services"][0]["phase"], "pending");
        assert_eq!(list["services"][0]["metrics"][0]["critical"]["above"], 0.05);
        let parsed: ServiceList = serde_json::from_value(list).unwrap();
        assert_eq!(parsed.services[0].namespace, "demo");

        let (code, detail) = get(&board, "/api/v1/services/demo/shop").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(detail["history"][0]["metric"], "error_rate");
        assert!(detail["timeline"].as_array().unwrap().is_empty());
        let (code, err) = get(&board, "/api/v1/services/demo/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(
            err["error"].as_str().unwrap().contains("demo/nope"),
            "{err}"
        );
    }
}
