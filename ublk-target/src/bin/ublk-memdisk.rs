//! ublk-memdisk: serves an in-memory disk as /dev/ublkb<id> until SIGTERM/SIGINT.
//!
//! Used by the VM lab to check the ublk path end to end. Prints
//! `ublk-memdisk: ready /dev/ublkb<id> <size> bytes` once the device exists.
//!
//! usage: ublk-memdisk [--size-mib N] [--id N] [--queues N] [--depth N] [--logical-block N]
//!                     [--dispatch WORKERS]
//!
//! `--dispatch` serves through the engine-facing path (requests handed to worker threads and
//! completed asynchronously); then SIGUSR1 switches to fail-fast (every request fails with
//! EIO, as on a Secondary) and SIGUSR2 back to serving.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use udrbd::frontend::{
    serve_dispatch, serve_until_signal, BlockTarget, DeviceConfig, Errno, Gate, MemDisk, Op,
    Request, Signals, ThreadedSink,
};

/// Counts what the kernel sent, printed at exit so the lab can check FLUSH and FUA arrive.
#[derive(Default)]
struct Counted {
    disk: Option<MemDisk>,
    reads: AtomicU64,
    writes: AtomicU64,
    fua_writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
}

impl BlockTarget for Counted {
    fn handle(&self, request: &Request, buf: &mut [u8]) -> Result<u32, Errno> {
        let counter = match request.op {
            Op::Read => &self.reads,
            Op::Write { fua: true } => &self.fua_writes,
            Op::Write { fua: false } => &self.writes,
            Op::Flush => &self.flushes,
            Op::Discard | Op::WriteZeroes => &self.discards,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.disk.as_ref().ok_or(Errno::EIO)?.handle(request, buf)
    }
}

impl Counted {
    fn report(&self) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "ublk-memdisk: stats reads={} writes={} fua_writes={} flushes={} discards={}",
            n(&self.reads),
            n(&self.writes),
            n(&self.fua_writes),
            n(&self.flushes),
            n(&self.discards)
        );
    }
}

struct Args {
    config: DeviceConfig,
    dispatch_workers: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut config = DeviceConfig::new("udrbd-memdisk", 256 << 20);
    let mut dispatch_workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        let small = |v: &str| {
            num(v).and_then(|n| u16::try_from(n).map_err(|_| format!("{flag} {v}: too large")))
        };
        match flag.as_str() {
            "--size-mib" => config.size_bytes = num(&value)? << 20,
            "--id" => {
                let id =
                    u32::try_from(num(&value)?).map_err(|_| format!("--id {value}: too large"))?;
                config.dev_id = Some(id);
            }
            "--queues" => config.nr_queues = small(&value)?,
            "--depth" => config.queue_depth = small(&value)?,
            "--logical-block" => {
                let bytes = num(&value)?;
                if !bytes.is_power_of_two() {
                    return Err(format!("--logical-block {value}: not a power of two"));
                }
                config.logical_block_shift = bytes.trailing_zeros() as u8;
            }
            "--dispatch" => dispatch_workers = Some(usize::from(small(&value)?)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Args {
        config,
        dispatch_workers,
    })
}

fn announce(dev_id: u32, size: u64) {
    println!("ublk-memdisk: ready /dev/ublkb{dev_id} {size} bytes");
    let _ = std::io::stdout().flush();
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ublk-memdisk: {e}");
            std::process::exit(2);
        }
    };
    let config = args.config;
    let disk = Arc::new(Counted {
        disk: Some(MemDisk::new(config.size_bytes)),
        ..Counted::default()
    });
    let stats = disk.clone();
    let size = config.size_bytes;
    let result = match args.dispatch_workers {
        None => serve_until_signal(&config, disk, move |dev_id| announce(dev_id, size)),
        Some(workers) => {
            let signals =
                Signals::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2]);
            let gate = Gate::default();
            let control = gate.clone();
            let sink = Arc::new(ThreadedSink::new(disk, workers));
            serve_dispatch(&config, sink, gate, move |dev_id, stopper| {
                announce(dev_id, size);
                loop {
                    match signals.wait() {
                        libc::SIGUSR1 => {
                            control.fail_fast(Errno::EIO);
                            println!("ublk-memdisk: fail-fast");
                        }
                        libc::SIGUSR2 => {
                            control.serve();
                            println!("ublk-memdisk: serving");
                        }
                        _ => break,
                    }
                    let _ = std::io::stdout().flush();
                }
                let _ = stopper.stop();
            })
        }
    };
    stats.report();
    let _ = std::io::stdout().flush();
    if let Err(e) = result {
        eprintln!("ublk-memdisk: {e}");
        std::process::exit(1);
    }
}
