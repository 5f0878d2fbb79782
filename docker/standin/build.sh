#!/usr/bin/env bash
# Build the local TAO stand-in image and print its tag (the last line of stdout; progress goes to stderr).
#
# No registry is needed. Two layers, each cached by a hash of its inputs:
#   base  deft-aoi/tao-standin-base:<hash>  a Debian rootfs from `debootstrap --variant=minbase` (python3 from
#         Debian) plus the exact wheels of numpy/pandas/pyarrow/PyYAML/Pillow/pydantic that the host's deft
#         venv uses (pip, from PyPI: pyarrow and pydantic 2 are not in bookworm, and equal versions keep the
#         fake's figures equal to the in-process fake's), `docker import`ed. The rootfs tarball is kept in
#         $DEFT_DOCKER_CACHE (default /var/cache/deft-docker), so a wiped engine re-imports it in seconds.
#   thin  deft-aoi/tao-standin:<hash>  `docker build` FROM the base: src/deft_aoi + the entry scripts
#         visual_changenet / embedding / tmm (docker/standin/tao-entry). A code change rebuilds only this.
# Environment: PY (python of the deft venv, default .venv/bin/python), DEFT_DOCKER_CACHE, DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SUITE=bookworm
INCLUDE=python3,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DEFT_DOCKER_CACHE:-/var/cache/deft-docker}
WHEELS="numpy pandas pyarrow PyYAML pillow pydantic pydantic-core annotated-types typing-extensions
typing-inspection python-dateutil six tzdata omegaconf"
SDISTS="antlr4-python3-runtime"  # pure Python, published as an sdist only: built with the host's python3.11
RECIPE=1  # bump when the base recipe below changes in a way its inputs do not show

log() { echo "standin: $*" >&2; }

mkdir -p "$CACHE" 2>/dev/null || CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/deft-docker
mkdir -p "$CACHE"

# Exact versions from the venv; a package it lacks (six, pytz: optional per pandas release) is skipped.
pins() {
    "$PY" - "$@" <<'PYEOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PYEOF
}
# shellcheck disable=SC2086
PINS=$(pins $WHEELS)
# shellcheck disable=SC2086
SDIST_PINS=$(pins $SDISTS)
BASE_HASH=$(printf '%s\n' "recipe=$RECIPE" "suite=$SUITE" "include=$INCLUDE" "$PINS" "$SDIST_PINS" \
    | sha256sum | cut -c1-16)
BASE=deft-aoi/tao-standin-base:$BASE_HASH
TARBALL=$CACHE/tao-standin-base-$BASE_HASH.tar

if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base $BASE present"
else
    if [ ! -s "$TARBALL" ]; then
        [ "$(id -u)" = 0 ] || { log "building the base rootfs needs root (debootstrap); run as root once"; exit 3; }
        command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 3; }
        ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$ROOTFS"' EXIT
        log "debootstrap $SUITE ($INCLUDE) into $ROOTFS (about a minute or two)"
        mkdir -p "$CACHE/debs"
        debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debs" \
            "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 3; }
        log "pip wheels into the rootfs: $(echo $PINS)"
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --python-version 3.11 --implementation cp --abi cp311 \
            --target "$ROOTFS/usr/local/lib/python3.11/dist-packages" $PINS >&2
        if [ -n "$SDIST_PINS" ]; then
            # shellcheck disable=SC2086
            "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
                --target "$ROOTFS/usr/local/lib/python3.11/dist-packages" $SDIST_PINS >&2
        fi
        rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
        tar -C "$ROOTFS" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
        rm -rf "$ROOTFS"
        trap - EXIT
    fi
    log "docker import $TARBALL as $BASE"
    docker import "$TARBALL" "$BASE" >/dev/null
fi

# The thin layer: everything it copies is hashed, so equal code reuses the image.
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
tar -C src --exclude=__pycache__ --exclude='*.pyc' -cf - deft_aoi | tar -C "$CTX" -xf -
cp docker/standin/Dockerfile docker/standin/tao-entry "$CTX/"
THIN_HASH=$( (echo "$BASE"; cd "$CTX" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
IMAGE=deft-aoi/tao-standin:$THIN_HASH
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
else
    log "docker build $IMAGE"
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" -t "$IMAGE" "$CTX" >/dev/null 2>"$CTX/build.err" \
        || { cat "$CTX/build.err" >&2; exit 3; }
fi
# Older thin layers are stale code; the base stays cached.
docker images deft-aoi/tao-standin --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$IMAGE" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$IMAGE"
