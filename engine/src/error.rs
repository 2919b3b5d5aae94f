//! Engine errors sorted by blame (rustls style), and the one place that maps an error to its
//! consequence.

use crate::output::AdminRefusal;
use crate::states::ConnState;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer sent something that decodes but breaks the protocol.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The peer is legal but we cannot work with it (versions, policies, sizes, auth).
    #[error("peer incompatible: {0}")]
    PeerIncompatible(#[from] PeerIncompatible),
    /// An admin command was refused.
    #[error("refused: {}", .0.text)]
    Refused(AdminRefusal),
    /// The local disk failed.
    #[error("local I/O error on volume {volume}: {what}")]
    LocalIo { volume: u16, what: &'static str },
    /// The configuration handed to `Resource::new` is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    #[error("expected {expected}, got {got}")]
    UnexpectedPacket {
        expected: &'static str,
        got: &'static str,
    },
    #[error("unknown packet command 0x{0:04x}")]
    UnknownCommand(u16),
    #[error("{cmd}: payload length {got}, expected {expected}")]
    PayloadLength {
        cmd: &'static str,
        expected: String,
        got: usize,
    },
    #[error("framing: {0}")]
    Framing(String),
    #[error("{cmd} for volume {volume}, which does not exist")]
    UnknownVolume { cmd: &'static str, volume: u16 },
    #[error("{cmd}: no request with block_id {block_id:#x} sector {sector}")]
    UnknownRequest {
        cmd: &'static str,
        block_id: u64,
        sector: u64,
    },
    #[error("P_BARRIER_ACK for barrier {got:#x} (set size {set_size}), expected {expected:#x} ({expected_size})")]
    BarrierAckMismatch {
        got: u32,
        set_size: u32,
        expected: u32,
        expected_size: u32,
    },
    #[error("{cmd}: sector {sector} + {len} bytes beyond capacity {capacity}")]
    BeyondCapacity {
        cmd: &'static str,
        sector: u64,
        len: u32,
        capacity: u64,
    },
    #[error("invalid state word 0x{0:08x}")]
    BadStateWord(u32),
    #[error("bitmap: {0}")]
    Bitmap(String),
    #[error("PingAck did not arrive in time")]
    PingTimeout,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerIncompatible {
    #[error("incompatible DRBD dialects: I support {my_min}-{my_max}, peer supports {peer_min}-{peer_max}")]
    Dialect {
        my_min: u32,
        my_max: u32,
        peer_min: u32,
        peer_max: u32,
    },
    #[error("{0}")]
    Protocol(&'static str),
    #[error("Authentication of peer failed")]
    AuthFailed,
    #[error("Peer presented the same challenge!")]
    SameChallenge,
    #[error("expected AuthChallenge packet, received: {0} (0x{1:04x})")]
    NoAuth(&'static str, u16),
    #[error("The peer's disk size is too small! ({peer} < {mine} sectors)")]
    DiskTooSmall { peer: u64, mine: u64 },
    #[error("{0}")]
    SyncHandshake(String),
}

/// What an error does to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consequence {
    /// Drop the sockets; the connect loop retries (conn goes through this state).
    Reconnect(ConnState),
    /// Drop the sockets and stay StandAlone (admin must `connect`).
    StandAlone,
    /// Detach the local disk (on-io-error detach).
    Detach,
    /// Refuse the admin command; nothing else changes.
    Refuse,
}

impl Error {
    /// The kernel's reaction to each class of error.
    pub fn consequence(&self) -> Consequence {
        match self {
            Error::PeerMisbehaved(PeerMisbehaved::PingTimeout) => {
                Consequence::Reconnect(ConnState::NetworkFailure)
            }
            Error::PeerMisbehaved(_) => Consequence::Reconnect(ConnState::ProtocolError),
            // Auth failures, dialect and P_PROTOCOL mismatches give up for good (receiver:
            // conn_connect returns -1 → C_DISCONNECTING); a failed sync handshake too.
            Error::PeerIncompatible(_) => Consequence::StandAlone,
            Error::Refused(_) => Consequence::Refuse,
            Error::LocalIo { .. } => Consequence::Detach,
            Error::Config(_) => Consequence::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consequences_follow_the_kernel() {
        let cases: [(Error, Consequence); 5] = [
            (
                PeerMisbehaved::UnknownCommand(0x99).into(),
                Consequence::Reconnect(ConnState::ProtocolError),
            ),
            (
                PeerMisbehaved::PingTimeout.into(),
                Consequence::Reconnect(ConnState::NetworkFailure),
            ),
            (PeerIncompatible::AuthFailed.into(), Consequence::StandAlone),
            (
                Error::LocalIo {
                    volume: 0,
                    what: "write",
                },
                Consequence::Detach,
            ),
            (
                Error::Refused(AdminRefusal {
                    code: -2,
                    text: String::new(),
                    exit_code: 11,
                }),
                Consequence::Refuse,
            ),
        ];
        for (e, c) in cases {
            assert_eq!(e.consequence(), c, "{e}");
        }
    }
}
