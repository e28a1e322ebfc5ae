//! The example ML project (examples/churn-model, image `churn-model:e2e`) as a ModelPipeline
//! whose stages run as real pods on the real node, and the ModelDeployment that follows it:
//! what `tests/real_node_pipeline.rs` and the demo (`src/bin/demo.rs`) both run.
//!
//! - [`pipeline_spec`]: the five stages (`python3 -m churn_model.<stage>`), the data version
//!   read from the ConfigMap [`DATA_CONFIGMAP`], the gates, manual approval;
//! - [`follower`]: the ModelDeployment that serves the pipeline's approved candidates with
//!   model-server, from the artifacts' volume;
//! - [`Artifacts`]: a hostPath PersistentVolume on the real node that every stage pod and the
//!   model server mount at [`MOUNT`];
//! - [`ROWS`]: feature rows of the table the project trains on, what clients send.
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::node::{self, restricted_pod_security};
use crate::wait_for;

/// The project's image, which `e2e/images/build churn-model` imports into the real node.
pub const IMAGE: &str = "churn-model:e2e";
/// Where the artifacts' volume is mounted in every pod, and the artifacts' base URI below it.
pub const MOUNT: &str = "/artifacts";
pub const ARTIFACT_BASE: &str = "file:///artifacts/churn";
/// The ConfigMap and key the pipeline reads its data version from; a data pipeline would
/// update it.
pub const DATA_CONFIGMAP: &str = "churn-data";
pub const DATA_KEY: &str = "version";

/// Rows of the Wisconsin breast-cancer table the project trains on (30 features each):
/// what clients send the served model.
pub const ROWS: [[f64; 30]; 8] = [
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

/// The API resource of a modelship kind, for [`DynamicObject`]s.
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("modelship.io", "v1alpha1", kind),
        plural,
    )
}

/// The ModelPipelines of namespace `ns`, as JSON.
pub fn pipelines(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("ModelPipeline", "modelpipelines"),
    )
}

/// The ModelDeployments of namespace `ns`, as JSON.
pub fn model_deployments(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &resource("ModelDeployment", "modeldeployments"),
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

/// A stage running `python3 -m churn_model.<module> ARGS...` in the project's image; only
/// train writes to the artifacts' volume.
pub fn stage(module: &str, args: &[&str], writes_artifacts: bool) -> Value {
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

/// The spec of ModelPipeline `name` (its model is named the same) at source revision
/// `revision`: checks, validate, train, evaluate and integration, gates on the evaluation's
/// f1, auc and log loss and on the integration's contract and latency, manual approval, seed 42.
pub fn pipeline_spec(name: &str, revision: &str) -> Value {
    let mut integration = stage("integration", &["--requests", "100"], false);
    integration["readyTimeoutSeconds"] = json!(180);
    json!({
        "model": {"name": name, "initialVersion": "1.0.0", "artifactBase": ARTIFACT_BASE},
        "source": {"repository": "https://git.example/churn-model.git",
                   "revision": revision},
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

/// ModelDeployment `name`, which follows ModelPipeline `name`: its serving template is the one
/// the integration stage serves the candidate with, the artifacts' volume mounted read-only,
/// its port named `metrics` for Prometheus. Its router copies every request to the shadow and
/// compares the two answers' predictions (score within a tolerance, label equal). The shadow
/// lasts an hour unless the caller sets `spec.shadow` otherwise.
pub fn follower(name: &str) -> Value {
    let (pod_sc, container_sc) = restricted_pod_security();
    json!({
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "modelFrom": {"pipeline": name},
            "template": {"spec": {
                "securityContext": pod_sc,
                "automountServiceAccountToken": false,
                "volumes": volumes(),
                "containers": [{
                    "name": "server", "image": "model-server:e2e", "imagePullPolicy": "IfNotPresent",
                    "ports": [{"name": "metrics", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                    "securityContext": container_sc,
                    "volumeMounts": mounts(true),
                }],
            }},
            "traffic": {"router": {"replicas": 1}},
            "shadow": {"minDuration": "1h", "mirrorPercent": 100.0,
                       "compare": {"pointers": ["/predictions"], "tolerance": 0.05, "minAgreement": 0.5}},
        },
    })
}

/// Creates the ConfigMap [`DATA_CONFIGMAP`] with data version `version`.
pub async fn create_data_version(configmaps: &Api<ConfigMap>, version: &str) {
    let data: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": DATA_CONFIGMAP}, "data": {DATA_KEY: version},
    }))
    .expect("a ConfigMap");
    configmaps
        .create(&PostParams::default(), &data)
        .await
        .expect("creating the data version's ConfigMap");
}

/// What a data pipeline does: writes the new data version into the ConfigMap.
pub async fn publish_data_version(configmaps: &Api<ConfigMap>, version: &str) {
    configmaps
        .patch(
            DATA_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {DATA_KEY: version}})),
        )
        .await
        .unwrap_or_else(|e| panic!("writing data version {version} into the ConfigMap: {e}"));
}

/// Sets annotation `key` to `value` on ModelPipeline `name` (`modelship.io/approve-run`,
/// `modelship.io/run`).
pub async fn annotate(pipelines: &Api<DynamicObject>, name: &str, key: &str, value: &str) {
    pipelines
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotating pipeline {name} {key}={value}: {e}"));
}

/// Commits `revision` to ModelPipeline `name`, whose train stage takes `train_args`: what a
/// CI system does when a commit changes the training code.
pub async fn commit(
    pipelines: &Api<DynamicObject>,
    name: &str,
    revision: &str,
    train_args: &[&str],
) {
    let patch = json!({"spec": {
        "source": {"revision": revision},
        "stages": {"train": stage("train", train_args, true)},
    }});
    pipelines
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("committing {revision} to pipeline {name}: {e}"));
}

/// Run `run` (`r1`, `r2`, ...) in a ModelPipeline's status, or null.
pub fn run_of<'a>(status: &'a Value, run: &str) -> &'a Value {
    status["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["name"] == run))
        .unwrap_or(&Value::Null)
}

/// Stage `stage` of a run, or null.
pub fn stage_of<'a>(run: &'a Value, stage: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == stage))
        .unwrap_or(&Value::Null)
}

/// Waits until run `run` of ModelPipeline `name` has ended or waits for approval, and
/// returns it.
pub async fn wait_run_done(
    pipelines: &Api<DynamicObject>,
    name: &str,
    run: &str,
    timeout: Duration,
) -> Value {
    wait_for(&format!("{name} run {run} to end"), timeout, || async {
        let status = pipelines.get(name).await?.data["status"].clone();
        let r = run_of(&status, run);
        Ok(matches!(
            r["phase"].as_str(),
            Some("WaitingApproval" | "Succeeded" | "Failed" | "Rejected")
        )
        .then(|| r.clone()))
    })
    .await
}

/// Waits until run `run` of ModelPipeline `name` is in `phase`, and returns the pipeline's
/// status.
pub async fn wait_run_phase(
    pipelines: &Api<DynamicObject>,
    name: &str,
    run: &str,
    phase: &str,
    timeout: Duration,
) -> Value {
    wait_for(
        &format!("{name} run {run} to be {phase}"),
        timeout,
        || async {
            let status = pipelines.get(name).await?.data["status"].clone();
            Ok((run_of(&status, run)["phase"] == phase).then_some(status))
        },
    )
    .await
}

/// A model file model-server loads: what it answers for `row`, score and label.
pub fn score(model: &Value, row: &[f64; 30]) -> (f64, String) {
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

/// A hostPath PersistentVolume on the real node (this machine), bound to the claim
/// `artifacts` of namespace `ns`, and the directory behind it, writable by the stages' user.
/// Both go at [`Artifacts::delete`], or when dropped (a failed test) unless [`Artifacts::keep`]
/// kept them.
pub struct Artifacts {
    dir: PathBuf,
    pv: String,
    pvs: Api<PersistentVolume>,
    deleted: bool,
}

impl Artifacts {
    /// Makes the directory, the volume and the claim, and waits until the claim is bound. A
    /// volume of the same name that an earlier run kept (its namespace gone) goes first, with
    /// its directory.
    pub async fn create(client: &Client, ns: &str) -> Artifacts {
        let dir = std::env::temp_dir().join(format!("modelship-e2e-{ns}-artifacts"));
        let pv = format!("{ns}-artifacts");
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        if pvs
            .get_opt(&pv)
            .await
            .unwrap_or_else(|e| panic!("reading PersistentVolume {pv}: {e}"))
            .is_some()
        {
            let _ = pvs.delete(&pv, &DeleteParams::default()).await;
            wait_for(
                &format!("the earlier PersistentVolume {pv} to go"),
                Duration::from_secs(60),
                || async { Ok(pvs.get_opt(&pv).await?.is_none().then_some(())) },
            )
            .await;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("removing the earlier artifacts' directory");
        }
        std::fs::create_dir_all(&dir).expect("creating the artifacts' directory");
        chown(&dir, Some(65532), Some(65532)).expect("giving the directory to user 65532");
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
    pub fn file(&self, uri: &str) -> PathBuf {
        let rest = uri
            .strip_prefix(&format!("file://{MOUNT}/"))
            .unwrap_or_else(|| panic!("{uri} is not below {MOUNT}"));
        self.dir.join(rest)
    }

    /// The model file at artifact URI `uri`, as JSON.
    pub fn read_model(&self, uri: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.file(uri)).expect("reading the model"))
            .expect("JSON")
    }

    /// Deletes the volume and the directory.
    pub async fn delete(mut self) {
        self.deleted = true;
        self.pvs
            .delete(&self.pv, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting PersistentVolume {}: {e}", self.pv));
        std::fs::remove_dir_all(&self.dir).expect("removing the artifacts' directory");
    }

    /// Leaves the volume and the directory in place (the demo's cluster keeps running);
    /// the next [`Artifacts::create`] for the same namespace removes them.
    pub fn keep(mut self) {
        self.deleted = true;
    }
}

impl Drop for Artifacts {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // A failed test: no runtime here, so the pinned kubectl, without waiting.
        crate::cluster::delete_without_waiting("persistentvolume", &self.pv);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
