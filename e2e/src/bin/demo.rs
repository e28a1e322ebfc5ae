//! `make demo`: modelship's main job on the local control plane, told step by step.
//!
//! It installs the chart, whose operator runs as a pod on the real node, deploys a model whose
//! model servers and router are real pods there, and then lives through what the operator is
//! for: a retrained version is shadowed on mirrored traffic, its answers compared with
//! production's, judged against production on what Prometheus scraped from the pods, promoted
//! and watched; a version that degrades after promotion is rolled back by itself. Last, a
//! ModelPipeline turns commits into gated candidates (its stages' pods are KWOK's, which run
//! nothing: their results are written for them).
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus};
use modelship_e2e::{
    client, helm, http_client, kubectl, kubectl_modelship, node, operator, repo_root, wait_for,
};
use serde_json::json;

/// The model's namespace: every pod on the real node, Pod Security `restricted`.
const NS: &str = "modelship-demo";
/// The pipeline's namespace: its stages' pods on the KWOK nodes.
const PIPELINE_NS: &str = "modelship-demo-pipeline";
const NAME: &str = "churn";
const TIMEOUT: Duration = Duration::from_secs(180);

fn step(start: Instant, text: &str) {
    println!(
        "\n\x1b[1m[{:>5.1}s] {text}\x1b[0m",
        start.elapsed().as_secs_f64()
    );
}

async fn show(args: &[&str]) {
    let out = kubectl()
        .args(args)
        .output()
        .await
        .expect("running kubectl");
    println!("$ kubectl {}", args.join(" "));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `kubectl modelship ARGS` (the workspace's plugin) and shows what it printed, as a
/// person would see it; the exit code, for the commands that gate on it.
async fn modelship(args: &[&str]) -> i32 {
    // The command first: `status` takes a while.
    println!("$ kubectl modelship {}", args.join(" "));
    let out = kubectl_modelship()
        .args(args)
        .output()
        .await
        .expect("running kubectl-modelship");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out.status.code().unwrap_or(-1)
}

/// The `count` ready pods of `track` that serve `version`.
async fn track_pods(pods: &Api<Pod>, track: &str, version: &str, count: usize) -> Vec<Pod> {
    let selector = format!(
        "modelship.io/deployment={NAME},modelship.io/track={track},modelship.io/version={version}"
    );
    node::wait_pods(pods, &selector, count, TIMEOUT).await
}

async fn wait_phase(api: &Api<ModelDeployment>, phase: DeploymentPhase) -> ModelDeploymentStatus {
    wait_for(&format!("phase {phase}"), TIMEOUT, || async {
        Ok(api
            .get(NAME)
            .await?
            .status
            .filter(|s| s.phase == Some(phase)))
    })
    .await
}

/// A stage whose pod (KWOK runs none) ends with `message` as its termination message, as the
/// stage's own code would report its results.
fn stage(name: &str, message: serde_json::Value) -> serde_json::Value {
    json!({"template": {
        "metadata": {"annotations": {"kwok.modelship.io/message": message.to_string()}},
        "spec": {"containers": [{"name": name, "image": format!("registry.example.com/churn-{name}:2.3.0")}]},
    }})
}

fn pipeline_spec(revision: &str, f1: f64) -> serde_json::Value {
    json!({
        "model": {"name": "churn", "initialVersion": "1.0.0", "bump": "Minor", "artifactBase": "s3://models/churn"},
        "source": {"repository": "https://git.example.com/retention/churn.git", "revision": revision},
        "data": {"uri": "s3://datasets/churn/customers", "version": "2026-11-26"},
        "stages": {
            "validate": stage("validate", json!({"schemaVersion": 1, "metrics": {"null_share": 0.001, "drift_share": 0.04}, "datasetDigest": "sha256:9f2c41d0"})),
            "train": stage("train", json!({"schemaVersion": 1, "metrics": {"loss": 0.21},
                "artifact": {"sha256": "3b8e0c6d1f2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4"}, "datasetDigest": "sha256:9f2c41d0"})),
            "evaluate": stage("evaluate", json!({"schemaVersion": 1, "metrics": {"f1": f1, "auc": 0.93},
                "artifact": {"sha256": "3b8e0c6d1f2a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4"}})),
        },
        "gates": [
            {"metric": "f1", "direction": "HigherIsBetter", "min": 0.8, "maxRegression": 0.01},
            {"metric": "auc", "direction": "HigherIsBetter", "min": 0.85},
        ],
        "approval": "Automatic",
    })
}

/// The CI half: commits become gated, versioned candidates that a ModelDeployment follows.
async fn pipeline_act(start: Instant, client: &kube::Client) {
    use modelship::api::{ModelPipeline, ModelPipelineSpec};
    let pipelines: Api<ModelPipeline> = Api::namespaced(client.clone(), PIPELINE_NS);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), PIPELINE_NS);
    step(
        start,
        "A commit arrives: the ModelPipeline `churn` validates the data, trains, evaluates and gates a candidate",
    );
    let spec: ModelPipelineSpec =
        serde_json::from_value(pipeline_spec("4f1c9a2e7b", 0.91)).expect("a valid pipeline");
    pipelines
        .create(&PostParams::default(), &ModelPipeline::new("churn", spec))
        .await
        .expect("creating the ModelPipeline");
    let first = wait_for("an approved candidate", TIMEOUT, || async {
        Ok(pipelines
            .get("churn")
            .await?
            .status
            .and_then(|s| s.latest_approved))
    })
    .await;
    show(&[
        "get",
        "jobs",
        "-n",
        PIPELINE_NS,
        "-l",
        "modelship.io/pipeline=churn",
    ])
    .await;
    modelship(&["get", "pipeline", "churn", "-n", PIPELINE_NS]).await;
    println!(
        "    candidate {} at {}, approved automatically",
        first.version, first.artifact
    );

    step(
        start,
        "A ModelDeployment follows the pipeline: it serves the approved candidate",
    );
    let follower: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn-ci"},
        "spec": {
            "modelFrom": {"pipeline": "churn"},
            "template": {"spec": {"containers": [{"name": "server", "image": "model-server:demo", "ports": [{"containerPort": 8080}]}]}},
        },
    }))
    .expect("a ModelDeployment");
    mds.create(&PostParams::default(), &follower)
        .await
        .expect("creating the follower");
    wait_for("churn-ci to serve the candidate", TIMEOUT, || async {
        Ok(mds
            .get("churn-ci")
            .await?
            .status
            .and_then(|s| s.stable)
            .filter(|s| s.version == first.version))
    })
    .await;

    step(
        start,
        "The next commit: a new run, a new candidate, and the follower shadows it against production",
    );
    let patch = json!({"spec": {"source": {"revision": "9d0e3b7c21"}}});
    pipelines
        .patch("churn", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("a new revision");
    let second = wait_for("the second candidate", TIMEOUT, || async {
        Ok(pipelines
            .get("churn")
            .await?
            .status
            .and_then(|s| s.latest_approved)
            .filter(|c| c.version != first.version))
    })
    .await;
    wait_for(
        "churn-ci to shadow the second candidate",
        TIMEOUT,
        || async {
            Ok(mds
                .get("churn-ci")
                .await?
                .status
                .filter(|s| s.phase == Some(DeploymentPhase::Shadowing))
                .and_then(|s| s.candidate)
                .filter(|c| c.version == second.version))
        },
    )
    .await;
    modelship(&["history", "churn", "--pipeline", "-n", PIPELINE_NS]).await;
    modelship(&["get", "deployment", "churn-ci", "-n", PIPELINE_NS]).await;
    println!(
        "    from here churn-ci is judged like churn above: shadow analysis, promotion, bake, rollback"
    );
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    step(start, "Installing the CRDs");
    operator::install().await;
    // A previous demo's namespaces go first: the story starts from nothing.
    for ns in [NS, PIPELINE_NS] {
        if namespaces
            .get_opt(ns)
            .await
            .expect("reading namespaces")
            .is_some()
        {
            let _ = namespaces.delete(ns, &DeleteParams::default()).await;
            wait_for(
                &format!("the previous demo namespace {ns} to go"),
                TIMEOUT,
                || async { Ok(namespaces.get_opt(ns).await?.is_none().then_some(())) },
            )
            .await;
        }
    }

    step(
        start,
        "Installing the operator with Helm (charts/modelship): a pod on the real node, under the chart's ServiceAccount",
    );
    let prometheus = node::prometheus_url_for_pods();
    let mut install = helm();
    install
        .args(["upgrade", "--install", operator::RELEASE])
        .arg(repo_root().join("charts/modelship"))
        .args([
            "--namespace",
            operator::RELEASE_NAMESPACE,
            "--skip-crds",
            "--wait",
            "--timeout",
            "5m",
        ])
        .args(["--set", &format!("prometheus.url={prometheus}")]);
    for set in node::chart_placement() {
        install.args(["--set", &set]);
    }
    modelship_e2e::output_of(install).await;
    // The image tag stays the same when `make images` rebuilds it: start the pod anew.
    let mut restart = kubectl();
    restart.args([
        "rollout",
        "restart",
        "deployment",
        operator::RELEASE,
        "-n",
        operator::RELEASE_NAMESPACE,
    ]);
    modelship_e2e::output_of(restart).await;
    let mut status = kubectl();
    status.args([
        "rollout",
        "status",
        "deployment",
        operator::RELEASE,
        "-n",
        operator::RELEASE_NAMESPACE,
        "--timeout=5m",
    ]);
    modelship_e2e::output_of(status).await;
    show(&[
        "get",
        "pods",
        "-n",
        operator::RELEASE_NAMESPACE,
        "-o",
        "wide",
    ])
    .await;
    println!(
        "    it asks the Prometheus on this host ({prometheus}), which finds the model pods through the API server"
    );

    let (labels, annotations) = node::namespace_metadata();
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": NS, "labels": labels, "annotations": annotations}}),
    )
    .expect("a namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the demo namespace");
    let service_accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), NS);
    wait_for("the default ServiceAccount", TIMEOUT, || async {
        Ok(service_accounts.get_opt("default").await?)
    })
    .await;

    // The second version alters no answer; the third fails once it serves users.
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (pod_sc, container_sc) = node::restricted_pod_security();
    let spec = json!({
        "model": {"version": "churn-v1.0.0", "artifact": "file:///models/churn-v1.json"},
        "replicas": 2,
        "template": {"spec": {
            "securityContext": pod_sc,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "server", "image": "model-server:e2e", "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "metrics", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                "securityContext": container_sc,
            }],
        }},
        "shadow": {"minDuration": "15s", "minRequests": 200, "compare": {"pointers": ["/predictions"], "tolerance": 0.05, "minAgreement": 0.8}},
        "analysis": {"interval": "2s", "window": "10s", "bakeTime": "20s"},
    });
    step(
        start,
        "Deploying churn-v1.0.0 (a ModelDeployment; the first version goes straight to stable)",
    );
    let md = ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"));
    mds.create(&PostParams::default(), &md)
        .await
        .expect("creating the ModelDeployment");
    wait_phase(&mds, DeploymentPhase::Stable).await;
    track_pods(&pods, "stable", "churn-v1.0.0", 2).await;
    node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/component=router"),
        1,
        TIMEOUT,
    )
    .await;
    modelship(&["get", "deployment", NAME, "-n", NS]).await;
    show(&["get", "pods", "-n", NS, "-o", "wide"]).await;
    show(&[
        "logs",
        "-n",
        operator::RELEASE_NAMESPACE,
        &format!("deployment/{}", operator::RELEASE),
        "--tail=3",
    ])
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let cluster_ip = services
        .get(NAME)
        .await
        .expect("the Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let service = format!("http://{cluster_ip}");
    wait_for("the Service to answer", TIMEOUT, || async {
        Ok(node::predict(&service).await.ok())
    })
    .await;
    let traffic = node::Traffic::start(service.clone());
    println!(
        "    a client on this host sends 40 predictions a second to the `{NAME}` Service ({service}): the router pod"
    );

    step(
        start,
        "A retrained churn-v1.1.0 arrives: it is shadowed on a copy of production traffic",
    );
    let patch = json!({"spec": {"model": {"version": "churn-v1.1.0", "artifact": "file:///models/churn-v2.json"}}});
    mds.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("changing the version");
    wait_phase(&mds, DeploymentPhase::Shadowing).await;
    track_pods(&pods, "shadow", "churn-v1.1.0", 2).await;
    show(&["get", "modelship", "-n", NS]).await;
    wait_for("the first full analysis", TIMEOUT, || async {
        Ok(mds.get(NAME).await?.status.filter(|s| {
            s.analysis.as_ref().is_some_and(|a| {
                a.metrics.iter().all(|m| m.samples.unwrap_or(0.0) >= 20.0) && !a.metrics.is_empty()
            })
        }))
    })
    .await;
    println!(
        "    the router compares every answer; Prometheus scraped the router pod, and the analysis judges the shadow against stable:"
    );
    modelship(&["get", "deployment", NAME, "-n", NS]).await;

    step(start, "Promoted on evidence, then watched while it bakes");
    let baking = wait_phase(&mds, DeploymentPhase::Baking).await;
    println!("    {}", baking.message.unwrap_or_default());
    println!("    a CI job or a GitOps hook waits for the outcome, and gates on the exit code:");
    let code = modelship(&["status", NAME, "-n", NS, "--timeout", "3m"]).await;
    assert_eq!(code, 0, "churn-v1.1.0 did not settle as stable");

    step(
        start,
        "churn-v1.2.0 passes its shadow, then fails once it serves users",
    );
    let patch = json!({"spec": {"model": {"version": "churn-v1.2.0", "artifact": "file:///models/churn-v2.json"}}});
    mds.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("changing the version");
    wait_phase(&mds, DeploymentPhase::Baking).await;
    for pod in track_pods(&pods, "stable", "churn-v1.2.0", 2).await {
        let knobs = format!(
            "http://{}:8080/admin/knobs",
            node::pod_ip(&pod).expect("a pod IP")
        );
        http_client()
            .put(&knobs)
            .json(&json!({"error_rate": 0.3}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("degrading churn-v1.2.0");
    }
    let onset = Instant::now();
    println!("    production pods now fail 30 % of requests");
    let rolled = wait_phase(&mds, DeploymentPhase::RolledBack).await;
    println!(
        "    rolled back {:.1}s after the onset: {}",
        onset.elapsed().as_secs_f64(),
        rolled.message.unwrap_or_default()
    );
    track_pods(&pods, "stable", "churn-v1.1.0", 2).await;
    modelship(&["get", "deployment", NAME, "-n", NS]).await;
    show(&["get", "pods", "-n", NS, "-o", "wide"]).await;

    step(start, "The history in status explains every decision");
    modelship(&["history", NAME, "-n", NS]).await;
    let answers = traffic.answers();
    drop(traffic);
    println!(
        "\n    the client's answers (the failures are the 30 % while churn-v1.2.0 served, until the rollback):"
    );
    for (version, n) in &answers {
        println!("      {n:>6} {version}");
    }

    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": PIPELINE_NS}})).expect("a namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the pipeline namespace");
    wait_for("the default ServiceAccount", TIMEOUT, || async {
        Ok(
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                client.clone(),
                PIPELINE_NS,
            )
            .get_opt("default")
            .await?,
        )
    })
    .await;
    pipeline_act(start, &client).await;

    step(start, "Done");
    println!(
        "    The cluster keeps running: KUBECONFIG={} e2e/.cluster/bin/kubectl get modelship,pods -A -o wide",
        modelship_e2e::kubeconfig_path().display()
    );
    println!("    Stop it with `make cluster-down prometheus-down`.");
}
