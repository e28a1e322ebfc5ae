//! A whole rollout on the real node, judged on what Prometheus scraped from real pods: the
//! chart's operator runs as a pod and queries the local Prometheus, which finds the router and
//! model pods through `kubernetes_sd_configs` (e2e/prometheus/up, relabelled like the chart's
//! PodMonitor). A new version is shadowed and promoted on that evidence; the operator pod is
//! killed during the bake and its replacement finishes the bake without promoting twice; a
//! later version that degrades after its promotion is rolled back with real pods.
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus, Outcome};
use modelship_e2e::node::{self, POD_TIMEOUT, Traffic, predict, restricted_pod_security};
use modelship_e2e::{client, http_client, operator, prom, wait_for};
use serde_json::{Value, json};

const NAME: &str = "fraud";

fn model_deployment() -> ModelDeployment {
    let (pod_sc, container_sc) = restricted_pod_security();
    let spec = json!({
        "model": {"version": "fraud-v1", "artifact": "file:///models/churn-v1.json"},
        "replicas": 1,
        "template": {"spec": {
            "securityContext": pod_sc,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "server", "image": "model-server:e2e", "imagePullPolicy": "IfNotPresent",
                // Named `metrics`: the port the PodMonitor (and its scrape-configuration twin) scrapes.
                "ports": [{"name": "metrics", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                "securityContext": container_sc,
            }],
        }},
        "traffic": {"router": {"replicas": 1}},
        "shadow": {"minDuration": "15s", "minRequests": 150, "mirrorPercent": 100.0,
                   "compare": {"pointers": ["/predictions"], "tolerance": 0.05, "minAgreement": 0.8}},
        // A bake long enough that the operator's replacement takes it over before it ends.
        "analysis": {"interval": "2s", "window": "10s", "bakeTime": "45s"},
    });
    ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"))
}

async fn wait_phase(mds: &Api<ModelDeployment>, phase: DeploymentPhase) -> ModelDeploymentStatus {
    wait_for(&format!("phase {phase:?}"), POD_TIMEOUT, || async {
        Ok(mds
            .get(NAME)
            .await?
            .status
            .filter(|s| s.phase == Some(phase)))
    })
    .await
}

/// The reasons of the events about the ModelDeployment.
async fn event_reasons(events: &Api<Event>) -> Vec<String> {
    let mut list = events.list(&Default::default()).await.unwrap().items;
    list.retain(|e| {
        e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ModelDeployment")
    });
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
}

/// The one ready pod of `track` that serves `version`.
async fn track_pod(pods: &Api<Pod>, track: &str, version: &str) -> Pod {
    let selector = format!(
        "modelship.io/deployment={NAME},modelship.io/track={track},modelship.io/version={version}"
    );
    node::wait_pods(pods, &selector, 1, POD_TIMEOUT)
        .await
        .remove(0)
}

/// The ModelDeployment's Service (`http://<cluster IP>`), once the router's pod runs and the
/// Service answers through it.
async fn answering_service(ns: &modelship_e2e::TestNamespace) -> String {
    let pods: Api<Pod> = ns.api();
    let router_selector = format!("modelship.io/deployment={NAME},modelship.io/component=router");
    node::wait_pods(&pods, &router_selector, 1, POD_TIMEOUT).await;
    let services: Api<k8s_openapi::api::core::v1::Service> = ns.api();
    let service = node::service_url(&services, NAME).await;
    wait_for("the Service to answer", POD_TIMEOUT, || async {
        Ok(predict(&service).await.ok())
    })
    .await;
    service
}

fn print_analysis(status: &ModelDeploymentStatus) {
    for m in status.analysis.iter().flat_map(|a| &a.metrics) {
        eprintln!(
            "    {:<14} {:<10} value {:>9} reference {:>9} samples {:>6}",
            m.name,
            m.verdict.map(|v| v.to_string()).unwrap_or_default(),
            m.value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into()),
            m.stable_value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into()),
            m.samples
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}

#[tokio::test]
async fn real_pods_are_promoted_on_scraped_metrics_survive_an_operator_kill_and_roll_back() {
    let client = client().await;
    node::wait_ready(&client).await;
    operator::install().await;
    let ns = node::namespace(&client, "real-rollout").await;
    let pods: Api<Pod> = ns.api();
    let mds: Api<ModelDeployment> = ns.api();
    let events: Api<Event> = ns.api();

    // The operator pod queries the Prometheus on this host, at the node's address.
    let prometheus = format!("prometheus.url={}", node::prometheus_url_for_pods());
    let operator_pod =
        node::install_operator(&pods, ns.name(), &[&prometheus, "prometheus.timeout=2s"]).await;

    mds.create(&PostParams::default(), &model_deployment())
        .await
        .expect("creating the ModelDeployment");
    wait_phase(&mds, DeploymentPhase::Stable).await;
    track_pod(&pods, "stable", "fraud-v1").await;
    let service = answering_service(&ns).await;
    let traffic = Traffic::start(service.clone());

    // fraud-v2 is shadowed by a real pod behind the router pods.
    let set_version = |version: &str| json!({"spec": {"model": {"version": version, "artifact": "file:///models/churn-v2.json"}}});
    mds.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(set_version("fraud-v2")),
    )
    .await
    .unwrap();
    wait_phase(&mds, DeploymentPhase::Shadowing).await;
    let shadow = track_pod(&pods, "shadow", "fraud-v2").await;

    // Prometheus found the router and both model pods through the API server, with the
    // PodMonitor's labels.
    let up = format!(
        "up{{job=\"modelship-pods\",namespace=\"{}\",deployment=\"{NAME}\"}} == 1",
        ns.name()
    );
    let scraped = wait_for(
        "Prometheus to scrape the router and both model pods",
        POD_TIMEOUT,
        || async {
            let series = prom::query(&up).await?;
            let tracks: Vec<String> = series
                .iter()
                .map(|(labels, _)| {
                    labels
                        .get("track")
                        .cloned()
                        .unwrap_or_else(|| "router".into())
                })
                .collect();
            Ok((["router", "shadow", "stable"]
                .iter()
                .all(|t| tracks.iter().any(|x| x == t)))
            .then_some(series))
        },
    )
    .await;
    let shadow_name = shadow.metadata.name.clone().unwrap();
    assert!(
        scraped
            .iter()
            .any(|(l, _)| l.get("pod") == Some(&shadow_name)
                && l.get("version").map(String::as_str) == Some("fraud-v2")),
        "the shadow pod's series carry its pod and version: {scraped:?}"
    );
    eprintln!(
        "{} Prometheus scrapes {} pods of {NAME} found through the API server",
        modelship_e2e::now(),
        scraped.len()
    );

    // Promoted on what Prometheus scraped.
    let judged = wait_for(
        "an analysis of the shadow with samples",
        POD_TIMEOUT,
        || async {
            Ok(mds.get(NAME).await?.status.filter(|s| {
                s.phase == Some(DeploymentPhase::Shadowing)
                    && s.analysis.as_ref().is_some_and(|a| {
                        !a.metrics.is_empty()
                            && a.metrics.iter().all(|m| m.samples.unwrap_or(0.0) > 0.0)
                    })
            }))
        },
    )
    .await;
    eprintln!(
        "{} the shadow's analysis, from the scraped router pods:",
        modelship_e2e::now()
    );
    print_analysis(&judged);
    let baking = wait_phase(&mds, DeploymentPhase::Baking).await;
    let window = baking
        .analysis
        .as_ref()
        .and_then(|a| a.started_at)
        .expect("the bake's start");
    track_pod(&pods, "stable", "fraud-v2").await;

    // The operator pod dies during the bake (its promotion already reported); the Deployment
    // starts another, which takes the lease over and finishes the bake.
    wait_for("a Promoted event", POD_TIMEOUT, || async {
        Ok(event_reasons(&events)
            .await
            .iter()
            .any(|r| r == "Promoted")
            .then_some(()))
    })
    .await;
    let killed = operator_pod.metadata.name.clone().unwrap();
    pods.delete(
        &killed,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let killed_at = Instant::now();
    let replacement = wait_for("another operator pod to be ready", POD_TIMEOUT, || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&node::operator_selector(ns.name())))
            .await?;
        Ok(list
            .items
            .into_iter()
            .find(|p| p.metadata.name.as_deref() != Some(&killed) && node::running_ready(p)))
    })
    .await;
    eprintln!(
        "{} operator pod {killed} killed during the bake; {} ready {:.1} s later",
        modelship_e2e::now(),
        replacement.metadata.name.as_deref().unwrap_or_default(),
        killed_at.elapsed().as_secs_f64()
    );
    let done = wait_phase(&mds, DeploymentPhase::Stable).await;
    assert_eq!(done.stable.as_ref().unwrap().version, "fraud-v2");
    assert_eq!(done.history[0].outcome, Outcome::Promoted);
    let start = window;
    let ended = done.history[0].time;
    assert!(
        ended.duration_since(start) >= jiff::SignedDuration::from_secs(45),
        "the bake was not measured from its original start: {start} to {ended}"
    );
    let reasons = event_reasons(&events).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "Promoted").count(),
        1,
        "promoted twice: {reasons:?}"
    );

    // fraud-v3 passes its shadow, then fails a third of its requests once it serves users.
    mds.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(set_version("fraud-v3")),
    )
    .await
    .unwrap();
    wait_phase(&mds, DeploymentPhase::Baking).await;
    let serving = track_pod(&pods, "stable", "fraud-v3").await;
    let knobs = format!(
        "http://{}:8080/admin/knobs",
        node::pod_ip(&serving).unwrap()
    );
    http_client()
        .put(&knobs)
        .json(&json!({"error_rate": 0.35}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("degrading fraud-v3");
    let onset = Instant::now();
    let rolled = wait_phase(&mds, DeploymentPhase::RolledBack).await;
    let to_rollback = onset.elapsed();
    eprintln!(
        "{} fraud-v3 rolled back {:.1} s after it began to fail: {}",
        modelship_e2e::now(),
        to_rollback.as_secs_f64(),
        rolled.message.clone().unwrap_or_default()
    );
    print_analysis(&rolled);
    assert_eq!(rolled.stable.as_ref().unwrap().version, "fraud-v2");
    assert_eq!(rolled.history[0].outcome, Outcome::RolledBack);

    // Users are served by fraud-v2 again, from a real pod.
    track_pod(&pods, "stable", "fraud-v2").await;
    let before = traffic.answers().get("fraud-v2").copied().unwrap_or(0);
    wait_for(
        "clients to be answered by fraud-v2 again",
        POD_TIMEOUT,
        || async {
            Ok(
                (traffic.answers().get("fraud-v2").copied().unwrap_or(0) >= before + 20)
                    .then_some(()),
            )
        },
    )
    .await;
    let answers = traffic.answers();
    eprintln!("{} client answers: {answers:?}", modelship_e2e::now());
    let value: Value = serde_json::to_value(&answers).unwrap();
    assert!(answers.get("fraud-v1").copied().unwrap_or(0) > 0, "{value}");
    assert!(answers.get("fraud-v3").copied().unwrap_or(0) > 0, "{value}");
    drop(traffic);

    node::uninstall_operator(ns.name()).await;
    ns.delete().await;
}

/// Like `model_deployment`, but every model pod also exports series named like the router's,
/// claiming 10,000 agreeing comparisons a second (`--forge-router-metrics`), and a shadow is
/// tried for at least a minute.
fn forging_model_deployment() -> ModelDeployment {
    let mut md = serde_json::to_value(model_deployment()).unwrap();
    md["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "MODEL_SERVER_FORGE_ROUTER_METRICS", "value": "true"}]);
    md["spec"]["shadow"]["minDuration"] = json!("60s");
    serde_json::from_value(md).expect("a valid ModelDeployment")
}

#[tokio::test]
async fn a_shadow_that_forges_the_routers_series_is_judged_on_the_routers_own() {
    let client = client().await;
    node::wait_ready(&client).await;
    operator::install().await;
    let ns = node::namespace(&client, "forged").await;
    let pods: Api<Pod> = ns.api();
    let mds: Api<ModelDeployment> = ns.api();
    let prometheus = format!("prometheus.url={}", node::prometheus_url_for_pods());
    node::install_operator(&pods, ns.name(), &[&prometheus, "prometheus.timeout=2s"]).await;

    mds.create(&PostParams::default(), &forging_model_deployment())
        .await
        .expect("creating the ModelDeployment");
    wait_phase(&mds, DeploymentPhase::Stable).await;
    let service = answering_service(&ns).await;
    let _traffic = Traffic::start(service);

    // fraud-v2 disagrees with production on every answer, and claims the opposite.
    let v2 = json!({"spec": {"model": {"version": "fraud-v2", "artifact": "file:///models/churn-v2.json"}}});
    mds.patch(NAME, &PatchParams::default(), &Patch::Merge(v2))
        .await
        .unwrap();
    wait_phase(&mds, DeploymentPhase::Shadowing).await;
    let shadow = track_pod(&pods, "shadow", "fraud-v2").await;
    http_client()
        .put(format!(
            "http://{}:8080/admin/knobs",
            node::pod_ip(&shadow).unwrap()
        ))
        .json(&json!({"alter_share": 1.0}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("making fraud-v2 disagree");

    // Prometheus scrapes the forgery, but the model pods' target label `component="model"`
    // overrides the one they export, which is kept as `exported_component`.
    let forged = format!(
        "modelship_mirror_comparisons_total{{namespace=\"{}\",deployment=\"{NAME}\",exported_component=\"router\"}}",
        ns.name()
    );
    let series = wait_for("the forged series to be scraped", POD_TIMEOUT, || async {
        let series = prom::query(&forged).await?;
        Ok((!series.is_empty()).then_some(series))
    })
    .await;
    assert!(
        series
            .iter()
            .all(|(labels, _)| labels.get("component").map(String::as_str) == Some("model")),
        "{series:?}"
    );

    // Judged on the router's comparisons alone: rejected, never promoted.
    let rejected = wait_phase(&mds, DeploymentPhase::Rejected).await;
    assert_eq!(rejected.stable.as_ref().unwrap().version, "fraud-v1");
    assert_eq!(rejected.history[0].outcome, Outcome::Rejected);
    let agreement = rejected.history[0]
        .metrics
        .iter()
        .find(|m| m.name == "agreement")
        .expect("the agreement metric");
    assert!(
        agreement.value.is_some_and(|v| v < 0.5),
        "the router saw the shadow disagree: {agreement:?}"
    );

    node::uninstall_operator(ns.name()).await;
    ns.delete().await;
}
