//! `backout run`: the daemon.

use anyhow::Context as _;
use backout::actuator::{Actuator, ActuatorConfig};
use backout::audit::FileAudit;
use backout::clock::SystemClock;
use backout::daemon::{Context, Daemon, PolicyReload, PrometheusSampler};
use backout::notify::dispatch::Recorders;
use backout::notify::{Dispatcher, LogNotifier, Notifier};
use backout::policy::{load_cached, LoadCache, LoadOptions, Policy};
use backout::settings::Settings;
use backout::source::instrumented::Instrumented;
use backout::source::prometheus::PrometheusSource;
use backout::status::StatusBoard;
use backout::telemetry::{tracing_setup, AdminServer, Health, Metrics, Outcome, ResultLabels};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
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

/// Loads the policies through the daemon's one cache (`policy::cache`): files unchanged since
/// the last load are not parsed again. A policy routing notices to a channel backout.toml does
/// not define is rejected like any other mistake in it.
fn load_policies(
    settings: &Settings,
    cache: &Mutex<LoadCache>,
) -> Result<Vec<Arc<Policy>>, backout::policy::PolicyError> {
    let opts = LoadOptions {
        default_interval: settings.poll_interval,
    };
    // A loader that panicked left the cache as it was before that load: still valid.
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let policies = load_cached(
        std::slice::from_ref(&settings.policy_dir),
        &opts,
        &mut cache,
    )?;
    let problems = settings.notify.check_routes(policies.iter().map(|p| &**p));
    if problems.is_empty() {
        Ok(policies)
    } else {
        Err(backout::policy::PolicyError::Invalid { problems })
    }
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
    let cache = Arc::new(Mutex::new(LoadCache::new()));
    let policies = load_counted(&settings, &metrics, &cache)?;
    let ownership = super::ha::ownership(&settings.ha);
    let ctx = context(&args, &settings, &metrics, &health, &ownership).await?;
    let status = ctx.status.clone();
    let elector = super::ha::elector(&settings.ha, &ctx, &ownership);
    let guard = super::ha::fleet_guard(&settings, &ctx.client);
    // Each service runs at its own `analysis.interval` (settings.poll_interval is the default).
    tracing::info!(
        services = policies.len(),
        dry_run = settings.dry_run,
        "backout starting"
    );
    let mut daemon =
        Daemon::with_actions(ctx, policies, settings.actions.clone()).with_ownership(ownership);
    if let Some(guard) = guard {
        daemon = daemon.with_fleet_guard(guard);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(elector) = elector {
        tokio::spawn(elector.run(stop_rx.clone()));
    }
    serve_admin(&settings, &metrics, &health, &status, stop_rx.clone()).await?;
    if let Some(store) = daemon.ctx.bad_versions.clone() {
        tokio::spawn(refresh_bad_versions(store, stop_rx.clone()));
    }
    let (reload_rx, _watcher) = spawn_reloads(&settings, &metrics, cache)?;
    spawn_shutdown(stop_tx)?;
    daemon.run(stop_rx, reload_rx).await;
    Ok(ExitCode::SUCCESS)
}

/// Loads the policies, counting the attempt in `backout_policy_reloads_total`.
fn load_counted(
    settings: &Settings,
    metrics: &Metrics,
    cache: &Mutex<LoadCache>,
) -> Result<Vec<Arc<Policy>>, backout::policy::PolicyError> {
    let loaded = load_policies(settings, cache);
    let result = if loaded.is_ok() {
        Outcome::success
    } else {
        Outcome::failure
    };
    metrics
        .policy_reloads
        .get_or_create(&ResultLabels { result })
        .inc();
    loaded
}

/// The daemon's context: the Kubernetes client, Prometheus (its queries counted in `metrics`),
/// the actuator recording Events as `backout`, the audit trail under `audit_dir`.
async fn context(
    args: &Args,
    settings: &Settings,
    metrics: &Metrics,
    health: &Health,
    ownership: &backout::ha::Ownership,
) -> anyhow::Result<Context> {
    let kubeconfig = args
        .kubeconfig
        .as_ref()
        .or(settings.kubernetes.kubeconfig.as_ref());
    let client = kube_client(kubeconfig, &settings.kubernetes, metrics).await?;
    let source = PrometheusSource::new(&settings.prometheus)
        .with_context(|| format!("[prometheus] in {}", args.config.display()))?;
    let source = Instrumented::new(source, Arc::new(metrics.clone()));
    let sampler = Arc::new(PrometheusSampler {
        source: Arc::new(source),
        parallel: 8,
    });
    let actuator_config = ActuatorConfig {
        retry: backout::actuator::RetryPolicy {
            request_timeout: settings.kubernetes.request_timeout,
            ..Default::default()
        },
        ..Default::default()
    };
    let actuator = Actuator::new(client.clone(), Arc::new(SystemClock), actuator_config)
        .with_fence(Arc::new(ownership.clone()))
        .with_events(kube::runtime::events::Reporter {
            controller: "backout".into(),
            instance: std::env::var("POD_NAME").ok(),
        });
    let audit = Arc::new(FileAudit::new(&settings.audit_dir)?);
    // Bad versions live next to the Leases and the fleet guard: backout's own namespace.
    let own_namespace = super::ha::config(&settings.ha).namespace;
    let notifier = notifier(settings, metrics, audit.clone())
        .with_context(|| format!("[notify] in {}", args.config.display()))?;
    Ok(Context::builder(client, sampler, Arc::new(actuator), audit)
        .notifier(notifier)
        .bad_versions(&own_namespace)
        .metrics(metrics.clone())
        .health(health.clone())
        .status(StatusBoard::new(replica_name()))
        .dry_run(settings.dry_run)
        .build())
}

/// This replica's name for the status API: the pod (`POD_NAME`), else the host name.
fn replica_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "backout".into())
}

/// Keeps the daemon's copy of the bad versions in step with the ConfigMap (another replica's
/// records, `backout bad-versions forget`), every 30 s until `stop`.
async fn refresh_bad_versions(
    store: backout::daemon::bad_versions::BadVersions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(err) = store.refresh().await {
            tracing::warn!(error = %err, "cannot read the bad versions; keeping the last copy");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The `[notify]` channels, each with its delivery task; only the log without channels.
fn notifier(
    settings: &Settings,
    metrics: &Metrics,
    audit: Arc<FileAudit>,
) -> anyhow::Result<Arc<dyn Notifier>> {
    if settings.notify.channels.is_empty() {
        return Ok(Arc::new(LogNotifier));
    }
    let recorders = Recorders {
        audit,
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
    };
    let names: Vec<&String> = settings.notify.channels.keys().collect();
    tracing::info!(channels = ?names, default = ?settings.notify.default, "notification channels");
    Ok(Arc::new(Dispatcher::start(
        settings.notify.clone(),
        recorders,
    )?))
}

/// `/metrics`, `/healthz`, `/readyz` and the status API and page until `stop`.
async fn serve_admin(
    settings: &Settings,
    metrics: &Metrics,
    health: &Health,
    status: &StatusBoard,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let admin = AdminServer::bind(settings.admin.listen, metrics.clone(), health.clone())
        .await?
        .with_routes(backout::status::api::router(status.clone()))
        .with_routes(backout::judge::api::router(status.clone()));
    tracing::info!(addr = %admin.addr, "admin server (/metrics, /healthz, /readyz, /api/v1/services, /api/v1/analysis, /api/v1/flagger, /)");
    tokio::spawn(admin.serve(async move {
        let _ = stop.changed().await;
    }));
    Ok(())
}

/// Reloads: SIGHUP, and file changes in the policy directory when `reload.watch` is on. Returns
/// the reloads for the loop and the file watcher, which watches only while it is kept.
fn spawn_reloads(
    settings: &Settings,
    metrics: &Metrics,
    cache: Arc<Mutex<LoadCache>>,
) -> anyhow::Result<(
    tokio::sync::mpsc::Receiver<PolicyReload>,
    Option<notify::RecommendedWatcher>,
)> {
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<PolicyReload>(4);
    let (kick_tx, kick_rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let mut hup = signal(SignalKind::hangup())?;
    let hup_kick = kick_tx.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = hup_kick.send("SIGHUP").await;
        }
    });
    let watcher = if settings.reload.watch {
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
    tokio::spawn(reload_on_kicks(
        settings.clone(),
        metrics.clone(),
        cache,
        kick_rx,
        reload_tx,
    ));
    Ok((reload_rx, watcher))
}

/// Reloads the policies after each kick (once the directory settled) and hands an accepted set
/// to the loop; a rejected set is logged and the previous policies keep running.
async fn reload_on_kicks(
    settings: Settings,
    metrics: Metrics,
    cache: Arc<Mutex<LoadCache>>,
    mut kicks: tokio::sync::mpsc::Receiver<&'static str>,
    reloads: tokio::sync::mpsc::Sender<PolicyReload>,
) {
    while let Some(why) = kicks.recv().await {
        // Editors write in several steps: let the directory settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while kicks.try_recv().is_ok() {}
        let requested = tokio::time::Instant::now();
        // Off the async workers: parsing 10,000 files takes seconds of CPU, and a worker blocked
        // that long delays every evaluation scheduled on it.
        let (s, m, c) = (settings.clone(), metrics.clone(), cache.clone());
        let loaded = match tokio::task::spawn_blocking(move || load_counted(&s, &m, &c)).await {
            Ok(loaded) => loaded.map_err(anyhow::Error::from),
            Err(err) => Err(anyhow::anyhow!("the policy loader panicked: {err}")),
        };
        match loaded {
            Ok(policies) => {
                tracing::info!(trigger = why, "policy reload accepted");
                let _ = reloads
                    .send(PolicyReload {
                        policies,
                        requested,
                    })
                    .await;
            }
            Err(err) => {
                tracing::error!(trigger = why, error = %err, "policy reload REJECTED; the previous policies keep running");
            }
        }
    }
}

/// SIGTERM or Ctrl-C stops the loop (the current cycle finishes; rollbacks get their grace).
fn spawn_shutdown(stop: tokio::sync::watch::Sender<bool>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            "shutdown requested: finishing the current cycle (an in-flight rollback completes)"
        );
        let _ = stop.send(true);
    });
    Ok(())
}
