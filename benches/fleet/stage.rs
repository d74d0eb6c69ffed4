//! Staging the fleet: policies, the simulator and the release daemon as child processes.
//!
//! Both children start through [`backout::lifeline`], like Prometheus in `promserver`, so none
//! outlives the harness however it ends (an error, Ctrl-C, SIGKILL).

use anyhow::{bail, Context as _};
use backout::lifeline::{self, Tied};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `backout validate DIR` must accept the generated fleet: a benchmark of policies the daemon
/// would reject measures nothing.
pub fn validate(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("validate")
        .arg(dir)
        .output()
        .with_context(|| format!("running {} validate", bin.display()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let head: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
        bail!("`backout validate {}` failed:\n{head}", dir.display());
    }
    Ok(())
}

/// The simulator process, seeded with the fleet.
pub struct Sim {
    _child: Tied,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub kubeconfig: PathBuf,
    /// From spawn to "listening": seeding, then waiting for the deployment controller to settle.
    pub up_in: Duration,
    /// As the simulator reports it: (objects written, controller settled), seconds.
    pub seeded: Option<(f64, f64)>,
}

enum SimLine {
    Seeded(f64, f64),
    Url(String),
    Ready,
}

/// `seeded N policies (M objects) in W s; deployment controller settled after S s` -> (W, S).
fn parse_seeded(line: &str) -> Option<(f64, f64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |w: &str| -> Option<f64> {
        let i = words.iter().position(|x| *x == w)?;
        words.get(i + 1)?.parse().ok()
    };
    Some((after("in")?, after("after")?))
}

/// Copies the simulator's stdout to `log` (it prints a line per seeded policy, so it must be
/// drained) and reports the lines that mean it is up.
fn follow_sim_stdout(
    out: std::process::ChildStdout,
    mut log: std::fs::File,
    tx: tokio::sync::mpsc::UnboundedSender<SimLine>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if line.starts_with("seeded ") {
                if let Some((written, settled)) = parse_seeded(&line) {
                    let _ = tx.send(SimLine::Seeded(written, settled));
                }
            } else if let Some(url) = line.strip_prefix("backout simulator listening on ") {
                let _ = tx.send(SimLine::Url(url.trim().to_string()));
            } else if line.starts_with("stop with Ctrl-C") {
                let _ = tx.send(SimLine::Ready);
            }
        }
    });
}

/// Starts `backout sim --seed-policies DIR` and waits until it has seeded and listens.
pub async fn start_sim(
    bin: &Path,
    root: &Path,
    policies: &Path,
    rollout_delay: Duration,
    limit: Duration,
) -> anyhow::Result<Sim> {
    let port = backout::promserver::free_port()?;
    let kubeconfig = root.join("sim.kubeconfig");
    let dir = root.join("sim.d");
    std::fs::create_dir_all(&dir)?;
    let mut cmd = lifeline::command(&dir, bin);
    cmd.arg("sim")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--seed-policies")
        .arg(policies)
        .arg(format!(
            "--rollout-delay={}",
            humantime::format_duration(rollout_delay)
        ))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(root.join("sim.err"))?);
    let started = Instant::now();
    let mut child = Tied::spawn(cmd).context("starting `backout sim`")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = child.take_stdout().context("the simulator's stdout")?;
    follow_sim_stdout(out, std::fs::File::create(root.join("sim.log"))?, tx);
    let (mut url, mut seeded) = (None, None);
    let deadline = started + limit;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(SimLine::Seeded(w, s))) => seeded = Some((w, s)),
            Ok(Some(SimLine::Url(u))) => url = Some(u),
            Ok(Some(SimLine::Ready)) => break,
            Ok(None) | Err(_) => {}
        }
        if let Some(status) = child.try_wait() {
            bail!("the simulator exited ({status}); see {}", root.display());
        }
        if Instant::now() > deadline {
            bail!("the simulator did not finish seeding within {limit:?}");
        }
    }
    let url = url.context("the simulator printed no URL")?;
    Ok(Sim {
        _child: child,
        url,
        kubeconfig,
        up_in: started.elapsed(),
        seeded,
    })
}

/// Where the daemon finds everything.
pub struct DaemonConfig<'a> {
    pub prometheus: &'a str,
    pub policies: &'a Path,
    pub kubeconfig: &'a Path,
    pub admin_port: u16,
}

/// Writes a `backout.toml` for the benchmark: 10 s poll, JSON logs, no file watching (reloads are
/// measured by SIGHUP alone).
pub fn write_settings(root: &Path, c: &DaemonConfig<'_>) -> anyhow::Result<PathBuf> {
    let text = format!(
        r#"poll_interval = "10s"
policy_dir = "{policies}"
audit_dir = "{audit}"

[prometheus]
url = "{prometheus}"

[admin]
listen = "127.0.0.1:{port}"

[kubernetes]
kubeconfig = "{kubeconfig}"

[log]
format = "json"

[reload]
watch = false

# The benchmark measures how fast 20 canaries bad at once are mitigated; the fleet guard would
# hold all but 5 of them (as it should for a shared cause; tests/fleet_guard.rs covers that).
[fleet]
max_rollbacks = 0
"#,
        policies = c.policies.display(),
        audit = root.join("audit").display(),
        prometheus = c.prometheus,
        port = c.admin_port,
        kubeconfig = c.kubeconfig.display(),
    );
    let path = root.join("backout.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The daemon process.
pub struct Daemon {
    child: Tied,
    pub pid: u32,
    /// `http://127.0.0.1:PORT` (admin server: /metrics, /readyz).
    pub admin: String,
}

impl Daemon {
    /// Fails when the daemon has exited (a benchmark of a dead daemon measures nothing).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Some(status) => bail!("the daemon exited ({status})"),
            None => Ok(()),
        }
    }
}

/// Starts `backout run --config F` and waits for `/readyz`.
pub async fn start_daemon(
    bin: &Path,
    root: &Path,
    config: &Path,
    admin_port: u16,
    limit: Duration,
) -> anyhow::Result<Daemon> {
    let mut cmd = lifeline::command(root, bin);
    let log = std::fs::File::create(root.join("daemon.log"))?;
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = Tied::spawn(cmd).context("starting `backout run`")?;
    let pid = child.id().context("the daemon's pid")?;
    let mut daemon = Daemon {
        child,
        pid,
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + limit;
    loop {
        daemon
            .check_alive()
            .with_context(|| format!("see {}", root.join("daemon.log").display()))?;
        let ready = http.get(format!("{}/readyz", daemon.admin)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            bail!("the daemon was not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends SIGHUP (the daemon reloads every policy). `kill(1)`: the crate has no `unsafe`.
pub fn sighup(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("running kill -HUP")?;
    if !status.success() {
        bail!("kill -HUP {pid} failed ({status})");
    }
    Ok(())
}
