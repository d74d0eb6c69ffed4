//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.

use super::{Health, Metrics};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (set `listen` in backout.toml or BACKOUT_LISTEN): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    health: Health,
}

pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AdminState { metrics, health })
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.health.readiness().ready()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(futures::stream::iter(
            s.metrics
                .exposition()
                .map(Ok::<_, std::convert::Infallible>),
        )),
    )
}

async fn readyz_handler(State(s): State<AdminState>) -> impl IntoResponse {
    let r = s.health.readiness();
    let code = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(r).unwrap_or_default();
    let role = s.health.role();
    body["role"] = serde_json::Value::String(if role.is_empty() {
        "standalone".into()
    } else {
        role
    });
    (code, Json(body))
}

/// A bound admin server; `addr` is the real address (useful with port 0 in tests).
pub struct AdminServer {
    pub addr: SocketAddr,
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Metrics,
        health: Health,
    ) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self {
            addr,
            listener,
            router: router(metrics, health),
        })
    }

    /// Adds routes served next to the admin ones (the status API and page, analysis endpoints).
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Err(err) = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "admin server stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn readyz_turns_ready_only_when_every_dependency_is_up() {
        let health = Health::default();
        let server = AdminServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Metrics::new(),
            health.clone(),
        )
        .await
        .unwrap();
        let addr = server.addr;
        tokio::spawn(server.serve(std::future::pending()));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("\"prometheus_reachable\":false"), "{body}");

        health.set_policies_loaded(true);
        health.set_prometheus_reachable(true);
        health.set_kubernetes_reachable(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        health.set_prometheus_reachable(false);
        assert_eq!(get(addr, "/readyz").await.0, 503);

        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("backout_policies_loaded"), "{body}");
        assert!(body.contains("backout_ready 0"), "{body}");
    }
}
