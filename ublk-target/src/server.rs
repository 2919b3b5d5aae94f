//! The daemon process: pid lock, control socket server, and one [`Node`] for the resource.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::control::{
    self, Request, RequestEnvelope, Response, ResponseEnvelope, PROTOCOL_VERSION,
};
use crate::lifecycle::PidLock;
use crate::node::{Node, NodeOptions};

/// Runs the daemon for one resource until `down`.
pub fn serve(opts: NodeOptions) -> anyhow::Result<()> {
    let _lock = PidLock::acquire(&opts.run_dir, &opts.resource)?;
    let path = control::socket_path(&opts.run_dir, &opts.resource);
    // We hold the lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    info!(
        "drbd {}: udrbd {} started, pid {}, control socket {}",
        opts.resource,
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        path.display()
    );
    let node = Arc::new(Node::start(opts.clone())?);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if !peer_allowed(&stream) {
            warn!(
                "drbd {}: control connection from a non-root user refused",
                opts.resource
            );
            continue;
        }
        let node = node.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            if serve_client(&node, stream) {
                // `down`: the answer went out; leave.
                let _ = std::fs::remove_file(&path);
                info!("drbd: down, exiting");
                std::process::exit(0);
            }
        });
    }
    Ok(())
}

/// Root, or the daemon's own user (tests run unprivileged daemons).
fn peer_allowed(s: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of `len` bytes at the pointer we pass.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    rc == 0 && (cred.uid == 0 || cred.uid == me)
}

fn write_response(w: &mut UnixStream, response: Response) -> bool {
    let env = ResponseEnvelope {
        version: PROTOCOL_VERSION,
        response,
    };
    match serde_json::to_string(&env) {
        Ok(mut line) => {
            line.push('\n');
            w.write_all(line.as_bytes()).is_ok()
        }
        Err(_) => false,
    }
}

/// Serves one client; returns true after a `down` was answered.
fn serve_client(node: &Node, stream: UnixStream) -> bool {
    let Ok(mut w) = stream.try_clone() else {
        return false;
    };
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let env: RequestEnvelope = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                write_response(
                    &mut w,
                    Response::Error {
                        message: format!("control request: {e}"),
                    },
                );
                continue;
            }
        };
        if env.version != PROTOCOL_VERSION {
            write_response(
                &mut w,
                Response::Error { message: format!("control protocol version {} not supported (daemon speaks {PROTOCOL_VERSION})", env.version) },
            );
            continue;
        }
        match env.request {
            Request::Events { now, statistics } => {
                let rx = node.subscribe(now, statistics);
                for l in rx {
                    let end = now && l == "exists -";
                    if !write_response(&mut w, Response::Event { line: l }) || end {
                        return false;
                    }
                }
                return false;
            }
            Request::Down => {
                let resp = node.call(Request::Down);
                // A refused `down` (device held open) leaves the daemon running.
                let done = matches!(resp, Response::Ok);
                if !write_response(&mut w, resp) || done {
                    return done;
                }
            }
            req => {
                let resp = node.call(req);
                if !write_response(&mut w, resp) {
                    return false;
                }
            }
        }
    }
}
