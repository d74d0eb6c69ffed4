//! The judge over a real board driven by the real engine, and its routes called over HTTP exactly
//! as Argo Rollouts' `web` provider (GET, headers, 10 s timeout, `jsonPath: "{$.result}"`, then
//! `successCondition` / `failureCondition` on the value) and Flagger's webhook client (POST of
//! `CanaryWebhookPayload` as JSON, a check passes on a status <= 202) make them.

use super::api::router;
use super::*;
use crate::decision::{Engine, Phase};
use crate::lifecycle::{CanaryId, Release};
use crate::policy::{Level, MetricSpec, Policy};
use crate::sample::{Sample, Track};
use crate::status::Evaluation;
use std::time::Duration;

const T0: Millis = 1_700_000_000_000;

/// A board whose service `demo/shop` has been evaluated with the canary's error ratio at
/// `values` in turn (stable 0.001): warning above 0.01, critical above 0.05, no `for`.
fn board_after(values: &[Option<f64>]) -> StatusBoard {
    let p = Policy::test()
        .with_service("shop", "demo")
        .with_interval(Duration::from_secs(10))
        .with_warmup(Duration::ZERO)
        .with_metric(
            MetricSpec::test("error_ratio")
                .warning(Level::above(0.01))
                .critical(Level::above(0.05)),
        );
    let board = StatusBoard::new("backout-0");
    board.sync([(&p, false)]);
    let mut engine = Engine::new(&p, "7");
    let release = Release::Canary {
        id: CanaryId {
            revision: 7,
            template_hash: "abc".into(),
        },
        since: T0,
    };
    for (i, v) in values.iter().enumerate() {
        let now = T0 + 10_000 * i as Millis;
        let mut polls = vec![("error_ratio".to_string(), Track::Stable, 0.001)];
        if let Some(v) = v {
            polls.push(("error_ratio".to_string(), Track::Canary, *v));
        }
        for (m, t, x) in &polls {
            engine.observe(m, *t, Sample::value(now, *x)).unwrap();
        }
        let verdict = engine.evaluate(now, Phase::Canary { started_at: T0 });
        board.record([(
            "demo/shop",
            Evaluation {
                at: now,
                release: &release,
                events: &[],
                verdict: Some(&verdict),
                polls: &polls,
                error: None,
                shard: 0,
                acting: true,
            },
        )]);
    }
    board
}

fn shop(board: &StatusBoard) -> Judgement {
    judge(&board.status("demo", "shop").unwrap())
}

#[test]
fn healthy_passes_warning_and_missing_data_are_inconclusive_critical_fails() {
    assert_eq!(shop(&board_after(&[])).result, Outcome::Inconclusive);
    let healthy = shop(&board_after(&[Some(0.001), Some(0.002)]));
    assert_eq!((healthy.result, healthy.pass), (Outcome::Pass, true));
    assert_eq!(healthy.canary_revision, Some(7));
    assert_eq!(healthy.metrics[0].canary, Some(0.002));
    let warning = shop(&board_after(&[Some(0.02)]));
    assert_eq!(warning.result, Outcome::Inconclusive);
    assert!(
        warning.reasons[0].contains("error_ratio"),
        "{:?}",
        warning.reasons
    );
    let mut gap = vec![Some(0.001)];
    gap.extend([None; 30]);
    let no_data = shop(&board_after(&gap));
    assert_eq!(no_data.result, Outcome::Inconclusive, "{no_data:?}");
    let critical = shop(&board_after(&[Some(0.001), Some(0.09)]));
    assert_eq!((critical.result, critical.fail), (Outcome::Fail, true));
    assert!(
        critical.reasons[0].starts_with("error_ratio critical"),
        "{:?}",
        critical.reasons
    );
    // The rollback is sticky: the canary recovering does not turn the judgement back.
    let later = shop(&board_after(&[Some(0.09), Some(0.001)]));
    assert_eq!(later.result, Outcome::Fail);
}

async fn serve(board: StatusBoard) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(board)).await });
    format!("http://{addr}")
}

/// What Argo's web provider does: GET with the template's headers and a 10 s timeout, a non-2xx
/// is a measurement error; the JSON's `{$.result}` is `result` for the conditions
/// `successCondition: result == "pass"` and `failureCondition: result == "fail"`.
async fn argo_measure(base: &str, ns: &str, svc: &str) -> Result<&'static str, u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .get(format!("{base}/api/v1/analysis/{ns}/{svc}"))
        .header("Authorization", "Bearer token-from-args")
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    if !(200..300).contains(&code) {
        return Err(code);
    }
    let body: serde_json::Value = resp.json().await.unwrap();
    let result = &body["result"];
    Ok(if result == "pass" {
        "Successful"
    } else if result == "fail" {
        "Failed"
    } else {
        "Inconclusive"
    })
}

#[tokio::test]
async fn argo_web_provider_reads_pass_fail_and_inconclusive_from_result() {
    let pass = serve(board_after(&[Some(0.001)])).await;
    assert_eq!(argo_measure(&pass, "demo", "shop").await, Ok("Successful"));
    let fail = serve(board_after(&[Some(0.2)])).await;
    assert_eq!(argo_measure(&fail, "demo", "shop").await, Ok("Failed"));
    let warn = serve(board_after(&[Some(0.02)])).await;
    assert_eq!(
        argo_measure(&warn, "demo", "shop").await,
        Ok("Inconclusive")
    );
    assert_eq!(argo_measure(&pass, "demo", "nope").await, Err(404));
    let body: serde_json::Value = reqwest::get(format!("{fail}/api/v1/analysis/demo/shop"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&body["fail"], &body["pass"]),
        (&true.into(), &false.into())
    );
    assert!(
        body["reasons"][0].as_str().unwrap().contains("0.2"),
        "{body}"
    );
    assert_eq!(body["replica"], "backout-0");
}

/// What Flagger's `CallWebhook` sends: the payload as JSON with `Content-Type: application/json`,
/// a check failing on any status above 202 with the body as the error.
async fn flagger_check(
    base: &str,
    gate: &str,
    name: &str,
    metadata: serde_json::Value,
) -> (bool, String) {
    let payload = serde_json::json!({
        "name": name,
        "namespace": "demo",
        "phase": "Progressing",
        "checksum": "6f5a3c2d1b",
        "metadata": metadata,
    });
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/flagger/{gate}"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&payload).unwrap())
        .send()
        .await
        .unwrap();
    let ok = resp.status().as_u16() <= 202;
    (ok, resp.text().await.unwrap())
}

#[tokio::test]
async fn flagger_rollout_webhook_fails_only_on_a_fail_and_promotion_only_passes_on_a_pass() {
    let none = serde_json::json!({});
    let pass = serve(board_after(&[Some(0.001)])).await;
    assert!(
        flagger_check(&pass, "rollout", "shop", none.clone())
            .await
            .0
    );
    assert!(
        flagger_check(&pass, "confirm-promotion", "shop", none.clone())
            .await
            .0
    );

    let warn = serve(board_after(&[Some(0.02)])).await;
    assert!(
        flagger_check(&warn, "rollout", "shop", none.clone())
            .await
            .0,
        "a warning must not count towards Flagger's rollback threshold"
    );
    let (ok, body) = flagger_check(&warn, "confirm-promotion", "shop", none.clone()).await;
    assert!(!ok && body.contains("inconclusive"), "{body}");

    let fail = serve(board_after(&[Some(0.2)])).await;
    let (ok, body) = flagger_check(&fail, "rollout", "shop", none.clone()).await;
    assert!(!ok, "{body}");
    assert!(
        body.starts_with("backout judges demo/shop fail: error_ratio critical"),
        "{body}"
    );

    // The Canary's name differs from the service: metadata.service names it.
    let meta = serde_json::json!({"service": "shop", "cmd": "ignored"});
    assert!(!flagger_check(&fail, "rollout", "podinfo", meta).await.0);
    let (ok, body) = flagger_check(&fail, "rollout", "podinfo", none.clone()).await;
    assert!(
        !ok && body.contains("no policy for service demo/podinfo"),
        "{body}"
    );
    let (ok, body) = flagger_check(&fail, "event", "shop", none).await;
    assert!(!ok && body.contains("no Flagger gate"), "{body}");
}
