#!/bin/sh
# An SD-card image from a root filesystem tree, without loop devices: a FAT32 firmware
# partition (the tree's /boot/firmware, which the Pi's boot ROM and firmware read) and an
# ext4 root partition, each made as a file and placed behind an MBR partition table.
#   assemble.sh ROOTFS OUTPUT.img IMAGE_MB FIRMWARE_MB ROOT_LABEL FIRMWARE_LABEL
set -eu
rootfs=$1 output=$2 image_mb=$3 firmware_mb=$4 root_label=$5 firmware_label=$6
work=$(mktemp -d "$(dirname "$output")/.assemble.XXXXXX")
trap 'rm -rf "$work"' EXIT
root_mb=$((image_mb - firmware_mb - 1))   # the first MiB holds the partition table

# The firmware partition takes what the kernel hooks put in /boot/firmware; in the root
# filesystem that directory stays an empty mount point.
mkfs.vfat -C -F 32 -n "$firmware_label" "$work/firmware.vfat" $((firmware_mb * 1024)) >/dev/null
if [ -n "$(ls -A "$rootfs/boot/firmware")" ]; then
    mcopy -s -i "$work/firmware.vfat" "$rootfs"/boot/firmware/* ::/
fi
mv "$rootfs/boot/firmware" "$work/firmware.tree"
mkdir "$rootfs/boot/firmware"
mkfs.ext4 -q -L "$root_label" -d "$rootfs" "$work/root.ext4" "${root_mb}M"
rmdir "$rootfs/boot/firmware"
mv "$work/firmware.tree" "$rootfs/boot/firmware"

mkdir -p "$(dirname "$output")"
rm -f "$output"
truncate -s "${image_mb}M" "$output"
sfdisk --quiet "$output" <<TABLE
label: dos
start=1MiB, size=${firmware_mb}MiB, type=c, bootable
start=$((1 + firmware_mb))MiB, type=83
TABLE
dd if="$work/firmware.vfat" of="$output" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$output" bs=1M seek=$((1 + firmware_mb)) conv=notrunc,sparse status=none
