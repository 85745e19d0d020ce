#!/bin/bash
# The station's wheel, from the files the package is made of (not from the checkout, whose
# build/ holds images and caches), with pip from build/cache/buildenv (made here once).
# Used by image/build.sh and image/hil.py.
#
#   image/wheel.sh OUT_DIR        prints the wheel's path
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: image/wheel.sh OUT_DIR}
CACHE=${BUILD:-$REPO/build}/cache
SOURCE=$(mktemp -d)
trap 'rm -rf "$SOURCE"' EXIT

mkdir -p "$CACHE"
[ -x "$CACHE/buildenv/bin/pip" ] || python3 -m venv "$CACHE/buildenv"
rm -rf "$OUT" && mkdir -p "$OUT"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/station" "$REPO/hw" "$SOURCE/"
"$CACHE/buildenv/bin/pip" wheel --quiet --no-deps --wheel-dir "$OUT" "$SOURCE" >&2
ls "$OUT"/station-*.whl
