//! A ModelPipeline whose stages run for real on the real node: the example ML project
//! (examples/churn-model, image `churn-model:e2e`) lints and tests itself, validates its data,
//! trains a model onto a hostPath PersistentVolume that every stage pod and the model server
//! mount, evaluates it, and the integration stage calls it served by model-server from that
//! volume. The pipeline reads its data version from a ConfigMap key, and every data change
//! is an update of that ConfigMap: drifted data stops at validation, corrupted data fails its
//! schema checks, and a new good version retrains a candidate that passes its gates. A forced
//! rerun with the same inputs writes the same bytes, and the record names the image digests
//! the pods ran. The first approved candidate becomes production of the ModelDeployment that
//! follows the pipeline; the second runs in its shadow, and the router pod compares the two
//! models' real predictions while clients get production's. A commit whose hyperparameter
//! underfits fails its gates and is never published. The operator runs as a local process
//! under the chart's ServiceAccount.
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DynamicObject, PostParams};
use modelship_e2e::churn::{
    self, ARTIFACT_BASE, Artifacts, ROWS, annotate, publish_data_version, run_of, score, stage_of,
};
use modelship_e2e::node;
use modelship_e2e::{client, http_client, operator, output_of, repo_root, sum_samples, wait_for};
use serde_json::{Value, json};

const NAME: &str = "churn";
/// Five stages of real pods on a loaded 2-core machine; checks runs the project's tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The commit the pipeline starts with, and a later one whose train arguments underfit.
const REVISION: &str = "c0ffee1234567890c0ffee1234567890c0ffee12";
const UNDERFIT_REVISION: &str = "badc0de234567890badc0de234567890badc0de2";

/// Waits until run `run` has ended or waits for approval, and returns it.
async fn wait_run_done(pipelines: &Api<DynamicObject>, run: &str) -> Value {
    let r = churn::wait_run_done(pipelines, NAME, run, RUN_TIMEOUT).await;
    eprintln!(
        "{} run {run} ({} trigger, data {}): {} {}",
        modelship_e2e::now(),
        r["trigger"]["reason"],
        r["inputs"]["dataVersion"],
        r["phase"],
        r["reason"]
    );
    r
}

/// Waits until run `run` is in `phase`, and returns the pipeline's status.
async fn wait_run_phase(pipelines: &Api<DynamicObject>, run: &str, phase: &str) -> Value {
    churn::wait_run_phase(pipelines, NAME, run, phase, RUN_TIMEOUT).await
}

/// The image ID (`sha256:` of its configuration) of the churn-model image that
/// `e2e/images/build` made and imported into the real node's containerd.
async fn local_image_id() -> String {
    let mut cmd = tokio::process::Command::new("tar");
    cmd.arg("-xOf")
        .arg(repo_root().join("e2e/.images/churn-model.tar"))
        .arg("manifest.json");
    let manifest: Value = serde_json::from_str(&output_of(cmd).await).expect("manifest.json");
    let config = manifest[0]["Config"]
        .as_str()
        .expect("the image's configuration file");
    format!("sha256:{}", config.trim_end_matches(".json"))
}

/// Every stage of `run` that ran a pod records the image its container ran by digest, from
/// the pod's status: the local image's.
fn assert_stage_images(run: &Value, stages: &[&str], image_id: &str) {
    for name in stages {
        let s = stage_of(run, name);
        let image = s["images"]["main"]
            .as_str()
            .unwrap_or_else(|| panic!("stage {name} records no image: {s:#}"));
        assert!(
            image.contains("sha256:"),
            "stage {name} ran {image}, not a digest"
        );
        assert!(
            image.ends_with(image_id),
            "stage {name} ran {image}; the local churn-model image is {image_id}"
        );
    }
}

async fn sha256sum(path: &std::path::Path) -> String {
    let mut cmd = tokio::process::Command::new("sha256sum");
    cmd.arg(path);
    let out = output_of(cmd).await;
    out.split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

async fn wait_deployment(
    mds: &Api<DynamicObject>,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, RUN_TIMEOUT, || async {
        let status = mds.get(NAME).await?.data["status"].clone();
        Ok(ok(&status).then_some(status))
    })
    .await
}

#[tokio::test]
async fn the_example_project_trains_a_candidate_that_passes_its_gates_on_the_real_node() {
    let started = std::time::Instant::now();
    let client = client().await;
    node::wait_ready(&client).await;
    let image_id = local_image_id().await;
    let ns = node::namespace(&client, "churn-pipeline").await;
    let artifacts = Artifacts::create(&client, ns.name()).await;
    let operator = operator::start(ns.name()).await;
    let pipelines = churn::pipelines(&client, ns.name());
    let model_deployments = churn::model_deployments(&client, ns.name());
    let configmaps: Api<ConfigMap> = ns.api();
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let no_job = |run: &str| {
        let jobs = jobs.clone();
        let job = format!("{NAME}-{run}-train");
        async move {
            assert!(
                jobs.get_opt(&job).await.expect("reading Jobs").is_none(),
                "Job {job} was made"
            );
        }
    };

    // The data version lives in a ConfigMap that a data pipeline owns.
    churn::create_data_version(&configmaps, "v1").await;
    let md: DynamicObject =
        serde_json::from_value(churn::follower(NAME)).expect("a ModelDeployment");
    model_deployments
        .create(&PostParams::default(), &md)
        .await
        .expect("creating the ModelDeployment");
    let pipeline: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelPipeline",
        "metadata": {"name": NAME}, "spec": churn::pipeline_spec(NAME, REVISION),
    }))
    .expect("a ModelPipeline");
    pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("creating the ModelPipeline");

    // The source commit on data v1: every stage runs for real and the candidate passes its
    // gates.
    let r1 = wait_run_done(&pipelines, "r1").await;
    assert_eq!(r1["phase"], "WaitingApproval", "run r1: {r1:#}");
    assert_eq!(r1["inputs"]["dataVersion"], "v1", "{r1:#}");
    let all_stages = ["checks", "validate", "train", "evaluate", "integration"];
    for name in all_stages {
        let s = stage_of(&r1, name);
        assert_eq!(s["phase"], "Succeeded", "stage {name}: {s:#}");
        assert_eq!(
            s["exitCode"].as_i64().unwrap_or(0),
            0,
            "stage {name}: {s:#}"
        );
    }
    assert_stage_images(&r1, &all_stages, &image_id);
    eprintln!(
        "{} the stages ran {}",
        modelship_e2e::now(),
        stage_of(&r1, "train")["images"]["main"]
    );
    let checks = &stage_of(&r1, "checks")["metrics"];
    assert!(
        checks["tests"].as_f64().unwrap() > 40.0 && checks["test_failures"] == 0.0,
        "{checks}"
    );
    assert_eq!(
        stage_of(&r1, "validate")["metrics"]["drifted_features"],
        0.0
    );

    // The artifact is the file train wrote on the volume, evaluated and served as it is.
    let v1 = r1["version"]
        .as_str()
        .expect("the run's version")
        .to_string();
    let trained = r1["trainedArtifact"].clone();
    let uri = trained["uri"]
        .as_str()
        .expect("train reported the artifact's URI");
    assert_eq!(uri, format!("{ARTIFACT_BASE}/{v1}/model.json"));
    let file = artifacts.file(uri);
    let sha256 = sha256sum(&file).await;
    assert_eq!(
        trained["sha256"]
            .as_str()
            .map(|s| s.trim_start_matches("sha256:")),
        Some(sha256.as_str())
    );
    assert_eq!(
        stage_of(&r1, "evaluate")["artifact"]["sha256"],
        trained["sha256"]
    );
    let production_model = artifacts.read_model(uri);
    assert_eq!(production_model["kind"], "logistic");
    assert_eq!(
        production_model["weights"].as_array().map(Vec::len),
        Some(30)
    );

    let evaluate = &stage_of(&r1, "evaluate")["metrics"];
    assert!(evaluate["f1"].as_f64().unwrap() >= 0.9, "{evaluate}");
    let integration = &stage_of(&r1, "integration")["metrics"];
    assert_eq!(integration["contract_violations"], 0.0, "{integration}");
    assert!(
        integration["p99_latency_ms"].as_f64().unwrap() > 0.0,
        "{integration}"
    );
    for gate in r1["gates"].as_array().expect("gates") {
        assert_eq!(gate["verdict"], "Pass", "{gate}");
    }
    // The candidate's reproducibility record names every stage's image by digest.
    let record1 = r1["candidate"]["reproducibility"].clone();
    assert_eq!(record1["sourceRevision"], REVISION, "{record1:#}");
    assert_eq!(record1["dataVersion"], "v1", "{record1:#}");
    assert_eq!(record1["seed"], 42, "{record1:#}");
    assert_eq!(record1["artifactSha256"], trained["sha256"], "{record1:#}");
    for name in all_stages {
        let image = record1["images"][format!("{name}/main")].as_str();
        assert!(
            image.is_some_and(|i| i.contains("sha256:") && i.ends_with(&image_id)),
            "stage {name}'s image in the record: {image:?}, the local image {image_id}"
        );
    }

    // Approved, the first candidate becomes production at once: nothing served before.
    annotate(&pipelines, NAME, "modelship.io/approve-run", "r1").await;
    let status = wait_run_phase(&pipelines, "r1", "Succeeded").await;
    assert_eq!(status["latestApproved"]["version"], v1.as_str());
    let md = wait_deployment(
        &model_deployments,
        "the ModelDeployment to serve the first approved version",
        |s| s["phase"] == "Stable" && s["stable"]["version"] == v1.as_str(),
    )
    .await;
    assert!(md["candidate"].is_null(), "{md:#}");
    // The pipeline learns what production serves: the next runs' baseline.
    wait_for(
        "the pipeline to see the production version",
        node::POD_TIMEOUT,
        || async {
            let status = pipelines.get(NAME).await?.data["status"].clone();
            Ok((status["production"]["version"] == v1.as_str()).then_some(()))
        },
    )
    .await;

    // A forced rerun with the same commit, data version and seed writes the same bytes.
    annotate(&pipelines, NAME, "modelship.io/run", "rerun-1").await;
    let r2 = wait_run_done(&pipelines, "r2").await;
    assert_eq!(r2["phase"], "WaitingApproval", "run r2: {r2:#}");
    assert_eq!(r2["trigger"]["reason"], "manual", "{r2:#}");
    assert_eq!(r2["inputs"], r1["inputs"], "the same inputs");
    assert_ne!(r2["version"], r1["version"], "a new candidate version");
    assert_eq!(
        r2["trainedArtifact"]["sha256"], trained["sha256"],
        "the rerun wrote other bytes: {r2:#}"
    );
    let rerun_uri = r2["trainedArtifact"]["uri"].as_str().expect("an artifact");
    assert_ne!(rerun_uri, uri, "the rerun writes its own file");
    assert_eq!(sha256sum(&artifacts.file(rerun_uri)).await, sha256);
    assert_stage_images(&r2, &all_stages, &image_id);
    let record2 = &r2["candidate"]["reproducibility"];
    for field in [
        "sourceRevision",
        "dataVersion",
        "dataDigest",
        "seed",
        "templateHash",
        "artifactSha256",
        "images",
    ] {
        assert_eq!(record2[field], record1[field], "{field}");
    }
    // Measured against production now.
    assert_eq!(record2["baselineVersion"], v1.as_str(), "{record2:#}");

    // Drifted data, written into the ConfigMap only: validate fails with exit code 3, with
    // its figures, and nothing is trained.
    publish_data_version(&configmaps, "drifted-v1").await;
    let r3 = wait_run_done(&pipelines, "r3").await;
    assert_eq!(r3["trigger"]["reason"], "data", "{r3:#}");
    assert_eq!(r3["inputs"]["dataVersion"], "drifted-v1", "{r3:#}");
    assert_eq!(r3["phase"], "Failed", "run r3: {r3:#}");
    assert_eq!(r3["reason"], "CheckFailed", "run r3: {r3:#}");
    let validate = stage_of(&r3, "validate");
    assert_eq!(validate["exitCode"], 3, "{validate:#}");
    assert!(
        validate["metrics"]["psi_max"].as_f64().unwrap() > 0.2,
        "{validate:#}"
    );
    assert!(
        validate["metrics"]["drifted_features"].as_f64().unwrap() > 0.0,
        "{validate:#}"
    );
    assert_eq!(
        validate["metrics"]["schema_violations"], 0.0,
        "{validate:#}"
    );
    // Nothing is trained on drifted data: the stage never started, its Job was never made.
    assert_eq!(stage_of(&r3, "train")["phase"], "Pending", "{r3:#}");
    no_job("r3").await;

    // Corrupted data: missing values, a column of strings, values out of range. The schema
    // checks fail, with what they found.
    publish_data_version(&configmaps, "corrupted-v1").await;
    let r4 = wait_run_done(&pipelines, "r4").await;
    assert_eq!(r4["trigger"]["reason"], "data", "{r4:#}");
    assert_eq!(r4["phase"], "Failed", "run r4: {r4:#}");
    assert_eq!(r4["reason"], "CheckFailed", "run r4: {r4:#}");
    let validate = stage_of(&r4, "validate");
    assert_eq!(validate["exitCode"], 3, "{validate:#}");
    let found = &validate["metrics"];
    assert!(
        found["schema_violations"].as_f64().unwrap() >= 3.0,
        "{found}"
    );
    assert!(found["missing_values"].as_f64().unwrap() > 0.0, "{found}");
    assert_eq!(found["non_numeric_columns"], 1.0, "{found}");
    assert!(
        found["out_of_range_values"].as_f64().unwrap() > 0.0,
        "{found}"
    );
    assert_eq!(found["drifted_features"], 0.0, "not drift: {found}");
    assert_eq!(stage_of(&r4, "train")["phase"], "Pending", "{r4:#}");
    no_job("r4").await;

    // A new good data version retrains, and nobody touched the ModelPipeline.
    let generation = pipelines.get(NAME).await.unwrap().metadata.generation;
    publish_data_version(&configmaps, "v2").await;
    let r5 = wait_run_done(&pipelines, "r5").await;
    assert_eq!(r5["trigger"]["reason"], "data", "{r5:#}");
    assert_eq!(r5["inputs"]["dataVersion"], "v2", "{r5:#}");
    assert_eq!(r5["inputs"]["sourceRevision"], REVISION, "{r5:#}");
    assert_eq!(r5["phase"], "WaitingApproval", "run r5: {r5:#}");
    for gate in r5["gates"].as_array().expect("gates") {
        assert_eq!(gate["verdict"], "Pass", "{gate}");
    }
    assert_stage_images(&r5, &all_stages, &image_id);
    assert_ne!(
        r5["trainedArtifact"]["sha256"], trained["sha256"],
        "other data trains another model"
    );
    assert_eq!(
        pipelines.get(NAME).await.unwrap().metadata.generation,
        generation,
        "the pipeline's spec did not change"
    );
    // The rerun's candidate, never approved, is superseded by the newer one.
    let status = pipelines.get(NAME).await.unwrap().data["status"].clone();
    let r2 = run_of(&status, "r2");
    assert_eq!(
        (&r2["phase"], &r2["reason"]),
        (&json!("Rejected"), &json!("Superseded")),
        "{r2:#}"
    );

    // Approved, the second candidate runs in the shadow of production.
    let v2 = r5["version"]
        .as_str()
        .expect("the run's version")
        .to_string();
    let shadow_model =
        artifacts.read_model(r5["trainedArtifact"]["uri"].as_str().expect("an artifact"));
    annotate(&pipelines, NAME, "modelship.io/approve-run", "r5").await;
    wait_run_phase(&pipelines, "r5", "Succeeded").await;
    let md = wait_deployment(
        &model_deployments,
        "the ModelDeployment to shadow the second approved version",
        |s| {
            s["phase"] == "Shadowing"
                && s["candidate"]["version"] == v2.as_str()
                && s["stable"]["version"] == v1.as_str()
        },
    )
    .await;
    eprintln!("{} shadowing: {}", modelship_e2e::now(), md["message"]);
    node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/track=shadow"),
        1,
        node::POD_TIMEOUT,
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    node::wait_router_mirroring(&deployments, NAME, node::POD_TIMEOUT).await;
    let routers = node::wait_pods(
        &pods,
        &format!("modelship.io/deployment={NAME},modelship.io/component=router"),
        1,
        node::POD_TIMEOUT,
    )
    .await;
    let router_metrics = format!(
        "http://{}:9090",
        node::pod_ip(&routers[0]).expect("the router pod's IP")
    );

    // The underfitting commit starts now, while clients use the service.
    churn::commit(&pipelines, NAME, UNDERFIT_REVISION, &["--c", "1e-6"]).await;

    // Clients send real rows through the Service the router answers behind; every answer is
    // production's, score for score, and the router compares the shadow's predictions of
    // the same rows.
    let expected: Vec<(f64, String)> = ROWS.iter().map(|r| score(&production_model, r)).collect();
    let shadowed: Vec<(f64, String)> = ROWS.iter().map(|r| score(&shadow_model, r)).collect();
    assert!(
        expected
            .iter()
            .zip(&shadowed)
            .any(|(p, s)| (p.0 - s.0).abs() > 1e-6),
        "the two models score the rows alike: {expected:?}"
    );
    let services: Api<Service> = ns.api();
    let service = node::service_url(&services, NAME).await;
    let http = http_client();
    let answers = std::cell::Cell::new(0_u32);
    let compared = wait_for(
        "the router to compare 40 of the shadow's answers",
        node::POD_TIMEOUT,
        || {
            let (http, service, router_metrics) = (&http, &service, &router_metrics);
            let (answers, expected, v1) = (&answers, &expected, v1.as_str());
            async move {
                for i in 0..ROWS.len() {
                    let rows = [ROWS[i], ROWS[(i + 3) % ROWS.len()]];
                    let answer = node::predict_instances(http, service, &json!(rows)).await?;
                    assert_eq!(
                        answer["model_version"],
                        v1,
                        "a client got another version's answer: {answer}"
                    );
                    for (k, row) in [i, (i + 3) % ROWS.len()].into_iter().enumerate() {
                        let p = &answer["predictions"][k];
                        let (score, label) = &expected[row];
                        let got = p["score"].as_f64().expect("a score");
                        assert!(
                            (got - score).abs() < 1e-9 && p["label"] == label.as_str(),
                            "row {row}: the client got {p}, production's model gives {score} {label}"
                        );
                    }
                    answers.set(answers.get() + 1);
                }
                let text = node::metrics(router_metrics).await;
                let compared =
                    sum_samples(&text, "modelship_mirror_comparisons_total{result=\"match\"")
                        + sum_samples(
                            &text,
                            "modelship_mirror_comparisons_total{result=\"mismatch\"",
                        );
                Ok((compared >= 40.0).then_some(text))
            }
        },
    )
    .await;
    // Numbers were compared: a difference recorded per prediction pair, and the shadow's
    // scores observed.
    let diffs = sum_samples(&compared, "modelship_mirror_abs_diff_count");
    assert!(diffs >= 80.0, "{diffs} differences recorded");
    let shadow_scores = sum_samples(
        &compared,
        "modelship_mirror_prediction_value_count{track=\"shadow\"",
    );
    assert!(shadow_scores >= 80.0, "{shadow_scores} shadow scores");
    let shadow_ok = sum_samples(
        &compared,
        "modelship_mirror_requests_total{code=\"200\",track=\"shadow\"",
    );
    assert!(shadow_ok >= 40.0, "{shadow_ok} shadow answers");
    let differing = diffs - sum_samples(&compared, "modelship_mirror_abs_diff_bucket{le=\"0\"");
    eprintln!(
        "{} {} client answers, all {v1}; the router compared {diffs} scores with {v2}'s, {differing} of them differing",
        modelship_e2e::now(),
        answers.get()
    );
    assert!(
        differing > 0.0,
        "the shadow's scores all equal production's"
    );

    // The underfitting commit: trained and evaluated for real, fails its gates with a
    // reason for each, and is never published.
    let r6 = wait_run_done(&pipelines, "r6").await;
    assert_eq!(r6["trigger"]["reason"], "source", "{r6:#}");
    assert_eq!(r6["inputs"]["dataVersion"], "v2", "{r6:#}");
    assert_eq!(r6["phase"], "Failed", "run r6: {r6:#}");
    assert_eq!(r6["reason"], "GatesFailed", "run r6: {r6:#}");
    let gates = r6["gates"].as_array().expect("gates");
    let f1 = gates
        .iter()
        .find(|g| g["metric"] == "f1")
        .expect("the f1 gate");
    assert_eq!(f1["verdict"], "Fail", "{f1}");
    assert!(f1["value"].as_f64().unwrap() < 0.5, "{f1}");
    for gate in gates.iter().filter(|g| g["verdict"] == "Fail") {
        let reason = gate["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(gate["metric"].as_str().unwrap()),
            "gate {}: reason {reason:?}",
            gate["metric"]
        );
    }
    let worse = r6["trainedArtifact"]["sha256"]
        .as_str()
        .expect("train's digest");
    assert_ne!(
        worse,
        trained["sha256"].as_str().unwrap(),
        "another model was written"
    );
    assert_eq!(stage_of(&r6, "integration")["phase"], "Pending", "{r6:#}");
    assert!(r6["candidate"].is_null(), "{r6:#}");
    let underfit_version = r6["version"].as_str().expect("a version");
    let status = pipelines.get(NAME).await.unwrap().data["status"].clone();
    assert_eq!(status["latestApproved"]["version"], v2.as_str());
    assert_eq!(status["latestCandidate"]["version"], v2.as_str());
    let md = model_deployments.get(NAME).await.unwrap().data["status"].clone();
    assert!(
        !md.to_string().contains(underfit_version),
        "the ModelDeployment got {underfit_version}: {md:#}"
    );
    assert_eq!(
        (&md["phase"], &md["desired"]["version"]),
        (&json!("Shadowing"), &json!(v2.as_str())),
        "{md:#}"
    );
    eprintln!(
        "{} the pipeline test took {:.0} s",
        modelship_e2e::now(),
        started.elapsed().as_secs_f64()
    );

    drop(operator);
    ns.delete().await;
    artifacts.delete().await;
}
