//! Runs every judge on the same generated runs and summarises decision quality.
//!
//! Seeds are deterministic (`scenario index << 32 | run`), so a table regenerates exactly.

use super::judges::Judge;
use super::scenario::{generate, Scenario, RUN_SECS};
use serde::Serialize;

/// One judge on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub judge: String,
    pub runs: usize,
    /// Runs rolled back at any time (the false-rollback count on healthy scenarios).
    pub rollbacks: usize,
    /// Runs rolled back within 60 min of the onset.
    pub detected_60m: usize,
    /// Median and 90th percentile of the time from onset to rollback, counting runs never
    /// rolled back as infinitely late (`None` = not reached within the run).
    pub median_secs: Option<u64>,
    pub p90_secs: Option<u64>,
    /// Shared-incident scenarios: runs rolled back before the incident started (the policy's
    /// own false alarms, which no shared-cause test can remove).
    pub before_incident: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub healthy: bool,
    pub cells: Vec<Cell>,
}

/// The seed of run `run` of scenario number `scenario` (in the list given to [`run`]).
pub fn seed(scenario: usize, run: usize) -> u64 {
    ((scenario as u64) << 32) | run as u64
}

/// Rollback times per judge for runs `runs` of scenario number `idx`.
fn simulate(
    idx: usize,
    s: &Scenario,
    judges: &[Judge],
    runs: std::ops::Range<usize>,
) -> Vec<Vec<Option<u64>>> {
    let mut out = vec![Vec::new(); judges.len()];
    for r in runs {
        let run = generate(s, seed(idx, r));
        for (j, judge) in judges.iter().enumerate() {
            // A rollback before the onset of a bad scenario is a false rollback: the bad
            // canary it should have caught never ran, so it counts as never detected.
            out[j].push(
                judge
                    .first_rollback(&run)
                    .filter(|t| s.healthy || *t >= run.onset_secs)
                    .map(|t| t - run.onset_secs.min(t)),
            );
        }
    }
    out
}

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    let pos = ((q * sorted.len() as f64).ceil() as usize).max(1) - 1;
    sorted.get(pos).copied().filter(|t| *t != u64::MAX)
}

/// Runs `runs` seeds of every scenario through every judge on `threads` threads.
pub fn run(
    scenarios: &[Scenario],
    judges: &[Judge],
    runs: usize,
    threads: usize,
) -> Vec<ScenarioReport> {
    let threads = threads.max(1);
    scenarios
        .iter()
        .enumerate()
        .map(|(idx, s)| {
            let judges: Vec<Judge> = judges.iter().filter(|j| j.applies(s)).cloned().collect();
            let judges = &judges;
            let chunk = runs.div_ceil(threads);
            let parts: Vec<Vec<Vec<Option<u64>>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let range = (t * chunk).min(runs)..((t + 1) * chunk).min(runs);
                        scope.spawn(move || simulate(idx, s, judges, range))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            let cells = judges
                .iter()
                .enumerate()
                .map(|(j, judge)| {
                    let times: Vec<Option<u64>> = parts
                        .iter()
                        .flat_map(|p| p.get(j).cloned().unwrap_or_default())
                        .collect();
                    let mut sorted: Vec<u64> =
                        times.iter().map(|t| t.unwrap_or(u64::MAX)).collect();
                    sorted.sort_unstable();
                    Cell {
                        judge: judge.name(),
                        runs: times.len(),
                        rollbacks: times.iter().flatten().count(),
                        detected_60m: times.iter().flatten().filter(|t| **t <= RUN_SECS).count(),
                        median_secs: quantile(&sorted, 0.5),
                        p90_secs: quantile(&sorted, 0.9),
                        // Healthy runs keep their times from the canary's start.
                        before_incident: s
                            .incident_from()
                            .map(|from| times.iter().flatten().filter(|t| **t < from).count()),
                    }
                })
                .collect();
            ScenarioReport {
                scenario: s.name,
                healthy: s.healthy,
                cells,
            }
        })
        .collect()
}

fn duration(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) => format!("{:.1} min", s as f64 / 60.0),
    }
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        return "-".into();
    }
    format!("{:.1}%", 100.0 * n as f64 / d as f64)
}

/// The markdown table for docs/decision-quality.md.
pub fn markdown(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | truth | judge | false rollbacks | detected within 60 min | median detection | p90 detection |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        for c in &r.cells {
            let (false_rb, detected, median, p90) = if r.healthy {
                let false_rb = match c.before_incident {
                    Some(b) => format!(
                        "{} ({} before the incident)",
                        pct(c.rollbacks, c.runs),
                        pct(b, c.runs)
                    ),
                    None => pct(c.rollbacks, c.runs),
                };
                (false_rb, "-".into(), "-".into(), "-".into())
            } else {
                (
                    "-".into(),
                    pct(c.detected_60m, c.runs),
                    duration(c.median_secs),
                    duration(c.p90_secs),
                )
            };
            out.push_str(&format!(
                "| {} | {} | {} | {false_rb} | {detected} | {median} | {p90} |\n",
                r.scenario,
                if r.healthy { "healthy" } else { "bad" },
                c.judge
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_treat_missed_runs_as_never() {
        let mut v = vec![30, 60, u64::MAX, u64::MAX];
        v.sort_unstable();
        assert_eq!(quantile(&v, 0.5), Some(60));
        assert_eq!(quantile(&v, 0.9), None);
    }

    #[test]
    fn shared_incident_rows_say_how_many_rollbacks_came_before_the_incident() {
        let shared: Vec<_> = crate::quality::scenario::catalogue()
            .into_iter()
            .filter(|s| s.incident_from().is_some())
            .collect();
        assert_eq!(shared.len(), 2);
        let reports = run(&shared[..1], &Judge::all(), 4, 2);
        for c in &reports[0].cells {
            let before = c.before_incident.expect("a shared scenario counts them");
            assert!(before <= c.rollbacks, "{c:?}");
        }
        // Flagger rolls back every shared incident (some of them before it, on noise).
        let flagger = reports[0]
            .cells
            .iter()
            .find(|c| c.judge == "Flagger")
            .unwrap();
        assert_eq!(flagger.rollbacks, 4);
        let table = markdown(&reports);
        let row = format!(
            "| Flagger | 100.0% ({} before the incident) |",
            pct(flagger.before_incident.unwrap(), 4)
        );
        assert!(table.contains(&row), "{table}");
    }

    #[test]
    fn a_small_run_produces_one_row_per_scenario_and_judge() {
        let scenarios: Vec<_> = crate::quality::scenario::catalogue()
            .into_iter()
            .take(2)
            .collect();
        let reports = run(&scenarios, &Judge::all(), 3, 2);
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|r| r.cells.iter().all(|c| c.runs == 3)));
        let table = markdown(&reports);
        // Healthy scenarios have no effect to tell the three ceilings: three rows fewer each.
        assert_eq!(table.lines().count(), 2 + 2 * (Judge::all().len() - 3));
    }
}
