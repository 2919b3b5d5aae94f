//! VM-lab benchmark (issue 7, part 2): in ONE guest boot, fio on the same memory-backed backing
//! (null_blk memory_backed=1) for raw null_blk, a kernel DRBD 8.4 pair, udrbd -> udrbd and
//! udrbd Primary -> kernel Secondary (the udrbd rows through /dev/ublkbN), peers over the
//! guest's loopback. Method of /work/shared/lab/perf-baseline.md with shorter runs.
//!
//! `cargo run --release -p udrbd-benches --bin lab-bench -- [--runtime S] [--ramp S] [--out FILE]`
//!
//! It builds udrbd, udrbdadm and udrbdmeta (release) into the same target dir first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use udrbd_benches::Table;
use udrbd_interop_tests::{Lab, DRBD_PAIR_SH};

/// The rows, in the order the guest runs them: (key, description).
const DEVICES: [(&str, &str); 4] = [
    ("raw", "raw null_blk"),
    ("kernel", "kernel DRBD 8.4 pair, protocol C"),
    ("udrbd", "udrbd -> udrbd (ublk, protocol C)"),
    (
        "udrbd_kernel",
        "udrbd Primary -> kernel Secondary (ublk, protocol C)",
    ),
];

/// The fio jobs: (key, rw, bs, iodepth).
const JOBS: [(&str, &str, &str, u32); 3] = [
    ("qd1", "randwrite", "4k", 1),
    ("qd32", "randwrite", "4k", 32),
    ("seq", "write", "1M", 4),
];

#[derive(Serialize, Default, Clone)]
struct Row {
    device: String,
    measured: bool,
    /// Why a row has no figures.
    note: String,
    qd1_iops: f64,
    qd1_lat_p50_us: f64,
    qd1_lat_p99_us: f64,
    qd32_iops: f64,
    qd32_lat_p50_us: f64,
    seq_1m_mb_s: f64,
}

#[derive(Serialize)]
struct Report {
    date_utc: String,
    host_load_avg_start: String,
    host_load_avg_end: String,
    accel: String,
    guest: String,
    fio: String,
    guest_wall_s: f64,
    /// "PingAck did not arrive in time" lines: kernel (guest dmesg, all kernel rows) and each
    /// udrbd log; a lost connection mid-run makes a row's figures meaningless.
    ping_ack_timeouts: BTreeMap<String, usize>,
    rows: BTreeMap<String, Row>,
    ratios_udrbd_over_kernel: BTreeMap<String, BTreeMap<String, f64>>,
}

fn main() -> Result<()> {
    let mut runtime = 5u32;
    let mut ramp = 1u32;
    let mut out = PathBuf::from("benches/results/lab-bench.json");
    let mut bins: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runtime" => runtime = args.next().context("--runtime S")?.parse()?,
            "--ramp" => ramp = args.next().context("--ramp S")?.parse()?,
            "--out" => out = args.next().context("--out FILE")?.into(),
            "--bins" => bins = Some(args.next().context("--bins DIR")?.into()),
            other => bail!(
                "unknown argument {other:?} (use --runtime S, --ramp S, --out FILE, --bins DIR)"
            ),
        }
    }
    let bins = match bins {
        Some(b) => b,
        None => build_bins()?,
    };
    for b in ["udrbd", "udrbdadm", "udrbdmeta"] {
        if !bins.join(b).is_file() {
            bail!("{} is missing", bins.join(b).display());
        }
    }
    let lab = Lab::get()?;
    let load_start = udrbd_benches::load_avg();
    let script = script(&bins, runtime, ramp);
    eprintln!("lab-bench: booting one guest ({:?})", lab.accel());
    let run = lab
        .guest()
        .name("lab-bench")
        .cpus(2)
        .mem_mib(4096)
        .timeout(Duration::from_secs(1500))
        .run(&script)?;
    eprintln!("{}", run.report());

    let mut rows = BTreeMap::new();
    for (key, desc) in DEVICES {
        rows.insert(key.to_string(), row(&run.out_dir, key, desc));
    }
    let mut ratios = BTreeMap::new();
    for key in ["udrbd", "udrbd_kernel"] {
        let (u, k) = (&rows[key], &rows["kernel"]);
        if u.measured && k.measured {
            ratios.insert(
                key.to_string(),
                BTreeMap::from([
                    (
                        "qd1_lat_p50".to_string(),
                        u.qd1_lat_p50_us / k.qd1_lat_p50_us,
                    ),
                    (
                        "qd1_lat_p99".to_string(),
                        u.qd1_lat_p99_us / k.qd1_lat_p99_us,
                    ),
                    ("qd1_iops".to_string(), u.qd1_iops / k.qd1_iops),
                    ("qd32_iops".to_string(), u.qd32_iops / k.qd32_iops),
                    ("seq_1m_mb_s".to_string(), u.seq_1m_mb_s / k.seq_1m_mb_s),
                ]),
            );
        }
    }
    let report = Report {
        date_utc: udrbd_benches::utc_now(),
        host_load_avg_start: load_start,
        host_load_avg_end: udrbd_benches::load_avg(),
        accel: format!("{:?}", run.accel),
        guest: "qemu, 2 vCPUs, 4 GiB, Debian 6.12 kernel; null_blk memory_backed=1 gb=1 nr_devices=4; peers on the guest's lo".into(),
        fio: format!(
            "io_uring direct=1 size=256M time_based runtime={runtime} ramp_time={ramp} norandommap lat_percentiles=1; 1M QD8 fill first"
        ),
        guest_wall_s: run.wall.as_secs_f64(),
        ping_ack_timeouts: ping_ack_timeouts(&run.out_dir),
        rows,
        ratios_udrbd_over_kernel: ratios,
    };
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_tables(&report);
    eprintln!(
        "wrote {} (guest output in {})",
        out.display(),
        run.out_dir.display()
    );
    Ok(())
}

fn print_tables(r: &Report) {
    println!(
        "lab-bench {} accel {} (host load avg {} -> {}), guest wall {:.0} s\n",
        r.date_utc, r.accel, r.host_load_avg_start, r.host_load_avg_end, r.guest_wall_s
    );
    let mut t = Table::new(&[
        "device (same boot)",
        "4k QD1 IOPS",
        "QD1 lat p50 µs",
        "QD1 lat p99 µs",
        "4k QD32 IOPS",
        "1 MiB seq MB/s",
    ]);
    for (key, desc) in DEVICES {
        let row = &r.rows[key];
        if row.measured {
            t.row(&[
                desc.to_string(),
                format!("{:.0}", row.qd1_iops),
                format!("{:.0}", row.qd1_lat_p50_us),
                format!("{:.0}", row.qd1_lat_p99_us),
                format!("{:.0}", row.qd32_iops),
                format!("{:.0}", row.seq_1m_mb_s),
            ]);
        } else {
            let mut cells = vec![desc.to_string(), format!("not measured: {}", row.note)];
            cells.resize(6, "-".into());
            t.row(&cells);
        }
    }
    println!("{}", t.markdown());
    let mut q = Table::new(&[
        "ratio to the kernel pair",
        "QD1 p50 latency",
        "QD1 p99 latency",
        "QD32 IOPS",
        "1 MiB seq MB/s",
    ]);
    for (key, desc) in DEVICES.iter().skip(2) {
        match r.ratios_udrbd_over_kernel.get(*key) {
            Some(m) => q.row(&[
                desc.to_string(),
                format!("{:.2}", m["qd1_lat_p50"]),
                format!("{:.2}", m["qd1_lat_p99"]),
                format!("{:.2}", m["qd32_iops"]),
                format!("{:.2}", m["seq_1m_mb_s"]),
            ]),
            None => q.row(&[
                desc.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    println!("{}", q.markdown());
    println!(
        "PingAck time-outs (lost connections): {:?}",
        r.ping_ack_timeouts
    );
}

/// Reads `/out/<key>-<job>.json` (fio's JSON output); a missing or failed job leaves the row
/// unmeasured with the reason the guest wrote to `/out/<key>.note`.
fn row(out: &Path, key: &str, desc: &str) -> Row {
    let mut row = Row {
        device: desc.into(),
        ..Default::default()
    };
    let note = std::fs::read_to_string(out.join(format!("{key}.note"))).unwrap_or_default();
    let mut jobs = BTreeMap::new();
    for (job, ..) in JOBS {
        match fio_write(&out.join(format!("{key}-{job}.json"))) {
            Ok(w) => {
                jobs.insert(job, w);
            }
            Err(e) => {
                row.note = if note.trim().is_empty() {
                    format!("{job}: {e}")
                } else {
                    note.trim().to_string()
                };
                return row;
            }
        }
    }
    row.measured = true;
    row.note = note.trim().to_string();
    row.qd1_iops = jobs["qd1"].iops;
    row.qd1_lat_p50_us = jobs["qd1"].p50_us;
    row.qd1_lat_p99_us = jobs["qd1"].p99_us;
    row.qd32_iops = jobs["qd32"].iops;
    row.qd32_lat_p50_us = jobs["qd32"].p50_us;
    row.seq_1m_mb_s = jobs["seq"].bw_bytes / 1e6;
    row
}

fn ping_ack_timeouts(out: &Path) -> BTreeMap<String, usize> {
    ["dmesg.txt", "udrbd-a.log", "udrbd-b.log", "udrbd-mixed.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
            (
                f.to_string(),
                text.matches("PingAck did not arrive").count(),
            )
        })
        .collect()
}

struct FioWrite {
    iops: f64,
    bw_bytes: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The write side of fio's single job: IOPS, bandwidth and total-latency ("lat") percentiles.
fn fio_write(path: &Path) -> Result<FioWrite> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    // fio may print notes before the JSON object.
    let start = text
        .find('{')
        .with_context(|| format!("{}: no JSON", path.display()))?;
    let v: Value = serde_json::from_str(&text[start..])
        .with_context(|| format!("{}: not fio JSON", path.display()))?;
    let job = &v["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        bail!("{}: fio error {}", path.display(), job["error"]);
    }
    let w = &job["write"];
    let num = |v: &Value, what: &str| {
        v.as_f64()
            .with_context(|| format!("{}: no {what}", path.display()))
    };
    let pct = &w["lat_ns"]["percentile"];
    let iops = num(&w["iops"], "write.iops")?;
    if iops <= 0.0 {
        bail!("{}: no writes completed", path.display());
    }
    Ok(FioWrite {
        iops,
        bw_bytes: num(&w["bw_bytes"], "write.bw_bytes")?,
        p50_us: num(&pct["50.000000"], "lat_ns p50")? / 1e3,
        p99_us: num(&pct["99.000000"], "lat_ns p99")? / 1e3,
    })
}

/// `cargo build --release -p udrbd -p udrbd-tools` into this binary's target dir; returns the
/// folder with the binaries.
fn build_bins() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("exe folder")?.to_path_buf();
    let target_dir = profile_dir.parent().context("target dir")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "lab-bench: cargo build --release -p udrbd -p udrbd-tools (target dir {})",
        target_dir.display()
    );
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "udrbd", "-p", "udrbd-tools"])
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()?;
    if !st.success() {
        bail!("building udrbd/udrbd-tools failed: {st}");
    }
    Ok(profile_dir)
}

fn script(bins: &Path, runtime: u32, ramp: u32) -> String {
    let mut jobs = String::new();
    for (job, rw, bs, qd) in JOBS {
        jobs += &format!(
            "    fio --name=$1-{job} --filename=$2 --ioengine=io_uring --direct=1 --size=256M \
             --time_based --runtime={runtime} --ramp_time={ramp} --norandommap \
             --lat_percentiles=1 --rw={rw} --bs={bs} --iodepth={qd} --output-format=json \
             --output=/out/$1-{job}.json || {{ echo \"fio {job} failed\" >> /out/$1.note; return 1; }}\n"
        );
    }
    format!(
        r#"{DRBD_PAIR_SH}
BIN={bins}
{LAB_SH}
bench() {{ # key device
    section "bench $1 on $2"
    local q=/sys/block/$(basename "$(readlink -f "$2")")/queue/scheduler
    [ -w "$q" ] && echo none > "$q" 2>/dev/null
    fio --name=fill --filename=$2 --ioengine=io_uring --direct=1 --rw=write --bs=1M \
        --iodepth=8 --size=256M --output=/out/$1-fill.txt || {{ echo "fill failed" >> /out/$1.note; return 1; }}
{jobs}}}
main
"#,
        bins = bins.display()
    )
}

/// The guest part after the pair helpers: device setup per row, then `bench`.
///
/// `ping-timeout 30` (3 s, default 0.5 s) for every pair: the starved TCG guest otherwise
/// drops udrbd <-> udrbd connections on PingAck time-outs mid-run (first run, see README).
const LAB_SH: &str = r#"
W=/scratch/bench
mkdir -p $W /var/lib/drbd /run/drbd
note() { echo "$2" >> /out/$1.note; echo "NOTE $1: $2"; }

conf() { # file resource disk_a disk_b
    cat > "$1" <<EOC
global { usage-count no; }
common {
  net  { protocol C; connect-int 2; ping-int 3; ping-timeout 30; }
  disk { c-plan-ahead 0; resync-rate 1000M; }
}
resource $2 {
  on a { device /dev/drbd0 minor 0; disk $3; meta-disk internal; address 127.0.0.1:7789; }
  on b { device /dev/drbd1 minor 1; disk $4; meta-disk internal; address 127.0.0.1:7790; }
}
EOC
}
KA() { unshare --uts sh -c "hostname a; drbdadm -c $W/ka.conf $*"; }
KB() { unshare --uts sh -c "hostname b; drbdadm -c $W/kb.conf $*"; }
UA() { __DRBD_NODE__=a UDRBD_RUN_DIR=/run/ua "$BIN/udrbdadm" -c "$W/u.conf" "$@"; }
UB() { __DRBD_NODE__=b UDRBD_RUN_DIR=/run/ub "$BIN/udrbdadm" -c "$W/u.conf" "$@"; }
# Mixed pair: host a = kernel (minor 0), host b = udrbd (minor 1).
MK() { unshare --uts sh -c "hostname a; drbdadm -c $W/m.conf $*"; }
MU() { __DRBD_NODE__=b UDRBD_RUN_DIR=/run/um "$BIN/udrbdadm" -c "$W/m.conf" "$@"; }

kernel_pair() {
    conf $W/ka.conf r0 /dev/nullb0 /dev/nullb1
    conf $W/kb.conf r1 /dev/nullb0 /dev/nullb1
    KA create-md --force r0 >/dev/null 2>&1 && KB create-md --force r1 >/dev/null 2>&1 || { note kernel "create-md failed"; return 1; }
    KA up r0 && KB up r1 || { note kernel "up failed"; return 1; }
    wait_for 60 drbd_connected || { note kernel "no connection"; cat /proc/drbd; return 1; }
    KA -- --clear-bitmap new-current-uuid r0 || { note kernel "new-current-uuid failed"; return 1; }
    wait_for 30 drbd_synced || { note kernel "not UpToDate after new-current-uuid"; cat /proc/drbd; return 1; }
    KA primary r0 || { note kernel "primary failed"; return 1; }
    cat /proc/drbd
    bench kernel /dev/drbd0
    cat /proc/drbd > /out/kernel.proc-drbd
    KA down r0; KB down r1
}

u_connected() { [ "$("$@" cstate r0)" = Connected ]; }
u_synced() { [ "$("$@" dstate r0)" = UpToDate/UpToDate ] && [ "$("$@" cstate r0)" = Connected ]; }

udrbd_pair() {
    mkdir -p /run/ua /run/ub
    conf $W/u.conf r0 /dev/nullb2 /dev/nullb3
    UA create-md --force r0 >/dev/null 2>&1 && UB create-md --force r0 >/dev/null 2>&1 || { note udrbd "create-md failed: $(UA create-md --force r0 2>&1 | tail -2)"; return 1; }
    UA up r0 && UB up r0 || { note udrbd "up failed"; return 1; }
    wait_for 60 u_connected UA || { note udrbd "no connection"; return 1; }
    UA -- --clear-bitmap new-current-uuid r0 || { note udrbd "new-current-uuid --clear-bitmap failed"; return 1; }
    wait_for 60 u_synced UA || { note udrbd "not UpToDate: $(UA dstate r0)"; return 1; }
    UA primary r0 || { note udrbd "primary failed"; return 1; }
    local dev
    dev=$("$BIN/udrbd" --resource r0 --run-dir /run/ua expose 2>&1) || { note udrbd "expose failed: $dev"; return 1; }
    wait_for 10 test -b "$dev" || { note udrbd "no block device $dev"; return 1; }
    echo "udrbd pair exposed $dev"
    bench udrbd "$dev"
    UA status r0 > /out/udrbd.status 2>&1
    UA down r0; UB down r0
    cp /run/ua/r0.log /out/udrbd-a.log 2>/dev/null; cp /run/ub/r0.log /out/udrbd-b.log 2>/dev/null
}

mixed_pair() {
    mkdir -p /run/um
    conf $W/m.conf r0 /dev/nullb0 /dev/nullb1
    MK create-md --force r0 >/dev/null 2>&1 && MU create-md --force r0 >/dev/null 2>&1 || { note udrbd_kernel "create-md failed"; return 1; }
    MK up r0 && MU up r0 || { note udrbd_kernel "up failed"; return 1; }
    wait_for 60 sh -c "grep -q 'cs:Connected' /proc/drbd" || { note udrbd_kernel "no connection"; cat /proc/drbd; return 1; }
    MK -- --clear-bitmap new-current-uuid r0 || { note udrbd_kernel "new-current-uuid failed"; return 1; }
    wait_for 60 u_synced MU || { note udrbd_kernel "not UpToDate: $(MU dstate r0)"; cat /proc/drbd; return 1; }
    MU primary r0 || { note udrbd_kernel "primary failed"; return 1; }
    local dev
    dev=$("$BIN/udrbd" --resource r0 --run-dir /run/um expose 2>&1) || { note udrbd_kernel "expose failed: $dev"; return 1; }
    wait_for 10 test -b "$dev" || { note udrbd_kernel "no block device $dev"; return 1; }
    echo "mixed pair exposed $dev"
    bench udrbd_kernel "$dev"
    cat /proc/drbd > /out/udrbd_kernel.proc-drbd
    MU down r0; MK down r0
    cp /run/um/r0.log /out/udrbd-mixed.log 2>/dev/null
}

main() {
    section setup
    modprobe null_blk memory_backed=1 gb=1 nr_devices=4 || { note raw "null_blk failed"; return 1; }
    modprobe ublk_drv || note udrbd "ublk_drv does not load"
    drbd_load || note kernel "drbd does not load"
    bench raw /dev/nullb0
    kernel_pair
    udrbd_pair
    mixed_pair
    section done
    dmesg > /out/dmesg.txt
    true
}
"#;
