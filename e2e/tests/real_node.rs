//! On the real node (`e2e/cluster/node-up`, images from `make images`): the chart installs the
//! operator as a pod that runs with in-cluster configuration under the chart's ServiceAccount
//! and securityContext, in a namespace that enforces Pod Security's `restricted` profile; a
//! ModelDeployment's model servers and its built-in router run as real containers; clients on
//! this host and in a pod get answers through the `<name>` Service; and a new version is
//! shadowed through the router pods.
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment};
use modelship_e2e::node::{self, metrics, predict, restricted_pod_security};
use modelship_e2e::{client, operator, sum_samples, wait_for};
use serde_json::json;

const NAME: &str = "churn";
const TIMEOUT: Duration = node::POD_TIMEOUT;

fn model_deployment() -> ModelDeployment {
    let (pod_sc, container_sc) = restricted_pod_security();
    let spec = json!({
        "model": {"version": "churn-v1", "artifact": "file:///models/churn-v1.json"},
        "replicas": 1,
        "template": {"spec": {
            "securityContext": pod_sc,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "server", "image": "model-server:e2e", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                "securityContext": container_sc,
            }],
        }},
        "traffic": {"router": {"replicas": 1}},
        // Long enough that the shadow is still there when the test has seen it work.
        "shadow": {"minDuration": "30m", "minRequests": 100, "mirrorPercent": 100.0,
                   "compare": {"pointers": ["/predictions"], "minAgreement": 0.9}},
        "analysis": {"interval": "2s", "window": "10s", "bakeTime": "15s"},
    });
    ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"))
}

/// Waits until `base` answers, and returns the version that answered.
async fn first_answer(what: &str, base: &str) -> String {
    wait_for(what, TIMEOUT, || async { Ok(predict(base).await.ok()) }).await
}

async fn wait_phase(mds: &Api<ModelDeployment>, phase: DeploymentPhase) {
    wait_for(&format!("phase {phase:?}"), TIMEOUT, || async {
        let md = mds.get(NAME).await?;
        Ok(md
            .status
            .and_then(|s| s.phase)
            .filter(|p| *p == phase)
            .map(|_| ()))
    })
    .await;
}

fn base_url(ip: &str, port: u16) -> String {
    format!("http://{ip}:{port}")
}

#[tokio::test]
async fn the_chart_runs_the_operator_as_a_pod_and_real_model_pods_serve_and_shadow() {
    let client = client().await;
    node::wait_ready(&client).await;
    // The CRDs (the tests' own release stays at zero replicas).
    operator::install().await;
    let ns = node::namespace(&client, "real-node").await;
    let pods: Api<Pod> = ns.api();

    // The chart as a user installs it, watching this namespace. Its operator is not told
    // where Prometheus is: the analysis is inconclusive, so the version stays in its shadow
    // while the test looks.
    let started = Instant::now();
    let operator_pod = node::install_operator(&pods, ns.name(), &["prometheus.timeout=2s"]).await;
    let release = ns.name().to_string();
    let spec = operator_pod.spec.clone().unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(format!("{release}-modelship").as_str())
    );
    let sc = spec.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    eprintln!(
        "{} the operator pod is ready on {} {:.1} s after helm install began",
        modelship_e2e::now(),
        node::NODE_NAME,
        started.elapsed().as_secs_f64()
    );

    // A ModelDeployment whose model servers and router are real containers.
    let mds: Api<ModelDeployment> = ns.api();
    mds.create(&PostParams::default(), &model_deployment())
        .await
        .expect("creating the ModelDeployment");
    wait_phase(&mds, DeploymentPhase::Stable).await;
    let stable = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/track=stable"),
        1,
        TIMEOUT,
    )
    .await;
    node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/component=router"),
        1,
        TIMEOUT,
    )
    .await;

    // A client on this host, through the Service's ClusterIP (kube-proxy).
    let services: Api<Service> = ns.api();
    let service = node::service_url(&services, NAME).await;
    assert_eq!(
        first_answer("the Service to answer this host", &service).await,
        "churn-v1"
    );

    // A client in a pod, through the Service's DNS name: a router of the modelship image in
    // front of the Service, called from here.
    let (pod_sc, container_sc) = restricted_pod_security();
    let relay: Pod = serde_json::from_value(json!({
        "metadata": {"name": "client", "labels": {"app": "client"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": pod_sc,
            "containers": [{
                "name": "relay", "image": "modelship:e2e", "imagePullPolicy": "IfNotPresent",
                "args": ["mirror"],
                "env": [{"name": "MODELSHIP_MIRROR_STABLE", "value": format!("http://{NAME}.{}.svc", ns.name())}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": container_sc,
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &relay).await.unwrap();
    let relay = node::wait_pods(&pods, "app=client", 1, TIMEOUT).await;
    let relay_url = base_url(&node::pod_ip(&relay[0]).unwrap(), 8080);
    assert_eq!(
        first_answer("a pod's client to get answers from the Service", &relay_url).await,
        "churn-v1"
    );
    let stable_ip = node::pod_ip(&stable[0]).unwrap();

    // A new version: the shadow runs as real pods and the router pods mirror to it.
    mds.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"model": {"version": "churn-v2", "artifact": "file:///models/churn-v2.json"}}})),
    )
    .await
    .unwrap();
    wait_phase(&mds, DeploymentPhase::Shadowing).await;
    let shadow = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/track=shadow"),
        1,
        TIMEOUT,
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    node::wait_router_mirroring(&deployments, NAME, TIMEOUT).await;
    let routers = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/component=router"),
        1,
        TIMEOUT,
    )
    .await;
    let router_metrics = base_url(&node::pod_ip(&routers[0]).unwrap(), 9090);
    let shadow_url = base_url(&node::pod_ip(&shadow[0]).unwrap(), 8080);

    // Traffic through the Service until the router has compared enough answers: every client
    // answer is stable's.
    let answers = std::cell::Cell::new(0_u32);
    wait_for(
        "the router pods to compare 50 shadow answers",
        TIMEOUT,
        || {
            let service = service.clone();
            let router_metrics = router_metrics.clone();
            let answers = &answers;
            async move {
                for _ in 0..20 {
                    let version = predict(&service).await?;
                    assert_eq!(version, "churn-v1", "a client got the shadow's answer");
                    answers.set(answers.get() + 1);
                }
                let text = metrics(&router_metrics).await;
                let compared =
                    sum_samples(&text, "modelship_mirror_comparisons_total{result=\"match\"")
                        + sum_samples(
                            &text,
                            "modelship_mirror_comparisons_total{result=\"mismatch\"",
                        );
                Ok((compared >= 50.0).then_some(()))
            }
        },
    )
    .await;
    let shadow_served = sum_samples(&metrics(&shadow_url).await, "model_server_requests_total");
    assert!(
        shadow_served >= 50.0,
        "the shadow pod served {shadow_served} copies"
    );
    let stable_served = sum_samples(
        &metrics(&base_url(&stable_ip, 8080)).await,
        "model_server_requests_total",
    );
    let answers = answers.get();
    assert!(
        stable_served >= f64::from(answers),
        "the stable pod served {stable_served} of {answers} answers"
    );
    eprintln!(
        "{} {answers} client answers, all churn-v1; the shadow pod answered {shadow_served} copies",
        modelship_e2e::now()
    );

    // The operator pod passed its liveness probe throughout.
    let operator_pod = pods
        .get(&operator_pod.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(
        node::restarts(&operator_pod),
        0,
        "the operator pod restarted"
    );

    node::uninstall_operator(ns.name()).await;
    ns.delete().await;
}
