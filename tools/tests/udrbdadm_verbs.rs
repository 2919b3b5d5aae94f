//! udrbdadm's verbs end to end: two udrbd daemons on 127.0.0.1 driven from one drbd.conf, the
//! host name overridden per node with `__DRBD_NODE__` (as drbdadm allows), each node with its
//! own run directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use udrbd::control::{Client, Request, Response};

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udrbdadm"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn daemon_bin() -> PathBuf {
    let p = bin_dir().join("udrbd");
    assert!(
        p.exists(),
        "{} is missing: these tests run the daemon binary; `cargo test --workspace` builds it (or `cargo build -p udrbd`)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    name: &'static str,
    conf: PathBuf,
    run_dir: PathBuf,
    disk: PathBuf,
}

impl Node {
    fn adm(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_udrbdadm"));
        cmd.arg("-c").arg(&self.conf).args(args);
        cmd.env("__DRBD_NODE__", self.name)
            .env("UDRBD_RUN_DIR", &self.run_dir)
            .env("UDRBD_BIN", daemon_bin())
            .env("UDRBDMETA_BIN", bin_dir().join("udrbdmeta-absent"))
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// Runs a verb that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(
            out.status.success(),
            "{} {args:?}: {}\nstdout: {}\nstderr: {}\nlog:\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Both nodes' daemon logs (they share the test directory), for failure messages.
    fn log(&self) -> String {
        let dir = self.run_dir.parent().unwrap();
        let mut out = String::new();
        for n in ["alice", "bob"] {
            let s =
                std::fs::read_to_string(dir.join(format!("{n}-run/r0.log"))).unwrap_or_default();
            let tail: String = s
                .chars()
                .rev()
                .take(6000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push_str(&format!("--- {n} ---\n{tail}\n"));
        }
        out
    }

    fn client(&self) -> Client {
        Client::connect(&udrbd::control::socket_path(&self.run_dir, "r0")).unwrap()
    }

    fn wait_for(&self, verb: &str, want: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = String::from_utf8(self.adm(&[verb, "r0"]).stdout).unwrap();
            if got == want {
                return;
            }
            if Instant::now() >= deadline {
                let ev = String::from_utf8_lossy(
                    &self.adm(&["events2", "--now", "--statistics", "r0"]).stdout,
                )
                .into_owned();
                panic!(
                    "{}: {verb} is {got:?}, want {want:?}\nevents2:\n{ev}\nlog:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn data_hash(&self, data_bytes: u64) -> String {
        let bytes = std::fs::read(&self.disk).unwrap();
        format!("{:x}", Sha256::digest(&bytes[..data_bytes as usize]))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Kill the daemon whatever state the test left it in.
        if let Ok(pid) = std::fs::read_to_string(self.run_dir.join("r0.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on a pid we started; at worst the process is already gone.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

const DISK_BYTES: u64 = 64 << 20;

fn setup(dir: &Path, extra_net: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let conf = dir.join("drbd.conf");
    let disk = |n: &str| dir.join(format!("{n}.img"));
    std::fs::write(
        &conf,
        format!(
            "resource r0 {{\n  net {{ protocol C; connect-int 2; ping-int 3; timeout 15; {extra_net} }}\n  disk {{ resync-rate 100M; }}\n  on alice {{\n    volume 0 {{ device minor 1; disk {}; meta-disk internal; }}\n    address 127.0.0.1:{pa};\n  }}\n  on bob {{\n    volume 0 {{ device minor 1; disk {}; meta-disk internal; }}\n    address 127.0.0.1:{pb};\n  }}\n}}\n",
            disk("alice").display(),
            disk("bob").display()
        ),
    )
    .unwrap();
    let node = |name: &'static str| {
        let f = std::fs::File::create(disk(name)).unwrap();
        f.set_len(DISK_BYTES).unwrap();
        Node {
            name,
            conf: conf.clone(),
            run_dir: dir.join(format!("{name}-run")),
            disk: disk(name),
        }
    };
    (node("alice"), node("bob"))
}

fn block(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn create_md_up_primary_force_full_sync_and_replication() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path(), "");
    for n in [&a, &b] {
        let out = n.ok(&["create-md", "r0"]);
        assert!(
            out.contains("New drbd meta data block successfully created."),
            "{out}"
        );
    }
    a.ok(&["up", "r0"]);
    b.ok(&["up", "r0"]);
    a.wait_for("cstate", "Connected\n", 30);
    assert_eq!(a.ok(&["dstate", "r0"]), "Inconsistent/Inconsistent\n");
    a.ok(&["primary", "--force", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    b.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    assert_eq!(a.ok(&["role", "r0"]), "Primary/Secondary\n");
    assert_eq!(b.ok(&["role", "r0"]), "Secondary/Primary\n");
    assert_eq!(
        a.ok(&["status", "r0"]),
        "r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:Established peer-disk:UpToDate\n\n"
    );
    assert_eq!(
        b.ok(&["events2", "--now", "r0"]),
        "exists resource name:r0 role:Secondary suspended:no\n\
         exists device name:r0 volume:0 minor:1 disk:UpToDate\n\
         exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Primary\n\
         exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate resync-suspended:no\n\
         exists -\n"
    );

    // Writes through the daemon's API (the control socket's Write) replicate.
    let mut c = a.client();
    for i in 0..100u64 {
        let r = c.call(Request::Write {
            volume: 0,
            sector: i * 977 % 100_000 / 8 * 8,
            data_hex: udrbd::control::to_hex(&block(i)),
        });
        assert_eq!(r.unwrap(), Response::Ok);
    }
    let size_kib = match c.call(Request::Status).unwrap() {
        Response::Status(s) => s.volumes[0].size_kib,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.data_hash(size_kib * 1024), b.data_hash(size_kib * 1024));

    // A refused state change: bob cannot become Primary while alice is (no allow-two-primaries).
    let out = b.adm(&["primary", "r0"]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("State change failed"));

    // disconnect / connect / adjust
    b.ok(&["disconnect", "r0"]);
    assert_eq!(b.ok(&["cstate", "r0"]), "StandAlone\n");
    b.ok(&["adjust", "r0"]);
    b.wait_for("cstate", "Connected\n", 30);
    // adjust with a changed net option on the connected Secondary: applied, connected again.
    let conf = std::fs::read_to_string(&b.conf).unwrap();
    std::fs::write(
        &b.conf,
        conf.replace("timeout 15;", "timeout 15; max-buffers 4000;"),
    )
    .unwrap();
    b.ok(&["adjust", "r0"]);
    b.wait_for("cstate", "Connected\n", 30);
    assert!(b
        .log()
        .contains("net options changed; reconnecting with them"));
    // The Primary refuses to change them while connected, with drbdsetup's exit code.
    let out = a.adm(&["adjust", "r0"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    a.ok(&["down", "r0"]);
    b.ok(&["down", "r0"]);
    let out = a.adm(&["status", "r0"]);
    assert_eq!(out.status.code(), Some(10));
    assert_eq!(a.ok(&["cstate", "r0"]), "Unconfigured\n");
}

#[test]
fn config_typo_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = setup(dir.path(), "protocl C;");
    let out = a.adm(&["up", "r0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{err}");
    // The net line is line 2; the typo starts after "  net { protocol C; connect-int 2; ping-int 3; timeout 15; ".
    let want = format!("{}:2:", a.conf.display());
    assert!(err.contains(&want), "want {want} in: {err}");
    assert!(err.contains("protocl"), "{err}");
    // Nothing was started.
    assert!(!a.run_dir.join("r0.sock").exists());
}

#[test]
fn verbs_on_a_resource_without_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = setup(dir.path(), "");
    assert_eq!(a.ok(&["role", "r0"]), "Unconfigured\n");
    assert_eq!(a.ok(&["cstate", "r0"]), "Unconfigured\n");
    let out = a.adm(&["primary", "r0"]);
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // down of something that is not up is fine, as with drbdadm.
    a.ok(&["down", "r0"]);
    // Dry run prints the steps and starts nothing.
    let out = a.ok(&["-d", "up", "r0"]);
    assert!(out.contains("drbdsetup attach 1"), "{out}");
    assert!(
        out.contains("drbdsetup connect r0 ipv4:127.0.0.1:"),
        "{out}"
    );
    assert!(!a.run_dir.join("r0.sock").exists());
}

fn status_json(n: &Node) -> udrbd::status::StatusSnapshot {
    match n.client().call(Request::Status).unwrap() {
        Response::Status(s) => *s,
        other => panic!("{other:?}"),
    }
}

/// Issue 6 item 2 through udrbdadm: kill -9 the secondary's daemon, write 1,000 scattered 4 KiB
/// blocks, `up` it again: the resync moves exactly the marked blocks.
#[test]
fn secondary_crash_resyncs_only_the_marked_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path(), "");
    for n in [&a, &b] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    a.wait_for("cstate", "Connected\n", 30);
    a.ok(&["primary", "--force", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    let pid: i32 = std::fs::read_to_string(b.run_dir.join("r0.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    a.wait_for("cstate", "WFConnection\n", 30);

    let mut c = a.client();
    let blocks = status_json(&a).volumes[0].size_kib / 4;
    for i in 0..1000u64 {
        let blk = (i * 104_729 + 17) % blocks;
        let r = c.call(Request::Write {
            volume: 0,
            sector: blk * 8,
            data_hex: udrbd::control::to_hex(&block(i)),
        });
        assert_eq!(r.unwrap(), Response::Ok);
    }
    let ev = a.ok(&["events2", "--now", "--statistics", "r0"]);
    assert!(ev.contains(" out-of-sync:4000 "), "{ev}");

    b.ok(&["up", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    b.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    let sb = status_json(&b);
    assert_eq!(sb.volumes[0].stats.resynced_kib, 4000, "{sb:?}");
    assert_eq!(status_json(&a).volumes[0].out_of_sync_kib, 0);
    let bytes = sb.volumes[0].size_kib * 1024;
    assert_eq!(a.data_hash(bytes), b.data_hash(bytes));
    a.ok(&["down", "r0"]);
    b.ok(&["down", "r0"]);
}

/// The remaining state verbs against a connected pair.
#[test]
fn secondary_invalidate_remote_invalidate_detach_attach() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path(), "");
    for n in [&a, &b] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    a.ok(&["wait-connect", "r0"]);
    a.ok(&["primary", "--force", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    a.ok(&["secondary", "r0"]);
    assert_eq!(a.ok(&["role", "r0"]), "Secondary/Secondary\n");
    // invalidate-remote: full sync from alice to bob.
    a.ok(&["invalidate-remote", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    b.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    // invalidate: full sync from bob to alice.
    a.ok(&["invalidate", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    b.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    a.ok(&["detach", "r0"]);
    assert_eq!(a.ok(&["dstate", "r0"]), "Diskless/UpToDate\n");
    a.ok(&["attach", "r0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 60);
    a.ok(&["down", "r0"]);
    b.ok(&["down", "r0"]);
}

/// `new-current-uuid --clear-bitmap` on a fresh pair skips the initial sync.
#[test]
#[ignore = "engine: after the skip-initial-sync P_UUIDS the initiator keeps pdsk Inconsistent (the peer's later P_STATE UpToDate is not applied); reported"]
fn new_current_uuid_clear_bitmap_skips_initial_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path(), "");
    for n in [&a, &b] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    a.ok(&["wait-connect", "r0"]);
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0/0"]);
    a.wait_for("dstate", "UpToDate/UpToDate\n", 30);
    b.wait_for("dstate", "UpToDate/UpToDate\n", 30);
    a.ok(&["down", "r0"]);
    b.ok(&["down", "r0"]);
}
