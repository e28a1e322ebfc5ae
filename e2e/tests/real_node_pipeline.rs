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
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use modelship_e2e::node::{self, restricted_pod_security};
use modelship_e2e::{
    client, http_client, kubeconfig_path, operator, output_of, repo_root, sum_samples, wait_for,
};
use serde_json::{Value, json};

const NAME: &str = "churn";
const IMAGE: &str = "churn-model:e2e";
/// Where the volume is mounted in every pod, and the artifacts' base URI below it.
const MOUNT: &str = "/artifacts";
const ARTIFACT_BASE: &str = "file:///artifacts/churn";
/// Five stages of real pods on a loaded 2-core machine; checks runs the project's tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The ConfigMap and key the pipeline reads its data version from; a data pipeline would
/// update it.
const DATA_CONFIGMAP: &str = "churn-data";
const DATA_KEY: &str = "version";
/// The commit the pipeline starts with, and a later one whose train arguments underfit.
const REVISION: &str = "c0ffee1234567890c0ffee1234567890c0ffee12";
const UNDERFIT_REVISION: &str = "badc0de234567890badc0de234567890badc0de2";

/// Rows of the Wisconsin breast-cancer table the project trains on (30 features each):
/// what clients send the served model.
const ROWS: [[f64; 30]; 8] = [
    [
        17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095,
        0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33,
        184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189,
    ], // malignant
    [
        18.94, 21.31, 123.6, 1130.0, 0.09009, 0.1029, 0.108, 0.07951, 0.1582, 0.05461, 0.7888,
        0.7975, 5.486, 96.05, 0.004444, 0.01652, 0.02269, 0.0137, 0.01386, 0.001698, 24.86, 26.58,
        165.9, 1866.0, 0.1193, 0.2336, 0.2687, 0.1789, 0.2551, 0.06589,
    ], // malignant
    [
        9.738, 11.97, 61.24, 288.5, 0.0925, 0.04102, 0.0, 0.0, 0.1903, 0.06422, 0.1988, 0.496,
        1.218, 12.26, 0.00604, 0.005656, 0.0, 0.0, 0.02277, 0.00322, 10.62, 14.1, 66.53, 342.9,
        0.1234, 0.07204, 0.0, 0.0, 0.3105, 0.08151,
    ], // benign
    [
        20.58, 22.14, 134.7, 1290.0, 0.0909, 0.1348, 0.164, 0.09561, 0.1765, 0.05024, 0.8601, 1.48,
        7.029, 111.7, 0.008124, 0.03611, 0.05489, 0.02765, 0.03176, 0.002365, 23.24, 27.84, 158.3,
        1656.0, 0.1178, 0.292, 0.3861, 0.192, 0.2909, 0.05865,
    ], // malignant
    [
        19.16, 26.6, 126.2, 1138.0, 0.102, 0.1453, 0.1921, 0.09664, 0.1902, 0.0622, 0.6361, 1.001,
        4.321, 69.65, 0.007392, 0.02449, 0.03988, 0.01293, 0.01435, 0.003446, 23.72, 35.9, 159.8,
        1724.0, 0.1782, 0.3841, 0.5754, 0.1872, 0.3258, 0.0972,
    ], // malignant
    [
        11.66, 17.07, 73.7, 421.0, 0.07561, 0.0363, 0.008306, 0.01162, 0.1671, 0.05731, 0.3534,
        0.6724, 2.225, 26.03, 0.006583, 0.006991, 0.005949, 0.006296, 0.02216, 0.002668, 13.28,
        19.74, 83.61, 542.5, 0.09958, 0.06476, 0.03046, 0.04262, 0.2731, 0.06825,
    ], // benign
    [
        11.57, 19.04, 74.2, 409.7, 0.08546, 0.07722, 0.05485, 0.01428, 0.2031, 0.06267, 0.2864,
        1.44, 2.206, 20.3, 0.007278, 0.02047, 0.04447, 0.008799, 0.01868, 0.003339, 13.07, 26.98,
        86.43, 520.5, 0.1249, 0.1937, 0.256, 0.06664, 0.3035, 0.08284,
    ], // benign
    [
        12.25, 22.44, 78.18, 466.5, 0.08192, 0.052, 0.01714, 0.01261, 0.1544, 0.05976, 0.2239,
        1.139, 1.577, 18.04, 0.005096, 0.01205, 0.00941, 0.004551, 0.01608, 0.002399, 14.17, 31.99,
        92.74, 622.9, 0.1256, 0.1804, 0.123, 0.06335, 0.31, 0.08203,
    ], // benign
];

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

fn pipeline_spec() -> Value {
    let mut integration = stage("integration", &["--requests", "100"], false);
    integration["readyTimeoutSeconds"] = json!(180);
    json!({
        "model": {"name": NAME, "initialVersion": "1.0.0", "artifactBase": ARTIFACT_BASE},
        "source": {"repository": "https://git.example/churn-model.git",
                   "revision": REVISION},
        "data": {"uri": "sklearn://breast_cancer",
                 "versionFrom": {"configMapKeyRef": {"name": DATA_CONFIGMAP, "key": DATA_KEY}}},
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
/// integration stage serves the candidate with, the artifacts' volume mounted read-only. Its
/// router copies every request to the shadow and compares the two answers' predictions
/// (score within a tolerance, label equal).
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
            "traffic": {"router": {"replicas": 1}},
            // Long enough that the shadow is still there when the test has seen it work.
            "shadow": {"minDuration": "1h", "mirrorPercent": 100.0,
                       "compare": {"pointers": ["/predictions"], "tolerance": 0.05, "minAgreement": 0.5}},
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
    let r = wait_for(&format!("{NAME} run {run} to end"), RUN_TIMEOUT, || async {
        let status = pipelines.get(NAME).await?.data["status"].clone();
        let r = run_of(&status, run);
        Ok(matches!(
            r["phase"].as_str(),
            Some("WaitingApproval" | "Succeeded" | "Failed" | "Rejected")
        )
        .then(|| r.clone()))
    })
    .await;
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
    wait_for(
        &format!("{NAME} run {run} to be {phase}"),
        RUN_TIMEOUT,
        || async {
            let status = pipelines.get(NAME).await?.data["status"].clone();
            Ok((run_of(&status, run)["phase"] == phase).then_some(status))
        },
    )
    .await
}

async fn annotate(pipelines: &Api<DynamicObject>, key: &str, value: &str) {
    pipelines
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotating the pipeline {key}={value}: {e}"));
}

/// What a data pipeline does: writes the new data version into the ConfigMap.
async fn publish_data_version(configmaps: &Api<ConfigMap>, version: &str) {
    configmaps
        .patch(
            DATA_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {DATA_KEY: version}})),
        )
        .await
        .unwrap_or_else(|e| panic!("writing data version {version} into the ConfigMap: {e}"));
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

/// A model file model-server loads: what it answers for `row`, score and label.
fn score(model: &Value, row: &[f64; 30]) -> (f64, String) {
    let weights = model["weights"].as_array().expect("weights");
    let z: f64 = weights
        .iter()
        .zip(row)
        .map(|(w, x)| w.as_f64().expect("a weight") * x)
        .sum::<f64>()
        + model["bias"].as_f64().unwrap_or(0.0);
    let s = 1.0 / (1.0 + (-z).exp());
    let side = usize::from(s >= model["threshold"].as_f64().expect("a threshold"));
    (
        s,
        model["labels"][side].as_str().expect("labels").to_string(),
    )
}

fn read_model(artifacts: &Artifacts, uri: &str) -> Value {
    serde_json::from_slice(&std::fs::read(artifacts.file(uri)).expect("reading the model"))
        .expect("JSON")
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
    let data: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": DATA_CONFIGMAP}, "data": {DATA_KEY: "v1"},
    }))
    .expect("a ConfigMap");
    configmaps
        .create(&PostParams::default(), &data)
        .await
        .expect("creating the data version's ConfigMap");
    let md: DynamicObject = serde_json::from_value(follower()).expect("a ModelDeployment");
    model_deployments
        .create(&PostParams::default(), &md)
        .await
        .expect("creating the ModelDeployment");
    let pipeline: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelPipeline",
        "metadata": {"name": NAME}, "spec": pipeline_spec(),
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
    let production_model = read_model(&artifacts, uri);
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
    annotate(&pipelines, "modelship.io/approve-run", "r1").await;
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
    annotate(&pipelines, "modelship.io/run", "rerun-1").await;
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
    let shadow_model = read_model(
        &artifacts,
        r5["trainedArtifact"]["uri"].as_str().expect("an artifact"),
    );
    annotate(&pipelines, "modelship.io/approve-run", "r5").await;
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
    wait_for(
        "the router Deployment to mirror to the shadow",
        node::POD_TIMEOUT,
        || async {
            let d = deployments.get(&format!("{NAME}-router")).await?;
            let mirrors = d.spec.and_then(|s| s.template.spec).is_some_and(|s| {
                s.containers[0]
                    .args
                    .iter()
                    .flatten()
                    .any(|a| a.starts_with("--shadow="))
            });
            let rolled = d.status.is_some_and(|s| {
                s.updated_replicas == Some(1)
                    && s.ready_replicas == Some(1)
                    && s.replicas == Some(1)
            });
            Ok((mirrors && rolled).then_some(()))
        },
    )
    .await;
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
    let underfit = json!({"spec": {
        "source": {"revision": UNDERFIT_REVISION},
        "stages": {"train": stage("train", &["--c", "1e-6"], true)},
    }});
    pipelines
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&underfit))
        .await
        .expect("patching the source revision and train's arguments");

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
    let cluster_ip = services
        .get(NAME)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the Service has a ClusterIP");
    let service = format!("http://{cluster_ip}");
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
