//! The adapter against a tiny fake Prometheus (axum) for each failure class a user can hit.

use super::*;
use crate::sample::Observation;
use crate::source::mapping::observation;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

type Seen = Arc<Mutex<Vec<(HashMap<String, String>, Option<String>)>>>;

/// Starts a fake `/api/v1/query` answering with `reply`; records form params and auth headers.
async fn fake(reply: fn() -> Response) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let rec = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(
            move |headers: HeaderMap, axum::extract::Form(p): axum::extract::Form<HashMap<String, String>>| {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                rec.lock().unwrap().push((p, auth));
                async move { reply() }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A successful instant query with no series.
fn empty_vector() -> Response {
    json(
        StatusCode::OK,
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )
}

fn source(url: &str) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig::for_url(url)).unwrap()
}

#[tokio::test]
async fn nan_vector_value_is_not_finite_and_time_is_passed_through() {
    let (url, seen) = fake(|| {
        json(
            StatusCode::OK,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
        )
    })
    .await;
    let r = source(&url).instant("x", Some(1_700_000_000_500)).await;
    assert!(matches!(observation(&r), Observation::NotFinite(v) if v.is_nan()));
    let (params, _) = seen.lock().unwrap()[0].clone();
    assert_eq!(params["time"], "1700000000.500");
    assert_eq!(params["query"], "x");
}

#[tokio::test]
async fn query_timeout_is_sent_but_never_above_nine_tenths_of_http_timeout() {
    let (url, seen) = fake(empty_vector).await;
    for (query_timeout, http_timeout) in [(3, 10), (10, 10)] {
        let cfg = PrometheusConfig {
            query_timeout: Duration::from_secs(query_timeout),
            http_timeout: Duration::from_secs(http_timeout),
            ..PrometheusConfig::for_url(&url)
        };
        let src = PrometheusSource::new(&cfg).unwrap();
        src.instant("x", None).await.unwrap();
    }
    let sent: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p["timeout"].clone())
        .collect();
    assert_eq!(sent, ["3000ms", "9000ms"]);
}

#[tokio::test]
async fn bad_promql_is_bad_data() {
    let (url, _) = fake(|| {
        json(
            StatusCode::BAD_REQUEST,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#,
        )
    })
    .await;
    let err = source(&url).instant("sum(", None).await.unwrap_err();
    assert_eq!(err.reason(), "bad_data");
    assert!(err.to_string().contains("parse error"), "{err}");
}

#[tokio::test]
async fn proxy_500_without_json_is_an_http_status_error() {
    let (url, _) =
        fake(|| (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response()).await;
    let err = source(&url).instant("x", None).await.unwrap_err();
    assert_eq!(err.reason(), "http_status");
    assert!(
        matches!(err, SourceError::HttpStatus { status: 500, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_json_is_a_parse_error() {
    let (url, _) = fake(|| json(StatusCode::OK, r#"{"status":"success","data":42}"#)).await;
    let err = source(&url).instant("x", None).await.unwrap_err();
    assert_eq!(err.reason(), "parse");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept connections and hold them open without ever answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let cfg = PrometheusConfig {
        http_timeout: Duration::from_millis(300),
        query_timeout: Duration::from_millis(200),
        ..PrometheusConfig::for_url(format!("http://{addr}"))
    };
    let err = PrometheusSource::new(&cfg)
        .unwrap()
        .instant("x", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "timeout", "{err}");
}

#[tokio::test]
async fn refused_connection_is_connect() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = source(&format!("http://{addr}"))
        .instant("x", None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "connect", "{err}");
    assert_eq!(observation(&Err(err)), Observation::Error("connect".into()));
}

#[tokio::test]
async fn rotated_bearer_token_is_sent_on_the_next_query() {
    let (url, seen) = fake(empty_vector).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "old").unwrap();
    let cfg = PrometheusConfig {
        bearer_token_file: Some(token.clone()),
        ..PrometheusConfig::for_url(&url)
    };
    let src = PrometheusSource::new(&cfg).unwrap();
    assert_eq!(src.instant("x", None).await.unwrap(), vec![]);
    std::fs::write(&token, "rotated-token").unwrap();
    src.instant("x", None).await.unwrap();
    let auths: Vec<Option<String>> = seen.lock().unwrap().iter().map(|s| s.1.clone()).collect();
    assert_eq!(
        auths,
        vec![
            Some("Bearer old".to_string()),
            Some("Bearer rotated-token".to_string())
        ]
    );
}

#[tokio::test]
async fn rate_limit_makes_excess_queries_wait_not_fail() {
    let (url, seen) = fake(empty_vector).await;
    let cfg = PrometheusConfig {
        rate_limit: 20.0,
        burst: Some(1),
        ..PrometheusConfig::for_url(&url)
    };
    let src = PrometheusSource::new(&cfg).unwrap();
    let start = std::time::Instant::now();
    let results = futures::future::join_all((0..5).map(|_| src.instant("x", None))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(seen.lock().unwrap().len(), 5);
    // 5 queries at 20/s with no burst need at least 4 intervals of 50 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn unreadable_ca_file_names_the_key() {
    let cfg = PrometheusConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..PrometheusConfig::default()
    };
    let err = PrometheusSource::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("prometheus.ca_file"), "{err}");
}

#[test]
fn ca_file_without_certificates_is_rejected_and_a_real_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cfg = PrometheusConfig {
        ca_file: Some(junk),
        ..PrometheusConfig::default()
    };
    let err = PrometheusSource::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("contains no PEM certificate"), "{err}");
    let cfg = PrometheusConfig {
        ca_file: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"),
        ),
        ..PrometheusConfig::default()
    };
    assert!(PrometheusSource::new(&cfg).is_ok());
}

/// A batched answer with more labels than the split needs.
fn batched_vector() -> Response {
    json(
        StatusCode::OK,
        r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"service":"a","track":"canary","le":"0.5"},"value":[1,"0.25"]},
            {"metric":{"service":"b","track":"stable"},"value":[1,"NaN"]}]}}"#,
    )
}

#[tokio::test]
async fn a_split_query_reads_only_service_track_and_value_and_sends_the_same_request() {
    let (url, seen) = fake(batched_vector).await;
    let src = source(&url);
    let by = SplitLabels::default();
    let got = src
        .instant_split("q", Some(1_700_000_000_500), &by)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (&*got[0].service, got[0].track, got[0].value),
        ("a", crate::sample::Track::Canary, 0.25)
    );
    assert!(got[1].value.is_nan());
    let whole = src.instant("q", Some(1_700_000_000_500)).await.unwrap();
    assert_eq!(SplitSeries::from_series(whole, &by).len(), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, seen[1].0, "same form parameters either way");
}

#[tokio::test]
async fn a_split_query_classifies_failures_like_a_whole_one() {
    let by = SplitLabels::default();
    let (url, _) = fake(|| {
        json(
            StatusCode::BAD_REQUEST,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#,
        )
    })
    .await;
    let err = source(&url).instant_split("sum(", None, &by).await;
    let err = err.unwrap_err();
    assert_eq!(err, source(&url).instant("sum(", None).await.unwrap_err());
    let (url, _) =
        fake(|| (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response()).await;
    let err = source(&url)
        .instant_split("x", None, &by)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::HttpStatus { status: 500, .. }),
        "{err:?}"
    );
    let (url, _) = fake(|| (StatusCode::OK, "<html>").into_response()).await;
    let err = source(&url)
        .instant_split("x", None, &by)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "parse", "{err}");
    let (url, _) = fake(|| json(StatusCode::OK, r#"{"status":"success","data":42}"#)).await;
    let err = source(&url)
        .instant_split("x", None, &by)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "parse", "{err}");
}
