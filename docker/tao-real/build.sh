#!/usr/bin/env bash
# Build deft's real-TAO test image and print its tag (the last line of stdout; progress goes to stderr).
#
# NVIDIA's own TAO 7.3.0 code from PyPI (nvidia-tao-pytorch, nvidia-tao-ds, nvidia-tao-core, nvidia-eff) on
# CPU, no registry needed. Two layers, each cached by a hash of its inputs:
#   base  deft-aoi/tao-real-base:<hash>  Debian bookworm (debootstrap --variant=minbase), this machine's
#         Python 3.12 (NVIDIA's cp312 wheels; bookworm has 3.11) copied to /opt/python3.12, the pinned wheels
#         of requirements.txt + NVIDIA's four wheels installed into it, and a tiny random SigLIP in the Hugging
#         Face cache (make_tiny_siglip.py), `docker import`ed. Several GB: downloads go through pip's own cache,
#         so a rebuild on the same machine downloads nothing.
#   thin  deft-aoi/tao-real:<hash>  `docker build` FROM the base: the CPU shims (shims/, each citing the NVIDIA
#         line it works around, switched on by DEFT_TAO_CPU_SHIMS=1 which only this image sets).
# Environment: DEFT_DOCKER_CACHE (default /var/cache/deft-docker), DEBIAN_MIRROR, PY312 (a CPython 3.12
# install to copy; default: pyenv's 3.12.x, else /usr/bin/python3.12).
# Exit 3: cannot build here (not root / no debootstrap / no Python 3.12), with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
SUITE=bookworm
INCLUDE=ca-certificates,libncursesw6  # libncursesw6: _curses, which nvidia-eff imports (the minbase rootfs lacks it)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DEFT_DOCKER_CACHE:-/var/cache/deft-docker}
NVIDIA_WHEELS="nvidia-tao-pytorch==7.3.0 nvidia-tao-ds==7.3.0 nvidia-tao-core==7.3.0 nvidia-eff==0.6.7"
RECIPE=1  # bump when the base recipe below changes in a way its inputs do not show

log() { echo "tao-real: $*" >&2; }

if [ -z "${PY312:-}" ]; then
    PY312=$(ls -d /root/.pyenv/versions/3.12.*/bin/python3.12 "${HOME:-/root}"/.pyenv/versions/3.12.*/bin/python3.12 \
        2>/dev/null | sort -V | tail -1 || true)
    [ -n "$PY312" ] || PY312=$(command -v python3.12 || true)
fi
[ -n "$PY312" ] && [ -x "$PY312" ] || { log "no CPython 3.12 found (NVIDIA's TAO 7.3.0 wheels are cp312): set PY312"; exit 3; }
PYPREFIX=$("$PY312" -c 'import sys; print(sys.base_prefix)')
PYVER=$("$PY312" -c 'import sys; print(sys.version.split()[0])')

mkdir -p "$CACHE"
BASE_HASH=$( (printf '%s\n' "recipe=$RECIPE" "suite=$SUITE" "include=$INCLUDE" "python=$PYVER" "$NVIDIA_WHEELS";
    cat requirements.txt make_tiny_siglip.py) | sha256sum | cut -c1-16)
BASE=deft-aoi/tao-real-base:$BASE_HASH

if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base $BASE present"
else
    [ "$(id -u)" = 0 ] || { log "building the base needs root (debootstrap); run as root once"; exit 3; }
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 3; }
    ROOTFS=$(mktemp -d "$CACHE/tao-rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    log "debootstrap $SUITE into $ROOTFS"
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debs" \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/tao-debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/tao-debootstrap.log" >&2; exit 3; }
    log "Python $PYVER from $PYPREFIX → /opt/python3.12"
    cp -a "$PYPREFIX" "$ROOTFS/opt/python3.12"
    rm -rf "$ROOTFS/opt/python3.12/lib/python3.12/site-packages/"*  # only what requirements.txt pins
    PYR=$ROOTFS/opt/python3.12/bin/python3.12
    export LD_LIBRARY_PATH=$ROOTFS/opt/python3.12/lib
    "$PYR" -m ensurepip >&2
    log "pip install requirements.txt (several GB; pip's cache makes a rebuild download nothing)"
    "$PYR" -m pip install -q --disable-pip-version-check --no-warn-script-location -r requirements.txt >&2
    # NVIDIA's wheels declare no dependencies (tao-pytorch, tao-ds) or a server's (tao-core: Flask, kubernetes,
    # ...); nvidia-eff 0.6.7 is a py312 wheel whose metadata asks for pyarmor/pyinstaller it does not import,
    # and PyPI's index lists it as `Requires-Python ==3.8.*` (the wheel's own METADATA says ==3.12.*), so pip
    # refuses it without --ignore-requires-python.
    # shellcheck disable=SC2086
    "$PYR" -m pip install -q --disable-pip-version-check --no-warn-script-location --no-deps \
        --ignore-requires-python $NVIDIA_WHEELS >&2
    log "tiny random SigLIP → /opt/hf"
    "$PYR" make_tiny_siglip.py "$ROOTFS/opt/hf" >&2
    # pip wrote console scripts whose shebang is the build path; inside the image it is /opt/python3.12.
    grep -lr --binary-files=without-match "^#!$ROOTFS/opt/python3.12/bin/python" "$ROOTFS/opt/python3.12/bin" \
        | xargs -r sed -i "1s|^#!$ROOTFS/opt/python3.12|#!/opt/python3.12|"
    rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
    find "$ROOTFS/opt" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
    chmod -R a+rX "$ROOTFS/opt"
    log "docker import as $BASE"
    tar -C "$ROOTFS" -cf - . | docker import - "$BASE" >/dev/null
    rm -rf "$ROOTFS"
    trap - EXIT
fi

# The thin layer: everything it copies is hashed, so equal shims reuse the image.
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
cp -r Dockerfile shims "$CTX/"
find "$CTX" -name __pycache__ -prune -exec rm -rf {} +
THIN_HASH=$( (echo "$BASE"; cd "$CTX" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
IMAGE=deft-aoi/tao-real:$THIN_HASH
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
else
    log "docker build $IMAGE"
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE" -t "$IMAGE" "$CTX" >/dev/null 2>"$CTX/build.err" \
        || { cat "$CTX/build.err" >&2; exit 3; }
fi
docker images deft-aoi/tao-real --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$IMAGE" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$IMAGE"
