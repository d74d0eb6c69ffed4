//! The web page at `/`: the service list and, per service, a plot of each metric against its
//! warning and critical levels over the last hour (canary and stable, or the judged ratio or
//! statistic), with the decision timeline marked. One self-contained HTML file (inline CSS, JS
//! and SVG, no external assets: it works air-gapped and behind `kubectl port-forward`); it
//! draws everything from the status API and refreshes every 5 s.

/// The page, served as is.
pub const PAGE: &str = include_str!("page.html");
