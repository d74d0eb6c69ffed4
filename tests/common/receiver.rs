//! A local HTTP receiver standing in for Slack, Teams, PagerDuty and webhooks: records every
//! POST (path and JSON body) and answers `500` to the first `fail_first` of them.
//!
//! Use with `#[path = "common/receiver.rs"] mod receiver;`.
#![allow(dead_code)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<(String, serde_json::Value)>>,
    fail_first: AtomicUsize,
    seen: AtomicUsize,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

async fn take(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    let n = inner.seen.fetch_add(1, Ordering::SeqCst);
    if n < inner.fail_first.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inner.got.lock().unwrap().push((path, body));
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/{*path}", post(take))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, inner }
    }

    /// Answers 500 to the next `n` requests.
    pub fn fail_first(&self, n: usize) {
        self.inner.fail_first.store(n, Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Bodies received on `path` (without the leading `/`), in order.
    pub fn on(&self, path: &str) -> Vec<serde_json::Value> {
        self.inner
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits (real time) until `path` received `n` bodies; panics with what it got after `limit`.
    pub async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let until = std::time::Instant::now() + limit;
        loop {
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            if std::time::Instant::now() > until {
                panic!("{path}: expected {n} bodies within {limit:?}, got {got:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
