#!/bin/sh
# The Debian packages the image build and the image checks need, installed when missing.
#   image/tools.sh build | test
set -eu
case ${1:-} in
    build) wanted="mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support
        arch-test:arch-test mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk mkfs.ext4:e2fsprogs" ;;
    test) wanted="qemu-system-aarch64:qemu-system-arm qemu-system-x86_64:qemu-system-x86 shellcheck:shellcheck mcopy:mtools
        debugfs:e2fsprogs systemd-analyze:systemd" ;;
    *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
missing=""
for pair in $wanted; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || [ -x "/sbin/${pair%%:*}" ] ||
        missing="$missing ${pair#*:}"
done
python3 -c 'import venv' 2>/dev/null || missing="$missing python3-venv"
[ -z "$missing" ] && exit 0
echo "installing:$missing"
[ "$(id -u)" -eq 0 ] || { echo "image/tools.sh: need root to install:$missing" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # a list of package names
apt-get install -y --no-install-recommends $missing >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends $missing >/dev/null; }
