//! Host-native benchmark (issue 7, part 1): two in-process udrbd nodes replicating over
//! 127.0.0.1 with tmpfs backings, beside raw loopback TCP and raw tmpfs measured in the same run.
//!
//! `cargo run --release -p udrbd-benches --bin host-bench -- [--secs N] [--out FILE]`
//!
//! Figures are only comparable inside one run (the ratios); the absolute numbers depend on
//! whatever else the machine is doing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use udrbd::control::{DiskOptions, NetOptions, Request, Response};
use udrbd::node::{Event, Node, NodeOptions};
use udrbd_benches::{Latencies, Table};
use udrbd_engine::RequestOp;

const RES: &str = "r0";
/// Each backing: 256 MiB of data area plus room for internal meta-data.
const DISK_BYTES: u64 = 264 << 20;
/// The area the workloads touch (as fio's --size=256M in the lab).
const AREA: u64 = 256 << 20;

#[derive(Serialize, Default)]
struct Report {
    date_utc: String,
    load_avg: String,
    secs_per_workload: u64,
    backing: String,
    tmpfs_direct_io: bool,
    /// How the pair got UpToDate/UpToDate before the workloads.
    initial_sync: String,
    /// Node a's connection and volume after the workloads (the writes went over the wire).
    connection_after: String,
    tcp_rtt_4k_32b: Latencies,
    tcp_bulk_mb_s: f64,
    tmpfs_4k_randwrite_qd1: Latencies,
    tmpfs_1m_seq_mb_s: f64,
    udrbd_4k_randwrite_qd1: Latencies,
    udrbd_4k_randwrite_qd32_iops: f64,
    udrbd_1m_seqwrite_qd4_mb_s: f64,
}

fn main() -> Result<()> {
    let mut secs = 5u64;
    let mut out = PathBuf::from("benches/results/host-bench.json");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().context("--secs N")?.parse()?,
            "--out" => out = args.next().context("--out FILE")?.into(),
            other => bail!("unknown argument {other:?} (use --secs N, --out FILE)"),
        }
    }
    let dur = Duration::from_secs(secs);
    let guard = TempDir(tempdir_in("/dev/shm")?);
    let dir = guard.0.clone();
    let mut r = Report {
        date_utc: udrbd_benches::utc_now(),
        load_avg: udrbd_benches::load_avg(),
        secs_per_workload: secs,
        backing: format!("tmpfs files in {}", dir.display()),
        ..Default::default()
    };

    eprintln!("raw loopback TCP ...");
    r.tcp_rtt_4k_32b = tcp_rtt(dur)?;
    r.tcp_bulk_mb_s = tcp_bulk(dur)?;
    eprintln!("raw tmpfs ...");
    let (direct, lat, mbs) = tmpfs_raw(&dir.join("raw.img"), dur)?;
    r.tmpfs_direct_io = direct;
    r.tmpfs_4k_randwrite_qd1 = lat;
    r.tmpfs_1m_seq_mb_s = mbs;

    eprintln!("udrbd pair ...");
    let (a, b, how) = pair(&dir)?;
    r.initial_sync = how;
    r.udrbd_4k_randwrite_qd1 = udrbd_qd1(&a, dur)?;
    r.udrbd_4k_randwrite_qd32_iops = udrbd_qd(&a, dur, 32, 4096, true)?.0;
    r.udrbd_1m_seqwrite_qd4_mb_s = udrbd_qd(&a, dur, 4, 1 << 20, false)?.1;
    r.connection_after = format!("{:?}", a.status().map(|s| (s.connection, s.volumes)));
    a.shutdown();
    b.shutdown();
    drop(guard);

    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&r)? + "\n")?;
    print_table(&r);
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn print_table(r: &Report) {
    let mut t = Table::new(&["measure", "udrbd pair", "raw baseline", "ratio udrbd/raw"]);
    let base_qd1 = r.tcp_rtt_4k_32b.p50_us + r.tmpfs_4k_randwrite_qd1.p50_us;
    t.row(&[
        "4k randwrite QD1 p50 µs".into(),
        format!("{:.1}", r.udrbd_4k_randwrite_qd1.p50_us),
        format!("{base_qd1:.1} (TCP 4k/32B RTT + tmpfs write)"),
        format!("{:.2}", r.udrbd_4k_randwrite_qd1.p50_us / base_qd1),
    ]);
    let base_p99 = r.tcp_rtt_4k_32b.p99_us + r.tmpfs_4k_randwrite_qd1.p99_us;
    t.row(&[
        "4k randwrite QD1 p99 µs".into(),
        format!("{:.1}", r.udrbd_4k_randwrite_qd1.p99_us),
        format!("{base_p99:.1} (same, p99)"),
        format!("{:.2}", r.udrbd_4k_randwrite_qd1.p99_us / base_p99),
    ]);
    let base_iops = 1e6 / base_qd1;
    t.row(&[
        "4k randwrite QD32 IOPS".into(),
        format!("{:.0}", r.udrbd_4k_randwrite_qd32_iops),
        format!("{base_iops:.0} (1 / QD1 baseline p50)"),
        format!("{:.2}", r.udrbd_4k_randwrite_qd32_iops / base_iops),
    ]);
    let base_mbs = r.tcp_bulk_mb_s.min(r.tmpfs_1m_seq_mb_s);
    t.row(&[
        "1 MiB seq write QD4 MB/s".into(),
        format!("{:.0}", r.udrbd_1m_seqwrite_qd4_mb_s),
        format!("{base_mbs:.0} (min of TCP bulk, tmpfs seq)"),
        format!("{:.2}", r.udrbd_1m_seqwrite_qd4_mb_s / base_mbs),
    ]);
    println!(
        "host-bench {} (load avg {}), {} s per workload\n",
        r.date_utc, r.load_avg, r.secs_per_workload
    );
    println!("{}", t.markdown());
    let mut b = Table::new(&["raw baseline", "p50 µs", "p99 µs", "throughput"]);
    b.row(&[
        "loopback TCP, 4 KiB request / 32 B ack, QD1".into(),
        format!("{:.1}", r.tcp_rtt_4k_32b.p50_us),
        format!("{:.1}", r.tcp_rtt_4k_32b.p99_us),
        format!("{:.0} req/s", r.tcp_rtt_4k_32b.ops_per_s),
    ]);
    b.row(&[
        "loopback TCP bulk stream".into(),
        "-".into(),
        "-".into(),
        format!("{:.0} MB/s", r.tcp_bulk_mb_s),
    ]);
    b.row(&[
        format!(
            "tmpfs 4k random pwrite QD1 ({})",
            if r.tmpfs_direct_io {
                "O_DIRECT"
            } else {
                "buffered"
            }
        ),
        format!("{:.1}", r.tmpfs_4k_randwrite_qd1.p50_us),
        format!("{:.1}", r.tmpfs_4k_randwrite_qd1.p99_us),
        format!("{:.0} IOPS", r.tmpfs_4k_randwrite_qd1.ops_per_s),
    ]);
    b.row(&[
        "tmpfs 1 MiB sequential pwrite".into(),
        "-".into(),
        "-".into(),
        format!("{:.0} MB/s", r.tmpfs_1m_seq_mb_s),
    ]);
    println!("{}", b.markdown());
}

/// Removed on drop, also when a workload fails (the backings are 264 MiB of tmpfs each).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir_in(parent: &str) -> Result<PathBuf> {
    let d = Path::new(parent).join(format!("udrbd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// Raw baselines

/// A 4 KiB request answered by a 32-byte ack (a replicated write and its P_WRITE_ACK), QD1.
fn tcp_rtt(dur: Duration) -> Result<Latencies> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 4096];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf[..32])?;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let req = [0x5au8; 4096];
    let mut ack = [0u8; 32];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut ack)?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    drop(c);
    let _ = server.join();
    Ok(Latencies::from(&mut lat, total))
}

fn tcp_bulk(dur: Duration) -> Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    let buf = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    while start.elapsed() < dur {
        c.write_all(&buf)?;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let n = server
        .join()
        .map_err(|_| anyhow::anyhow!("bulk reader panicked"))??;
    Ok(n as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// 4 KiB random pwrite QD1 and 1 MiB sequential pwrite on a tmpfs file (O_DIRECT when tmpfs
/// takes it, as the daemon's backing would).
fn tmpfs_raw(path: &Path, dur: Duration) -> Result<(bool, Latencies, f64)> {
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.create(true).read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(path)
    };
    let (f, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(_) => (open(false)?, false),
    };
    f.set_len(AREA)?;
    let big = AlignedBuf::new(1 << 20);
    let mut off = 0;
    while off < AREA {
        f.write_all_at(big.as_slice(), off)?;
        off += 1 << 20;
    }
    let small = AlignedBuf::new(4096);
    let mut rng = rand::thread_rng();
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let off = rng.gen_range(0..AREA / 4096) * 4096;
        let t = Instant::now();
        f.write_all_at(small.as_slice(), off)?;
        lat.push(t.elapsed());
    }
    let l = Latencies::from(&mut lat, start.elapsed());
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        f.write_all_at(big.as_slice(), bytes % AREA)?;
        bytes += 1 << 20;
    }
    let mbs = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok((direct, l, mbs))
}

/// A 4 KiB-aligned buffer (O_DIRECT needs aligned memory).
struct AlignedBuf {
    v: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let mut v = vec![0x3cu8; len + 4096];
        let start = v.as_ptr().align_offset(4096);
        v[start..start + len]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        AlignedBuf { v, start, len }
    }
    fn as_slice(&self) -> &[u8] {
        &self.v[self.start..self.start + self.len]
    }
}

// ---------------------------------------------------------------------------------------------
// udrbd pair

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn prepare_disk(path: &Path) -> Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(DISK_BYTES)?;
    drop(f);
    let mut io = udrbd_metadata::io::FileIo::open_buffered(path, true)?;
    udrbd_metadata::md::create(
        &mut io,
        udrbd_metadata::MetaIndex::Internal,
        &Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("create-md on {}: {e}", path.display()))?;
    Ok(())
}

fn ok(n: &Node, what: &str, r: Request) -> Result<()> {
    match n.call(r) {
        Response::Ok => Ok(()),
        other => bail!("{what}: {other:?}"),
    }
}

/// Two connected nodes, skipped initial sync (new-current-uuid --clear-bitmap), `a` Primary.
fn pair(dir: &Path) -> Result<(Node, Node, String)> {
    let (la, lb) = (free_addr()?, free_addr()?);
    let mut nodes = Vec::new();
    for (name, local, peer) in [("a", la, lb), ("b", lb, la)] {
        let run_dir = dir.join(name);
        std::fs::create_dir_all(&run_dir)?;
        let disk = run_dir.join("disk.img");
        prepare_disk(&disk)?;
        let n = Node::start(NodeOptions {
            resource: RES.into(),
            prefer_uring: true,
            run_dir,
        })?;
        ok(
            &n,
            "attach",
            Request::Attach {
                volume: 0,
                minor: 1,
                disk: disk.display().to_string(),
                meta_disk: disk.display().to_string(),
                meta_index: None,
                options: DiskOptions {
                    resync_rate_kib: 1 << 20,
                    ..Default::default()
                },
            },
        )?;
        ok(
            &n,
            "connect",
            Request::Connect {
                local,
                peer,
                options: NetOptions {
                    connect_int_s: 1,
                    ..Default::default()
                },
            },
        )?;
        nodes.push(n);
    }
    let b = nodes.pop().context("node b")?;
    let a = nodes.pop().context("node a")?;
    ok(&a, "wait-connect", Request::WaitConnect { timeout_s: 30 })?;
    ok(
        &b,
        "wait-connect (b)",
        Request::WaitConnect { timeout_s: 30 },
    )?;
    ok(
        &a,
        "new-current-uuid --clear-bitmap",
        Request::NewCurrentUuid {
            volume: 0,
            clear_bitmap: true,
        },
    )?;
    // Both UpToDate without a resync. Seen not to happen now and then (udrbd issue, see
    // README): then say where each node stands and fall back to a full sync.
    let how = match ok(&a, "wait-synced", Request::WaitSynced { timeout_s: 20 }) {
        Ok(()) => "new-current-uuid --clear-bitmap".to_string(),
        Err(e) => {
            let why = format!(
                "{e}; node a: {:?}; node b: {:?}",
                a.status().map(|s| (s.role, s.volumes, s.connection)),
                b.status().map(|s| (s.role, s.volumes, s.connection))
            );
            eprintln!("new-current-uuid --clear-bitmap did not make both UpToDate: {why}");
            ok(&a, "primary --force", Request::Primary { force: true })?;
            ok(&a, "full sync", Request::WaitSynced { timeout_s: 600 })?;
            format!("full sync after primary --force (new-current-uuid --clear-bitmap: {why})")
        }
    };
    ok(&a, "primary", Request::Primary { force: false })?;
    Ok((a, b, how))
}

fn udrbd_qd1(a: &Node, dur: Duration) -> Result<Latencies> {
    let data = Bytes::from(vec![0x77u8; 4096]);
    let mut rng = rand::thread_rng();
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let sector = rng.gen_range(0..AREA / 4096) * 8;
        let t = Instant::now();
        a.write(0, sector, data.clone())
            .map_err(|e| anyhow::anyhow!("write at {sector}: {e}"))?;
        lat.push(t.elapsed());
    }
    Ok(Latencies::from(&mut lat, start.elapsed()))
}

/// `depth` writes of `bs` bytes kept in flight for `dur` (random 4k or sequential); returns
/// (IOPS, MB/s).
fn udrbd_qd(a: &Node, dur: Duration, depth: usize, bs: u64, random: bool) -> Result<(f64, f64)> {
    let tx = a.sender();
    let (reply, done) = crossbeam_channel::unbounded();
    let data = Bytes::from(vec![0x66u8; bs as usize]);
    let mut rng = rand::thread_rng();
    let mut seq = 0u64;
    let mut next = || {
        if random {
            rng.gen_range(0..AREA / bs) * bs / 512
        } else {
            let s = seq % AREA / 512;
            seq += bs;
            s
        }
    };
    let submit = |sector: u64| -> Result<()> {
        tx.send(Event::Upper {
            volume: 0,
            op: RequestOp::Write {
                sector,
                data: data.clone(),
                fua: false,
                preflush: false,
            },
            reply: reply.clone(),
        })
        .map_err(|_| anyhow::anyhow!("node stopped"))
    };
    for _ in 0..depth {
        submit(next())?;
    }
    let mut completed = 0u64;
    let mut inflight = depth;
    let start = Instant::now();
    while inflight > 0 {
        let r = done.recv().context("node stopped")?;
        r.map_err(|e| anyhow::anyhow!("write failed: {e}"))?;
        completed += 1;
        inflight -= 1;
        if start.elapsed() < dur {
            submit(next())?;
            inflight += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        completed as f64 / secs,
        (completed * bs) as f64 / secs / 1e6,
    ))
}
