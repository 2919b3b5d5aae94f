//! `udrbd`: the daemon for one DRBD resource. Usually started by `udrbdadm up` (or systemd's
//! `udrbd@RESOURCE.service`); configured over its control socket. With `write`/`read` it is a
//! client of a running daemon instead: the upper-layer I/O path for hosts without ublk.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use udrbd::control::{self, Client, Request, Response};

#[derive(Parser, Debug)]
#[command(
    name = "udrbd",
    version,
    about = "user-space DRBD 8.4 node for one resource"
)]
struct Args {
    /// The resource name (as in drbd.conf).
    #[arg(long)]
    resource: String,
    /// Directory for the pid file and control socket [env UDRBD_RUN_DIR, default /run/udrbd].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Use plain pread/pwrite instead of io_uring.
    #[arg(long)]
    no_uring: bool,
    #[command(subcommand)]
    io: Option<Io>,
}

#[derive(Subcommand, Debug)]
enum Io {
    /// Write a file's bytes (a multiple of 512) at SECTOR of volume 0 through the running daemon;
    /// returns when the write is complete (protocol C: on both nodes).
    Write {
        #[arg(long)]
        sector: u64,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value_t = 0)]
        volume: u16,
    },
    /// Expose the volume as /dev/ublkbN; prints the device, or why ublk cannot be used.
    Expose {
        #[arg(long, default_value_t = 0)]
        volume: u16,
    },
    /// Read LEN bytes at SECTOR of volume 0 through the running daemon into a file.
    Read {
        #[arg(long)]
        sector: u64,
        #[arg(long)]
        len: u32,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        volume: u16,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(udrbd::lifecycle::run_dir_from_env);
    if let Some(io) = args.io {
        return match client_io(&run_dir, &args.resource, io) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("udrbd: {e:#}");
                std::process::ExitCode::from(10)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UDRBD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let opts = udrbd::node::NodeOptions {
        resource: args.resource,
        prefer_uring: !args.no_uring,
        run_dir,
    };
    match udrbd::server::serve(opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udrbd: {e:#}");
            std::process::ExitCode::from(20)
        }
    }
}

fn client_io(run_dir: &std::path::Path, res: &str, io: Io) -> anyhow::Result<()> {
    let path = control::socket_path(run_dir, res);
    let mut c =
        Client::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    match io {
        Io::Write {
            sector,
            input,
            volume,
        } => {
            let data = std::fs::read(&input).with_context(|| input.display().to_string())?;
            if data.len() % 512 != 0 {
                bail!(
                    "{}: {} bytes is not a multiple of 512",
                    input.display(),
                    data.len()
                );
            }
            // One request per 64 KiB keeps control-socket lines small.
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                let s = sector + (i as u64) * 128;
                match c.call(Request::Write {
                    volume,
                    sector: s,
                    data_hex: control::to_hex(chunk),
                })? {
                    Response::Ok => {}
                    other => bail!("write at sector {s}: {other:?}"),
                }
            }
            Ok(())
        }
        Io::Expose { volume } => match c.call(Request::Expose { volume })? {
            Response::Exposed { device } => {
                println!("{device}");
                Ok(())
            }
            Response::Error { message } => bail!("{message}"),
            other => bail!("expose: {other:?}"),
        },
        Io::Read {
            sector,
            len,
            output,
            volume,
        } => match c.call(Request::Read {
            volume,
            sector,
            len,
        })? {
            Response::Data { data_hex } => {
                let data = control::from_hex(&data_hex).context("daemon sent bad hex")?;
                std::fs::write(&output, data).with_context(|| output.display().to_string())
            }
            other => bail!("read at sector {sector}: {other:?}"),
        },
    }
}
