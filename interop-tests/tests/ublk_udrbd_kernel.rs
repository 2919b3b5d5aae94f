//! udrbd's block device with a kernel DRBD 8.4 Secondary (issue 7): the kernel resource and the
//! udrbd daemon are peers in one guest over 127.0.0.1 (`guest/udrbd-kernel.sh`: kernel is host
//! `a`, minor 0; udrbd is host `b`, minor 1). `primary` on udrbd exposes /dev/ublkb1 by itself;
//! fio with crc32c verify (4k random writes at QD32, 1 MiB sequential writes) passes on it and
//! the kernel's data area equals udrbd's afterwards (protocol C through ublk).

use std::path::PathBuf;
use std::time::Duration;

use udrbd_interop_tests::{build_workspace_bin, lab_or_skip, DRBD_PAIR_SH};

const UK_SH: &str = include_str!("../guest/udrbd-kernel.sh");

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
fn udrbd_ublk_primary_kernel_secondary_fio_verify() {
    let lab = lab_or_skip!();
    let bins = bin_dir();
    let body = r#"
section setup
modprobe ublk_drv || exit 1
check setup uk_setup 32
check create-md uk_create_md
check kernel-up K up r0
check udrbd-up U up r0
check connected wait_for 60 uk_connected
check udrbd-primary U primary --force r0
check device-appears wait_for 30 test -b /dev/ublkb1
check synced wait_for 300 uk_synced
DEV=/dev/ublkb1
SIZE=$(blockdev --getsize64 $DEV)
check size-is-drbd-size test "$SIZE" = $(( $(uk_size) / 4096 * 4096 ))

section fio
FIO="fio --filename=$DEV --ioengine=io_uring --direct=1 --verify=crc32c --do_verify=1 \
     --verify_fatal=1 --exitall_on_error --output-format=terse --terse-version=3"
check fio-4k-randwrite-qd32-verify $FIO --name=rand4k --rw=randwrite --bs=4k --iodepth=32 --size=8M --offset=0
check fio-1m-seqwrite-verify $FIO --name=seq1m --rw=write --bs=1M --iodepth=4 --size=16M --offset=8M --fsync=4
check data-equal uk_hashes_equal
check still-synced uk_synced

section down
check udrbd-down U down r0
check device-gone wait_for 20 sh -c '! test -e /dev/ublkb1'
check kernel-down K down r0
uk_finish
"#;
    let script = format!(
        "{DRBD_PAIR_SH}\n{UK_SH}\nUK_BIN={}\n# ---- test ----\n{body}\n",
        bins.display()
    );
    let out = lab
        .guest()
        .name("ublk-udrbd-kernel")
        .timeout(Duration::from_secs(900))
        .run(&script)
        .unwrap_or_else(|e| panic!("ublk-udrbd-kernel: {e}"));
    eprintln!("{}", out.report());
    let log = std::fs::read_to_string(out.out_file("udrbd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    eprintln!(
        "--- udrbd.log (tail):\n{}",
        lines[lines.len().saturating_sub(40)..].join("\n")
    );
    out.assert_success();
    out.assert_checks(&[
        "setup",
        "create-md",
        "kernel-up",
        "udrbd-up",
        "connected",
        "udrbd-primary",
        "device-appears",
        "synced",
        "size-is-drbd-size",
        "fio-4k-randwrite-qd32-verify",
        "fio-1m-seqwrite-verify",
        "data-equal",
        "still-synced",
        "udrbd-down",
        "device-gone",
        "kernel-down",
    ]);
}
