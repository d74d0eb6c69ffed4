//! An instant query's JSON answer read straight into (service, track, value) triples.
//!
//! A batched query's answer is only ever split by two labels. Parsing it the general way (the
//! client crate's `Data`) builds a label map per series through serde's buffered `Content` for
//! its tagged enums, then our [`super::Series`] copies it again: at 10,000 services that was the
//! largest share of the daemon's heap peak. This reader walks the response once and keeps, per
//! series, the service label's value and the track; every other label is skipped unread. The
//! classification of failures (Prometheus errors, a matrix, garbage) is the same as
//! [`super::mapping`]'s.

use super::plan::track_named;
use super::{SourceError, SplitLabels, SplitSeries};
use crate::sample::Track;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The same words as [`super::mapping::into_instant_series`]: a matrix is a policy mistake.
pub const MATRIX: &str = "an instant query returned a range vector (matrix); \
                          remove the `[range]` selector at the top level of the query";

/// Parses an `/api/v1/query` response body. Series without both labels, or whose track label is
/// not a track name, are left out (no key could ask for them).
pub fn parse_split(body: &[u8], by: &SplitLabels) -> Result<Vec<SplitSeries>, SourceError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let envelope = EnvelopeSeed(by)
        .deserialize(&mut de)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| SourceError::Parse {
            detail: format!("failed to parse JSON response from server: {e}"),
        })?;
    match envelope.status.as_deref() {
        Some("success") => {}
        Some("error") => {
            return Err(SourceError::Promql {
                kind: envelope.error_type.unwrap_or_default(),
                message: envelope.error.unwrap_or_default(),
            })
        }
        other => {
            return Err(SourceError::Parse {
                detail: format!("unexpected response status {other:?}"),
            })
        }
    }
    let Some(data) = envelope.data else {
        return Err(parse("a successful response without `data`"));
    };
    match (data.result_type.as_deref(), data.result) {
        (Some("vector"), Some(Parsed::Series(s))) => Ok(s),
        // `[]`: an empty vector (its elements' shape cannot be told apart).
        (Some("vector" | "matrix"), Some(Parsed::Empty)) => Ok(Vec::new()),
        (Some("matrix"), Some(_)) => Err(parse(MATRIX)),
        // A scalar has no labels: no key of a split query can be in it.
        (Some("scalar"), Some(Parsed::Scalar)) => Ok(Vec::new()),
        (kind, _) => Err(parse(&format!(
            "`data` is not an instant vector or scalar (resultType {kind:?})"
        ))),
    }
}

fn parse(detail: &str) -> SourceError {
    SourceError::Parse {
        detail: detail.to_string(),
    }
}

struct Envelope {
    status: Option<String>,
    data: Option<DataOut>,
    error_type: Option<String>,
    error: Option<String>,
}

struct DataOut {
    result_type: Option<String>,
    result: Option<Parsed>,
}

/// What `result` held, before `resultType` (which may come after it) says what it should be.
enum Parsed {
    Empty,
    Series(Vec<SplitSeries>),
    /// Elements with `values`: a range vector.
    Matrix,
    /// `[time, "value"]`.
    Scalar,
}

/// A string that borrows from the body when it has no escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct EnvelopeSeed<'a>(&'a SplitLabels);

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API response object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut out = Envelope {
            status: None,
            data: None,
            error_type: None,
            error: None,
        };
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "status" => out.status = Some(map.next_value::<String>()?),
                "data" => out.data = Some(map.next_value_seed(DataSeed(self.0))?),
                "errorType" => out.error_type = Some(map.next_value::<String>()?),
                "error" => out.error = Some(map.next_value::<String>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct DataSeed<'a>(&'a SplitLabels);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = DataOut;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DataOut, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = DataOut;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a query result object with resultType and result")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataOut, A::Error> {
        let mut out = DataOut {
            result_type: None,
            result: None,
        };
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "resultType" => out.result_type = Some(map.next_value::<String>()?),
                "result" => out.result = Some(map.next_value_seed(ResultSeed(self.0))?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct ResultSeed<'a>(&'a SplitLabels);

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = Parsed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = Parsed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        let mut series = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut out = Parsed::Empty;
        while let Some(element) = seq.next_element_seed(ElementSeed(self.0))? {
            match element {
                Element::Sample(kept) => {
                    out = Parsed::Series(Vec::new());
                    series.extend(kept);
                }
                Element::Range => out = Parsed::Matrix,
                Element::Scalar => out = Parsed::Scalar,
            }
        }
        Ok(match out {
            Parsed::Series(_) => Parsed::Series(series),
            other => other,
        })
    }
}

enum Element {
    /// A vector sample; `None` when it lacks a split label.
    Sample(Option<SplitSeries>),
    Range,
    Scalar,
}

struct ElementSeed<'a>(&'a SplitLabels);

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = Element;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Element, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_> {
    type Value = Element;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a series object or a scalar's time and value")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Scalar)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut labels = None;
        let mut value = None;
        let mut range = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "metric" => labels = Some(map.next_value_seed(MetricSeed(self.0))?),
                "value" => {
                    let (_, v): (IgnoredAny, Str<'de>) = map.next_value()?;
                    value = Some(v.0.parse::<f64>().map_err(|_| {
                        de::Error::invalid_value(
                            de::Unexpected::Str(&v.0),
                            &"a float value inside a quoted JSON string",
                        )
                    })?);
                }
                "values" | "histograms" => {
                    range = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if range {
            return Ok(Element::Range);
        }
        let value = value.ok_or_else(|| {
            de::Error::custom("a series without `value` (native histograms are not supported)")
        })?;
        let kept = labels.and_then(|(service, track)| {
            Some(SplitSeries {
                service: service?,
                track: track?,
                value,
            })
        });
        Ok(Element::Sample(kept))
    }
}

/// Keeps the service label's value and the track from a `metric` object; skips the rest.
struct MetricSeed<'a>(&'a SplitLabels);

impl<'de> DeserializeSeed<'de> for MetricSeed<'_> {
    type Value = (Option<Box<str>>, Option<Track>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetricSeed<'_> {
    type Value = (Option<Box<str>>, Option<Track>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a label set")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut service, mut track) = (None, None);
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if *key.0 == *self.0.service {
                service = Some(Box::from(&*map.next_value::<Str<'de>>()?.0));
            } else if *key.0 == *self.0.track {
                track = track_named(&map.next_value::<Str<'de>>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((service, track))
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
