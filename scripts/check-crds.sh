#!/usr/bin/env bash
# crds/ is the source of truth; the chart templates its CRDs from charts/sigops/files/crds/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/chart-sync-crds.sh --check
