# Kernel DRBD 8.4 and udrbd as peers in one guest, over 127.0.0.1, from ONE drbd.conf:
#   host a = kernel DRBD: resource r0, /dev/drbd0 (minor 0) on /dev/loop0, 127.0.0.1:7789
#   host b = udrbd:       resource r0, minor 1 (no kernel device) on /dev/loop1, 127.0.0.1:7790
# drbdadm picks "on a" through a faked hostname (unshare --uts); udrbdadm picks "on b" through
# __DRBD_NODE__. Needs DRBD_PAIR_SH (drbd_load, drbd_data_md5) and UK_BIN (the folder with the
# host-built udrbd, udrbdadm and udrbdmeta).
#
#   uk_setup SIZE_MIB [NET_OPTIONS] [DISK_OPTIONS]   loops, config, create-md on both sides
#   K ARGS... / U ARGS... / UIO ARGS...  drbdadm (kernel) / udrbdadm / `udrbd` write-read client
#   uk_capture_start NAME SNAPLEN / uk_capture_stop    tcpdump on lo into /out/NAME.pcap
#   uk_status NAME         both `status --verbose --statistics` texts into /out/NAME.{kernel,udrbd}
#   uk_hashes_equal        the two data areas (size from the kernel) hash equal
#   uk_finish              daemon log, /proc/drbd into /out
UK_W=/scratch/uk
UK_CONF=$UK_W/drbd.conf
export UDRBD_RUN_DIR=/run/udrbd
export UDRBD_LOG=${UDRBD_LOG:-info}
UK_TCPDUMP=

uk_setup() { # size_mib [net] [disk]
    local size=$1 net=${2:-} disk=${3:-resync-rate 1000M;}
    mkdir -p "$UK_W" /var/lib/drbd /run/drbd "$UDRBD_RUN_DIR"
    drbd_load || return 1
    local i
    for i in 0 1; do
        truncate -s "${size}M" "$UK_W/back$i.img"
        losetup "/dev/loop$i" "$UK_W/back$i.img" || return 1
    done
    cat > "$UK_CONF" <<EOC
global { usage-count no; }
common {
  net  { protocol C; connect-int 2; ping-int 3; $net }
  disk { c-plan-ahead 0; $disk }
}
resource r0 {
  on a { device /dev/drbd0 minor 0; disk /dev/loop0; meta-disk internal; address 127.0.0.1:7789; }
  on b { device /dev/drbd1 minor 1; disk /dev/loop1; meta-disk internal; address 127.0.0.1:7790; }
}
EOC
}

uk_create_md() {
    K create-md --force r0 >/dev/null 2>&1 || { echo "kernel create-md failed"; K create-md --force r0; return 1; }
    U create-md --force r0 >/dev/null 2>&1 || { echo "udrbd create-md failed"; U create-md --force r0; return 1; }
}

K() { unshare --uts sh -c "hostname a; drbdadm -c $UK_CONF $*"; }
U() { __DRBD_NODE__=b "$UK_BIN/udrbdadm" -c "$UK_CONF" "$@"; }
UIO() { "$UK_BIN/udrbd" --resource r0 --run-dir "$UDRBD_RUN_DIR" "$@"; }

uk_capture_start() { # name snaplen
    tcpdump -i lo -s "$2" -U -w "/out/$1.pcap" 'tcp port 7789 or tcp port 7790' \
        > "/out/$1.tcpdump.log" 2>&1 &
    UK_TCPDUMP=$!
    wait_for 10 grep -q 'listening on' "/out/$1.tcpdump.log"
}
uk_capture_stop() {
    [ -n "$UK_TCPDUMP" ] || return 0
    sleep 0.5
    kill -INT "$UK_TCPDUMP"; wait "$UK_TCPDUMP"; UK_TCPDUMP=
}

uk_cstates() { echo "kernel=$(K cstate r0) udrbd=$(U cstate r0)"; }
uk_connected() { [ "$(K cstate r0)" = Connected ] && [ "$(U cstate r0)" = Connected ]; }
uk_synced() {
    uk_connected && [ "$(K dstate r0)" = UpToDate/UpToDate ] && [ "$(U dstate r0)" = UpToDate/UpToDate ]
}

uk_status() { # name
    # drbdadm passes options after "--" to drbdsetup; udrbdadm must take the same line.
    K -- --verbose --statistics status r0 > "/out/$1.kernel" 2>&1
    U -- --verbose --statistics status r0 > "/out/$1.udrbd" 2>&1
    # Diagnostic only: udrbdadm's own spelling of the same query.
    U status r0 --verbose --statistics > "/out/$1.udrbd-alt" 2>&1
    K status r0 > "/out/$1.kernel-plain" 2>&1
    U status r0 > "/out/$1.udrbd-plain" 2>&1
    echo "--- status $1: kernel"; cat "/out/$1.kernel"; echo "--- udrbd"; cat "/out/$1.udrbd" "/out/$1.udrbd-alt"
}

# The data area: the kernel's usable size (its sysfs size of drbd0, in bytes).
uk_size() { echo $(( $(cat /sys/block/drbd0/size) * 512 )); }
uk_hashes_equal() {
    local size; size=$(uk_size)
    local a b
    a=$(drbd_data_md5 /dev/loop0 "$size"); b=$(drbd_data_md5 /dev/loop1 "$size")
    echo "md5 over $size bytes: kernel=$a udrbd=$b"
    [ "$a" = "$b" ]
}

# "Began resync as SyncSource (will sync N KB ...": the last such N in the kernel log.
k_resync_kb() { # SyncSource|SyncTarget
    dmesg | sed -n "s/.*drbd r0.*Began resync as $1 (will sync \([0-9]*\) KB.*/\1/p" | tail -1
}
# The same line from udrbd's log.
u_resync_kb() {
    sed -n "s/.*Began resync as $1 (will sync \([0-9]*\) KB.*/\1/p" "$UDRBD_RUN_DIR/r0.log" | tail -1
}

uk_finish() {
    uk_capture_stop
    cat /proc/drbd > /out/proc-drbd 2>&1
    cp "$UDRBD_RUN_DIR/r0.log" /out/udrbd.log 2>/dev/null
    dmesg | grep -i drbd > /out/dmesg-drbd 2>&1
    true
}
