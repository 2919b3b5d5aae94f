//! ublk-memdisk: serves an in-memory disk as /dev/ublkb<id> until SIGTERM/SIGINT.
//!
//! Used by the VM lab to check the ublk path end to end. Prints
//! `ublk-memdisk: ready /dev/ublkb<id> <size> bytes` once the device exists.
//!
//! usage: ublk-memdisk [--size-mib N] [--id N] [--queues N] [--depth N] [--logical-block N]

use std::io::Write;
use std::sync::Arc;
use udrbd::frontend::{serve_until_signal, DeviceConfig, MemDisk};

fn parse_args() -> Result<DeviceConfig, String> {
    let mut config = DeviceConfig::new("udrbd-memdisk", 256 << 20);
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
                config.dev_id = Some(
                    u32::try_from(num(&value)?).map_err(|_| format!("--id {value}: too large"))?,
                )
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
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ublk-memdisk: {e}");
            std::process::exit(2);
        }
    };
    let disk = Arc::new(MemDisk::new(config.size_bytes));
    let size = config.size_bytes;
    let result = serve_until_signal(&config, disk, move |dev_id| {
        println!("ublk-memdisk: ready /dev/ublkb{dev_id} {size} bytes");
        let _ = std::io::stdout().flush();
    });
    if let Err(e) = result {
        eprintln!("ublk-memdisk: {e}");
        std::process::exit(1);
    }
}
