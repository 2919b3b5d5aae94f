//! `udrbd`: the daemon for one DRBD resource. Usually started by `udrbdadm up` (or systemd's
//! `udrbd@RESOURCE.service`); configured over its control socket.

use std::path::PathBuf;

use clap::Parser;

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
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
        run_dir: args
            .run_dir
            .unwrap_or_else(udrbd::lifecycle::run_dir_from_env),
    };
    match udrbd::server::serve(opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udrbd: {e:#}");
            std::process::ExitCode::from(20)
        }
    }
}
