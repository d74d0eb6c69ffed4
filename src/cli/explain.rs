//! `backout explain`: show the policy exactly as the daemon will run it (templates applied,
//! defaults filled) and the PromQL it will send for each track, so nothing is a surprise.

use anyhow::Context;
use backout::policy::{self, render_query, render_traffic_query};
use backout::sample::Track;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (templates come from templates.toml beside it).
    #[arg(long)]
    pub policy: PathBuf,
    /// `--since` (and where Prometheus is): the live standing, see explain_live.rs.
    #[command(flatten)]
    pub live: super::explain_live::LiveArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policies = match policy::load_path(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = String::new();
    for p in &policies {
        writeln!(
            out,
            "# Effective policy for `{}` in `{}` (from {}): templates applied, defaults filled.",
            p.service,
            p.namespace,
            p.source.display()
        )?;
        // Templates are already applied: print the metrics self-contained (so the output is a
        // policy that loads on its own) and say where each came from.
        let mut effective = p.clone();
        for m in &mut effective.metrics {
            if let Some(t) = m.template.take() {
                writeln!(out, "# metric `{}` is based on template `{t}`", m.name)?;
            }
        }
        out.push_str(&toml::to_string_pretty(&effective).context("rendering the policy as TOML")?);
        writeln!(
            out,
            "\n# Rendered queries (what the daemon sends to Prometheus)"
        )?;
        if let Some(canary) = render_traffic_query(p, Track::Canary) {
            writeln!(out, "# traffic")?;
            writeln!(out, "#   canary: {canary}")?;
            let stable = render_traffic_query(p, Track::Stable).unwrap_or_default();
            writeln!(out, "#   stable: {stable}")?;
        }
        for m in &p.metrics {
            writeln!(out, "# metric `{}`", m.name)?;
            for track in Track::ALL {
                writeln!(out, "#   {track}: {}", render_query(p, m, track))?;
            }
        }
    }
    print!("{out}");
    super::explain_live::print(&args.live, &policies).await?;
    Ok(ExitCode::SUCCESS)
}
