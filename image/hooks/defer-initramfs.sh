#!/bin/sh
# mmdebstrap essential hook: no initramfs while packages install.
#
# Under qemu-user one mkinitramfs takes about 8 minutes, and a plain install runs it twice
# (the kernel's postinst hook, then initramfs-tools' trigger). update-initramfs is diverted
# to a no-op here; customize.sh puts it back and runs it once, with a short module list.
set -eu
root=$1
chroot "$root" dpkg-divert --quiet --local --rename \
    --divert /usr/sbin/update-initramfs.station-deferred --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# deferred by the station image build (image/hooks/customize.sh runs it once)\nexit 0\n' \
    > "$root/usr/sbin/update-initramfs"
chmod 0755 "$root/usr/sbin/update-initramfs"
