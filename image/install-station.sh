#!/bin/sh
# Install the station as an appliance service on a Debian-based Raspberry Pi system:
# the SD-card image runs this inside its arm64 chroot, and a Raspberry Pi 5 owner runs it
# on Raspberry Pi OS Lite (64-bit), whose kernel is the one with the Pi 5's USB (RP1):
#
#     sudo image/install-station.sh            # from a clone of the repository
#     sudo image/install-station.sh station-0.1.0-py3-none-any.whl
#
# What it does (each step can run again; nothing an operator edited is overwritten):
# packages (usbmuxd, libusb, i2c-tools, python3-venv), the `station` system user in the
# groups that open phones, the display and the buttons, the station in a venv under
# /opt/station, the default config in /etc/station, the udev rules, the systemd units
# (station, and usbmuxd kept running), I2C switched on, and the services enabled.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PREFIX=/opt/station
VENV=$PREFIX/.venv
SOURCE=${1:-$REPO}
# Compilers for pymobiledevice3's one C extension without an aarch64 wheel (sslpsk-pmd3);
# removed again afterwards unless they were already installed.
BUILD_PACKAGES="gcc libc6-dev python3-dev libssl-dev"

say() { printf 'install-station: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { say "run me as root (sudo $0)"; exit 1; }
[ -e "$SOURCE" ] || { say "$SOURCE: no such wheel or directory"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
added_build_packages=""
for package in $BUILD_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
        added_build_packages="$added_build_packages $package"
done
say "packages"
# shellcheck disable=SC2086 # a list of package names
apt-get install -y --no-install-recommends python3-venv usbmuxd libusb-1.0-0 i2c-tools \
    ca-certificates $BUILD_PACKAGES

# Groups: plugdev (the phones, udev rules below), i2c (the OLED; i2c-tools creates it),
# gpio (the buttons and LEDs through /dev/gpiochip*; Raspberry Pi OS has it, Debian not).
getent group gpio >/dev/null || groupadd --system gpio
getent group i2c >/dev/null || groupadd --system i2c
getent passwd station >/dev/null ||
    useradd --system --home-dir /var/lib/station --no-create-home --shell /usr/sbin/nologin \
        --comment "iPhone restore station" station
usermod --append --groups plugdev,i2c,gpio station

say "the station in $VENV"
# A venv of its own: the station's pinned libraries never meet the system's Python packages.
# lgpio (gpiozero's pin library on the kernel's gpiochip interface) comes from PyPI as a
# manylinux aarch64 wheel: Debian bookworm has no python3-lgpio package.
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
if [ -n "${STATION_WHEELHOUSE:-}" ]; then
    # Downloads kept between runs (the image build's cache; pip's own HTTP cache is not
    # enough where an index answers "no-store"): install from them alone when they are
    # complete; else build wheels of what is missing there (sslpsk-pmd3 compiled once), and
    # install from them. The station itself always comes from SOURCE.
    mkdir -p "$STATION_WHEELHOUSE"
    if ! "$VENV/bin/pip" install --quiet --no-index --find-links "$STATION_WHEELHOUSE" \
            "${SOURCE}[pi]" 2>/dev/null; then
        say "fetching what $STATION_WHEELHOUSE lacks"
        "$VENV/bin/pip" wheel --quiet --wheel-dir "$STATION_WHEELHOUSE" \
            --find-links "$STATION_WHEELHOUSE" "${SOURCE}[pi]"
        rm -f "$STATION_WHEELHOUSE"/station-[0-9]*
        "$VENV/bin/pip" install --quiet --no-index --find-links "$STATION_WHEELHOUSE" "${SOURCE}[pi]"
    fi
else
    "$VENV/bin/pip" install --quiet "${SOURCE}[pi]"
fi
[ -f "$REPO/README.md" ] && install -m 0644 "$REPO/README.md" "$PREFIX/README.md"

if [ -n "$added_build_packages" ]; then
    say "removing the compilers again:$added_build_packages"
    # shellcheck disable=SC2086 # a list of package names
    apt-get purge -y --auto-remove $added_build_packages
fi

say "config, udev rules, units"
"$VENV/bin/station" install-udev
"$VENV/bin/station" install-service
ln -sf "$VENV/bin/station" /usr/local/bin/station
systemctl enable usbmuxd.service station.service

say "I2C"
# The OLED's bus. Raspberry Pi OS: raspi-config. Debian's raspi-firmware: its config.txt is
# rewritten from templates by its kernel hooks, with this file appended.
if command -v raspi-config >/dev/null; then
    raspi-config nonint do_i2c 0
elif [ -d /etc/default ] && dpkg-query -W raspi-firmware >/dev/null 2>&1; then
    grep -qs '^dtparam=i2c_arm=on' /etc/default/raspi-firmware-custom ||
        echo 'dtparam=i2c_arm=on' >> /etc/default/raspi-firmware-custom
else
    say "no raspi-config or raspi-firmware: switch I2C on in your config.txt (dtparam=i2c_arm=on)"
fi
say "done: the station starts at boot (systemctl start station to start it now)"
