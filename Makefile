# modelship: build and test.
#
#   make demo          start the local cluster, its real node (as root) and Prometheus (or reuse
#                      running ones), build the images, install the chart (the operator runs as
#                      a pod on the real node), and walk a model whose servers and router are
#                      real pods through shadowing, promotion and an automatic rollback; then
#                      run the example ML project (examples/churn-model) as a ModelPipeline of
#                      real pods: commits and data versions become gated candidates, shadowed
#                      and promoted, or rejected at their gates or at data validation
#   make test          start the local cluster, its real node (as root) and Prometheus (or
#                      reuse running ones), build the images the real node runs, build the
#                      workspace binaries, check formatting and clippy, run every test (unit
#                      and end-to-end), then check the chart's RBAC against the operator's
#                      calls in the API server's audit log (e2e/src/bin/rbac-audit.rs)
#   make install-plugin install the kubectl plugin (kubectl modelship) into $(PREFIX)/bin
#   make test-alerts   unit-test the chart's alerts with promtool (e2e/alerts/test); part of make test
#   make test-examples the example ML project's lint and unit tests (examples/churn-model), as its
#                      pipeline's checks stage runs them; part of make test
#   make crds          regenerate crds/ (and the chart's copy) from the Rust types
#   make manifests     regenerate config/manifests/modelship.yaml from the chart
#   make bench-analysis the analysis judge's benchmark (docs/analysis.md); BENCH_ARGS=--help
#   make build-cluster build the pinned control plane, kubectl and helm (cached)
#   make images        build the modelship, model-server, pause and churn-model images (docker-archive
#                      tarballs in e2e/.images/) and import them into the real node's containerd
#   make cluster-up / cluster-down / node-up / node-down / prometheus-up / prometheus-down
#
# See e2e/README.md.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: demo test test-alerts test-examples build lint crds manifests provider-crds bench-analysis build-cluster images cluster-up cluster-down node-up node-down prometheus-up prometheus-down

demo: cluster-up node-up images prometheus-up build
	$(CARGO) run -q -p modelship-e2e --bin demo

test: cluster-up node-up images prometheus-up provider-crds build lint test-alerts test-examples
	since=$$(date -u +%Y-%m-%dT%H:%M:%SZ); \
	$(CARGO) test --workspace --no-fail-fast -- --show-output; \
	$(CARGO) run -q -p modelship-e2e --bin rbac-audit -- --since "$$since"

# The chart's PrometheusRule, rendered, under `promtool test rules` (e2e/alerts/rules.test.yaml).
test-alerts:
	e2e/alerts/test

# Debian's Python, where apt installs python3-sklearn and the rest (.ci/run does), not
# whichever python3 comes first on PATH.
PYTHON ?= /usr/bin/python3
EXAMPLE_PACKAGES := python3-numpy python3-scipy python3-sklearn python3-pytest python3-pyflakes
# The example's pyflakes and pytest through its own checks stage, which fails on a lint
# finding, a failing test or a skipped one (its result goes to stderr).
test-examples:
	$(PYTHON) -c 'import numpy, scipy, sklearn, pytest, pyflakes' || \
	  { echo "examples/churn-model needs Debian's $(EXAMPLE_PACKAGES) (apt-get install them)" >&2; exit 1; }
	cd examples/churn-model && PYTHONPATH=src MODELSHIP_RESULT_FILE=/dev/null $(PYTHON) -m churn_model.checks

# Formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings

build:
	$(CARGO) build --workspace --bins

PREFIX ?= $(HOME)/.local
.PHONY: install-plugin
# kubectl-modelship and kubectl's completion helper into $(PREFIX)/bin (put it on PATH).
install-plugin:
	$(CARGO) build --release --locked --bin kubectl-modelship
	install -d $(PREFIX)/bin
	install -m 0755 $${CARGO_TARGET_DIR:-target}/release/kubectl-modelship $(PREFIX)/bin/kubectl-modelship
	install -m 0755 plugins/kubectl_complete-modelship $(PREFIX)/bin/kubectl_complete-modelship

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := compare_json oip_decode
.PHONY: fuzz
# cargo-fuzz on what the router parses from upstream answers, FUZZ_SECONDS per target
# (fuzz/; the first run builds with sanitizers, several minutes). A crash stops with the input
# in fuzz/artifacts/<target>/: make it a unit test beside the code it broke.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; \
	done

# The judge's false verdicts on noise and its time to catch known regressions, on the local
# Prometheus with the router and model servers as local processes (about 20 minutes).
bench-analysis: prometheus-up
	$(CARGO) build --release -p modelship -p model-server -p modelship-e2e --bins
	$(CARGO) run --release -q -p modelship-e2e --bin bench-analysis -- $(BENCH_ARGS)

# The operator at scale on the local cluster with KWOK nodes (docs/benchmarks.md, "Scale"):
# N ModelDeployments (default 1000) and N/5 ModelPipelines; `make bench-scale N=5000`.
.PHONY: bench-scale
bench-scale:
	bench/scale/run.sh $(N)

crds:
	$(CARGO) run -q --bin modelship -- crd > crds/modelship.yaml.tmp
	mv crds/modelship.yaml.tmp crds/modelship.yaml
	cp crds/modelship.yaml charts/modelship/crds/modelship.yaml

MANIFESTS_HEADER := \
  '\# Plain manifests for clusters without Helm, rendered from charts/modelship with its default' \
  '\# values (`make manifests`). Create the namespace first:' \
  '\#   kubectl create namespace modelship-system' \
  '\#   kubectl apply --server-side -f config/manifests/modelship.yaml'

manifests: crds cluster-up
	{ printf '%s\n' $(MANIFESTS_HEADER); e2e/.cluster/bin/helm template modelship charts/modelship --namespace modelship-system --include-crds; } > config/manifests/modelship.yaml.tmp
	mv config/manifests/modelship.yaml.tmp config/manifests/modelship.yaml

# The Gateway API and Istio CRDs the traffic-provider tests install, from pinned Go modules.
provider-crds:
	e2e/providers/crds >/dev/null

build-cluster:
	e2e/cluster/build

cluster-up:
	e2e/cluster/up

cluster-down:
	e2e/cluster/down

# The real node (root): e2e/cluster/node-up starts the cluster first.
node-up:
	e2e/cluster/node-up

node-down:
	e2e/cluster/node-down

images:
	e2e/images/build

prometheus-up:
	e2e/prometheus/up

prometheus-down:
	e2e/prometheus/down
