//! ublk works end to end: `ublk-memdisk` (ublk-target's in-memory target, the seed of the udrbd
//! frontend) serves /dev/ublkb0 in the guest, and fio verifies what it wrote with crc32c.

use udrbd_interop_tests::{build_workspace_bin, in_ci, lab_or_skip};

#[test]
fn ublk_memdisk_passes_fio_verify() {
    let lab = lab_or_skip!();
    let bin = match build_workspace_bin("udrbd", "ublk-memdisk") {
        Ok(bin) => bin,
        Err(e) if in_ci() => panic!("cannot build ublk-memdisk: {e}"),
        Err(e) => panic!("cannot build ublk-memdisk (is libclang-dev installed?): {e}"),
    };
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
section stop
kill -TERM $PID
check memdisk-exits-cleanly wait $PID
check device-removed wait_for 10 sh -c "! test -e $DEV"
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
        "fio-4k-randwrite-verify",
        "fio-1m-seqwrite-verify",
        "dd-readback",
        "memdisk-exits-cleanly",
        "device-removed",
    ]);
}
