//! The mirroring router between two local model servers, all scraped by the real
//! Prometheus: the comparison counters *in Prometheus* match the share of predictions the
//! candidate alters, and once the candidate is killed every client still gets stable's
//! answer while the router counts shadow errors.
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelship_e2e::{Process, binary, free_port, http_client, prom, repo_root, wait_for};
use serde_json::Value;

/// Requests sent while both tracks are up.
const REQUESTS: usize = 1000;
/// Requests sent after the candidate is killed.
const AFTER_KILL: usize = 200;
/// Share of requests whose predictions the candidate alters (decided by request id).
const ALTER_SHARE: f64 = 0.2;
/// Allowed distance of the measured mismatch share from `ALTER_SHARE`: about four standard
/// deviations of a binomial share over `REQUESTS`.
const SHARE_TOLERANCE: f64 = 0.05;

const DEPLOYMENT: &str = "churn";

fn model_server(version: &str, port: u16, alter_share: f64) -> Command {
    // Both tracks serve the same weights: the only disagreement is the one injected.
    let model = repo_root().join("model-server/models/churn-v1.json");
    let mut command = Command::new(binary("model-server"));
    command
        .env("MODEL_URI", format!("file://{}", model.display()))
        .env("MODEL_VERSION", version)
        .env("MODEL_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("MODEL_SERVER_ALTER_SHARE", alter_share.to_string())
        .env("TOKIO_WORKER_THREADS", "1");
    command
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn healthy(client: &reqwest::Client, url: String) {
    wait_for(&format!("{url} to answer"), Duration::from_secs(30), || {
        let request = client.get(&url).timeout(Duration::from_secs(1)).send();
        async move {
            Ok(request
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        }
    })
    .await
}

/// The request body of request `i`: one instance, different for every request.
fn body(i: usize) -> String {
    let x = i as f64;
    format!(
        r#"{{"instances":[[{},{},{}]]}}"#,
        (x * 0.37) % 7.0,
        (x * 1.3) % 5.0,
        i % 4
    )
}

async fn predict(client: &reqwest::Client, port: u16, i: usize) -> anyhow::Result<(u16, Value)> {
    let response = client
        .post(format!("http://127.0.0.1:{port}/predict"))
        .header("content-type", "application/json")
        .header("x-request-id", format!("e2e-{i}"))
        .body(body(i))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// Sends requests `range` through the router and checks each answer is exactly what
/// stable answers directly.
async fn send_and_check(
    client: &reqwest::Client,
    router: u16,
    stable: u16,
    range: std::ops::Range<usize>,
) {
    for i in range {
        let (status, through_router) = predict(client, router, i)
            .await
            .expect("a request through the router");
        let (direct_status, direct) = predict(client, stable, i)
            .await
            .expect("a request to stable");
        assert_eq!((status, direct_status), (200, 200), "request {i}");
        assert_eq!(
            through_router, direct,
            "request {i}: the client must get stable's answer"
        );
        assert_eq!(through_router["model_version"], "v1");
    }
}

/// `sum by (label) (metric{selector})` as a map, 0 for absent series.
async fn by_label(
    metric: &str,
    selector: &str,
    label: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let rows = prom::query(&format!("sum by ({label}) ({metric}{selector})")).await?;
    Ok(rows
        .into_iter()
        .map(|(labels, value)| (labels.get(label).cloned().unwrap_or_default(), value))
        .collect())
}

#[tokio::test]
async fn comparisons_in_prometheus_match_the_injected_disagreement_and_a_dead_shadow_is_harmless() {
    // A namespace label of its own, so series from earlier runs never count.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let namespace = format!("mirror-e2e-{nanos}");
    let selector = format!(r#"{{namespace="{namespace}",deployment="{DEPLOYMENT}"}}"#);
    let (stable_port, shadow_port, router_port, metrics_port) =
        (free_port(), free_port(), free_port(), free_port());

    let _stable = Process::spawn("model-v1", model_server("v1", stable_port, 0.0));
    let mut candidate = Process::spawn("model-v2", model_server("v2", shadow_port, ALTER_SHARE));
    let mut router = Command::new(binary("modelship"));
    router
        .args(["--log-format=text", "mirror"])
        .env(
            "MODELSHIP_MIRROR_LISTEN",
            format!("127.0.0.1:{router_port}"),
        )
        .env(
            "MODELSHIP_MIRROR_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env(
            "MODELSHIP_MIRROR_STABLE",
            format!("http://127.0.0.1:{stable_port}"),
        )
        .env(
            "MODELSHIP_MIRROR_SHADOW",
            format!("http://127.0.0.1:{shadow_port}"),
        )
        .env("MODELSHIP_MIRROR_PERCENT", "100")
        .env("MODELSHIP_MIRROR_COMPARE_POINTERS", "/predictions")
        .env("MODELSHIP_MIRROR_TOLERANCE", "0.000001")
        .env("MODELSHIP_MIRROR_SHADOW_TIMEOUT", "2s")
        .env("TOKIO_WORKER_THREADS", "2");
    let _router = Process::spawn("router", router);

    let client = http_client();
    healthy(&client, format!("http://127.0.0.1:{stable_port}/healthz")).await;
    healthy(&client, format!("http://127.0.0.1:{shadow_port}/healthz")).await;
    healthy(&client, format!("http://127.0.0.1:{metrics_port}/readyz")).await;

    // The router's own series carry `track` (stable|shadow), so its target has no `track` label.
    let targets = [
        prom::register_target(
            &format!("{namespace}-stable"),
            &format!("127.0.0.1:{stable_port}"),
            &labels(&[
                ("namespace", &namespace),
                ("deployment", DEPLOYMENT),
                ("track", "stable"),
                ("version", "v1"),
            ]),
        ),
        prom::register_target(
            &format!("{namespace}-shadow"),
            &format!("127.0.0.1:{shadow_port}"),
            &labels(&[
                ("namespace", &namespace),
                ("deployment", DEPLOYMENT),
                ("track", "shadow"),
                ("version", "v2"),
            ]),
        ),
        prom::register_target(
            &format!("{namespace}-router"),
            &format!("127.0.0.1:{metrics_port}"),
            &labels(&[
                ("namespace", &namespace),
                ("deployment", DEPLOYMENT),
                ("component", "router"),
            ]),
        ),
    ];
    for target in &targets {
        prom::wait_until_scraped(target, Duration::from_secs(60)).await;
    }

    send_and_check(&client, router_port, stable_port, 0..REQUESTS).await;

    // Every request was compared, and Prometheus has scraped the final counts.
    let results = wait_for(
        "Prometheus to see every comparison",
        Duration::from_secs(60),
        || async {
            let results =
                by_label("modelship_mirror_comparisons_total", &selector, "result").await?;
            Ok((results.values().sum::<f64>() == REQUESTS as f64).then_some(results))
        },
    )
    .await;
    let count =
        |results: &BTreeMap<String, f64>, key: &str| results.get(key).copied().unwrap_or(0.0);
    let mismatch = count(&results, "mismatch");
    let share = mismatch / REQUESTS as f64;
    assert!(
        (share - ALTER_SHARE).abs() <= SHARE_TOLERANCE,
        "mismatch share {share}, expected {ALTER_SHARE}: {results:?}"
    );
    assert_eq!(
        count(&results, "match") + mismatch,
        REQUESTS as f64,
        "{results:?}"
    );
    // Exactly the requests the candidate altered disagree.
    let altered_selector = format!(r#"{{namespace="{namespace}",track="shadow"}}"#);
    let altered = wait_for(
        "the candidate's altered count",
        Duration::from_secs(30),
        || async {
            let rows = prom::query(&format!(
                "sum(model_server_altered_total{altered_selector})"
            ))
            .await?;
            Ok(rows.first().map(|(_, v)| *v).filter(|v| *v == mismatch))
        },
    )
    .await;
    assert_eq!(altered, mismatch);
    // Each track's predictions are in Prometheus: one label per request on each side.
    let predicted = by_label(
        "modelship_mirror_prediction_label_total",
        &selector,
        "track",
    )
    .await
    .expect("querying labels");
    assert_eq!(
        predicted.get("stable"),
        Some(&(REQUESTS as f64)),
        "{predicted:?}"
    );
    assert_eq!(
        predicted.get("shadow"),
        Some(&(REQUESTS as f64)),
        "{predicted:?}"
    );

    // A dead candidate: clients notice nothing, the router counts shadow errors.
    candidate.kill();
    send_and_check(
        &client,
        router_port,
        stable_port,
        REQUESTS..REQUESTS + AFTER_KILL,
    )
    .await;
    wait_for(
        "Prometheus to count the shadow errors",
        Duration::from_secs(60),
        || async {
            let results =
                by_label("modelship_mirror_comparisons_total", &selector, "result").await?;
            Ok((count(&results, "shadow_error") == AFTER_KILL as f64).then_some(()))
        },
    )
    .await;
    let codes = by_label(
        "modelship_mirror_requests_total",
        &format!(r#"{{namespace="{namespace}",track="stable"}}"#),
        "code",
    )
    .await
    .expect("querying stable requests");
    assert_eq!(
        codes.get("200"),
        Some(&((REQUESTS + AFTER_KILL) as f64)),
        "{codes:?}"
    );
}
