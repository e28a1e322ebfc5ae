//! The real node that `e2e/cluster/node-up` registers beside the KWOK nodes: real pods of the
//! images `e2e/images/build` imported, reachable from this host at their pod IPs and through
//! their Services' ClusterIPs (kube-proxy).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{
    TestNamespace, helm, http_client, output_of, repo_root, test_namespace_with, wait_for,
};

/// The node's name (`NODE_NAME` in e2e/cluster/node.sh).
pub const NODE_NAME: &str = "modelship-node";
/// The node's taint and label (`NODE_TAINT_KEY`/`NODE_TAINT_VALUE` in e2e/cluster/node.sh).
const TAINT_KEY: &str = "modelship.io/node";
const TAINT_VALUE: &str = "real";

/// Real pods on a loaded 2-core machine: image unpacked, sandbox and network set up, probes.
pub const POD_TIMEOUT: Duration = Duration::from_secs(180);

const NOT_UP: &str = "run `e2e/cluster/node-up` and `make images` as root (make test does)";

/// `http://<ClusterIP>` of the Service `name`: how a client on this host reaches it
/// (kube-proxy).
pub async fn service_url(services: &Api<Service>, name: &str) -> String {
    let cluster_ip = services
        .get(name)
        .await
        .unwrap_or_else(|error| panic!("reading Service {name}: {error}"))
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_else(|| panic!("Service {name} has no ClusterIP"));
    format!("http://{cluster_ip}")
}

/// Waits until the router Deployment of ModelDeployment `name` (one replica) mirrors to a
/// shadow and has rolled out that change.
pub async fn wait_router_mirroring(deployments: &Api<Deployment>, name: &str, timeout: Duration) {
    wait_for(
        "the router Deployment to mirror to the shadow",
        timeout,
        || async {
            let d = deployments.get(&format!("{name}-router")).await?;
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
}

/// Waits until the real node is Ready; panics, saying how to start it, when it is not.
pub async fn wait_ready(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(
        &format!("node {NODE_NAME} to be Ready ({NOT_UP})"),
        Duration::from_secs(60),
        || async {
            let ready = nodes.get_opt(NODE_NAME).await?.is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        },
    )
    .await;
}

/// The labels and annotations of a namespace whose pods all run on the real node under Pod
/// Security's `restricted` profile: the API server's PodNodeSelector and
/// PodTolerationRestriction admission plugins give every pod the node selector and the
/// toleration from the namespace's annotations, so the operator needs no code for it.
pub fn namespace_metadata() -> (Value, Value) {
    let toleration = json!([{
        "key": TAINT_KEY, "operator": "Equal", "value": TAINT_VALUE, "effect": "NoSchedule",
    }]);
    (
        json!({
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }),
        json!({
            "scheduler.alpha.kubernetes.io/node-selector": format!("{TAINT_KEY}={TAINT_VALUE}"),
            "scheduler.alpha.kubernetes.io/defaultTolerations": toleration.to_string(),
        }),
    )
}

/// The chart's `--set` values that put the operator's pod on the real node.
pub fn chart_placement() -> Vec<String> {
    vec![
        format!(
            "nodeSelector.{}={TAINT_VALUE}",
            TAINT_KEY.replace('.', "\\.")
        ),
        format!("tolerations[0].key={TAINT_KEY}"),
        "tolerations[0].operator=Equal".into(),
        format!("tolerations[0].value={TAINT_VALUE}"),
        "tolerations[0].effect=NoSchedule".into(),
    ]
}

/// A test namespace whose pods all run on the real node (see [`namespace_metadata`]).
pub async fn namespace(client: &Client, prefix: &str) -> TestNamespace {
    let (labels, annotations) = namespace_metadata();
    test_namespace_with(client, prefix, labels, annotations).await
}

/// Whether a pod runs on the real node with every container ready.
pub fn running_ready(pod: &Pod) -> bool {
    let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE_NAME);
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready));
    on_node && running && ready && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IP.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// Restarts of the pod's containers.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Waits until `count` pods matching `selector` run ready on the real node (no others
/// terminating), and returns them.
pub async fn wait_pods(
    pods: &Api<Pod>,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Pod> {
    let lp = kube::api::ListParams::default().labels(selector);
    wait_for(
        &format!("{count} pod(s) {selector} running ready on {NODE_NAME}"),
        timeout,
        || async {
            let list = pods.list(&lp).await?.items;
            Ok((list.len() == count && list.iter().all(running_ready)).then_some(list))
        },
    )
    .await
}

/// The local Prometheus as pods reach it: at the node's address on this host
/// (`MODELSHIP_NODE_IP`, default 10.250.0.1), where e2e/prometheus/up listens too.
pub fn prometheus_url_for_pods() -> String {
    let ip = std::env::var("MODELSHIP_NODE_IP").unwrap_or_else(|_| "10.250.0.1".into());
    let port = std::env::var("MODELSHIP_PROMETHEUS_PORT").unwrap_or_else(|_| "19090".into());
    format!("http://{ip}:{port}")
}

/// What Pod Security's `restricted` profile asks of a pod: the pod's and each container's
/// securityContext.
pub fn restricted_pod_security() -> (Value, Value) {
    (
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}),
    )
}

/// The label selector of the operator pods of the chart release [`install_operator`] makes.
pub fn operator_selector(ns: &str) -> String {
    format!("app.kubernetes.io/instance={ns}")
}

/// Installs charts/modelship as a user does (`helm upgrade --install`, its default image,
/// which `make images` built), as release `<ns>` in namespace `ns`, watching that namespace,
/// with the extra `--set` values; waits until its operator pod is ready and returns it.
/// Ready means /readyz answered: the pod leads with full caches, so in-cluster
/// configuration, the ServiceAccount's RBAC and the leader Lease all work.
pub async fn install_operator(pods: &Api<Pod>, ns: &str, sets: &[&str]) -> Pod {
    let mut install = helm();
    install
        .args(["upgrade", "--install", ns])
        .arg(repo_root().join("charts/modelship"))
        .args(["--namespace", ns, "--skip-crds"])
        .args(["--set", &format!("watchNamespace={ns}")])
        .args([
            "--set",
            "log.format=text",
            "--set",
            "log.level=info\\,modelship=debug",
        ]);
    for set in sets {
        install.args(["--set", set]);
    }
    output_of(install).await;
    let mut ready = wait_pods(pods, &operator_selector(ns), 1, POD_TIMEOUT).await;
    ready.remove(0)
}

/// `helm uninstall --wait` of the release [`install_operator`] made.
pub async fn uninstall_operator(ns: &str) {
    let mut uninstall = helm();
    uninstall.args(["uninstall", ns, "--namespace", ns, "--wait"]);
    output_of(uninstall).await;
}

/// POSTs one prediction request to `base` (`http://host:port`) and returns the answer's
/// `model_version`.
pub async fn predict(base: &str) -> anyhow::Result<String> {
    predict_with(&http_client(), base).await
}

/// [`predict`] with a client that keeps its connections.
pub async fn predict_with(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    version_of(client, base, &json!([[1.0, 2.0, 3.0]])).await
}

/// The `model_version` of the answer to a prediction of `instances`.
async fn version_of(
    client: &reqwest::Client,
    base: &str,
    instances: &Value,
) -> anyhow::Result<String> {
    let answer = predict_instances(client, base, instances).await?;
    answer["model_version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no model_version in {answer}"))
}

/// `POST {base}/predict` of `instances` (feature vectors): the whole JSON answer.
pub async fn predict_instances(
    client: &reqwest::Client,
    base: &str,
    instances: &Value,
) -> anyhow::Result<Value> {
    Ok(client
        .post(format!("{base}/predict"))
        .timeout(Duration::from_secs(5))
        .json(&json!({ "instances": instances }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The text of `base`'s `/metrics`, or nothing when it does not answer.
pub async fn metrics(base: &str) -> String {
    match http_client()
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clients sending predictions to the Service all along, and what answered them.
pub struct Traffic {
    answers: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// About 40 requests a second to `base` (`http://host:port`), one after another.
    pub fn start(base: String) -> Traffic {
        Traffic::with_instances(base, vec![json!([[1.0, 2.0, 3.0]])])
    }

    /// [`Traffic::start`] whose requests predict `batches` (each a JSON array of feature
    /// vectors), one after another in turn: a model's real inputs.
    pub fn with_instances(base: String, batches: Vec<Value>) -> Traffic {
        assert!(!batches.is_empty(), "no instances to send");
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = answers.clone();
        let task = tokio::spawn(async move {
            // One client, whose connections stay open, as a service's client keeps them.
            let client = http_client();
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            // After a slow answer, go on at the same pace rather than in a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for batch in batches.iter().cycle() {
                tick.tick().await;
                let who = version_of(&client, &base, batch)
                    .await
                    .unwrap_or_else(|_| "failed".into());
                *counts.lock().unwrap().entry(who).or_insert(0) += 1;
            }
        });
        Traffic { answers, task }
    }

    /// How many answers each version gave (`failed`: no answer).
    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.answers.lock().unwrap().clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
