#!/usr/bin/env bash
# make image: build the sigops image here, where no registry can be reached, and load it into
# the local node if one is running.
#
#   base    a Debian bookworm rootfs with python3 from Debian packages (mmdebstrap), imported
#           as localhost/sigops-base:bookworm; cached in the tool cache by its package list
#   wheels  sigops and its dependencies built on this machine (pip wheel)
#   image   Containerfile with BASE_IMAGE=the base and the wheels: localhost/sigops:<version>
#   pause   a static pause binary (images/pause/pause.c) as localhost/sigops-pause:<version>,
#           the node's sandbox image
#
# podman keeps its storage under .dev/image (nothing machine-wide), builds with runc and no
# network. The images are saved as archives in .dev/image; devtools.node imports them into the
# node's containerd on start.
#
# Usage: scripts/image.sh [build|load]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${SIGOPS_TOOLS_CACHE:-$HOME/.cache/sigops/tools}
out=$here/.dev/image
python=${PYTHON:-$here/.venv/bin/python}
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$here/pyproject.toml")
image=localhost/sigops:$version
pause=localhost/sigops-pause:$version
base=localhost/sigops-base:bookworm
base_packages=python3,python3-venv,ca-certificates

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

for t in podman mmdebstrap gcc; do
  command -v $t >/dev/null 2>&1 || die "$t is missing: run \`make tools\` (scripts/tools.sh) first"
done

mkdir -p "$out"
pm() {
  podman --root "$out/storage" --runroot "$out/run" --runtime /usr/sbin/runc \
    --cgroup-manager cgroupfs --events-backend file "$@"
}
# Containers get explicit, modest rlimits: where raising an rlimit is not permitted (this kind
# of machine), runc fails on podman's defaults.
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
build() { pm build --network none --isolation oci "${limits[@]}" "$@"; }

build_base() {
  local key tarball
  key=$(printf '%s' "bookworm minbase $base_packages" | sha256sum | cut -c1-12)
  tarball=$cache/sigops-base-$key.tar
  if [ ! -s "$tarball" ]; then
    log "base: mmdebstrap bookworm ($base_packages) from this machine's Debian sources"
    local t0 sources=()
    t0=$(now)
    # The machine's own apt sources (the Debian mirror it may reach).
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
      [ -s "$f" ] && sources+=("$f")
    done
    [ ${#sources[@]} -gt 0 ] || die "no apt sources on this machine for mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include="$base_packages" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      bookworm "$tarball.part.tar" "${sources[@]}"
    mv "$tarball.part.tar" "$tarball"
    log "base: built in $(since "$t0") s"
  fi
  if ! pm image exists "$base"; then
    pm import --quiet "$tarball" "$base" >/dev/null
  fi
}

build_pause() {
  local d=$out/pause
  mkdir -p "$d"
  gcc -static -O2 -s -o "$d/pause" "$here/images/pause/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$d/Containerfile"
  build --quiet -t "$pause" -f "$d/Containerfile" "$d" >/dev/null
  pm save --quiet --format docker-archive -o "$out/pause.tar.tmp" "$pause"
  mv "$out/pause.tar.tmp" "$out/pause.tar"
}

build_sigops() {
  local ctx=$out/context t0
  rm -rf "$ctx" && mkdir -p "$ctx/operator"
  t0=$(now)
  log "wheels: sigops and its dependencies"
  "$python" -m pip wheel --quiet --disable-pip-version-check -w "$ctx/wheels" "$here" \
    || die "pip wheel failed"
  # The compiled reader, when this venv has it (make venv; ACCEL=0 leaves it out): the audit
  # Job's indexes run this image.
  if [ "${SIGOPS_REQUIRE_ACCEL:-1}" = 1 ] && "$python" -c 'import sigops_accel' 2>/dev/null; then
    "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$ctx/wheels" \
      "$here/accel" || die "pip wheel of accel/ failed"
  fi
  cp "$here/pyproject.toml" "$here/README.md" "$here/.dockerignore" "$ctx/"
  cp -r "$here/operator/sigops" "$ctx/operator/sigops"
  find "$ctx/operator" -name __pycache__ -prune -exec rm -rf {} +
  log "wheels: $(find "$ctx/wheels" -name '*.whl' | wc -l) in $(since "$t0") s"
  t0=$(now)
  build --quiet --build-arg "BASE_IMAGE=$base" -t "$image" -f "$here/Containerfile" "$ctx" >/dev/null
  log "image: $image built in $(since "$t0") s"
  pm run --rm --read-only --user 65532:65532 --network none "${limits[@]}" "$image" --version \
    || die "the image does not run \`sigops --version\` read-only as UID 65532"
  if ls "$ctx"/wheels/sigops_accel-*.whl >/dev/null 2>&1; then
    pm run --rm --read-only --user 65532:65532 --network none "${limits[@]}" \
      --entrypoint /opt/sigops/bin/python "$image" -c \
      'from sigops.core import accel; assert accel.available() and accel.batch_short' \
      || die "the image has the compiled reader's wheel but does not use it"
    log "image: with the compiled reader (sigops_accel)"
  fi
  pm save --quiet --format docker-archive -o "$out/sigops.tar.tmp" "$image"
  # Also under the short name sigops:<version>: the node's runtime resolves a short name
  # itself when it imports the archive, so manifests that say `image: sigops:<version>` (the
  # chart's default) find the image without a pull.
  "$python" - "$out/sigops.tar.tmp" "${image#localhost/}" <<'PY'
import io, json, sys, tarfile
path, short = sys.argv[1], sys.argv[2]
with tarfile.open(path) as src, tarfile.open(path + ".new", "w") as dst:
    for m in src:
        data = src.extractfile(m) if m.isfile() else None
        if m.name == "manifest.json" and data is not None:
            manifest = json.load(data)
            for entry in manifest:
                entry["RepoTags"] = list(dict.fromkeys(entry.get("RepoTags") or []) | {short: None})
            raw = json.dumps(manifest).encode()
            m.size = len(raw)
            data = io.BytesIO(raw)
        dst.addfile(m, data)
PY
  mv "$out/sigops.tar.tmp.new" "$out/sigops.tar" && rm -f "$out/sigops.tar.tmp"
  printf '%s\n' "$image" >"$out/sigops.ref"
  printf '%s\n' "$pause" >"$out/pause.ref"
  local size
  size=$(pm image inspect --format '{{.Size}}' "$image")
  log "image: $image, $((size / 1024 / 1024)) MiB"
}

load() {
  # Into the node's containerd, when a node is running.
  "$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from devtools.node import main; sys.exit(main(["load"]))' \
    "$here/operator"
}

# What the images are made of: when none of it changed since the last build, nothing is rebuilt.
inputs_hash() {
  (cd "$here" && { cat Containerfile .dockerignore pyproject.toml README.md scripts/image.sh images/pause/pause.c
                   find operator/sigops -name '*.py' -o -name 'py.typed' | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
}

case ${1:-build} in
  build)
    t_all=$(now)
    hash=$(inputs_hash)
    if [ -s "$out/sigops.tar" ] && [ -s "$out/pause.tar" ] && [ "$(cat "$out/inputs" 2>/dev/null)" = "$hash" ]; then
      log "$image: up to date"
      load
      exit 0
    fi
    build_base
    build_pause
    build_sigops
    printf '%s\n' "$hash" >"$out/inputs"
    log "done in $(since "$t_all") s"
    load
    ;;
  load) load ;;
  *) die "usage: $0 [build|load]" ;;
esac
