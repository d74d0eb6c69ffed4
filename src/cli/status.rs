//! `backout status [SERVICE] [--watch]`: what the daemon's status API says, as a kubectl-style
//! table (colours on a terminal, plain otherwise). The model is `kubectl argo rollouts get
//! rollout`: the list of services, or one service with each metric against its levels.

use anyhow::Context as _;
use backout::clock::{Clock, SystemClock};
use backout::status::table::{self, Style};
use backout::status::{ServiceDetail, ServiceList};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// One service, as `namespace/service` or just `service` when the name is unique.
    service: Option<String>,
    /// Redraw every `--interval` until interrupted.
    #[arg(long, short = 'w')]
    watch: bool,
    /// Time between redraws with `--watch`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The daemon's admin address (`kubectl port-forward -n backout-system deploy/backout 9090`).
    #[arg(long, env = "BACKOUT_ADDR", default_value = "http://127.0.0.1:9090")]
    addr: String,
}

fn base(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let resp = client.get(url).send().await.with_context(|| {
        format!("cannot reach the daemon at {url} (is it running? --addr / BACKOUT_ADDR)")
    })?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("{url}: {status}: {msg}");
    }
    serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer with the status API's JSON"))
}

/// `namespace/service` for `arg`, looking a bare name up in the list.
async fn resolve(client: &reqwest::Client, base: &str, arg: &str) -> anyhow::Result<String> {
    if arg.contains('/') {
        return Ok(arg.to_string());
    }
    let list: ServiceList = get(client, &format!("{base}/api/v1/services")).await?;
    let found: Vec<String> = list
        .services
        .iter()
        .filter(|s| s.service == arg)
        .map(|s| format!("{}/{}", s.namespace, s.service))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no service named `{arg}` on {base}; `backout status` lists them"),
        many => anyhow::bail!(
            "`{arg}` is ambiguous ({}): name it as namespace/service",
            many.join(", ")
        ),
    }
}

async fn render(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    style: Style,
) -> anyhow::Result<String> {
    let now = SystemClock.now_millis();
    Ok(match key {
        Some(key) => {
            let d: ServiceDetail = get(client, &format!("{base}/api/v1/services/{key}")).await?;
            table::service(&d, now, style)
        }
        None => {
            let list: ServiceList = get(client, &format!("{base}/api/v1/services")).await?;
            table::services(&list, now, style)
        }
    })
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let base = base(&args.addr);
    let tty = std::io::stdout().is_terminal();
    let style = if tty { Style::Color } else { Style::Plain };
    let key = match &args.service {
        Some(s) => Some(resolve(&client, &base, s).await?),
        None => None,
    };
    loop {
        let text = render(&client, &base, key.as_deref(), style).await?;
        let mut out = std::io::stdout().lock();
        if args.watch && tty {
            // Home and clear: redraw in place, as `kubectl argo rollouts get --watch` does.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        if !tty {
            writeln!(out)?;
        }
        drop(out);
        tokio::time::sleep(args.interval).await;
    }
}
