# Two kernel DRBD 8.4 resources in one guest, peers of each other over 127.0.0.1:
#   side a: resource r0, minor 0, /dev/loop0, port 7789
#   side b: resource r1, minor 1, /dev/loop1, port 7790
# drbdadm picks its "on <host>" section by hostname and rejects one file holding both
# minors, so each side has its own config and runs under `unshare --uts` with a faked name.
#
#   drbd_pair_setup SIZE_MIB [NET_OPTIONS] [DISK_OPTIONS]   backing files, loops, configs
#   A ARGS... / B ARGS...          drbdadm for side a / side b
#   drbd_connected / drbd_synced   state tests on /proc/drbd
#   drbd_data_md5 LOOP SIZE_MIB    md5 of the data area (everything before internal meta-data)
DRBD_W=/scratch/drbd

drbd_load() {
    # The kernel runs "drbdadm before-resync-source ..." as a helper with the real hostname
    # and /etc/drbd.conf; that fails here and makes DRBD drop the connection when a sync
    # starts, so the helper is /bin/true.
    modprobe drbd usermode_helper=/bin/true && modprobe loop
}

drbd_pair_conf() { # file resource net_options disk_options
    cat > "$1" <<EOC
global { usage-count no; }
common {
  net  { protocol C; $3 }
  disk { c-plan-ahead 0; $4 }
}
resource $2 {
  on a { device /dev/drbd0 minor 0; disk /dev/loop0; meta-disk internal; address 127.0.0.1:7789; }
  on b { device /dev/drbd1 minor 1; disk /dev/loop1; meta-disk internal; address 127.0.0.1:7790; }
}
EOC
}

drbd_pair_setup() { # size_mib [net_options] [disk_options]
    local size=$1 net=${2:-} disk=${3:-resync-rate 1000M;}
    mkdir -p "$DRBD_W" /var/lib/drbd /run/drbd
    drbd_load || return 1
    local i
    for i in 0 1; do
        truncate -s "${size}M" "$DRBD_W/back$i.img"
        losetup "/dev/loop$i" "$DRBD_W/back$i.img" || return 1
    done
    drbd_pair_conf "$DRBD_W/a.conf" r0 "$net" "$disk"
    drbd_pair_conf "$DRBD_W/b.conf" r1 "$net" "$disk"
    A create-md --force r0 >/dev/null 2>&1 && B create-md --force r1 >/dev/null 2>&1
}

A() { unshare --uts sh -c "hostname a; drbdadm -c $DRBD_W/a.conf $*"; }
B() { unshare --uts sh -c "hostname b; drbdadm -c $DRBD_W/b.conf $*"; }

drbd_connected() { [ "$(grep -c 'cs:Connected' /proc/drbd)" -ge 2 ]; }
drbd_synced() { [ "$(grep -c 'cs:Connected.*ds:UpToDate/UpToDate' /proc/drbd)" -ge 2 ]; }

# DRBD's usable size, from the kernel's view of the device (sectors -> bytes).
drbd_size_bytes() { echo $(( $(cat /sys/block/drbd$1/size) * 512 )); }

# Direct I/O: DRBD writes the backing device with bios, which a buffered read of the block
# device's page cache (filled by an earlier read) would not see.
drbd_data_md5() { # device bytes
    dd if="$1" bs=1M iflag=direct,count_bytes count="$2" status=none | md5sum | cut -d' ' -f1
}
