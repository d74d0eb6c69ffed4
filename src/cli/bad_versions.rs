//! `backout bad-versions list | forget IMAGE`: the versions completed rollbacks took out (the
//! `backout-bad-versions` ConfigMap in backout's namespace), which the daemon rolls back at once
//! when they are rolled out again.

use anyhow::Context as _;
use backout::audit::format_time;
use backout::daemon::bad_versions::BadVersions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// backout's namespace (where the ConfigMap is); default: $POD_NAMESPACE, else `default`.
    #[arg(long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every recorded bad version: template hash, images, when, why, incident.
    List,
    /// Forget every version with this image (or template hash): it may be rolled out again.
    Forget { image: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let namespace = args
        .namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let limits = backout::kubeclient::ClientLimits::default();
    let metrics = backout::telemetry::Metrics::new();
    let client = backout::kubeclient::connect(args.kubeconfig.as_deref(), &limits, &metrics)
        .await
        .context("connecting to Kubernetes")?;
    let store = BadVersions::new(client, &namespace);
    match args.command {
        Command::List => {
            let entries = store.refresh().await?;
            if entries.is_empty() {
                println!(
                    "no bad versions recorded in {namespace}/{}",
                    backout::daemon::bad_versions::CONFIG_MAP
                );
            }
            for (hash, v) in entries {
                println!(
                    "{hash}  {}  {}  {}  incident {}  {}",
                    v.images.join(","),
                    v.service,
                    format_time(v.at),
                    v.incident,
                    v.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Forget { image } => {
            let n = store.forget(&image).await?;
            if n == 0 {
                eprintln!("no bad version with image or template {image:?}");
                return Ok(ExitCode::from(1));
            }
            println!("forgot {n} bad version(s) with {image}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
