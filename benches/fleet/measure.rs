//! What the harness reads: the daemon's CPU time and peak RSS from `/proc`, its `/metrics`
//! counters and histograms, and quantiles interpolated from histogram buckets.

use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU time used by a process so far, at an instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    ticks: u64,
}

/// utime + stime of `pid`: fields 14 and 15 of `/proc/PID/stat`, counted after the `)` that ends
/// the command name (which may itself contain spaces).
pub fn cpu(pid: u32) -> anyhow::Result<CpuSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    // After `)`: index 0 is field 3 (state), so field 14 is index 11.
    Ok(CpuSample {
        at: Instant::now(),
        ticks: field(11)? + field(12)?,
    })
}

/// Cores used between two samples.
pub fn cores(a: CpuSample, b: CpuSample, ticks_per_sec: f64) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    b.ticks.saturating_sub(a.ticks) as f64 / ticks_per_sec / wall
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// Resident set size now (VmRSS) in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/PID/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {field}"))?
        .parse()?;
    Ok(kb * 1024)
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape of `/metrics`, at an instant.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub at: Instant,
    lines: Vec<Line>,
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    // Label values in backout's metrics carry no `,` or `"` escapes that matter here.
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Line> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
        None => (series, BTreeMap::new()),
    };
    Some(Line {
        name: name.to_string(),
        labels,
        value,
    })
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        Scrape {
            at: Instant::now(),
            lines: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Sum over every series of `name`; `None` when the daemon does not export it.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.sum_where(name, None)
    }

    /// Sum over the series of `name` whose label `label.0` is `label.1` (every series if `None`).
    pub fn sum_where(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        let wanted = |l: &&Line| {
            l.name == name && label.is_none_or(|(k, v)| l.labels.get(k).is_some_and(|x| x == v))
        };
        for l in self.lines.iter().filter(wanted) {
            found = true;
            total += l.value;
        }
        found.then_some(total)
    }

    /// Cumulative buckets of histogram `name` summed over its other labels, by upper bound.
    pub fn buckets(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for l in self.lines.iter().filter(|l| l.name == bucket) {
            let Some(le) = l.labels.get("le") else {
                continue;
            };
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += l.value;
        }
        if by_le.is_empty() {
            return None;
        }
        let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(v)
    }
}

/// Per-second rate of counter `name` between two scrapes.
pub fn rate(a: &Scrape, b: &Scrape, name: &str) -> Option<f64> {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let d = b.sum(name)? - a.sum(name).unwrap_or(0.0);
    (secs > 0.0).then_some(d / secs)
}

/// Bucket counts observed between two scrapes (`later - earlier`, per bound).
pub fn bucket_delta(a: &Scrape, b: &Scrape, name: &str) -> Option<Vec<(f64, f64)>> {
    let later = b.buckets(name)?;
    let earlier = a.buckets(name).unwrap_or_default();
    Some(
        later
            .into_iter()
            .map(|(le, n)| {
                let before = earlier
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, n - before)
            })
            .collect(),
    )
}

/// `histogram_quantile` semantics on cumulative buckets: linear interpolation inside the bucket
/// holding the q-th observation (from 0 for the first); the highest finite bound when it falls
/// in `+Inf`; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank && count > below {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

/// Reads `/metrics` of the daemon's admin server (or of Prometheus itself) at `base`.
pub async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<Scrape> {
    let r = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {base}/metrics"))?;
    if !r.status().is_success() {
        bail!("GET {base}/metrics: {}", r.status());
    }
    Ok(Scrape::parse(&r.text().await?))
}
