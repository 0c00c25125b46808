#!/usr/bin/env bash
# `make test-qgis340`: the test suite on Debian 13 (QGIS 3.40 LTR, Python 3.13, GDAL 3.10, numpy 2).
#
# As root: builds a Debian 13 root with debootstrap under .build/debian13 (reused when present),
# installs QGIS and GDAL from Debian's packages in it, fetches the engine's cp313 wheels from outside
# (pip inside the chroot does not inherit this machine's package-index settings) and installs them
# in a venv inside with --no-index, then runs the engine and QGIS tests there. The checkout and the
# shared data are bind-mounted read-only at their own paths; .build is a scratch tmpfs inside.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DEBIAN13_ROOT:-$REPO/.build/debian13}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DATA=$(realpath "${DEEPFIELD_SHARED_DATA:-$REPO/../shared/data}")
# the repository's git folder (a worktree's lies outside it), for `git ls-files` in `make package`
GIT_DIR_SHARED=$(git -C "$REPO" rev-parse --path-format=absolute --git-common-dir)
# The Makefile's APT_PACKAGES (make, zip and git: a test builds the plugin zip with `make package`)
PACKAGES="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv xvfb zip make git"
VENV=/opt/deepfield-venv
WHEELS=/opt/deepfield-wheels
# pip on this machine (with its index settings) fetches the chroot's wheels
HOST_PYTHON=${HOST_PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo /usr/bin/python3 )}

[ "$(id -u)" = 0 ] || { echo "make test-qgis340 builds a chroot: run it as root." >&2; exit 1; }
step() { echo "== $(date -u +%H:%M:%S) $*"; }

if [ ! -e "$ROOT/.deepfield-base" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
    step "debootstrap trixie into $ROOT"
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
    touch "$ROOT/.deepfield-base"
fi

# Everything below runs in a private mount namespace: its mounts vanish when the script ends.
in_root() {
    unshare --mount --propagation private bash -euo pipefail -c '
        ROOT=$1 REPO=$2 DATA=$3 GIT_DIR_SHARED=$4; shift 4
        mount -t proc proc "$ROOT/proc"
        mount --rbind /sys "$ROOT/sys"
        mount --rbind /dev "$ROOT/dev"
        cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
        for dir in "$REPO" "$DATA" "$GIT_DIR_SHARED"; do
            mkdir -p "$ROOT$dir"
            mount --bind "$dir" "$ROOT$dir" && mount -o remount,bind,ro "$ROOT$dir"
        done
        mount -t tmpfs -o size=4g scratch "$ROOT$REPO/.build"
        mkdir -p "$ROOT$REPO/.build/plugins" && ln -s "$REPO" "$ROOT$REPO/.build/plugins/deepfield"
        chroot "$ROOT" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"
    ' in_root "$ROOT" "$REPO" "$DATA" "$GIT_DIR_SHARED" "$@"
}

PACKAGES_STAMP="$ROOT/.deepfield-packages-$(echo "$PACKAGES" | md5sum | cut -c1-8)"
if [ ! -e "$PACKAGES_STAMP" ]; then
    step "apt-get install $PACKAGES"
    in_root bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES"
    rm -f "$ROOT"/.deepfield-packages* && touch "$PACKAGES_STAMP"
fi

# The engine's requirements for the chroot's interpreter, numpy and (no) GPU, from the same logic
# as `make setup` and "Set up engine" (algorithms/engine_setup.py).
mapfile -t REQUIREMENTS < <(in_root python3 "$REPO/algorithms/engine_setup.py" requirements)
[ ${#REQUIREMENTS[@]} -gt 0 ] || { echo "algorithms/engine_setup.py gave no requirements" >&2; exit 1; }
STAMP="$ROOT$VENV/.deepfield-$(printf '%s\n' "${REQUIREMENTS[@]}" | cat - "$REPO/requirements-dev.txt" | md5sum | cut -c1-8)"
if [ ! -e "$STAMP" ]; then
    step "pip download (cp313 wheels) ${REQUIREMENTS[*]}"
    "$HOST_PYTHON" -m pip download -q --dest "$ROOT$WHEELS" \
        --python-version 3.13 --only-binary=:all: "${REQUIREMENTS[@]}" -r "$REPO/requirements-dev.txt"
    step "venv $VENV (--system-site-packages), pip install --no-index"
    in_root bash -c "test -x $VENV/bin/python || python3 -m venv --system-site-packages $VENV"
    in_root "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" \
        "${REQUIREMENTS[@]}" -r "$REPO/requirements-dev.txt"
    rm -f "$ROOT$VENV"/.deepfield-* && touch "$STAMP"
fi

step "versions"
in_root bash -c "dpkg-query -W qgis python3-gdal python3-numpy; $VENV/bin/python -m pip list 2>/dev/null | grep -iE '^(tensorflow|numpy|pyproj|keras) '"

TEST_ENV=(PYTHONPATH="$REPO/.build/plugins" DEEPFIELD_PYTHON="$VENV/bin/python" DEEPFIELD_SHARED_DATA="$DATA"
          TF_CPP_MIN_LOG_LEVEL=2 QT_QPA_PLATFORM=offscreen QGIS_PLUGINPATH="$REPO/.build/plugins"
          PYTHONDONTWRITEBYTECODE=1
          # "Set up engine" (tests/qgis/test_setup_engine.py) installs from the fetched wheels: pip in
          # the chroot has no index settings (nor this machine's TLS certificates)
          PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS")
status=0
for suite in tests/engine tests/qgis; do
    step "pytest $suite"
    in_root env "${TEST_ENV[@]}" bash -c "cd $REPO && $VENV/bin/python -m pytest $suite -q -p no:cacheprovider ${PYTEST_ARGS:-}" \
        || status=1
done
step "done (status $status)"
exit $status
