//! Pure translation from prometheus-http-query results and errors to ours.
//!
//! The crate reports NaN and ±Inf as ordinary `f64` values, an empty result as an empty vector,
//! and folds transport, status and parse failures into one `Client` error. The engine needs each
//! of those told apart, so this module does the classification in one place.

use super::{Labels, RangeSeries, Series, SourceError};
use crate::sample::{Millis, Observation, Sample};
use prometheus_http_query::response::Data;
use prometheus_http_query::Error as PromError;
use std::collections::HashMap;

/// Reason label when a query meant for one series returned several: the policy's query does not
/// aggregate enough (e.g. a missing `sum by`).
pub const MULTIPLE_SERIES: &str = "multiple_series";

/// The observation for a query that should yield at most one series.
pub fn observation(result: &Result<Vec<Series>, SourceError>) -> Observation {
    match result {
        Err(e) => Observation::Error(e.reason().to_string()),
        Ok(series) => match series.as_slice() {
            [] => Observation::Absent,
            [one] => Observation::from_f64(one.value),
            _ => Observation::Error(MULTIPLE_SERIES.to_string()),
        },
    }
}

fn labels(map: &HashMap<String, String>) -> Labels {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Seconds (Prometheus API timestamps) to our milliseconds.
pub fn seconds_to_millis(ts: f64) -> Millis {
    (ts * 1000.0).round() as Millis
}

/// Our milliseconds to the whole seconds prometheus-http-query accepts (rounded down: a query
/// never looks past the instant it was asked about).
pub fn millis_to_seconds(ms: Millis) -> i64 {
    ms.div_euclid(1000)
}

/// An instant query answer as series. A scalar (e.g. `0/0`) is a single series without labels.
pub fn instant_series(data: &Data) -> Result<Vec<Series>, SourceError> {
    into_instant_series(data.clone())
}

/// [`instant_series`] taking the answer: the label strings move into the series instead of
/// being copied (a batched answer at 10,000 services holds 20,000 label sets).
pub fn into_instant_series(data: Data) -> Result<Vec<Series>, SourceError> {
    match data {
        Data::Vector(v) => Ok(v
            .into_iter()
            .map(|s| {
                let (metric, sample) = s.into_inner();
                Series {
                    labels: metric.into_iter().collect(),
                    value: sample.value(),
                }
            })
            .collect()),
        Data::Scalar(s) => Ok(vec![Series {
            labels: Labels::new(),
            value: s.value(),
        }]),
        Data::Matrix(_) => Err(SourceError::Parse {
            detail: "an instant query returned a range vector (matrix); \
                     remove the `[range]` selector at the top level of the query"
                .into(),
        }),
    }
}

/// A range query answer as series of classified samples.
pub fn range_series(data: &Data) -> Result<Vec<RangeSeries>, SourceError> {
    match data {
        Data::Matrix(m) => Ok(m
            .iter()
            .map(|s| RangeSeries {
                labels: labels(s.metric()),
                samples: s
                    .samples()
                    .iter()
                    .map(|p| Sample::value(seconds_to_millis(p.timestamp()), p.value()))
                    .collect(),
            })
            .collect()),
        Data::Vector(_) | Data::Scalar(_) => Err(SourceError::Parse {
            detail: "a range query did not return a matrix".into(),
        }),
    }
}

/// Classifies a prometheus-http-query error.
pub fn classify(err: &PromError) -> SourceError {
    match err {
        PromError::Prometheus(e) => SourceError::Promql {
            kind: e.error_type().to_string(),
            message: e.message().to_string(),
        },
        PromError::Client(c) => match c.inner() {
            Some(inner) => classify_reqwest(inner, &c.to_string()),
            None => SourceError::Parse {
                detail: c.to_string(),
            },
        },
        PromError::ParseUrl(e) => SourceError::Config {
            detail: format!(
                "invalid Prometheus URL: {e}; set prometheus.url to e.g. http://prometheus:9090"
            ),
        },
        other => SourceError::Parse {
            detail: other.to_string(),
        },
    }
}

/// Classifies a transport error. Timeout is checked first: a connect timeout is a timeout.
pub fn classify_reqwest(err: &reqwest::Error, context: &str) -> SourceError {
    let detail = format!("{context}: {}", chain(err));
    if err.is_timeout() {
        SourceError::Timeout { detail }
    } else if err.is_connect() {
        SourceError::Connect { detail }
    } else if let Some(status) = err.status() {
        SourceError::HttpStatus {
            status: status.as_u16(),
            detail,
        }
    } else if err.is_decode() || err.is_body() {
        SourceError::Parse { detail }
    } else {
        SourceError::Connect { detail }
    }
}

/// The error with its causes, so "connection refused" is not hidden behind "error sending request".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Data {
        serde_json::from_str(json).unwrap()
    }

    fn series(values: &[f64]) -> Result<Vec<Series>, SourceError> {
        Ok(values
            .iter()
            .map(|v| Series {
                labels: Labels::new(),
                value: *v,
            })
            .collect())
    }

    #[test]
    fn nan_and_infinities_are_not_finite_not_zero() {
        let d = data(
            r#"{"resultType":"vector","result":[
                {"metric":{"track":"a"},"value":[1.5,"NaN"]},
                {"metric":{"track":"b"},"value":[1.5,"+Inf"]},
                {"metric":{"track":"c"},"value":[1.5,"-Inf"]},
                {"metric":{"track":"d"},"value":[1.5,"0"]}]}"#,
        );
        let s = instant_series(&d).unwrap();
        let obs: Vec<Observation> = s.iter().map(|s| Observation::from_f64(s.value)).collect();
        assert!(matches!(obs[0], Observation::NotFinite(v) if v.is_nan()));
        assert_eq!(obs[1], Observation::NotFinite(f64::INFINITY));
        assert_eq!(obs[2], Observation::NotFinite(f64::NEG_INFINITY));
        assert_eq!(obs[3], Observation::Value(0.0));
        assert_eq!(s[0].labels.get("track").map(String::as_str), Some("a"));
    }

    #[test]
    fn empty_vector_is_absent_and_errors_keep_their_reason() {
        assert_eq!(observation(&series(&[])), Observation::Absent);
        assert_eq!(observation(&series(&[0.25])), Observation::Value(0.25));
        let err = SourceError::Promql {
            kind: "bad_data".into(),
            message: "parse error".into(),
        };
        assert_eq!(
            observation(&Err(err)),
            Observation::Error("bad_data".into())
        );
        assert_eq!(
            observation(&series(&[1.0, 2.0])),
            Observation::Error(MULTIPLE_SERIES.into())
        );
    }

    #[test]
    fn scalar_result_is_one_unlabelled_series() {
        let d = data(r#"{"resultType":"scalar","result":[10,"NaN"]}"#);
        let s = instant_series(&d).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].labels.is_empty());
        assert!(s[0].value.is_nan());
    }

    #[test]
    fn matrix_samples_keep_time_and_classification() {
        let d = data(
            r#"{"resultType":"matrix","result":[
                {"metric":{"service":"x"},"values":[[100,"1"],[101.5,"NaN"]]}]}"#,
        );
        let r = range_series(&d).unwrap();
        assert_eq!(r[0].samples[0], Sample::value(100_000, 1.0));
        assert_eq!(r[0].samples[1].at, 101_500);
        assert!(matches!(r[0].samples[1].obs, Observation::NotFinite(_)));
        assert!(instant_series(&d).is_err());
    }

    #[test]
    fn promql_error_kinds_become_reasons() {
        for (kind, reason) in [
            ("bad_data", "bad_data"),
            ("timeout", "timeout"),
            ("execution", "execution"),
            ("weird", "promql"),
        ] {
            let e = SourceError::Promql {
                kind: kind.into(),
                message: String::new(),
            };
            assert_eq!(e.reason(), reason);
        }
    }

    #[test]
    fn time_conversions_round_trip_to_seconds() {
        assert_eq!(seconds_to_millis(1.2345), 1235);
        assert_eq!(millis_to_seconds(1999), 1);
        assert_eq!(millis_to_seconds(-1), -1);
    }
}
