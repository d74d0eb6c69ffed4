//! `backout validate`: check policy files (and optionally the daemon settings) before deploying
//! them, listing every problem with file, key, line and fix. Exit 0 when all are valid, 1 if not.

use backout::policy;
use backout::settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (a directory's templates.toml holds shared templates).
    #[arg(default_value = "config/policies")]
    pub paths: Vec<PathBuf>,
    /// Also check this daemon settings file (with BACKOUT_* environment overrides applied);
    /// its `poll_interval` becomes the interval of policies that set none.
    #[arg(long)]
    pub settings: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    let mut opts = policy::LoadOptions::default();
    let mut notify = None;
    if let Some(path) = &args.settings {
        match Settings::load(path) {
            Ok(settings) => {
                opts.default_interval = settings.poll_interval;
                summary.push(format!("settings {}", path.display()));
                notify = Some(settings.notify);
            }
            Err(e) => problems.extend(e.problems().iter().cloned()),
        }
    }
    match policy::load_with(&args.paths, &opts) {
        Ok(policies) => {
            // With the settings, every channel a policy routes or escalates to must exist.
            if let Some(n) = &notify {
                problems.extend(n.check_routes(&policies));
            }
            let metrics: usize = policies.iter().map(|p| p.metrics.len()).sum();
            summary.insert(
                0,
                format!("{} policies ({metrics} metrics)", policies.len()),
            );
        }
        Err(e) => problems.extend(e.problems().iter().cloned()),
    }
    if problems.is_empty() {
        println!("ok: {}", summary.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("error: {p}");
    }
    println!("{} problem(s) found", problems.len());
    Ok(ExitCode::FAILURE)
}
