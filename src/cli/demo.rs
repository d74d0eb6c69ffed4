//! `backout demo`: the embedded default: a simulated cluster and workload, a bad canary caught and
//! rolled back. Exits 0 only when the rollback happened as expected, so it doubles as a smoke test.

use backout::demo::{self, DemoOptions};
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
        ..Default::default()
    };
    let mut say = |line: String| {
        let line = if tty && line.contains("CRITICAL") {
            format!("{red}{line}{reset}")
        } else {
            line
        };
        println!("{line}");
    };
    let result = demo::run(opts, &mut say).await?;
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
