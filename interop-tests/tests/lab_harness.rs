//! The lab itself: the guest boots the Debian 6.12 kernel, loads kernel DRBD 8.4 and ublk_drv,
//! sees the host read-only and returns what the script did.

use std::time::Duration;
use udrbd_interop_tests::{lab_or_skip, LabError};

#[test]
fn guest_runs_drbd_84_and_ublk_drv() {
    let lab = lab_or_skip!();
    let marker = format!("/tmp/udrbd-lab-leak-{}", std::process::id());
    let script = format!(
        r#"
check kernel-6.12 sh -c 'uname -r | grep -q "^6\.12\."'
check drbd-8.4 sh -c 'modprobe drbd && grep -q "^version: 8\.4\." /proc/drbd'
check ublk-control sh -c 'modprobe ublk_drv && test -c /dev/ublk-control'
check host-tools sh -c 'command -v drbdadm && command -v fio && command -v tcpdump' 
check out-writable sh -c 'echo from-guest > /out/hello'
# Writes to the shared root land in the guest's tmpfs overlay, never on the host.
check overlay-write touch {marker}
cat /proc/drbd
"#
    );
    let out = lab.guest().name("smoke").run(&script).unwrap();
    eprintln!("{}", out.report());
    out.assert_success();
    out.assert_checks(&[
        "kernel-6.12",
        "drbd-8.4",
        "ublk-control",
        "host-tools",
        "out-writable",
        "overlay-write",
    ]);
    assert_eq!(
        std::fs::read_to_string(out.out_file("hello")).unwrap(),
        "from-guest\n"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "guest wrote through to the host's {marker}"
    );
    assert!(
        out.dmesg.contains("drbd: initialized"),
        "dmesg lacks drbd's start line"
    );
}

#[test]
fn script_status_comes_back() {
    let lab = lab_or_skip!();
    let out = lab
        .guest()
        .name("status")
        .run("check deliberately-false false\necho done")
        .unwrap();
    assert_eq!(out.status, 1, "{}", out.report());
    assert_eq!(out.checks().len(), 1);
    assert!(!out.passed("deliberately-false"));
    assert!(out.log.contains("done"));
}

#[test]
fn hung_guest_is_killed_at_the_time_out() {
    let lab = lab_or_skip!();
    let started = std::time::Instant::now();
    let err = lab
        .guest()
        .name("hang")
        .timeout(Duration::from_secs(12))
        .run("sleep 600")
        .unwrap_err();
    assert!(matches!(err, LabError::Timeout { secs: 12, .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
