//! `make demo`: modelship's main job on the local control plane, told step by step.
//!
//! It installs the CRDs and the chart's RBAC, runs the operator under the chart's
//! ServiceAccount, deploys a model, and then lives through what the operator is for: a
//! retrained version is shadowed on mirrored traffic, its answers compared with production's,
//! judged against production in Prometheus, promoted and watched; a version that degrades after
//! promotion is rolled back by itself. Local processes stand for the pods (KWOK runs none).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus};
use modelship_e2e::operator::{self, Options};
use modelship_e2e::pods::{LocalPods, Role};
use modelship_e2e::{client, kubectl, repo_root, wait_for};
use serde_json::json;

const NS: &str = "modelship-demo";
const NAME: &str = "churn";
const TIMEOUT: Duration = Duration::from_secs(180);

fn model_uri(file: &str) -> String {
    format!(
        "file://{}",
        repo_root().join("model-server/models").join(file).display()
    )
}

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

fn print_analysis(status: &ModelDeploymentStatus) {
    let Some(a) = &status.analysis else { return };
    for m in &a.metrics {
        println!(
            "    {:<12} {:<12} value {:>9}  reference {:>9}  samples {:>5}  — {}",
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
            m.message.as_deref().unwrap_or_default()
        );
    }
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
            "evaluate": stage("evaluate", json!({"schemaVersion": 1, "metrics": {"f1": f1, "auc": 0.93}})),
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
    let pipelines: Api<ModelPipeline> = Api::namespaced(client.clone(), NS);
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), NS);
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
    show(&["get", "jobs", "-n", NS, "-l", "modelship.io/pipeline=churn"]).await;
    show(&["get", "modelpipeline", "churn", "-n", NS, "-o", "jsonpath={range .status.runs[0].gates[*]}{.metric}{'\\t'}{.verdict}{'\\t'}{.reason}{'\\n'}{end}"]).await;
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
    show(&["get", "modelship", "-n", NS]).await;
    println!(
        "    from here churn-ci is judged like churn above: shadow analysis, promotion, bake, rollback"
    );
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let client = client().await;

    step(
        start,
        "Installing the CRDs and the operator's RBAC (charts/modelship)",
    );
    operator::install().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(NS)
        .await
        .expect("reading namespaces")
        .is_some()
    {
        let _ = namespaces.delete(NS, &DeleteParams::default()).await;
        wait_for("the previous demo namespace to go", TIMEOUT, || async {
            Ok(namespaces.get_opt(NS).await?.is_none().then_some(()))
        })
        .await;
    }
    let ns = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("a namespace");
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

    step(
        start,
        "Running the operator (`modelship run`) under the chart's ServiceAccount, not as admin",
    );
    let operator = operator::start_with(
        NS,
        Options {
            name: "demo-operator".into(),
            ..Options::default()
        },
    )
    .await;
    println!(
        "    operator metrics: {}/metrics   log: {}",
        operator.admin,
        operator.process.log_path().display()
    );

    // The second version alters no answer but is slower to load; the third fails in production.
    let pods = LocalPods::start(&client, NS, NAME, HashMap::new()).await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), NS);
    let spec = json!({
        "model": {"version": "churn-v1.0.0", "artifact": model_uri("churn-v1.json")},
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:demo", "ports": [{"containerPort": 8080}]}]}},
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
    pods.wait_for_version(Role::Stable, Some("churn-v1.0.0"), TIMEOUT)
        .await;
    show(&["get", "modelship", "-n", NS]).await;
    show(&["get", "deployments,services", "-n", NS]).await;
    let traffic = pods.drive(40);
    println!("    clients now send 40 predictions a second to the `{NAME}` Service (the router)");

    step(
        start,
        "A retrained churn-v1.1.0 arrives: it is shadowed on a copy of production traffic",
    );
    let patch = json!({"spec": {"model": {"version": "churn-v1.1.0", "artifact": model_uri("churn-v2.json")}}});
    mds.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("changing the version");
    wait_phase(&mds, DeploymentPhase::Shadowing).await;
    pods.wait_for_version(Role::Shadow, Some("churn-v1.1.0"), TIMEOUT)
        .await;
    show(&["get", "modelship", "-n", NS]).await;
    let measured = wait_for("the first full analysis", TIMEOUT, || async {
        Ok(mds.get(NAME).await?.status.filter(|s| {
            s.analysis.as_ref().is_some_and(|a| {
                a.metrics.iter().all(|m| m.samples.unwrap_or(0.0) >= 20.0) && !a.metrics.is_empty()
            })
        }))
    })
    .await;
    println!(
        "    the router compares every answer; the analysis judges the shadow against stable:"
    );
    print_analysis(&measured);

    step(start, "Promoted on evidence, then watched while it bakes");
    let baking = wait_phase(&mds, DeploymentPhase::Baking).await;
    println!("    {}", baking.message.unwrap_or_default());
    let stable = wait_phase(&mds, DeploymentPhase::Stable).await;
    println!("    {}", stable.message.unwrap_or_default());
    show(&["get", "modelship", "-n", NS]).await;

    step(
        start,
        "churn-v1.2.0 passes its shadow, then fails once it serves users",
    );
    let patch = json!({"spec": {"model": {"version": "churn-v1.2.0", "artifact": model_uri("churn-v2.json")}}});
    mds.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("changing the version");
    wait_phase(&mds, DeploymentPhase::Baking).await;
    pods.wait_for_version(Role::Stable, Some("churn-v1.2.0"), TIMEOUT)
        .await;
    pods.set_knobs(Role::Stable, json!({"error_rate": 0.3}))
        .await;
    let onset = Instant::now();
    println!("    production now fails 30 % of requests");
    let rolled = wait_phase(&mds, DeploymentPhase::RolledBack).await;
    println!(
        "    rolled back {:.1}s after the onset: {}",
        onset.elapsed().as_secs_f64(),
        rolled.message.unwrap_or_default()
    );
    pods.wait_for_version(Role::Stable, Some("churn-v1.1.0"), TIMEOUT)
        .await;
    show(&["get", "modelship", "-n", NS]).await;
    show(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.kind=ModelDeployment",
        "--sort-by=.metadata.creationTimestamp",
    ])
    .await;

    step(start, "The history in status explains every decision");
    show(&["get", "modeldeployment", NAME, "-n", NS, "-o", "jsonpath={range .status.history[*]}{.version}{'\\t'}{.outcome}{'\\t'}{.message}{'\\n'}{end}"]).await;
    let stats = traffic.stats();
    println!(
        "\n    clients sent {} requests: {} answered, {} failed (the failures are the 30 % while churn-v1.2.0 served, until the rollback)",
        stats.sent, stats.ok, stats.failed
    );
    for (version, n) in &stats.versions {
        println!("      {n:>6} answered by {version}");
    }
    drop(traffic);
    drop(pods);

    pipeline_act(start, &client).await;

    drop(operator);
    step(start, "Done");
    println!(
        "    The cluster keeps running: KUBECONFIG={} e2e/.cluster/bin/kubectl get modelship -A",
        modelship_e2e::kubeconfig_path().display()
    );
    println!("    Stop it with `make cluster-down prometheus-down`.");
}
