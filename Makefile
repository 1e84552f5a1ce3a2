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

.PHONY: help venv tools lint test unit integration e2e cluster cluster-down demo bench clean

help:
	@echo "make test          set up and run lint + unit + integration + e2e tests (what CI runs)"
	@echo "make demo          run sigops end to end on a local control plane (KEEP=1 keeps it up)"
	@echo "make unit          fast tests, no cluster"
	@echo "make integration   tests against the local control plane"
	@echo "make cluster       start a local control plane (.dev/cluster/kubeconfig); cluster-down stops it"
	@echo "make bench         benchmarks -> benchmarks/results/, see BENCHMARKS.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

tools:
	bash scripts/tools.sh

lint: venv
	ruff check operator tests $(wildcard benchmarks)
	mypy
	lint-imports
	bash scripts/check-crds.sh
	helm lint --strict charts/sigops

test: venv tools lint
	pytest tests $(PYTEST_ARGS)

unit: venv
	pytest -m unit tests $(PYTEST_ARGS)

integration: venv tools
	pytest -m integration tests $(PYTEST_ARGS)

e2e: venv tools
	pytest -m e2e tests $(PYTEST_ARGS)

cluster: venv tools
	python -m devtools.cluster up
	kubectl --kubeconfig .dev/cluster/kubeconfig apply -f crds/

cluster-down: venv
	python -m devtools.cluster down

demo: venv tools
	bash scripts/demo.sh

bench: venv tools
	python benchmarks/run.py

clean:
	-python -m devtools.cluster down
	rm -rf .dev $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
