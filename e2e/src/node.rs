//! The real node that `e2e/cluster/node-up` registers beside the KWOK nodes: real pods of the
//! images `e2e/images/build` imported, reachable from this host at their pod IPs and through
//! their Services' ClusterIPs (kube-proxy).
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};
use serde_json::json;

use crate::{TestNamespace, test_namespace_with, wait_for};

/// The node's name (`NODE_NAME` in e2e/cluster/node.sh).
pub const NODE_NAME: &str = "modelship-node";
/// The node's taint and label (`NODE_TAINT_KEY`/`NODE_TAINT_VALUE` in e2e/cluster/node.sh).
const TAINT_KEY: &str = "modelship.io/node";
const TAINT_VALUE: &str = "real";

const NOT_UP: &str = "run `e2e/cluster/node-up` and `make images` as root (make test does)";

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

/// A test namespace whose pods all run on the real node under Pod Security's `restricted`
/// profile: the API server's PodNodeSelector and PodTolerationRestriction admission plugins
/// give every pod the node selector and the toleration from the namespace's annotations, so
/// the operator needs no code for it.
pub async fn namespace(client: &Client, prefix: &str) -> TestNamespace {
    let toleration = json!([{
        "key": TAINT_KEY, "operator": "Equal", "value": TAINT_VALUE, "effect": "NoSchedule",
    }]);
    test_namespace_with(
        client,
        prefix,
        json!({
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }),
        json!({
            "scheduler.alpha.kubernetes.io/node-selector": format!("{TAINT_KEY}={TAINT_VALUE}"),
            "scheduler.alpha.kubernetes.io/defaultTolerations": toleration.to_string(),
        }),
    )
    .await
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
