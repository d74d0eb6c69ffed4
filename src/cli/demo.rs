//! `backout demo`: the embedded default: a simulated cluster and workload, a bad canary caught and
//! rolled back. Exits 0 only when the rollback happened as expected, so it doubles as a smoke test.

use backout::decision::Health;
use backout::demo::{self, DemoOptions, PrometheusMode, Update};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Run faster than real time (simulated clock; the decisions are the same).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seconds of healthy canary before it turns bad.
    #[arg(long, default_value_t = 20)]
    healthy_secs: u64,
    /// Keep the audit trail and incident report here (default: a fresh temp directory).
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Metrics through a real Prometheus (started on a loopback port, scraping every second):
    /// `auto` when `prometheus` is on PATH, `on` to require it, `off` for the direct feed.
    #[arg(long, value_enum, default_value_t = Prom::Auto)]
    prometheus: Prom,
    /// Serve the status API and page (and /metrics) on this address while the demo runs, e.g.
    /// `--admin 127.0.0.1:9090`, then `backout status` or a browser.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Prom {
    Auto,
    On,
    Off,
}

impl From<Prom> for PrometheusMode {
    fn from(p: Prom) -> Self {
        match p {
            Prom::Auto => PrometheusMode::Auto,
            Prom::On => PrometheusMode::On,
            Prom::Off => PrometheusMode::Off,
        }
    }
}

/// Prints the demo's progress. On a terminal each poll's block replaces the previous one (cursor
/// up, clear to the end of the screen), so the values, levels and alert timers read like a
/// dashboard; elsewhere (logs, CI, pipes) one line per poll, which keeps the history.
struct Printer {
    tty: bool,
    /// The block currently on screen (terminal only).
    block: Vec<String>,
}

impl Printer {
    fn update(&mut self, u: Update) {
        if !self.tty {
            println!("{}", u.into_line());
            return;
        }
        self.erase();
        match u {
            Update::Poll(p) => {
                // Head line (verdict), column titles, one row per metric.
                let health = [p.verdict, None]
                    .into_iter()
                    .chain(p.metrics.iter().map(|m| Some(m.health)));
                self.block = p.block().iter().zip(health).map(paint).collect();
            }
            Update::Line(l) => {
                let h = l.contains("CRITICAL").then_some(Health::Critical);
                println!("{}", paint((&l, h)));
            }
        }
        for l in &self.block {
            println!("{l}");
        }
    }

    fn erase(&self) {
        if !self.block.is_empty() {
            print!("\x1b[{}A\x1b[J", self.block.len());
        }
    }
}

/// Red for critical, yellow for warning (terminal only).
fn paint((line, health): (&String, Option<Health>)) -> String {
    match health {
        Some(Health::Critical) => format!("\x1b[31m{line}\x1b[0m"),
        Some(Health::Warning) => format!("\x1b[33m{line}\x1b[0m"),
        _ => line.clone(),
    }
}

/// Resolves on Ctrl-C or SIGTERM. The demo's future is dropped then, which kills the Prometheus
/// it started (its guard's Drop) instead of leaving it running after we exit.
async fn interrupted() {
    // A handler that cannot be installed must not look like a signal: wait forever instead.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let (bold, red, green, reset) = if tty {
        ("\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    println!("{bold}backout demo{reset}: a canary goes bad; backout catches it and rolls it back.");
    let opts = DemoOptions {
        speed: args.speed,
        healthy_for: Duration::from_secs(args.healthy_secs),
        audit_dir: args.audit_dir,
        prometheus: args.prometheus.into(),
        admin: args.admin,
        ..Default::default()
    };
    let mut printer = Printer {
        tty,
        block: Vec::new(),
    };
    let mut report = |u: Update| printer.update(u);
    let result = tokio::select! {
        r = demo::run_with(opts, &mut report) => r?,
        _ = interrupted() => {
            println!("\ninterrupted");
            return Ok(ExitCode::from(130));
        }
    };
    println!(
        "\n{bold}Decision timeline{reset} (audit trail {}):",
        result.audit_dir.join("audit.jsonl").display()
    );
    for rec in &result.timeline {
        println!(
            "  {}  {:?}: {}",
            backout::audit::format_time(rec.at),
            rec.kind,
            rec.message
        );
    }
    println!(
        "incident report(s): {}",
        result.audit_dir.join("incidents").display()
    );
    if result.success() {
        println!(
            "\n{green}{bold}PASS{reset}: bad canary rolled back {:.0} s after it turned bad; canary traffic {}%, canary replicas {}.",
            result.detection_seconds.unwrap_or_default(),
            result.canary_weight.unwrap_or(-1),
            result.canary_replicas.unwrap_or(-1)
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\n{red}{bold}FAIL{reset}: rolled back: {}, false rollback: {}, canary traffic {:?}%, canary replicas {:?}.",
            result.rolled_back, result.false_rollback, result.canary_weight, result.canary_replicas
        );
        Ok(ExitCode::FAILURE)
    }
}
