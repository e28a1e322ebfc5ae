#!/usr/bin/env bash
# bench/scale: the operator at scale on the local control plane with KWOK nodes.
#
# Creates N ModelDeployments and N/5 ModelPipelines in a few namespaces (with the fake nodes
# their pods need) while the operator (a local release build, authenticated as the chart's
# ServiceAccount, leader election off) runs, and measures:
#   - the time until every object is Ready (pods scheduled and made Ready by KWOK included),
#     and where each object's time goes (operator / control plane / operator);
#   - the reconcile duration p50 and p99, interpolated from the operator's histogram buckets;
#   - the operator's peak RSS (VmRSS sampled every 0.5 s, and VmHWM) and its RSS once settled;
#   - API writes during an idle minute once all are Ready and the operator settled, counted
#     by the API server (apiserver_request_total, write verbs, on the resources modelship
#     writes), next to the operator's own counters;
#   - the same after the operator is restarted over the N existing objects.
# It then prints a summary table (also in $OUT/report.json) and deletes what it created (the
# namespaces, their objects and the fake nodes) and stops the operator, also on failure.
# The cluster is left running (`make cluster-down` stops it).
#
#   bench/scale/run.sh [N]          N ModelDeployments (default 1000, or $N)
#
# Environment:
#   N=1000                 ModelDeployments; PIPELINES (default N/5) ModelPipelines
#   NAMESPACES             namespaces the objects are spread over (default N/50, 1 to 10)
#   PODS_PER_NODE=500      pods per fake node; nodes = ceil(pods / PODS_PER_NODE)
#   RESYNC=30s             the operator's --resync: every object is reconciled (at least)
#                          once during the idle minute, so the minute tests that a resync of
#                          a converged object writes nothing
#   IDLE_SECONDS=60        the idle window (and the window after the restart)
#   READY_TIMEOUT=3600     seconds to wait for everything to be Ready
#   SETTLE_TIMEOUT=300     seconds to wait for the operator to stop writing (30 s without a
#                          write) before the idle minute; measured anyway after it
#   PARALLEL=8             concurrent `kubectl apply` of the object batches (250 objects each)
#   ADMIN_PORT=18080       the operator's /metrics, /livez, /readyz (127.0.0.1)
#   MODELSHIP_LOG=info     the operator's log filter (its log is JSON, in $OUT/operator-*.log)
#   MODELSHIP_SCALE_BIN    the operator binary to measure (default: cargo build --release
#                          --bin modelship, in $CARGO_TARGET_DIR or target/)
#   MODELSHIP_SCALE_KUBECONFIG   the admin kubeconfig of a running cluster to use; without it
#                          e2e/cluster/up starts (or reuses) the local cluster of this checkout,
#                          honouring its port variables (MODELSHIP_ETCD_PORT,
#                          MODELSHIP_ETCD_PEER_PORT, MODELSHIP_APISERVER_PORT,
#                          MODELSHIP_CONTROLLER_MANAGER_PORT, MODELSHIP_SCHEDULER_PORT,
#                          MODELSHIP_KWOK_PORT; see e2e/cluster/up)
#   OUT                    where the run's files go (default bench/scale/.out/n<N>-<time>)
#   KEEP=1                 leave the objects and nodes in place (debugging)
#
# Needs python3 (standard library only), curl, and the cluster tooling (e2e/cluster/build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# Paths of the pinned kubectl and helm, log and die.
source "$ROOT/e2e/cluster/lib.sh"
PY=(python3 "$HERE/scale.py")

N=${1:-${N:-1000}}
PIPELINES=${PIPELINES:-$((N / 5))}
if [[ -z ${NAMESPACES:-} ]]; then
  NAMESPACES=$((N / 50)); ((NAMESPACES >= 1)) || NAMESPACES=1; ((NAMESPACES <= 10)) || NAMESPACES=10
fi
PODS_PER_NODE=${PODS_PER_NODE:-500}
RESYNC=${RESYNC:-30s}
IDLE_SECONDS=${IDLE_SECONDS:-60}
READY_TIMEOUT=${READY_TIMEOUT:-3600}
PARALLEL=${PARALLEL:-8}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-300}
ADMIN_PORT=${ADMIN_PORT:-18080}
ADMIN=http://127.0.0.1:$ADMIN_PORT
# kube-controller-manager's /metrics (its client rate limiter), as e2e/cluster/up starts it.
KCM_PORT=${MODELSHIP_CONTROLLER_MANAGER_PORT:-16257}
PREFIX=scale-
RELEASE_NAMESPACE=modelship-system
OUT=${OUT:-$HERE/.out/n$N-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

# ---------------------------------------------------------------------------------------------
# The cluster, the operator binary, kubectl.

if [[ -n ${MODELSHIP_SCALE_KUBECONFIG:-} ]]; then
  ADMIN_KUBECONFIG=$MODELSHIP_SCALE_KUBECONFIG
else
  # Kubernetes' default client rate limits would decide the time to Ready (see
  # docs/benchmarks.md, "Scale"): a cluster this starts gets 200 requests/s, burst 400.
  export MODELSHIP_KCM_API_QPS=${MODELSHIP_KCM_API_QPS:-200} MODELSHIP_KCM_API_BURST=${MODELSHIP_KCM_API_BURST:-400}
  export MODELSHIP_SCHEDULER_API_QPS=${MODELSHIP_SCHEDULER_API_QPS:-200} MODELSHIP_SCHEDULER_API_BURST=${MODELSHIP_SCHEDULER_API_BURST:-400}
  ADMIN_KUBECONFIG=$("$ROOT/e2e/cluster/up")
fi
k() { "$KUBERNETES_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" "$@"; }
helm() { KUBECONFIG=$ADMIN_KUBECONFIG "$HELM_BIN/helm" "$@"; }

if [[ -n ${MODELSHIP_SCALE_BIN:-} ]]; then
  BIN=$MODELSHIP_SCALE_BIN
else
  log "building the operator (release)"
  (cd "$ROOT" && cargo build --release -q --bin modelship)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/modelship
fi
[[ -x $BIN ]] || die "no operator binary at $BIN"

# ---------------------------------------------------------------------------------------------
# What runs, and the cleanup (also on failure).

OPERATOR_PID="" RSS_PID="" WATCH_PID=""
CREATED=0

stop_pid() {  # stop_pid PID: SIGTERM, then SIGKILL after 15 s; only a process we started
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$WATCH_PID"
  stop_pid "$OPERATOR_PID"
  stop_pid "$RSS_PID"
  if ((CREATED)) && [[ ${KEEP:-0} != 1 ]]; then
    log "deleting the namespaces ${PREFIX}* and their objects"
    k delete -f "$OUT/manifests/namespaces.json" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 900))
    while ((SECONDS < deadline)) && [[ -n $(k get namespaces -l modelship.io/bench=scale -o name 2>/dev/null) ]]; do sleep 5; done
    [[ -z $(k get namespaces -l modelship.io/bench=scale -o name 2>/dev/null) ]] || log "warning: namespaces still terminating after 15 min"
    log "deleting the fake nodes"
    k delete nodes -l modelship.io/bench=scale --ignore-not-found >/dev/null 2>&1 || true
  fi
  ((rc == 0)) || log "failed (exit $rc); files in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mark() { echo "$1 $2" >>"$OUT/times.txt"; }
now() { date +%s.%N; }

# start_operator I: `modelship run` under the chart's ServiceAccount, its RSS sampled.
start_operator() {
  local i=$1
  MODELSHIP_LOG_FORMAT=json MODELSHIP_LOG=${MODELSHIP_LOG:-info} KUBECONFIG=$SA_KUBECONFIG \
    "$BIN" run --leader-elect=false --prometheus-url http://127.0.0.1:9 \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --resync "$RESYNC" --router-image modelship:bench \
    >"$OUT/operator-$i.log" 2>&1 &
  OPERATOR_PID=$!
  "${PY[@]}" rss --pid "$OPERATOR_PID" --out "$OUT/rss-$i.txt" &
  RSS_PID=$!
  local deadline=$((SECONDS + 120))
  until curl -fsS "$ADMIN/readyz" >/dev/null 2>&1; do
    kill -0 "$OPERATOR_PID" 2>/dev/null || { tail -20 "$OUT/operator-$i.log" >&2; die "the operator exited"; }
    ((SECONDS < deadline)) || die "the operator is not ready after 120 s"
    sleep 0.2
  done
}

stop_operator() {
  stop_pid "$OPERATOR_PID"
  OPERATOR_PID=""
  stop_pid "$RSS_PID"  # writes VmHWM as last read
  RSS_PID=""
}

snapshot() { "${PY[@]}" snapshot --kubeconfig "$OUT/admin-kubeconfig.json" --operator "$ADMIN" --kcm "$KCM_PORT" --out "$OUT/snap-$1.json"; }
# Every object's resourceVersion and conditions, to tell which were rewritten in a window.
conditions() { "${PY[@]}" conditions --kubeconfig "$OUT/admin-kubeconfig.json" --prefix "$PREFIX" --out "$OUT/conditions-$1.json"; }

# ---------------------------------------------------------------------------------------------

main() {
  log "N=$N ModelDeployments, $PIPELINES ModelPipelines, $NAMESPACES namespaces; files in $OUT"
  k config view --raw --flatten -o json >"$OUT/admin-kubeconfig.json"
  chmod 600 "$OUT/admin-kubeconfig.json"
  [[ -z $(k get namespaces -l modelship.io/bench=scale -o name) ]] \
    || die "namespaces of an earlier run are still there (kubectl delete ns -l modelship.io/bench=scale)"

  # The CRDs and the chart (its ServiceAccount and ClusterRole; no in-cluster replica), as the
  # end-to-end tests install them; the operator authenticates with a token of that account.
  k apply --server-side --force-conflicts -f "$ROOT/crds" >/dev/null
  k wait --for=condition=Established --timeout=60s crd/modeldeployments.modelship.io crd/modelpipelines.modelship.io >/dev/null
  helm upgrade --install modelship "$ROOT/charts/modelship" --namespace "$RELEASE_NAMESPACE" \
    --create-namespace --skip-crds --set replicaCount=0 >/dev/null
  local token
  token=$(k -n "$RELEASE_NAMESPACE" create token modelship --duration=6h)
  SA_KUBECONFIG=$OUT/operator-kubeconfig.json
  python3 - "$OUT/admin-kubeconfig.json" "$token" >"$SA_KUBECONFIG" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cluster = cfg["clusters"][0]
user = "system:serviceaccount:modelship-system:modelship"
print(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
    "users": [{"name": user, "user": {"token": sys.argv[2]}}],
    "contexts": [{"name": "scale", "context": {"cluster": cluster["name"], "user": user}}],
    "current-context": "scale"}))
EOF
  chmod 600 "$SA_KUBECONFIG"

  # The objects, the fake nodes and the namespaces.
  "${PY[@]}" manifests --n "$N" --pipelines "$PIPELINES" --namespaces "$NAMESPACES" --prefix "$PREFIX" \
    --pods-per-node "$PODS_PER_NODE" --out "$OUT/manifests" >"$OUT/meta-manifests.json"
  CREATED=1
  k apply -f "$OUT/manifests/nodes.json" >/dev/null
  k wait --for=condition=Ready --timeout=120s node -l modelship.io/bench=scale >/dev/null
  k apply -f "$OUT/manifests/namespaces.json" >/dev/null
  local nodes
  nodes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"])' "$OUT/meta-manifests.json")
  printf '{"n": %d, "pipelines": %d, "namespaces": %d, "nodes": %d, "pods_per_node": %d, "resync": "%s", "idle_seconds": %d, "binary": "%s", "commit": "%s", "cpus": %d, "load_before": "%s"}\n' \
    "$N" "$PIPELINES" "$NAMESPACES" "$nodes" "$PODS_PER_NODE" "$RESYNC" "$IDLE_SECONDS" "$BIN" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/meta.json"

  # The operator, then the watch, then the objects.
  log "starting the operator ($BIN)"
  start_operator 1
  "${PY[@]}" watch --kubeconfig "$OUT/admin-kubeconfig.json" --prefix "$PREFIX" --n "$N" --pipelines "$PIPELINES" \
    --timeout "$READY_TIMEOUT" --started "$OUT/watch.started" --out "$OUT/watch.json" &
  WATCH_PID=$!
  until [[ -f $OUT/watch.started ]]; do kill -0 "$WATCH_PID" || die "the watch exited"; sleep 0.1; done
  sleep 1  # the watches' first lists
  snapshot start
  log "creating $N ModelDeployments and $PIPELINES ModelPipelines"
  mark create_start "$(now)"
  find "$OUT/manifests" -name 'objects-*.json' -print0 | sort -z \
    | xargs -0 -P "$PARALLEL" -n 1 "$KUBERNETES_BIN/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" apply --server-side --field-manager=scale-bench -f >/dev/null
  mark create_end "$(now)"
  log "created; waiting until every object is Ready"
  local rc=0
  wait "$WATCH_PID" || rc=$?
  WATCH_PID=""
  mark ready "$(now)"
  snapshot ready
  ((rc == 0)) || log "warning: not everything became Ready (see the report); measuring the rest anyway"

  # Settle, then one idle minute.
  log "waiting for the operator to settle (no write for 30 s)"
  "${PY[@]}" settle --kubeconfig "$OUT/admin-kubeconfig.json" --operator "$ADMIN" --timeout "$SETTLE_TIMEOUT" --out "$OUT/settle.json"
  log "the idle minute ($IDLE_SECONDS s)"
  conditions idle0
  mark idle_start "$(now)"
  snapshot idle0
  sleep "$IDLE_SECONDS"
  snapshot idle1
  conditions idle1

  # Restart over the existing objects: writes until every object was reconciled, plus a minute.
  log "restarting the operator"
  stop_operator
  conditions restart0
  snapshot restart0
  local t
  t=$(now)
  start_operator 2
  mark restart_ready_seconds "$(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$t")"
  "${PY[@]}" wait-reconciled --operator "$ADMIN" --count $((N + PIPELINES)) >/dev/null
  mark restart_reconciled_seconds "$(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$t")"
  sleep "$IDLE_SECONDS"
  snapshot restart1
  stop_operator
  conditions restart1

  "${PY[@]}" log-summary --out "$OUT/log-summary.json" "$OUT"/operator-*.log
  python3 - "$OUT/times.txt" >"$OUT/times.json" <<'EOF'
import json, sys
print(json.dumps({k: float(v) for k, v in (l.split() for l in open(sys.argv[1]) if l.strip())}))
EOF
  "${PY[@]}" report "$OUT" | tee "$OUT/summary.txt"
}

main
