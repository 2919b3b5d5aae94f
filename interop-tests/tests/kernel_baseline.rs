//! Baseline, kernel DRBD to kernel DRBD: two 8.4.11 resources in one guest over 127.0.0.1
//! connect, `primary --force` on one runs a full sync of 64 MiB, both end UpToDate, and the
//! two backing devices' data areas hash equal.

use udrbd_interop_tests::{lab_or_skip, DRBD_PAIR_SH};

#[test]
fn kernel_pair_full_sync_64mib() {
    let lab = lab_or_skip!();
    let script = format!(
        r#"{DRBD_PAIR_SH}
section setup
drbd_pair_setup 64 || exit 1
# Side a's data differs from side b's (zeroes) before the sync, so equal hashes after it
# mean the sync copied the data. The backing files are written before `up`; create-md only
# touches the meta-data at the end of the device.
head -c 60M /dev/urandom | dd of=/dev/loop0 bs=1M oflag=direct status=none
A create-md --force r0 >/dev/null 2>&1
section connect
check up-a A up r0
check up-b B up r1
check connected wait_for 60 drbd_connected
cat /proc/drbd
check both-inconsistent grep -q 'ds:Inconsistent/Inconsistent' /proc/drbd
SIZE=$(drbd_size_bytes 0)
echo "data area: $SIZE bytes"
check size-at-least-63MiB test "$SIZE" -ge $((63 << 20))
check data-differs-before sh -c "test $(drbd_data_md5 /dev/loop0 $SIZE) != $(drbd_data_md5 /dev/loop1 $SIZE)"
section sync
check primary-force A primary --force r0
check synced wait_for 180 drbd_synced
cat /proc/drbd
check role-a sh -c "test \"$(A role r0)\" = Primary/Secondary"
check dstate-a sh -c "test \"$(A dstate r0)\" = UpToDate/UpToDate"
check dstate-b sh -c "test \"$(B dstate r1)\" = UpToDate/UpToDate"
dmesg | grep -E 'Handshake successful|Began resync|Resync done' 
# "Began resync as SyncSource (will sync N KB ...)": the whole data area was resynced.
KB=$(dmesg | sed -n 's/.*drbd r0.*Began resync as SyncSource (will sync \([0-9]*\) KB.*/\1/p' | head -1)
echo "resynced: ${{KB:-?}} KB"
check full-sync test "${{KB:-0}}" -ge $((SIZE / 1024 - 4))
check resync-done sh -c "dmesg | grep -q 'drbd r0/0 drbd0: Resync done'"
A0=$(drbd_data_md5 /dev/loop0 $SIZE); B0=$(drbd_data_md5 /dev/loop1 $SIZE)
echo "md5 a=$A0 b=$B0"
check data-equal test "$A0" = "$B0"
section teardown
A down r0; B down r1
"#
    );
    let out = lab.guest().name("kernel-baseline").run(&script).unwrap();
    eprintln!("{}", out.report());
    out.assert_success();
    out.assert_checks(&[
        "connected",
        "both-inconsistent",
        "size-at-least-63MiB",
        "data-differs-before",
        "primary-force",
        "synced",
        "role-a",
        "dstate-a",
        "dstate-b",
        "full-sync",
        "resync-done",
        "data-equal",
    ]);
}
