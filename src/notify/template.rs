//! Message texts: runbook 001's "Incident Start" and "Incident Resolution" notifications and
//! runbook 003's escalation, with `{{name}}` placeholders a team may override in
//! `[notify.templates]`.
//!
//! The first line is the title (Slack's header block, the Teams card's heading, the PagerDuty
//! summary); the rest is the body. An unknown placeholder is left as written, so a typo shows in
//! the message instead of silently vanishing.

/// Runbook 001, "Incident Start Notification".
pub const STARTED: &str = "🚨 INCIDENT: {{dry_run}}Production Rollback Initiated

Environment: {{namespace}}
Service: {{service}}
Time: {{time}}
Reason: {{reason}}
Action: {{action}}

Status: In Progress

Updates to follow.";

/// Runbook 001, "Incident Resolution Notification", with the recovery seen on the metrics.
pub const RESOLVED: &str = "✅ RESOLVED: Production Rollback Complete

Environment: {{namespace}}
Service: {{service}}
Time Started: {{started}}
Time Resolved: {{resolved}}
Duration: {{duration}}

Action Taken: {{action}}
Root Cause: Under Investigation
Verification: {{verification}}
Recovery: {{recovery}}
RTO: {{rto}}

Next Steps:
- [ ] Post-incident review to be scheduled
- [ ] Fix to be deployed after review";

/// The plan completed: an update while recovery is verified (runbook 001: "Updates to follow").
pub const COMPLETED: &str = "UPDATE: Rollback Complete, Verifying Recovery

Environment: {{namespace}}
Service: {{service}}
Time: {{time}}
Action Taken: {{action}}
Verifying: {{verifying}}";

/// Runbook 003, "Escalation": a human must take over.
pub const ESCALATION: &str = "🔥 ESCALATION: {{namespace}}/{{service}} needs a human now

Time: {{time}}
Reason: {{reason}}
Detail: {{detail}}

Escalate IMMEDIATELY (runbook: the rollback failed, made things worse, or the service is not restored).";

/// The fleet guard's hold (not overridable: it is backout's own message, not a runbook's).
pub const FLEET_HELD: &str = "FLEET GUARD: {{count}} services want a rollback at once: likely a shared cause; held
Time: {{time}}
Limit: {{max}} rollbacks per {{per_s}} s across the fleet
Held: {{held}}
Action: check shared dependencies and Prometheus; roll a service back by hand with `backout rollback` if it is really bad";

pub const SHARED_CAUSE: &str = "SHARED CAUSE: {{namespace}}/{{service}}: both tracks breach; the canary is not worse. No rollback (on_shared = \"hold\"); promotion held
Time: {{time}}
Reason: {{reason}}
Action: check the dependencies both tracks share";

/// Replaces every `{{name}}` of `vars` in `template`; unknown names stay as written.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[open..open + 2 + close + 2]),
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The title (first line) and the body (the rest, trimmed) of a rendered text.
pub fn split(text: &str) -> (&str, &str) {
    match text.split_once('\n') {
        Some((title, body)) => (title.trim(), body.trim()),
        None => (text.trim(), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_kept() {
        let vars = vec![("service", "web".to_string()), ("to", "v1".to_string())];
        assert_eq!(
            render("{{service}} back to {{ to }} ({{oops}}) {{", &vars),
            "web back to v1 ({{oops}}) {{"
        );
    }

    #[test]
    fn title_is_the_first_line() {
        assert_eq!(split("A\n\nB\nC"), ("A", "B\nC"));
        assert_eq!(split("only"), ("only", ""));
    }
}
