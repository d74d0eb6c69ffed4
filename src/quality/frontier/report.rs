//! The frontier as a table (`quality --frontier`, docs/decision-quality.md): for each effect, the
//! errors each test needs on the expected path as a multiple of the ceiling's.

use super::{favouring, minimax_over, ratio, told_errors, Geometry, Prior};
use crate::decision::main_alpha;
use crate::quality::ceiling::error_steps;
use crate::quality::scenario::{Effect, Scenario, Traffic, CANARY_SHARE};
use crate::stats::sequential::SequentialConfig;
use crate::stats::StatsError;

/// A column of the report: a prior at the alpha it is run at.
struct Column {
    name: String,
    prior: Prior,
    alpha: f64,
}

/// The effects the report has a row for.
const EFFECTS: [f64; 9] = [1.3, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// The frontier for the benchmark's geometry, as the markdown kept in
/// docs/decision-quality.md: for each effect, the errors each test needs on the expected path
/// as a multiple of the ceiling's (the SPRT told the effect at `alpha`), for backout's prior at
/// its test's share of alpha (`main_alpha`), the ceiling told `set`, the minimax mixtures over
/// `set`'s range and over x1.3..x100, and the mixtures over each of those ranges that reach
/// `goal_at.1` at effect `goal_at.0` with the least worst ratio elsewhere.
pub fn report(
    g: &Geometry,
    main_alpha: f64,
    concentrations: &[f64],
    set: &[f64],
    goal_at: (f64, f64),
) -> Result<String, StatsError> {
    let (lo, hi) = (
        set.iter().copied().fold(f64::INFINITY, f64::min),
        set.iter().copied().fold(0.0, f64::max),
    );
    let main = Geometry {
        alpha: main_alpha,
        ..*g
    };
    let plain = |g: &Geometry, lo, hi| minimax_over(g, lo, hi).map(Prior::Points);
    let favoured = |range: (f64, f64)| -> Result<Column, StatsError> {
        let errors = goal_at.1 * told_errors(g, goal_at.0);
        Ok(Column {
            name: format!(
                "x{}..x{}, {:.2} at x{} (alpha {main_alpha})",
                range.0, range.1, goal_at.1, goal_at.0
            ),
            prior: favouring(&main, range, goal_at.0, errors)?,
            alpha: main_alpha,
        })
    };
    let columns = [
        Column {
            name: format!("backout (Beta k {concentrations:?}, alpha {main_alpha})"),
            prior: Prior::Beta(concentrations.to_vec()),
            alpha: main_alpha,
        },
        Column {
            name: format!("ceiling told {set:?}, not which (alpha {})", g.alpha),
            prior: Prior::Points(set.iter().map(|e| (*e, 1.0)).collect()),
            alpha: g.alpha,
        },
        Column {
            name: format!("minimax x{lo}..x{hi} (alpha {})", g.alpha),
            prior: plain(g, lo, hi)?,
            alpha: g.alpha,
        },
        Column {
            name: format!("minimax x{lo}..x{hi} (alpha {main_alpha})"),
            prior: plain(&main, lo, hi)?,
            alpha: main_alpha,
        },
        Column {
            name: format!("minimax x1.3..x100 (alpha {main_alpha})"),
            prior: plain(&main, 1.3, 100.0)?,
            alpha: main_alpha,
        },
        favoured((lo, hi))?,
        favoured((1.3, 100.0))?,
    ];
    table(&columns, g, (lo, hi))
}

/// The markdown table: a row per effect, a column per prior, and each column's worst within
/// `range`.
fn table(columns: &[Column], g: &Geometry, range: (f64, f64)) -> Result<String, StatsError> {
    let (lo, hi) = range;
    let mut out = format!(
        "| effect | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    let mut worst = vec![0.0_f64; columns.len()];
    for effect in EFFECTS {
        let mut row = format!("| x{effect} |");
        for (c, worst) in columns.iter().zip(&mut worst) {
            let at = Geometry {
                alpha: c.alpha,
                ..*g
            };
            let r = ratio(&c.prior, &at, effect)?
                .map(|r| r * told_errors(&at, effect) / told_errors(g, effect));
            if (lo..=hi).contains(&effect) {
                *worst = worst.max(r.unwrap_or(f64::INFINITY));
            }
            row += &r.map_or(" never |".into(), |r| format!(" {r:.2} |"));
        }
        out += &row;
        out += "\n";
    }
    out += &format!("| worst of x{lo}..x{hi} |");
    worst.iter().for_each(|w| out += &format!(" {w:.2} |"));
    Ok(out + "\n")
}

/// The frontier of an error step from the start at fixed traffic (`quality --frontier`): the
/// report above for the benchmark's geometry, headed by what the expected path predicts for
/// the scenario's ceiling and the errors a test may need to stay within `budget` times it
/// (warm-up included, as the table's medians are). `None` for other scenarios.
pub fn for_scenario(
    s: &Scenario,
    cfg: &SequentialConfig,
    warmup_secs: u64,
    budget: f64,
) -> Option<Result<String, StatsError>> {
    let (Traffic::Fixed(rps), Effect::ErrorStep(effect), 0) = (s.traffic, s.effect, s.onset_secs)
    else {
        return None;
    };
    let baseline = s.baseline_error?;
    let g = Geometry {
        share: CANARY_SHARE,
        margin: cfg.margin,
        alpha: cfg.alpha,
    };
    // Errors per second on both tracks once the step is on.
    let rate = rps * baseline * (CANARY_SHARE * effect + 1.0 - CANARY_SHARE);
    let warmup = warmup_secs as f64;
    let counting = told_errors(&g, effect) / rate;
    // The errors within budget: warm-up + counting stays under budget x (warm-up + ceiling's).
    let goal = (budget * (warmup + counting) - warmup) / counting;
    let main = main_alpha(cfg.alpha, Some(1));
    let table = report(
        &g,
        main,
        &cfg.concentrations,
        &error_steps(),
        (effect, goal),
    );
    Some(table.map(|t| {
        format!(
            "{}: the ceiling's expected path needs {:.1} errors, {:.2} min after a {:.0} s \
             warm-up ({:.2} min in all); {budget}x that is {:.2} min, so a test may need at most \
             {goal:.2} times the ceiling's errors.\n\n{t}",
            s.name,
            told_errors(&g, effect),
            counting / 60.0,
            warmup,
            (warmup + counting) / 60.0,
            budget * (warmup + counting) / 60.0,
        )
    }))
}
