//! The state word (spec §9) and the state packets P_STATE, P_STATE_CHG_REQ,
//! P_CONN_ST_CHG_REQ, P_STATE_CHG_REPLY, P_CONN_ST_CHG_REPLY (spec §5.12–5.14).
//!
//! ```text
//!  31       23 22 21 20 19 18 17 16  13 12   9 8     4 3  2 1  0
//! +-----------+--+--+--+--+--+--+------+------+-------+----+----+
//! | pad (9)   |sf|sn|ui|pi|ai|su| pdsk | disk | conn  |peer|role|
//! +-----------+--+--+--+--+--+--+------+------+-------+----+----+
//! sf susp_fen, sn susp_nod, ui user_isp, pi peer_isp, ai aftr_isp, su susp
//! ```
//!
//! Connection states a node passes through (the usual paths; any state may fall back to a
//! disconnect reason and from there to Unconnected):
//!
//! ```text
//! StandAlone -> Unconnected -> WFConnection -> WFReportParams -> Connected
//!                                                  |               |  ^
//!                                   WFBitMapS/WFBitMapT      StartingSync*, VerifyS/T,
//!                                        |                   Ahead/Behind
//!                          WFSyncUUID -> SyncSource/SyncTarget <-> PausedSyncS/T -> Connected
//! Disconnecting -> StandAlone;  Timeout|BrokenPipe|NetworkFailure|ProtocolError|TearDown
//!                               -> Unconnected
//! ```

use std::fmt;

use bytes::BufMut;

use crate::command::Command;
use crate::error::{bad_field, expect_len, DecodeError};
use crate::header::Header;
use crate::reader::Reader;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident : $repr:ty { $($variant:ident = $val:expr, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($variant = $val,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name drbdadm prints.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn from_u8(v: u8) -> Option<$name> {
                match v { $($val => Some($name::$variant),)* _ => None }
            }

            /// Parses the drbdadm spelling.
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// enum drbd_role.
    Role: u8 {
        Unknown = 0, "Unknown";
        Primary = 1, "Primary";
        Secondary = 2, "Secondary";
    }
}

wire_enum! {
    /// enum drbd_conns (8.4 numbering).
    ConnState: u8 {
        StandAlone = 0, "StandAlone";
        Disconnecting = 1, "Disconnecting";
        Unconnected = 2, "Unconnected";
        Timeout = 3, "Timeout";
        BrokenPipe = 4, "BrokenPipe";
        NetworkFailure = 5, "NetworkFailure";
        ProtocolError = 6, "ProtocolError";
        TearDown = 7, "TearDown";
        WFConnection = 8, "WFConnection";
        WFReportParams = 9, "WFReportParams";
        Connected = 10, "Connected";
        StartingSyncS = 11, "StartingSyncS";
        StartingSyncT = 12, "StartingSyncT";
        WFBitMapS = 13, "WFBitMapS";
        WFBitMapT = 14, "WFBitMapT";
        WFSyncUUID = 15, "WFSyncUUID";
        SyncSource = 16, "SyncSource";
        SyncTarget = 17, "SyncTarget";
        VerifyS = 18, "VerifyS";
        VerifyT = 19, "VerifyT";
        PausedSyncS = 20, "PausedSyncS";
        PausedSyncT = 21, "PausedSyncT";
        Ahead = 22, "Ahead";
        Behind = 23, "Behind";
    }
}

wire_enum! {
    /// enum drbd_disk_state (8.4 numbering; DRBD 9 converts to it on the wire for apv < 110).
    DiskState: u8 {
        Diskless = 0, "Diskless";
        Attaching = 1, "Attaching";
        Failed = 2, "Failed";
        Negotiating = 3, "Negotiating";
        Inconsistent = 4, "Inconsistent";
        Outdated = 5, "Outdated";
        DUnknown = 6, "DUnknown";
        Consistent = 7, "Consistent";
        UpToDate = 8, "UpToDate";
    }
}

impl ConnState {
    /// SyncSource..=PausedSyncT, Verify included (spec §9.2).
    pub fn is_sync(self) -> bool {
        (ConnState::SyncSource..=ConnState::PausedSyncT).contains(&self)
    }
}

const ROLE_SHIFT: u32 = 0;
const PEER_SHIFT: u32 = 2;
const CONN_SHIFT: u32 = 4;
const DISK_SHIFT: u32 = 9;
const PDSK_SHIFT: u32 = 13;
const SUSP_BIT: u32 = 17;
const AFTR_ISP_BIT: u32 = 18;
const PEER_ISP_BIT: u32 = 19;
const USER_ISP_BIT: u32 = 20;
const SUSP_NOD_BIT: u32 = 21;
const SUSP_FEN_BIT: u32 = 22;

/// The 32-bit state word. Holds any u32 whose role/conn/disk fields name valid values, so
/// `u32 -> State -> u32` is lossless (pad bits included, DRBD 9 puts quorum in bit 23).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct State(u32);

/// A field of a state word holding a value the enum does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state word 0x{word:08x}: field {field} has undefined value {value}")]
pub struct InvalidState {
    pub word: u32,
    pub field: &'static str,
    pub value: u8,
}

impl State {
    /// Builds a word from the five enum fields, all flags clear.
    pub fn new(role: Role, peer: Role, conn: ConnState, disk: DiskState, pdsk: DiskState) -> State {
        State(
            (role as u32) << ROLE_SHIFT
                | (peer as u32) << PEER_SHIFT
                | (conn as u32) << CONN_SHIFT
                | (disk as u32) << DISK_SHIFT
                | (pdsk as u32) << PDSK_SHIFT,
        )
    }

    /// Validates every enum field.
    pub fn from_u32(word: u32) -> Result<State, InvalidState> {
        let bad = |field, value| InvalidState { word, field, value };
        let field = |shift: u32, width: u32| ((word >> shift) & ((1 << width) - 1)) as u8;
        Role::from_u8(field(ROLE_SHIFT, 2)).ok_or(bad("role", field(ROLE_SHIFT, 2)))?;
        Role::from_u8(field(PEER_SHIFT, 2)).ok_or(bad("peer", field(PEER_SHIFT, 2)))?;
        ConnState::from_u8(field(CONN_SHIFT, 5)).ok_or(bad("conn", field(CONN_SHIFT, 5)))?;
        DiskState::from_u8(field(DISK_SHIFT, 4)).ok_or(bad("disk", field(DISK_SHIFT, 4)))?;
        DiskState::from_u8(field(PDSK_SHIFT, 4)).ok_or(bad("pdsk", field(PDSK_SHIFT, 4)))?;
        Ok(State(word))
    }

    pub const fn to_u32(self) -> u32 {
        self.0
    }

    fn field(self, shift: u32, width: u32) -> u8 {
        ((self.0 >> shift) & ((1 << width) - 1)) as u8
    }

    fn bit(self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    fn set_field(self, shift: u32, width: u32, v: u8) -> State {
        let mask = ((1u32 << width) - 1) << shift;
        State((self.0 & !mask) | (u32::from(v) << shift & mask))
    }

    fn set_bit(self, bit: u32, on: bool) -> State {
        if on {
            State(self.0 | 1 << bit)
        } else {
            State(self.0 & !(1 << bit))
        }
    }

    // The unwrap_or fallbacks below never trigger: every constructor validates the fields.
    pub fn role(self) -> Role {
        Role::from_u8(self.field(ROLE_SHIFT, 2)).unwrap_or(Role::Unknown)
    }
    pub fn peer(self) -> Role {
        Role::from_u8(self.field(PEER_SHIFT, 2)).unwrap_or(Role::Unknown)
    }
    pub fn conn(self) -> ConnState {
        ConnState::from_u8(self.field(CONN_SHIFT, 5)).unwrap_or(ConnState::StandAlone)
    }
    pub fn disk(self) -> DiskState {
        DiskState::from_u8(self.field(DISK_SHIFT, 4)).unwrap_or(DiskState::Diskless)
    }
    pub fn pdsk(self) -> DiskState {
        DiskState::from_u8(self.field(PDSK_SHIFT, 4)).unwrap_or(DiskState::Diskless)
    }
    pub fn susp(self) -> bool {
        self.bit(SUSP_BIT)
    }
    pub fn aftr_isp(self) -> bool {
        self.bit(AFTR_ISP_BIT)
    }
    pub fn peer_isp(self) -> bool {
        self.bit(PEER_ISP_BIT)
    }
    pub fn user_isp(self) -> bool {
        self.bit(USER_ISP_BIT)
    }
    pub fn susp_nod(self) -> bool {
        self.bit(SUSP_NOD_BIT)
    }
    pub fn susp_fen(self) -> bool {
        self.bit(SUSP_FEN_BIT)
    }

    pub fn with_role(self, v: Role) -> State {
        self.set_field(ROLE_SHIFT, 2, v as u8)
    }
    pub fn with_peer(self, v: Role) -> State {
        self.set_field(PEER_SHIFT, 2, v as u8)
    }
    pub fn with_conn(self, v: ConnState) -> State {
        self.set_field(CONN_SHIFT, 5, v as u8)
    }
    pub fn with_disk(self, v: DiskState) -> State {
        self.set_field(DISK_SHIFT, 4, v as u8)
    }
    pub fn with_pdsk(self, v: DiskState) -> State {
        self.set_field(PDSK_SHIFT, 4, v as u8)
    }
    pub fn with_susp(self, on: bool) -> State {
        self.set_bit(SUSP_BIT, on)
    }
    pub fn with_aftr_isp(self, on: bool) -> State {
        self.set_bit(AFTR_ISP_BIT, on)
    }
    pub fn with_peer_isp(self, on: bool) -> State {
        self.set_bit(PEER_ISP_BIT, on)
    }
    pub fn with_user_isp(self, on: bool) -> State {
        self.set_bit(USER_ISP_BIT, on)
    }
    pub fn with_susp_nod(self, on: bool) -> State {
        self.set_bit(SUSP_NOD_BIT, on)
    }
    pub fn with_susp_fen(self, on: bool) -> State {
        self.set_bit(SUSP_FEN_BIT, on)
    }

    /// P_STATE payload (4 bytes).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<State, DecodeError> {
        expect_len(header.command, payload, 4)?;
        let word = Reader::new(header.command, payload).u32()?;
        State::from_u32(word).map_err(|e| state_field_error(header.command, 0, e))
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.0);
    }
}

fn state_field_error(command: Command, offset: usize, e: InvalidState) -> DecodeError {
    bad_field(command, e.field, offset, e.to_string())
}

impl TryFrom<u32> for State {
    type Error = InvalidState;
    fn try_from(v: u32) -> Result<State, InvalidState> {
        State::from_u32(v)
    }
}

impl From<State> for u32 {
    fn from(s: State) -> u32 {
        s.0
    }
}

impl Default for State {
    /// StandAlone, roles Unknown, disks Diskless: the all-zero word.
    fn default() -> State {
        State(0)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "State(0x{:08x} {}/{} {} {}/{}",
            self.0,
            self.role(),
            self.peer(),
            self.conn(),
            self.disk(),
            self.pdsk()
        )?;
        for (on, name) in [
            (self.susp(), "susp"),
            (self.aftr_isp(), "aftr_isp"),
            (self.peer_isp(), "peer_isp"),
            (self.user_isp(), "user_isp"),
            (self.susp_nod(), "susp_nod"),
            (self.susp_fen(), "susp_fen"),
        ] {
            if on {
                write!(f, " {name}")?;
            }
        }
        write!(f, ")")
    }
}

/// A mask over state-word fields (all ones in each field that a request changes). Not a valid
/// `State` (conn = 31 is the mask value), hence its own type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct StateMask(pub u32);

impl StateMask {
    pub const ROLE: StateMask = StateMask(0x3 << ROLE_SHIFT);
    pub const PEER: StateMask = StateMask(0x3 << PEER_SHIFT);
    pub const CONN: StateMask = StateMask(0x1f << CONN_SHIFT);
    pub const DISK: StateMask = StateMask(0xf << DISK_SHIFT);
    pub const PDSK: StateMask = StateMask(0xf << PDSK_SHIFT);
    pub const SUSP: StateMask = StateMask(1 << SUSP_BIT);
    pub const USER_ISP: StateMask = StateMask(1 << USER_ISP_BIT);

    pub const fn union(self, o: StateMask) -> StateMask {
        StateMask(self.0 | o.0)
    }

    pub const fn contains(self, o: StateMask) -> bool {
        self.0 & o.0 == o.0
    }
}

/// P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ payload: mask and value, in the sender's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqState {
    pub mask: StateMask,
    pub val: State,
}

impl ReqState {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ReqState, DecodeError> {
        expect_len(header.command, payload, 8)?;
        let mut r = Reader::new(header.command, payload);
        let mask = StateMask(r.u32()?);
        let val = State::from_u32(r.u32()?).map_err(|e| state_field_error(header.command, 4, e))?;
        Ok(ReqState { mask, val })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.mask.0);
        buf.put_u32(self.val.0);
    }
}

/// `enum drbd_state_rv`: the result code in P_STATE_CHG_REPLY / P_CONN_ST_CHG_REPLY. An i32
/// newtype so that codes from newer peers survive.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateChgReply(pub i32);

impl StateChgReply {
    pub const CW_NO_NEED: Self = Self(4);
    pub const CW_SUCCESS: Self = Self(3);
    pub const NOTHING_TO_DO: Self = Self(2);
    pub const SUCCESS: Self = Self(1);
    pub const UNKNOWN_ERROR: Self = Self(0);
    pub const TWO_PRIMARIES: Self = Self(-1);
    pub const NO_UP_TO_DATE_DISK: Self = Self(-2);
    pub const NO_LOCAL_DISK: Self = Self(-4);
    pub const NO_REMOTE_DISK: Self = Self(-5);
    pub const CONNECTED_OUTDATES: Self = Self(-6);
    pub const PRIMARY_NOP: Self = Self(-7);
    pub const RESYNC_RUNNING: Self = Self(-8);
    pub const ALREADY_STANDALONE: Self = Self(-9);
    pub const CW_FAILED_BY_PEER: Self = Self(-10);
    pub const IS_DISKLESS: Self = Self(-11);
    pub const DEVICE_IN_USE: Self = Self(-12);
    pub const NO_NET_CONFIG: Self = Self(-13);
    pub const NO_VERIFY_ALG: Self = Self(-14);
    pub const NEED_CONNECTION: Self = Self(-15);
    pub const LOWER_THAN_OUTDATED: Self = Self(-16);
    pub const NOT_SUPPORTED: Self = Self(-17);
    pub const IN_TRANSIENT_STATE: Self = Self(-18);
    pub const CONCURRENT_ST_CHG: Self = Self(-19);
    pub const O_VOL_PEER_PRI: Self = Self(-20);
    pub const OUTDATE_WO_CONN: Self = Self(-21);

    /// Values >= 1 mean success.
    pub fn is_success(self) -> bool {
        self.0 >= 1
    }

    /// The kernel's SS_* name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            4 => "SS_CW_NO_NEED",
            3 => "SS_CW_SUCCESS",
            2 => "SS_NOTHING_TO_DO",
            1 => "SS_SUCCESS",
            0 => "SS_UNKNOWN_ERROR",
            -1 => "SS_TWO_PRIMARIES",
            -2 => "SS_NO_UP_TO_DATE_DISK",
            -4 => "SS_NO_LOCAL_DISK",
            -5 => "SS_NO_REMOTE_DISK",
            -6 => "SS_CONNECTED_OUTDATES",
            -7 => "SS_PRIMARY_NOP",
            -8 => "SS_RESYNC_RUNNING",
            -9 => "SS_ALREADY_STANDALONE",
            -10 => "SS_CW_FAILED_BY_PEER",
            -11 => "SS_IS_DISKLESS",
            -12 => "SS_DEVICE_IN_USE",
            -13 => "SS_NO_NET_CONFIG",
            -14 => "SS_NO_VERIFY_ALG",
            -15 => "SS_NEED_CONNECTION",
            -16 => "SS_LOWER_THAN_OUTDATED",
            -17 => "SS_NOT_SUPPORTED",
            -18 => "SS_IN_TRANSIENT_STATE",
            -19 => "SS_CONCURRENT_ST_CHG",
            -20 => "SS_O_VOL_PEER_PRI",
            -21 => "SS_OUTDATE_WO_CONN",
            _ => return None,
        })
    }

    /// The message drbdadm prints for an error code (drbd_strings.c wording).
    pub fn message(self) -> Option<&'static str> {
        Some(match self.0 {
            -1 => "Multiple primaries not allowed by config",
            -2 => "Need access to UpToDate data",
            -4 => "Can not resync without local disk",
            -5 => "Can not resync without remote disk",
            -6 => "Refusing to be Outdated while Connected",
            -7 => "Refusing to be Primary while peer is not outdated",
            -8 => "Can not start OV/resync since it is already active",
            -9 => "Can not disconnect a StandAlone device",
            -10 => "State change was refused by peer node",
            -11 => "Device is diskless, the requested operation requires a disk",
            -12 => "Device is held open by someone",
            -13 => "Have no net/connection configuration",
            -14 => "Need a verify algorithm to start online verify",
            -15 => "Need a connection to start verify or resync",
            -16 => "Disk state is lower than outdated",
            -17 => "Peer does not support protocol",
            -18 => "In transient state, retry after next state change",
            -19 => "Concurrent state changes detected and aborted",
            -20 => "Other vol primary on peer not allowed by config",
            -21 => "Need a connection for a graceful disconnect/outdate peer",
            _ => return None,
        })
    }

    pub fn decode(header: &Header, payload: &[u8]) -> Result<StateChgReply, DecodeError> {
        expect_len(header.command, payload, 4)?;
        Ok(StateChgReply(
            Reader::new(header.command, payload).u32()? as i32
        ))
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_i32(self.0);
    }
}

impl fmt::Debug for StateChgReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "StateChgReply({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_word() {
        // Spec §9.1: Primary/Secondary, Connected, UpToDate/UpToDate = 0x000110a9.
        let s = State::new(
            Role::Primary,
            Role::Secondary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        assert_eq!(s.to_u32(), 0x0001_10a9);
        let back = State::from_u32(0x0001_10a9).unwrap();
        assert_eq!(back.role(), Role::Primary);
        assert_eq!(back.peer(), Role::Secondary);
        assert_eq!(back.conn(), ConnState::Connected);
        assert_eq!(back.disk(), DiskState::UpToDate);
        assert_eq!(back.pdsk(), DiskState::UpToDate);
    }

    #[test]
    fn flags_and_pad_bits_survive() {
        let w = 0xff80_0000 | 0x0001_10a9 | 1 << 20 | 1 << 17;
        let s = State::from_u32(w).unwrap();
        assert!(s.user_isp() && s.susp() && !s.peer_isp());
        assert_eq!(u32::from(s), w);
        assert_eq!(s.with_user_isp(false).to_u32(), w & !(1 << 20));
    }

    #[test]
    fn rejects_undefined_field_values() {
        assert_eq!(
            State::from_u32(3).unwrap_err().field,
            "role",
            "role 3 is undefined"
        );
        assert_eq!(State::from_u32(24 << 4).unwrap_err().field, "conn");
        assert_eq!(State::from_u32(9 << 13).unwrap_err().field, "pdsk");
    }

    #[test]
    fn names_are_drbdadm_spelling() {
        assert_eq!(ConnState::WFBitMapS.to_string(), "WFBitMapS");
        assert_eq!(ConnState::WFReportParams.to_string(), "WFReportParams");
        assert_eq!(DiskState::DUnknown.to_string(), "DUnknown");
        assert_eq!(DiskState::UpToDate.to_string(), "UpToDate");
        assert_eq!(Role::Secondary.to_string(), "Secondary");
        for c in ConnState::ALL {
            assert_eq!(ConnState::from_name(c.as_str()), Some(*c));
            assert_eq!(ConnState::from_u8(*c as u8), Some(*c));
        }
        assert!(ConnState::SyncTarget.is_sync() && ConnState::PausedSyncT.is_sync());
        assert!(!ConnState::Ahead.is_sync() && !ConnState::WFSyncUUID.is_sync());
    }

    #[test]
    fn state_change_reply_codes() {
        assert!(StateChgReply::CW_SUCCESS.is_success());
        assert!(!StateChgReply::CONCURRENT_ST_CHG.is_success());
        assert_eq!(
            StateChgReply(-10).message(),
            Some("State change was refused by peer node")
        );
        assert_eq!(
            format!("{:?}", StateChgReply(-19)),
            "SS_CONCURRENT_ST_CHG(-19)"
        );
    }
}
