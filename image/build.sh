#!/bin/bash
# `make image`: the station's SD-card image for the Raspberry Pi 4 (400, 3B+, Zero 2 W),
# Debian bookworm arm64 with Debian's kernel and raspi-firmware, built with mmdebstrap and
# qemu-user, without loop devices (see ../shared/IMAGE-NOTES.md for the measured facts).
#
#   image/build.sh [OUTPUT.img]        default: build/image/station-arm64.img
#
# Downloads are kept between runs outside the image: the apt archives in
# build/cache/apt-ARCH and pip's wheel cache in build/cache/pip-ARCH (ARCH=amd64 builds
# the same appliance for a PC or a VM).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
ARCH=${ARCH:-arm64}
BUILD=${BUILD:-$REPO/build}
OUTPUT=${1:-$BUILD/image/station-$ARCH.img}
CACHE=$BUILD/cache
WORK=$BUILD/image/work-$ARCH
ROOTFS=$WORK/rootfs
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
IMAGE_MB=${IMAGE_MB:-3072}     # grown to the card's size on first boot
FIRMWARE_MB=256
ROOT_LABEL=station-root
FIRMWARE_LABEL=RASPIFIRM

say() { printf '\n== %s (%ds)\n' "$*" "$((SECONDS))"; }
die() { printf 'image/build.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap in root mode, file ownership in the image)"
case $ARCH in
    arm64) KERNEL=linux-image-arm64; EXTRA=raspi-firmware ;;
    amd64) KERNEL=linux-image-amd64; EXTRA="" ;;
    *) die "ARCH=$ARCH: must be arm64 or amd64" ;;
esac

say "tools"
"$HERE/tools.sh" build

if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable >/dev/null 2>&1 || true
    arch-test "$ARCH" >/dev/null || die "this machine cannot run $ARCH programs (qemu-user-static, binfmt_misc)"
fi

say "the station's wheel"
mkdir -p "$WORK"
WHEEL=$(BUILD=$BUILD "$HERE/wheel.sh" "$WORK/wheel")

say "root filesystem: Debian $SUITE $ARCH"
mkdir -p "$CACHE/apt-$ARCH" "$CACHE/pip-$ARCH"
# A build that died inside mmdebstrap can leave /proc, /sys or /dev mounted in its tree:
# unmount them before removing it, or rm would walk into the host's.
for mounted in $(findmnt -rn -o TARGET | grep "^$ROOTFS/" | sort -r || true); do
    umount -l "$mounted"
done
rm -rf --one-file-system "$ROOTFS"
# shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's, not ours
mmdebstrap --mode=root --variant=apt --arch="$ARCH" \
    --components="main non-free-firmware" \
    --include="systemd,systemd-sysv,udev,dbus,kmod,systemd-timesyncd,systemd-resolved,iproute2,$KERNEL,${EXTRA:+$EXTRA,}initramfs-tools,zstd,python3,python3-venv,ca-certificates,usbmuxd,libusb-1.0-0,i2c-tools,cloud-guest-utils,fdisk,e2fsprogs,dosfstools,procps,less" \
    --skip=download/empty \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in '$CACHE/apt-$ARCH' /var/cache/apt/archives/" \
    --essential-hook="'$HERE/hooks/defer-initramfs.sh' \"\$1\"" \
    --customize-hook="'$HERE/hooks/customize.sh' \"\$1\" '$WHEEL' '$CACHE/pip-$ARCH' '$ROOT_LABEL' '$FIRMWARE_LABEL'" \
    --customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt-$ARCH'" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$ROOTFS" \
    "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb http://deb.debian.org/debian-security $SUITE-security main non-free-firmware"

# mmdebstrap leaves the build host's resolv.conf out; the appliance's is systemd-resolved's.
ln -sf /run/systemd/resolve/stub-resolv.conf "$ROOTFS/etc/resolv.conf"

say "SD-card image $OUTPUT"
"$HERE/assemble.sh" "$ROOTFS" "$OUTPUT" "$IMAGE_MB" "$FIRMWARE_MB" "$ROOT_LABEL" "$FIRMWARE_LABEL"
# The boot test takes the kernel and initrd from here (QEMU boots them directly).
rm -rf "${WORK:?}/boot" && mkdir -p "$WORK/boot"
cp -L "$ROOTFS"/boot/vmlinuz-* "$ROOTFS"/boot/initrd.img-* "$WORK/boot/"
rm -rf --one-file-system "$ROOTFS"
printf '\nbuilt %s (%s) in %d min %d s\n' "$OUTPUT" "$(du -h --apparent-size "$OUTPUT" | cut -f1)" \
    $((SECONDS / 60)) $((SECONDS % 60))
