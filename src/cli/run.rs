//! `backout run`: the daemon.

use anyhow::Context as _;
use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::FileAudit;
use backout::clock::SystemClock;
use backout::daemon::{Context, Daemon, PolicyReload, PrometheusSampler};
use backout::notify::LogNotifier;
use backout::policy::{load_with, LoadOptions, Policy};
use backout::settings::Settings;
use backout::source::instrumented::Instrumented;
use backout::source::prometheus::PrometheusSource;
use backout::telemetry::{tracing_setup, AdminServer, Health, Metrics, Outcome, ResultLabels};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
pub struct Args {
    /// Daemon settings (`BACKOUT_*` environment variables override it).
    #[arg(long, default_value = "config/backout.toml")]
    config: PathBuf,
    /// Kubeconfig to use instead of the in-cluster / default configuration.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Decide and log, but change nothing in the cluster.
    #[arg(long)]
    dry_run: bool,
}

/// The client with a deadline on every request, the `[kubernetes]` rate limit, and its requests
/// counted in `metrics`.
async fn kube_client(
    path: Option<&PathBuf>,
    settings: &backout::settings::Kubernetes,
    metrics: &Metrics,
) -> anyhow::Result<kube::Client> {
    let limits = settings.limits();
    Ok(backout::kubeclient::connect(path.map(PathBuf::as_path), &limits, metrics).await?)
}

fn load_policies(settings: &Settings) -> Result<Vec<Policy>, backout::policy::PolicyError> {
    let opts = LoadOptions {
        default_interval: settings.poll_interval,
    };
    load_with(std::slice::from_ref(&settings.policy_dir), &opts)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&args.config)?;
    if args.dry_run {
        settings.dry_run = true;
    }
    let format = match settings.log.format {
        backout::settings::LogFormat::Json => tracing_setup::LogFormat::Json,
        backout::settings::LogFormat::Pretty => tracing_setup::LogFormat::Pretty,
    };
    let _guard = tracing_setup::init(format, settings.log.otlp_endpoint.as_deref())?;
    let metrics = Metrics::new();
    let health = Health::default();

    let policies = match load_policies(&settings) {
        Ok(p) => p,
        Err(err) => {
            metrics
                .policy_reloads
                .get_or_create(&ResultLabels {
                    result: Outcome::failure,
                })
                .inc();
            return Err(err.into());
        }
    };
    metrics
        .policy_reloads
        .get_or_create(&ResultLabels {
            result: Outcome::success,
        })
        .inc();
    let kubeconfig = args
        .kubeconfig
        .as_ref()
        .or(settings.kubernetes.kubeconfig.as_ref());
    let client = kube_client(kubeconfig, &settings.kubernetes, &metrics).await?;
    let source = PrometheusSource::new(&settings.prometheus)
        .with_context(|| format!("[prometheus] in {}", args.config.display()))?;
    let source = Instrumented::new(source, Arc::new(metrics.clone()));
    let clock = Arc::new(SystemClock);
    let actuator_config = ActuatorConfig {
        retry: backout::actuator::RetryPolicy {
            request_timeout: settings.kubernetes.request_timeout,
            ..Default::default()
        },
        ..Default::default()
    };
    let (ownership, elector) = super::ha::setup(&settings.ha, &client, clock.clone(), &metrics);
    let actuator = Actuator::new(client.clone(), clock.clone(), actuator_config)
        .with_fence(Arc::new(ownership.clone()))
        .with_events(kube::runtime::events::Reporter {
            controller: "backout".into(),
            instance: std::env::var("POD_NAME").ok(),
        });
    let client_for_guard = client.clone();
    let ctx = Context {
        client,
        sampler: Arc::new(PrometheusSampler {
            source: Arc::new(source),
            parallel: 8,
        }),
        actuator: Arc::new(actuator),
        audit: Arc::new(FileAudit::new(&settings.audit_dir)?),
        notifier: Arc::new(LogNotifier),
        metrics: metrics.clone(),
        health: health.clone(),
        clock,
        dry_run: settings.dry_run,
    };
    // Each service runs at its own `analysis.interval` (settings.poll_interval is the default).
    tracing::info!(
        services = policies.len(),
        dry_run = settings.dry_run,
        "backout starting"
    );
    let mut daemon =
        Daemon::with_actions(ctx, policies, settings.actions.clone()).with_ownership(ownership);
    if let Some(guard) = super::ha::fleet_guard(&settings, &client_for_guard) {
        daemon = daemon.with_fleet_guard(guard);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(elector) = elector {
        tokio::spawn(elector.run(stop_rx.clone()));
    }
    let admin = AdminServer::bind(settings.admin.listen, metrics.clone(), health.clone()).await?;
    tracing::info!(addr = %admin.addr, "admin server (/metrics, /healthz, /readyz)");
    let mut admin_stop = stop_rx.clone();
    tokio::spawn(admin.serve(async move {
        let _ = admin_stop.changed().await;
    }));

    // Reloads: SIGHUP, and file changes in the policy directory when `reload.watch` is on.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<PolicyReload>(4);
    let (kick_tx, mut kick_rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let mut hup = signal(SignalKind::hangup())?;
    let hup_kick = kick_tx.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = hup_kick.send("SIGHUP").await;
        }
    });
    let _watcher = if settings.reload.watch {
        let kick = kick_tx.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = kick.try_send("file change");
            }
        })?;
        notify::Watcher::watch(
            &mut w,
            &settings.policy_dir,
            notify::RecursiveMode::NonRecursive,
        )?;
        Some(w)
    } else {
        None
    };
    let reload_settings = settings.clone();
    let reload_metrics = metrics.clone();
    tokio::spawn(async move {
        while let Some(why) = kick_rx.recv().await {
            // Editors write in several steps: let the directory settle.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while kick_rx.try_recv().is_ok() {}
            let requested = tokio::time::Instant::now();
            match load_policies(&reload_settings) {
                Ok(p) => {
                    reload_metrics
                        .policy_reloads
                        .get_or_create(&ResultLabels {
                            result: Outcome::success,
                        })
                        .inc();
                    tracing::info!(trigger = why, "policy reload accepted");
                    let _ = reload_tx
                        .send(PolicyReload {
                            policies: p,
                            requested,
                        })
                        .await;
                }
                Err(err) => {
                    reload_metrics
                        .policy_reloads
                        .get_or_create(&ResultLabels {
                            result: Outcome::failure,
                        })
                        .inc();
                    tracing::error!(trigger = why, error = %err, "policy reload REJECTED; the previous policies keep running");
                }
            }
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            "shutdown requested: finishing the current cycle (an in-flight rollback completes)"
        );
        let _ = stop_tx.send(true);
    });
    daemon.run(stop_rx, reload_rx).await;
    Ok(ExitCode::SUCCESS)
}
