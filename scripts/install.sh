#!/usr/bin/env bash
# make install: the README's install (helm upgrade --install) against the local cluster.
# A real cluster already has the backends' namespaces; a fresh local one may not, and Helm
# cannot create the Roles of a namespace that does not exist: those are created first (and
# said so). Usage: scripts/install.sh [VALUES_FILE]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export KUBECONFIG=${KUBECONFIG_DEV:-$here/.dev/cluster/kubeconfig}
values=()
if [ -n "${1:-}" ]; then
  [ -f "$1" ] || { echo "[install] error: no values file $1" >&2; exit 2; }
  values=(-f "$1")
fi
[ -f "$KUBECONFIG" ] || { echo "[install] error: no local cluster; run \`make cluster\` first" >&2; exit 2; }
for ns in $(helm template sigops "$here/charts/sigops" -n sigops-system "${values[@]}" \
              | sed -n 's/^  namespace: *"\{0,1\}\([a-z0-9-]*\)"\{0,1\}$/\1/p' | sort -u); do
  [ "$ns" = sigops-system ] && continue
  if ! kubectl get namespace "$ns" >/dev/null 2>&1; then
    echo "[install] creating namespace $ns (a target of the chart's values)" >&2
    kubectl create namespace "$ns" >/dev/null
  fi
done
helm upgrade --install sigops "$here/charts/sigops" -n sigops-system --create-namespace \
  --wait --timeout 3m "${values[@]}"
