# Two udrbd daemons as peers in one guest over 127.0.0.1, from ONE drbd.conf:
#   host a: resource r0, minor 0 (/dev/ublkb0 when Primary) on /dev/loop0, 127.0.0.1:7789
#   host b: resource r0, minor 1 (/dev/ublkb1 when Primary) on /dev/loop1, 127.0.0.1:7790
# Each daemon has its own run dir; udrbdadm picks its `on` section through __DRBD_NODE__.
# Needs UU_BIN (the folder with the host-built udrbd, udrbdadm and udrbdmeta).
#
#   uu_setup SIZE_MIB        ublk_drv + loops + config + create-md on both sides
#   A ARGS... / B ARGS...    udrbdadm as host a / host b
#   uu_synced                both Connected and UpToDate/UpToDate
#   uu_hashes_equal BYTES    the two data areas hash equal over BYTES
#   uu_finish                daemon logs into /out
UU_W=/scratch/uu
UU_CONF=$UU_W/drbd.conf
export UDRBD_LOG=${UDRBD_LOG:-info}

A() { __DRBD_NODE__=a UDRBD_RUN_DIR=/run/udrbd-a "$UU_BIN/udrbdadm" -c "$UU_CONF" "$@"; }
B() { __DRBD_NODE__=b UDRBD_RUN_DIR=/run/udrbd-b "$UU_BIN/udrbdadm" -c "$UU_CONF" "$@"; }

uu_setup() { # size_mib
    mkdir -p "$UU_W" /run/udrbd-a /run/udrbd-b /var/lib/drbd
    modprobe ublk_drv && modprobe loop || return 1
    local i
    for i in 0 1; do
        truncate -s "${1}M" "$UU_W/back$i.img"
        losetup "/dev/loop$i" "$UU_W/back$i.img" || return 1
    done
    cat > "$UU_CONF" <<EOC
global { usage-count no; }
common {
  net  { protocol C; connect-int 2; ping-int 3; }
  disk { c-plan-ahead 0; resync-rate 1000M; }
}
resource r0 {
  on a { device /dev/drbd0 minor 0; disk /dev/loop0; meta-disk internal; address 127.0.0.1:7789; }
  on b { device /dev/drbd1 minor 1; disk /dev/loop1; meta-disk internal; address 127.0.0.1:7790; }
}
EOC
    A create-md --force r0 >/dev/null 2>&1 || { A create-md --force r0; return 1; }
    B create-md --force r0 >/dev/null 2>&1 || { B create-md --force r0; return 1; }
}

uu_connected() { [ "$(A cstate r0)" = Connected ] && [ "$(B cstate r0)" = Connected ]; }
uu_synced() {
    uu_connected && [ "$(A dstate r0)" = UpToDate/UpToDate ] && [ "$(B dstate r0)" = UpToDate/UpToDate ]
}

uu_md5() { # device bytes
    dd if="$1" bs=1M iflag=direct,count_bytes count="$2" status=none | md5sum | cut -d' ' -f1
}
uu_hashes_equal() { # bytes
    local a b
    a=$(uu_md5 /dev/loop0 "$1"); b=$(uu_md5 /dev/loop1 "$1")
    echo "md5 over $1 bytes: a=$a b=$b"
    [ "$a" = "$b" ]
}

uu_finish() {
    cp /run/udrbd-a/r0.log /out/udrbd-a.log 2>/dev/null
    cp /run/udrbd-b/r0.log /out/udrbd-b.log 2>/dev/null
    true
}
