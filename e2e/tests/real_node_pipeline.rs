//! A ModelPipeline whose stages run for real on the real node: the example ML project
//! (examples/churn-model, image `churn-model:e2e`) lints and tests itself, validates its data,
//! trains a model onto a hostPath PersistentVolume that every stage pod and the model server
//! mount, evaluates it, and the integration stage calls it served by model-server from that
//! volume. The candidate passes its gates; a drifted data version then fails validation with
//! exit code 3 before anything is trained; a hyperparameter that underfits trains a model that
//! fails its f1 gate. The operator runs as a local process under the chart's ServiceAccount.
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use modelship_e2e::node::{self, restricted_pod_security};
use modelship_e2e::{client, kubeconfig_path, operator, output_of, repo_root, wait_for};
use serde_json::{Value, json};

const NAME: &str = "churn";
const IMAGE: &str = "churn-model:e2e";
/// Where the volume is mounted in every pod, and the artifacts' base URI below it.
const MOUNT: &str = "/artifacts";
const ARTIFACT_BASE: &str = "file:///artifacts/churn";
/// Five stages of real pods on a loaded 2-core machine; checks runs the project's tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelship.io", "v1alpha1", kind),
        plural,
    )
}

/// The volumes every pod gets: the artifacts' claim, and a writable /tmp (the root file
/// system is read-only).
fn volumes() -> Value {
    json!([
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}},
        {"name": "tmp", "emptyDir": {}},
    ])
}

fn mounts(read_only: bool) -> Value {
    json!([
        {"name": "artifacts", "mountPath": MOUNT, "readOnly": read_only},
        {"name": "tmp", "mountPath": "/tmp"},
    ])
}

/// A stage running `python3 -m churn_model.<module> ARGS...` in the project's image.
fn stage(module: &str, args: &[&str], writes_artifacts: bool) -> Value {
    let (pod_sc, container_sc) = restricted_pod_security();
    let mut command = vec!["python3", "-m"];
    let module = format!("churn_model.{module}");
    command.push(&module);
    command.extend(args);
    json!({"template": {"spec": {
        "securityContext": pod_sc,
        "automountServiceAccountToken": false,
        "volumes": volumes(),
        "containers": [{
            "name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": command,
            "securityContext": container_sc,
            "volumeMounts": mounts(!writes_artifacts),
        }],
    }}})
}

fn pipeline_spec(data_version: &str) -> Value {
    let mut integration = stage("integration", &["--requests", "100"], false);
    integration["readyTimeoutSeconds"] = json!(180);
    json!({
        "model": {"name": NAME, "initialVersion": "1.0.0", "artifactBase": ARTIFACT_BASE},
        "source": {"repository": "https://git.example/churn-model.git",
                   "revision": "c0ffee1234567890c0ffee1234567890c0ffee12"},
        "data": {"uri": "sklearn://breast_cancer", "version": data_version},
        "stages": {
            "checks": stage("checks", &[], false),
            "validate": stage("validate", &[], false),
            "train": stage("train", &[], true),
            "evaluate": stage("evaluate", &[], false),
            "integration": integration,
        },
        "gates": [
            {"metric": "f1", "direction": "HigherIsBetter", "min": 0.9},
            {"metric": "auc", "direction": "HigherIsBetter", "min": 0.95},
            {"metric": "log_loss", "direction": "LowerIsBetter", "max": 0.3},
            {"metric": "contract_violations", "stage": "Integration", "direction": "LowerIsBetter", "max": 0},
            // A loaded 2-core machine: a bound that catches a broken server, not a slow one.
            {"metric": "p99_latency_ms", "stage": "Integration", "direction": "LowerIsBetter", "max": 1000},
        ],
        "approval": "Manual",
        "seed": 42,
    })
}

/// The ModelDeployment that follows the pipeline: its serving template is the one the
/// integration stage serves the candidate with, the artifacts' volume mounted read-only.
fn follower() -> Value {
    let (pod_sc, container_sc) = restricted_pod_security();
    json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "modelFrom": {"pipeline": NAME},
            "template": {"spec": {
                "securityContext": pod_sc,
                "automountServiceAccountToken": false,
                "volumes": volumes(),
                "containers": [{
                    "name": "server", "image": "model-server:e2e", "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                    "securityContext": container_sc,
                    "volumeMounts": mounts(true),
                }],
            }},
            "shadow": {"minDuration": "1h"},
        },
    })
}

/// A hostPath PersistentVolume on the real node (this machine), bound to the claim
/// `artifacts` of namespace `ns`, and the directory behind it, writable by the stages' user.
/// Both go when the test ends, also when it fails.
struct Artifacts {
    dir: PathBuf,
    pv: String,
    pvs: Api<PersistentVolume>,
    deleted: bool,
}

impl Artifacts {
    async fn create(client: &kube::Client, ns: &str) -> Artifacts {
        let dir = std::env::temp_dir().join(format!("modelship-e2e-{ns}-artifacts"));
        std::fs::create_dir_all(&dir).expect("creating the artifacts' directory");
        chown(&dir, Some(65532), Some(65532)).expect("giving the directory to user 65532");
        let pv = format!("{ns}-artifacts");
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "modelship-e2e-hostpath",
                "hostPath": {"path": dir.to_str().expect("a UTF-8 path"), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": "artifacts"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node::NODE_NAME]},
                ]}]}},
            },
        }))
        .expect("a PersistentVolume");
        pvs.create(&PostParams::default(), &volume)
            .await
            .unwrap_or_else(|e| panic!("creating PersistentVolume {pv}: {e}"));
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "artifacts"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "modelship-e2e-hostpath",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }))
        .expect("a PersistentVolumeClaim");
        claims
            .create(&PostParams::default(), &claim)
            .await
            .unwrap_or_else(|e| panic!("creating the claim: {e}"));
        wait_for(
            "the artifacts' claim to be bound",
            Duration::from_secs(60),
            || async {
                let phase = claims.get("artifacts").await?.status.and_then(|s| s.phase);
                Ok((phase.as_deref() == Some("Bound")).then_some(()))
            },
        )
        .await;
        Artifacts {
            dir,
            pv,
            pvs,
            deleted: false,
        }
    }

    /// The file an artifact URI below the base names, on this machine.
    fn file(&self, uri: &str) -> PathBuf {
        let rest = uri
            .strip_prefix(&format!("file://{MOUNT}/"))
            .unwrap_or_else(|| panic!("{uri} is not below {MOUNT}"));
        self.dir.join(rest)
    }

    async fn delete(mut self) {
        self.deleted = true;
        self.pvs
            .delete(&self.pv, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting PersistentVolume {}: {e}", self.pv));
        std::fs::remove_dir_all(&self.dir).expect("removing the artifacts' directory");
    }
}

impl Drop for Artifacts {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // A failed test: no runtime here, so the pinned kubectl, without waiting.
        let _ = std::process::Command::new(repo_root().join("e2e/.cluster/bin/kubectl"))
            .env("KUBECONFIG", kubeconfig_path())
            .args([
                "delete",
                "persistentvolume",
                &self.pv,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_of<'a>(status: &'a Value, run: &str) -> &'a Value {
    status["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["name"] == run))
        .unwrap_or(&Value::Null)
}

fn stage_of<'a>(run: &'a Value, stage: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == stage))
        .unwrap_or(&Value::Null)
}

/// Waits until run `run` has ended or waits for approval, and returns it.
async fn wait_run_done(pipelines: &Api<DynamicObject>, run: &str) -> Value {
    wait_for(&format!("{NAME} run {run} to end"), RUN_TIMEOUT, || async {
        let status = pipelines.get(NAME).await?.data["status"].clone();
        let r = run_of(&status, run);
        Ok(matches!(
            r["phase"].as_str(),
            Some("WaitingApproval" | "Succeeded" | "Failed" | "Rejected")
        )
        .then(|| r.clone()))
    })
    .await
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

#[tokio::test]
async fn the_example_project_trains_a_candidate_that_passes_its_gates_on_the_real_node() {
    let client = client().await;
    node::wait_ready(&client).await;
    let ns = node::namespace(&client, "churn-pipeline").await;
    let artifacts = Artifacts::create(&client, ns.name()).await;
    let operator = operator::start(ns.name()).await;
    let pipelines: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &resource("ModelPipeline", "modelpipelines"),
    );
    let model_deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &resource("ModelDeployment", "modeldeployments"),
    );
    let md: DynamicObject = serde_json::from_value(follower()).expect("a ModelDeployment");
    model_deployments
        .create(&PostParams::default(), &md)
        .await
        .expect("creating the ModelDeployment");
    let pipeline: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelPipeline",
        "metadata": {"name": NAME}, "spec": pipeline_spec("v1"),
    }))
    .expect("a ModelPipeline");
    pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .expect("creating the ModelPipeline");

    // The source commit: every stage runs for real and the candidate passes its gates.
    let r1 = wait_run_done(&pipelines, "r1").await;
    assert_eq!(r1["phase"], "WaitingApproval", "run r1: {r1:#}");
    for name in ["checks", "validate", "train", "evaluate", "integration"] {
        let s = stage_of(&r1, name);
        assert_eq!(s["phase"], "Succeeded", "stage {name}: {s:#}");
        assert_eq!(
            s["exitCode"].as_i64().unwrap_or(0),
            0,
            "stage {name}: {s:#}"
        );
    }
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
    let version = r1["version"].as_str().expect("the run's version");
    let trained = &r1["trainedArtifact"];
    let uri = trained["uri"]
        .as_str()
        .expect("train reported the artifact's URI");
    assert_eq!(uri, format!("{ARTIFACT_BASE}/{version}/model.json"));
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
    let model: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("reading the model")).expect("JSON");
    assert_eq!(model["kind"], "logistic");
    assert_eq!(model["weights"].as_array().map(Vec::len), Some(30));

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

    // New data that drifted: validate fails with exit code 3, with its figures, and nothing
    // is trained.
    pipelines
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"data": {"version": "drifted-v1"}}})),
        )
        .await
        .expect("patching the data version");
    let r2 = wait_run_done(&pipelines, "r2").await;
    assert_eq!(r2["phase"], "Failed", "run r2: {r2:#}");
    assert_eq!(r2["reason"], "CheckFailed", "run r2: {r2:#}");
    let validate = stage_of(&r2, "validate");
    assert_eq!(validate["exitCode"], 3, "{validate:#}");
    assert!(
        validate["metrics"]["psi_max"].as_f64().unwrap() > 0.2,
        "{validate:#}"
    );
    assert!(
        validate["metrics"]["drifted_features"].as_f64().unwrap() > 0.0,
        "{validate:#}"
    );
    // Nothing is trained on drifted data: the stage never started, its Job was never made.
    assert_eq!(stage_of(&r2, "train")["phase"], "Pending", "{r2:#}");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    assert!(
        jobs.get_opt("churn-r2-train")
            .await
            .expect("reading Jobs")
            .is_none()
    );

    // Back to good data, with a hyperparameter that makes a worse model on purpose: it is
    // trained and evaluated for real, fails its f1 gate, and is never served.
    let underfit = json!({"spec": {
        "data": {"version": "v1"},
        "stages": {"train": stage("train", &["--c", "1e-6"], true)},
    }});
    pipelines
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&underfit))
        .await
        .expect("patching the data version and train's arguments");
    let r3 = wait_run_done(&pipelines, "r3").await;
    assert_eq!(r3["phase"], "Failed", "run r3: {r3:#}");
    assert_eq!(r3["reason"], "GatesFailed", "run r3: {r3:#}");
    let f1 = r3["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["metric"] == "f1"))
        .expect("the f1 gate");
    assert_eq!(f1["verdict"], "Fail", "{f1}");
    assert!(f1["value"].as_f64().unwrap() < 0.5, "{f1}");
    let worse = r3["trainedArtifact"]["sha256"]
        .as_str()
        .expect("train's digest");
    assert_ne!(
        worse,
        trained["sha256"].as_str().unwrap(),
        "another model was written"
    );
    assert_eq!(stage_of(&r3, "integration")["phase"], "Pending", "{r3:#}");

    drop(operator);
    ns.delete().await;
    artifacts.delete().await;
}
