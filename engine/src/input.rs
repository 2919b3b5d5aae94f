//! Everything the engine reacts to. The daemon (or the simulator) calls
//! `Resource::handle(now, input)` for each.

use bytes::Bytes;

use crate::config::AttachedDisk;

/// Which of the two TCP streams of a connection (spec §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// Bulk, ordered: handshake, data, requests, bitmap, barriers.
    Data,
    /// Small latency-critical packets: pings, acks, barrier acks, state-change replies.
    Meta,
}

/// Volume number inside the resource (h100 header `volume`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Volume(pub u16);

/// Tag of one local disk or meta-data operation; echoed back in `DiskDone` / `MetaDone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

/// Tag of one upper-layer (block device) request; echoed back in `Output::Complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why a local disk operation failed (the daemon maps errno to this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoErrorKind {
    /// EIO and friends: the medium failed.
    Io,
    /// The operation was cancelled (detach, shutdown).
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The daemon has both sockets (spec §2.2, including `P_INITIAL_DATA`/`P_INITIAL_META` and
    /// the crossing rules). `resolve_conflicts` is true on the node that *accepted* the meta
    /// socket. The engine now runs the handshake.
    Connected { resolve_conflicts: bool },
    /// Bytes read from one socket; any split is fine, the engine reassembles packets.
    Received { socket: Socket, bytes: Bytes },
    /// Either socket closed or failed (or a send timed out: `timed_out` = true → `Timeout`).
    ConnectionLost { timed_out: bool },
    /// A `DiskRead`/`DiskWrite`/`DiskFlush`/`DiskDiscard` finished. Reads return the data.
    DiskDone {
        io: IoId,
        result: Result<Option<Bytes>, IoErrorKind>,
    },
    /// A `WriteMeta` finished (durably, if it asked for a flush).
    MetaDone {
        io: IoId,
        result: Result<(), IoErrorKind>,
    },
    /// An upper-layer request on one volume.
    Request {
        id: RequestId,
        volume: Volume,
        op: RequestOp,
    },
    /// An administrative command (`drbdsetup`-level verb).
    Admin(AdminCommand),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// `len_bytes` is a multiple of 512.
    Read { sector: u64, len_bytes: u32 },
    /// `data.len()` is a multiple of 512. `fua`: durable before completion; `preflush`: flush
    /// the cache before writing (REQ_PREFLUSH).
    Write {
        sector: u64,
        data: Bytes,
        fua: bool,
        preflush: bool,
    },
    /// An empty flush: closes the current epoch (spec §7.1 4c) and flushes the local disk.
    Flush,
    /// Discard/trim of a range.
    Discard { sector: u64, len_bytes: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// `drbdsetup primary [--force]` (resource-wide in 8.4: every volume).
    Primary {
        force: bool,
    },
    Secondary,
    /// `drbdsetup connect`: leave StandAlone and start connecting.
    Connect {
        discard_my_data: bool,
    },
    /// `drbdsetup disconnect [--force]`.
    Disconnect {
        force: bool,
    },
    /// `drbdsetup attach`: the daemon has read the meta-data.
    Attach {
        volume: Volume,
        disk: Box<AttachedDisk>,
    },
    Detach {
        volume: Volume,
    },
    Invalidate {
        volume: Volume,
    },
    InvalidateRemote {
        volume: Volume,
    },
    Outdate {
        volume: Volume,
    },
    NewCurrentUuid {
        volume: Volume,
        clear_bitmap: bool,
    },
    PauseSync {
        volume: Volume,
    },
    ResumeSync {
        volume: Volume,
    },
}
