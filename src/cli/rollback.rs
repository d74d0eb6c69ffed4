//! `backout rollback`: the daemon's rollback plan, triggered by hand (replaces the runbooks'
//! `scripts/rollback.sh`). Same backups, progress record, Events and report as the daemon.

use anyhow::Context;
use backout::actuator::{
    progress, Actuator, ActuatorConfig, RollbackRequest, StepOutcome, Trigger,
};
use backout::clock::SystemClock;
use backout::policy::Policy;
use kube::runtime::events::Reporter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file naming the Deployments and the VirtualService route.
    #[arg(long)]
    pub policy: PathBuf,
    /// Stable revision to undo to. Default: the stable's recorded last known good revision
    /// (annotation backout.dev/last-known-good-revision); without either, the stable is left as is.
    #[arg(long)]
    pub to_revision: Option<i64>,
    /// Change nothing; print what each step would change (server-side dry run where supported).
    #[arg(long)]
    pub dry_run: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Restore every object from this backup ConfigMap instead of rolling back.
    #[arg(long, value_name = "CONFIGMAP")]
    pub restore: Option<String>,
    /// Why (recorded in Events, the backup and the report).
    #[arg(long, default_value = "manual rollback (backout rollback)")]
    pub reason: String,
    /// Also write the JSON report to DIR/rollback-<id>-<start ms>.json (audit trail).
    #[arg(long, value_name = "DIR")]
    pub audit_dir: Option<PathBuf>,
    /// Istio API version serving VirtualServices.
    #[arg(long, default_value = "v1")]
    pub istio_version: String,
}

fn read_policy(path: &PathBuf) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    let mut policy: Policy = toml::from_str(&text).with_context(|| {
        format!(
            "{}: not a valid policy (see docs/actuator.md for the keys rollback needs)",
            path.display()
        )
    })?;
    policy.source = path.clone();
    Ok(policy)
}

/// The same client as the daemon's (deadline, rate limit) with the default `[kubernetes]`
/// limits; its request metrics are not exported by a one-shot command.
async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let limits = backout::kubeclient::ClientLimits::default();
    let metrics = backout::telemetry::Metrics::new();
    Ok(backout::kubeclient::connect(kubeconfig.map(PathBuf::as_path), &limits, &metrics).await?)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = read_policy(&args.policy)?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let config = ActuatorConfig {
        istio_version: args.istio_version.clone(),
        ..ActuatorConfig::default()
    };
    let actuator =
        Actuator::new(client.clone(), Arc::new(SystemClock), config).with_events(Reporter {
            controller: "backout".into(),
            instance: std::env::var("HOSTNAME").ok(),
        });

    if let Some(backup) = &args.restore {
        let restored = actuator.restore(&policy.namespace, backup).await?;
        for r in restored {
            eprintln!("restored {r}");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let last_known_good = match args.to_revision {
        Some(n) => Some(n),
        None => {
            let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(client, &policy.namespace);
            let stable = deployments
                .get(&policy.deployments.stable)
                .await
                .with_context(|| {
                    format!(
                        "{}: deployments.stable = {:?} not found in namespace {:?}",
                        policy.source.display(),
                        policy.deployments.stable,
                        policy.namespace
                    )
                })?;
            stable
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(progress::LAST_KNOWN_GOOD))
                .and_then(|v| v.parse().ok())
        }
    };
    let report = actuator
        .rollback(
            &policy,
            RollbackRequest {
                last_known_good,
                trigger: Trigger::manual(&args.reason),
                dry_run: args.dry_run,
                gate: None,
            },
        )
        .await?;
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(dir) = &args.audit_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--audit-dir {}: cannot create it", dir.display()))?;
        let path = dir.join(format!(
            "rollback-{}-{}.json",
            report.rollback_id, report.started_at
        ));
        std::fs::write(&path, &json)
            .with_context(|| format!("--audit-dir: cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    for step in &report.steps {
        eprintln!("{:<36} {:?}: {}", step.step, step.outcome, step.detail);
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "rollback {} of {}: {:?} (backup ConfigMap {})",
        report.rollback_id, report.service, report.outcome, report.backup
    );
    // Failures of a real run come back as errors (exit code 2) after the failed state was
    // recorded; a dry run whose writes the server rejected exits 1.
    if report
        .steps
        .iter()
        .any(|s| s.outcome == StepOutcome::Failed)
    {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
