use super::*;
use crate::source::mapping::into_instant_series;
use crate::source::{Series, SourceError};
use prometheus_http_query::response::Data;

fn by() -> SplitLabels {
    SplitLabels::default()
}

fn split(body: &str) -> Result<Vec<SplitSeries>, SourceError> {
    parse_split(body.as_bytes(), &by())
}

fn one(service: &str, track: Track, value: f64) -> SplitSeries {
    SplitSeries {
        service: service.into(),
        track,
        value,
    }
}

#[test]
fn a_vector_keeps_service_track_and_value_and_skips_other_labels() {
    let got = split(
        r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x","service":"checkout","track":"canary","pod":"p-1"},"value":[1700000000.5,"0.25"]},
            {"metric":{"track":"stable","service":"che\"ckout"},"value":[1700000000.5,"+Inf"]},
            {"metric":{"service":"cart","track":"blue"},"value":[1,"1"]},
            {"metric":{"track":"canary"},"value":[1,"1"]}]},
            "warnings":["partial"]}"#,
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            one("checkout", Track::Canary, 0.25),
            one("che\"ckout", Track::Stable, f64::INFINITY)
        ]
    );
}

#[test]
fn result_before_result_type_and_nan_values_parse() {
    let got = split(
        r#"{"data":{"result":[{"value":[1,"NaN"],"metric":{"service":"a","track":"stable"}}],"resultType":"vector"},"status":"success"}"#,
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].value.is_nan());
}

#[test]
fn declared_labels_pick_their_own_names() {
    let labels = SplitLabels::new("app", "version");
    let got = parse_split(
        br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"service":"x","track":"canary","app":"b","version":"stable"},"value":[1,"3"]}]}}"#,
        &labels,
    )
    .unwrap();
    assert_eq!(got, vec![one("b", Track::Stable, 3.0)]);
}

#[test]
fn a_matrix_is_the_same_clear_error_as_the_general_reader() {
    let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{"service":"x","track":"canary"},"values":[[100,"1"]]}]}}"#;
    let err = split(body).unwrap_err();
    assert_eq!(err.reason(), "parse");
    let data: serde_json::Value = serde_json::from_str(body).unwrap();
    let general: Data = serde_json::from_value(data["data"].clone()).unwrap();
    let general = into_instant_series(general).unwrap_err();
    assert_eq!(err, general, "same words as the general reader");
    assert!(err.to_string().contains("[range]"), "{err}");
}

#[test]
fn a_scalar_or_an_empty_vector_has_no_series() {
    let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[10,"NaN"]}}"#;
    assert_eq!(split(scalar).unwrap(), vec![]);
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(split(empty).unwrap(), vec![]);
}

#[test]
fn prometheus_errors_keep_their_kind_and_message() {
    let err = split(r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#)
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Promql {
            kind: "bad_data".into(),
            message: "1:5: parse error".into()
        }
    );
    assert_eq!(err.reason(), "bad_data");
}

#[test]
fn garbage_is_a_parse_error_naming_the_problem() {
    for body in [
        r#"{"status":"success","data":42}"#,
        r#"{"status":"success"}"#,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#,
        r#"{"status":"success","data":{"resultType":"string","result":[1,"hi"]}}"#,
        "not json",
    ] {
        let err = split(body).unwrap_err();
        assert_eq!(err.reason(), "parse", "{body}: {err}");
    }
}

/// The split reader and the general reader (then indexed by labels) agree on any vector.
#[test]
fn split_reader_agrees_with_the_general_reader() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"service":"a","track":"canary","code":"500"},"value":[1,"0.5"]},
        {"metric":{"service":"a","track":"stable"},"value":[1,"-Inf"]},
        {"metric":{"service":"b","track":"stable","le":"0.1"},"value":[1,"7"]}]}}"#;
    let data: serde_json::Value = serde_json::from_str(body).unwrap();
    let general: Vec<Series> =
        into_instant_series(serde_json::from_value(data["data"].clone()).unwrap()).unwrap();
    let expected: Vec<SplitSeries> = general
        .iter()
        .map(|s| {
            one(
                &s.labels["service"],
                track_named(&s.labels["track"]).unwrap(),
                s.value,
            )
        })
        .collect();
    assert_eq!(split(body).unwrap(), expected);
}
