//! ublk works end to end: `ublk-memdisk` (ublk-target's in-memory target, the seed of the udrbd
//! frontend) serves /dev/ublkb0 in the guest, and fio verifies what it wrote with crc32c.

use std::path::PathBuf;
use udrbd_interop_tests::{build_workspace_bin, lab_or_skip};

/// The binary under test, built with the test's own target dir. A build failure fails the
/// test in and out of CI: the lab works, the code under test does not.
fn memdisk() -> PathBuf {
    build_workspace_bin("udrbd", "ublk-memdisk")
        .unwrap_or_else(|e| panic!("cannot build ublk-memdisk (libclang-dev installed?): {e}"))
}

#[test]
fn ublk_memdisk_passes_fio_verify() {
    let lab = lab_or_skip!();
    let bin = memdisk();
    let script = format!(
        r#"
MEMDISK={bin}
DEV=/dev/ublkb0
section load
modprobe ublk_drv || exit 1
$MEMDISK --size-mib 256 --id 0 > /scratch/memdisk.log 2>&1 &
PID=$!
check memdisk-ready wait_for 30 grep -q 'ready /dev/ublkb0' /scratch/memdisk.log
cat /scratch/memdisk.log
check block-device wait_for 10 test -b $DEV
check size-256MiB test "$(blockdev --getsize64 $DEV)" = 268435456
check logical-block-512 test "$(blockdev --getss $DEV)" = 512
check physical-block-4096 test "$(blockdev --getpbsz $DEV)" = 4096
check write-cache-advertised grep -q 'write back' /sys/block/ublkb0/queue/write_cache
check fua-advertised grep -qx 1 /sys/block/ublkb0/queue/fua

FIO="fio --filename=$DEV --ioengine=io_uring --direct=1 --verify=crc32c --do_verify=1 \
     --verify_fatal=1 --exitall_on_error --output-format=terse --terse-version=3"
section fio 4k random write + verify
check fio-4k-randwrite-verify $FIO --name=rand4k --rw=randwrite --bs=4k --iodepth=16 --size=32M --offset=0
section fio 1MiB sequential write + verify
check fio-1m-seqwrite-verify $FIO --name=seq1m --rw=write --bs=1M --iodepth=4 --size=128M --offset=64M
section dd round trip
head -c 8M /dev/urandom > /scratch/pattern
dd if=/scratch/pattern of=$DEV bs=1M seek=200 oflag=direct,sync status=none
check dd-readback sh -c "dd if=$DEV bs=1M skip=200 count=8 iflag=direct status=none | cmp - /scratch/pattern"
section flush and fua
# O_DSYNC writes to a device with FUA go down as REQ_FUA; fsync of the device sends FLUSH.
dd if=/scratch/pattern of=$DEV bs=4k count=16 seek=1000 oflag=direct,dsync status=none
python3 -c "import os; fd = os.open('$DEV', os.O_WRONLY); os.fsync(fd)"
section stop
kill -TERM $PID
check memdisk-exits-cleanly wait $PID
check device-removed wait_for 10 sh -c "! test -e $DEV"
cat /scratch/memdisk.log
check fua-writes-arrived sh -c "grep -q 'fua_writes=[1-9]' /scratch/memdisk.log"
check flushes-arrived sh -c "grep -q 'flushes=[1-9]' /scratch/memdisk.log"
"#,
        bin = bin.display()
    );
    let out = lab.guest().name("ublk-memdisk").run(&script).unwrap();
    eprintln!("{}", out.report());
    out.assert_success();
    out.assert_checks(&[
        "memdisk-ready",
        "block-device",
        "size-256MiB",
        "logical-block-512",
        "physical-block-4096",
        "write-cache-advertised",
        "fua-advertised",
        "fio-4k-randwrite-verify",
        "fio-1m-seqwrite-verify",
        "dd-readback",
        "memdisk-exits-cleanly",
        "device-removed",
        "fua-writes-arrived",
        "flushes-arrived",
    ]);
}

/// The engine-facing path: requests leave the queue thread, are served by worker threads and
/// complete asynchronously through the eventfd reaper; the Secondary fail-fast gate fails
/// requests at once and switching back serves the same data again.
#[test]
fn ublk_dispatch_path_verifies_and_fails_fast() {
    let lab = lab_or_skip!();
    let bin = memdisk();
    let script = format!(
        r#"
DEV=/dev/ublkb1
modprobe ublk_drv || exit 1
{bin} --size-mib 128 --id 1 --queues 2 --depth 64 --dispatch 2 > /scratch/memdisk.log 2>&1 &
PID=$!
check memdisk-ready wait_for 30 grep -q 'ready /dev/ublkb1' /scratch/memdisk.log
check block-device wait_for 10 test -b $DEV
FIO="fio --filename=$DEV --ioengine=io_uring --direct=1 --verify=crc32c --do_verify=1 \
     --verify_fatal=1 --exitall_on_error --output-format=terse --terse-version=3"
section fio through the dispatch path
check fio-4k-randwrite-verify $FIO --name=rand4k --rw=randwrite --bs=4k --iodepth=32 --numjobs=2 --size=16M --offset_increment=16M
check fio-1m-seqwrite-verify $FIO --name=seq1m --rw=write --bs=1M --iodepth=4 --size=48M --offset=64M --fsync=4
section fail-fast
head -c 1M /dev/urandom > /scratch/pattern
dd if=/scratch/pattern of=$DEV bs=1M seek=120 oflag=direct status=none
kill -USR1 $PID
check gate-closed wait_for 10 grep -q fail-fast /scratch/memdisk.log
check read-fails sh -c "! dd if=$DEV of=/dev/null bs=4k count=1 skip=100 iflag=direct status=none"
check write-fails sh -c "! dd if=/dev/zero of=$DEV bs=4k count=1 seek=30720 oflag=direct status=none"
kill -USR2 $PID
check gate-open wait_for 10 grep -q serving /scratch/memdisk.log
check data-survives sh -c "dd if=$DEV bs=1M skip=120 count=1 iflag=direct status=none | cmp - /scratch/pattern"
section stop
kill -TERM $PID
check memdisk-exits-cleanly wait $PID
check device-removed wait_for 10 sh -c "! test -e $DEV"
cat /scratch/memdisk.log
check flushes-dispatched sh -c "grep -q 'flushes=[1-9]' /scratch/memdisk.log"
"#,
        bin = bin.display()
    );
    let out = lab.guest().name("ublk-dispatch").run(&script).unwrap();
    eprintln!("{}", out.report());
    out.assert_success();
    out.assert_checks(&[
        "memdisk-ready",
        "fio-4k-randwrite-verify",
        "fio-1m-seqwrite-verify",
        "gate-closed",
        "read-fails",
        "write-fails",
        "gate-open",
        "data-survives",
        "memdisk-exits-cleanly",
        "device-removed",
        "flushes-dispatched",
    ]);
}
