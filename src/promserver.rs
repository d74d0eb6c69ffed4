//! A real Prometheus server as a child process: the `prometheus` binary from PATH on a free
//! loopback port, scraping given targets, with a throw-away storage directory (optionally
//! backfilled with `promtool`). Killed when dropped, and when its owner dies without dropping it
//! (SIGKILL, OOM killer; [`crate::lifeline`] says how).
//!
//! One implementation for the demo (which puts real Prometheus between the simulated workload and
//! the engine when it can) and for the tests and benches that check backout against real
//! PromQL, so what the demo shows is what the tests verify.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PromServerError {
    #[error("`{name}` is not on PATH; install Prometheus (Debian/Ubuntu: `apt-get install prometheus`, or `just deps`)")]
    NotFound { name: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("promtool backfill failed: {output}")]
    Backfill { output: String },
    #[error("prometheus exited early ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("prometheus not ready after {waited:?}; its log:\n{log}")]
    NotReady { waited: Duration, log: String },
    #[error("prometheus could not bind a free loopback port in {attempts} attempts")]
    NoFreePort { attempts: u32 },
    #[error("HTTP client for prometheus: {0}")]
    Http(String),
    #[error("prometheus rejected the configuration reload ({status}); its log:\n{log}")]
    Reload { status: String, log: String },
    #[error(
        "prometheus did not scrape its targets {scrapes} times within {waited:?}; its log:\n{log}"
    )]
    NoScrapes {
        scrapes: u32,
        waited: Duration,
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PromServerError {
    let what = what.into();
    move |source| PromServerError::Io { what, source }
}

/// `name` on PATH, if it is there.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str) -> Result<PathBuf, PromServerError> {
    find_binary(name).ok_or_else(|| PromServerError::NotFound { name: name.into() })
}

/// A loopback port that was free a moment ago (bind to :0, read, release). Another process may
/// take it before it is used; [`Builder::start`] retries on that.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Writes an OpenMetrics document and turns it into TSDB blocks inside `storage`, so Prometheus
/// starts with that history (for backtests).
pub fn backfill(storage: &Path, openmetrics: &str) -> Result<(), PromServerError> {
    let promtool = require("promtool")?;
    std::fs::create_dir_all(storage).map_err(io("create the storage directory"))?;
    let input = storage.with_extension(format!("{}.om", std::process::id()));
    std::fs::write(&input, openmetrics).map_err(io("write the OpenMetrics file"))?;
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&input)
        .arg(storage)
        .output()
        .map_err(io("run promtool"))?;
    if !out.status.success() {
        return Err(PromServerError::Backfill {
            output: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

use crate::lifeline::SCRIPT as LIFELINE;

/// How to start Prometheus.
pub struct Builder {
    binary: Option<PathBuf>,
    targets: Vec<SocketAddr>,
    scrape_interval: Duration,
    ready_timeout: Duration,
    backfill: Vec<String>,
    tls: Option<PathBuf>,
    basic_auth: Option<(String, String, String)>,
}

impl Builder {
    /// The `prometheus` binary to run (default: the one on PATH).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// A target to scrape at `/metrics` (job `exporter`).
    pub fn scrape(mut self, target: SocketAddr) -> Self {
        self.targets.push(target);
        self
    }

    pub fn scrape_interval(mut self, every: Duration) -> Self {
        self.scrape_interval = every;
        self
    }

    /// How long [`Builder::start`] waits for `/-/ready` (default 60 s: slow CI machines).
    pub fn ready_timeout(mut self, limit: Duration) -> Self {
        self.ready_timeout = limit;
        self
    }

    /// History to load before start (an OpenMetrics document ending in `# EOF`).
    pub fn backfill(mut self, openmetrics: impl Into<String>) -> Self {
        self.backfill.push(openmetrics.into());
        self
    }

    /// Serve HTTPS with `server.pem`/`server.key` from `dir` (certificate for 127.0.0.1, signed
    /// by `dir/ca.pem`), via Prometheus's `--web.config.file`.
    pub fn tls(mut self, dir: &Path) -> Self {
        self.tls = Some(dir.to_path_buf());
        self
    }

    /// Require HTTP basic auth; `bcrypt_hash` is the hash of `password` (Prometheus stores hashes).
    pub fn basic_auth(mut self, user: &str, password: &str, bcrypt_hash: &str) -> Self {
        self.basic_auth = Some((user.into(), password.into(), bcrypt_hash.into()));
        self
    }

    fn web_config(&self) -> Option<String> {
        if self.tls.is_none() && self.basic_auth.is_none() {
            return None;
        }
        let mut yaml = String::new();
        if let Some(dir) = &self.tls {
            yaml.push_str(&format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ));
        }
        if let Some((user, _, hash)) = &self.basic_auth {
            yaml.push_str(&format!("basic_auth_users:\n  {user}: '{hash}'\n"));
        }
        Some(yaml)
    }

    fn http_client(&self) -> Result<reqwest::Client, PromServerError> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some(dir) = &self.tls {
            let pem = std::fs::read(dir.join("ca.pem")).map_err(io("read ca.pem"))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| PromServerError::Http(format!("ca.pem: {e}")))?;
            http = http.add_root_certificate(ca);
        }
        http.build()
            .map_err(|e| PromServerError::Http(e.to_string()))
    }

    /// Starts Prometheus and waits until `/-/ready` answers 200.
    pub async fn start(self) -> Result<PromServer, PromServerError> {
        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => require("prometheus")?,
        };
        let dir = tempfile::tempdir().map_err(io("create a temporary directory"))?;
        let storage = dir.path().join("data");
        std::fs::create_dir_all(&storage).map_err(io("create the storage directory"))?;
        for doc in &self.backfill {
            backfill(&storage, doc)?;
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(self.scrape_interval, &self.targets))
            .map_err(io("write prometheus.yml"))?;
        let web_config = match self.web_config() {
            Some(yaml) => {
                let path = dir.path().join("web.yml");
                std::fs::write(&path, yaml).map_err(io("write web.yml"))?;
                Some(path)
            }
            None => None,
        };
        let http = self.http_client()?;
        let log = dir.path().join("prometheus.log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        const ATTEMPTS: u32 = 5;
        // The port is free when picked but another process may grab it before Prometheus binds:
        // retry with a new port when that is why it exited.
        for _ in 0..ATTEMPTS {
            let port = free_port().map_err(io("find a free loopback port"))?;
            let log_file = std::fs::File::create(&log).map_err(io("create prometheus.log"))?;
            let stdout = log_file.try_clone().map_err(io("open prometheus.log"))?;
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", LIFELINE, "sh"])
                .arg(dir.path())
                .arg(&binary);
            if let Some(web) = &web_config {
                cmd.arg(format!("--web.config.file={}", web.display()));
            }
            let mut child = cmd
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-lifecycle")
                .stdin(Stdio::piped())
                .stdout(stdout)
                .stderr(log_file)
                .spawn()
                .map_err(io(format!("start {}", binary.display())))?;
            let lifeline = child.stdin.take();
            let mut prom = PromServer {
                config: config.clone(),
                scrape_interval: self.scrape_interval,
                child: Some(child),
                lifeline,
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                storage: storage.clone(),
                version: None,
                log: log.clone(),
                _dir: None,
            };
            match prom
                .wait_ready(&http, self.ready_timeout, self.basic_auth.as_ref())
                .await
            {
                Ok(()) => {
                    prom.version = prom.fetch_version(&http, self.basic_auth.as_ref()).await;
                    prom._dir = Some(dir);
                    return Ok(prom);
                }
                Err(Exit::PortTaken) => continue,
                Err(Exit::Failed(err)) => return Err(err),
            }
        }
        Err(PromServerError::NoFreePort { attempts: ATTEMPTS })
    }
}

fn scrape_config(every: Duration, targets: &[SocketAddr]) -> String {
    let secs = every.as_secs_f64();
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: {secs}s\n  evaluation_interval: {secs}s\n\
         scrape_configs:\n  - job_name: exporter\n    scrape_interval: {secs}s\n    \
         scrape_timeout: {secs}s\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// A running Prometheus; killed on drop, so every exit path of its owner (errors, panics,
/// a cancelled future) stops it.
pub struct PromServer {
    config: PathBuf,
    scrape_interval: Duration,
    /// Prometheus itself (the shell `exec`ed it, see [`LIFELINE`]).
    child: Option<Child>,
    /// Write end of the watcher's pipe: a line lets it go, EOF (owner gone) makes it kill.
    lifeline: Option<ChildStdin>,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub url: String,
    pub port: u16,
    pub storage: PathBuf,
    /// The server's own version (`/api/v1/status/buildinfo`), e.g. `2.42.0+ds`.
    pub version: Option<String>,
    log: PathBuf,
    /// Owned once started, so the storage outlives the process.
    _dir: Option<tempfile::TempDir>,
}

/// Why a start attempt failed.
enum Exit {
    PortTaken,
    Failed(PromServerError),
}

impl PromServer {
    /// Defaults: scrape every second, wait at most 60 s for readiness.
    pub fn builder() -> Builder {
        Builder {
            binary: None,
            targets: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(60),
            backfill: Vec::new(),
            tls: None,
            basic_auth: None,
        }
    }

    /// Prometheus scraping `targets` every second.
    pub async fn scraping(targets: &[SocketAddr]) -> Result<PromServer, PromServerError> {
        targets
            .iter()
            .fold(Self::builder(), |b, t| b.scrape(*t))
            .start()
            .await
    }

    pub fn scrape_interval(&self) -> Duration {
        self.scrape_interval
    }

    /// `major.minor` of [`PromServer::version`], for one-line messages (`2.42`).
    pub fn short_version(&self) -> Option<String> {
        let v = self.version.as_deref()?;
        let core = v.split(['+', '-']).next().unwrap_or(v);
        Some(core.split('.').take(2).collect::<Vec<_>>().join("."))
    }

    /// What Prometheus logged so far (for error messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces the scrape targets and reloads the configuration (`POST /-/reload`), e.g. to add
    /// an exporter started after Prometheus. Plain-HTTP instances only.
    pub async fn set_targets(&self, targets: &[SocketAddr]) -> Result<(), PromServerError> {
        std::fs::write(&self.config, scrape_config(self.scrape_interval, targets))
            .map_err(io("rewrite prometheus.yml"))?;
        let r = reqwest::Client::new()
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .map_err(|e| PromServerError::Http(format!("POST /-/reload: {e}")))?;
        if !r.status().is_success() {
            return Err(PromServerError::Reload {
                status: r.status().to_string(),
                log: self.log(),
            });
        }
        Ok(())
    }

    /// Kills Prometheus now (tests use it to simulate an outage); the port then refuses
    /// connections. Idempotent.
    pub fn stop(&mut self) {
        // Let the watcher go before reaping Prometheus, so it never holds a pid that was reused.
        self.release_lifeline();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Tells the watcher (see [`LIFELINE`]) that Prometheus is being stopped or already exited:
    /// it exits without killing. A failed write means the watcher is already gone.
    fn release_lifeline(&mut self) {
        if let Some(mut pipe) = self.lifeline.take() {
            let _ = pipe.write_all(b"\n");
        }
    }

    /// Waits until every target has been scraped successfully `scrapes` times. Prometheus hands
    /// new targets to its scrape loops in batches up to 5 s apart, so the first scrape comes a
    /// few seconds after `/-/ready`; and `rate()` needs two samples. Plain-HTTP instances only.
    pub async fn wait_for_scrapes(
        &self,
        scrapes: u32,
        limit: Duration,
    ) -> Result<(), PromServerError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| PromServerError::Http(e.to_string()))?;
        let query = r#"min(sum_over_time(up{job="exporter"}[5m]))"#;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .map_err(|e| PromServerError::Http(e.to_string()))?;
        let deadline = Instant::now() + limit;
        loop {
            let seen = async {
                let body: serde_json::Value =
                    http.get(url.clone()).send().await.ok()?.json().await.ok()?;
                body.pointer("/data/result/0/value/1")?
                    .as_str()?
                    .parse::<f64>()
                    .ok()
            };
            if seen.await.is_some_and(|n| n >= f64::from(scrapes)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PromServerError::NoScrapes {
                    scrapes,
                    waited: limit,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
        auth: Option<&(String, String, String)>,
    ) -> Result<(), Exit> {
        let deadline = Instant::now() + limit;
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    self.release_lifeline();
                    let log = self.log();
                    if log.contains("address already in use") {
                        return Err(Exit::PortTaken);
                    }
                    return Err(Exit::Failed(PromServerError::Exited {
                        status: status.to_string(),
                        log,
                    }));
                }
            }
            let mut req = http.get(&ready);
            if let Some((user, password, _)) = auth {
                req = req.basic_auth(user, Some(password));
            }
            if let Ok(r) = req.send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(Exit::Failed(PromServerError::NotReady {
                    waited: limit,
                    log: self.log(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fetch_version(
        &self,
        http: &reqwest::Client,
        auth: Option<&(String, String, String)>,
    ) -> Option<String> {
        let mut req = http.get(format!("{}/api/v1/status/buildinfo", self.url));
        if let Some((user, password, _)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        let body: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
        Some(body.pointer("/data/version")?.as_str()?.to_string())
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_config_lists_targets_at_the_interval() {
        let t: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let yaml = scrape_config(Duration::from_secs(1), &[t]);
        assert!(yaml.contains("scrape_interval: 1s"), "{yaml}");
        assert!(yaml.contains("targets: ['127.0.0.1:9100']"), "{yaml}");
    }

    #[test]
    fn a_missing_binary_is_reported_with_the_fix() {
        let err = require("surely-not-a-binary-on-path").unwrap_err();
        assert!(
            err.to_string().contains("apt-get install prometheus"),
            "{err}"
        );
    }
}
