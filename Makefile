# modelship: build and test.
#
#   make test          start the local cluster and Prometheus (or reuse running ones),
#                      build the workspace binaries, run every test (unit and end-to-end)
#   make build-cluster build the pinned control plane, kubectl and helm (cached)
#   make cluster-up / cluster-down / prometheus-up / prometheus-down
#
# See e2e/README.md.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: test build build-cluster cluster-up cluster-down prometheus-up prometheus-down

test: cluster-up prometheus-up build
	$(CARGO) test --workspace

build:
	$(CARGO) build --workspace --bins

build-cluster:
	e2e/cluster/build

cluster-up:
	e2e/cluster/up

cluster-down:
	e2e/cluster/down

prometheus-up:
	e2e/prometheus/up

prometheus-down:
	e2e/prometheus/down
