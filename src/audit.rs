//! The audit trail and incident reports: the last stage of the data flow.
//!
//! Runbooks 000, 001 and 004 ask for an audit log of every rollback and a post-incident report
//! with a timeline, the reason, the revisions and the verification results. backout writes both
//! itself, so the human reading them at 9 a.m. sees exactly what the daemon saw at 3 a.m.

use crate::sample::Millis;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit trail in {path} (set `audit_dir` in backout.toml to a writable directory): {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What happened, in the vocabulary of the runbooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    PolicyLoaded,
    PolicyRejected,
    CanaryStarted,
    CanaryPromoted,
    StableKnownGood,
    VerdictChanged,
    RollbackStarted,
    StepCompleted,
    StepSkipped,
    RollbackCompleted,
    RollbackFailed,
    /// The fleet guard held a rollback: too many in the window, likely a shared cause.
    RollbackHeld,
    Notified,
    /// The stable alone stayed healthy for `verify.window` after the rollback.
    RecoveryVerified,
    /// A completed rollback's canary recorded as a bad version; or one rolled out again.
    BadVersion,
    /// A human is paged: the rollback failed, made things worse, or did not restore the service.
    Escalated,
    /// A canary breach the stable shares, the canary not worse: held, not rolled back.
    SharedCause,
}

/// One line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Millis,
    pub service: String,
    pub namespace: String,
    pub kind: AuditKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Where audit records go. The daemon uses [`FileAudit`]; tests may collect in memory.
pub trait AuditSink: Send + Sync {
    fn record(&self, rec: &AuditRecord) -> Result<(), AuditError>;
    fn incident(&self, report: &IncidentReport) -> Result<Option<PathBuf>, AuditError>;
}

/// Append-only JSON lines plus one Markdown report per incident, under `audit_dir`.
pub struct FileAudit {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl FileAudit {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("incidents")).map_err(|source| AuditError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
        })
    }

    pub fn trail_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Reads the trail back (for tests, `backout` tooling and the demo's timeline).
    pub fn read_trail(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(AuditError::from))
            .collect()
    }
}

impl AuditSink for FileAudit {
    fn record(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(rec)?;
        line.push('\n');
        let path = self.trail_path();
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        f.write_all(line.as_bytes())
            .map_err(|source| AuditError::Io { path, source })
    }

    fn incident(&self, report: &IncidentReport) -> Result<Option<PathBuf>, AuditError> {
        let path = self
            .dir
            .join("incidents")
            .join(format!("{}-{}.md", report.service, report.id));
        std::fs::write(&path, report.to_markdown()).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Some(path))
    }
}

/// One check done after the rollback (traffic, replicas, revision, error rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The post-incident report of runbook 001, filled in by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub detected_at: Millis,
    pub mitigated_at: Option<Millis>,
    /// The bad version (canary revision and image) and where traffic went back to.
    pub from_version: String,
    pub to_version: String,
    pub reasons: Vec<String>,
    pub timeline: Vec<(Millis, String)>,
    pub verification: Vec<Check>,
    pub dry_run: bool,
    pub outcome: String,
    /// Recovery verified on the metrics: `recovered at +42s` or `not recovered`; unset while
    /// verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<String>,
    /// First bad evidence -> recovery, against the policy's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
}

pub fn format_time(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

impl IncidentReport {
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let dur = self
            .mitigated_at
            .map(|m| {
                format!(
                    "{:.1} s from detection to mitigation",
                    (m - self.detected_at) as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "not mitigated".into());
        s.push_str(&format!(
            "## Post-Incident Review: {} rollback of {}/{}\n\n",
            format_time(self.detected_at),
            self.namespace,
            self.service
        ));
        s.push_str("### Summary\n");
        s.push_str(&format!(
            "- **Date/Time**: {}\n",
            format_time(self.detected_at)
        ));
        s.push_str(&format!("- **Duration**: {dur}\n"));
        s.push_str(&format!(
            "- **Action**: rolled back from {} to {}{}\n",
            self.from_version,
            self.to_version,
            if self.dry_run {
                " (dry run: nothing was changed)"
            } else {
                ""
            }
        ));
        s.push_str(&format!("- **Outcome**: {}\n", self.outcome));
        s.push_str(&format!(
            "- **Recovery**: {}\n",
            self.recovery
                .as_deref()
                .unwrap_or("being verified on the metrics")
        ));
        if let Some(rto) = &self.rto {
            s.push_str(&format!("- **RTO**: {rto}\n"));
        }
        s.push_str("- **Root Cause**: under investigation; the triggering signals were:\n");
        for r in &self.reasons {
            s.push_str(&format!("  - {r}\n"));
        }
        s.push_str("\n### Timeline\n| Time | Event |\n|------|-------|\n");
        for (at, ev) in &self.timeline {
            s.push_str(&format!(
                "| {} | {} |\n",
                format_time(*at),
                ev.replace('|', "\\|")
            ));
        }
        s.push_str(
            "\n### Verification\n| Check | Result | Detail |\n|-------|--------|--------|\n",
        );
        for c in &self.verification {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                if c.ok { "pass" } else { "FAIL" },
                c.detail.replace('|', "\\|")
            ));
        }
        s.push_str("\n### Action Items\n- [ ] Find the root cause before redeploying the rolled-back version\n- [ ] Post-incident review\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> IncidentReport {
        IncidentReport {
            id: "r1".into(),
            service: "web".into(),
            namespace: "prod".into(),
            detected_at: 1_700_000_000_000,
            mitigated_at: Some(1_700_000_004_500),
            from_version: "canary revision 4 (web:2.0)".into(),
            to_version: "stable revision 3 (web:1.9)".into(),
            reasons: vec!["error_rate canary 0.12 > critical 0.05 since 03:00:00".into()],
            timeline: vec![
                (1_700_000_000_000, "critical".into()),
                (1_700_000_004_500, "traffic 100% stable".into()),
            ],
            verification: vec![Check {
                name: "traffic".into(),
                ok: true,
                detail: "stable 100 / canary 0".into(),
            }],
            dry_run: false,
            outcome: "rolled back".into(),
            recovery: Some("recovered at +42.0 s".into()),
            rto: Some("1m 30s (target 5m: met)".into()),
        }
    }

    #[test]
    fn trail_is_appended_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let audit = FileAudit::new(dir.path()).unwrap();
        for (i, kind) in [AuditKind::RollbackStarted, AuditKind::RollbackCompleted]
            .into_iter()
            .enumerate()
        {
            audit
                .record(&AuditRecord {
                    at: i as i64,
                    service: "web".into(),
                    namespace: "prod".into(),
                    kind,
                    message: format!("m{i}"),
                    detail: serde_json::Value::Null,
                })
                .unwrap();
        }
        let back = FileAudit::read_trail(&audit.trail_path()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].kind, AuditKind::RollbackCompleted);
    }

    #[test]
    fn incident_report_states_duration_reason_and_verification() {
        let dir = tempfile::tempdir().unwrap();
        let audit = FileAudit::new(dir.path()).unwrap();
        let path = audit.incident(&report()).unwrap().unwrap();
        let md = std::fs::read_to_string(path).unwrap();
        assert!(md.contains("4.5 s from detection to mitigation"), "{md}");
        assert!(
            md.contains("error_rate canary 0.12 > critical 0.05"),
            "{md}"
        );
        assert!(md.contains("| traffic | pass |"), "{md}");
        assert!(md.contains("- **Recovery**: recovered at +42.0 s"), "{md}");
        assert!(md.contains("- **RTO**: 1m 30s (target 5m: met)"), "{md}");
        assert!(md.contains("2023-11-14 22:13:20.000 UTC"), "{md}");
    }
}
