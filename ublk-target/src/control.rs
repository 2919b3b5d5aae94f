//! The control socket: a Unix stream socket per resource (`<run-dir>/<resource>.sock`, mode 0600,
//! peers must be root or the daemon's own user), carrying one JSON object per line.
//!
//! Protocol version 1. The client sends `{"version":1,"request":{...}}`; the daemon answers with
//! one `{"version":1,"response":{...}}` line. `Events` is the exception: the daemon keeps
//! writing `{"version":1,"response":{"Event":{"line":...}}}` lines until the client hangs up.
//! Unknown versions are refused with an error response naming both versions.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::StatusSnapshot;

pub const PROTOCOL_VERSION: u32 = 1;

/// Net options as `drbdsetup connect` passes them (already resolved by udrbdadm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetOptions {
    pub protocol: char,
    pub cram_hmac_alg: Option<String>,
    pub shared_secret: Option<String>,
    pub after_sb_0pri: String,
    pub after_sb_1pri: String,
    pub after_sb_2pri: String,
    pub rr_conflict: String,
    pub allow_two_primaries: bool,
    pub always_asbp: bool,
    pub data_integrity_alg: Option<String>,
    pub verify_alg: Option<String>,
    pub csums_alg: Option<String>,
    pub ping_int_s: u32,
    pub ping_timeout_ds: u32,
    pub timeout_ds: u32,
    pub ko_count: u32,
    pub connect_int_s: u32,
    pub max_buffers: u32,
    pub max_epoch_size: u32,
    pub sndbuf_size: u64,
    pub rcvbuf_size: u64,
    pub socket_check_timeout_ds: u32,
    pub use_rle: bool,
    pub discard_my_data: bool,
}

impl Default for NetOptions {
    fn default() -> Self {
        // drbd_limits.h defaults (spec drbd-config-and-tools.md §1.3).
        NetOptions {
            protocol: 'C',
            cram_hmac_alg: None,
            shared_secret: None,
            after_sb_0pri: "disconnect".into(),
            after_sb_1pri: "disconnect".into(),
            after_sb_2pri: "disconnect".into(),
            rr_conflict: "disconnect".into(),
            allow_two_primaries: false,
            always_asbp: false,
            data_integrity_alg: None,
            verify_alg: None,
            csums_alg: None,
            ping_int_s: 10,
            ping_timeout_ds: 5,
            timeout_ds: 60,
            ko_count: 7,
            connect_int_s: 10,
            max_buffers: 2048,
            max_epoch_size: 2048,
            sndbuf_size: 0,
            rcvbuf_size: 0,
            socket_check_timeout_ds: 0,
            use_rle: true,
            discard_my_data: false,
        }
    }
}

/// Disk options as `drbdsetup attach` passes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskOptions {
    pub resync_rate_kib: u32,
    pub c_plan_ahead_ds: u32,
    pub c_delay_target_ds: u32,
    pub c_fill_target_sect: u32,
    pub c_max_rate_kib: u32,
    pub al_extents: u32,
    pub fencing: String,
    pub size_sect: u64,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            resync_rate_kib: 250,
            c_plan_ahead_ds: 20,
            c_delay_target_ds: 10,
            c_fill_target_sect: 100,
            c_max_rate_kib: 102_400,
            al_extents: 1237,
            fencing: "dont-care".into(),
            size_sect: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity.
    Ping,
    /// `drbdsetup attach MINOR DISK META IDX`: `meta_index` None = internal.
    Attach {
        volume: u16,
        minor: u32,
        disk: String,
        meta_disk: String,
        meta_index: Option<i32>,
        options: DiskOptions,
    },
    Detach {
        volume: u16,
    },
    /// `drbdsetup connect RES LOCAL PEER [options]`.
    Connect {
        local: SocketAddr,
        peer: SocketAddr,
        options: NetOptions,
    },
    Disconnect,
    /// `drbdsetup net-options`: change net options (adjust).
    NetOptions {
        options: NetOptions,
    },
    Primary {
        force: bool,
    },
    Secondary,
    Invalidate {
        volume: u16,
    },
    InvalidateRemote {
        volume: u16,
    },
    NewCurrentUuid {
        volume: u16,
        clear_bitmap: bool,
    },
    Outdate {
        volume: u16,
    },
    PauseSync {
        volume: u16,
    },
    ResumeSync {
        volume: u16,
    },
    Status,
    /// Blocks until the connection is established or `timeout_s` passes (0 = forever).
    WaitConnect {
        timeout_s: u64,
    },
    /// Blocks until every volume is UpToDate/UpToDate and Connected (tests, demo).
    WaitSynced {
        timeout_s: u64,
    },
    /// Streams `drbdsetup events2` lines; with `now`, stops after `exists -`.
    Events {
        now: bool,
        statistics: bool,
    },
    /// The in-process write API over the socket; `data_hex` is the payload in hex.
    Write {
        volume: u16,
        sector: u64,
        data_hex: String,
    },
    Read {
        volume: u16,
        sector: u64,
        len: u32,
    },
    /// Expose the volume as `/dev/ublkbN` (the upper layer of a Primary); refused with the
    /// reason where the host has no ublk.
    Expose {
        volume: u16,
    },
    /// `drbdsetup down`: disconnect, detach, and exit the daemon.
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Pong {
        resource: String,
        pid: u32,
        io_mode: String,
    },
    /// A refused command: the kernel's text and drbdsetup's exit code.
    Refused {
        code: i32,
        text: String,
        exit_code: i32,
    },
    /// A request the daemon could not carry out (bad path, bad argument, ...).
    Error {
        message: String,
    },
    Status(Box<StatusSnapshot>),
    Data {
        data_hex: String,
    },
    Event {
        line: String,
    },
    TimedOut,
    /// The volume's ublk device.
    Exposed {
        device: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    pub version: u32,
    pub response: Response,
}

/// Path of a resource's control socket.
pub fn socket_path(run_dir: &Path, resource: &str) -> std::path::PathBuf {
    run_dir.join(format!("{resource}.sock"))
}

/// A connected client (used by udrbdadm and tests).
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> io::Result<Client> {
        let s = UnixStream::connect(path)?;
        let writer = s.try_clone()?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
        })
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.writer.set_read_timeout(t)
    }

    pub fn send(&mut self, request: Request) -> io::Result<()> {
        let env = RequestEnvelope {
            version: PROTOCOL_VERSION,
            request,
        };
        let mut line = serde_json::to_string(&env).map_err(io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())
    }

    /// Reads the next response line; `None` when the daemon closed the socket.
    pub fn recv(&mut self) -> io::Result<Option<Response>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let env: ResponseEnvelope = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("control socket: {e}"))
        })?;
        if env.version != PROTOCOL_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "control protocol version {} (expected {PROTOCOL_VERSION})",
                    env.version
                ),
            ));
        }
        Ok(Some(env.response))
    }

    pub fn call(&mut self, request: Request) -> io::Result<Response> {
        self.send(request)?;
        self.recv()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "daemon closed the control socket",
            )
        })
    }
}

/// Hex without a dependency: the control socket's data payloads are small (tests, demo).
pub fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 0xf) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_rejects() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn envelope_is_versioned_json() {
        let env = RequestEnvelope {
            version: PROTOCOL_VERSION,
            request: Request::Primary { force: true },
        };
        let s = serde_json::to_string(&env).unwrap();
        assert_eq!(s, r#"{"version":1,"request":{"Primary":{"force":true}}}"#);
    }
}
