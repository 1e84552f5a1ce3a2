#!/usr/bin/env bash
# `make demo`: the whole story on a local control plane (see operator/devtools/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m devtools.demo
