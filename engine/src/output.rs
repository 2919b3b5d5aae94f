//! Everything the engine asks its driver to do. Drain with `Resource::poll_output()` until `None`.

use bytes::Bytes;

use crate::input::{AdminCommand, IoId, RequestId, Socket, Volume};
use crate::states::DrbdState;

#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes (one or more whole packets) to the socket, in order per socket.
    Send {
        socket: Socket,
        bytes: Bytes,
    },
    /// Start the connect loop (listen + connect, spec §2.2); report `Input::Connected`.
    Connect,
    /// Close both sockets (if any). A `Connect` may follow.
    Disconnect,
    DiskRead {
        io: IoId,
        volume: Volume,
        sector: u64,
        len_bytes: u32,
    },
    DiskWrite {
        io: IoId,
        volume: Volume,
        sector: u64,
        data: Bytes,
        fua: bool,
        preflush: bool,
    },
    DiskFlush {
        io: IoId,
        volume: Volume,
    },
    DiskDiscard {
        io: IoId,
        volume: Volume,
        sector: u64,
        len_bytes: u32,
    },
    /// Persist meta-data: write each (absolute byte offset on the meta-data device, bytes), then
    /// flush if `flush`, then report `Input::MetaDone`. `update` says the same thing semantically
    /// (for the simulator and logs).
    WriteMeta {
        io: IoId,
        volume: Volume,
        writes: Vec<MetaWrite>,
        flush: bool,
        update: MetaUpdate,
    },
    /// An upper-layer request is finished. Reads return the data.
    Complete {
        request: RequestId,
        result: Result<Option<Bytes>, RequestError>,
    },
    /// The result of one `Input::Admin`, in command order.
    AdminDone {
        command: AdminCommand,
        result: Result<(), AdminRefusal>,
    },
    /// One volume's state changed (events2 / kernel log material).
    StateChanged(StateChange),
    /// A kernel-like log message ("Handshake successful: ...").
    Log {
        level: LogLevel,
        volume: Option<Volume>,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaWrite {
    /// Absolute byte offset on the meta-data device (for internal meta-data: the backing device).
    pub offset_bytes: u64,
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaUpdate {
    /// The superblock with these values (magic 84_UNCLEAN while attached, like the kernel).
    Superblock {
        uuids: [u64; 4],
        flags: u32,
        la_size_sect: u64,
    },
    /// Bitmap words `first_word..first_word + words.len()` now hold `words`.
    Bitmap { first_word: u64, words: Vec<u64> },
    /// An activity-log transaction; after it `hot_extents` are the hot set (extent numbers).
    ActivityLog {
        tr_number: u32,
        hot_extents: Vec<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Neither the local disk nor the peer could serve it (EIO upward).
    Io,
    /// No usable data on this node (diskless and not connected to an UpToDate peer).
    NoData,
    /// The volume does not exist / request out of range.
    Invalid,
    /// A write to a Secondary (EROFS upward).
    ReadOnly,
}

/// A refused admin command: the kernel's text and drbdsetup's exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRefusal {
    /// `enum drbd_state_rv` (negative) or `enum drbd_ret_code` (≥ 100).
    pub code: i32,
    /// As drbdsetup prints it, e.g. "Refusing to be Primary while peer is not outdated".
    pub text: String,
    /// drbdsetup's exit code for this refusal (state changes: 11; `ERR_*` codes: 10).
    pub exit_code: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
}

/// One volume's state before and after (the kernel reports per minor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub volume: Volume,
    pub old: DrbdState,
    pub new: DrbdState,
}

impl StateChange {
    /// `role( Secondary -> Primary ) conn( WFConnection -> Connected )`.
    pub fn log_line(&self) -> String {
        DrbdState::change_line(&self.old, &self.new)
    }

    /// `drbdsetup events2` "change" lines for this transition (spec drbd-config-and-tools.md §5).
    pub fn events2_lines(&self, resource: &str) -> Vec<String> {
        let (o, n) = (&self.old, &self.new);
        let v = self.volume.0;
        let mut lines = Vec::new();
        if o.role != n.role {
            lines.push(format!("change resource name:{resource} role:{}", n.role));
        }
        if o.disk != n.disk {
            lines.push(format!(
                "change device name:{resource} volume:{v} disk:{}",
                n.disk
            ));
        }
        if o.conn.events2_connection() != n.conn.events2_connection() || o.peer != n.peer {
            lines.push(format!(
                "change connection name:{resource} peer-node-id:1 connection:{} role:{}",
                n.conn.events2_connection(),
                n.peer
            ));
        }
        if o.conn != n.conn || o.pdsk != n.pdsk {
            lines.push(format!(
                "change peer-device name:{resource} peer-node-id:1 volume:{v} replication:{} peer-disk:{}",
                n.conn.events2_replication(),
                n.pdsk
            ));
        }
        lines
    }
}
