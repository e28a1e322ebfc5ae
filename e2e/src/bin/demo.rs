//! `make demo`: modelship's main job on the local control plane, told step by step.
//!
//! It installs the chart, whose operator runs as a pod on the real node, deploys a model whose
//! model servers and router are real pods there, and then lives through what the operator is
//! for: a retrained version is shadowed on mirrored traffic, its answers compared with
//! production's, judged against production on what Prometheus scraped from the pods, promoted
//! and watched; a version that degrades after promotion is rolled back by itself. Then the
//! example ML project (examples/churn-model) as a ModelPipeline whose stages are real pods: a
//! commit is checked, its data validated, a model trained and evaluated against production,
//! and the approved candidate goes into the shadow of the ModelDeployment that follows the
//! pipeline, where the router compares the two models' real predictions, and is promoted; a
//! commit whose hyperparameter underfits is rejected at its gates, and drifted data stops at
//! validation.
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus};
use modelship_e2e::{
    churn, client, helm, http_client, kubectl, kubectl_modelship, node, operator, repo_root,
    sum_samples, wait_for,
};
use serde_json::{Value, json};

/// The model's namespace: every pod on the real node, Pod Security `restricted`.
const NS: &str = "modelship-demo";
/// The example project's namespace: its stage pods and model servers on the real node too.
const PIPELINE_NS: &str = "modelship-demo-pipeline";
const NAME: &str = "churn";
/// The ModelPipeline, and the ModelDeployment that follows it.
const PIPELINE: &str = "churn";
const TIMEOUT: Duration = Duration::from_secs(180);
/// A run of five stages of real pods on a loaded 2-core machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The example project's commits: the first, one that changes the regularisation, and one
/// whose regularisation underfits.
const COMMIT_1: &str = "4f1c9a2e7b3d5f60718293a4b5c6d7e8f90a1b2c";
const COMMIT_2: &str = "9d0e3b7c21f4a5b6c7d8e9f00112233445566778";
const COMMIT_BAD: &str = "badc0de234567890badc0de234567890badc0de2";
/// How far below production a candidate's f1 and auc may fall.
const MAX_REGRESSION: f64 = 0.02;

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

/// Waits until run `run` of the pipeline has ended or waits for approval; prints where it
/// ended and how long each stage's pod took.
async fn wait_run(pipelines: &Api<DynamicObject>, run: &str) -> Value {
    let r = churn::wait_run_done(pipelines, PIPELINE, run, RUN_TIMEOUT).await;
    let stages: Vec<String> = r["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let took = match (s["startedAt"].as_str(), s["finishedAt"].as_str()) {
                (Some(a), Some(b)) => {
                    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
                        (Ok(a), Ok(b)) => format!(" {}s", b.as_second() - a.as_second()),
                        _ => String::new(),
                    }
                }
                _ => String::new(),
            };
            format!(
                "{} {}{took}",
                s["name"].as_str().unwrap_or("?"),
                s["phase"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!(
        "    run {run} ({} trigger, commit {}, data {}): {}{} [{}]",
        r["trigger"]["reason"].as_str().unwrap_or("?"),
        r["inputs"]["sourceRevision"]
            .as_str()
            .unwrap_or("?")
            .get(..7)
            .unwrap_or("?"),
        r["inputs"]["dataVersion"].as_str().unwrap_or("?"),
        r["phase"].as_str().unwrap_or("?"),
        r["reason"]
            .as_str()
            .filter(|reason| r["phase"] != *reason)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        stages.join(", ")
    );
    r
}

/// The metrics a stage of `run` reported, those named in `names`, as `name value` pairs.
fn figures(run: &Value, stage: &str, names: &[&str]) -> String {
    let metrics = &churn::stage_of(run, stage)["metrics"];
    names
        .iter()
        .filter_map(|n| metrics[*n].as_f64().map(|v| format!("{n} {}", round(v))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A figure as people read it: whole numbers whole, small ones in scientific notation.
fn round(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() < 1e-3 {
        format!("{v:.1e}")
    } else {
        format!("{v:.4}")
    }
}

/// Each gate of `run`: the candidate's value, production's, the verdict and its reason.
fn print_gates(run: &Value) {
    for g in run["gates"].as_array().into_iter().flatten() {
        let num = |v: &Value| v.as_f64().map(round).unwrap_or_else(|| "-".into());
        println!(
            "      {:<20} {:<11} candidate {:>8}  production {:>8}  {:<4} {}",
            g["metric"].as_str().unwrap_or("?"),
            g["stage"].as_str().unwrap_or("?"),
            num(&g["value"]),
            num(&g["baseline"]),
            g["verdict"].as_str().unwrap_or("?"),
            g["reason"].as_str().unwrap_or_default(),
        );
    }
}

/// `kubectl describe KIND NAME -n NS`, from the line that starts with `from` on (the whole
/// description of a pipeline holds every stage's pod template).
async fn describe_from(kind: &str, name: &str, ns: &str, from: &str) {
    let out = kubectl()
        .args(["describe", kind, name, "-n", ns])
        .output()
        .await
        .expect("running kubectl");
    println!("$ kubectl describe {kind} {name} -n {ns}    (from \"{from}\")");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut on = false;
    for line in text.lines() {
        on |= line.trim_start().starts_with(from);
        if on {
            println!("{line}");
        }
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

async fn wait_follower(mds: &Api<DynamicObject>, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, RUN_TIMEOUT, || async {
        let status = mds.get(PIPELINE).await?.data["status"].clone();
        Ok(ok(&status).then_some(status))
    })
    .await
}

/// The rows clients send: pairs of real rows of the table the project trains on.
fn client_batches() -> Vec<Value> {
    let n = churn::ROWS.len();
    (0..n)
        .map(|i| json!([churn::ROWS[i], churn::ROWS[(i + 3) % n]]))
        .collect()
}

/// The CI half, with the example ML project (examples/churn-model): commits and data versions
/// become validated, trained, evaluated and gated candidates, run as real pods on the real
/// node; a ModelDeployment follows the pipeline into production and into a shadow, where the
/// router compares the two models' real predictions, and promotes on Prometheus's evidence.
async fn pipeline_act(start: Instant, client: &kube::Client) {
    let pipelines = churn::pipelines(client, PIPELINE_NS);
    let mds = churn::model_deployments(client, PIPELINE_NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), PIPELINE_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), PIPELINE_NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), PIPELINE_NS);

    step(
        start,
        "The example ML project examples/churn-model as a ModelPipeline: a commit runs checks, data validation, training, evaluation and an integration test as real pods",
    );
    let artifacts = churn::Artifacts::create(client, PIPELINE_NS).await;
    churn::create_data_version(&configmaps, "v1").await;
    let mut follower = churn::follower(PIPELINE);
    follower["spec"]["shadow"] = json!({
        "minDuration": "20s", "minRequests": 200, "mirrorPercent": 100.0,
        "compare": {"pointers": ["/predictions"], "tolerance": 0.05, "minAgreement": 0.5},
    });
    follower["spec"]["analysis"] = json!({"interval": "2s", "window": "10s", "bakeTime": "20s"});
    let follower: DynamicObject = serde_json::from_value(follower).expect("a ModelDeployment");
    mds.create(&PostParams::default(), &follower)
        .await
        .expect("creating the ModelDeployment that follows the pipeline");
    let mut spec = churn::pipeline_spec(PIPELINE, COMMIT_1);
    // Measured against production too, once there is one: f1 and auc may not fall.
    for gate in spec["gates"].as_array_mut().expect("gates") {
        if gate["metric"] == "f1" || gate["metric"] == "auc" {
            gate["maxRegression"] = json!(MAX_REGRESSION);
        }
    }
    let pipeline: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelPipeline",
        "metadata": {"name": PIPELINE}, "spec": spec,
    }))
    .expect("a ModelPipeline");
    pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("creating the ModelPipeline");
    println!(
        "    the stages run `python3 -m churn_model.<stage>` in image {}; the data version is key `{}` of ConfigMap {} (v1); train writes the model onto a hostPath PersistentVolume ({}), which the model servers mount",
        churn::IMAGE,
        churn::DATA_KEY,
        churn::DATA_CONFIGMAP,
        artifacts
            .file(&format!("file://{}/", churn::MOUNT))
            .display(),
    );
    let r1 = wait_run(&pipelines, "r1").await;
    assert_eq!(r1["phase"], "WaitingApproval", "run r1: {r1:#}");
    show(&[
        "get",
        "pods",
        "-n",
        PIPELINE_NS,
        "-l",
        "modelship.io/pipeline=churn",
        "-o",
        "wide",
    ])
    .await;
    println!(
        "    checks: {}\n    validate: {}\n    train: {}\n    evaluate: {}\n    integration: {}",
        figures(&r1, "checks", &["lint_findings", "tests", "test_failures"]),
        figures(
            &r1,
            "validate",
            &["schema_violations", "drifted_features", "psi_max"]
        ),
        figures(&r1, "train", &["train_rows", "train_accuracy"]),
        figures(&r1, "evaluate", &["f1", "auc", "log_loss"]),
        figures(
            &r1,
            "integration",
            &["p99_latency_ms", "contract_violations"]
        ),
    );
    show(&["get", "modelship", "-n", PIPELINE_NS]).await;
    let v1 = r1["version"].as_str().expect("a version").to_string();

    step(
        start,
        "Approved (annotation modelship.io/approve-run=r1): the ModelDeployment `churn` that follows the pipeline serves it",
    );
    churn::annotate(&pipelines, PIPELINE, "modelship.io/approve-run", "r1").await;
    wait_follower(&mds, &format!("churn to serve {v1}"), |s| {
        s["phase"] == "Stable" && s["stable"]["version"] == v1.as_str()
    })
    .await;
    node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={PIPELINE},modelship.io/component=router"),
        1,
        TIMEOUT,
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), PIPELINE_NS);
    let service = node::service_url(&services, PIPELINE).await;
    let batches = client_batches();
    // A new client each time: no connection made before the Service had a backend is reused.
    wait_for("the Service to answer", TIMEOUT, || async {
        Ok(Some(
            node::predict_instances(&http_client(), &service, &batches[0]).await?,
        ))
    })
    .await;
    let http = http_client();
    let traffic = node::Traffic::with_instances(service.clone(), batches.clone());
    println!(
        "    a client sends 40 predictions a second of real rows (30 features each) to the `{PIPELINE}` Service ({service})"
    );
    wait_for(
        "the pipeline to see the production version",
        TIMEOUT,
        || async {
            let status = pipelines.get(PIPELINE).await?.data["status"].clone();
            Ok((status["production"]["version"] == v1.as_str()).then_some(()))
        },
    )
    .await;
    modelship(&["get", "deployment", PIPELINE, "-n", PIPELINE_NS]).await;

    step(
        start,
        "A commit changes the regularisation (train --c 0.3): a new run, its candidate evaluated against production on the same held-out rows",
    );
    churn::commit(&pipelines, PIPELINE, COMMIT_2, &["--c", "0.3"]).await;
    let r2 = wait_run(&pipelines, "r2").await;
    assert_eq!(r2["phase"], "WaitingApproval", "run r2: {r2:#}");
    print_gates(&r2);
    modelship(&["get", "pipeline", PIPELINE, "-n", PIPELINE_NS]).await;
    let v2 = r2["version"].as_str().expect("a version").to_string();

    step(
        start,
        "Approved, the candidate runs in the shadow of production: the router copies each request to it and compares the two models' predictions",
    );
    churn::annotate(&pipelines, PIPELINE, "modelship.io/approve-run", "r2").await;
    wait_follower(&mds, &format!("churn to shadow {v2}"), |s| {
        s["phase"] == "Shadowing" && s["candidate"]["version"] == v2.as_str()
    })
    .await;
    let shadow = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={PIPELINE},modelship.io/track=shadow"),
        1,
        TIMEOUT,
    )
    .await;
    let shadow_url = format!(
        "http://{}:8080",
        node::pod_ip(&shadow[0]).expect("the shadow pod's IP")
    );
    let production_model = artifacts.read_model(
        r1["trainedArtifact"]["uri"]
            .as_str()
            .expect("r1's artifact"),
    );
    println!(
        "    each row of the table, answered by production (through the Service) and by the candidate (its pod):"
    );
    for batch in &batches {
        let prod = node::predict_instances(&http, &service, batch)
            .await
            .expect("production's answer");
        let cand = node::predict_instances(&http, &shadow_url, batch)
            .await
            .expect("the candidate's answer");
        let (p, c) = (&prod["predictions"][0], &cand["predictions"][0]);
        println!(
            "      {} {:.4} {:<9}  {} {:.4} {}",
            prod["model_version"].as_str().unwrap_or("?"),
            p["score"].as_f64().unwrap_or(f64::NAN),
            p["label"].as_str().unwrap_or("?"),
            cand["model_version"].as_str().unwrap_or("?"),
            c["score"].as_f64().unwrap_or(f64::NAN),
            c["label"].as_str().unwrap_or("?"),
        );
        // What the client got is what production's model.json computes.
        let row: [f64; 30] = serde_json::from_value(batch[0].clone()).expect("a row");
        let (score, _) = churn::score(&production_model, &row);
        let got = p["score"].as_f64().expect("a score");
        assert!(
            (got - score).abs() < 1e-9,
            "production answered {got}, its model gives {score}"
        );
    }
    wait_follower(&mds, "the first full analysis", |s| {
        s["analysis"]["metrics"].as_array().is_some_and(|m| {
            !m.is_empty()
                && m.iter()
                    .all(|m| m["samples"].as_f64().unwrap_or(0.0) >= 20.0)
        })
    })
    .await;
    let routers = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={PIPELINE},modelship.io/component=router"),
        1,
        TIMEOUT,
    )
    .await;
    let text = node::metrics(&format!(
        "http://{}:9090",
        node::pod_ip(&routers[0]).expect("the router pod's IP")
    ))
    .await;
    let matched = sum_samples(&text, "modelship_mirror_comparisons_total{result=\"match\"");
    let mismatched = sum_samples(
        &text,
        "modelship_mirror_comparisons_total{result=\"mismatch\"",
    );
    let diffs = sum_samples(&text, "modelship_mirror_abs_diff_count");
    let differing = diffs - sum_samples(&text, "modelship_mirror_abs_diff_bucket{le=\"0\"");
    println!(
        "    the router pod so far: {matched} answers agreed and {mismatched} did not (scores within 0.05, labels equal); {differing:.0} of {diffs:.0} scores differed at all"
    );
    modelship(&["get", "deployment", PIPELINE, "-n", PIPELINE_NS]).await;

    step(
        start,
        "Promoted on what Prometheus scraped from the router pod, then watched while it bakes",
    );
    wait_follower(&mds, &format!("{v2} to be promoted"), |s| {
        s["phase"] == "Baking" || (s["phase"] == "Stable" && s["stable"]["version"] == v2.as_str())
    })
    .await;
    let code = modelship(&["status", PIPELINE, "-n", PIPELINE_NS, "--timeout", "3m"]).await;
    assert_eq!(code, 0, "{v2} did not settle as stable");
    show(&["get", "modelship", "-n", PIPELINE_NS]).await;

    step(
        start,
        "A bad commit: train --c 1e-6 underfits; the model is trained and evaluated for real, and rejected at its gates",
    );
    churn::commit(&pipelines, PIPELINE, COMMIT_BAD, &["--c", "1e-6"]).await;
    let r3 = wait_run(&pipelines, "r3").await;
    assert_eq!(
        (r3["phase"].as_str(), r3["reason"].as_str()),
        (Some("Failed"), Some("GatesFailed")),
        "run r3: {r3:#}"
    );
    print_gates(&r3);
    show(&["get", "modelship", "-n", PIPELINE_NS]).await;
    describe_from("modelpipeline", PIPELINE, PIPELINE_NS, "Events:").await;
    let md = mds.get(PIPELINE).await.expect("the ModelDeployment").data["status"].clone();
    let bad_version = r3["version"].as_str().expect("a version");
    assert!(
        !md.to_string().contains(bad_version),
        "the ModelDeployment got {bad_version}: {md:#}"
    );
    println!("    production still serves {v2}; {bad_version} was never published");

    step(
        start,
        "Drifted data: a data pipeline writes drifted-v1 into ConfigMap churn-data; the run stops at validation, nothing is trained",
    );
    churn::publish_data_version(&configmaps, "drifted-v1").await;
    let r4 = wait_run(&pipelines, "r4").await;
    assert_eq!(
        (r4["phase"].as_str(), r4["reason"].as_str()),
        (Some("Failed"), Some("CheckFailed")),
        "run r4: {r4:#}"
    );
    assert_eq!(r4["trigger"]["reason"], "data", "{r4:#}");
    let validate = &churn::stage_of(&r4, "validate")["metrics"];
    let per_feature: Vec<String> = validate
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("psi.") || k.starts_with("ks."))
        .map(|(k, v)| format!("{k} {}", v.as_f64().map(round).unwrap_or_default()))
        .collect();
    println!(
        "    validate (exit code {}): {}\n      {}",
        churn::stage_of(&r4, "validate")["exitCode"],
        figures(
            &r4,
            "validate",
            &[
                "drifted_features",
                "psi_max",
                "ks_max",
                "ks_min_pvalue",
                "schema_violations"
            ]
        ),
        per_feature.join(", ")
    );
    assert!(
        jobs.get_opt(&format!("{PIPELINE}-r4-train"))
            .await
            .expect("reading Jobs")
            .is_none(),
        "a train Job was made for drifted data"
    );
    show(&["get", "modelship", "-n", PIPELINE_NS]).await;
    describe_from("modelpipeline", PIPELINE, PIPELINE_NS, "Events:").await;

    step(
        start,
        "The history in status explains every run and every version",
    );
    modelship(&["history", PIPELINE, "--pipeline", "-n", PIPELINE_NS]).await;
    modelship(&["history", PIPELINE, "-n", PIPELINE_NS]).await;
    let answers = traffic.answers();
    drop(traffic);
    println!("\n    the client's answers:");
    for (version, n) in &answers {
        println!("      {n:>6} {version}");
    }
    // The cluster keeps running with the demo's objects, and so does their volume.
    artifacts.keep();
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
    let service = node::service_url(&services, NAME).await;
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

    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": PIPELINE_NS, "labels": labels, "annotations": annotations}}),
    )
    .expect("a namespace");
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
