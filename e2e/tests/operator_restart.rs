//! The operator dies in the middle of a bake: a new process resumes the bake from status,
//! without restarting its window, and completes it.
mod common;

use common::{TIMEOUT, World, overrides, without_latency};
use modelship::api::{DeploymentPhase, Outcome};
use modelship_e2e::operator;
use modelship_e2e::wait_for;
use serde_json::json;

#[tokio::test]
async fn a_new_operator_process_resumes_and_completes_the_bake() {
    let spec = overrides(&[json!({"analysis": {"bakeTime": "20s"}}), without_latency()]);
    let mut world = World::stable("restart", spec, &[]).await;
    let _traffic = world.pods.drive(40);
    world.set_model("churn-v2", "churn-v1.json").await;
    let baking = world.wait_phase(DeploymentPhase::Baking).await;
    let window = baking
        .analysis
        .as_ref()
        .and_then(|a| a.started_at)
        .expect("the bake's start is in status");

    // The promotion is fully reported (its event follows the status write) before the crash,
    // so the count below says whether the new process repeated it.
    world.wait_event("Promoted").await;
    // A crash: no graceful shutdown, the lease is not released.
    world.operator.kill();
    let while_down = world.status().await;
    assert_eq!(while_down.phase, Some(DeploymentPhase::Baking));
    let options = operator::Options {
        name: "operator-after-crash".into(),
        ..operator::Options::default()
    };
    world.operator = operator::start_with(world.ns.name(), options).await;

    // The new process measures again, within the same window.
    let resumed = wait_for("the new operator to measure the bake", TIMEOUT, || async {
        let s = world.status().await;
        let measured = s.analysis.as_ref().and_then(|a| a.last_measured_at);
        Ok((measured
            > while_down
                .analysis
                .as_ref()
                .and_then(|a| a.last_measured_at)
            || s.phase == Some(DeploymentPhase::Stable))
        .then_some(s))
    })
    .await;
    if resumed.phase == Some(DeploymentPhase::Baking) {
        assert_eq!(
            resumed.analysis.and_then(|a| a.started_at),
            Some(window),
            "the bake window was restarted"
        );
    }
    let done = world.wait_phase(DeploymentPhase::Stable).await;
    assert_eq!(done.stable.as_ref().unwrap().version, "churn-v2");
    assert_eq!(done.history[0].outcome, Outcome::Promoted);
    // Baked for the whole window measured from its original start, not from the restart.
    let start = window;
    let ended = done.history[0].time;
    let baked = ended.duration_since(start);
    assert!(
        baked >= jiff::SignedDuration::from_secs(20),
        "baked {baked:?}"
    );
    // Exactly one Promoting and one Promoted: the new process did not repeat a decision.
    let reasons = world.event_reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "Promoted").count(),
        1,
        "{reasons:?}"
    );
    world.ns.delete().await;
}
