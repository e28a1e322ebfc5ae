# Shared by the scripts in e2e/cluster and e2e/prometheus: paths, versions, helpers.
# shellcheck shell=bash

E2E_CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_CLUSTER_DIR/../.." && pwd)
# shellcheck source=versions.env
source "$E2E_CLUSTER_DIR/versions.env"

CACHE_ROOT=${MODELSHIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelship}
CACHE_BIN=$CACHE_ROOT/bin

KUBERNETES_BIN=$CACHE_BIN/kubernetes-$KUBERNETES_VERSION
ETCD_BIN=$CACHE_BIN/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE_BIN/kwok-$KWOK_VERSION
HELM_BIN=$CACHE_BIN/helm-$HELM_VERSION
KUBE_NODE_BIN=$CACHE_BIN/kubernetes-node-$KUBERNETES_VERSION
CRICTL_BIN=$CACHE_BIN/crictl-$CRICTL_VERSION
COREDNS_BIN=$CACHE_BIN/coredns-$COREDNS_VERSION
PROMETHEUS_BIN=$CACHE_BIN/prometheus-$PROMETHEUS_VERSION

# Go builds: static binaries, this machine's toolchain only, module versions from go.sum.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false -mod=readonly"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Local processes. A script that uses these sets RUN (PID files), LOGS (logs) and
# DOWN (the script that stops what was started, run when a start fails).

# start NAME BINARY ARGS...: runs BINARY in its own session, logging to logs/NAME.log,
# and records its PID and executable so that down stops exactly this process.
start() {
  local name=$1 bin=$2; shift 2
  : >"$LOGS/$name.log"
  setsid "$bin" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + 5))
  echo "$pid" >"$RUN/$name.pid"
  echo "$bin" >"$RUN/$name.exe"
  # setsid execs the binary in place; wait for that so that pid_of sees it.
  until [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$bin" ]]; do
    kill -0 "$pid" 2>/dev/null || fail "$name" "$name exited at once"
    ((SECONDS < deadline)) || fail "$name" "$name did not start"
    sleep 0.05
  done
}

# pid_of NAME: the PID of component NAME if it is our process and running.
pid_of() {
  local run=$RUN pid
  [[ -f $run/$1.pid && -f $run/$1.exe ]] || return 1
  pid=$(<"$run/$1.pid")
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(<"$run/$1.exe")" ]] || return 1
  echo "$pid"
}

# fail COMPONENT MESSAGE: prints the tail of the component's log, stops what was started, exits 1.
fail() {
  local component=$1 log=$LOGS/$1.log
  log "error: $2"
  if [[ -f $log ]]; then
    log "last lines of $log:"
    tail -n 40 "$log" >&2
  fi
  "$DOWN" >&2 || true
  exit 1
}

# wait_until WHAT TIMEOUT COMMAND...: polls COMMAND every 200 ms until it succeeds.
# WHAT starts with the component whose log is shown when it does not (or that component dies).
wait_until() {
  local what=$1 timeout=$2 component=${1%% *}; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    pid_of "$component" >/dev/null || fail "$component" "$component exited while waiting for $what"
    ((SECONDS < deadline)) || fail "$component" "$what not ready after ${timeout} s"
    sleep 0.2
  done
}

# True when something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PID: a process that has exited (even if not yet reaped) has no executable.
alive() { readlink "/proc/$1/exe" >/dev/null 2>&1; }

# stop NAME: stops component NAME (SIGTERM, then SIGKILL after 10 s) if it is our running process.
stop() {
  local name=$1 pid
  pid=$(pid_of "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 10))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop after SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "stopped $name (pid $pid)"
}
