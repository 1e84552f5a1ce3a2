#!/usr/bin/env bash
# crds/ is the source of truth; the chart carries an identical copy.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d charts/sigops/crds ] || { echo "check-crds: no chart yet, nothing to compare"; exit 0; }
status=0
for f in crds/*.yaml; do
  if ! cmp -s "$f" "charts/sigops/crds/$(basename "$f")"; then
    echo "check-crds: charts/sigops/crds/$(basename "$f") differs from $f (copy crds/ into the chart)" >&2
    status=1
  fi
done
for f in charts/sigops/crds/*.yaml; do
  [ -f "crds/$(basename "$f")" ] || { echo "check-crds: $f has no source in crds/" >&2; status=1; }
done
exit $status
