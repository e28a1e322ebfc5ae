//! Prometheus goes away in the middle of a shadow: the analysis is inconclusive, a condition
//! says why, nothing is promoted; when Prometheus returns the analysis completes. In a test
//! binary of its own, since it stops the Prometheus every test shares.
mod common;

use std::time::Duration;

use common::{TIMEOUT, World, without_latency};
use modelship::api::DeploymentPhase;
use modelship_e2e::{prom, wait_for};

/// Starts Prometheus again if the test fails while it is down.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ =
                std::process::Command::new(modelship_e2e::repo_root().join("e2e/prometheus/up"))
                    .status();
        }
    }
}

#[tokio::test]
async fn no_promotion_without_prometheus_then_the_analysis_completes() {
    let world = World::stable("outage", without_latency(), &[]).await;
    let _traffic = world.pods.drive(40);
    world.set_model("churn-v2", "churn-v1.json").await;
    world.wait_phase(DeploymentPhase::Shadowing).await;

    let _restart = Restart;
    prom::stop().await;
    let condition = wait_for("MetricsAvailable=False", TIMEOUT, || async {
        Ok(world
            .status()
            .await
            .condition("MetricsAvailable")
            .cloned()
            .filter(|c| c.status == "False"))
    })
    .await;
    assert_eq!(condition.reason, "PrometheusUnreachable");
    assert!(
        condition.message.contains("no promotion, no rollback"),
        "{}",
        condition.message
    );

    // Well past the minimum shadow time, still no promotion: missing data is never a pass.
    let held = world
        .never(
            &[
                DeploymentPhase::Promoting,
                DeploymentPhase::Baking,
                DeploymentPhase::Rejected,
            ],
            Duration::from_secs(16),
        )
        .await;
    assert_eq!(held.phase, Some(DeploymentPhase::Shadowing));
    assert!(
        held.message
            .as_deref()
            .unwrap_or_default()
            .contains("metrics unavailable"),
        "{:?}",
        held.message
    );
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v1")
    );

    prom::start().await;
    world.wait_phase(DeploymentPhase::Baking).await;
    let status = world.status().await;
    assert_eq!(
        status
            .condition("MetricsAvailable")
            .map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v2")
    );
    world.ns.delete().await;
}
