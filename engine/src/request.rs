//! The Primary's transfer log: upper-layer requests grouped into write epochs (spec §7.1). A
//! request stays until its epoch's `P_BARRIER_ACK` arrives, so a connection loss can still mark
//! every write the peer did not confirm as stable out of sync.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::input::{RequestId, Volume};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqKind {
    Write,
    Read,
    Discard,
}

/// The local half of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// No local disk takes part.
    None,
    /// Waiting for activity-log transactions to be durable.
    WaitAl,
    Pending,
    Done {
        ok: bool,
    },
}

/// The network half of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Not replicated (no connection / peer disk unusable): its range is out of sync.
    None,
    /// Sent; waiting for the ack the protocol asks for.
    Sent,
    /// `P_RECV_ACK` seen (protocol B satisfied).
    RecvAcked,
    /// `P_WRITE_ACK` / `P_RS_WRITE_ACK` / `P_DATA_REPLY` seen.
    Acked { in_sync: bool },
    /// `P_NEG_ACK` / `P_NEG_DREPLY`: the peer failed it.
    Failed,
    /// The connection was lost before the ack.
    Lost,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub id: RequestId,
    pub volume: Volume,
    pub kind: ReqKind,
    pub sector: u64,
    pub len_bytes: u32,
    pub data: Option<Bytes>,
    pub fua: bool,
    pub preflush: bool,
    /// Epoch (barrier number) this write belongs to.
    pub epoch: u32,
    pub local: Local,
    pub net: Net,
    /// AL extents referenced (released at barrier ack or local completion when disconnected).
    pub al_extents: Vec<u32>,
    /// AL transactions still outstanding before the request may start.
    pub al_pending: u32,
    /// Cold extents whose AL transaction this request waits for.
    pub al_wait: Vec<u32>,
    pub completed: bool,
    pub barrier_acked: bool,
    /// Read result.
    pub read_data: Option<Bytes>,
    /// Sent during a resync with DP_MAY_SET_IN_SYNC.
    pub may_set_in_sync: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlEpoch {
    pub nr: u32,
    /// Writes sent to the peer in this epoch (the peer's `set_size`).
    pub writes: u32,
    pub barrier_sent: bool,
}

/// Requests by cookie (the `block_id` we send) and the open epochs, oldest first.
#[derive(Clone, Debug, Default)]
pub struct TransferLog {
    pub reqs: BTreeMap<u64, Request>,
    pub epochs: VecDeque<TlEpoch>,
    pub current: u32,
    next_cookie: u64,
}

impl TransferLog {
    pub fn new(first_epoch: u32) -> TransferLog {
        let mut t = TransferLog {
            current: first_epoch,
            next_cookie: 1,
            ..Default::default()
        };
        t.epochs.push_back(TlEpoch {
            nr: first_epoch,
            writes: 0,
            barrier_sent: false,
        });
        t
    }
    /// Starts epoch numbering afresh (a new connection); requests stay.
    pub fn reset_epochs(&mut self, first_epoch: u32) {
        self.epochs.clear();
        self.current = first_epoch;
        self.epochs.push_back(TlEpoch {
            nr: first_epoch,
            writes: 0,
            barrier_sent: false,
        });
    }
    pub fn cookie(&mut self) -> u64 {
        let c = self.next_cookie;
        self.next_cookie += 1;
        c
    }
    pub fn current_writes(&self) -> u32 {
        self.epochs.back().map(|e| e.writes).unwrap_or(0)
    }
    /// Counts one replicated write in the current epoch.
    pub fn count_write(&mut self) {
        if let Some(e) = self.epochs.back_mut() {
            e.writes += 1;
        }
    }
    /// Closes the current epoch (if it holds writes) and opens the next; returns the closed
    /// epoch number when a `P_BARRIER` must be sent for it.
    pub fn close_epoch(&mut self) -> Option<u32> {
        let e = self.epochs.back_mut()?;
        if e.writes == 0 || e.barrier_sent {
            return None;
        }
        e.barrier_sent = true;
        let nr = e.nr;
        self.current = self.current.wrapping_add(1);
        self.epochs.push_back(TlEpoch {
            nr: self.current,
            writes: 0,
            barrier_sent: false,
        });
        Some(nr)
    }
    /// Requests overlapping a range, for conflict checks.
    pub fn overlaps(
        &self,
        volume: Volume,
        sector: u64,
        len_bytes: u32,
    ) -> impl Iterator<Item = &Request> {
        let end = sector + len_bytes as u64 / 512;
        self.reqs.values().filter(move |r| {
            r.volume == volume && r.sector < end && sector < r.sector + r.len_bytes as u64 / 512
        })
    }
}
