//! A real Prometheus for tests: Debian's `prometheus` binary on a free loopback port, scraping
//! given targets every second, with a throw-away storage directory (optionally backfilled with
//! `promtool`). Killed when dropped.
//!
//! Use from any integration test with `mod support;` and `support::prometheus::Prometheus`.
//! When the binaries are missing the test FAILS with a hint to run `just deps`: a skipped
//! end-to-end test would look like a passing one.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds `name` on PATH or panics with the fix.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; this test needs a real Prometheus. \
                 Run `just deps` (it runs `apt-get install -y prometheus`); CI installs it."
            )
        })
}

/// A loopback port that was free a moment ago (bind to :0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Writes an OpenMetrics document and turns it into TSDB blocks inside `storage`, so Prometheus
/// starts with that history (for backtests).
pub fn backfill(storage: &Path, openmetrics: &str) {
    let promtool = require_binary("promtool");
    std::fs::create_dir_all(storage).expect("create storage dir");
    let input = storage.with_extension(format!("{}.om", std::process::id()));
    std::fs::write(&input, openmetrics).expect("write OpenMetrics file");
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&input)
        .arg(storage)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool backfill failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How to start Prometheus.
pub struct Builder {
    targets: Vec<SocketAddr>,
    scrape_interval: Duration,
    backfill: Vec<String>,
    tls: Option<PathBuf>,
    basic_auth: Option<(String, String, String)>,
}

impl Builder {
    /// A target to scrape at `/metrics` (job `exporter`).
    pub fn scrape(mut self, target: SocketAddr) -> Self {
        self.targets.push(target);
        self
    }

    pub fn scrape_interval(mut self, every: Duration) -> Self {
        self.scrape_interval = every;
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

    /// Starts Prometheus and waits until `/-/ready` answers 200 (at most 60 s).
    pub async fn start(self) -> Prometheus {
        let binary = require_binary("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = dir.path().join("data");
        std::fs::create_dir_all(&storage).expect("storage dir");
        for doc in &self.backfill {
            backfill(&storage, doc);
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, self.config()).expect("write prometheus.yml");
        let web_config = self.web_config().map(|yaml| {
            let path = dir.path().join("web.yml");
            std::fs::write(&path, yaml).expect("write web.yml");
            path
        });
        let log = dir.path().join("prometheus.log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        // The port is free when picked but another test may grab it before Prometheus binds:
        // retry with a new port when that is why it exited.
        for _attempt in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(&binary);
            if let Some(web) = &web_config {
                cmd.arg(format!("--web.config.file={}", web.display()));
            }
            let child = cmd
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-lifecycle")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .spawn()
                .expect("start prometheus");
            let mut prom = Prometheus {
                config: config.clone(),
                scrape_interval: self.scrape_interval,
                child: Some(child),
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                storage: storage.clone(),
                log: log.clone(),
                _dir: None,
            };
            match prom
                .wait_ready(
                    Duration::from_secs(60),
                    self.tls.as_deref(),
                    self.basic_auth.as_ref(),
                )
                .await
            {
                Ok(()) => {
                    prom._dir = Some(dir);
                    return prom;
                }
                Err(Exit::PortTaken) => continue,
                Err(Exit::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("prometheus could not bind a free loopback port in 5 attempts")
    }

    fn config(&self) -> String {
        scrape_config(self.scrape_interval, &self.targets)
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

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    config: PathBuf,
    scrape_interval: Duration,
    child: Option<Child>,
    pub url: String,
    pub port: u16,
    pub storage: PathBuf,
    log: PathBuf,
    /// Owned once started, so the storage outlives the process.
    _dir: Option<tempfile::TempDir>,
}

/// Why a start attempt failed.
enum Exit {
    PortTaken,
    Failed(String),
}

impl Prometheus {
    pub fn builder() -> Builder {
        Builder {
            targets: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            backfill: Vec::new(),
            tls: None,
            basic_auth: None,
        }
    }

    /// Prometheus scraping `targets` every second.
    pub async fn scraping(targets: &[SocketAddr]) -> Prometheus {
        targets
            .iter()
            .fold(Self::builder(), |b, t| b.scrape(*t))
            .start()
            .await
    }

    /// What Prometheus logged so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces the scrape targets and reloads the configuration (`POST /-/reload`), e.g. to add
    /// an exporter started after Prometheus. Plain-HTTP instances only.
    pub async fn set_targets(&self, targets: &[SocketAddr]) {
        std::fs::write(&self.config, scrape_config(self.scrape_interval, targets))
            .expect("rewrite prometheus.yml");
        let r = reqwest::Client::new()
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .expect("POST /-/reload");
        assert!(
            r.status().is_success(),
            "reload failed: {}\n{}",
            r.status(),
            self.log()
        );
    }

    /// Kills Prometheus now (to test an outage); the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_ready(
        &mut self,
        limit: Duration,
        tls: Option<&Path>,
        auth: Option<&(String, String, String)>,
    ) -> Result<(), Exit> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some(dir) = tls {
            let pem = std::fs::read(dir.join("ca.pem")).expect("read ca.pem");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca.pem"));
        }
        let http = http.build().expect("http client");
        let deadline = Instant::now() + limit;
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = self.log();
                    if log.contains("address already in use") {
                        return Err(Exit::PortTaken);
                    }
                    return Err(Exit::Failed(format!(
                        "prometheus exited early ({status}):\n{log}"
                    )));
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
                return Err(Exit::Failed(format!(
                    "prometheus not ready after {limit:?}:\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, or panics after `limit` with the last
/// state it saw. Scrapes happen on Prometheus's schedule, so tests wait for a condition instead
/// of sleeping a guessed amount.
pub async fn eventually<T, S, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S>>,
    S: std::fmt::Debug,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
