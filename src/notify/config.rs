//! The `[notify]` section of backout.toml: named channels, the default route, delivery limits
//! and message templates.
//!
//! Channels are named (`[notify.channels.oncall-slack]`) so a policy routes to them by name
//! (`notify = ["oncall-slack"]`) and the secret URL lives in one place. Secrets come from files
//! (`url_file`, `routing_key_file`: a mounted Kubernetes Secret), never from the TOML, so the
//! settings file can be committed and logged; the files are read once at start-up.

use crate::diagnostic::schema::{Field, Shape};
use crate::diagnostic::Problem;
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The PagerDuty Events API v2 endpoint (the default `url` of a `pagerduty` channel).
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Channels of policies without their own `notify` list. Empty: such policies are only
    /// logged.
    pub default: Vec<String>,
    /// Deadline of every HTTP call to a channel (connect and whole request).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after a failed delivery, waiting `retry_initial`, doubling, up to `retry_max`.
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Notices waiting per channel; when a channel is this far behind, new notices to it are
    /// dropped (and counted) rather than held in memory without bound.
    pub queue: usize,
    pub channels: BTreeMap<String, Channel>,
    pub templates: Templates,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            default: Vec::new(),
            timeout: Duration::from_secs(5),
            retries: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            queue: 256,
            channels: BTreeMap::new(),
            templates: Templates::default(),
        }
    }
}

/// What a channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Slack incoming webhook: Block Kit blocks with the `text` fallback.
    Slack,
    /// Microsoft Teams workflow ("Post to a channel when a webhook request is received"): an
    /// Adaptive Card.
    Teams,
    /// PagerDuty Events API v2: trigger on escalation, resolve on recovery.
    Pagerduty,
    /// Alertmanager `POST /api/v2/alerts`: the team's routing, silences and inhibitions apply.
    Alertmanager,
    /// Any HTTP endpoint: `{"text": ..., "backout": <the event>}`.
    Webhook,
}

impl ChannelKind {
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Pagerduty => "pagerduty",
            ChannelKind::Alertmanager => "alertmanager",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// One named channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub kind: ChannelKind,
    /// The endpoint, when it is not a secret (Alertmanager's base URL, PagerDuty's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the endpoint (Slack and Teams webhook URLs are secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// PagerDuty: a file holding the integration's routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_file: Option<PathBuf>,
    /// Alertmanager: labels added to every alert (e.g. `team`, `severity`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Which notices go to this channel; unset: all of them (PagerDuty: escalations and their
    /// resolution only, whatever this says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// Message templates (`{{name}}` placeholders, see docs/notifications.md); unset: runbook 001's
/// texts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Templates {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
}

/// The event names a channel's `events` may list.
pub const EVENTS: &[&str] = &[
    "started",
    "completed",
    "resolved",
    "failed",
    "escalation",
    "fleet_held",
    "known_bad_version",
];

const KINDS: &[&str] = &["slack", "teams", "pagerduty", "alertmanager", "webhook"];

const CHANNEL: &[Field] = &[
    Field::req("kind", Shape::Enum(KINDS)),
    Field::opt("url", Shape::Str),
    Field::opt("url_file", Shape::Str),
    Field::opt("routing_key_file", Shape::Str),
    Field::opt("labels", Shape::StrMap),
    Field::opt("events", Shape::StrList),
];

const TEMPLATES: &[Field] = &[
    Field::opt("started", Shape::Str),
    Field::opt("completed", Shape::Str),
    Field::opt("resolved", Shape::Str),
    Field::opt("escalation", Shape::Str),
];

/// The keys of [`NotifyConfig`], for the settings file's schema check.
pub const FIELDS: &[Field] = &[
    Field::opt("default", Shape::StrList),
    Field::opt("timeout", Shape::Duration),
    Field::opt("retries", Shape::Count),
    Field::opt("retry_initial", Shape::Duration),
    Field::opt("retry_max", Shape::Duration),
    Field::opt("queue", Shape::Count),
    Field::opt("channels", Shape::TableMap(CHANNEL)),
    Field::opt("templates", Shape::Table(TEMPLATES)),
];

/// A value backout.toml cannot be used with: its key inside `[notify]`, what and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyIssue {
    pub key: String,
    pub message: String,
    pub hint: String,
}

impl NotifyConfig {
    /// Every problem with the section, each with its key inside `[notify]`.
    pub fn issues(&self) -> Vec<NotifyIssue> {
        let mut out = Vec::new();
        let mut bad = |key: String, message: String, hint: &str| {
            out.push(NotifyIssue {
                key,
                message,
                hint: hint.to_string(),
            });
        };
        if self.timeout.is_zero() {
            bad(
                "timeout".into(),
                "must be longer than zero".into(),
                "use e.g. \"5s\": every call to a channel has this deadline",
            );
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            bad(
                "retry_max".into(),
                "retry_initial must be above zero and at most retry_max".into(),
                "use e.g. retry_initial = \"1s\", retry_max = \"60s\"",
            );
        }
        if self.queue == 0 {
            bad("queue".into(), "must be at least 1".into(), "use e.g. 256");
        }
        for name in &self.default {
            if !self.channels.contains_key(name) {
                bad(
                    "default".into(),
                    format!("no channel named {name:?}"),
                    &self.define_hint(name),
                );
            }
        }
        for (name, ch) in &self.channels {
            for (key, message, hint) in ch.issues() {
                bad(format!("channels.{name}.{key}"), message, hint);
            }
        }
        out
    }

    fn define_hint(&self, name: &str) -> String {
        let known: Vec<&str> = self.channels.keys().map(String::as_str).collect();
        format!(
            "define it as [notify.channels.{name}] or use one of: {}",
            if known.is_empty() {
                "(none defined)".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    /// Policies whose `notify` names a channel that is not defined, one problem each, pointing
    /// at the policy file.
    pub fn check_routes<'a>(&self, policies: impl IntoIterator<Item = &'a Policy>) -> Vec<Problem> {
        let mut out = Vec::new();
        for p in policies {
            let steps = p.escalation.iter().enumerate().flat_map(|(i, st)| {
                st.channels
                    .iter()
                    .map(move |c| (format!("escalation[{i}].channels"), c))
            });
            let named = p
                .notify
                .iter()
                .flatten()
                .map(|c| ("notify".to_string(), c))
                .chain(steps);
            for (key, name) in named {
                if !self.channels.contains_key(name) {
                    out.push(
                        Problem::new(
                            &p.source,
                            key,
                            format!("no channel named {name:?} in backout.toml"),
                        )
                        .hint(self.define_hint(name)),
                    );
                }
            }
        }
        out
    }

    /// The channels a policy's notices go to: its own list, else the default route.
    pub fn route<'a>(&'a self, own: Option<&'a [String]>) -> &'a [String] {
        own.unwrap_or(&self.default)
    }
}

type ChannelIssue = (&'static str, String, &'static str);

impl Channel {
    fn issues(&self) -> Vec<ChannelIssue> {
        let mut out: Vec<ChannelIssue> = Vec::new();
        let needs_secret = matches!(self.kind, ChannelKind::Slack | ChannelKind::Teams);
        match (&self.url, &self.url_file) {
            (Some(_), Some(_)) => out.push((
                "url",
                "give `url` or `url_file`, not both".into(),
                "keep `url_file` (the URL stays out of the settings file)",
            )),
            (None, None) if self.kind != ChannelKind::Pagerduty => out.push((
                "url_file",
                format!("a {} channel needs an endpoint", self.kind.name()),
                "set url_file = \"/etc/backout/<channel>-url\" (a mounted Secret holding the URL)",
            )),
            (Some(_), None) if needs_secret => out.push((
                "url",
                format!(
                    "a {} webhook URL is a secret and must not be written in backout.toml",
                    self.kind.name()
                ),
                "put the URL in a file (a mounted Secret) and set url_file to its path",
            )),
            (Some(u), None) if reqwest::Url::parse(u).is_err() => out.push((
                "url",
                format!("not a URL: {u:?}"),
                "write e.g. \"http://alertmanager.monitoring:9093\"",
            )),
            _ => {}
        }
        if self.kind == ChannelKind::Pagerduty && self.routing_key_file.is_none() {
            out.push((
                "routing_key_file",
                "a pagerduty channel needs its integration's routing key".into(),
                "set routing_key_file = \"/etc/backout/pagerduty-key\" (Events API v2 integration key)",
            ));
        }
        if self.kind != ChannelKind::Pagerduty && self.routing_key_file.is_some() {
            out.push((
                "routing_key_file",
                "only pagerduty channels take a routing key".into(),
                "remove it",
            ));
        }
        if !self.labels.is_empty() && self.kind != ChannelKind::Alertmanager {
            out.push((
                "labels",
                "only alertmanager channels take labels".into(),
                "remove it",
            ));
        }
        for ev in self.events.iter().flatten() {
            if !EVENTS.contains(&ev.as_str()) {
                out.push((
                    "events",
                    format!("unknown event {ev:?}"),
                    "use some of: started, completed, resolved, failed, escalation, fleet_held, known_bad_version",
                ));
            }
        }
        for (key, file) in [
            ("url_file", &self.url_file),
            ("routing_key_file", &self.routing_key_file),
        ] {
            if let Some(f) = file {
                if let Err(e) = read_secret(f) {
                    out.push((
                        key,
                        format!("cannot read {}: {e}", f.display()),
                        "mount the Secret there or fix the path",
                    ));
                }
            }
        }
        out
    }

    /// The endpoint to call, read from `url_file` when set. PagerDuty defaults to its Events API.
    pub fn endpoint(&self) -> std::io::Result<String> {
        match (&self.url, &self.url_file) {
            (_, Some(f)) => read_secret(f),
            (Some(u), None) => Ok(u.clone()),
            (None, None) => Ok(PAGERDUTY_EVENTS.to_string()),
        }
    }
}

/// A secret file's content without surrounding whitespace (files written by `echo` end in a
/// newline); an empty file is an error.
pub fn read_secret(path: &std::path::Path) -> std::io::Result<String> {
    let s = std::fs::read_to_string(path)?.trim().to_string();
    if s.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> NotifyConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let c = parse(
            r#"
default = ["oncall"]
[channels.slack]
kind = "slack"
url = "https://hooks.slack.com/services/T/B/X"
[channels.pd]
kind = "pagerduty"
[channels.hook]
kind = "webhook"
url_file = "/nonexistent/backout-url"
"#,
        );
        let issues = c.issues();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "default",
                "channels.hook.url_file",
                "channels.pd.routing_key_file",
                "channels.slack.url"
            ]
        );
        assert!(issues[0].hint.contains("[notify.channels.oncall]"));
        assert!(issues[3].message.contains("secret"), "{:?}", issues[3]);
    }

    #[test]
    fn secrets_are_read_trimmed_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "https://hooks.example/x\n").unwrap();
        let c = parse(&format!(
            "[channels.s]\nkind = \"slack\"\nurl_file = {:?}\n",
            f.display().to_string()
        ));
        assert!(c.issues().is_empty(), "{:?}", c.issues());
        assert_eq!(
            c.channels["s"].endpoint().unwrap(),
            "https://hooks.example/x"
        );
    }

    #[test]
    fn a_policy_routing_to_an_undefined_channel_is_rejected() {
        let c = parse("[channels.oncall]\nkind = \"webhook\"\nurl = \"http://x\"\n");
        let mut p = Policy::test();
        p.notify = Some(vec!["oncall".into(), "pagerduty-p0".into()]);
        p.escalation = vec![crate::policy::EscalationStep {
            after: std::time::Duration::ZERO,
            channels: vec!["cto-phone".into()],
        }];
        let problems = c.check_routes(&[p]);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].key, "notify");
        assert!(problems[0].message.contains("pagerduty-p0"));
        assert_eq!(problems[1].key, "escalation[0].channels");
    }
}
