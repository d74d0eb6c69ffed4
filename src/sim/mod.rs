//! An in-process Kubernetes API server simulator, so the actuator, the demo and the real
//! `kubectl` can be exercised without a cluster (none can run on our machines).
//!
//! It speaks the apiserver's REST dialect over plain HTTP on loopback: discovery, the resources
//! backout touches, resourceVersion conflicts, watches, patches, dry run, `Status` errors, and a
//! deployment controller that makes ReplicaSets and revisions like kube-controller-manager.
//! See docs/simulator.md for what is faithful and what is not.

pub mod api;
pub mod changelog;
pub mod controller;
pub mod discovery;
pub mod faults;
pub mod fleet;
mod index;
mod intake;
mod namespaces;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod rollout;
pub mod router;
pub mod scale;
pub mod seed;
pub mod selector;
pub mod status;
pub mod store;
pub mod table;
pub mod traffic;
pub mod watch;

pub use faults::{FaultAction, FaultRule, Faults, PathMatch};
pub use store::Store;
pub use traffic::Traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

/// Errors starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "cannot listen on {addr}: {source}; pick a free address (127.0.0.1:0 takes any free port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot write the kubeconfig {path}: {source}; choose a writable path with --kubeconfig"
    )]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build a kube client for {url}: {source}")]
    Client { url: String, source: kube::Error },
    #[error("cannot seed {what}: {message}")]
    Seed { what: String, message: String },
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long "pods" take to become ready after a rollout or scale, before the controller
    /// drains old ReplicaSets and reports the rollout complete.
    pub rollout_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rollout_delay: Duration::from_millis(200),
        }
    }
}

/// State shared by every request handler.
pub struct Shared {
    pub(crate) store: Store,
    pub(crate) faults: Faults,
    pub(crate) traffic: Traffic,
    pub(crate) shutdown: signal::Receiver<bool>,
}

/// Entry point.
pub struct Simulator;

impl Simulator {
    /// Starts a simulator on `addr` (use `127.0.0.1:0` for a free port) with default settings.
    pub async fn start(addr: SocketAddr) -> Result<SimHandle, SimError> {
        Self::start_with(addr, SimConfig::default()).await
    }

    pub async fn start_with(addr: SocketAddr, config: SimConfig) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let (tx, rx) = signal::channel(false);
        let store = Store::new();
        let faults = Faults::default();
        let shared = Arc::new(Shared {
            store: store.clone(),
            faults: faults.clone(),
            traffic: Traffic::default(),
            shutdown: rx.clone(),
        });
        let app = router::router(shared.clone());
        let mut stop = rx.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(err) = serve.await {
                tracing::error!(%err, "simulator server stopped");
            }
        });
        let progress = Arc::new(controller::Progress::default());
        let controller =
            controller::spawn(store.clone(), config.rollout_delay, rx, progress.clone());
        Ok(SimHandle {
            addr: local,
            shared,
            store,
            faults,
            progress,
            stop: tx,
            tasks: vec![server, controller],
        })
    }
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    store: Store,
    faults: Faults,
    /// The deployment controller's backlog, for waiting until it is idle.
    progress: Arc<controller::Progress>,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking plain HTTP to the simulator, default namespace `default`.
    pub fn kube_client(&self) -> Result<kube::Client, SimError> {
        let url = self.url();
        let uri: axum::http::Uri =
            url.parse()
                .map_err(|e: axum::http::uri::InvalidUri| SimError::Client {
                    url: url.clone(),
                    source: kube::Error::Service(Box::new(e)),
                })?;
        let config = kube::Config::new(uri);
        kube::Client::try_from(config).map_err(|source| SimError::Client { url, source })
    }

    /// A kube client that calls the simulator's router in process, without a socket, so the same
    /// API (faults included) serves tests on paused tokio time: there, a request waiting on real
    /// socket I/O lets the runtime see itself idle and jump the clock to the next timer.
    pub fn in_process_client(&self) -> kube::Client {
        kube::Client::new(router::router(self.shared.clone()), "default")
    }

    /// The kubeconfig (JSON, which kubectl and kube read like YAML) for this simulator.
    pub fn kubeconfig(&self, namespace: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "backout-sim", "cluster": {"server": self.url()}}],
            "users": [{"name": "backout-sim", "user": {}}],
            "contexts": [{"name": "backout-sim", "context": {"cluster": "backout-sim", "user": "backout-sim", "namespace": namespace}}],
            "current-context": "backout-sim",
            "preferences": {}
        })
    }

    /// Writes [`Self::kubeconfig`] to `path` so kubectl (`--kubeconfig` / `KUBECONFIG`) can use it.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> Result<(), SimError> {
        let text = self.kubeconfig(namespace).to_string();
        std::fs::write(path, text).map_err(|source| SimError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Fault rules for requests from now on.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The request log, the count of applied writes and the kill switch.
    pub fn traffic(&self) -> &Traffic {
        &self.shared.traffic
    }

    /// From now on the deployment controller leaves this Deployment alone until its pod
    /// template changes (see [`controller::Stalls`]): a stable caught mid-rollout, or pods
    /// that never go away. Call before seeding it to keep its seeded status.
    pub fn stall_rollout(&self, namespace: &str, name: &str) {
        self.progress.stalls.stall(store::ObjKey {
            group: "apps",
            plural: "deployments",
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    /// Direct access to stored objects (tests read state without going through HTTP).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops the server, open watches and the controller.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            // Keep-alive connections may hold the server open; give them a moment, then cut.
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
