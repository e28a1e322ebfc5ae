# The local cluster's layout and process handling, shared by e2e/cluster/up and down.
# shellcheck shell=bash

ETCD_PORT=${MODELSHIP_ETCD_PORT:-12379}
ETCD_PEER_PORT=${MODELSHIP_ETCD_PEER_PORT:-12380}
APISERVER_PORT=${MODELSHIP_APISERVER_PORT:-16443}
CONTROLLER_MANAGER_PORT=${MODELSHIP_CONTROLLER_MANAGER_PORT:-16257}
SCHEDULER_PORT=${MODELSHIP_SCHEDULER_PORT:-16259}
KWOK_PORT=${MODELSHIP_KWOK_PORT:-16247}

APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
NODE_COUNT=3

STATE=$REPO_ROOT/e2e/.cluster
RUN=$STATE/run
LOGS=$STATE/logs
DOWN=$E2E_CLUSTER_DIR/down
KUBECONFIG_PATH=$STATE/kubeconfig
# In start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

kubectl() { "$KUBERNETES_BIN/kubectl" --kubeconfig="$KUBECONFIG_PATH" "$@"; }

nodes_ready() {
  local ready
  ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  ((ready >= NODE_COUNT))
}

# True when every component we started runs and the cluster answers with Ready nodes.
healthy() {
  [[ -f $KUBECONFIG_PATH ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  curl -fsS --max-time 5 --cacert "$STATE/pki/ca.crt" "$APISERVER_URL/readyz" >/dev/null 2>&1 || return 1
  nodes_ready 2>/dev/null
}

# e2e/.cluster/bin: the pinned clients, for tests, the demo and people.
link_clients() {
  mkdir -p "$STATE/bin"
  ln -sfn "$KUBERNETES_BIN/kubectl" "$STATE/bin/kubectl"
  ln -sfn "$HELM_BIN/helm" "$STATE/bin/helm"
}
