//! Roles, connection states and disk states, spelled as the kernel prints them, and the 32-bit
//! state word of `P_STATE` (spec drbd-wire-protocol.md §9).
//!
//! Connection states of one resource (8.4 has a single peer):
//!
//! ```text
//!             connect                 both sockets up            sync handshake (§10)
//!  StandAlone ───────► Unconnected ─► WFConnection ─────────► WFReportParams ──┬──► Connected
//!      ▲                  ▲                                      │             ├──► WFBitMapS ─► SyncSource ─┐
//!      │ disconnect,      │ sockets closed                       │ refused     └──► WFBitMapT ─► WFSyncUUID  │
//!      │ refusal          │                                      ▼                              └► SyncTarget┤
//!      └──── Disconnecting │◄── NetworkFailure / BrokenPipe / Timeout / ProtocolError / TearDown ◄─────────────┘
//!                          │      (any established state on socket loss)     resync done ──► Connected
//!  invalidate(-remote) from Connected: StartingSyncT/S ─► WFSyncUUID / SyncSource
//! ```

use std::fmt;

/// `enum drbd_role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Unknown = 0,
    Primary = 1,
    Secondary = 2,
}

/// `enum drbd_conns` (values as on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnState {
    StandAlone = 0,
    Disconnecting = 1,
    Unconnected = 2,
    Timeout = 3,
    BrokenPipe = 4,
    NetworkFailure = 5,
    ProtocolError = 6,
    TearDown = 7,
    WFConnection = 8,
    WFReportParams = 9,
    Connected = 10,
    StartingSyncS = 11,
    StartingSyncT = 12,
    WFBitMapS = 13,
    WFBitMapT = 14,
    WFSyncUUID = 15,
    SyncSource = 16,
    SyncTarget = 17,
    VerifyS = 18,
    VerifyT = 19,
    PausedSyncS = 20,
    PausedSyncT = 21,
    Ahead = 22,
    Behind = 23,
}

/// `enum drbd_disk_state` (8.4 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskState {
    Diskless = 0,
    Attaching = 1,
    Failed = 2,
    Negotiating = 3,
    Inconsistent = 4,
    Outdated = 5,
    DUnknown = 6,
    Consistent = 7,
    UpToDate = 8,
}

impl Role {
    pub fn from_u32(v: u32) -> Option<Role> {
        Some(match v {
            0 => Role::Unknown,
            1 => Role::Primary,
            2 => Role::Secondary,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Unknown => "Unknown",
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
        }
    }
}

impl ConnState {
    const ALL: [ConnState; 24] = [
        ConnState::StandAlone,
        ConnState::Disconnecting,
        ConnState::Unconnected,
        ConnState::Timeout,
        ConnState::BrokenPipe,
        ConnState::NetworkFailure,
        ConnState::ProtocolError,
        ConnState::TearDown,
        ConnState::WFConnection,
        ConnState::WFReportParams,
        ConnState::Connected,
        ConnState::StartingSyncS,
        ConnState::StartingSyncT,
        ConnState::WFBitMapS,
        ConnState::WFBitMapT,
        ConnState::WFSyncUUID,
        ConnState::SyncSource,
        ConnState::SyncTarget,
        ConnState::VerifyS,
        ConnState::VerifyT,
        ConnState::PausedSyncS,
        ConnState::PausedSyncT,
        ConnState::Ahead,
        ConnState::Behind,
    ];
    pub fn from_u32(v: u32) -> Option<ConnState> {
        Self::ALL.get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            ConnState::StandAlone => "StandAlone",
            ConnState::Disconnecting => "Disconnecting",
            ConnState::Unconnected => "Unconnected",
            ConnState::Timeout => "Timeout",
            ConnState::BrokenPipe => "BrokenPipe",
            ConnState::NetworkFailure => "NetworkFailure",
            ConnState::ProtocolError => "ProtocolError",
            ConnState::TearDown => "TearDown",
            ConnState::WFConnection => "WFConnection",
            ConnState::WFReportParams => "WFReportParams",
            ConnState::Connected => "Connected",
            ConnState::StartingSyncS => "StartingSyncS",
            ConnState::StartingSyncT => "StartingSyncT",
            ConnState::WFBitMapS => "WFBitMapS",
            ConnState::WFBitMapT => "WFBitMapT",
            ConnState::WFSyncUUID => "WFSyncUUID",
            ConnState::SyncSource => "SyncSource",
            ConnState::SyncTarget => "SyncTarget",
            ConnState::VerifyS => "VerifyS",
            ConnState::VerifyT => "VerifyT",
            ConnState::PausedSyncS => "PausedSyncS",
            ConnState::PausedSyncT => "PausedSyncT",
            ConnState::Ahead => "Ahead",
            ConnState::Behind => "Behind",
        }
    }
    /// The name `drbdsetup events2` uses for `connection:` (DRBD 9 vocabulary, as drbd-utils
    /// maps 8.4 states; spec drbd-config-and-tools.md §5).
    pub fn events2_connection(self) -> &'static str {
        match self {
            ConnState::StandAlone => "StandAlone",
            ConnState::Disconnecting => "Disconnecting",
            ConnState::Unconnected => "Unconnected",
            ConnState::Timeout => "Timeout",
            ConnState::BrokenPipe => "BrokenPipe",
            ConnState::NetworkFailure => "NetworkFailure",
            ConnState::ProtocolError => "ProtocolError",
            ConnState::TearDown => "TearDown",
            ConnState::WFConnection => "Connecting",
            ConnState::WFReportParams => "Connecting",
            _ => "Connected",
        }
    }
    /// The `replication:` word of events2 for a peer device.
    pub fn events2_replication(self) -> &'static str {
        if self < ConnState::Connected {
            "Off"
        } else if self == ConnState::Connected {
            "Established"
        } else {
            self.name()
        }
    }
    /// SyncSource..PausedSyncT, including Verify (kernel: `C_SYNC_SOURCE <= c <= C_PAUSED_SYNC_T`).
    pub fn is_sync(self) -> bool {
        (ConnState::SyncSource..=ConnState::PausedSyncT).contains(&self)
    }
    pub fn is_resync(self) -> bool {
        matches!(
            self,
            ConnState::SyncSource
                | ConnState::SyncTarget
                | ConnState::PausedSyncS
                | ConnState::PausedSyncT
        )
    }
    /// Connected or beyond: both sockets up and the handshake through.
    pub fn is_established(self) -> bool {
        self >= ConnState::Connected
    }
}

impl DiskState {
    const ALL: [DiskState; 9] = [
        DiskState::Diskless,
        DiskState::Attaching,
        DiskState::Failed,
        DiskState::Negotiating,
        DiskState::Inconsistent,
        DiskState::Outdated,
        DiskState::DUnknown,
        DiskState::Consistent,
        DiskState::UpToDate,
    ];
    pub fn from_u32(v: u32) -> Option<DiskState> {
        Self::ALL.get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            DiskState::Diskless => "Diskless",
            DiskState::Attaching => "Attaching",
            DiskState::Failed => "Failed",
            DiskState::Negotiating => "Negotiating",
            DiskState::Inconsistent => "Inconsistent",
            DiskState::Outdated => "Outdated",
            DiskState::DUnknown => "DUnknown",
            DiskState::Consistent => "Consistent",
            DiskState::UpToDate => "UpToDate",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One volume's view of the world: `union drbd_state` minus the suspend bits we never set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrbdState {
    pub role: Role,
    pub peer: Role,
    pub conn: ConnState,
    pub disk: DiskState,
    pub pdsk: DiskState,
    pub aftr_isp: bool,
    pub peer_isp: bool,
    pub user_isp: bool,
    pub susp: bool,
}

impl DrbdState {
    pub fn standalone(disk: DiskState) -> DrbdState {
        DrbdState {
            role: Role::Secondary,
            peer: Role::Unknown,
            conn: ConnState::StandAlone,
            disk,
            pdsk: DiskState::DUnknown,
            aftr_isp: false,
            peer_isp: false,
            user_isp: false,
            susp: false,
        }
    }

    /// Packs the state word as `P_STATE` carries it (spec §9.1).
    pub fn to_word(self) -> u32 {
        (self.role as u32)
            | (self.peer as u32) << 2
            | (self.conn as u32) << 4
            | (self.disk as u32) << 9
            | (self.pdsk as u32) << 13
            | (self.susp as u32) << 17
            | (self.aftr_isp as u32) << 18
            | (self.peer_isp as u32) << 19
            | (self.user_isp as u32) << 20
    }

    /// Unpacks a peer's state word; `None` names no field, the caller reports the whole word.
    pub fn from_word(w: u32) -> Option<DrbdState> {
        Some(DrbdState {
            role: Role::from_u32(w & 0x3)?,
            peer: Role::from_u32((w >> 2) & 0x3)?,
            conn: ConnState::from_u32((w >> 4) & 0x1f)?,
            disk: DiskState::from_u32((w >> 9) & 0xf)?,
            pdsk: DiskState::from_u32((w >> 13) & 0xf)?,
            susp: (w >> 17) & 1 == 1,
            aftr_isp: (w >> 18) & 1 == 1,
            peer_isp: (w >> 19) & 1 == 1,
            user_isp: (w >> 20) & 1 == 1,
        })
    }

    /// The kernel's log line for a state transition, e.g.
    /// `role( Secondary -> Primary ) conn( WFConnection -> Connected )` (drbd_state.c print_st_err /
    /// print_state_change lists role, peer, conn, disk, pdsk in this order).
    pub fn change_line(old: &DrbdState, new: &DrbdState) -> String {
        let mut s = String::new();
        let mut push = |name: &str, a: &str, b: &str| {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("{name}( {a} -> {b} )"));
        };
        if old.role != new.role {
            push("role", old.role.name(), new.role.name());
        }
        if old.peer != new.peer {
            push("peer", old.peer.name(), new.peer.name());
        }
        if old.conn != new.conn {
            push("conn", old.conn.name(), new.conn.name());
        }
        if old.disk != new.disk {
            push("disk", old.disk.name(), new.disk.name());
        }
        if old.pdsk != new.pdsk {
            push("pdsk", old.pdsk.name(), new.pdsk.name());
        }
        let b = |v: bool| if v { "1" } else { "0" };
        if old.aftr_isp != new.aftr_isp {
            push("aftr_isp", b(old.aftr_isp), b(new.aftr_isp));
        }
        if old.peer_isp != new.peer_isp {
            push("peer_isp", b(old.peer_isp), b(new.peer_isp));
        }
        if old.user_isp != new.user_isp {
            push("user_isp", b(old.user_isp), b(new.user_isp));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_matches_spec_example() {
        // spec §9.1: Primary/Secondary, Connected, UpToDate/UpToDate = 0x000110a9.
        let s = DrbdState {
            role: Role::Primary,
            peer: Role::Secondary,
            conn: ConnState::Connected,
            disk: DiskState::UpToDate,
            pdsk: DiskState::UpToDate,
            aftr_isp: false,
            peer_isp: false,
            user_isp: false,
            susp: false,
        };
        assert_eq!(s.to_word(), 0x0001_10a9);
        assert_eq!(DrbdState::from_word(0x0001_10a9), Some(s));
    }

    #[test]
    fn rejects_out_of_range_state_fields() {
        assert_eq!(DrbdState::from_word(0x3), None); // role 3
        assert_eq!(DrbdState::from_word(31 << 4), None); // conn mask value
        assert_eq!(DrbdState::from_word(15 << 9), None); // disk 15
    }

    #[test]
    fn change_line_is_kernel_shaped() {
        let a = DrbdState::standalone(DiskState::UpToDate);
        let mut b = a;
        b.conn = ConnState::WFConnection;
        b.role = Role::Primary;
        assert_eq!(
            DrbdState::change_line(&a, &b),
            "role( Secondary -> Primary ) conn( StandAlone -> WFConnection )"
        );
    }
}
