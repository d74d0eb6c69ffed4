//! What each channel kind is sent for a notice: the URL and JSON body, built without I/O so the
//! formats are tested without a network (and `dispatch` only POSTs what this returns).
//!
//! Formats follow each receiver's documented API: Slack incoming webhooks (Block Kit `blocks`
//! plus the `text` fallback shown in notifications), Teams workflow webhooks (a `message` with
//! one Adaptive Card attachment), PagerDuty Events API v2 (`trigger` / `resolve` on a
//! `dedup_key`), Alertmanager API v2 (`POST /api/v2/alerts`, an alert is resolved by sending it
//! again with `endsAt`).

use super::config::ChannelKind;
use super::template::split;
use super::{Envelope, Notice, Phase};
use crate::sample::Millis;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A channel with its secrets read: what a request is built from.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: ChannelKind,
    /// The endpoint (a secret for Slack and Teams: never logged).
    pub endpoint: String,
    /// PagerDuty's routing key (a secret).
    pub routing_key: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// One HTTP POST of JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub url: String,
    pub body: Value,
}

/// Alert names backout posts to Alertmanager: the incident, and its escalation (page on it).
pub const ALERT_ROLLBACK: &str = "BackoutRollback";
pub const ALERT_ESCALATION: &str = "BackoutEscalation";

/// The request for `env` on `target`, with `text` the rendered message; `None` when this kind
/// has nothing to do with the notice (PagerDuty pages only for escalations and their end).
pub fn call(target: &Target, env: &Envelope, text: &str) -> Option<Call> {
    let (title, body) = split(text);
    let body = match target.kind {
        ChannelKind::Slack => slack(title, body, text),
        ChannelKind::Teams => teams(title, body),
        ChannelKind::Webhook => json!({
            "text": text,
            "incident": env.incident,
            "backout": env.notice,
        }),
        ChannelKind::Pagerduty => pagerduty(target, env, title, text)?,
        ChannelKind::Alertmanager => {
            return Some(Call {
                url: format!("{}/api/v2/alerts", target.endpoint.trim_end_matches('/')),
                body: alertmanager(target, env, title, body),
            })
        }
    };
    Some(Call {
        url: target.endpoint.clone(),
        body,
    })
}

/// At most `max` characters (Slack and PagerDuty cut or reject longer fields).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn slack(title: &str, body: &str, text: &str) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(title, 150), "emoji": true},
    })];
    if !body.is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(body, 3000)},
        }));
    }
    json!({"text": text, "blocks": blocks})
}

fn teams(title: &str, body: &str) -> Value {
    let mut items = vec![json!({
        "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true,
    })];
    // One TextBlock per line: Adaptive Cards collapse single newlines inside a block.
    items.extend(
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| json!({"type": "TextBlock", "text": l, "wrap": true, "spacing": "None"})),
    );
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": items,
            },
        }],
    })
}

fn pagerduty(target: &Target, env: &Envelope, title: &str, text: &str) -> Option<Value> {
    let key = target.routing_key.clone().unwrap_or_default();
    let (namespace, service) = env.notice.service_key();
    match env.notice.phase() {
        Phase::Escalate => Some(json!({
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": env.incident,
            "payload": {
                "summary": clip(title, 1024),
                "source": format!("backout/{namespace}/{service}"),
                "severity": "critical",
                "timestamp": rfc3339(env.notice.at()),
                "component": service,
                "group": namespace,
                "custom_details": {"text": text, "event": env.notice},
            },
        })),
        Phase::Resolve => Some(json!({
            "routing_key": key,
            "event_action": "resolve",
            "dedup_key": env.incident,
        })),
        Phase::Open | Phase::Info => None,
    }
}

/// The alerts of `env`: the rollback alert fires while the incident is open, the escalation
/// alert from an escalation on; a resolution ends both (an end time on an alert Alertmanager
/// never saw is harmless).
fn alertmanager(target: &Target, env: &Envelope, title: &str, body: &str) -> Value {
    let (namespace, service) = env.notice.service_key();
    let labels = |alertname: &str, severity: &str| {
        let mut l: BTreeMap<String, String> = BTreeMap::new();
        l.insert("severity".into(), severity.into());
        l.extend(target.labels.clone());
        l.insert("alertname".into(), alertname.into());
        if !service.is_empty() {
            l.insert("service".into(), service.clone());
            l.insert("namespace".into(), namespace.clone());
        }
        if !env.incident.is_empty() {
            l.insert("incident".into(), env.incident.clone());
        }
        l
    };
    let annotations = json!({"summary": title, "description": body});
    let alert = |name: &str, severity: &str, starts: Millis, ends: Option<Millis>| {
        let mut a = json!({
            "labels": labels(name, severity),
            "annotations": annotations,
            "startsAt": rfc3339(starts),
        });
        if let Some(end) = ends {
            a["endsAt"] = json!(rfc3339(end));
        }
        a
    };
    let at = env.notice.at();
    match (&env.notice, env.notice.phase()) {
        (Notice::RollbackResolved { started, .. }, _) => json!([
            alert(ALERT_ROLLBACK, "warning", *started, Some(at)),
            alert(ALERT_ESCALATION, "critical", *started, Some(at)),
        ]),
        (_, Phase::Escalate) => json!([alert(ALERT_ESCALATION, "critical", at, None)]),
        (Notice::FleetHeld { .. }, _) => json!([alert("BackoutFleetHeld", "warning", at, None)]),
        _ => json!([alert(ALERT_ROLLBACK, "warning", at, None)]),
    }
}

/// RFC 3339 in UTC, as every one of these APIs takes it.
pub fn rfc3339(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: ChannelKind) -> Target {
        Target {
            name: "c".into(),
            kind,
            endpoint: "http://127.0.0.1:9/hook/".into(),
            routing_key: Some("KEY".into()),
            labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        }
    }

    fn env(notice: Notice) -> Envelope {
        Envelope {
            notice,
            route: None,
            also: Vec::new(),
            incident: "0123456789abcdef".into(),
        }
    }

    fn failed() -> Notice {
        Notice::Escalation {
            service: "web".into(),
            namespace: "prod".into(),
            at: 1_800_000_000_000,
            reason: "the rollback failed".into(),
            detail: "rollback attempt 2 failed (retrying in 1m): forbidden".into(),
        }
    }

    fn resolved() -> Notice {
        Notice::RollbackResolved {
            service: "web".into(),
            namespace: "prod".into(),
            started: 1_800_000_000_000,
            resolved: 1_800_000_060_000,
            from_version: "canary web:2".into(),
            to_version: "stable web:1".into(),
            verified: true,
            mode: "rollback".into(),
            recovery: String::new(),
            rto: String::new(),
        }
    }

    #[test]
    fn slack_has_a_header_block_and_the_text_fallback() {
        let e = env(resolved());
        let c = call(&target(ChannelKind::Slack), &e, &e.notice.text()).unwrap();
        assert_eq!(c.url, "http://127.0.0.1:9/hook/");
        assert_eq!(c.body["blocks"][0]["type"], "header");
        assert_eq!(
            c.body["blocks"][0]["text"]["text"],
            "✅ RESOLVED: Production Rollback Complete"
        );
        assert!(c.body["text"]
            .as_str()
            .unwrap()
            .contains("Duration: 60.0 s"));
    }

    #[test]
    fn teams_gets_one_adaptive_card() {
        let e = env(resolved());
        let c = call(&target(ChannelKind::Teams), &e, &e.notice.text()).unwrap();
        let att = &c.body["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(att["content"]["type"], "AdaptiveCard");
        assert_eq!(att["content"]["body"][0]["weight"], "Bolder");
    }

    #[test]
    fn pagerduty_triggers_on_escalation_resolves_on_recovery_and_ignores_the_rest() {
        let t = target(ChannelKind::Pagerduty);
        let e = env(failed());
        let trigger = call(&t, &e, &e.notice.text()).unwrap();
        assert_eq!(trigger.body["event_action"], "trigger");
        assert_eq!(trigger.body["dedup_key"], "0123456789abcdef");
        assert_eq!(trigger.body["routing_key"], "KEY");
        assert_eq!(trigger.body["payload"]["severity"], "critical");
        let e = env(resolved());
        let resolve = call(&t, &e, &e.notice.text()).unwrap();
        assert_eq!(resolve.body["event_action"], "resolve");
        assert_eq!(resolve.body["dedup_key"], "0123456789abcdef");
        let started = Notice::RollbackStarted {
            service: "web".into(),
            namespace: "prod".into(),
            at: 0,
            reasons: vec![],
            from_version: String::new(),
            to_version: String::new(),
            dry_run: false,
            mode: "rollback".into(),
        };
        let e = env(started);
        assert!(call(&t, &e, &e.notice.text()).is_none());
    }

    #[test]
    fn alertmanager_posts_alerts_and_ends_them_on_resolution() {
        let t = target(ChannelKind::Alertmanager);
        let e = env(failed());
        let c = call(&t, &e, &e.notice.text()).unwrap();
        assert_eq!(c.url, "http://127.0.0.1:9/hook/api/v2/alerts");
        assert_eq!(c.body[0]["labels"]["alertname"], ALERT_ESCALATION);
        assert_eq!(c.body[0]["labels"]["team"], "payments");
        assert_eq!(c.body[0]["labels"]["incident"], "0123456789abcdef");
        assert!(c.body[0].get("endsAt").is_none());
        let e = env(resolved());
        let c = call(&t, &e, &e.notice.text()).unwrap();
        assert_eq!(c.body[0]["endsAt"], "2027-01-15T08:01:00Z");
        assert_eq!(c.body[1]["labels"]["alertname"], ALERT_ESCALATION);
    }
}
