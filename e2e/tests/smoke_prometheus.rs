//! Smoke test of the local Prometheus: a target registered by a test is scraped with
//! the test's labels, PromQL over the HTTP API returns its series, and Prometheus can
//! be stopped and started again (as a later test does during an analysis).
//!
//! One test function: stopping Prometheus must not race with other tests in this binary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelship_e2e::prom;
use modelship_e2e::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A tiny `/metrics` endpoint that serves one gauge with the current `value`.
async fn serve_metrics(value: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let value = value.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!(
                    "# HELP smoke_model_predictions_total Predictions served.\n\
                     # TYPE smoke_model_predictions_total counter\n\
                     smoke_model_predictions_total{{outcome=\"ok\"}} {value}\n"
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn registered_target_is_scraped_queried_and_survives_a_restart() {
    let value = Arc::new(AtomicU64::new(42));
    let address = serve_metrics(value.clone()).await;
    let unique = format!(
        "smoke-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let labels: BTreeMap<String, String> = [
        ("namespace", unique.as_str()),
        ("deployment", "iris"),
        ("track", "shadow"),
        ("version", "model-v1.3.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let target = prom::register_target(&unique, &address, &labels);

    let up = prom::wait_until_scraped(&target, TIMEOUT).await;
    assert_eq!(up.get("job").map(String::as_str), Some(prom::JOB));
    assert_eq!(up.get("instance"), Some(&address));

    // The target's series carry the labels the test chose.
    let promql = format!("smoke_model_predictions_total{{namespace=\"{unique}\"}}");
    let series = prom::query(&promql).await.unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let (series_labels, sample) = &series[0];
    for (k, v) in &labels {
        assert_eq!(
            series_labels.get(k),
            Some(v),
            "label {k} of {series_labels:?}"
        );
    }
    assert_eq!(series_labels.get("outcome").map(String::as_str), Some("ok"));
    assert_eq!(*sample, 42.0);

    // Scraping goes on: a new value shows up, and aggregation works over the HTTP API.
    value.store(45, Ordering::SeqCst);
    let by_track =
        format!("sum by (track) (smoke_model_predictions_total{{namespace=\"{unique}\"}})");
    wait_for("Prometheus to scrape the new value", TIMEOUT, || async {
        let result = prom::query(&by_track).await?;
        Ok(result
            .into_iter()
            .find(|(l, v)| l.get("track").map(String::as_str) == Some("shadow") && *v == 45.0))
    })
    .await;
    let scalar = prom::query("scalar(vector(7))").await.unwrap();
    assert_eq!(scalar, vec![(BTreeMap::new(), 7.0)]);
    let error = prom::query("sum(").await.unwrap_err();
    assert!(error.to_string().contains("rejected"), "{error:#}");

    // Prometheus goes away: queries fail. It comes back with the same targets.
    prom::stop().await;
    assert!(!prom::is_ready().await);
    assert!(
        prom::query(&promql).await.is_err(),
        "a query while Prometheus is down fails"
    );
    prom::start().await;
    assert!(prom::is_ready().await);
    value.store(50, Ordering::SeqCst);
    wait_for(
        "Prometheus to scrape the target again after a restart",
        TIMEOUT,
        || async {
            let result = prom::query(&promql).await?;
            Ok(result.into_iter().find(|(_, v)| *v == 50.0))
        },
    )
    .await;

    // Unregistered: the target's series go stale.
    drop(target);
    let up_query = format!("up{{namespace=\"{unique}\"}}");
    wait_for("the unregistered target to disappear", TIMEOUT, || async {
        Ok(prom::query(&up_query).await?.is_empty().then_some(()))
    })
    .await;
}
