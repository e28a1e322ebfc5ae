# Layout of the local Prometheus, shared by e2e/prometheus/up and down.
# shellcheck shell=bash

PROMETHEUS_PORT=${MODELSHIP_PROMETHEUS_PORT:-19090}
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
E2E_PROMETHEUS_DIR=$REPO_ROOT/e2e/prometheus
STATE=$REPO_ROOT/e2e/.prometheus
RUN=$STATE/run
LOGS=$STATE/logs
TARGETS=$STATE/targets
DOWN=$E2E_PROMETHEUS_DIR/down

healthy() {
  pid_of prometheus >/dev/null && curl -fsS --max-time 5 "$PROMETHEUS_URL/-/ready" >/dev/null 2>&1
}
