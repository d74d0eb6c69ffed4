//! Daemon settings: `config/backout.toml`, overridden by `BACKOUT_*` environment variables.
//!
//! Precedence is defaults < file < environment, so a container image can ship the file and an
//! operator can still flip one value (`BACKOUT_DRY_RUN=true`) without editing it. Nested keys use
//! `__` in the variable name: `BACKOUT_PROMETHEUS__URL` sets `[prometheus] url` (a single `_` is
//! part of a key name, e.g. `BACKOUT_POLICY_DIR` sets `policy_dir`). Every `BACKOUT_*` variable is
//! read as a setting, so a misspelt one is an error rather than silently ignored.
//!
//! Like policies, every problem is reported at once with its file, key, line (or variable) and fix.

use crate::diagnostic::schema::{check, Field, Shape};
use crate::diagnostic::spans::{self, SpanMap};
use crate::diagnostic::{env_var, from_figment, render, Problem};
use crate::source::config::{self, PrometheusConfig};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod env;
mod kubernetes;
pub use env::check_env;
pub use kubernetes::Kubernetes;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "BACKOUT_";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{} problem(s) in daemon settings:\n{}", problems.len(), render(problems))]
    Invalid { problems: Vec<Problem> },
}

impl SettingsError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            SettingsError::Invalid { problems } => problems,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How to reach Prometheus; the one type the source is built from.
    pub prometheus: PrometheusConfig,
    /// Evaluation interval for policies that do not set `analysis.interval`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Directory of policy files (one per service, plus templates.toml).
    pub policy_dir: PathBuf,
    /// Decide and log, but never touch Kubernetes: for trying backout on a live cluster safely.
    pub dry_run: bool,
    pub admin: Admin,
    pub kubernetes: Kubernetes,
    /// Where the append-only audit log of decisions and actions is written.
    pub audit_dir: PathBuf,
    pub log: Log,
    pub reload: Reload,
    pub actions: Actions,
    pub ha: Ha,
    pub fleet: Fleet,
    /// Notification channels, the default route and templates (docs/notifications.md).
    pub notify: crate::notify::NotifyConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin server: /metrics, /healthz, /readyz.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    #[default]
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// OTLP/gRPC endpoint for traces; unset disables tracing export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reload {
    /// Watch the policy directory and reload valid changes without a restart.
    pub watch: bool,
}

/// How rollbacks and other writes run: off the evaluation path, bounded, retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    /// Actuator runs at once across all services (one per service at most). A config push that
    /// breaks many canaries is mitigated in parallel, without stampeding the API server.
    pub max_concurrent: usize,
    /// Wait before retrying a failed rollback; it doubles per attempt up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

/// The fleet guard: a limit on automatic rollbacks across all services and replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// Automatic rollbacks allowed per window; more are held (0 turns the guard off).
    pub max_rollbacks: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Namespace of the counting ConfigMap; unset: the `[ha]` namespace (`$POD_NAMESPACE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            max_rollbacks: 5,
            per: Duration::from_secs(600),
            namespace: None,
        }
    }
}

/// High availability: leader election, or shards, on Kubernetes Leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ha {
    /// Off: this replica acts for every service (one replica only).
    pub enabled: bool,
    /// Namespace of the Leases; unset: `$POD_NAMESPACE`, else `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Lease name prefix (`<name>-leader`, `<name>-shard-<k>`, `<name>-member-<identity>`).
    pub lease_name: String,
    /// This replica's identity; unset: `$POD_NAME`, else the host name and process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How long others wait after the last renewal they saw before taking a Lease over.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// A holder stops acting this long after its last successful renewal (fencing): shorter
    /// than `lease_duration`, the difference covers clock drift and a slow write.
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// How often Leases are renewed and free ones looked for.
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
    /// 1: leader election. More: services are split into this many shards, each a Lease.
    pub shards: u32,
}

impl Default for Ha {
    fn default() -> Self {
        Ha {
            enabled: false,
            namespace: None,
            lease_name: "backout".into(),
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            shards: 1,
        }
    }
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            max_concurrent: 8,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prometheus: PrometheusConfig::default(),
            poll_interval: Duration::from_secs(10),
            policy_dir: PathBuf::from("config/policies"),
            dry_run: false,
            admin: Admin::default(),
            kubernetes: Kubernetes::default(),
            audit_dir: PathBuf::from("audit"),
            log: Log::default(),
            reload: Reload::default(),
            actions: Actions::default(),
            ha: Ha::default(),
            fleet: Fleet::default(),
            notify: crate::notify::NotifyConfig::default(),
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

impl Default for Reload {
    fn default() -> Self {
        Reload { watch: true }
    }
}

const SCHEMA: &[Field] = &[
    Field::opt("prometheus", Shape::Table(config::FIELDS)),
    Field::opt("poll_interval", Shape::Duration),
    Field::opt("policy_dir", Shape::Str),
    Field::opt("dry_run", Shape::Bool),
    Field::opt("admin", Shape::Table(&[Field::opt("listen", Shape::Str)])),
    Field::opt("kubernetes", Shape::Table(kubernetes::FIELDS)),
    Field::opt("audit_dir", Shape::Str),
    Field::opt(
        "log",
        Shape::Table(&[
            Field::opt("format", Shape::Enum(&["json", "pretty"])),
            Field::opt("otlp_endpoint", Shape::Str),
        ]),
    ),
    Field::opt("reload", Shape::Table(&[Field::opt("watch", Shape::Bool)])),
    Field::opt(
        "actions",
        Shape::Table(&[
            Field::opt("max_concurrent", Shape::Count),
            Field::opt("retry_initial", Shape::Duration),
            Field::opt("retry_max", Shape::Duration),
        ]),
    ),
    Field::opt(
        "ha",
        Shape::Table(&[
            Field::opt("enabled", Shape::Bool),
            Field::opt("namespace", Shape::Str),
            Field::opt("lease_name", Shape::Str),
            Field::opt("identity", Shape::Str),
            Field::opt("lease_duration", Shape::Duration),
            Field::opt("renew_deadline", Shape::Duration),
            Field::opt("retry_period", Shape::Duration),
            Field::opt("shards", Shape::Count),
        ]),
    ),
    Field::opt(
        "fleet",
        Shape::Table(&[
            Field::opt("max_rollbacks", Shape::Count),
            Field::opt("per", Shape::Duration),
            Field::opt("namespace", Shape::Str),
        ]),
    ),
    Field::opt("notify", Shape::Table(crate::notify::config::FIELDS)),
];

impl Settings {
    /// Loads `path` over the defaults, then the process environment over both.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        let spans = match std::fs::read_to_string(path) {
            Err(e) => {
                problems.push(
                    Problem::new(path, "", format!("cannot read: {e}"))
                        .hint("create it (see config/backout.toml) or pass the right path"),
                );
                None
            }
            Ok(text) => match spans::parse(&text) {
                Err(e) => {
                    problems.push(
                        Problem::new(path, "", format!("TOML syntax error: {}", e.message))
                            .at(e.line)
                            .hint("fix the TOML syntax at this line"),
                    );
                    None
                }
                Ok(doc) => {
                    problems.extend(check(path, &text, &doc, SCHEMA));
                    Some(doc.spans)
                }
            },
        };
        problems.extend(check_env(std::env::vars()));
        if !problems.is_empty() {
            return Err(SettingsError::Invalid { problems });
        }
        let figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        let settings: Settings = match figment.extract() {
            Ok(s) => s,
            Err(e) => {
                let problems = from_figment(e, path, spans.as_ref(), ENV_PREFIX);
                return Err(SettingsError::Invalid { problems });
            }
        };
        let locate = |key: &str| locate(&figment, path, spans.as_ref(), key);
        let problems = settings.check(&locate);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::Invalid { problems })
        }
    }

    /// Semantic checks; `locate` turns a key into a problem pointing at where it was set.
    fn check(&self, locate: &dyn Fn(&str) -> Problem) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String, hint: &str| {
            let mut p = locate(key);
            p.message = message;
            p.hint = hint.to_string();
            out.push(p);
        };
        for issue in self.prometheus.issues() {
            bad(
                &format!("prometheus.{}", issue.key),
                issue.message,
                issue.hint,
            );
        }
        for issue in self.kubernetes.issues() {
            bad(
                &format!("kubernetes.{}", issue.key),
                issue.message,
                issue.hint,
            );
        }
        for issue in self.notify.issues() {
            bad(&format!("notify.{}", issue.key), issue.message, &issue.hint);
        }
        if self.poll_interval.is_zero() {
            bad(
                "poll_interval",
                "must be longer than zero".into(),
                "use a duration such as \"10s\"",
            );
        }
        if let Some(ep) = &self.log.otlp_endpoint {
            if reqwest::Url::parse(ep).is_err() {
                bad(
                    "log.otlp_endpoint",
                    format!("not a URL: {ep:?}"),
                    "write e.g. \"http://otel-collector:4317\"",
                );
            }
        }
        if self.actions.max_concurrent == 0 {
            bad(
                "actions.max_concurrent",
                "must be at least 1".into(),
                "use e.g. 8: rollbacks of that many services run at once",
            );
        }
        if self.actions.retry_initial.is_zero()
            || self.actions.retry_max < self.actions.retry_initial
        {
            bad(
                "actions.retry_max",
                format!(
                    "retry_initial ({}) must be above zero and at most retry_max ({})",
                    humantime::format_duration(self.actions.retry_initial),
                    humantime::format_duration(self.actions.retry_max)
                ),
                "use e.g. retry_initial = \"30s\", retry_max = \"5m\"",
            );
        }
        if self.fleet.max_rollbacks > 0 && self.fleet.per.is_zero() {
            bad(
                "fleet.per",
                "must be longer than zero".into(),
                "use e.g. \"10m\" (or max_rollbacks = 0 to turn the guard off)",
            );
        }
        let ha = &self.ha;
        if ha.shards == 0 {
            bad(
                "ha.shards",
                "must be at least 1".into(),
                "use 1 for leader election, more to split a large fleet",
            );
        }
        if ha.retry_period.is_zero()
            || ha.retry_period >= ha.renew_deadline
            || ha.renew_deadline >= ha.lease_duration
        {
            bad(
                "ha.renew_deadline",
                format!(
                    "need 0 < retry_period ({}) < renew_deadline ({}) < lease_duration ({})",
                    humantime::format_duration(ha.retry_period),
                    humantime::format_duration(ha.renew_deadline),
                    humantime::format_duration(ha.lease_duration)
                ),
                "use e.g. lease_duration = \"15s\", renew_deadline = \"10s\", retry_period = \"2s\": a holder must stop acting before others may take over",
            );
        }
        for (key, p) in [
            ("policy_dir", &self.policy_dir),
            ("audit_dir", &self.audit_dir),
        ] {
            if p.as_os_str().is_empty() {
                bad(key, "must not be empty".into(), "give a directory path");
            }
        }
        out
    }
}

/// A problem skeleton pointing at where `key` was set: the file and line, or the variable.
fn locate(figment: &Figment, file: &Path, spans: Option<&SpanMap>, key: &str) -> Problem {
    let from_env = figment
        .find_metadata(key)
        .is_some_and(|md| md.name.contains("environment"));
    if from_env {
        let path: Vec<String> = key.split('.').map(String::from).collect();
        let var = env_var(ENV_PREFIX, &path);
        return Problem::new(Path::new("environment"), format!("{key} (from {var})"), "");
    }
    Problem::new(file, key, "").at(spans
        .and_then(|s| s.line_of(key))
        .filter(|_| spans.is_some_and(|s| s.has(key))))
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; not our type to shrink.
#[allow(clippy::result_large_err)]
mod tests;
