//! Times on the command line and in the output. `now` is passed in, so parsing is pure and a
//! drill script gets the same window from the same arguments.

use super::BacktestError;
use crate::sample::Millis;
use std::time::Duration;

/// Parses `--{flag}`: an RFC 3339 time (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00+02:00`,
/// `2024-05-01 10:00:00` is read as UTC), `now`, or a time before now (`-2h`, `now-90m`).
pub fn parse_time(flag: &'static str, text: &str, now: Millis) -> Result<Millis, BacktestError> {
    let err = |why: String| BacktestError::Time {
        flag,
        value: text.to_string(),
        why,
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let relative = t
        .strip_prefix("now-")
        .or_else(|| t.strip_prefix("now -"))
        .or_else(|| t.strip_prefix('-'));
    if let Some(ago) = relative {
        let d = humantime::parse_duration(ago.trim())
            .map_err(|e| err(format!("not a duration ({e})")))?;
        return Ok(now.saturating_sub(millis(d)));
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    match humantime::parse_rfc3339_weak(t) {
        Ok(st) => match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Ok(millis(d)),
            Err(_) => Err(err("before 1970".into())),
        },
        Err(e) => Err(err(format!("not a time ({e})"))),
    }
}

pub use crate::sample::rfc3339;

/// A duration as people write it (`1m 30s`), for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub(crate) fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_714_557_600_000; // 2024-05-01T10:00:00Z

    #[test]
    fn absolute_relative_and_now_are_accepted() {
        assert_eq!(parse_time("from", "now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("from", "-2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(parse_time("from", "now-90m", NOW).unwrap(), NOW - 5_400_000);
        assert_eq!(parse_time("from", "2024-05-01T10:00:00Z", 0).unwrap(), NOW);
        assert_eq!(
            parse_time("from", "2024-05-01T12:00:00+02:00", 0).unwrap(),
            NOW
        );
        assert_eq!(parse_time("from", "2024-05-01 10:00:00", 0).unwrap(), NOW);
        assert_eq!(rfc3339(NOW), "2024-05-01T10:00:00Z");
        assert_eq!(rfc3339(NOW + 250), "2024-05-01T10:00:00.25Z");
    }

    #[test]
    fn a_bad_time_names_the_flag_and_the_accepted_forms() {
        let e = parse_time("to", "yesterday", NOW).unwrap_err().to_string();
        assert!(e.starts_with("--to \"yesterday\""), "{e}");
        assert!(e.contains("RFC 3339") && e.contains("-2h"), "{e}");
        let e = parse_time("from", "-2 fortnights", NOW)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
