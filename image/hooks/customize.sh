#!/bin/sh
# mmdebstrap customize hook: turn the Debian root filesystem into the station appliance.
#   customize.sh ROOTFS WHEEL PIP_CACHE ROOT_LABEL FIRMWARE_LABEL
set -eu
root=$1 wheel=$2 pip_cache=$3 root_label=$4 firmware_label=$5
image=$(cd "$(dirname "$0")/.." && pwd)
repo=$(dirname "$image")

# Name lookups in the chroot go through the build host's resolver (systemd-resolved's
# package has already pointed /etc/resolv.conf at a stub that is not running here);
# image/build.sh points it back afterwards.
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

# HTTPS from the build machine may go through a local certificate authority that the host
# trusts (its pip too): the chroot's pip needs it while it downloads, the image must not keep it.
added_ca=""
for cert in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$cert" ] || continue
    cp "$cert" "$root/usr/local/share/ca-certificates/"
    added_ca="$added_ca $(basename "$cert")"
done
[ -z "$added_ca" ] || chroot "$root" update-ca-certificates >/dev/null

echo "customize: the station (image/install-station.sh, in the chroot)"
mkdir -p "$root/tmp/station-src/image" "$root/var/cache/station-pip"
cp "$image/install-station.sh" "$root/tmp/station-src/image/"
cp "$repo/README.md" "$wheel" "$root/tmp/station-src/"
cp -a "$pip_cache/." "$root/var/cache/station-pip/"
# The host's PIP_FIND_LINKS and the like name the host's files; the chroot has its own.
chroot "$root" env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
    PIP_CACHE_DIR=/var/cache/station-pip STATION_WHEELHOUSE=/var/cache/station-pip/wheelhouse \
    /tmp/station-src/image/install-station.sh "/tmp/station-src/$(basename "$wheel")"
cp -a "$root/var/cache/station-pip/." "$pip_cache/"
rm -rf "$root/var/cache/station-pip" "$root/tmp/station-src"

echo "customize: appliance files"
cp -a "$image/rootfs/." "$root/"
mkdir -p "$root/boot/firmware" "$root/var/lib/station"
cp "$image/firmware/station.toml" "$root/boot/firmware/station.toml"
cat > "$root/etc/fstab" <<FSTAB
# Root and firmware partitions by label (image/assemble.sh); the root grows to the card
# on first boot (station-firstboot.service).
LABEL=$root_label      /               ext4  rw,noatime,errors=remount-ro  0 1
LABEL=$firmware_label  /boot/firmware  vfat  rw,noatime,umask=0022,fmask=0133  0 2
# The IPSW cache on a USB SSD when one labelled station-ipsw is plugged in (an SD card
# reads at about 45 MB/s, the whole USB 2.0 budget); without it, the cache is on the card.
# nofail: the boot never waits for it; udev may take a while to name a USB disk by label.
LABEL=station-ipsw     /var/lib/station/ipsw  ext4  rw,noatime,nofail,x-systemd.device-timeout=45s  0 2
FSTAB
echo station > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tstation\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"
# systemd makes a new machine id on first boot (and runs its first-boot units).
echo uninitialized > "$root/etc/machine-id"
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service station-firstboot.service station-ipsw-owner.service >/dev/null
# Appliance: no password logins; the root account stays locked.
chroot "$root" passwd --lock root >/dev/null

if [ -f "$root/etc/default/raspi-firmware" ]; then
    # The root by label in cmdline.txt: the same card boots whatever the kernel calls it.
    sed -i "s|^#\?ROOTPART=.*|ROOTPART=LABEL=$root_label|" "$root/etc/default/raspi-firmware"
    grep -q "^ROOTPART=LABEL=$root_label" "$root/etc/default/raspi-firmware" ||
        echo "ROOTPART=LABEL=$root_label" >> "$root/etc/default/raspi-firmware"
fi

echo "customize: one initramfs"
rm "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.station-deferred --remove /usr/sbin/update-initramfs
kernel=$(basename "$(ls -d "$root"/lib/modules/*)")
arch=$(chroot "$root" dpkg --print-architecture)
cp "$image/initramfs/modules-$arch" "$root/etc/initramfs-tools/modules"
# Every module named in the list must exist for this kernel: a typo is a card that cannot
# find its root, so it stops the build here.
grep -v '^#' "$root/etc/initramfs-tools/modules" | while read -r module; do
    [ -z "$module" ] || chroot "$root" modinfo -k "$kernel" "$module" >/dev/null ||
        { echo "customize: no module $module in $kernel" >&2; exit 1; }
done
chroot "$root" update-initramfs -c -k "$kernel"

[ -z "$added_ca" ] || {
    for name in $added_ca; do rm -f "$root/usr/local/share/ca-certificates/$name"; done
    chroot "$root" update-ca-certificates --fresh >/dev/null
}
