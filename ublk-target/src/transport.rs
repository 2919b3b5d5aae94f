//! The two TCP sockets per peer, established as DRBD 8.4 does it (spec §2.2, `conn_connect`).
//!
//! Both nodes listen on their own address and connect to the peer's at the same time. The first
//! outgoing connection becomes the data socket and announces itself with a header-only
//! `P_INITIAL_DATA`; the second becomes the meta socket with `P_INITIAL_META`. Incoming
//! connections are classified by their first header. The node that *accepted* the meta socket
//! holds `RESOLVE_CONFLICTS`, the tie-breaker. When both nodes' connects cross, each side keeps
//! the newest socket of a kind and, with probability ½, waits for another incoming connection, so
//! the dance settles.
//!
//! This module decides nothing about the protocol above the initial packets: once both sockets
//! exist and pass the liveness check, the engine takes over (features, auth, ...).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tracing::{debug, warn};

/// `DRBD_MAGIC` of the h80 header (spec §3).
pub const DRBD_MAGIC: u32 = 0x8374_0267;
/// `DRBD_MAGIC_BIG` of the h95 header (spec §3); 8 bytes like h80.
pub const DRBD_MAGIC_BIG: u16 = 0x835a;
/// `P_INITIAL_META` (spec §4): first packet on a connected-out meta socket.
pub const P_INITIAL_META: u16 = 0xfff1;
/// `P_INITIAL_DATA` (spec §4): first packet on a connected-out data socket.
pub const P_INITIAL_DATA: u16 = 0xfff2;
/// Size of the h80 header in bytes; before features are agreed, the kernel assumes protocol 80.
pub const H80_LEN: usize = 0x8;

/// Timing and buffer options of `conn_connect`, from the resource's `net { }` section.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// For log lines (`drbd r0: initial packet S crossed`).
    pub resource: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// `connect-int`: outgoing connect timeout and incoming wait (±1/7 jitter).
    pub connect_int: Duration,
    /// `ping-timeout`: the first header of an accepted socket must arrive within 4× this.
    pub ping_timeout: Duration,
    /// `socket-check-timeout` (0 means use `ping-timeout`): settle time before the liveness check.
    pub socket_check_timeout: Duration,
    /// `sndbuf-size` / `rcvbuf-size` in bytes; 0 leaves the kernel's auto-tuning.
    pub sndbuf_size: usize,
    pub rcvbuf_size: usize,
}

/// The established pair.
#[derive(Debug)]
pub struct SocketPair {
    pub data: TcpStream,
    pub meta: TcpStream,
    /// `RESOLVE_CONFLICTS`: set on the node that accepted the meta socket.
    pub resolve_conflicts: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("connection attempt cancelled")]
    Cancelled,
}

/// What the first header of an accepted socket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    Data,
    Meta,
    /// Anything else (another command, a bad magic, a short read): the socket is closed.
    Other(&'static str),
}

/// Binds the listening socket on our own address (SO_REUSEADDR, backlog 5, as the kernel does).
pub fn listen(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    let err = |source| TransportError::Listen { addr, source };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    sock.set_reuse_address(true).map_err(err)?;
    sock.bind(&addr.into()).map_err(err)?;
    sock.listen(5).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    Ok(sock.into())
}

/// Runs the `conn_connect` loop until both sockets exist and are alive, or `cancel` is set.
pub fn establish(
    params: &ConnectParams,
    listener: &TcpListener,
    cancel: &Arc<AtomicBool>,
) -> Result<SocketPair, TransportError> {
    let mut rng = rand::thread_rng();
    let mut data: Option<TcpStream> = None;
    let mut meta: Option<TcpStream> = None;
    let mut resolve_conflicts = false;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(TransportError::Cancelled);
        }
        if let Some(s) = try_connect(params) {
            if data.is_none() {
                if send_first_packet(&s, P_INITIAL_DATA).is_ok() {
                    data = Some(s);
                }
            } else if meta.is_none() {
                resolve_conflicts = false;
                if send_first_packet(&s, P_INITIAL_META).is_ok() {
                    meta = Some(s);
                }
            }
        }
        if both_established(params, &mut data, &mut meta, cancel) {
            break;
        }
        // Wait for incoming connections; a crossed initial packet may send us back here at once.
        loop {
            let Some(s) = wait_for_connect(params, listener, cancel, &mut rng) else {
                break;
            };
            let first = receive_first_packet(&s, params.ping_timeout * 4);
            socket_okay(&mut data);
            socket_okay(&mut meta);
            let crossed = match first {
                FirstPacket::Data => {
                    let crossed = data.is_some();
                    if crossed {
                        warn!("drbd {}: initial packet S crossed", params.resource);
                    }
                    data = Some(s);
                    crossed
                }
                FirstPacket::Meta => {
                    resolve_conflicts = true;
                    let crossed = meta.is_some();
                    if crossed {
                        warn!("drbd {}: initial packet M crossed", params.resource);
                    }
                    meta = Some(s);
                    crossed
                }
                FirstPacket::Other(why) => {
                    warn!(
                        "drbd {}: Error receiving initial packet ({why})",
                        params.resource
                    );
                    drop(s);
                    true
                }
            };
            // Randomize: with probability ½ wait for yet another incoming connection.
            if !(crossed && rng.gen_bool(0.5)) {
                break;
            }
        }
        if both_established(params, &mut data, &mut meta, cancel) {
            break;
        }
    }
    let (Some(data), Some(meta)) = (data, meta) else {
        unreachable!("both_established returned true only with both sockets present");
    };
    configure(params, &data, &meta);
    debug!(
        "drbd {}: data and meta sockets established, resolve_conflicts={resolve_conflicts}",
        params.resource
    );
    Ok(SocketPair {
        data,
        meta,
        resolve_conflicts,
    })
}

/// Outgoing connect from our own IP (ephemeral port) with `connect-int` as timeout.
fn try_connect(params: &ConnectParams) -> Option<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(params.local),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .ok()?;
    let mut src = params.local;
    src.set_port(0);
    sock.bind(&src.into()).ok()?;
    // A refused connect returns at once; a silent peer would block for the whole interval, so
    // the attempt is capped to keep a disconnect responsive, and retried on the next round.
    let timeout = Duration::from_millis(500).min(params.connect_int);
    if let Err(e) = sock.connect_timeout(&params.peer.into(), timeout) {
        debug!("connect to {} failed: {e}", params.peer);
        return None;
    }
    Some(sock.into())
}

/// Writes the header-only initial packet (h80, length 0).
fn send_first_packet(mut s: &TcpStream, cmd: u16) -> io::Result<()> {
    s.write_all(&h80(cmd, 0))
}

/// An h80 header (spec §3): magic u32, command u16, length u16, all big-endian.
pub fn h80(cmd: u16, len: u16) -> [u8; H80_LEN] {
    let mut h = [0u8; H80_LEN];
    h[0..4].copy_from_slice(&DRBD_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&cmd.to_be_bytes());
    h[6..8].copy_from_slice(&len.to_be_bytes());
    h
}

/// Waits for an incoming connection for `connect-int` ± 1/7 (random), in short slices.
fn wait_for_connect(
    params: &ConnectParams,
    listener: &TcpListener,
    cancel: &AtomicBool,
    rng: &mut impl Rng,
) -> Option<TcpStream> {
    let base = params.connect_int;
    let wait = if rng.gen_bool(0.5) {
        base + base / 7
    } else {
        base - base / 7
    };
    let deadline = Instant::now() + wait;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        match listener.accept() {
            Ok((s, from)) => {
                debug!("accepted connection from {from}");
                let _ = s.set_nonblocking(false);
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!("accept failed: {e}");
                return None;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        poll_readable(
            listener.as_raw_fd(),
            (deadline - now).min(Duration::from_millis(100)),
        );
    }
}

/// Reads and classifies the first header of an accepted socket (spec §2.2).
pub fn receive_first_packet(mut s: &TcpStream, timeout: Duration) -> FirstPacket {
    let _ = s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
    let mut h = [0u8; H80_LEN];
    let res = s.read_exact(&mut h);
    let _ = s.set_read_timeout(None);
    if res.is_err() {
        return FirstPacket::Other("no header within the receive timeout");
    }
    classify_first_header(&h)
}

/// Classifies the 8 bytes of a first header; both 8-byte layouts (h80, h95) are accepted, as the
/// kernel's `decode_header` does before protocol 100 is agreed.
pub fn classify_first_header(h: &[u8; H80_LEN]) -> FirstPacket {
    let cmd = if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) == DRBD_MAGIC {
        u16::from_be_bytes([h[4], h[5]])
    } else if u16::from_be_bytes([h[0], h[1]]) == DRBD_MAGIC_BIG {
        u16::from_be_bytes([h[2], h[3]])
    } else {
        return FirstPacket::Other("bad magic");
    };
    match cmd {
        P_INITIAL_DATA => FirstPacket::Data,
        P_INITIAL_META => FirstPacket::Meta,
        _ => FirstPacket::Other("unexpected command"),
    }
}

/// `connection_established`: both sockets exist; after the settle time both are still alive.
fn both_established(
    params: &ConnectParams,
    data: &mut Option<TcpStream>,
    meta: &mut Option<TcpStream>,
    cancel: &AtomicBool,
) -> bool {
    if data.is_none() || meta.is_none() {
        return false;
    }
    let settle = if params.socket_check_timeout.is_zero() {
        params.ping_timeout
    } else {
        params.socket_check_timeout
    };
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(settle));
    }
    socket_okay(data);
    socket_okay(meta);
    data.is_some() && meta.is_some()
}

/// `drbd_socket_okay`: a non-blocking 4-byte MSG_PEEK; data or EAGAIN means alive, EOF or an
/// error means dead, and a dead socket is dropped.
fn socket_okay(s: &mut Option<TcpStream>) {
    let Some(sock) = s.as_ref() else { return };
    let mut buf = [0u8; 4];
    // SAFETY: `buf` is a valid writable 4-byte buffer and the fd is owned by `sock` for the call.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let alive = if n > 0 {
        true
    } else if n == 0 {
        false
    } else {
        io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    };
    if !alive {
        *s = None;
    }
}

/// Socket options after the pair is formed (spec §2.2 step 4).
fn configure(params: &ConnectParams, data: &TcpStream, meta: &TcpStream) {
    for (s, prio) in [
        (data, TC_PRIO_INTERACTIVE_BULK),
        (meta, TC_PRIO_INTERACTIVE),
    ] {
        let _ = s.set_nodelay(true);
        let sr = SockRef::from(s);
        if params.sndbuf_size > 0 {
            let _ = sr.set_send_buffer_size(params.sndbuf_size);
        }
        if params.rcvbuf_size > 0 {
            let _ = sr.set_recv_buffer_size(params.rcvbuf_size);
        }
        let _ = set_priority(s, prio);
    }
}

/// `TC_PRIO_INTERACTIVE_BULK` (include/uapi/linux/pkt_sched.h), used for the data socket.
const TC_PRIO_INTERACTIVE_BULK: libc::c_int = 0x4;
/// `TC_PRIO_INTERACTIVE`, used for the meta socket.
const TC_PRIO_INTERACTIVE: libc::c_int = 0x6;

fn set_priority(s: &TcpStream, prio: libc::c_int) -> io::Result<()> {
    // SAFETY: SO_PRIORITY takes a c_int; we pass a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            (&prio as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn poll_readable(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_headers_are_the_kernels_bytes() {
        assert_eq!(
            h80(P_INITIAL_DATA, 0),
            [0x83, 0x74, 0x02, 0x67, 0xff, 0xf2, 0, 0]
        );
        assert_eq!(
            h80(P_INITIAL_META, 0),
            [0x83, 0x74, 0x02, 0x67, 0xff, 0xf1, 0, 0]
        );
    }

    #[test]
    fn classify_accepts_h80_and_h95_and_rejects_others() {
        assert_eq!(
            classify_first_header(&h80(P_INITIAL_DATA, 0)),
            FirstPacket::Data
        );
        assert_eq!(
            classify_first_header(&[0x83, 0x5a, 0xff, 0xf1, 0, 0, 0, 0]),
            FirstPacket::Meta
        );
        assert!(matches!(
            classify_first_header(&h80(0xfffe, 72)),
            FirstPacket::Other(_)
        ));
        assert!(matches!(
            classify_first_header(&[0; 8]),
            FirstPacket::Other(_)
        ));
    }
}
