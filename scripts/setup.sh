#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a Debian 12 machine. Idempotent.
set -euo pipefail

packages=(
    drbd-utils        # drbdmeta, drbdadm-84: the oracles our tools are checked against
    tshark            # Wireshark's DRBD dissector: the wire-codec oracle
    libclang-dev      # libublk's -sys crate runs bindgen
    qemu-system-x86   # the VM lab (kernel DRBD 8.4 and ublk_drv in a guest)
    busybox-static kmod cpio xz-utils fio tcpdump
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer for it.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
