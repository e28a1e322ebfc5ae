//! ModelPipeline end to end, against the real control plane: triggers, stage Jobs whose pods
//! KWOK terminates with the exit code and termination message their template's annotations
//! ask for, gates against the production baseline, approval, the integration stage's
//! temporary Deployment, the ModelDeployment that follows the pipeline, and an operator
//! restart in the middle of a run. The operator runs as a local process under the chart's
//! ServiceAccount, scoped to each test's namespace.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use modelship_e2e::operator::{self, Operator};
use modelship_e2e::{TestNamespace, client, test_namespace, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const IMAGE: &str = "registry.invalid/modelship-stage:e2e";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelship.io", "v1alpha1", kind),
        plural,
    )
}

/// A test's namespace, its operator, and the pipelines and deployments in it.
struct Env {
    client: Client,
    ns: TestNamespace,
    pipelines: Api<DynamicObject>,
    model_deployments: Api<DynamicObject>,
    operator: Operator,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let client = client().await;
        let ns = test_namespace(&client, prefix).await;
        let operator = operator::start(ns.name()).await;
        let pipelines = Api::namespaced_with(
            client.clone(),
            ns.name(),
            &resource("ModelPipeline", "modelpipelines"),
        );
        let model_deployments = Api::namespaced_with(
            client.clone(),
            ns.name(),
            &resource("ModelDeployment", "modeldeployments"),
        );
        Env {
            client,
            ns,
            pipelines,
            model_deployments,
            operator,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    async fn create_pipeline(&self, name: &str, spec: Value) {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "modelship.io/v1alpha1", "kind": "ModelPipeline",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a ModelPipeline");
        self.pipelines
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating ModelPipeline {name}: {e}"));
    }

    /// A ModelDeployment that follows pipeline `pipeline` (its serving template is the one
    /// the integration stage uses).
    async fn create_follower(&self, name: &str, pipeline: &str) {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "modelFrom": {"pipeline": pipeline},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                    {"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}
                ]}},
                "shadow": {"minDuration": "1h"},
            },
        }))
        .expect("a ModelDeployment");
        self.model_deployments
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating ModelDeployment {name}: {e}"));
    }

    async fn patch(&self, name: &str, patch: Value) {
        self.pipelines
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching {name}: {e}"));
    }

    async fn pipeline(&self, name: &str) -> DynamicObject {
        self.pipelines
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading ModelPipeline {name}: {e}"))
    }

    async fn status(&self, name: &str) -> Value {
        self.pipeline(name).await.data["status"].clone()
    }

    /// Waits until run `run` of pipeline `name` satisfies `ok`, and returns the status.
    async fn wait_run(
        &self,
        name: &str,
        run: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(&format!("{name} run {run}: {what}"), TIMEOUT, || async {
            let status = self.pipelines.get(name).await?.data["status"].clone();
            Ok(run_of(&status, run)
                .filter(|r| ok(r))
                .map(|_| status.clone()))
        })
        .await
    }

    async fn wait_phase(&self, name: &str, run: &str, phase: &str) -> Value {
        self.wait_run(name, run, &format!("phase {phase}"), |r| {
            r["phase"] == phase
        })
        .await
    }

    /// Waits until the operator published an event with `reason` about `name`.
    async fn wait_event(&self, name: &str, reason: &str) -> String {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        wait_for(&format!("event {reason} about {name}"), TIMEOUT, || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .map(|e| e.note.unwrap_or_default()))
        })
        .await
    }

    async fn job_names(&self, selector: &str) -> Vec<String> {
        let jobs: Api<Job> = self.api();
        let mut names: Vec<String> = jobs
            .list(&ListParams::default().labels(selector))
            .await
            .expect("listing Jobs")
            .items
            .iter()
            .map(|j| j.name_any())
            .collect();
        names.sort();
        names
    }

    async fn delete(self) {
        drop(self.operator);
        self.ns.delete().await;
    }
}

fn run_of<'a>(status: &'a Value, run: &str) -> Option<&'a Value> {
    status["runs"].as_array()?.iter().find(|r| r["name"] == run)
}

fn stage_of<'a>(run: &'a Value, stage: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == stage))
        .unwrap_or(&Value::Null)
}

fn gate_of<'a>(run: &'a Value, metric: &str) -> &'a Value {
    run["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["metric"] == metric))
        .unwrap_or(&Value::Null)
}

/// A stage whose pod succeeds, reporting `result` as its termination message.
fn reporting(result: Value) -> Value {
    stage(json!({"kwok.modelship.io/message": result.to_string()}))
}

/// A stage whose pod behaves as the KWOK annotations say.
fn stage(annotations: Value) -> Value {
    json!({"template": {
        "metadata": {"annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
    }})
}

fn result(metrics: Value) -> Value {
    json!({"schemaVersion": 1, "metrics": metrics})
}

/// The digest of what train wrote, which evaluate must report it scored.
const TRAINED_SHA256: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn train_result() -> Value {
    json!({"schemaVersion": 1, "metrics": {"loss": 0.12},
           "artifact": {"sha256": TRAINED_SHA256},
           "datasetDigest": "sha256:5e1f"})
}

/// An evaluation of the artifact train reported.
fn evaluation(metrics: Value) -> Value {
    json!({"schemaVersion": 1, "metrics": metrics, "artifact": {"sha256": TRAINED_SHA256}})
}

/// A pipeline that trains and evaluates, with one f1 gate against the baseline.
fn spec(revision: &str, f1: f64, approval: &str) -> Value {
    json!({
        "model": {"name": "fraud", "artifactBase": "s3://models/fraud"},
        "source": {"repository": "https://git.example/fraud.git", "revision": revision},
        "data": {"uri": "s3://data/fraud", "version": "2026-11-26"},
        "stages": {
            "train": reporting(train_result()),
            "evaluate": reporting(evaluation(json!({"f1": f1}))),
        },
        "gates": [{"metric": "f1", "direction": "HigherIsBetter", "min": 0.5, "maxRegression": 0.01}],
        "approval": approval,
    })
}

fn timestamp(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .to_string()
}

/// a. A new source revision runs checks, validate, train, evaluate and integration in
/// order; the integration stage's temporary Deployment exists while it runs and is gone
/// after; a failed validation stops the next run before training.
#[tokio::test]
async fn stages_run_in_order_and_a_failed_validation_stops_before_training() {
    let env = Env::new("pipeline-stages").await;
    env.create_follower("fraud", "fraud").await;
    let mut s = spec("f4c9a2e17b", 0.91, "Manual");
    s["stages"]["checks"] = stage(json!({}));
    s["stages"]["validate"] = reporting(result(json!({"drift_share": 0.05})));
    // The integration test runs a few seconds, long enough to see what it calls.
    let mut integration = stage(
        json!({"kwok.modelship.io/delay": "4s", "kwok.modelship.io/message": result(json!({"p99_ms": 42})).to_string()}),
    );
    integration["readyTimeoutSeconds"] = json!(60);
    s["stages"]["integration"] = integration;
    s["gates"].as_array_mut().unwrap().push(json!({"metric": "p99_ms", "stage": "Integration", "direction": "LowerIsBetter", "max": 100.0}));
    env.create_pipeline("fraud", s).await;

    // While the integration stage runs, the candidate is served by a temporary Deployment.
    let deployments: Api<Deployment> = env.api();
    let services: Api<Service> = env.api();
    let serving = wait_for(
        "the integration stage's temporary Deployment",
        TIMEOUT,
        || async {
            let status = env.status("fraud").await;
            let running = run_of(&status, "r1")
                .is_some_and(|r| r["stage"] == "integration" && r["phase"] == "Running");
            Ok(if running {
                deployments.get_opt("fraud-r1-serve").await?
            } else {
                None
            })
        },
    )
    .await;
    let status = env.status("fraud").await;
    let version = run_of(&status, "r1").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        version.starts_with("fraud-v1.0.0-") && version.ends_with("-f4c9a2"),
        "{version}"
    );
    let labels = serving.labels();
    assert_eq!(labels["modelship.io/pipeline"], "fraud");
    assert_eq!(labels["modelship.io/run"], "r1");
    let pod = serving.spec.unwrap().template;
    assert!(
        !pod.metadata.unwrap().labels.unwrap().contains_key("app"),
        "production's pod labels are not copied"
    );
    let env_vars: BTreeMap<String, String> = pod.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(env_vars["MODEL_VERSION"], version);
    assert_eq!(
        env_vars["MODEL_URI"],
        format!("s3://models/fraud/{version}/")
    );
    // The Service the test calls, applied after the Deployment.
    wait_for(
        "the integration stage's temporary Service",
        TIMEOUT,
        || async { Ok(services.get_opt("fraud-r1-serve").await?) },
    )
    .await;
    wait_for("the integration Job to exist", TIMEOUT, || async {
        Ok(env.api::<Job>().get_opt("fraud-r1-integration").await?)
    })
    .await;

    let status = env.wait_phase("fraud", "r1", "WaitingApproval").await;
    wait_for(
        "the temporary Deployment and Service to be deleted",
        TIMEOUT,
        || async {
            let gone = deployments.get_opt("fraud-r1-serve").await?.is_none()
                && services.get_opt("fraud-r1-serve").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await;

    // Every stage ran, each after the one before had finished.
    let r1 = run_of(&status, "r1").unwrap();
    assert_eq!(r1["trigger"]["reason"], "source");
    let names: Vec<&str> = r1["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["checks", "validate", "train", "evaluate", "integration"]
    );
    let mut previous_end: Option<String> = None;
    for st in r1["stages"].as_array().unwrap() {
        assert_eq!(st["phase"], "Succeeded", "{st}");
        let (start, end) = (timestamp(&st["startedAt"]), timestamp(&st["finishedAt"]));
        let (start_t, end_t) = (parse(&start), parse(&end));
        assert!(start_t <= end_t, "{st}");
        if let Some(prev) = &previous_end {
            assert!(
                parse(prev) <= start_t,
                "stage {} started before the previous one finished",
                st["name"]
            );
        }
        previous_end = Some(end);
    }
    // Each stage's start is its own event, not a count on the first one's (kubectl describe
    // shows every stage).
    let events: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let mut started: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("StageStarted")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fraud")
        })
        .map(|e| {
            assert_eq!(e.series, None, "{:?} is not a repeat", e.note);
            e.note.unwrap_or_default()
        })
        .collect();
    started.sort();
    let mut expected: Vec<String> = ["checks", "evaluate", "train", "validate"]
        .iter()
        .map(|s| format!("r1: stage {s}: Job fraud-r1-{s} started"))
        .collect();
    expected.push(
        "r1: stage integration: starting the candidate as Deployment fraud-r1-serve for the \
         integration test"
            .into(),
    );
    expected.sort();
    assert_eq!(started, expected);
    assert_eq!(
        stage_of(r1, "integration")["serviceUrl"],
        format!("http://fraud-r1-serve.{}.svc:80", env.ns.name())
    );
    assert_eq!(stage_of(r1, "validate")["metrics"]["drift_share"], 0.05);
    assert_eq!(gate_of(r1, "p99_ms")["verdict"], "Pass");
    assert_eq!(
        env.job_names("modelship.io/run=r1").await,
        vec![
            "fraud-r1-checks",
            "fraud-r1-evaluate",
            "fraud-r1-integration",
            "fraud-r1-train",
            "fraud-r1-validate"
        ]
    );

    // The Jobs carry the environment contract, the labels, the owner and the failure policy.
    let train = env.api::<Job>().get("fraud-r1-train").await.unwrap();
    assert_eq!(train.owner_references()[0].kind, "ModelPipeline");
    let job_spec = train.spec.unwrap();
    let rule = &job_spec.pod_failure_policy.unwrap().rules[0];
    assert_eq!(
        (
            rule.action.as_str(),
            rule.on_exit_codes.as_ref().unwrap().values.as_slice()
        ),
        ("FailJob", &[3][..])
    );
    let contract: BTreeMap<String, String> = job_spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    for (k, v) in [
        ("MODELSHIP_RUN", "r1"),
        ("MODELSHIP_STAGE", "train"),
        ("MODELSHIP_SOURCE_REVISION", "f4c9a2e17b"),
        ("MODELSHIP_DATA_VERSION", "2026-11-26"),
        ("MODELSHIP_CANDIDATE_VERSION", version.as_str()),
        ("MODELSHIP_SEED", "42"),
    ] {
        assert_eq!(contract.get(k).map(String::as_str), Some(v), "{k}");
    }
    // Evaluate works on the artifact fixed when train ended.
    let evaluate = env.api::<Job>().get("fraud-r1-evaluate").await.unwrap();
    let evaluate_env: BTreeMap<String, String> =
        evaluate.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
    assert_eq!(evaluate_env["MODELSHIP_ARTIFACT_SHA256"], TRAINED_SHA256);
    assert_eq!(
        evaluate_env["MODELSHIP_ARTIFACT_URI"],
        format!("s3://models/fraud/{version}/")
    );
    let metrics = env.operator.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"modelship_pipeline_runs_started_total{{name="fraud",namespace="{}",trigger="source"}} 1"#,
            env.ns.name()
        )),
        "{metrics}"
    );
    let integration_durations = metrics.lines().find(|l| {
        l.starts_with("modelship_pipeline_stage_duration_seconds_count{")
            && l.contains(r#"stage="integration""#)
            && l.contains(r#"result="succeeded""#)
    });
    assert!(
        integration_durations.is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );

    // A new revision whose data fails validation (exit code 3): nothing is trained.
    let mut failing = stage(
        json!({"kwok.modelship.io/exit-code": "3", "kwok.modelship.io/message": "column amount: 12% nulls, at most 1% allowed"}),
    );
    failing["backoffLimit"] = json!(2);
    env.patch(
        "fraud",
        json!({"spec": {"source": {"revision": "b7e1d05c"}, "stages": {"validate": failing}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r2", "Failed").await;
    let r2 = run_of(&status, "r2").unwrap();
    assert_eq!(r2["trigger"]["reason"], "source");
    assert_eq!(r2["reason"], "CheckFailed");
    assert_eq!(r2["stage"], "validate");
    assert_eq!(stage_of(r2, "validate")["exitCode"], 3);
    assert!(
        r2["message"]
            .as_str()
            .unwrap()
            .contains("column amount: 12% nulls"),
        "{r2}"
    );
    assert_eq!(stage_of(r2, "train")["phase"], "Pending");
    assert_eq!(
        env.job_names("modelship.io/run=r2").await,
        vec!["fraud-r2-checks", "fraud-r2-validate"]
    );
    let pods: Api<Pod> = env.api();
    let validate_pods = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=fraud-r2-validate"))
        .await
        .unwrap();
    assert_eq!(
        validate_pods.items.len(),
        1,
        "exit code 3 is not retried despite backoffLimit 2"
    );
    env.delete().await;
}

fn parse(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("{s} is not an RFC 3339 time: {e}"))
}

/// b. A new data version in the ConfigMap starts a run with trigger `data`, with no change
/// to the pipeline.
#[tokio::test]
async fn a_new_data_version_in_the_configmap_starts_a_data_run() {
    let env = Env::new("pipeline-data").await;
    let configmaps: Api<ConfigMap> = env.api();
    create_data_version_pipeline(&env, &configmaps).await;
    env.wait_phase("fraud", "r1", "Succeeded").await;
    let generation = env.pipeline("fraud").await.metadata.generation;

    let patch = json!({"data": {"version": "2026-11-27"}});
    configmaps
        .patch("fraud-data", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = env.wait_phase("fraud", "r2", "Succeeded").await;
    let r2 = run_of(&status, "r2").unwrap();
    assert_eq!(r2["trigger"]["reason"], "data");
    assert_eq!(
        r2["trigger"]["detail"],
        "data version 2026-11-26 -> 2026-11-27"
    );
    assert_eq!(r2["inputs"]["dataVersion"], "2026-11-27");
    assert_eq!(status["lastTrigger"]["reason"], "data");
    assert_eq!(
        env.pipeline("fraud").await.metadata.generation,
        generation,
        "the pipeline itself did not change"
    );
    let train = env.api::<Job>().get("fraud-r2-train").await.unwrap();
    let data_version = train.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "MODELSHIP_DATA_VERSION")
        .and_then(|e| e.value);
    assert_eq!(data_version.as_deref(), Some("2026-11-27"));
    assert_eq!(
        status["latestApproved"]["reproducibility"]["dataVersion"],
        "2026-11-27"
    );
    env.delete().await;
}

/// ConfigMap `fraud-data` with data version `2026-11-26`, and pipeline `fraud` reading its
/// data version from it.
async fn create_data_version_pipeline(env: &Env, configmaps: &Api<ConfigMap>) {
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "fraud-data"}, "data": {"version": "2026-11-26"}}),
    )
    .unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let mut s = spec("f4c9a2e17b", 0.91, "Automatic");
    s["data"] = json!({"uri": "s3://data/fraud", "versionFrom": {"configMapKeyRef": {"name": "fraud-data", "key": "version"}}});
    env.create_pipeline("fraud", s).await;
}

/// The operator's resident memory in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the operator runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/<pid>/status")
        * 1024
}

/// ConfigMaps that no pipeline reads cost the operator no memory: it watches ConfigMaps'
/// metadata only and reads the one a pipeline names.
#[tokio::test]
async fn configmaps_no_pipeline_reads_do_not_fill_the_operators_memory() {
    const COUNT: usize = 24;
    const SIZE: usize = 900 * 1024;
    let env = Env::new("pipeline-cm-memory").await;
    let configmaps: Api<ConfigMap> = env.api();
    let before = rss_bytes(env.operator.process.pid());
    let blob = "x".repeat(SIZE);
    for i in 0..COUNT {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("unrelated-{i}")}, "data": {"blob": blob}}),
        )
        .unwrap();
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    // Created after the others: once the pipeline runs on its version, the operator's watch
    // has delivered every ConfigMap before it.
    create_data_version_pipeline(&env, &configmaps).await;
    let status = env.wait_phase("fraud", "r1", "Succeeded").await;
    assert_eq!(
        run_of(&status, "r1").unwrap()["inputs"]["dataVersion"],
        "2026-11-26"
    );
    let after = rss_bytes(env.operator.process.pid());
    let grown = after.saturating_sub(before) as f64 / (1024.0 * 1024.0);
    let total = (COUNT * SIZE) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "operator RSS {:.1} MiB -> {:.1} MiB with {total:.0} MiB of ConfigMaps in its namespace",
        before as f64 / (1024.0 * 1024.0),
        after as f64 / (1024.0 * 1024.0)
    );
    assert!(
        grown < total / 2.0,
        "the operator's memory grew by {grown:.1} MiB with {total:.0} MiB of ConfigMaps no pipeline reads"
    );
    env.delete().await;
}

/// c. An evaluation better than the baseline yields an approved candidate, and the
/// ModelDeployment that follows the pipeline starts shadowing exactly that version.
#[tokio::test]
async fn a_better_candidate_is_approved_and_the_following_deployment_shadows_it() {
    let env = Env::new("pipeline-better").await;
    env.create_follower("fraud", "fraud").await;
    env.create_pipeline("fraud", spec("f4c9a2e17b", 0.90, "Automatic"))
        .await;
    let status = env.wait_phase("fraud", "r1", "Succeeded").await;
    let v1 = status["latestApproved"]["version"]
        .as_str()
        .unwrap()
        .to_string();

    // The first approved version becomes production; the pipeline records it, with the
    // metrics it passed with, as the next run's baseline.
    let status = wait_for("production to be the first candidate", TIMEOUT, || async {
        let status = env.status("fraud").await;
        Ok((status["production"]["version"] == v1.as_str()).then_some(status))
    })
    .await;
    assert_eq!(status["production"]["metrics"]["f1"], 0.90);
    assert_eq!(status["production"]["deployment"], "fraud");
    assert_eq!(status["production"]["run"], "r1");

    // A new commit evaluates better than production.
    let evaluate = reporting(evaluation(json!({"f1": 0.93})));
    env.patch(
        "fraud",
        json!({"spec": {"source": {"revision": "0b1c2d3e4f"}, "stages": {"evaluate": evaluate}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r2", "Succeeded").await;
    let r2 = run_of(&status, "r2").unwrap();
    let v2 = r2["version"].as_str().unwrap().to_string();
    assert!(
        v2.starts_with("fraud-v1.1.0-") && v2.ends_with("-0b1c2d"),
        "{v2}"
    );
    assert_eq!(r2["baseline"]["version"], v1.as_str());
    let f1 = gate_of(r2, "f1");
    assert_eq!(
        (
            f1["verdict"].as_str(),
            f1["value"].as_f64(),
            f1["baseline"].as_f64()
        ),
        (Some("Pass"), Some(0.93), Some(0.90))
    );
    assert_eq!(f1["baselineFrom"], "production");
    assert_eq!(status["verdict"], "Pass");
    assert_eq!(status["latestApproved"]["version"], v2.as_str());
    assert_eq!(
        status["latestApproved"]["reproducibility"]["sourceRevision"],
        "0b1c2d3e4f"
    );
    assert_eq!(
        status["latestApproved"]["reproducibility"]["baselineVersion"],
        v1.as_str()
    );

    // The ModelDeployment that follows the pipeline tries exactly that version in shadow.
    let md = wait_for(
        "the ModelDeployment to shadow the new candidate",
        TIMEOUT,
        || async {
            let md = env.model_deployments.get("fraud").await?;
            let s = &md.data["status"];
            Ok(
                (s["phase"] == "Shadowing" && s["candidate"]["version"] == v2.as_str())
                    .then_some(md),
            )
        },
    )
    .await;
    assert_eq!(md.data["status"]["stable"]["version"], v1.as_str());
    assert_eq!(
        md.data["status"]["candidate"]["artifact"],
        format!("s3://models/fraud/{v2}/")
    );
    // Production is still the version it trusts until the candidate is promoted.
    assert_eq!(
        env.status("fraud").await["production"]["version"],
        v1.as_str()
    );
    env.delete().await;
}

/// d. An evaluation worse than the baseline is rejected with per-metric reasons, and no
/// candidate is published.
#[tokio::test]
async fn a_worse_candidate_is_rejected_with_per_metric_reasons() {
    let env = Env::new("pipeline-worse").await;
    let mut s = spec("f4c9a2e17b", 0.85, "Automatic");
    // The evaluate stage measures production's model on the same held-out data.
    let evaluation = json!({"schemaVersion": 1, "metrics": {"f1": 0.85, "rmse": 0.30}, "baselineMetrics": {"f1": 0.90, "rmse": 0.25},
                            "artifact": {"sha256": TRAINED_SHA256}});
    s["stages"]["evaluate"] = reporting(evaluation);
    s["gates"] = json!([
        {"metric": "f1", "direction": "HigherIsBetter", "maxRegression": 0.01},
        {"metric": "rmse", "direction": "LowerIsBetter", "maxRegressionPercent": 5.0},
    ]);
    env.create_pipeline("fraud", s).await;
    let status = env.wait_phase("fraud", "r1", "Failed").await;
    let r1 = run_of(&status, "r1").unwrap();
    assert_eq!(r1["reason"], "GatesFailed");
    assert_eq!(status["verdict"], "Fail");
    assert_eq!(status["phase"], "Failed");
    let f1 = gate_of(r1, "f1");
    assert_eq!(
        (
            f1["verdict"].as_str(),
            f1["value"].as_f64(),
            f1["baseline"].as_f64()
        ),
        (Some("Fail"), Some(0.85), Some(0.90))
    );
    assert_eq!(f1["baselineFrom"], "run");
    assert_eq!(
        f1["reason"],
        "f1 0.85 is below 0.89 (baseline 0.9 with at most 0.01 regression)"
    );
    let rmse = gate_of(r1, "rmse");
    assert_eq!(rmse["verdict"], "Fail");
    assert_eq!(
        rmse["reason"],
        "rmse 0.3 is above 0.2625 (baseline 0.25 with at most 5% regression)"
    );
    assert_eq!(
        rmse["bound"],
        "<= 0.2625 (baseline 0.25 with at most 5% regression)"
    );
    assert!(
        status.get("latestCandidate").is_none() && status.get("latestApproved").is_none(),
        "{status}"
    );
    let succeeded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Succeeded")
        .unwrap();
    assert_eq!(
        (succeeded["status"].as_str(), succeeded["reason"].as_str()),
        (Some("False"), Some("GatesFailed"))
    );
    let note = env.wait_event("fraud", "GatesFailed").await;
    assert!(
        note.contains("f1 0.85 is below 0.89") && note.contains("rmse 0.3 is above 0.2625"),
        "{note}"
    );
    env.delete().await;
}

/// e. Manual approval: nothing is published until the annotation names the run.
#[tokio::test]
async fn manual_approval_publishes_only_when_the_annotation_names_the_run() {
    let env = Env::new("pipeline-approval").await;
    env.create_pipeline("fraud", spec("f4c9a2e17b", 0.91, "Manual"))
        .await;
    let status = env.wait_phase("fraud", "r1", "WaitingApproval").await;
    assert_eq!(status["phase"], "WaitingApproval");
    let candidate = status["latestCandidate"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(status.get("latestApproved").is_none());
    let waiting = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "WaitingApproval")
        .unwrap();
    assert_eq!(waiting["status"], "True");
    assert!(
        env.wait_event("fraud", "AwaitingApproval")
            .await
            .contains("modelship.io/approve-run=r1")
    );

    // An approval naming another run publishes nothing. The manual run requested in a later
    // edit proves the operator has seen the approval annotation.
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"modelship.io/approve-run": "r9"}}}),
    )
    .await;
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"modelship.io/run": "probe-1"}}}),
    )
    .await;
    let status = wait_for("the run request to be handled", TIMEOUT, || async {
        let status = env.status("fraud").await;
        Ok((status["handledRunRequest"] == "probe-1").then_some(status))
    })
    .await;
    assert!(status.get("latestApproved").is_none(), "{status}");
    assert!(run_of(&status, "r1").unwrap()["phase"] != "Succeeded");
    // The value naming no waiting run is refused, recorded, and said.
    assert_eq!(status["approval"]["value"], "r9");
    assert_eq!(status["approval"]["result"], "Refused");
    assert!(
        env.wait_event("fraud", "ApprovalRefused")
            .await
            .contains("modelship.io/approve-run=r9 is refused")
    );

    // r2 (the requested run) supersedes r1's candidate; approving r2 publishes it.
    let status = env.wait_phase("fraud", "r2", "WaitingApproval").await;
    assert_eq!(run_of(&status, "r1").unwrap()["reason"], "Superseded");
    assert!(status.get("latestApproved").is_none());
    let r2_version = run_of(&status, "r2").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(r2_version, candidate);
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"modelship.io/approve-run": "r2"}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r2", "Succeeded").await;
    assert_eq!(status["latestApproved"]["version"], r2_version.as_str());
    assert_eq!(status["latestApproved"]["run"], "r2");
    assert!(status["latestApproved"]["approvedAt"].is_string());
    // Status records the value acted on, when, and the candidate it bound.
    assert_eq!(status["approval"]["value"], "r2");
    assert_eq!(status["approval"]["result"], "Approved");
    assert_eq!(status["approval"]["version"], r2_version.as_str());
    assert_eq!(status["approval"]["sha256"], TRAINED_SHA256);
    assert!(status["approval"]["actedAt"].is_string());
    assert_eq!(status["phase"], "Succeeded");
    env.wait_event("fraud", "CandidateApproved").await;
    env.delete().await;
}

/// f. A label-only edit starts no run; a repeated manual token starts one run only.
#[tokio::test]
async fn a_label_edit_starts_nothing_and_a_repeated_token_starts_one_run() {
    let env = Env::new("pipeline-noop").await;
    env.create_pipeline("fraud", spec("f4c9a2e17b", 0.91, "Automatic"))
        .await;
    env.wait_phase("fraud", "r1", "Succeeded").await;

    // Edits that do not change what is trained. The last one changes the spec, so the
    // operator acknowledges it with observedGeneration, after seeing the others.
    env.patch("fraud", json!({"metadata": {"labels": {"team": "risk"}}}))
        .await;
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"example.com/owner": "risk-team"}}}),
    )
    .await;
    let generation = seen_after(&env, json!({"spec": {"runHistoryLimit": 6}})).await;
    let status = env.status("fraud").await;
    assert_eq!(
        status["runCount"], 1,
        "no run for a label, an annotation or runHistoryLimit: {status}"
    );
    assert_eq!(status["observedGeneration"], generation);

    // A token starts one run.
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"modelship.io/run": "retrain-1"}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r2", "Succeeded").await;
    assert_eq!(
        run_of(&status, "r2").unwrap()["trigger"]["reason"],
        "manual"
    );
    assert_eq!(
        run_of(&status, "r2").unwrap()["trigger"]["detail"],
        "requested with modelship.io/run=retrain-1"
    );

    // The same token again, with other edits around it, starts nothing more.
    env.patch("fraud", json!({"metadata": {"annotations": {"modelship.io/run": "retrain-1", "example.com/owner": "fraud-team"}}})).await;
    env.patch("fraud", json!({"metadata": {"labels": {"team": "fraud"}}}))
        .await;
    seen_after(&env, json!({"spec": {"runHistoryLimit": 7}})).await;
    let status = env.status("fraud").await;
    assert_eq!(status["runCount"], 2, "{status}");
    assert_eq!(status["handledRunRequest"], "retrain-1");
    assert!(status.get("queued").is_none());
    assert_eq!(
        env.job_names("modelship.io/pipeline=fraud").await.len(),
        4,
        "two runs of two stages"
    );
    env.delete().await;
}

/// Applies a spec change and waits until status acknowledges it; returns the generation.
async fn seen_after(env: &Env, patch: Value) -> i64 {
    env.patch("fraud", patch).await;
    let generation = env
        .pipeline("fraud")
        .await
        .metadata
        .generation
        .expect("a generation");
    wait_for(
        &format!("observedGeneration {generation}"),
        TIMEOUT,
        || async {
            Ok((env.status("fraud").await["observedGeneration"] == generation).then_some(()))
        },
    )
    .await;
    generation
}

/// g. A schedule fires a run.
#[tokio::test]
async fn a_schedule_fires_a_run() {
    let env = Env::new("pipeline-schedule").await;
    let mut s = spec("f4c9a2e17b", 0.91, "Automatic");
    // Once a minute (the most a schedule may ask for), at the second that comes 8 s from now
    // (six fields: seconds first), in a time zone of its own.
    let second = (jiff::Timestamp::now().as_second() + 8).rem_euclid(60);
    let schedule = format!("{second} * * * * *");
    s["triggers"] = json!({"schedule": schedule, "timeZone": "Europe/Paris"});
    s["runHistoryLimit"] = json!(2);
    env.create_pipeline("fraud", s).await;
    let status = wait_for("a run started by the schedule", TIMEOUT, || async {
        let status = env.status("fraud").await;
        let scheduled = status["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["trigger"]["reason"] == "schedule"));
        Ok(scheduled.then_some(status))
    })
    .await;
    let run = status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"]["reason"] == "schedule")
        .unwrap();
    assert!(
        run["trigger"]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("schedule {schedule} (Europe/Paris) fired at ")),
        "{run}"
    );
    assert_eq!(
        status["observedSchedule"],
        format!("{schedule} (Europe/Paris)")
    );
    let last = parse(status["lastScheduleTime"].as_str().unwrap());
    let next = parse(status["nextScheduleTime"].as_str().unwrap());
    assert!(next > last, "{status}");
    // The first run was the new pipeline's own (unless it already left the history).
    if let Some(r1) = run_of(&status, "r1") {
        assert_eq!(r1["trigger"]["reason"], "source");
    }

    // More runs (requested, not to wait a minute for the next): those beyond runHistoryLimit
    // leave status and their Jobs are deleted.
    env.patch(
        "fraud",
        json!({"metadata": {"annotations": {"modelship.io/run": "more-1"}}}),
    )
    .await;
    wait_for("r1 to leave the history with its Jobs", TIMEOUT, || async {
        let status = env.status("fraud").await;
        let listed = run_of(&status, "r1").is_some();
        Ok((!listed && env.job_names("modelship.io/run=r1").await.is_empty()).then_some(()))
    })
    .await;
    let status = env.status("fraud").await;
    assert!(status["runs"].as_array().unwrap().len() <= 2, "{status}");
    assert!(
        !env.job_names("modelship.io/pipeline=fraud")
            .await
            .is_empty(),
        "the Jobs of the runs listed are kept"
    );
    env.delete().await;
}

/// h. A malformed termination message fails the run with a clear reason.
#[tokio::test]
async fn a_malformed_termination_message_fails_the_run_with_a_clear_reason() {
    let env = Env::new("pipeline-malformed").await;
    let mut s = spec("f4c9a2e17b", 0.91, "Automatic");
    s["stages"]["evaluate"] = stage(
        json!({"kwok.modelship.io/message": r#"{"schemaVersion":1,"metrics":{"f1":"high"}}"#}),
    );
    env.create_pipeline("fraud", s).await;
    let status = env.wait_phase("fraud", "r1", "Failed").await;
    let r1 = run_of(&status, "r1").unwrap();
    assert_eq!(r1["reason"], "InvalidResult");
    assert_eq!(r1["stage"], "evaluate");
    assert_eq!(
        r1["message"],
        r#"r1: stage evaluate reported an invalid result: metrics.f1 is "high", not a number"#
    );
    assert_eq!(stage_of(r1, "evaluate")["phase"], "Failed");
    assert!(status.get("latestCandidate").is_none());

    // A run whose train stage writes no result at all is failed with that reason too.
    let silent =
        json!({"template": {"metadata": {"annotations": {"kwok.modelship.io/message": null}}}});
    env.patch(
        "fraud",
        json!({"spec": {"source": {"revision": "c0ffee00"}, "stages": {"train": silent}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r2", "Failed").await;
    let message = run_of(&status, "r2").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with(
            "r2: stage train reported an invalid result: the container left no termination message"
        ),
        "{message}"
    );
    env.wait_event("fraud", "InvalidResult").await;

    // An evaluation of another artifact than the one train reported fails the run.
    let other = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let elsewhere =
        json!({"schemaVersion": 1, "metrics": {"f1": 0.99}, "artifact": {"sha256": other}});
    env.patch(
        "fraud",
        json!({"spec": {"source": {"revision": "d00dfeed"}, "stages": {"train": reporting(train_result()), "evaluate": reporting(elsewhere)}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r3", "Failed").await;
    let r3 = run_of(&status, "r3").unwrap();
    assert_eq!(r3["reason"], "ArtifactMismatch");
    let message = r3["message"].as_str().unwrap();
    assert!(
        message.contains(other) && message.contains(TRAINED_SHA256),
        "{message}"
    );
    assert!(status.get("latestCandidate").is_none());

    // A train stage that says it wrote the model outside spec.model.artifactBase fails too.
    let outside = json!({"schemaVersion": 1, "metrics": {},
                         "artifact": {"uri": "s3://attacker/fraud/", "sha256": TRAINED_SHA256}});
    env.patch(
        "fraud",
        json!({"spec": {"source": {"revision": "beadfeed"}, "stages": {"train": reporting(outside), "evaluate": reporting(evaluation(json!({"f1": 0.99})))}}}),
    )
    .await;
    let status = env.wait_phase("fraud", "r4", "Failed").await;
    let r4 = run_of(&status, "r4").unwrap();
    assert_eq!(r4["reason"], "ArtifactRefused");
    assert_eq!(stage_of(r4, "evaluate")["phase"], "Pending");
    assert!(status.get("latestCandidate").is_none());
    env.delete().await;
}

/// i. The operator killed during a run: a new process resumes it without starting a
/// duplicate Job.
#[tokio::test]
async fn a_restarted_operator_resumes_the_run_without_a_duplicate_job() {
    let mut env = Env::new("pipeline-restart").await;
    let mut s = spec("f4c9a2e17b", 0.91, "Automatic");
    // Training takes long enough to kill the operator in the middle of it.
    s["stages"]["train"] = stage(
        json!({"kwok.modelship.io/delay": "10s", "kwok.modelship.io/message": train_result().to_string()}),
    );
    env.create_pipeline("fraud", s).await;
    let jobs: Api<Job> = env.api();
    let train = wait_for("the train Job", TIMEOUT, || async {
        Ok(jobs.get_opt("fraud-r1-train").await?)
    })
    .await;
    let status = env.status("fraud").await;
    assert_eq!(run_of(&status, "r1").unwrap()["stage"], "train");
    env.operator.kill();

    // Another operator process takes over (after the killed one's lease expires).
    let options = operator::Options {
        name: "operator-after-restart".into(),
        ..operator::Options::default()
    };
    env.operator = operator::start_with(env.ns.name(), options).await;
    let status = env.wait_phase("fraud", "r1", "Succeeded").await;
    assert_eq!(status["runCount"], 1, "no second run");
    assert_eq!(
        env.job_names("modelship.io/pipeline=fraud").await,
        vec!["fraud-r1-evaluate", "fraud-r1-train"]
    );
    assert_eq!(
        jobs.get("fraud-r1-train").await.unwrap().uid(),
        train.uid(),
        "the same train Job, not a new one"
    );
    let pods: Api<Pod> = env.api();
    let train_pods = pods
        .list(&ListParams::default().labels("modelship.io/run=r1,modelship.io/stage=train"))
        .await
        .unwrap();
    assert_eq!(train_pods.items.len(), 1, "training ran once");
    let r1 = run_of(&status, "r1").unwrap();
    assert_eq!(stage_of(r1, "train")["metrics"]["loss"], 0.12);
    let repro = &status["latestApproved"]["reproducibility"];
    assert_eq!(
        repro["artifactSha256"],
        "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
    );
    assert_eq!(repro["dataDigest"], "sha256:5e1f");
    assert_eq!(repro["images"]["train/main"], IMAGE);
    env.delete().await;
}
