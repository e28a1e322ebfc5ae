//! In-process tests of the whole router: a fast stable and a slow, dead or disagreeing
//! shadow, each a local HTTP server on a free port.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{MirrorArgs, serve};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: MirrorArgs,
}

#[derive(Clone, Default)]
struct Upstream {
    delay: Duration,
    label: &'static str,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn predict(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 2], String) {
    upstream.seen.lock().unwrap().push(headers);
    tokio::time::sleep(upstream.delay).await;
    let echo = String::from_utf8_lossy(&body).into_owned();
    (
        StatusCode::CREATED,
        [("content-type", "application/json"), ("x-upstream", "yes")],
        format!(
            r#"{{"predictions":[{{"label":"{}","score":0.75}}],"echo":{}}}"#,
            upstream.label,
            serde_json::Value::String(echo)
        ),
    )
}

async fn start_upstream(upstream: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/predict", post(predict))
        .with_state(upstream);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A port nothing listens on.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

struct Running {
    addr: SocketAddr,
    metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), crate::Error>>,
}

async fn start_router(flags: &[String]) -> Running {
    let cli =
        Cli::try_parse_from(std::iter::once("mirror".to_owned()).chain(flags.iter().cloned()))
            .unwrap();
    let config = cli.args.validate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(config, listener, metrics_listener, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(stop),
        done,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn post_predict(
    addr: SocketAddr,
    body: &'static str,
    headers: &[(&'static str, &'static str)],
) -> (u16, HeaderMap, Bytes, Duration) {
    let mut request =
        Request::post(format!("http://{addr}/predict")).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let start = Instant::now();
    let response = client()
        .request(
            request
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body, start.elapsed())
}

async fn metrics_text(addr: SocketAddr) -> String {
    let response = client()
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
        .unwrap();
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// The value of one sample line, e.g. `modelship_mirror_comparisons_total{result="match"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Polls the metrics until `series` reaches `at_least`, within a deadline.
async fn wait_for_metric(addr: SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(addr).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flags(stable: SocketAddr, shadow: Option<SocketAddr>, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![format!("--stable=http://{stable}")];
    if let Some(shadow) = shadow {
        flags.push(format!("--shadow=http://{shadow}"));
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

const BODY: &str = r#"{"instances":[[1,2]]}"#;

#[tokio::test]
async fn client_gets_stable_answer_unchanged_and_undelayed_by_a_slow_shadow() {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow = Upstream {
        label: "a",
        delay: Duration::from_millis(1500),
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--compare-pointer=/predictions"],
    ))
    .await;

    let (direct_status, direct_headers, direct_body, _) =
        post_predict(stable_addr, BODY, &[]).await;
    let (status, headers, body, elapsed) = post_predict(
        router.addr,
        BODY,
        &[
            ("authorization", "Bearer secret"),
            ("cookie", "c=1"),
            ("x-request-id", "r1"),
        ],
    )
    .await;
    assert!(
        elapsed < Duration::from_millis(1000),
        "the client waited for the shadow: {elapsed:?}"
    );
    assert_eq!(status, direct_status);
    assert_eq!(body, direct_body);
    assert_eq!(headers.get("x-upstream").unwrap(), "yes");
    assert_eq!(
        headers.get("content-type"),
        direct_headers.get("content-type")
    );

    // The copy reaches the shadow without credentials, marked, and agrees.
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="match"}"#,
        1.0,
    )
    .await;
    let shadow_seen = shadow.seen.lock().unwrap()[0].clone();
    assert!(shadow_seen.get("authorization").is_none());
    assert!(shadow_seen.get("cookie").is_none());
    assert_eq!(shadow_seen.get("x-modelship-shadow").unwrap(), "1");
    assert_eq!(shadow_seen.get("x-request-id").unwrap(), "r1");
    let stable_seen = stable.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(stable_seen.get("authorization").unwrap(), "Bearer secret");
    assert!(stable_seen.get("x-modelship-shadow").is_none());
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="stable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="a",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_value_count{track="stable"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_dead_shadow_changes_nothing_for_clients_and_counts_as_shadow_error() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(dead_address().await),
        &["--compare-pointer=/predictions"],
    ))
    .await;
    let (_, _, direct_body, _) = post_predict(stable_addr, BODY, &[]).await;
    for _ in 0..20 {
        let (status, _, body, _) = post_predict(router.addr, BODY, &[]).await;
        assert_eq!(status, 201);
        assert_eq!(body, direct_body);
    }
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="shadow_error"}"#,
        20.0,
    )
    .await;
    // After five connection failures (the default) copies pause and count without a try.
    let tried = sample(
        &text,
        r#"modelship_mirror_requests_total{code="error",track="shadow"}"#,
    )
    .unwrap_or_default();
    let paused = sample(
        &text,
        r#"modelship_mirror_dropped_total{reason="shadow_unavailable"}"#,
    )
    .unwrap_or_default();
    assert!(tried >= 5.0 && paused >= 1.0, "{text}");
    assert_eq!(tried + paused, 20.0, "{text}");
}

#[tokio::test]
async fn a_shadow_past_its_timeout_is_a_shadow_error() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow_addr = start_upstream(Upstream {
        label: "a",
        delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--shadow-timeout=100ms"],
    ))
    .await;
    let (_, _, _, elapsed) = post_predict(router.addr, BODY, &[]).await;
    assert!(elapsed < Duration::from_millis(1000));
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="shadow_error"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="timeout",track="shadow"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn disagreement_is_a_mismatch() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow_addr = start_upstream(Upstream {
        label: "b",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--compare-pointer=/predictions"],
    ))
    .await;
    post_predict(router.addr, BODY, &[]).await;
    let text = wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="mismatch"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="a",track="stable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_prediction_label_total{label="b",track="shadow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"modelship_mirror_abs_diff_count"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn bounds_drop_copies_and_count_them() {
    let stable = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow = Upstream {
        label: "a",
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--max-body-bytes=8"],
    ))
    .await;
    let (status, _, body, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    assert!(
        String::from_utf8_lossy(&body).contains(r#"\"instances\""#),
        "stable got the whole body: {body:?}"
    );
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_dropped_total{reason="body_too_large"}"#,
        1.0,
    )
    .await;
    assert!(shadow.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn no_shadow_no_mirror() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let router = start_router(&flags(stable_addr, None, &[])).await;
    let (status, _, _, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 201);
    let text = metrics_text(router.metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="201",track="stable"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains(r#"track="shadow"}"#)
            || sample(
                &text,
                r#"modelship_mirror_request_duration_seconds_count{track="shadow"}"#
            ) == Some(0.0)
    );
}

#[tokio::test]
async fn sampling_by_request_id_mirrors_the_share() {
    let stable_addr = start_upstream(Upstream {
        label: "a",
        ..Default::default()
    })
    .await;
    let shadow = Upstream {
        label: "a",
        ..Default::default()
    };
    let shadow_addr = start_upstream(shadow.clone()).await;
    let router = start_router(&flags(
        stable_addr,
        Some(shadow_addr),
        &["--mirror-percent=50"],
    ))
    .await;
    let ids: Vec<&'static str> = (0..200)
        .map(|i| &*Box::leak(format!("id-{i}").into_boxed_str()))
        .collect();
    for id in &ids {
        post_predict(router.addr, BODY, &[("x-request-id", id)]).await;
    }
    let expected = ids
        .iter()
        .filter(|id| {
            super::sample::Sampler::new(50.0).by_request_id(Some(id.as_bytes()))
                == super::sample::Decision::Mirror
        })
        .count();
    assert!((60..140).contains(&expected), "{expected}");
    wait_for_metric(
        router.metrics,
        r#"modelship_mirror_comparisons_total{result="match"}"#,
        expected as f64,
    )
    .await;
    let mut mirrored: Vec<String> = shadow
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.get("x-request-id").unwrap().to_str().unwrap().to_owned())
        .collect();
    mirrored.sort();
    let mut wanted: Vec<String> = ids
        .iter()
        .filter(|id| {
            super::sample::Sampler::new(50.0).by_request_id(Some(id.as_bytes()))
                == super::sample::Decision::Mirror
        })
        .map(|id| id.to_string())
        .collect();
    wanted.sort();
    assert_eq!(mirrored, wanted);
}

#[tokio::test]
async fn stable_down_is_a_bad_gateway() {
    let router = start_router(&flags(dead_address().await, None, &[])).await;
    let (status, _, _, _) = post_predict(router.addr, BODY, &[]).await;
    assert_eq!(status, 502);
    let text = metrics_text(router.metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"modelship_mirror_requests_total{code="error",track="stable"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let stable = Upstream {
        label: "a",
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let stable_addr = start_upstream(stable.clone()).await;
    let mut router = start_router(&flags(stable_addr, None, &[])).await;
    let addr = router.addr;
    let in_flight = tokio::spawn(async move { post_predict(addr, BODY, &[]).await });
    // Shut down once the request is with stable.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stable.seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached stable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    router.stop.take().unwrap().send(()).unwrap();
    let (status, _, _, _) = in_flight.await.unwrap();
    assert_eq!(status, 201);
    tokio::time::timeout(Duration::from_secs(5), router.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

mod abuse;
