//! A ModelDeployment's life against the real control plane and the real Prometheus, with local
//! processes standing for its pods: shadowing, comparison of answers, analysis, promotion,
//! watching after promotion, rollback, rejection and manual approval.
mod common;

use std::time::{Duration, Instant};

use common::{INTERVAL_SECS, NAME, SCRAPE_SECS, TIMEOUT, World};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use modelship::api::{DeploymentPhase, Outcome, Verdict};
use modelship_e2e::pods::Role;
use modelship_e2e::{prom, wait_for};
use serde_json::json;

#[tokio::test]
async fn a_good_candidate_is_shadowed_then_promoted_and_baked() {
    let world = World::stable("promote", json!({}), &[]).await;
    let traffic = world.pods.drive(40);
    // Same weights under a new version: it agrees with production everywhere.
    world.set_model("churn-v2", "churn-v1.json").await;
    let status = world.wait_phase(DeploymentPhase::Shadowing).await;
    assert_eq!(status.candidate.as_ref().unwrap().version, "churn-v2");
    // The analysis window opens once the shadow's pods are ready, and 5 s later.
    let opened = wait_for("the shadow's analysis window", TIMEOUT, || async {
        Ok(world.status().await.analysis.and_then(|a| a.started_at))
    })
    .await;
    let since = status.candidate.as_ref().unwrap().since.unwrap();
    assert!(
        opened.duration_since(since) >= jiff::SignedDuration::from_secs(5),
        "the window opened at {opened}, the shadow started at {since}"
    );

    // The shadow objects exist, labelled as the shadow track.
    let shadow = wait_for("the shadow Deployment", TIMEOUT, || async {
        Ok(world.deployments.get_opt("churn-shadow").await?)
    })
    .await;
    let labels = shadow
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(
        (
            labels["modelship.io/track"].as_str(),
            labels["modelship.io/version"].as_str()
        ),
        ("shadow", "churn-v2")
    );
    let services: Api<Service> = world.ns.api();
    // Applied right after the Deployment, in the same reconcile.
    wait_for("the shadow Service", TIMEOUT, || async {
        Ok(services.get_opt("churn-shadow").await?)
    })
    .await;
    world
        .pods
        .wait_for_version(Role::Shadow, Some("churn-v2"), TIMEOUT)
        .await;

    // Promoted on evidence, then watched, then stable.
    world.wait_phase(DeploymentPhase::Baking).await;
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v2")
    );
    let status = world.wait_phase(DeploymentPhase::Stable).await;
    assert_eq!(status.stable.as_ref().unwrap().version, "churn-v2");
    assert_eq!(status.history[0].outcome, Outcome::Promoted);
    // The previous version answered copies on the shadow track during the bake.
    world.wait_shadow_removed().await;
    world
        .pods
        .wait_for_version(Role::Stable, Some("churn-v2"), TIMEOUT)
        .await;

    // Every decision is explained: the metrics the shadow passed with, and the events.
    let promoted = &status.history[0].metrics;
    for name in ["error-rate", "latency-p99"] {
        let m = promoted
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} in {promoted:?}"));
        // The last measurement may be inconclusive (beyond the bound by what could be noise
        // on a busy machine); none failed, and each metric passed at least once.
        assert!(
            matches!(m.verdict, Some(Verdict::Pass | Verdict::Inconclusive)) && m.passes > 0,
            "{m:?}"
        );
        assert!(
            m.value.is_some() && m.samples.unwrap_or(0.0) >= 20.0,
            "{m:?}"
        );
    }
    for r in [
        "Deployed",
        "ShadowStarted",
        "Promoting",
        "Promoted",
        "Baked",
    ] {
        world.wait_event(r).await;
    }
    let metrics = world.operator.metrics().await;
    let ns = world.ns.name();
    assert!(
        metrics.contains(&format!(
            r#"modelship_deployment_transitions_total{{decision="promoted",name="{NAME}",namespace="{ns}"}} 1"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelship_analysis_value{deployment=\"churn\",metric=\"error-rate\""),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("modelship_deployment_phase_duration_seconds_count{phase=\"Shadowing\"} 1"),
        "{metrics}"
    );

    let stats = traffic.stats();
    assert_eq!(
        stats.failed, 0,
        "clients saw failures: {:?}",
        stats.failures
    );
    world.ns.delete().await;
}

#[tokio::test]
async fn a_candidate_with_five_percent_errors_is_rejected_and_production_never_changes() {
    let world = World::stable(
        "reject",
        json!({}),
        &[("churn-v2", &[("MODEL_SERVER_ERROR_RATE", "0.05")])],
    )
    .await;
    let stable_before = world.deployments.get("churn-stable").await.unwrap();
    let traffic = world.pods.drive(50);
    world.set_model("churn-v2", "churn-v1.json").await;
    world.wait_phase(DeploymentPhase::Shadowing).await;
    let status = world.wait_phase(DeploymentPhase::Rejected).await;
    assert_eq!(status.history[0].outcome, Outcome::Rejected);
    assert_eq!(status.history[0].reason, "AnalysisFailed");
    assert!(
        status.history[0].message.contains("error-rate"),
        "{}",
        status.history[0].message
    );
    let err = status.history[0]
        .metrics
        .iter()
        .find(|m| m.name == "error-rate")
        .unwrap();
    assert_eq!(err.verdict, Some(Verdict::Fail), "{err:?}");
    assert!(err.value.unwrap() > err.max.unwrap(), "{err:?}");
    world.wait_event("AnalysisFailed").await;

    // Production never saw the candidate: the stable Deployment was not even written to.
    let stable_after = world.deployments.get("churn-stable").await.unwrap();
    assert_eq!(
        stable_after.metadata.generation,
        stable_before.metadata.generation
    );
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v1")
    );
    world.wait_shadow_removed().await;
    // Rejected is sticky: nothing flaps while the spec still asks for the candidate.
    let later = world
        .never(
            &[DeploymentPhase::Shadowing, DeploymentPhase::Promoting],
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(later.phase, Some(DeploymentPhase::Rejected));
    let stats = traffic.stats();
    assert_eq!(
        stats.failed, 0,
        "clients saw the candidate's errors: {:?}",
        stats.failures
    );
    assert_eq!(
        stats.versions.keys().collect::<Vec<_>>(),
        vec!["churn-v1"],
        "only stable answered clients"
    );
    let degraded = later.condition("Degraded").unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CandidateRejected")
    );
    world.ns.delete().await;
}

#[tokio::test]
async fn a_candidate_that_degrades_after_promotion_is_rolled_back_by_itself() {
    // A long bake, so the degradation happens while the new version is still watched.
    let world = World::stable("rollback", json!({"analysis": {"bakeTime": "10m"}}), &[]).await;
    let _traffic = world.pods.drive(50);
    world.set_model("churn-v2", "churn-v1.json").await;
    world.wait_phase(DeploymentPhase::Baking).await;
    world
        .pods
        .wait_for_version(Role::Stable, Some("churn-v2"), TIMEOUT)
        .await;

    // Production starts failing on one request in two.
    world
        .pods
        .set_knobs(Role::Stable, json!({"error_rate": 0.5}))
        .await;
    let onset = Instant::now();
    wait_for(
        "the stable Deployment to return to churn-v1",
        TIMEOUT,
        || async {
            Ok(
                (world.stable_deployment_version().await.as_deref() == Some("churn-v1"))
                    .then_some(()),
            )
        },
    )
    .await;
    let took = onset.elapsed().as_secs_f64();
    // How fast the judge catches a regression is measured by its benchmark (bench-analysis,
    // docs/analysis.md); here only a bound that no loaded machine comes near.
    let bound = 15.0 * INTERVAL_SECS;
    println!(
        "rollback: {took:.1} s from the onset of degradation to the stable Deployment's rollback ({:.1} analysis intervals of {INTERVAL_SECS} s, scrape every {SCRAPE_SECS} s)",
        took / INTERVAL_SECS
    );

    let status = world.wait_phase(DeploymentPhase::RolledBack).await;
    assert_eq!(status.stable.as_ref().unwrap().version, "churn-v1");
    assert_eq!(status.history[0].outcome, Outcome::RolledBack);
    // The verdict names the metric that was degraded, and only it: every default metric is
    // judged here, latency included, against churn-v1 answering the same copies meanwhile.
    let entry = &status.history[0];
    assert!(
        entry.message.contains("error-rate failed"),
        "{}",
        entry.message
    );
    for m in &entry.metrics {
        if m.name == "error-rate" {
            assert_eq!(m.verdict, Some(Verdict::Fail), "{m:?}");
            assert!(m.p_value.unwrap() <= m.max_p_value.unwrap(), "{m:?}");
        } else {
            assert_ne!(m.verdict, Some(Verdict::Fail), "{m:?}");
            let named = format!("{} failed", m.name);
            assert!(!entry.message.contains(&named), "{}", entry.message);
        }
    }
    let names: Vec<&str> = entry.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["error-rate", "latency-p99", "agreement"]);
    world.wait_event("RolledBack").await;
    world
        .pods
        .wait_for_version(Role::Stable, Some("churn-v1"), TIMEOUT)
        .await;
    let ns = world.ns.name();
    assert!(world.operator.metrics().await.contains(&format!(
        r#"modelship_deployment_transitions_total{{decision="rolled_back",name="{NAME}",namespace="{ns}"}} 1"#
    )));
    // Sticky: the spec still names churn-v2, and production stays on churn-v1.
    world
        .never(
            &[
                DeploymentPhase::Shadowing,
                DeploymentPhase::Promoting,
                DeploymentPhase::Baking,
            ],
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v1")
    );
    assert!(
        took <= bound,
        "rollback took {took:.1} s, more than {bound:.0} s"
    );
    world.ns.delete().await;
}

#[tokio::test]
async fn manual_promotion_waits_for_an_approval_that_names_the_candidate() {
    let world = World::stable("manual", json!({"shadow": {"promotion": "Manual"}}), &[]).await;
    let _traffic = world.pods.drive(40);
    world.set_model("churn-v2", "churn-v1.json").await;
    let waiting = wait_for(
        "the candidate to pass and wait for approval",
        TIMEOUT,
        || async {
            Ok(world
                .status()
                .await
                .message
                .filter(|m| m.contains("waits for approval")))
        },
    )
    .await;
    assert!(
        waiting.contains("modelship.io/approve=churn-v2"),
        "{waiting}"
    );
    let progressing = world
        .status()
        .await
        .condition("Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing.reason, "AwaitingApproval");

    // Nothing happens without the annotation, nor with one that names another version.
    world
        .never(
            &[DeploymentPhase::Promoting, DeploymentPhase::Baking],
            Duration::from_secs(4),
        )
        .await;
    world.annotate("modelship.io/approve", "churn-v9").await;
    world
        .never(
            &[DeploymentPhase::Promoting, DeploymentPhase::Baking],
            Duration::from_secs(4),
        )
        .await;
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v1")
    );

    world.annotate("modelship.io/approve", "churn-v2").await;
    world.wait_phase(DeploymentPhase::Baking).await;
    // Status records the value acted on, the candidate it was bound to, and when.
    let approval = world.status().await.approval.unwrap();
    assert_eq!(
        (
            approval.value.as_str(),
            approval.result,
            approval.version.as_deref()
        ),
        (
            "churn-v2",
            modelship::api::ApprovalResult::Approved,
            Some("churn-v2")
        )
    );
    assert!(approval.acted_at.is_some());
    assert_eq!(
        world.stable_deployment_version().await.as_deref(),
        Some("churn-v2")
    );
    world.ns.delete().await;
}

#[tokio::test]
async fn shadow_answers_are_compared_and_a_dead_candidate_never_reaches_clients() {
    // The candidate alters 20 % of its answers; it is allowed to, so it stays in shadow long
    // enough to be measured. Its error rate is reported but not judged (dry run): the judge
    // would reject the dead candidate within an interval, and the router, restarted without a
    // shadow, would stop counting what this test is about (the rejection has its own test).
    let mut errors = modelship::analysis::defaults::error_rate();
    errors.dry_run = true;
    let agreement = modelship::analysis::defaults::agreement(0.5);
    let world = World::stable(
        "compare",
        json!({"shadow": {"minDuration": "10m", "compare": {"minAgreement": 0.5}},
               "analysis": {"metrics": [errors, agreement]}}),
        &[("churn-v2", &[("MODEL_SERVER_ALTER_SHARE", "0.2")])],
    )
    .await;
    let traffic = world.pods.drive(50);
    world.set_model("churn-v2", "churn-v1.json").await;
    world.wait_phase(DeploymentPhase::Shadowing).await;
    world
        .pods
        .wait_for_version(Role::Shadow, Some("churn-v2"), TIMEOUT)
        .await;

    let ns = world.ns.name().to_string();
    let share = wait_for("400 comparisons in Prometheus", TIMEOUT, || async {
        let q = |result: &str| format!(r#"sum(modelship_mirror_comparisons_total{{namespace="{ns}",deployment="{NAME}",result="{result}"}})"#);
        let value = |rows: Vec<(std::collections::BTreeMap<String, String>, f64)>| rows.first().map(|r| r.1).unwrap_or(0.0);
        let mismatch = value(prom::query(&q("mismatch")).await?);
        let matched = value(prom::query(&q("match")).await?);
        Ok((mismatch + matched >= 400.0).then(|| mismatch / (mismatch + matched)))
    })
    .await;
    println!(
        "disagreement measured in Prometheus: {:.1} % (the candidate alters 20 %)",
        share * 100.0
    );
    assert!((share - 0.2).abs() < 0.05, "disagreement {share}");
    // The analysis sees it too, once it measured on as many answers as the count above (its
    // window opens only after the shadow's pods are ready, so its first measurements stand on
    // a few seconds of answers).
    let agreement = wait_for("the agreement measurement", TIMEOUT, || async {
        Ok(world
            .status()
            .await
            .analysis
            .and_then(|a| a.metrics.into_iter().find(|m| m.name == "agreement"))
            .filter(|m| m.samples.unwrap_or(0.0) >= 200.0)
            .and_then(|m| m.value))
    })
    .await;
    assert!((agreement - 0.8).abs() < 0.06, "agreement {agreement}");

    // The candidate dies: clients keep getting production's answers, and the router counts it.
    let before = traffic.stats();
    world.pods.crash(Role::Shadow);
    let errors_before = shadow_errors(&ns).await;
    wait_for("shadow errors to be counted", TIMEOUT, || async {
        Ok((shadow_errors(&ns).await > errors_before + 50.0).then_some(()))
    })
    .await;
    let after = traffic.stats();
    assert!(after.ok > before.ok + 50, "traffic kept flowing");
    assert_eq!(
        after.failed, 0,
        "a dead shadow changed what clients got: {:?}",
        after.failures
    );
    assert_eq!(
        after.versions.keys().collect::<Vec<_>>(),
        vec!["churn-v1"],
        "clients only ever got production's answers"
    );
    world.ns.delete().await;
}

async fn shadow_errors(ns: &str) -> f64 {
    let q = format!(
        r#"sum(modelship_mirror_comparisons_total{{namespace="{ns}",deployment="{NAME}",result="shadow_error"}})"#
    );
    prom::query(&q)
        .await
        .ok()
        .and_then(|r| r.first().map(|x| x.1))
        .unwrap_or(0.0)
}
