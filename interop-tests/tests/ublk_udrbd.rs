//! udrbd's block device as users get it (issue 7): two udrbd daemons in one guest over
//! 127.0.0.1 (`guest/ublk-udrbd.sh`), the Primary's volume is `/dev/ublkb<minor>`.
//!
//! `udrbd_pair_ublk_device` (one boot): `primary` exposes /dev/ublkb0 by itself (512/4096
//! blocks, depth 128, one queue per CPU, write-back cache + FUA); fio with crc32c verify for
//! 4k random writes at QD32 and 1 MiB sequential writes; both data areas hash equal. Then
//! `secondary` (and `down`) while mounted is refused with drbdsetup's text and exit code 11;
//! after umount it succeeds and reads and writes on the demoted node's device fail; the peer
//! promoted exposes /dev/ublkb1 and mounts the file system written through ublkb0; both nodes
//! wrote the same udev environment (resource, volume, serial, WWN) for the rule in
//! ublk-target/udev/. SIGKILL of the daemon under fio fails the I/O in flight and removes the device (no
//! USER_RECOVERY, see the frontend docs); `down` on the other node removes its device.

use std::path::PathBuf;
use std::time::Duration;

use udrbd_interop_tests::{build_workspace_bin, lab_or_skip};

const UU_SH: &str = include_str!("../guest/ublk-udrbd.sh");

/// The folder with release builds of udrbd, udrbdadm and udrbdmeta. A build failure fails
/// the test in and out of CI: the lab works, the code under test does not.
fn bin_dir() -> PathBuf {
    let build = |pkg: &str, bin: &str| {
        build_workspace_bin(pkg, bin).unwrap_or_else(|e| panic!("cannot build {bin}: {e}"))
    };
    let udrbd = build("udrbd", "udrbd");
    build("udrbd-tools", "udrbdadm");
    build("udrbd-tools", "udrbdmeta");
    udrbd.parent().expect("target/release").to_path_buf()
}

#[test]
fn udrbd_pair_ublk_device() {
    let lab = lab_or_skip!();
    let bins = bin_dir();
    let body = r#"
section setup
check setup uu_setup 32
check a-up A up r0
check b-up B up r0
check connected wait_for 60 uu_connected
check no-device-while-secondary sh -c '! test -e /dev/ublkb0'
check a-primary A primary --force r0
check device-appears wait_for 30 test -b /dev/ublkb0
check synced wait_for 300 uu_synced
DEV=/dev/ublkb0
SIZE=$(blockdev --getsize64 $DEV)
echo "ublkb0: $SIZE bytes, $(ls /sys/block/ublkb0/mq | wc -l) queues, nr_requests $(cat /sys/block/ublkb0/queue/nr_requests), $(nproc) cpus"
check logical-block-512 test "$(blockdev --getss $DEV)" = 512
check physical-block-4096 test "$(blockdev --getpbsz $DEV)" = 4096
check queue-depth-128 test "$(cat /sys/block/ublkb0/queue/nr_requests)" = 128
check queue-per-cpu test "$(ls /sys/block/ublkb0/mq | wc -l)" = "$(nproc)"
check write-cache-advertised grep -q 'write back' /sys/block/ublkb0/queue/write_cache
check fua-advertised grep -qx 1 /sys/block/ublkb0/queue/fua

section fio
FIO="fio --filename=$DEV --ioengine=io_uring --direct=1 --verify=crc32c --do_verify=1 \
     --verify_fatal=1 --exitall_on_error --output-format=terse --terse-version=3"
check fio-4k-randwrite-qd32-verify $FIO --name=rand4k --rw=randwrite --bs=4k --iodepth=32 --size=8M --offset=0
check fio-1m-seqwrite-verify $FIO --name=seq1m --rw=write --bs=1M --iodepth=4 --size=16M --offset=8M --fsync=4
check data-equal uu_hashes_equal $SIZE

section secondary while mounted
modprobe ext4
mkdir -p /mnt/a /mnt/b
check mkfs mkfs.ext4 -q -F $DEV
check mount mount $DEV /mnt/a
echo hello-from-a > /mnt/a/f
sync
A secondary r0 > /scratch/sec.out 2>&1; echo $? > /scratch/sec.rc
echo "secondary while mounted: exit $(cat /scratch/sec.rc)"; cat /scratch/sec.out
check secondary-refused-exit-11 test "$(cat /scratch/sec.rc)" = 11
check secondary-refused-text grep -qx '0: State change failed: (-12) Device is held open by someone' /scratch/sec.out
check still-primary test "$(A role r0)" = Primary/Secondary
A down r0 > /scratch/down.out 2>&1; echo $? > /scratch/down.rc
echo "down while mounted: exit $(cat /scratch/down.rc)"; cat /scratch/down.out
check down-refused-exit-11 test "$(cat /scratch/down.rc)" = 11
check down-refused-text grep -q '(-12) Device is held open by someone' /scratch/down.out
still_up() { [ "$(A cstate r0)" = Connected ] && test -b /dev/ublkb0 && grep -qx hello-from-a /mnt/a/f; }
check still-up-after-refused-down still_up
check umount umount /mnt/a
check a-secondary A secondary r0
check device-stays test -b $DEV
check read-on-secondary-fails sh -c "! dd if=$DEV of=/dev/null bs=4k count=1 iflag=direct status=none"
check write-on-secondary-fails sh -c "! dd if=/dev/zero of=$DEV bs=4k count=1 seek=10 oflag=direct status=none"

section failover
check b-primary B primary r0
check b-device wait_for 30 test -b /dev/ublkb1
check b-mount mount /dev/ublkb1 /mnt/b
check b-sees-file grep -qx hello-from-a /mnt/b/f
check b-umount umount /mnt/b
check data-equal-after-failover uu_hashes_equal $SIZE
cat /run/udrbd/ublk/ublkb1
check udev-env-resource grep -qx UDRBD_RESOURCE=r0 /run/udrbd/ublk/ublkb1
check udev-env-volume grep -qx UDRBD_VOLUME=0 /run/udrbd/ublk/ublkb1
check udev-env-serial grep -qx UDRBD_SERIAL=udrbd-r0-0 /run/udrbd/ublk/ublkb1
check udev-env-same-wwn-both-nodes test "$(grep WWN /run/udrbd/ublk/ublkb0)" = "$(grep WWN /run/udrbd/ublk/ublkb1)"

section SIGKILL of the Primary daemon during writes
# No USER_RECOVERY: the kernel fails what was in flight and removes the device; nothing
# hangs and nothing is reported written after the daemon is gone.
fio --filename=/dev/ublkb1 --ioengine=io_uring --direct=1 --name=crash --rw=randwrite --bs=4k \
    --iodepth=32 --size=16M --time_based --runtime=120 > /scratch/crash.fio 2>&1 &
FIO_PID=$!
sleep 3
kill -9 "$(cat /run/udrbd-b/r0.pid)"
wait $FIO_PID; echo $? > /scratch/crash.rc
echo "fio after SIGKILL: exit $(cat /scratch/crash.rc)"; tail -5 /scratch/crash.fio
check crash-fails-inflight-io test "$(cat /scratch/crash.rc)" != 0
check crash-removes-device wait_for 30 sh -c '! test -e /dev/ublkb1'
check peer-sees-crash wait_for 30 sh -c 'test "$(A cstate r0)" != Connected'

section down
check a-down A down r0
check a-device-gone wait_for 20 sh -c '! test -e /dev/ublkb0'
check udev-env-removed sh -c '! test -e /run/udrbd/ublk/ublkb0'
uu_finish
"#;
    let script = format!(
        "{UU_SH}\nUU_BIN={}\n# ---- test ----\n{body}\n",
        bins.display()
    );
    let out = lab
        .guest()
        .name("ublk-udrbd")
        .timeout(Duration::from_secs(900))
        .run(&script)
        .unwrap_or_else(|e| panic!("ublk-udrbd: {e}"));
    eprintln!("{}", out.report());
    for log in ["udrbd-a.log", "udrbd-b.log"] {
        let text = std::fs::read_to_string(out.out_file(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "--- {log} (tail):\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
    out.assert_success();
    out.assert_checks(&[
        "setup",
        "a-up",
        "b-up",
        "connected",
        "no-device-while-secondary",
        "a-primary",
        "device-appears",
        "synced",
        "logical-block-512",
        "physical-block-4096",
        "queue-depth-128",
        "queue-per-cpu",
        "write-cache-advertised",
        "fua-advertised",
        "fio-4k-randwrite-qd32-verify",
        "fio-1m-seqwrite-verify",
        "data-equal",
        "mkfs",
        "mount",
        "secondary-refused-exit-11",
        "secondary-refused-text",
        "still-primary",
        "down-refused-exit-11",
        "down-refused-text",
        "still-up-after-refused-down",
        "umount",
        "a-secondary",
        "device-stays",
        "read-on-secondary-fails",
        "write-on-secondary-fails",
        "b-primary",
        "b-device",
        "b-mount",
        "b-sees-file",
        "b-umount",
        "data-equal-after-failover",
        "udev-env-resource",
        "udev-env-volume",
        "udev-env-serial",
        "udev-env-same-wwn-both-nodes",
        "crash-fails-inflight-io",
        "crash-removes-device",
        "peer-sees-crash",
        "a-down",
        "a-device-gone",
        "udev-env-removed",
    ]);
}
