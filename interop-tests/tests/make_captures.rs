//! Makes the committed pcap fixtures in interop-tests/captures/ (run by hand, not in CI:
//! `cargo test -p udrbd-interop-tests --release --test make_captures -- --ignored`).
//!
//! tcpdump in the guest records two kernel DRBD 8.4.11 resources connecting over 127.0.0.1
//! and, after `primary --force`, the first seconds of the full resync. The resync rate is
//! held at 64 KiB/s so the capture stays far below 1 MiB while still holding many resync
//! requests and replies.

use udrbd_interop_tests::captures::{self, AUTH_SECRET, BACKING_MIB};
use udrbd_interop_tests::{lab_or_skip, Lab, DRBD_PAIR_SH};

fn capture(lab: &Lab, name: &str, net_options: &str) {
    let script = format!(
        r#"{DRBD_PAIR_SH}
section setup
drbd_pair_setup {BACKING_MIB} '{net_options}' 'resync-rate 64k;' || exit 1
head -c 15M /dev/urandom | dd of=/dev/loop0 bs=1M oflag=direct status=none
A create-md --force r0 >/dev/null 2>&1
tcpdump -i lo -U -s 0 -w /out/capture.pcap 'tcp port 7789 or tcp port 7790' 2>/out/tcpdump.err &
TD=$!
check tcpdump-started wait_for 10 grep -q listening /out/tcpdump.err
section connect
A up r0; B up r1
check connected wait_for 60 drbd_connected
sleep 1
section sync
check primary-force A primary --force r0
check resync-running wait_for 10 grep -q 'cs:Sync' /proc/drbd
sleep 3
kill -INT $TD; wait $TD
cat /proc/drbd
dmesg | grep -E 'drbd' | tail -30
A down r0; B down r1
check capture-small test "$(stat -c %s /out/capture.pcap)" -lt 1000000
"#
    );
    let out = lab.guest().name(name).run(&script).unwrap();
    eprintln!("{}", out.report());
    out.assert_success();
    let dest = captures::path(name);
    std::fs::copy(out.out_file("capture.pcap"), &dest).unwrap();
    eprintln!("wrote {}", dest.display());
}

#[test]
#[ignore = "makes the committed fixtures; run by hand"]
fn make_kernel_captures() {
    let lab = lab_or_skip!();
    capture(lab, captures::CONNECT_RESYNC, "");
    capture(
        lab,
        captures::CONNECT_RESYNC_AUTH_SHA1,
        &format!("cram-hmac-alg sha1; shared-secret \"{AUTH_SECRET}\";"),
    );
}
