//! Shared harness: udrbd daemons as child processes on 127.0.0.1 with file backings, killed on
//! drop.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use udrbd::control::{Client, DiskOptions, NetOptions, Request, Response};
use udrbd::status::StatusSnapshot;

pub const RES: &str = "r0";
/// Backing file size: 64 MiB (sparse).
pub const DISK_BYTES: u64 = 64 << 20;

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Daemon {
    pub child: Option<Child>,
    pub run_dir: PathBuf,
    pub disk: PathBuf,
    pub log: PathBuf,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub net: NetOptions,
}

impl Daemon {
    /// A node directory with a backing file and fresh meta-data (`create-md`).
    pub fn prepare(dir: &Path, name: &str, local: SocketAddr, peer: SocketAddr) -> Daemon {
        let run_dir = dir.join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let disk = run_dir.join("disk.img");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(DISK_BYTES).unwrap();
        drop(f);
        let mut io = udrbd_metadata::io::FileIo::open(&disk, true).unwrap();
        udrbd_metadata::md::create(
            &mut io,
            udrbd_metadata::MetaIndex::Internal,
            &Default::default(),
        )
        .unwrap();
        let net = NetOptions {
            connect_int_s: 1,
            ping_timeout_ds: 5,
            ping_int_s: 2,
            ..Default::default()
        };
        Daemon {
            child: None,
            log: run_dir.join("udrbd.log"),
            run_dir,
            disk,
            local,
            peer,
            net,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_udrbd"))
            .args(["--resource", RES, "--run-dir"])
            .arg(&self.run_dir)
            .env("UDRBD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Client::connect(&udrbd::control::socket_path(&self.run_dir, RES)) {
                if matches!(c.call(Request::Ping), Ok(Response::Pong { .. })) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&udrbd::control::socket_path(&self.run_dir, RES)).unwrap()
    }

    pub fn call(&self, r: Request) -> Response {
        self.client().call(r).unwrap()
    }

    pub fn ok(&self, r: Request) {
        let what = format!("{r:?}");
        let resp = self.call(r);
        assert_eq!(resp, Response::Ok, "{what}; log:\n{}", self.log_text());
    }

    /// `up`: attach volume 0 (internal meta-data) and connect.
    pub fn up(&self) {
        self.ok(Request::Attach {
            volume: 0,
            minor: 1,
            disk: self.disk.display().to_string(),
            meta_disk: self.disk.display().to_string(),
            meta_index: None,
            options: DiskOptions {
                resync_rate_kib: 100 * 1024,
                ..Default::default()
            },
        });
        self.ok(Request::Connect {
            local: self.local,
            peer: self.peer,
            options: self.net.clone(),
        });
    }

    pub fn status(&self) -> StatusSnapshot {
        match self.call(Request::Status) {
            Response::Status(s) => *s,
            other => panic!("status: {other:?}"),
        }
    }

    pub fn write(&self, sector: u64, data: &[u8]) {
        let r = self.call(Request::Write {
            volume: 0,
            sector,
            data_hex: udrbd::control::to_hex(data),
        });
        assert_eq!(
            r,
            Response::Ok,
            "write at {sector}; log:\n{}",
            self.log_text()
        );
    }

    pub fn wait_synced(&self, secs: u64) {
        let r = self.call(Request::WaitSynced { timeout_s: secs });
        assert_eq!(
            r,
            Response::Ok,
            "not synced within {secs}s: {:?}\nlog:\n{}",
            self.status(),
            self.log_text()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The tail is what matters when a test fails.
        let start = s.len().saturating_sub(8000);
        s[s.char_indices()
            .map(|(i, _)| i)
            .find(|&i| i >= start)
            .unwrap_or(0)..]
            .to_string()
    }

    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SHA-256 of the usable data area (everything in front of the meta-data).
    pub fn data_hash(&self) -> String {
        let data_sectors = self.status().volumes.first().map(|v| v.size_kib * 2);
        hash_prefix(&self.disk, data_sectors.expect("attached") * 512)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn hash_prefix(path: &Path, len: u64) -> String {
    let bytes = std::fs::read(path).unwrap();
    let mut h = Sha256::new();
    h.update(&bytes[..len as usize]);
    format!("{:x}", h.finalize())
}

/// Deterministic block contents so that a mismatch is reproducible.
pub fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn pair(dir: &Path) -> (Daemon, Daemon) {
    let (a, b) = (free_addr(), free_addr());
    (
        Daemon::prepare(dir, "alice", a, b),
        Daemon::prepare(dir, "bob", b, a),
    )
}
