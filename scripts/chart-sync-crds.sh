#!/usr/bin/env bash
# Keep the chart's CRD copies (charts/sigops/files/crds/) byte-identical to crds/, the source of
# truth. The chart installs them through templates/crds.yaml (crds.enabled / crds.keep), not from
# a chart crds/ directory, which Helm would install a second time and never upgrade.
#   scripts/chart-sync-crds.sh          copy crds/*.yaml into the chart (and drop stale copies)
#   scripts/chart-sync-crds.sh --check  exit 1 if the copies differ (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=charts/sigops/files/crds
mode=${1:-sync}
case "$mode" in
  sync | --check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
status=0
for f in crds/*.yaml; do
  copy="$dest/$(basename "$f")"
  if ! cmp -s "$f" "$copy"; then
    if [ "$mode" = --check ]; then
      echo "chart-sync-crds: $copy differs from $f (run scripts/chart-sync-crds.sh)" >&2
      status=1
    else
      mkdir -p "$dest"
      cp "$f" "$copy"
      echo "chart-sync-crds: updated $copy"
    fi
  fi
done
for copy in "$dest"/*.yaml; do
  [ -e "$copy" ] || continue
  if [ ! -f "crds/$(basename "$copy")" ]; then
    if [ "$mode" = --check ]; then
      echo "chart-sync-crds: $copy has no source in crds/" >&2
      status=1
    else
      rm "$copy"
      echo "chart-sync-crds: removed $copy (no source in crds/)"
    fi
  fi
done
exit $status
