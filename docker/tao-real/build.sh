#!/usr/bin/env bash
# Build deft's real-TAO test image and print its tag (the last line of stdout; progress goes to stderr).
#
# NVIDIA's own TAO 7.3.0 code from PyPI (nvidia-tao-pytorch, nvidia-tao-ds, nvidia-tao-core, nvidia-eff) on
# CPU, no registry needed. Two layers, each cached by a hash of its inputs:
#   base  deft-aoi/tao-real-base:<hash>  Debian bookworm (debootstrap --variant=minbase), this machine's
#         Python 3.12 (NVIDIA's cp312 wheels; bookworm has 3.11) copied to /opt/python3.12, the pinned wheels
#         of requirements.txt + NVIDIA's four wheels installed into it, and a tiny random SigLIP in the Hugging
#         Face cache (make_tiny_siglip.py), `docker import`ed. Several GB: the wheels are kept in
#         $DEFT_DOCKER_CACHE/wheels, so a rebuild on the same machine downloads only new pins.
#   thin  deft-aoi/tao-real:<hash>  `docker build` FROM the base: the CPU shims (shims/, each citing the NVIDIA
#         line it works around, switched on by DEFT_TAO_CPU_SHIMS=1 which only this image sets).
# `build.sh --rootfs-only` makes only the base's rootfs ($DEFT_DOCKER_CACHE/tao-real-rootfs-<hash>/: debootstrap
# + pip, mostly download and disk) and needs no Docker Engine: .ci/run starts it in the background while
# `make test` uses the CPUs; the later full build `docker import`s that rootfs and removes it (the engine keeps
# the image). Both modes hold $DEFT_DOCKER_CACHE/tao-real.lock, so the full build waits for a running one.
# Environment: DEFT_DOCKER_CACHE (default /var/cache/deft-docker), DEBIAN_MIRROR, PY312 (a CPython 3.12
# install to copy; default: pyenv's 3.12.x, else /usr/bin/python3.12), DEFT_TAO_REAL_KEEP_OTHERS=1 (remove no
# other tao-real image).
# Exit 3: cannot build here (not root / no debootstrap / no Python 3.12), with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")"
ROOTFS_ONLY=0
[ "${1:-}" != --rootfs-only ] || ROOTFS_ONLY=1
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
exec 9>"$CACHE/tao-real.lock"
flock 9
# The wheels (several GB) are downloaded into $CACHE/wheels and installed from there with --no-index: pip's own
# HTTP cache kept nothing here (the index answered with no-store), so a rebuild re-downloaded everything. `pip
# download` skips a file already in the folder, so a rebuild on this machine downloads only new pins.
WHEELS=$CACHE/wheels
BASE_HASH=$( (printf '%s\n' "recipe=$RECIPE" "suite=$SUITE" "include=$INCLUDE" "python=$PYVER" "$NVIDIA_WHEELS";
    cat requirements.txt make_tiny_siglip.py) | sha256sum | cut -c1-16)
BASE=deft-aoi/tao-real-base:$BASE_HASH

ROOTFS=$CACHE/tao-real-rootfs-$BASE_HASH
base_present() { docker image inspect "$BASE" >/dev/null 2>&1; }

make_rootfs() {
    [ "$(id -u)" = 0 ] || { log "building the base needs root (debootstrap); run as root once"; exit 3; }
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 3; }
    rm -rf "$ROOTFS" "$ROOTFS.part" "$ROOTFS.imported"
    ROOTFS=$ROOTFS.part  # renamed when complete: a killed build leaves no rootfs that looks whole
    mkdir -p "$ROOTFS"
    trap 'rm -rf "$ROOTFS" "$ROOTFS.tmp"' EXIT
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
    # pip leaves its unpack folders in $TMPDIR: keep them in the rootfs build, removed with it
    export TMPDIR=$ROOTFS.tmp
    mkdir -p "$TMPDIR" "$WHEELS"
    log "pip download requirements.txt + NVIDIA's wheels → $WHEELS (several GB the first time)"
    # shellcheck disable=SC2086
    # setuptools + wheel: the offline install builds the sdists among the pins (fvcore, antlr4, ...) in isolation
    "$PYR" -m pip download -q --disable-pip-version-check -d "$WHEELS" -r requirements.txt setuptools wheel >&2
    # shellcheck disable=SC2086
    "$PYR" -m pip download -q --disable-pip-version-check -d "$WHEELS" --no-deps --ignore-requires-python \
        $NVIDIA_WHEELS >&2
    log "pip install from $WHEELS"
    "$PYR" -m pip install -q --disable-pip-version-check --no-warn-script-location --no-index \
        --find-links "$WHEELS" -r requirements.txt >&2
    # NVIDIA's wheels declare no dependencies (tao-pytorch, tao-ds) or a server's (tao-core: Flask, kubernetes,
    # ...); nvidia-eff 0.6.7 is a py312 wheel whose metadata asks for pyarmor/pyinstaller it does not import,
    # and PyPI's index lists it as `Requires-Python ==3.8.*` (the wheel's own METADATA says ==3.12.*), so pip
    # refuses it without --ignore-requires-python.
    # shellcheck disable=SC2086
    "$PYR" -m pip install -q --disable-pip-version-check --no-warn-script-location --no-deps --no-index \
        --find-links "$WHEELS" --ignore-requires-python $NVIDIA_WHEELS >&2
    log "tiny random SigLIP → /opt/hf"
    "$PYR" make_tiny_siglip.py "$ROOTFS/opt/hf" >&2
    # pip wrote console scripts whose shebang is the build path; inside the image it is /opt/python3.12.
    grep -lr --binary-files=without-match "^#!$ROOTFS/opt/python3.12/bin/python" "$ROOTFS/opt/python3.12/bin" \
        | xargs -r sed -i "1s|^#!$ROOTFS/opt/python3.12|#!/opt/python3.12|"
    rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
    find "$ROOTFS/opt" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
    chmod -R a+rX "$ROOTFS/opt"
    rm -rf "$TMPDIR"
    unset TMPDIR
    mv "$ROOTFS" "${ROOTFS%.part}"
    ROOTFS=${ROOTFS%.part}
    trap - EXIT
}

if base_present; then
    log "base $BASE present"
    rm -rf "$ROOTFS"
elif [ $ROOTFS_ONLY = 1 ]; then
    if [ -d "$ROOTFS" ]; then log "rootfs $ROOTFS present"; else make_rootfs; fi
    log "rootfs ready: $ROOTFS (the full build imports it)"
    exit 0
else
    [ -d "$ROOTFS" ] || make_rootfs
    log "docker import $ROOTFS as $BASE"
    tar -C "$ROOTFS" -cf - . | docker import - "$BASE" >/dev/null
    # removing several GB of small files takes minutes: in the background, the tests need only the image
    mv "$ROOTFS" "$ROOTFS.imported" && { rm -rf "$ROOTFS.imported" >/dev/null 2>&1 & }
fi
[ $ROOTFS_ONLY = 0 ] || exit 0

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
# Older thin layers, then older bases (several GB each): only this recipe's pair is kept, unless
# DEFT_TAO_REAL_KEEP_OTHERS=1 (a machine shared by several checkouts, each building its own image).
[ "${DEFT_TAO_REAL_KEEP_OTHERS:-0}" = 1 ] || for repo_keep in "deft-aoi/tao-real $IMAGE" "deft-aoi/tao-real-base $BASE"; do
    set -- $repo_keep
    docker images "$1" --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$2" | xargs -r docker rmi >/dev/null 2>&1 || true
done
echo "$IMAGE"
