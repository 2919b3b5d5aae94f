//! Command codes (spec §4). A `Command` is an open `u16` newtype so that a code we do not know
//! survives decoding; the engine decides what an unknown command means (8.4: protocol error).

use std::fmt;

/// A DRBD packet command code, as carried in every header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(pub u16);

macro_rules! commands {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $kernel:literal;)*) => {
        impl Command {
            $($(#[$doc])* pub const $name: Command = Command($value);)*

            /// Every command with a kernel name, in code order.
            pub const KNOWN: &'static [Command] = &[$(Command::$name),*];

            /// The kernel's name (`P_DATA`), or `None` for a code 8.4 does not define.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Command::$name => Some($kernel),)*
                    _ => None,
                }
            }
        }
    };
}

commands! {
    DATA = 0x00, "P_DATA";
    DATA_REPLY = 0x01, "P_DATA_REPLY";
    RS_DATA_REPLY = 0x02, "P_RS_DATA_REPLY";
    BARRIER = 0x03, "P_BARRIER";
    BITMAP = 0x04, "P_BITMAP";
    /// Obsolete; 8.4 neither sends nor accepts it.
    BECOME_SYNC_TARGET = 0x05, "P_BECOME_SYNC_TARGET";
    /// Obsolete; 8.4 neither sends nor accepts it.
    BECOME_SYNC_SOURCE = 0x06, "P_BECOME_SYNC_SOURCE";
    UNPLUG_REMOTE = 0x07, "P_UNPLUG_REMOTE";
    DATA_REQUEST = 0x08, "P_DATA_REQUEST";
    RS_DATA_REQUEST = 0x09, "P_RS_DATA_REQUEST";
    SYNC_PARAM = 0x0a, "P_SYNC_PARAM";
    PROTOCOL = 0x0b, "P_PROTOCOL";
    UUIDS = 0x0c, "P_UUIDS";
    SIZES = 0x0d, "P_SIZES";
    STATE = 0x0e, "P_STATE";
    SYNC_UUID = 0x0f, "P_SYNC_UUID";
    AUTH_CHALLENGE = 0x10, "P_AUTH_CHALLENGE";
    AUTH_RESPONSE = 0x11, "P_AUTH_RESPONSE";
    STATE_CHG_REQ = 0x12, "P_STATE_CHG_REQ";
    PING = 0x13, "P_PING";
    PING_ACK = 0x14, "P_PING_ACK";
    RECV_ACK = 0x15, "P_RECV_ACK";
    WRITE_ACK = 0x16, "P_WRITE_ACK";
    RS_WRITE_ACK = 0x17, "P_RS_WRITE_ACK";
    /// Named `P_DISCARD_WRITE` in drbd-8.4.0/8.4.1.
    SUPERSEDED = 0x18, "P_SUPERSEDED";
    NEG_ACK = 0x19, "P_NEG_ACK";
    NEG_DREPLY = 0x1a, "P_NEG_DREPLY";
    NEG_RS_DREPLY = 0x1b, "P_NEG_RS_DREPLY";
    BARRIER_ACK = 0x1c, "P_BARRIER_ACK";
    STATE_CHG_REPLY = 0x1d, "P_STATE_CHG_REPLY";
    OV_REQUEST = 0x1e, "P_OV_REQUEST";
    OV_REPLY = 0x1f, "P_OV_REPLY";
    OV_RESULT = 0x20, "P_OV_RESULT";
    CSUM_RS_REQUEST = 0x21, "P_CSUM_RS_REQUEST";
    RS_IS_IN_SYNC = 0x22, "P_RS_IS_IN_SYNC";
    SYNC_PARAM89 = 0x23, "P_SYNC_PARAM89";
    COMPRESSED_BITMAP = 0x24, "P_COMPRESSED_BITMAP";
    /// Legacy 8.3 packet; 8.4 reads and ignores it.
    DELAY_PROBE = 0x27, "P_DELAY_PROBE";
    OUT_OF_SYNC = 0x28, "P_OUT_OF_SYNC";
    RS_CANCEL = 0x29, "P_RS_CANCEL";
    CONN_ST_CHG_REQ = 0x2a, "P_CONN_ST_CHG_REQ";
    CONN_ST_CHG_REPLY = 0x2b, "P_CONN_ST_CHG_REPLY";
    RETRY_WRITE = 0x2c, "P_RETRY_WRITE";
    PROTOCOL_UPDATE = 0x2d, "P_PROTOCOL_UPDATE";
    TRIM = 0x31, "P_TRIM";
    RS_THIN_REQ = 0x32, "P_RS_THIN_REQ";
    RS_DEALLOCATED = 0x33, "P_RS_DEALLOCATED";
    /// Dropped by mainline >= 5.18; never send it to a kernel peer (spec §14).
    WSAME = 0x34, "P_WSAME";
    ZEROES = 0x36, "P_ZEROES";
    INITIAL_META = 0xfff1, "P_INITIAL_META";
    INITIAL_DATA = 0xfff2, "P_INITIAL_DATA";
    CONNECTION_FEATURES = 0xfffe, "P_CONNECTION_FEATURES";
}

impl Command {
    /// Which socket the kernel sends this command on (spec §4 "Sock"); `None` for
    /// P_DELAY_PROBE (either socket) and for codes 8.4 does not define.
    pub fn socket(self) -> Option<SocketKind> {
        use SocketKind::{Data, Meta};
        Some(match self {
            Command::PING
            | Command::PING_ACK
            | Command::RECV_ACK
            | Command::WRITE_ACK
            | Command::RS_WRITE_ACK
            | Command::SUPERSEDED
            | Command::NEG_ACK
            | Command::NEG_DREPLY
            | Command::NEG_RS_DREPLY
            | Command::BARRIER_ACK
            | Command::STATE_CHG_REPLY
            | Command::OV_RESULT
            | Command::RS_IS_IN_SYNC
            | Command::RS_CANCEL
            | Command::CONN_ST_CHG_REPLY
            | Command::RETRY_WRITE
            | Command::INITIAL_META => Meta,
            c if c.name().is_some() && c != Command::DELAY_PROBE => Data,
            _ => return None,
        })
    }
}

/// The two TCP streams of a connection (spec §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// "sock": handshake, configuration, data, requests, bitmaps, barriers.
    Data,
    /// "msock": pings, acks, barrier acks, state change replies.
    Meta,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown command 0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Command(0x{:04x})", self.0),
        }
    }
}

impl From<u16> for Command {
    fn from(v: u16) -> Self {
        Command(v)
    }
}

impl From<Command> for u16 {
    fn from(c: Command) -> u16 {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kernel_spelling() {
        assert_eq!(Command::WRITE_ACK.to_string(), "P_WRITE_ACK");
        assert_eq!(Command(0x1234).to_string(), "unknown command 0x1234");
        assert_eq!(format!("{:?}", Command(0x2e)), "Command(0x002e)");
    }

    #[test]
    fn known_codes_are_unique_and_sorted() {
        for w in Command::KNOWN.windows(2) {
            assert!(w[0].0 < w[1].0, "{:?} !< {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn sockets_follow_spec_table() {
        assert_eq!(Command::DATA.socket(), Some(SocketKind::Data));
        assert_eq!(Command::WRITE_ACK.socket(), Some(SocketKind::Meta));
        assert_eq!(Command::INITIAL_META.socket(), Some(SocketKind::Meta));
        assert_eq!(Command(0x2e).socket(), None);
    }
}
