# sigops — one command each: `make test` (everything CI runs), `make demo` (the story, live).
# Both set up what they need: a virtualenv, the tools (etcd, Kubernetes, helm from Go modules;
# Prometheus and Alertmanager from Debian packages), cached outside the repo.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/.dev/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export PATH := $(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
KUBECONFIG_DEV := $(CURDIR)/.dev/cluster/kubeconfig
VALUES ?=

.PHONY: help venv tools tools-netpol image lint test unit integration e2e node cluster cluster-down install uninstall demo bench clean

help:
	@echo "make test          set up and run lint + unit + integration + e2e tests (what CI runs)"
	@echo "make demo          run sigops end to end on the local node (KEEP=1 keeps it up)"
	@echo "make unit          fast tests, no cluster"
	@echo "make integration   tests against the local control plane"
	@echo "make tools-netpol  build only kube-router (make tools builds it too) for the NetworkPolicy node tests"
	@echo "make image         build the image sigops:$(VERSION) here (podman, no registry) and load it into the node"
	@echo "make cluster       start a local one-node cluster whose pods run (.dev/cluster/kubeconfig)"
	@echo "make cluster-down  stop it and restore what it changed on this machine"
	@echo "make install       helm upgrade --install sigops into the local cluster (VALUES=file.yaml adds values)"
	@echo "make bench         benchmarks -> benchmarks/results/, see BENCHMARKS.md"

# The compiled reader of `sigops verify` (accel/, Rust + PyO3, built by maturin from the
# registries). Optional for users; the tests require it (SIGOPS_REQUIRE_ACCEL) so that both
# routes are always held to the same answers. ACCEL=0 skips it: the pure-Python route only.
ACCEL ?= 1
ACCEL_SRC := accel/Cargo.toml accel/pyproject.toml accel/src/lib.rs
export SIGOPS_REQUIRE_ACCEL := $(ACCEL)

$(STAMP): pyproject.toml $(ACCEL_SRC)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	if [ "$(ACCEL)" = 1 ]; then $(VENV)/bin/pip install -q ./accel; fi
	touch $@

# Bytecode for the package, written even where PYTHONDONTWRITEBYTECODE is set (an editable
# install otherwise compiles every module at every start: 0.2 s of each `sigops` run).
venv: $(STAMP)
	@$(VENV)/bin/python -m compileall -q operator/sigops

tools:
	bash scripts/tools.sh

# kube-router alone (NetworkPolicy enforcement on the node); `tools` builds it too.
tools-netpol:
	bash scripts/tools.sh netpol

lint: venv
	ruff check operator tests $(wildcard benchmarks)
	mypy
	lint-imports
	bash scripts/check-crds.sh
	helm lint --strict charts/sigops

image: venv tools
	bash scripts/image.sh

test: venv tools image lint
	pytest tests $(PYTEST_ARGS)

unit: venv
	pytest -m unit tests $(PYTEST_ARGS)

integration: venv tools
	pytest -m integration tests $(PYTEST_ARGS)

e2e: venv tools image
	pytest -m e2e tests $(PYTEST_ARGS)

node: venv tools image
	pytest -m node tests $(PYTEST_ARGS)

cluster: venv tools image
	python -m devtools.node up

cluster-down: venv
	python -m devtools.node down

# The README's install, against the local cluster (the image is already on its node).
install: venv tools
	KUBECONFIG_DEV=$(KUBECONFIG_DEV) bash scripts/install.sh $(VALUES)

uninstall: venv tools
	helm --kubeconfig $(KUBECONFIG_DEV) uninstall sigops -n sigops-system --wait

demo: venv tools image
	bash scripts/demo.sh

bench: venv tools
	python benchmarks/run.py

clean:
	-python -m devtools.node down
	rm -rf .dev $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
