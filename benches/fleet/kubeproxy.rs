//! A counting proxy between the daemon and the simulator: Kubernetes requests/s measured outside
//! the daemon.
//!
//! The daemon's own `backout_kubernetes_requests_total` is newer than this harness; when it is
//! absent the count here is the answer, and when it is present the two cross-check. Every request
//! is forwarded as is and the response streamed back chunk by chunk, so watches keep working.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    count: Arc<AtomicU64>,
}

/// The running proxy.
pub struct KubeProxy {
    count: Arc<AtomicU64>,
    /// A kubeconfig pointing at the proxy, for the daemon.
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl KubeProxy {
    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Serves on a free loopback port, forwarding to `sim_url`, and writes a copy of the
    /// simulator's kubeconfig (`sim_kubeconfig`) pointing at itself.
    pub async fn start(sim_url: &str, sim_kubeconfig: &Path, root: &Path) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let upstream = Upstream {
            url: sim_url.trim_end_matches('/').to_string(),
            // No overall timeout: watches stay open as long as the daemon wants.
            http: reqwest::Client::builder().build()?,
            count: count.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = root.join("daemon.kubeconfig");
        rewrite_kubeconfig(sim_kubeconfig, &kubeconfig, addr)?;
        Ok(Self {
            count,
            kubeconfig,
            task,
        })
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The simulator writes its kubeconfig as JSON; every cluster's server becomes the proxy.
fn rewrite_kubeconfig(from: &Path, to: &Path, proxy: SocketAddr) -> anyhow::Result<()> {
    let mut kc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from)?)?;
    if let Some(clusters) = kc.get_mut("clusters").and_then(|c| c.as_array_mut()) {
        for c in clusters {
            if let Some(cluster) = c.get_mut("cluster") {
                cluster["server"] = serde_json::json!(format!("http://{proxy}"));
            }
        }
    }
    std::fs::write(to, kc.to_string())?;
    Ok(())
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "transfer-encoding" | "keep-alive" | "upgrade" | "host"
    )
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    up.count.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut out = up
        .http
        .request(parts.method, format!("{}{path}", up.url))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    // An error ends the stream (the daemon sees a cut connection, as from a real API server).
    let chunks = futures::stream::unfold(Some(resp), |state| async move {
        let mut r = state?;
        match r.chunk().await {
            Ok(Some(b)) => Some((Ok::<_, reqwest::Error>(b), Some(r))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    builder
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
