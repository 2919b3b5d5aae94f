//! Shared helpers for the udrbdmeta tests: finding the drbdmeta oracle, running either tool,
//! sparse files and sparse-aware comparison of meta-data areas.
#![allow(dead_code)] // Each test file uses a different subset.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use udrbd_metadata::{AlGeometry, Layout, MetaIndex};

/// The oracle, or `None` outside CI when it is missing. In CI (`CI=true`) a missing
/// drbdmeta fails the test.
pub fn drbdmeta() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d: PathBuf| d.join("drbdmeta"));
    for c in candidates {
        if c.is_file() {
            // drbdmeta takes its lock in /var/lock and records devices in /var/lib/drbd.
            let _ = std::fs::create_dir_all("/run/lock");
            let _ = std::fs::create_dir_all("/var/lib/drbd");
            return Some(c);
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "drbdmeta (drbd-utils) is not installed but CI=true: scripts/setup.sh must install it"
        );
    }
    eprintln!("SKIPPED: drbdmeta not installed (install drbd-utils to run the oracle tests)");
    None
}

pub fn udrbdmeta() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_udrbdmeta"))
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tool` with `args`, stdin closed (so no question is ever answered yes).
pub fn run(tool: &Path, args: &[&str]) -> Out {
    let o = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs and requires exit 0.
pub fn ok(tool: &Path, args: &[&str]) -> Out {
    let o = run(tool, args);
    assert_eq!(o.code, 0, "{} {args:?} failed: {o:?}", tool.display());
    o
}

/// A sparse file of `size` bytes.
pub fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

/// Forget what drbdmeta/udrbdmeta remembered for `minor` (the last-known device file).
pub fn clear_minor(minor: u32) {
    let _ = std::fs::remove_file(format!("/var/lib/drbd/drbd-minor-{minor}.lkbd"));
}

/// Data extents of a file (SEEK_DATA/SEEK_HOLE), as (start, end).
pub fn data_extents(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let mut v = Vec::new();
    let mut pos = 0i64;
    while pos < len {
        // SAFETY: fd is an open descriptor owned by `f` for the whole loop.
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { len } else { end };
        v.push((start as u64, end as u64));
        pos = end;
    }
    v
}

fn read_range(path: &Path, start: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).unwrap();
    let mut b = vec![0u8; len];
    let flen = f.metadata().unwrap().len();
    let n = (flen.saturating_sub(start)).min(len as u64) as usize;
    f.read_exact_at(&mut b[..n], start).unwrap();
    b
}

/// Byte range of the meta-data area for `index` on a device of `size` bytes.
pub fn md_area(index: MetaIndex, size: u64) -> (u64, u64) {
    let l = Layout::new(index, size, AlGeometry::default()).unwrap();
    let (lo, hi) = l.area();
    (lo, hi.min(size))
}

/// Compares `a` and `b` over `range` without reading holes: only the union of both files'
/// data extents is read. Panics with the first differing offset.
pub fn assert_same_range(a: &Path, b: &Path, range: (u64, u64), what: &str) {
    let mut segs: Vec<(u64, u64)> = data_extents(a)
        .into_iter()
        .chain(data_extents(b))
        .filter_map(|(s, e)| {
            let s = s.max(range.0);
            let e = e.min(range.1);
            (s < e).then_some((s, e))
        })
        .collect();
    segs.sort_unstable();
    for (s, e) in segs {
        let mut off = s;
        while off < e {
            let n = (e - off).min(8 << 20) as usize;
            let x = read_range(a, off, n);
            let y = read_range(b, off, n);
            if x != y {
                let i = x.iter().zip(&y).position(|(p, q)| p != q).unwrap();
                panic!(
                    "{what}: {} and {} differ at byte {:#x}: {:#04x} vs {:#04x}",
                    a.display(),
                    b.display(),
                    off + i as u64,
                    x[i],
                    y[i]
                );
            }
            off += n as u64;
        }
    }
}

/// SHA-256 over the data extents (offsets and content) of a file: changes iff its content
/// changes, cheap for big sparse files.
pub fn checksum(path: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(std::fs::metadata(path).unwrap().len().to_le_bytes());
    for (s, e) in data_extents(path) {
        let mut off = s;
        while off < e {
            let n = (e - off).min(8 << 20) as usize;
            let b = read_range(path, off, n);
            // Holes and zero data read the same; hash only non-zero 4 KiB blocks.
            for (i, blk) in b.chunks(4096).enumerate() {
                if blk.iter().any(|&x| x != 0) {
                    h.update((off + i as u64 * 4096).to_le_bytes());
                    h.update(blk);
                }
            }
            off += n as u64;
        }
    }
    h.finalize().into()
}

/// The dump without its comment header (date, host, command line).
pub fn dump_body(dump: &str) -> Vec<String> {
    let lines: Vec<&str> = dump.lines().collect();
    assert!(lines.len() > 4, "not a dump: {dump}");
    assert_eq!(lines[0], "# DRBD meta data dump");
    assert!(lines[1].starts_with("# ") && lines[2].starts_with("# ") && lines[3] == "#");
    lines[4..].iter().map(|s| s.to_string()).collect()
}

/// A small deterministic generator (xorshift64*), so failures replay.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A v08 dump text with a bitmap of `words` 64-bit words made of runs and patterns that
/// exercise drbdmeta's run-length rules (runs of 7, 8, 9, 16, 17 32-bit words, halves that
/// differ, runs crossing `# at` lines), written in our own bm syntax (no run-length).
pub fn crafted_dump(rng: &mut Rng, la_size_sect: u64, words: u64, flags: u32) -> String {
    let mut bm = Vec::new();
    while (bm.len() as u64) < words {
        let kind = rng.below(8);
        let len = [1, 2, 3, 4, 5, 8, 9, 17, 33, 100][rng.below(10) as usize];
        let w = match kind {
            0 => 0,
            1 => u64::MAX,
            2 => 0x0000_0001_0000_0001 * (rng.below(0xffff) + 1),
            3 => rng.next(),
            4 => 1 << rng.below(64),
            _ => 0,
        };
        for _ in 0..len {
            if (bm.len() as u64) < words {
                bm.push(if kind == 3 { rng.next() } else { w });
            }
        }
    }
    let mut s = String::from("# crafted\nversion \"v08\";\n\nuuid {\n");
    s.push_str(&format!(
        "    0x{:016X}; 0x{:016X}; 0x{:016X}; 0x{:016X};\n    flags 0x{flags:08X};\n}}\n",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    ));
    s.push_str(&format!(
        "la-size-sect {la_size_sect};\nbm-byte-per-bit 4096;\ndevice-uuid 0x{:016X};\nla-peer-max-bio-size 1048576;\nal-stripes 1;\nal-stripe-size-4k 8;\nbm {{\n",
        rng.next()
    ));
    for chunk in bm.chunks(4) {
        s.push_str("   ");
        for w in chunk {
            s.push_str(&format!(" 0x{w:016X};"));
        }
        s.push('\n');
    }
    s.push_str("}\n");
    s
}
